"""Where the time of a one-tile GPU step goes, by CUDA kernel (PyTorch's profiler reads CuPy's kernels too).

    python bench/kernel_table.py --config coates200 --minibatch 96 --dtype float32 --json out.json
    python bench/kernel_table.py --config coates200 --tiles 2x2 --workers 4 --dtype bfloat16   # worker threads

Runs the one-tile step in this process (no Dask, no syncs added), records
every kernel the GPU ran over ``--runs`` steps with ``torch.profiler``
(CUPTI), and prints GPU time per step by kernel name, the step's wall time,
and the GPU's idle share (wall time not covered by kernels: launch gaps,
host syncs, Python).  Unlike ``profile_primitives.py`` this does not slow
the step down, and it names the kernels that ``(rest)`` hides there.

``--workers K`` (K > 1, or ``--dask`` with any K) runs the step on K Dask workers as threads of this process
sharing the GPU (as ``gpu_step.py``'s ``dasksae-4w-threads`` row does, with
``--steps-per-task`` steps a task; ``--pipelined``: each group submitted
before the last one's losses are read).  Their streams overlap, so kernel
time can exceed the wall time; the table also gives the GPU's *busy* time (the
union of the kernels' intervals), and the idle share is wall minus busy.
A step whose GPU is busy most of its wall time is bound by the device; one
whose GPU idles is bound by the host or by waits between tiles.
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


def union_seconds(intervals) -> float:
    """Total length of the union of ``(start, end)`` intervals (kernels of several streams overlap)."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def concurrent_seconds(intervals) -> dict:
    """How long 1, 2, 3 and 4 or more of the ``(start, end)`` intervals run at once (kernels of several streams):
    ``{count: seconds}``, counts from 1 (4: four or more)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    seconds, running, last = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, 0, None
    for moment, change in events:
        if running and last is not None:
            seconds[min(running, 4)] += moment - last
        running, last = running + change, moment
    return seconds


def idle_gaps(kernels):
    """The GPU's idle gaps between kernels (``(name, start, seconds)``, of any streams): ``(gap seconds, the kernel
    whose end the GPU idled after, the kernel it idled before)`` for each stretch with no kernel running."""
    gaps, reach, last = [], None, None
    for name, start, seconds in sorted(kernels, key=lambda kernel: kernel[1]):
        if reach is not None and start > reach:
            gaps.append((start - reach, last, name))
        if reach is None or start + seconds > reach:
            reach, last = start + seconds, name
    return gaps


def write_trace(path, kernels, streams):
    """Write ``kernels`` (``(name, start, seconds)``) with their CUDA ``streams`` to ``path`` as JSON, in start order,
    times in seconds from the first kernel's start."""
    records = sorted(zip(kernels, streams), key=lambda record: record[0][1])
    origin = records[0][0][1] if records else 0.0
    with open(path, "w") as handle:
        json.dump([{"name": kernel_family(name), "stream": int(stream), "start": start - origin, "seconds": seconds}
                   for (name, start, seconds), stream in records], handle)


GAP_BOUNDS = (10e-6, 50e-6, 200e-6, 1e-3)  # seconds: the gap table's bins


