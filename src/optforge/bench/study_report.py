"""What a study's runs say: the best setting per optimizer, its final metric over seeds, the
steps it needs to reach tuned AdamW's final metric, and plots (learning curves with seed
bands, lr x weight-decay heatmaps, the Lion-minus-AdamW gap against batch and model size)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

REFERENCE = "adamw"
LION = "lion"
FROM_ADAMW = "lion-from-adamw"
MUON = "muon"


@dataclass
class Setting:
    """One (size, batch, optimizer, lr, wd) over its seeds."""

    size: str
    batch: int
    optimizer: str
    lr: float
    wd: float
    finals: list[float | None]
    curves: list[list[tuple[int, float]]]
    step_ms: list[float]
    seeds: list[int]

    def score(self, seeds: set[int]) -> float:
        """Mean final metric over ``seeds`` (the ones every grid point has): how the study
        chose its best point, so seeds added later at that point do not change the choice."""
        values = [f for f, s in zip(self.finals, self.seeds, strict=True) if s in seeds]
        if not values or any(v is None for v in values):
            return -math.inf
        return statistics.fmean(values)

    @property
    def ok(self) -> bool:
        return bool(self.finals) and all(f is not None for f in self.finals)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals) if self.ok else -math.inf

    @property
    def std(self) -> float:
        return statistics.stdev(self.finals) if self.ok and len(self.finals) > 1 else 0.0


def label(name: str) -> str:
    """An optimizer's name for tables and plots: a program file by its stem."""
    return Path(name).stem if "/" in name or name.endswith((".txt", ".py", ".json")) else name


def settings(rows: list[dict]) -> list[Setting]:
    """Runs grouped by setting; Muon runs whose AdamW part is no longer the tuned AdamW (a
    later study re-tuned it) are left out."""
    groups: dict[tuple, Setting] = {}
    muon = [r for r in rows if r["optimizer"] == MUON]
    rest = [r for r in rows if r["optimizer"] != MUON]
    if muon:
        tops = best(settings(rest))
        muon = [r for r in muon if _on_tuned_adamw(r, tops)]
    for r in rest + muon:
        key = (r["size"], r["batch"], r["optimizer"], r["lr"], r["wd"])
        s = groups.setdefault(key, Setting(*key, [], [], [], []))
        s.finals.append(r["final"])
        s.curves.append(r["curve"])
        s.step_ms.append(r["step_ms"])
        s.seeds.append(r["seed"])
    return list(groups.values())


def _on_tuned_adamw(row: dict, tops: dict) -> bool:
    """Whether a Muon run's AdamW part ran at the (size, batch)'s tuned AdamW."""
    used = json.loads(row["key"]).get("adamw") if "key" in row else None
    adamw = tops.get((row["size"], row["batch"], REFERENCE))
    return used is None or (adamw is not None and used == [adamw.lr, adamw.wd])


def best(all_settings: list[Setting]) -> dict[tuple[str, int, str], Setting]:
    """(size, batch, optimizer) -> its best setting: the best mean over the seeds all of its
    grid points share (the tuning seeds), as the study chose it."""
    out: dict[tuple[str, int, str], Setting] = {}
    for key, mine in _by_optimizer(all_settings).items():
        scores = tuning_scores(mine)
        out[key] = max(mine, key=lambda s: scores[id(s)])
    return out


def tuning_scores(mine: list[Setting]) -> dict[int, float]:
    """id(setting) -> its mean over the seeds every point of one optimizer shares (the tuning
    seeds): how the study ranked them."""
    common = set.intersection(*(set(s.seeds) for s in mine))
    return {id(s): s.score(common) for s in mine}


def _by_optimizer(all_settings: list[Setting]) -> dict[tuple[str, int, str], list[Setting]]:
    out: dict[tuple[str, int, str], list[Setting]] = {}
    for s in all_settings:
        out.setdefault((s.size, s.batch, s.optimizer), []).append(s)
    return out


def main_cell(all_settings: list[Setting]) -> tuple[str, int]:
    """The (size, batch) with the most grid points: where the full sweep ran."""
    counts: dict[tuple[str, int], int] = {}
    for s in all_settings:
        counts[(s.size, s.batch)] = counts.get((s.size, s.batch), 0) + 1
    return max(sorted(counts), key=counts.get)


