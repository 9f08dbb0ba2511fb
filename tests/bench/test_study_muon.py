"""`optforge study`'s `muon`: Muon on the hidden matrices and the study's tuned AdamW on the
rest, against torch.optim.Muon + torch.optim.AdamW; its grid after AdamW's; the store,
resume and report."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.optim._muon as torch_muon
from torch import nn

from optforge.bench import study, study_report
from optforge.bench.study_tasks import TASKS, VIT_SIZES, ViT
from optforge.cli import main
from optforge.optim.hidden import hidden_names
from tests.reference import newton_schulz_fp32

LR, WD, ADAMW_LR, ADAMW_WD = 0.03, 0.2, 3e-3, 0.05


def _reference(model: nn.Module, wd_on: str) -> list[torch.optim.Optimizer]:
    """What a user writes: torch's Muon on the first layer, torch's AdamW on the rest, decay
    on matrices (or everything) as the study puts AdamW's."""
    first, *rest = model.parameters()  # digits-mlp: Flatten, Linear (hidden), GELU, Linear
    decay = [p for p in rest if p.dim() >= 2 or wd_on == "all"]
    other = [p for p in rest if not (p.dim() >= 2 or wd_on == "all")]
    return [
        torch.optim.Muon([first], lr=LR, weight_decay=WD, momentum=0.95, nesterov=True),
        torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW_WD},
                           {"params": other, "weight_decay": 0.0}], lr=ADAMW_LR),
    ]  # fmt: skip


def _train(task, model: nn.Module, optimizers, steps: int = 12) -> None:
    """The study's schedule shape (warm-up then decay) on every optimizer."""
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: min(1.0, (t + 1) / 3) *
                                                   (1 - t / 20)) for o in optimizers]  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = task.sample(gen, 32)
        loss = task.loss(model(x), y)
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()
        for schedule in schedules:
            schedule.step()


@pytest.mark.parametrize("wd_on", ["matrices", "all"])
def test_muon_follows_torch_muon_and_adamw_on_the_same_split(monkeypatch, wd_on):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", newton_schulz_fp32)
    task = TASKS["digits-mlp"]()
    torch.manual_seed(0)
    ours = task.build("small")
    theirs = task.build("small")
    theirs.load_state_dict(ours.state_dict())
    opt = study.make_optimizer("muon", ours, LR, WD, wd_on, adamw=(ADAMW_LR, ADAMW_WD))
    _train(task, ours, [opt])
    _train(task, theirs, _reference(theirs, wd_on))
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-5, msg=name)
    moved = [(p - q).abs().max() for p, q in zip(ours.parameters(), task.build("small")
                                                  .parameters(), strict=True)]  # fmt: skip
    assert min(moved) > 1e-3  # every tensor trained


def test_muon_takes_attention_matrices_and_leaves_embeddings_and_head_to_adamw():
    names = hidden_names(ViT(**VIT_SIZES["small"]))
    assert "blocks.layers.0.self_attn.in_proj_weight" in names  # fused Q/K/V, a bare Parameter
    assert "blocks.layers.1.linear2.weight" in names
    assert not names & {"head.weight", "pos", "blocks.layers.0.norm1.weight"}
    with pytest.raises(ValueError, match="tuned AdamW"):
        study.make_optimizer("muon", nn.Linear(3, 3), LR, WD, "matrices")


def test_muon_tunes_its_grid_on_tuned_adamw_and_resumes(tmp_path):
    plan = study.plan("digits-mlp", ["adamw", "muon"], seeds=3, steps=30,
                      lr="adamw=1e-3,1e-2;muon=0.01,0.03", wd="adamw=0.01;muon=0.1",
                      tune_seeds=1, extend=0)  # fmt: skip
    store = study.Store(tmp_path / "study.db")
    assert study.run(plan, store) == plan.size() == 2 + 2 + 2 * 2
    finals = store.finals()
    adamw = plan.best(finals, "small", 32, "adamw")
    keys = [json.loads(k) for k in finals]
    muon = [k for k in keys if k["optimizer"] == "muon"]
    assert len(muon) == 4 and all(k["adamw"] == list(adamw) for k in muon)
    assert all("adamw" not in k for k in keys if k["optimizer"] == "adamw")
    top = plan.best(finals, "small", 32, "muon", adamw)
    seeds = sorted(k["seed"] for k in muon if (k["lr"], k["wd"]) == top)
    assert seeds == [0, 1, 2]  # chosen on seed 0, then confirmed
    # a resumed study trains only what is missing
    with store.db:
        store.db.execute("DELETE FROM runs WHERE optimizer = 'muon' AND seed = 2")
    assert study.run(plan, store) == 1
    assert study.run(plan, store) == 0
    # the report: muon's row, and its lr and wd against AdamW's
    rows = store.rows()
    _, table = study_report.table(rows)
    (row,) = [r for r in table if r[2] == "muon"]
    assert row[5] == "3" and row[7] != "-"
    columns, transfer = study_report.transfer(rows)
    (line,) = transfer
    at = dict(zip(columns, line, strict=True))
    assert at["Muon lr / wd"] == f"{top[0]:.3g} / {top[1]:.3g}"
    assert float(at["lr: Muon / AdamW"]) == pytest.approx(top[0] / adamw[0], rel=1e-2)
    assert at["Lion lr / wd"] == "-"
    # AdamW re-tuned later (a better point): the Muon runs on the old AdamW drop out of the
    # report, and the plan trains Muon again on the new one
    better = study.RunKey("digits-mlp", "small", 32, 30, "adamw", 5e-3, 0.01, 0)
    store.add(better, study.RunResult(1.0, [(30, 1.0)], 0.0, 1.0))
    assert not [s for s in study_report.settings(store.rows()) if s.optimizer == "muon"]
    planned = list(plan.grid(store.finals(), on_adamw=True))
    assert len(planned) == 2 and all(k.adamw == (5e-3, 0.01) for k in planned)


def test_muon_without_adamw_is_refused(capsys, tmp_path):
    with pytest.raises(ValueError, match="add adamw"):
        study.plan("digits-mlp", ["lion", "muon"])
    argv = ["study", "--task", "digits-mlp", "--optimizers", "muon", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "muon runs its non-hidden tensors at the study's tuned AdamW" in capsys.readouterr().out


def test_muon_default_grid_spans_two_decades_of_lr_and_of_wd():
    plan = study.plan("digits-mlp", ["adamw", "muon"])
    lrs, wds = plan.lr["muon"], plan.wd["muon"]
    assert (min(lrs), max(lrs), len(lrs)) == (pytest.approx(3e-3), pytest.approx(0.3), 5)
    assert wds == pytest.approx((0.01, 0.1, 1.0))
    assert all(v > 0 for v in wds) and math.isclose(lrs[1] / lrs[0], lrs[2] / lrs[1])
