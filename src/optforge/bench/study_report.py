"""What a study's runs say: the best setting per optimizer, its final metric over seeds, the
steps it needs to reach tuned AdamW's final metric, and plots (learning curves with seed
bands, lr x weight-decay heatmaps, the Lion-minus-AdamW gap against batch and model size)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

REFERENCE = "adamw"
LION = "lion"


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

    @property
    def ok(self) -> bool:
        return bool(self.finals) and all(f is not None for f in self.finals)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.finals) if self.ok else -math.inf

    @property
    def std(self) -> float:
        return statistics.stdev(self.finals) if self.ok and len(self.finals) > 1 else 0.0


def settings(rows: list[dict]) -> list[Setting]:
    groups: dict[tuple, Setting] = {}
    for r in rows:
        key = (r["size"], r["batch"], r["optimizer"], r["lr"], r["wd"])
        s = groups.setdefault(key, Setting(*key, [], [], []))
        s.finals.append(r["final"])
        s.curves.append(r["curve"])
        s.step_ms.append(r["step_ms"])
    return list(groups.values())


def best(all_settings: list[Setting]) -> dict[tuple[str, int, str], Setting]:
    """(size, batch, optimizer) -> its best setting by mean final metric over seeds."""
    out: dict[tuple[str, int, str], Setting] = {}
    for s in all_settings:
        key = (s.size, s.batch, s.optimizer)
        if key not in out or s.mean > out[key].mean:
            out[key] = s
    return out


def steps_to_target(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose metric reaches ``target`` (None: never)."""
    return next((step for step, value in curve if value >= target), None)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = ["size", "batch", "optimizer", "best lr", "best wd", "final (mean ± std)",
               "vs AdamW", "steps to AdamW's final", "step ms"]  # fmt: skip
    out = []
    tops = best(settings(rows))
    for (size, batch, name), s in sorted(tops.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                       -kv[1].mean)):  # fmt: skip
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
        out.append([size, str(batch), name, f"{s.lr:.3g}", f"{s.wd:.3g}", final, gap, reach,
                    f"{statistics.median(s.step_ms):.2f}"])  # fmt: skip
    return columns, out


def plots(rows: list[dict], out: Path, metric: str) -> list[Path]:
    """Write the PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            ax.plot(steps, mean, label=f"{name} (lr {s.lr:.2g}, wd {s.wd:.2g})")
            ax.fill_between(steps, [min(v) for v in zip(*values, strict=True)],
                            [max(v) for v in zip(*values, strict=True)], alpha=0.2)  # fmt: skip
        ax.set(title=f"model {size}, batch {batch}", xlabel="step", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    written.append(_save(fig, out / "curves.png"))

    names = sorted({s.optimizer for s in all_settings})
    size, batch = cells[0]
    here = [s for s in all_settings if (s.size, s.batch) == (size, batch) and s.ok]
    # one colour scale for every optimizer, so the width of the good region compares
    low, high = (min(s.mean for s in here), max(s.mean for s in here)) if here else (0, 1)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [s for s in all_settings if (s.size, s.batch, s.optimizer) == (size, batch, name)]
        lrs, wds = sorted({s.lr for s in mine}), sorted({s.wd for s in mine})
        grid = [[next((s.mean for s in mine if s.lr == lr and s.wd == wd), math.nan)
                 for lr in lrs] for wd in wds]  # fmt: skip
        grid = [[v if math.isfinite(v) else math.nan for v in row] for row in grid]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=low,
                          vmax=high)  # fmt: skip
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                text = "div." if math.isnan(value) else f"{value:.3f}"
                ax.text(x, y, text, ha="center", va="center", fontsize=6, color="white")
        ax.set_xticks(range(len(lrs)), [f"{x:.2g}" for x in lrs], fontsize=7)
        ax.set_yticks(range(len(wds)), [f"{x:.2g}" for x in wds], fontsize=7)
        ax.set(title=name, xlabel="lr", ylabel="weight decay")
        fig.colorbar(image, ax=ax)
    written.append(_save(fig, out / "sensitivity.png"))

    for axis, label in ((1, "batch size"), (0, "model size")):
        gaps = _gaps(tops, axis)
        if len(gaps) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        xs = list(gaps)
        ax.errorbar(range(len(xs)), [gaps[x][0] for x in xs], yerr=[gaps[x][1] for x in xs],
                    fmt="o-", capsize=4)  # fmt: skip
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set(xlabel=label, ylabel=f"Lion - AdamW ({metric})")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / f"gap-vs-{label.split()[0]}.png"))
    return written


def _gaps(tops, axis: int) -> dict:
    """x (batch or size) -> (tuned Lion minus tuned AdamW, combined std), the other axis at
    its first value."""
    keys = sorted({k[:2] for k in tops})
    fixed = keys[0][1 - axis]
    out = {}
    for key in keys:
        if key[1 - axis] != fixed:
            continue
        lion, adamw = tops.get((*key, LION)), tops.get((*key, REFERENCE))
        if lion and adamw and lion.ok and adamw.ok:
            out[key[axis]] = (lion.mean - adamw.mean, math.hypot(lion.std, adamw.std))
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