def steps_to_target(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose metric reaches ``target`` (None: never)."""
    return next((step for step, value in curve if value >= target), None)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = ["size", "batch", "optimizer", "best lr", "best wd", "seeds",
               "final (mean ± std)", "vs AdamW", "steps to AdamW's final", "step ms"]  # fmt: skip
    out = []
    all_settings = settings(rows)
    tops, groups = best(all_settings), _by_optimizer(all_settings)
    for (size, batch, name), s in sorted(tops.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                       -kv[1].mean)):  # fmt: skip
        edges = _edges(s, groups[(size, batch, name)])
        ref = tops.get((size, batch, REFERENCE))
        if s.ok:
            final = f"{s.mean:.4f} ± {s.std:.4f}"
        else:
            final = f"diverged ({sum(f is None for f in s.finals)}/{len(s.finals)} seeds)"
        gap = f"{s.mean - ref.mean:+.4f}" if ref and ref.ok and s.ok else "-"
        reach = "-"
        if ref and ref.ok:
            steps = [steps_to_target(c, ref.mean) for c in s.curves]
            hit = [x for x in steps if x is not None]
            reach = (f"{statistics.fmean(hit):.0f}" if len(hit) == len(steps)
                     else f"{len(hit)}/{len(steps)} seeds reach it")  # fmt: skip
        lr, wd = f"{s.lr:.3g}", f"{s.wd:.3g}"
        lr += " (edge)" if any(e.startswith("lr") for e in edges) else ""
        wd += " (edge)" if any(e.startswith("wd") for e in edges) else ""
        out.append([size, str(batch), label(name), lr, wd, str(len(s.finals)), final, gap, reach,
                    f"{statistics.median(s.step_ms):.2f}"])  # fmt: skip
    return columns, out


def transfer(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Where tuned Lion's lr and wd sit relative to tuned AdamW's (the paper: lr 3-10x
    smaller, wd 3-10x larger), whether an optimum sits on its grid's edge (then the ratio is
    a bound), and what ``Lion.from_adamw`` of tuned AdamW scores next to tuned Lion; with
    Muon in the study, tuned Muon's lr and wd against AdamW's too (its other tensors run at
    AdamW's)."""
    columns = ["size", "batch", "AdamW lr / wd", "Lion lr / wd", "lr: AdamW / Lion",
               "wd: Lion / AdamW", "on a grid edge", "from_adamw lr / wd",
               "from_adamw - tuned Lion"]  # fmt: skip
    all_settings = settings(rows)
    tops, groups = best(all_settings), _by_optimizer(all_settings)
    with_muon = any(k[2] == MUON for k in tops)
    if with_muon:
        columns += ["Muon lr / wd", "lr: Muon / AdamW", "wd: Muon / AdamW"]
    out = []
    for size, batch in sorted({k[:2] for k in tops}):
        adamw, lion = tops.get((size, batch, REFERENCE)), tops.get((size, batch, LION))
        muon = tops.get((size, batch, MUON))
        lion = lion if lion and lion.ok else None
        muon = muon if muon and muon.ok else None
        if not (adamw and adamw.ok and (lion or muon)):
            continue
        edges = [f"{name} {what}" for name, s in ((REFERENCE, adamw), (LION, lion), (MUON, muon))
                 if s for what in _edges(s, groups[(size, batch, name)])]  # fmt: skip
        derived = tops.get((size, batch, FROM_ADAMW))
        row = [size, str(batch), f"{adamw.lr:.3g} / {adamw.wd:.3g}", "-", "-", "-",
               ", ".join(edges) or "no", "-", "-"]  # fmt: skip
        if lion:
            row[3:6] = [f"{lion.lr:.3g} / {lion.wd:.3g}", f"{adamw.lr / lion.lr:.3g}",
                        _ratio(lion.wd, adamw.wd)]  # fmt: skip
        if lion and derived:
            row[7:9] = [f"{derived.lr:.3g} / {derived.wd:.3g}",
                        (f"{derived.mean - lion.mean:+.4f} (± "
                         f"{math.hypot(derived.std, lion.std):.4f})" if derived.ok
                         else "diverged")]  # fmt: skip
        if with_muon:
            row += ([f"{muon.lr:.3g} / {muon.wd:.3g}", f"{muon.lr / adamw.lr:.3g}",
                     _ratio(muon.wd, adamw.wd)] if muon else ["-", "-", "-"])  # fmt: skip
        out.append(row)
    return columns, out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3g}" if b > 0 else "-"


def _edges(top: Setting, mine: list[Setting]) -> list[str]:
    """'lr high' etc. when the best point sits at the end of a grid of > 1 value."""
    out = []
    for name, value, grid in (("lr", top.lr, {s.lr for s in mine}),
                              ("wd", top.wd, {s.wd for s in mine})):  # fmt: skip
        if len(grid) > 1 and value in (min(grid), max(grid)):
            out.append(f"{name} {'low' if value == min(grid) else 'high'}")
    return out


def robustness(rows: list[dict], within: float) -> tuple[list[str], list[list[str]]]:
    """How wide each optimizer's good region is at the main cell: how many of its grid
    points score within ``within`` of its best, and the lr and wd spans those points cover
    (counts, not shares: a grid extended past an edge adds points far from the optimum)."""
    columns = ["optimizer", "grid points", f"within {within:g} of its best",
               "lr span of those (x)", "wd span of those (x)", "worst point"]  # fmt: skip
    all_settings = settings(rows)
    cell = main_cell(all_settings)
    out = []
    for (size, batch, name), mine in sorted(_by_optimizer(all_settings).items()):
        if (size, batch) != cell or len(mine) < 2:
            continue
        by_id = tuning_scores(mine)
        scores = [by_id[id(s)] for s in mine]
        top = max(scores)
        good = [s for s, v in zip(mine, scores, strict=True) if v >= top - within]
        worst = min(scores)
        out.append([label(name), str(len(mine)), str(len(good)), _span([s.lr for s in good]),
                    _span([s.wd for s in good]),
                    f"{worst:.4f}" if math.isfinite(worst) else "diverged"])  # fmt: skip
    out.sort(key=lambda r: (-int(r[2]), r[0]))
    return columns, out


