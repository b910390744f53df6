"""Time a model-parallel training step on a CPU LocalCluster against the single-process step.

    python bench/tiled_step.py                       # tiny and small, 1, 2 and 4 workers
    python bench/tiled_step.py --configs tiny --workers 4 --eager-messages --json out.json

For each config and worker count (tiles 1x1, 2x1, 2x2 for 1, 2, 4 workers;
one tile is one fused task per step, several tiles run either as one task per
tile exchanging halos directly, ``spmd``, or as a task per layer and halo
strip, ``graph``; the minibatch is placed on the workers ahead, as the
training loop's prefetch does) it runs ``--runs`` joint updates after ``--warmup-runs`` and prints one row
(``--pipelined``: each step submitted before the previous step's loss is read, as ``dasksae train`` does):
median step time, tasks per step, critical path (tasks on the longest chain
of dependencies), halo bytes per step, and where the time went according to
the workers' task stream: ``kernels`` is the busiest worker's compute time
per step (the tile functions: GEMMs, pooling, LCN, halo cuts), ``transfer``
the time workers spent receiving data, and ``overhead`` the rest of the step
(scheduling, messages, waiting on the chain), as a share of the step.  The
single-process row is :func:`dasksae.reference.train_step` on the same batch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy

TILINGS = {1: "1x1", 2: "2x1", 4: "2x2", 6: "3x2", 8: "4x2"}


def single_process(config, batch, runs, warmup, dtype):
    from dasksae.optim import init_velocity
    from dasksae.reference import init_params, train_step

    params = init_params(config, seed=0, dtype=dtype)
    velocity = init_velocity(params)
    times = []
    for index in range(warmup + runs):
        started = time.perf_counter()
        train_step(params, velocity, batch, config, 1e-3, 0.9)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def tiled(config, batch, workers, runs, warmup, dtype, eager, execution="graph", distributed_malloc=False, threads=False,
          pipelined=False):
    import contextlib

    import distributed

    from dasksae.cluster import local_worker_environment
    from dasksae.latency import eager_messages
    from dasksae.tiled_network import TiledNetwork
    from step_timing import row_seconds, time_groups

    with (contextlib.nullcontext() if distributed_malloc else local_worker_environment()), distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=not threads, dashboard_address=None, silence_logs=40
    ) as cluster, distributed.Client(cluster) as client:
        if eager:
            eager_messages(client)
        network = TiledNetwork(config, TILINGS[workers], client, seed=0, dtype=dtype, execution=execution)
        batch = network.place(batch)  # as the training loop's prefetch does
        for _ in range(warmup):
            network.step(batch, 1e-3, 0.9)
        with distributed.get_task_stream(client) as stream:
            times, report = time_groups(network, [batch], 1e-3, 0.9, runs, pipelined)
        compute, transfer = {}, {}
        for task in stream.data:
            for span in task.get("startstops", ()):
                bucket = compute if span["action"] == "compute" else transfer if span["action"] == "transfer" else None
                if bucket is not None:
                    bucket[task["worker"]] = bucket.get(task["worker"], 0.0) + span["stop"] - span["start"]
    step = row_seconds(times, pipelined)
    kernels = max(compute.values(), default=0.0) / runs
    moved = sum(transfer.values()) / runs / max(1, workers)
    if execution == "spmd" and workers > 1:
        kernels = moved = float("nan")  # a tile's one task also waits on its neighbours: not kernel time
    return {
        "execution": execution if workers > 1 else "fused",
        "step_seconds": step,
        "tasks": report.statistics["tasks"],
        "graph_tasks": report.statistics.get("graph_tasks", report.statistics["tasks"]),
        "halo_tasks": report.statistics["halo_tasks"],
        "critical_path": report.statistics["critical_path"],
        "halo_bytes": report.statistics["halo_bytes"],
        "kernel_seconds": kernels,
        "transfer_seconds": moved,
        "kernel_share": kernels / step,
        "transfer_share": moved / step,
        "overhead_share": max(0.0, 1.0 - (kernels + moved) / step),
        "seconds_per_task": step / report.statistics["tasks"],
    }


def main(argv=None):
    import dask
    import distributed

    from dasksae.network import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup-runs", type=int, default=3)
    parser.add_argument("--eager-messages", action="store_true", help="batched-stream intervals set to 0")
    parser.add_argument("--distributed-malloc", action="store_true",
                        help="keep distributed's MALLOC_TRIM_THRESHOLD_ for the workers (dasksae's clusters drop it)")
    parser.add_argument("--executions", default="spmd,graph", help="ways to run multi-tile steps")
    parser.add_argument("--threads", action="store_true", help="the workers as threads of one process (halos by reference)")
    parser.add_argument("--pipelined", action="store_true",
                        help="submit each step before reading the previous one's loss, as dasksae train does")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    header = (
        f"{'config':<8}{'M':>4}{'workers':>8}{'tiles':>6}{'exec':>6}{'step ms':>9}{'x 1-proc':>9}{'tasks':>7}{'halo':>6}"
        f"{'crit':>6}{'halo KB':>9}{'ms/task':>8}{'kernels':>8}{'transfer':>9}{'overhead':>9}"
    )
    print(header)
    for name in args.configs.split(","):
        config = load_config(name)
        batch = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype(args.dtype)
        reference = single_process(config, batch, args.runs, args.warmup_runs, args.dtype)
        rows.append({"config": name, "minibatch": args.minibatch, "workers": 0, "tiles": "single-process",
                     "step_seconds": reference})
        print(f"{name:<8}{args.minibatch:>4}{'-':>8}{'-':>6}{'-':>6}{reference * 1e3:>9.1f}{1.0:>9.2f}")
        runs = [(w, e) for w in (int(w) for w in args.workers.split(",")) for e in (args.executions.split(",") if w > 1 else ["fused"])]
        for workers, execution in runs:
            result = tiled(config, batch, workers, args.runs, args.warmup_runs, args.dtype, args.eager_messages,
                           "spmd" if execution == "fused" else execution, args.distributed_malloc, args.threads,
                           args.pipelined)
            row = {"config": name, "minibatch": args.minibatch, "workers": workers, "tiles": TILINGS[workers], **result}
            rows.append(row)
            print(
                f"{name:<8}{args.minibatch:>4}{workers:>8}{TILINGS[workers]:>6}{result['execution']:>6}{result['step_seconds'] * 1e3:>9.1f}"
                f"{result['step_seconds'] / reference:>9.2f}{result['tasks']:>7}{result['halo_tasks']:>6}"
                f"{result['critical_path']:>6}{result['halo_bytes'] / 1024:>9.0f}{result['seconds_per_task'] * 1e3:>8.2f}"
                f"{result['kernel_share']:>8.0%}{result['transfer_share']:>9.0%}{result['overhead_share']:>9.0%}"
            )
    if args.json:
        meta = {
            "command": "python bench/tiled_step.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
            "machine": f"{platform.machine()} {os.cpu_count()} CPU cores",
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "dask": dask.__version__,
            "distributed": distributed.__version__,
            "eager_messages": args.eager_messages,
            "pipelined": args.pipelined,
        }
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)
    return rows


if __name__ == "__main__":
    main()
