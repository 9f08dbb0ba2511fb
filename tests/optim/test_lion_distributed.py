"""Lion in the ways large models are trained: DDP, FSDP2 (DTensor params), ZeRO and resuming
through torch.distributed.checkpoint, each in 2 local processes on gloo, against one process
stepping the same global batch. The models are float64 so that reduction order cannot flip a
sign; the bf16 resume test (lion-pytorch #20, #34: loss explodes on resume with FSDP + bf16)
compares bit for bit against the uninterrupted run instead."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optforge

WORLD = 2
STEPS = 4
GLOBAL_BATCH = 16


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 10), torch.nn.Tanh(),
        torch.nn.Linear(10, 3),
    ).to(dtype)  # fmt: skip


def _batch(step, dtype=torch.float64):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 6, generator=gen).to(dtype)
    y = torch.randint(0, 3, (GLOBAL_BATCH,), generator=gen)
    return x, y


def _shard(batch, rank):
    per = GLOBAL_BATCH // WORLD
    return tuple(t[rank * per : (rank + 1) * per] for t in batch)


def _train(model, opt, steps, rank=None, start=0, dtype=torch.float64):
    for step in range(start, start + steps):
        x, y = _batch(step, dtype)
        if rank is not None:
            x, y = _shard((x, y), rank)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).float(), y).backward()
        opt.step()


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _reference(options, steps=STEPS, dtype=torch.float64):
    model = _model(dtype)
    _train(model, optforge.Lion(model.parameters(), **options), steps, dtype=dtype)
    return [p.detach() for p in model.parameters()]


def _worker(rank, port, scenario, options, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        params = SCENARIOS[scenario](rank, options, Path(out))
        full = [_full(p).detach().clone() for p in params]  # a collective: every rank joins
        if rank == 0:
            torch.save(full, Path(out) / "params.pt")
        dist.barrier()  # no rank tears down while another still talks to it
    finally:
        dist.destroy_process_group()


def _ddp(rank, options, out):
    model = torch.nn.parallel.DistributedDataParallel(_model())
    _train(model, optforge.Lion(model.parameters(), **options), STEPS, rank)
    return list(model.parameters())


def _zero(rank, options, out):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = torch.nn.parallel.DistributedDataParallel(_model())
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optforge.Lion, **options)
    _train(model, opt, STEPS, rank)
    return list(model.parameters())


def _fsdp(rank, options, out, dtype=torch.float64):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = _model(dtype)
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert all(type(p).__name__ == "DTensor" for p in model.parameters())
    return model


def _fsdp_train(rank, options, out):
    model = _fsdp(rank, options, out)
    _train(model, optforge.Lion(model.parameters(), **options), STEPS, rank)
    return list(model.parameters())


def _fsdp_resume(rank, options, out):
    """Train half, save with DCP, rebuild everything, load, train the other half."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    dtype = torch.bfloat16
    model = _fsdp(rank, options, out, dtype)
    opt = optforge.Lion(model.parameters(), **options)
    _train(model, opt, STEPS // 2, rank, dtype=dtype)
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=out / "ckpt")
    del model, opt

    model = _fsdp(rank, options, out, dtype)
    with torch.no_grad():  # prove the load: start from different weights
        for p in model.parameters():
            p.zero_()
    opt = optforge.Lion(model.parameters(), **options)
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=out / "ckpt")
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    want = options.get("momentum_dtype") or dtype
    assert all(s["exp_avg"].dtype == want for s in opt.state.values())
    _train(model, opt, STEPS - STEPS // 2, rank, start=STEPS // 2, dtype=dtype)
    return list(model.parameters())


SCENARIOS = {"ddp": _ddp, "zero": _zero, "fsdp": _fsdp_train, "fsdp_resume": _fsdp_resume}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(scenario, options):
    port = _free_port()
    with tempfile.TemporaryDirectory() as out:
        try:
            mp.spawn(_worker, args=(port, scenario, options, out), nprocs=WORLD, join=True)
        except mp.ProcessExitedException:  # a rank killed by a signal (gloo teardown): once more
            port = _free_port()
            mp.spawn(_worker, args=(port, scenario, options, out), nprocs=WORLD, join=True)
        return torch.load(Path(out) / "params.pt")


def _assert_matches(params, reference, atol):
    for p, r in zip(params, reference, strict=True):
        assert p.dtype == r.dtype
        torch.testing.assert_close(p, r, rtol=0, atol=atol)


OPTIONS = dict(lr=1e-2, weight_decay=0.1)


@pytest.mark.parametrize("scenario", ["ddp", "zero"])
def test_data_parallel_matches_one_process(scenario):
    _assert_matches(_run(scenario, OPTIONS), _reference(OPTIONS), atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        OPTIONS,  # the default path: the fused C kernel on each rank's local shard
        dict(OPTIONS, foreach=True, betas=(0.95, 0.98)),
        dict(OPTIONS, fused=False, foreach=False, maximize=True),
        dict(OPTIONS, cautious=True),  # its mean spans the whole (sharded) tensor
    ],
    ids=["fused", "foreach", "single", "cautious"],
)
def test_fsdp2_matches_one_process(options):
    _assert_matches(_run("fsdp", options), _reference(options), atol=1e-12)


@pytest.mark.parametrize("momentum_dtype", [None, torch.float32], ids=["bf16", "fp32"])
def test_fsdp2_bf16_resume_through_dcp_continues_exactly(momentum_dtype):
    options = dict(OPTIONS, momentum_dtype=momentum_dtype)
    resumed = _run("fsdp_resume", options)
    # The uninterrupted run in the same setting (bf16 FSDP2, same shards) is the reference.
    uninterrupted = _run_fsdp_bf16(options)
    _assert_matches(resumed, uninterrupted, atol=0)


def _fsdp_bf16_train(rank, options, out):
    model = _fsdp(rank, options, out, torch.bfloat16)
    _train(model, optforge.Lion(model.parameters(), **options), STEPS, rank, dtype=torch.bfloat16)
    return list(model.parameters())


SCENARIOS["fsdp_bf16"] = _fsdp_bf16_train


def _run_fsdp_bf16(options):
    return _run("fsdp_bf16", options)
