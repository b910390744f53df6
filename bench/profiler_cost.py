"""What Dask's statistical profiler costs a Python thread that launches work: the host side, no GPU.

    python bench/profiler_cost.py --json profiler-cost.json

Every Dask worker samples the stack of each task it runs every
``distributed.worker.profile.interval`` (10 ms by default) on its event loop,
holding the GIL: ``sys._current_frames()`` and ``distributed.profile.process``
over the frame.  A tile's task launches a step's kernels from Python, so each
sample is time its thread cannot run.  This times one sample on a stack of
``--depth`` frames, then a thread doing pure-Python work alone and beside
``--samplers`` sampling threads (the 4 worker threads of one process sample
4 times as often), in turn, and prints the share of the thread's throughput
that the samplers took.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def _deep(depth: int, work):
    return work() if depth == 0 else _deep(depth - 1, work)


def _work():
    total = 0
    for value in range(2000):
        total += value
    return total


def _worker(depth: int, seconds: float, out: list):
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        _deep(depth, _work)
        calls += 1
    out.append(calls / seconds)


def _sampler(ident: int, interval: float, stop: threading.Event, costs: list):
    from distributed import profile  # imported before the runs (main)

    state = profile.create()
    while not stop.is_set():
        began = time.perf_counter()
        frame = sys._current_frames().get(ident)
        if frame is not None:  # a sample of the working thread's stack (none once it has ended)
            profile.process(frame, None, state)
            costs.append(time.perf_counter() - began)
        stop.wait(interval)


def run(depth: int, seconds: float, samplers: int, interval: float) -> dict:
    """One timed run of the working thread, beside ``samplers`` sampling threads: its calls a second and the
    samples' median cost."""
    rate, costs, stop = [], [], threading.Event()
    worker = threading.Thread(target=_worker, args=(depth, seconds, rate))
    worker.start()
    threads = [threading.Thread(target=_sampler, args=(worker.ident, interval, stop, costs)) for _ in range(samplers)]
    for thread in threads:
        thread.start()
    worker.join()
    stop.set()
    for thread in threads:
        thread.join()
    costs.sort()
    return {"samplers": samplers, "calls_per_second": rate[0], "samples": len(costs),
            "median_sample_seconds": costs[len(costs) // 2] if costs else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=40, help="frames on the sampled stack")
    parser.add_argument("--seconds", type=float, default=3.0, help="each timed run")
    parser.add_argument("--samplers", type=int, default=4, help="sampling threads beside the worker in the sampled runs")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between one sampler's samples")
    parser.add_argument("--rounds", type=int, default=2, help="plain and sampled runs, in turn")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    import distributed.profile  # noqa: F401 - its import (seconds) must not fall inside a timed run

    rows = []
    print(f"{'samplers':>9}{'calls/s':>10}{'samples':>9}{'sample us':>11}")
    for _ in range(args.rounds):
        for samplers in (0, 1, args.samplers):
            row = run(args.depth, args.seconds, samplers, args.interval)
            rows.append(row)
            cost = "" if row["median_sample_seconds"] is None else f"{row['median_sample_seconds'] * 1e6:.0f}"
            print(f"{samplers:>9}{row['calls_per_second']:>10.0f}{row['samples']:>9}{cost:>11}", flush=True)
    plain = [r["calls_per_second"] for r in rows if r["samplers"] == 0]
    for samplers in sorted({r["samplers"] for r in rows} - {0}):
        sampled = [r["calls_per_second"] for r in rows if r["samplers"] == samplers]
        share = 1 - (sum(sampled) / len(sampled)) / (sum(plain) / len(plain))
        print(f"{samplers} sampler(s) every {args.interval * 1e3:.0f} ms took {share:.1%} of the thread's throughput")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"depth": args.depth, "interval": args.interval, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
