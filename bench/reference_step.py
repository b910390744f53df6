"""Time the single-process reference step (NumPy or CuPy): the baseline later work is measured against.

    python bench/reference_step.py --config tiny --minibatch 32 --backend numpy
    python bench/reference_step.py --config coates1.8b --minibatch 96 --backend cupy --json out.json

Prints one table row per (config, minibatch, backend, dtype): median step time
of ``--runs`` joint updates after ``--warmup-runs``, images/s, achieved GEMM
TFLOP/s (the FLOPs ``dasksae info`` counts) and peak device memory per
parameter (CuPy only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy

from dasksae.accounting import update_flops
from dasksae.network import load_config
from dasksae.optim import init_velocity
from dasksae.reference import init_params, train_step


def run(config_name, minibatch, backend, dtype, runs, warmup):
    config = load_config(config_name)
    if backend == "cupy":
        import cupy

        xp = cupy
        sync = cupy.cuda.runtime.deviceSynchronize
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
    else:
        xp, sync, pool = numpy, (lambda: None), None
    params = init_params(config, seed=0, dtype=dtype, xp=xp)
    velocity = init_velocity(params)
    rng = numpy.random.default_rng(0)
    batch = xp.asarray(rng.standard_normal(config.input_shape + (minibatch,)).astype(dtype))
    times = []
    for index in range(warmup + runs):
        sync()
        started = time.perf_counter()
        result = train_step(params, velocity, batch, config, 1e-4, 0.9)
        sync()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    flops = update_flops(config, minibatch)
    row = {
        "config": config.name,
        "parameters": config.encoder_parameters,
        "minibatch": minibatch,
        "backend": backend,
        "dtype": dtype,
        "step_seconds": median,
        "images_per_second": minibatch / median,
        "tflops": flops / median / 1e12,
        "loss": result.loss,
    }
    if pool is not None:
        row["peak_bytes_per_parameter"] = pool.total_bytes() / config.trainable_parameters
        import cupy

        row["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    else:
        row["device"] = platform.processor() or platform.machine()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config name (repeatable; default tiny)")
    parser.add_argument("--minibatch", type=int, action="append", help="repeatable; default 32")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup-runs", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    print(f"{'config':<12}{'P':>14}{'M':>6}{'backend':>8}{'dtype':>9}{'step ms':>10}{'img/s':>10}{'TFLOP/s':>9}{'B/param':>9}")
    for config in args.config or ["tiny"]:
        for minibatch in args.minibatch or [32]:
            row = run(config, minibatch, args.backend, args.dtype, args.runs, args.warmup_runs)
            rows.append(row)
            print(
                f"{row['config']:<12}{row['parameters']:>14,}{minibatch:>6}{row['backend']:>8}{row['dtype']:>9}"
                f"{row['step_seconds'] * 1e3:>10.1f}{row['images_per_second']:>10.1f}{row['tflops']:>9.2f}"
                f"{row.get('peak_bytes_per_parameter', float('nan')):>9.1f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "command": "bench/reference_step.py"}, handle, indent=2)


if __name__ == "__main__":
    main()
