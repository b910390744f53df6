"""Where the time of one GPU training step goes, layer by layer: each tile function of the one-tile step timed.

    python bench/profile_step.py --config coates200 --minibatch 96 --dtype float32 --json out.json

Runs the one-tile step in this process (as ``dasksae-1w`` runs it inside its
one task) with an executor that synchronises the GPU around every tile
function and adds its time to the function's name (``stage2-filter``,
``stage2-filter-backward`` (with the fused update), ``stage1-pool``, ...).
Prints milliseconds per step by name, sorted, with the share of the step.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy


def main(argv=None):
    import cupy

    from dasksae import tiled_network
    from dasksae.tile_array import LocalExecutor
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tiles", default="1x1", help="e.g. 2x2: every tile's functions run one after another in this process")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    totals = collections.defaultdict(float)

    class TimingExecutor(LocalExecutor):
        def run(self, tile, function, *arguments, name, halo=False):
            cupy.cuda.runtime.deviceSynchronize()
            started = time.perf_counter()
            handle = super().run(tile, function, *arguments, name=name, halo=halo)
            cupy.cuda.runtime.deviceSynchronize()
            totals[name] += time.perf_counter() - started
            return handle

    config = coates(args.config)
    tiled = args.tiles != "1x1"
    network = tiled_network.TiledNetwork(config, args.tiles, executor=TimingExecutor() if tiled else LocalExecutor(), seed=0,
                                         dtype=args.dtype, device="cuda")
    x = (numpy.asarray if tiled else cupy.asarray)(numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32"))
    network.step(x, 1e-3, 0.9)  # warm-up: kernels compiled, memory pool filled
    totals.clear()
    plain = tiled_network.LocalExecutor
    tiled_network.LocalExecutor = TimingExecutor  # the one-tile step builds its executor by this name
    try:
        cupy.cuda.runtime.deviceSynchronize()
        started = time.perf_counter()
        for _ in range(args.runs):
            network.step(x, 1e-3, 0.9)
        cupy.cuda.runtime.deviceSynchronize()
        step = (time.perf_counter() - started) / args.runs
    finally:
        tiled_network.LocalExecutor = plain
    rows = sorted(((name, seconds / args.runs) for name, seconds in totals.items()), key=lambda r: -r[1])
    print(f"{args.config} M={args.minibatch} {args.dtype} tiles {args.tiles}: {step * 1e3:.1f} ms a step (timed with a sync around every function)")
    for name, seconds in rows:
        print(f"  {name:<28}{seconds * 1e3:>8.2f} ms {seconds / step:>6.1%}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": args.minibatch, "dtype": args.dtype, "tiles": args.tiles, "step_seconds": step,
                       "functions": dict(rows)}, handle, indent=1)


if __name__ == "__main__":
    main()
