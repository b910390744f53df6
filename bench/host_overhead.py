"""Where the host's time of a GPU step goes: Python and launches, by function (cProfile), one tile and 2x2 tiles.

    python bench/host_overhead.py --config coates200 --minibatch 96 --dtype float32 --tiles 1x1,2x2 --json out.json

Workers sharing one GPU as threads take turns at the GIL, so a step of 2x2
tiles on four worker threads costs at least the host time of all four
tiles' programs; if that is more than the GPU's time, the GPU waits.  This
runs the step in this process (no Dask): 1x1 is the fused one-tile step,
2x2 the same layer code over four tiles one after another (what the four
threads do together, less the SPMD bookkeeping of the other tiles).  It
prints the step's wall time, the host time outside waits for the device
(the functions that synchronise are named in ``WAITS``), and the top
functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import numpy

WAITS = ("synchronize", "'get' of", "deviceSynchronize", "host_floats")


def profile_steps(config, tiles, minibatch, dtype, runs, top, device="cuda"):
    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork

    if device == "cuda":
        import cupy

        xp, synchronize = cupy, cupy.cuda.runtime.deviceSynchronize
    else:  # a smoke test of this script on a machine without a GPU
        xp, synchronize = numpy, lambda: None
    network = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=0, dtype=dtype, device=device)
    x = xp.asarray(numpy.random.default_rng(0).standard_normal(config.input_shape + (minibatch,)).astype("float32"))
    for _ in range(2):
        network.step(x, 1e-3, 0.9)
    synchronize()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(runs):
        network.step(x, 1e-3, 0.9)
    synchronize()
    profiler.disable()
    wall = (time.perf_counter() - started) / runs
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (calls, _, own, cumulative, _) in stats.stats.items():
        rows.append({"function": f"{filename.split('/')[-1]}:{line}({name})", "calls": calls / runs,
                     "own_seconds": own / runs, "cumulative_seconds": cumulative / runs})
    rows.sort(key=lambda r: -r["own_seconds"])
    waiting = sum(r["own_seconds"] for r in rows if any(w in r["function"] for w in WAITS))
    total = sum(r["own_seconds"] for r in rows)
    calls = sum(r["calls"] for r in rows)
    print(f"tiles {tiles} {dtype} M={minibatch}: wall {wall * 1e3:.1f} ms a step, "
          f"profiled host time {total * 1e3:.1f} ms of which waiting for the device {waiting * 1e3:.1f} ms, "
          f"{calls:.0f} Python calls a step (cProfile slows the host: compare, not add)")
    for row in rows[:top]:
        print(f"  {row['function'][:70]:<70}{row['calls']:>8.0f}{row['own_seconds'] * 1e3:>9.2f} ms{row['cumulative_seconds'] * 1e3:>9.2f} ms")
    return {"tiles": tiles, "dtype": dtype, "minibatch": minibatch, "wall_seconds": wall, "host_seconds": total,
            "waiting_seconds": waiting, "python_calls": calls, "top": rows[:top]}


def main(argv=None):
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tiles", default="1x1,2x2")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = coates(args.config)
    results = [profile_steps(config, tiles, args.minibatch, args.dtype, args.runs, args.top, args.device) for tiles in args.tiles.split(",")]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
