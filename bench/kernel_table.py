"""Where the time of a one-tile GPU step goes, by CUDA kernel (PyTorch's profiler reads CuPy's kernels too).

    python bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --json out.json

Runs the one-tile step in this process (no Dask, no syncs added), records
every kernel the GPU ran over ``--runs`` steps with ``torch.profiler``
(CUPTI), and prints GPU time per step by kernel name, the step's wall time,
and the GPU's idle share (wall time not covered by kernels: launch gaps,
host syncs, Python).  Unlike ``profile_primitives.py`` this does not slow
the step down, and it names the kernels that ``(rest)`` hides there.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy


def kernel_family(name):
    """A short name for a kernel: cuBLAS GEMMs grouped by their tile shape, templates cut off."""
    name = name.split("(")[0]
    for prefix in ("void ", "cupy_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split("<")[0][:60] if "gemm" not in name.lower() else name[:60]


def main(argv=None):
    import cupy
    import torch
    from torch.profiler import ProfilerActivity, profile

    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tiles", default="1x1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = coates(args.config)
    network = TiledNetwork(config, args.tiles, executor=LocalExecutor(), seed=0, dtype=args.dtype, device="cuda")
    x = cupy.asarray(numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32"))
    for _ in range(2):
        network.step(x, 1e-3, 0.9)
    cupy.cuda.runtime.deviceSynchronize()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        for _ in range(args.runs):
            network.step(x, 1e-3, 0.9)
        cupy.cuda.runtime.deviceSynchronize()
        wall = (time.perf_counter() - started) / args.runs
    totals, counts = collections.defaultdict(float), collections.defaultdict(int)
    try:  # every device activity, linked to a torch op or not
        kernels = [(e.name(), e.duration_ns() / 1e9) for e in profiler.profiler.kineto_results.events()
                   if e.device_type() == torch.autograd.DeviceType.CUDA]
    except AttributeError:  # another torch: the parsed events
        kernels = [(e.name, e.time_range.elapsed_us() / 1e6) for e in profiler.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA]
    for name, seconds in kernels:
        family = kernel_family(name)
        totals[family] += seconds / args.runs
        counts[family] += 1
    busy = sum(totals.values())
    rows = sorted(totals.items(), key=lambda item: -item[1])
    print(f"{args.config} M={args.minibatch} {args.dtype} tiles {args.tiles}: {wall * 1e3:.1f} ms a step (profiled), "
          f"kernels {busy * 1e3:.1f} ms, GPU idle {max(wall - busy, 0) / wall:.1%}, "
          f"{sum(counts.values()) // args.runs} kernels a step")
    for name, seconds in rows[: args.top]:
        print(f"  {name:<62}{seconds * 1e3:>8.2f} ms {seconds / wall:>6.1%} {counts[name] // args.runs:>5}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": args.minibatch, "dtype": args.dtype, "tiles": args.tiles,
                       "wall_seconds": wall, "kernel_seconds": busy,
                       "kernels": {n: {"seconds": s, "calls": counts[n] // args.runs} for n, s in rows},
                       "card": torch.cuda.get_device_name()}, handle, indent=1)


if __name__ == "__main__":
    main()
