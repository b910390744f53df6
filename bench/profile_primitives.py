"""Where the time of a one-tile GPU step goes, by array primitive (GEMM, gather, fold, update, operand, ...).

    python bench/profile_primitives.py --config coates200 --minibatch 96 --dtype float32 --json out.json

Wraps the primitives that the tile functions call (in every module that
imported them by name) so that each outermost call is timed with a GPU sync
before and after, runs a few one-tile steps in this process, and prints the
time per step of each primitive; ``(rest)`` is what the wrapped calls do not
cover (elementwise array code, pooling arithmetic, Python).  The syncs make
the step slower than it is: read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import time

import numpy

PRIMITIVES = {
    "dasksae.kernels.gemm": ["batched_matmul", "operand"],
    "dasksae.kernels.local_filter": ["gather_patches", "fold_patches_into", "batched_matmul", "operand", "block_view",
                                     "block_rows", "write_block_rows"],
    "dasksae.kernels.normalize": ["inverse_row_norms", "unit_rows_sgd"],
    "dasksae.tile_ops": ["batched_matmul", "operand", "gather_patches", "fold_patches_into", "inverse_row_norms", "block_rows",
                         "unit_rows_sgd", "lcn_forward", "lcn_backward",
                         "window_sum", "window_sum_transpose"],
}


def main(argv=None):
    import importlib

    import cupy

    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    totals, counts = collections.defaultdict(float), collections.defaultdict(int)
    depth = [0]

    def timed(name, function):
        @functools.wraps(function)
        def wrapper(*a, **k):
            if depth[0]:
                return function(*a, **k)
            depth[0] += 1
            cupy.cuda.runtime.deviceSynchronize()
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                cupy.cuda.runtime.deviceSynchronize()
                totals[name] += time.perf_counter() - started
                counts[name] += 1
                depth[0] -= 1
        return wrapper

    # the local-filter products call the primitives inside: time them as themselves, their parts below them
    config = coates(args.config)
    network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=0, dtype=args.dtype, device="cuda")
    x = cupy.asarray(numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32"))
    network.step(x, 1e-3, 0.9)
    for module_name, names in PRIMITIVES.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, timed(name, getattr(module, name)))
    totals.clear()
    counts.clear()
    cupy.cuda.runtime.deviceSynchronize()
    started = time.perf_counter()
    for _ in range(args.runs):
        network.step(x, 1e-3, 0.9)
    cupy.cuda.runtime.deviceSynchronize()
    step = (time.perf_counter() - started) / args.runs
    rows = sorted(((n, s / args.runs, counts[n] // args.runs) for n, s in totals.items()), key=lambda r: -r[1])
    rest = step - sum(s for _, s, _ in rows)
    print(f"{args.config} M={args.minibatch} {args.dtype}: {step * 1e3:.1f} ms a step with a sync around every primitive")
    for name, seconds, calls in rows + [("(rest)", rest, 0)]:
        print(f"  {name:<26}{seconds * 1e3:>8.2f} ms {seconds / step:>6.1%}  {calls:>5} calls")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": args.minibatch, "dtype": args.dtype, "step_seconds": step,
                       "primitives": {n: {"seconds": s, "calls": c} for n, s, c in rows}, "rest_seconds": rest}, handle, indent=1)


if __name__ == "__main__":
    main()
