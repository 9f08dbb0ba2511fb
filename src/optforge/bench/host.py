"""`optforge bench host`: what the host spends on a fused Triton Lion step, with no device.

The kernel launches are replaced by no-ops and the Triton path is taken for CPU tensors, so
the time measured is the optimizer's own per-step work (lists, dispatch, the cached address
table). This module imports only ``optforge`` and ``optforge.optim.kernels.triton``, so
``scripts/host_time.sh`` can run it against an older tree to measure before and after.
"""

from __future__ import annotations

import torch

from optforge.optim.kernels import triton as triton_kernel


class _NoLaunch:
    """Stands for the jitted kernels: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None

    step = count_agreement = property(lambda self: self)


def host_step_time(n_tensors: int = 290, steps: int = 300, cautious: bool = False,
                   seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Python time of ``optforge.Lion(fused=True).step()`` on the Triton path over
    ``n_tensors`` CPU tensors with the kernel launches stubbed out: everything the host does
    per step (the optimizer's lists, dispatch, the cached address table), nothing the device
    does. Median and 10th-90th percentiles in microseconds over ``steps`` timed steps, and
    ``table_us``: the cached address-table lookup alone (best of 15 x 200 calls)."""
    import statistics
    import time
    import timeit

    import optforge

    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 64), (64,), (256, 64), (64, 256)]  # a transformer block's mix
    params = [torch.nn.Parameter(torch.randn(shapes[i % 4], generator=generator))
              for i in range(n_tensors)]  # fmt: skip
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    grads = [p.grad for p in params]
    saved = triton_kernel.runs_on, triton_kernel._kernels
    triton_kernel.runs_on = lambda device: device.type in ("cpu", "cuda")
    triton_kernel._kernels = lambda: _NoLaunch()
    try:
        opt = optforge.Lion(params, lr=1e-3, fused=True, cautious=cautious)
        for _ in range(20):  # warm: state, tables
            opt.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            opt.step()
            times.append((time.perf_counter() - start) * 1e6)
        momenta = [opt.state[p]["exp_avg"] for p in params]
        lookup = min(timeit.repeat(lambda: triton_kernel._table(params, grads, momenta),
                                   number=200, repeat=15)) / 200 * 1e6  # fmt: skip
    finally:
        triton_kernel.runs_on, triton_kernel._kernels = saved
        triton_kernel.clear_cache()
    deciles = statistics.quantiles(times, n=10)
    return {"median_us": statistics.median(times), "p10_us": deciles[0], "p90_us": deciles[-1],
            "table_us": lookup}  # fmt: skip
