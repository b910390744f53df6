"""Which kernels of a one-tile GPU step are far from their bytes: Nsight Compute's DRAM bytes beside each kernel's time.

Two parts.  ``--step`` runs the in-process step (no Dask; CUDA graphs off, so
that the profiler sees each kernel) for ``--warmup-runs`` steps, then one step
between ``cudaProfilerStart`` and ``cudaProfilerStop``: run it under Nsight
Compute with ``--profile-from-start off``, its metrics as raw CSV::

    ncu --profile-from-start off --cache-control none --clock-control none --csv --page raw --print-units base \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,\\
launch__registers_per_thread,launch__grid_size \\
        python bench/kernel_bytes.py --step --config coates200 --minibatch 96 --dtype bfloat16 > step.csv

``--table step.csv`` reads that CSV and prints, by kernel name, the calls, the
time (serialised, as the profiler runs them), the DRAM bytes and the rate
they moved at, L2's bytes, and the time the DRAM bytes would take at
``--copy-rate`` (the issue's copy rate: 2.9 TB/s on an H100); sorted by the
time over that floor, which is where a kernel loses most against its
bytes.  ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys

METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum")


def run_step(args) -> None:
    import os

    os.environ.setdefault("DASKSAE_CUDA_GRAPHS", "0")
    import cupy
    import numpy

    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork
    from gpu_step import coates

    config = coates(args.config)
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32")
    network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=0, dtype=args.dtype, device="cuda")
    data = cupy.asarray(x)
    for _ in range(args.warmup_runs):
        network.step(data, 1e-3, 0.9)
    cupy.cuda.runtime.deviceSynchronize()
    cupy.cuda.profiler.start()
    network.step(data, 1e-3, 0.9)
    cupy.cuda.runtime.deviceSynchronize()
    cupy.cuda.profiler.stop()


def kernel_name(name: str) -> str:
    """The kernel's name without its arguments or template arguments."""
    name = name.split("(")[0]
    return name.split("<")[0][:60]


def read_rows(path: str) -> list[dict]:
    """The profiled kernels of Nsight Compute's raw CSV (its units row skipped), each a dict of name and metrics."""
    with open(path, newline="") as file:
        lines = [line for line in file if line.startswith('"')]  # the CSV, not the program's or the profiler's lines
    table = list(csv.DictReader(lines))
    rows = []
    for row in table:
        try:
            values = {metric: float(row[metric].replace(",", "")) for metric in METRICS}
        except (KeyError, ValueError):
            continue  # the units row
        rows.append({"name": kernel_name(row.get("Kernel Name", "?")), **values})
    return rows


def summarize(rows: list[dict], copy_rate: float) -> list[dict]:
    grouped = collections.OrderedDict()
    for row in rows:
        entry = grouped.setdefault(row["name"], {"name": row["name"], "calls": 0, "seconds": 0.0, "dram_bytes": 0.0,
                                                 "l2_bytes": 0.0})
        entry["calls"] += 1
        entry["seconds"] += row["gpu__time_duration.sum"] * 1e-9
        entry["dram_bytes"] += row["dram__bytes_read.sum"] + row["dram__bytes_write.sum"]
        entry["l2_bytes"] += row["lts__t_bytes.sum"]
    table = []
    for entry in grouped.values():
        floor = entry["dram_bytes"] / copy_rate
        table.append(entry | {"floor_seconds": floor, "over_floor_seconds": entry["seconds"] - floor,
                              "dram_rate": entry["dram_bytes"] / entry["seconds"] if entry["seconds"] else 0.0})
    return sorted(table, key=lambda entry: -entry["over_floor_seconds"])


def print_table(table: list[dict]) -> None:
    print(f"{'kernel':60s} {'calls':>5s} {'ms':>7s} {'DRAM GB':>8s} {'TB/s':>5s} {'L2 GB':>7s} {'floor':>6s} "
          f"{'over':>6s}")
    for entry in table:
        print(f"{entry['name']:60s} {entry['calls']:5d} {entry['seconds'] * 1e3:7.3f} {entry['dram_bytes'] / 1e9:8.3f} "
              f"{entry['dram_rate'] / 1e12:5.2f} {entry['l2_bytes'] / 1e9:7.3f} {entry['floor_seconds'] * 1e3:6.3f} "
              f"{entry['over_floor_seconds'] * 1e3:6.3f}")
    total = {key: sum(entry[key] for entry in table) for key in ("seconds", "dram_bytes", "floor_seconds",
                                                                  "over_floor_seconds")}
    print(f"{'all':60s} {sum(entry['calls'] for entry in table):5d} {total['seconds'] * 1e3:7.3f} "
          f"{total['dram_bytes'] / 1e9:8.3f} {total['dram_bytes'] / total['seconds'] / 1e12:5.2f} {'':7s} "
          f"{total['floor_seconds'] * 1e3:6.3f} {total['over_floor_seconds'] * 1e3:6.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", action="store_true", help="run the profiled step (under ncu)")
    parser.add_argument("--table", default=None, help="Nsight Compute's raw CSV of --step to summarise")
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--warmup-runs", type=int, default=2)
    parser.add_argument("--copy-rate", type=float, default=2.9e12, help="bytes a second: the floors' rate")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.step:
        run_step(args)
        return
    if not args.table:
        parser.error("give --step (under ncu) or --table CSV")
    table = summarize(read_rows(args.table), args.copy_rate)
    if not table:
        sys.exit(f"no profiled kernels in {args.table}: was --step run under ncu with the metrics this file names?")
    print_table(table)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"copy_rate": args.copy_rate, "kernels": table}, file, indent=1)


if __name__ == "__main__":
    main()
