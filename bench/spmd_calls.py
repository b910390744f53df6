"""Python calls a tile's SPMD task makes per step, against all tiles' step run one after another in one thread.

    python bench/spmd_calls.py --config tiny --tiles 2x2 --minibatch 1 --steps 20
    python bench/spmd_calls.py --config tiny --tiles 1x1 --minibatch 1 --steps 20   # the one-tile fused step

Workers sharing one GPU as threads take turns at the GIL, so every Python
call of a tile's program costs the whole step.  This counts them with
cProfile inside each tile's task on a CPU cluster of worker threads (one per
tile), and in the single-thread step of the same tiles (``LocalExecutor``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats

import numpy


def main(argv=None):
    import distributed

    from dasksae import spmd
    from dasksae.network import load_config
    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork
    from dasksae.tiling import TileGrid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--tiles", default="2x2")
    parser.add_argument("--minibatch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    tiles = TileGrid.parse(config, args.tiles).count
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32")
    if tiles == 1:
        return fused_step_calls(config, x, args)

    serial = TiledNetwork(config, args.tiles, executor=LocalExecutor(), seed=0, dtype="float32")
    serial.steps([x] * 2, 1e-3, 0.9)
    profiler = cProfile.Profile()
    profiler.enable()
    serial.steps([x] * args.steps, 1e-3, 0.9)
    profiler.disable()
    serial_calls = pstats.Stats(profiler).total_calls / args.steps

    profiles = []
    run_steps = spmd._run_steps

    def profiled(*a, **k):
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            return run_steps(*a, **k)
        finally:
            profiler.disable()
            profiles.append(profiler)

    with distributed.LocalCluster(n_workers=tiles, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, args.tiles, client, seed=0, dtype="float32")
            network.steps([x] * 2, 1e-3, 0.9)
            spmd._run_steps = profiled
            try:
                network.steps([x] * args.steps, 1e-3, 0.9)
            finally:
                spmd._run_steps = run_steps
    task_calls = sum(pstats.Stats(p).total_calls for p in profiles) / len(profiles) / args.steps
    print(f"{args.config} {args.tiles} M={args.minibatch}: {task_calls:,.0f} Python calls a tile's SPMD task makes a step; "
          f"{serial_calls:,.0f} for all {tiles} tiles one after another in one thread")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "tiles": args.tiles, "minibatch": args.minibatch,
                       "calls_per_tile_task_step": task_calls, "calls_per_serial_step": serial_calls}, handle, indent=1)


def fused_step_calls(config, x, args):
    """The one-tile fused step in this process: Python calls and median wall time a step (host-bound at small M)."""
    import statistics
    import time

    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork

    network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=0, dtype="float32")
    for _ in range(3):
        network.step(x, 1e-3, 0.9)
    times = []
    for _ in range(max(args.steps, 20)):
        started = time.perf_counter()
        network.step(x, 1e-3, 0.9)
        times.append(time.perf_counter() - started)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        network.step(x, 1e-3, 0.9)
    profiler.disable()
    calls = pstats.Stats(profiler).total_calls / args.steps
    median = statistics.median(times)
    print(f"{args.config} 1x1 M={args.minibatch}: {calls:,.0f} Python calls a fused step, median step {median * 1e3:.2f} ms")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "tiles": "1x1", "minibatch": args.minibatch, "calls_per_step": calls,
                       "median_step_seconds": median}, handle, indent=1)


if __name__ == "__main__":
    main()