def _span(values: list[float]) -> str:
    if min(values) <= 0:
        return "-" if max(values) <= 0 else "from 0"
    return f"{max(values) / min(values):.3g}"


def plots(rows: list[dict], out: Path, metric: str) -> list[Path]:
    """Write the PNGs; returns their paths."""
    from optforge._extras import pyplot

    plt = pyplot("the study's plots")

    all_settings = settings(rows)
    tops = best(all_settings)
    written = []
    cells = sorted({(k[0], k[1]) for k in tops})
    fig, axes = plt.subplots(1, len(cells), figsize=(6 * len(cells), 4), squeeze=False)
    for ax, (size, batch) in zip(axes[0], cells, strict=True):
        for (s_size, s_batch, name), s in sorted(tops.items()):
            if (s_size, s_batch) != (size, batch) or not s.ok:
                continue
            steps = [p[0] for p in s.curves[0]]
            values = [[p[1] for p in c] for c in s.curves if len(c) == len(steps)]
            mean = [statistics.fmean(v) for v in zip(*values, strict=True)]
            ax.plot(steps, mean, label=f"{label(name)} (lr {s.lr:.2g}, wd {s.wd:.2g})")
            ax.fill_between(steps, [min(v) for v in zip(*values, strict=True)],
                            [max(v) for v in zip(*values, strict=True)], alpha=0.2)  # fmt: skip
        ax.set(title=f"model {size}, batch {batch}", xlabel="step", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "curves.png"))

    size, batch = main_cell(all_settings)
    groups = {k[2]: v for k, v in _by_optimizer(all_settings).items() if k[:2] == (size, batch)}
    scores = {}  # each point scored on the seeds all its optimizer's points share (tuning)
    for mine in groups.values():
        scores.update(tuning_scores(mine))
    finite = [v for v in scores.values() if math.isfinite(v)]
    # one colour scale for every optimizer, so the width of the good region compares
    low, high = (min(finite), max(finite)) if finite else (0, 1)
    columns = min(5, len(groups))
    rows_n = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3.6 * rows_n),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, (name, mine) in zip(axes.flat, sorted(groups.items()), strict=False):
        lrs, wds = sorted({s.lr for s in mine}), sorted({s.wd for s in mine})
        at = {(s.lr, s.wd): scores[id(s)] for s in mine}
        grid = [[at.get((lr, wd), math.nan) for lr in lrs] for wd in wds]
        shown = [[v if math.isfinite(v) else math.nan for v in row] for row in grid]
        image = ax.imshow(shown, origin="lower", aspect="auto", cmap="viridis", vmin=low,
                          vmax=high)  # fmt: skip
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                text = ("-" if math.isnan(value) else "div." if math.isinf(value)
                        else f"{value:.3f}")  # fmt: skip
                colour = "white" if math.isfinite(value) else "black"  # blank cell: dark text
                ax.text(x, y, text, ha="center", va="center", fontsize=6, color=colour)
        ax.set_xticks(range(len(lrs)), [f"{x:.2g}" for x in lrs], fontsize=7)
        ax.set_yticks(range(len(wds)), [f"{x:.2g}" for x in wds], fontsize=7)
        ax.set_title(f"{label(name)}\nmodel {size}, batch {batch}", fontsize=9)
        ax.set(xlabel="lr", ylabel="weight decay")
        fig.colorbar(image, ax=ax)
    written.append(_save(fig, out / "sensitivity.png"))

    for axis, axis_name in ((1, "batch size"), (0, "model size")):
        gaps = _gaps(tops, axis)
        if len(gaps) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        xs = sorted(gaps, key=_order)
        ax.errorbar(range(len(xs)), [gaps[x][0] for x in xs], yerr=[gaps[x][1] for x in xs],
                    fmt="o-", capsize=4)  # fmt: skip
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set(xlabel=axis_name, ylabel=f"Lion - AdamW ({metric})")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / f"gap-vs-{axis_name.split()[0]}.png"))
    return written


def _gaps(tops, axis: int) -> dict:
    """x (batch or size) -> (tuned Lion minus tuned AdamW, combined std), the other axis at
    the value that has the most x's (where that sweep ran)."""
    keys = sorted({k[:2] for k in tops})
    others = [k[1 - axis] for k in keys]
    fixed = max(sorted(set(others), key=str), key=others.count)
    out = {}
    for key in keys:
        if key[1 - axis] != fixed:
            continue
        lion, adamw = tops.get((*key, LION)), tops.get((*key, REFERENCE))
        if lion and adamw and lion.ok and adamw.ok:
            out[key[axis]] = (lion.mean - adamw.mean, math.hypot(lion.std, adamw.std))
    return out


def _order(x) -> tuple:
    """Batch sizes by number, model sizes small before base."""
    sizes = ("tiny", "small", "base", "large")
    return (0, x, "") if isinstance(x, int) else (1, sizes.index(x) if x in sizes else 99, x)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