def gap_summary(gaps, runs: int, top: int = 12):
    """Idle time a step by gap size, and the kernel pairs (by family) the most idle time falls between."""
    bins = [0.0] * (len(GAP_BOUNDS) + 1)
    counts = [0] * (len(GAP_BOUNDS) + 1)
    pairs, pair_counts = collections.defaultdict(float), collections.defaultdict(int)
    for gap, before, after in gaps:
        index = sum(gap >= bound for bound in GAP_BOUNDS)
        bins[index] += gap / runs
        counts[index] += 1
        pair = (kernel_family(before), kernel_family(after))
        pairs[pair] += gap / runs
        pair_counts[pair] += 1
    edges = ["0"] + [f"{bound * 1e6:g} us" for bound in GAP_BOUNDS] + ["inf"]
    by_size = [{"from": edges[i], "to": edges[i + 1], "seconds": bins[i], "gaps": counts[i] / runs}
               for i in range(len(bins))]
    by_pair = [{"after": a, "before": b, "seconds": seconds, "gaps": pair_counts[(a, b)] / runs}
               for (a, b), seconds in sorted(pairs.items(), key=lambda item: -item[1])[:top]]
    return {"by_size": by_size, "by_pair": by_pair}


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
    parser.add_argument("--workers", type=int, default=1, help="K > 1: the step on K worker threads sharing the GPU")
    parser.add_argument("--dask", action="store_true",
                        help="the step on --workers Dask worker threads even where that is 1 (as gpu_step.py's "
                             "dasksae-1w row runs it, but in this process), instead of in-process")
    parser.add_argument("--steps-per-task", type=int, default=10, help="steps in each tile's task (with --workers)")
    parser.add_argument("--pipelined", action="store_true",
                        help="with --workers: each group of steps submitted before the previous group's losses are "
                             "read, as dasksae train does")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None)
    parser.add_argument("--trace", default=None,
                        help="write every profiled kernel (name, CUDA stream, start and length in seconds from the "
                             "first) to this JSON file, to see which streams' kernels run side by side")
    args = parser.parse_args(argv)
    config = coates(args.config)
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32")
    cluster = client = None
    on_dask = args.workers > 1 or args.dask
    if on_dask:
        import distributed

        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=False,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        network = TiledNetwork(config, args.tiles, client, seed=0, dtype=args.dtype, device="cuda")
        data = network.place(x)
        steps = args.steps_per_task

        pending = []

        def run():
            pending.append(network.submit_steps([data] * steps, 1e-3, 0.9))
            if not args.pipelined or len(pending) > 1:
                pending.pop(0).result()
    else:
        network = TiledNetwork(config, args.tiles, executor=LocalExecutor(), seed=0, dtype=args.dtype, device="cuda")
        data, steps = cupy.asarray(x), 1

        def run():
            network.step(data, 1e-3, 0.9)

    def drain():
        while on_dask and pending:
            pending.pop(0).result()
        cupy.cuda.runtime.deviceSynchronize()

    for _ in range(2):
        run()
    drain()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        for _ in range(args.runs):
            run()
        drain()
        wall = (time.perf_counter() - started) / (args.runs * steps)
    if client is not None:
        client.close()
        cluster.close()
    totals, counts = collections.defaultdict(float), collections.defaultdict(int)
    runs = args.runs * steps
    try:  # every device activity, linked to a torch op or not
        events = [e for e in profiler.profiler.kineto_results.events()
                  if e.device_type() == torch.autograd.DeviceType.CUDA]
        kernels = [(e.name(), e.start_ns() / 1e9, e.duration_ns() / 1e9) for e in events]
        streams = [getattr(e, "device_resource_id", lambda: -1)() for e in events]
    except AttributeError:  # another torch: the parsed events
        events = [e for e in profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = [(e.name, e.time_range.start / 1e6, e.time_range.elapsed_us() / 1e6) for e in events]
        streams = [getattr(e, "device_resource_id", -1) for e in events]
    if args.trace:
        write_trace(args.trace, kernels, streams)
    for name, _, seconds in kernels:
        family = kernel_family(name)
        totals[family] += seconds / runs
        counts[family] += 1
    busy_total = union_seconds([(start, start + seconds) for _, start, seconds in kernels]) / runs
    busy = sum(totals.values())
    rows = sorted(totals.items(), key=lambda item: -item[1])
    workers = f", {args.workers} worker thread{'s' if args.workers > 1 else ''}" if on_dask else ""
    print(f"{args.config} M={args.minibatch} {args.dtype} tiles {args.tiles}{workers}: {wall * 1e3:.1f} ms a step (profiled), "
          f"kernels {busy * 1e3:.1f} ms, GPU busy {busy_total * 1e3:.1f} ms, GPU idle {max(wall - busy_total, 0) / wall:.1%}, "
          f"{sum(counts.values()) // runs} kernels a step")
    for name, seconds in rows[: args.top]:
        print(f"  {name:<62}{seconds * 1e3:>8.2f} ms {seconds / wall:>6.1%} {counts[name] // runs:>5}x")
    concurrent = {count: seconds / runs for count, seconds in
                  concurrent_seconds([(start, start + seconds) for _, start, seconds in kernels]).items()}
    print("GPU time a step with 1, 2, 3, 4+ kernels running at once: "
          + ", ".join(f"{seconds * 1e3:.2f} ms" for seconds in concurrent.values()))
    gaps = gap_summary(idle_gaps(kernels), runs)
    print("GPU idle a step by gap length (gaps inside the profiled steps; the rest of wall minus busy is before the "
          "first kernel and after the last):")
    for row in gaps["by_size"]:
        print(f"  {row['from']:>7} to {row['to']:<7}{row['seconds'] * 1e3:>8.2f} ms {row['gaps']:>8.1f} gaps")
    print("GPU idle a step between kernel families (after -> before):")
    for row in gaps["by_pair"]:
        print(f"  {row['after'][:40]:<41}-> {row['before'][:40]:<41}{row['seconds'] * 1e3:>7.2f} ms {row['gaps']:>7.1f}x")
    launcher_idle = None
    if on_dask:
        from dasksae import launcher

        launcher_idle = launcher.idle_seconds
        print(f"the one launcher: {launcher.launched} tile steps launched for other threads, "
              f"{launcher_idle * 1e3 / max(runs + 2 * steps, 1):.2f} ms a step with no step able to go on")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": args.minibatch, "dtype": args.dtype, "tiles": args.tiles,
                       "workers": args.workers, "pipelined": args.pipelined, "wall_seconds": wall, "kernel_seconds": busy, "busy_seconds": busy_total,
                       "kernels": {n: {"seconds": s, "calls": counts[n] // runs} for n, s in rows},
                       "idle_gaps": gaps, "launcher_idle_seconds_total": launcher_idle,
                       "concurrent_seconds": concurrent,
                       "card": torch.cuda.get_device_name()}, handle, indent=1)


if __name__ == "__main__":
    main()
