"""The largest network one GPU updates: a joint step of the coates11.2b family, timed, with its memory per parameter.

    python bench/largest_update.py --inputs 188,176,168,160 --minibatch 96 --dtype float32 --json out.json

For each input size in turn (the coates11.2b network on an ``S x S x 3``
input: 188 gives the 11.0B net), it makes the weights on the GPU (CuPy's
generator: the same distribution as ``TiledNetwork``'s per-block host seeds,
without generating 40 GB on the host), runs the one-tile training step in
this process (the step a single worker runs inside its task), and reports
the step time and the GPU memory the step needed (what the CuPy pool and the
CUDA graphs' own pools hold) per parameter, against ``dasksae info``'s plan.
A size that does not fit is reported as such and the next is tried.  Since
session 54 the one tile's step is replayed as CUDA graphs
(``DASKSAE_CUDA_GRAPHS=auto``): the warm-up steps stage and capture them,
so that the timed steps launch them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy


def main(argv=None):
    import cupy

    from dasksae import cuda_graphs, tile_program
    from dasksae.accounting import memory_plan, update_flops
    from dasksae.network import named_config
    from dasksae.reference import initial_scale, split_dtype
    from dasksae.tiled_network import fused_single_tile_step

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="188,176,168,160")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup-runs", type=int, default=2,
                        help="untimed steps after the first (a graphed step is staged, then captured)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    storage, precision = split_dtype(args.dtype)
    card = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    free, total = cupy.cuda.runtime.memGetInfo()
    print(f"card: {card}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free)")
    rows = []
    for size in (int(s) for s in args.inputs.split(",")):
        config = named_config("coates11.2b").replace(input_shape=(size, size, 3), name=f"coates11.2b@{size}")
        parameters = config.trainable_parameters
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        row = {"config": config.name, "input": size, "parameters": parameters, "minibatch": args.minibatch, "dtype": args.dtype,
               "planned_bytes_per_parameter": memory_plan(config, args.minibatch, args.dtype)["total"] / parameters}
        try:
            generator = cupy.random.default_rng(0)
            states, scales = [], []
            for stage, geometry in zip(config.stages, config.geometry()):
                encoder = generator.standard_normal(geometry.weight_shape, dtype=storage)
                states.append({"encoder": encoder, "encoder_velocity": cupy.zeros_like(encoder)})
                scales.append({"scale": numpy.array(initial_scale(stage, geometry), dtype=storage),
                               "velocity": numpy.array(0, dtype=storage)})
            x = generator.standard_normal(config.input_shape + (args.minibatch,), dtype=storage)
            bundle = fused_single_tile_step(config, 1e-3, 0.9, None, 1, precision, None, x, *states, *scales)
            del states
            for _ in range(args.warmup_runs):
                bundle = fused_single_tile_step(config, 1e-3, 0.9, None, 1, precision, bundle, x)
            launched = cuda_graphs.launches
            times = []
            for _ in range(args.runs):
                cupy.cuda.runtime.deviceSynchronize()
                started = time.perf_counter()
                bundle = fused_single_tile_step(config, 1e-3, 0.9, None, 1, precision, bundle, x)
                cupy.cuda.runtime.deviceSynchronize()
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            held = pool.total_bytes() + cuda_graphs.private_pool_bytes()
            row.update(step_seconds=seconds, tflops=update_flops(config, args.minibatch) / seconds / 1e12,
                       peak_bytes=held, bytes_per_parameter=held / parameters,
                       graph_bytes=cuda_graphs.private_pool_bytes(), graph_launches=cuda_graphs.launches - launched,
                       loss=float(sum(bundle["losses"][-1])), fits=True)
            print(f"{config.name}: {parameters / 1e9:.2f}B parameters, step {seconds:.2f} s "
                  f"({row['tflops']:.1f} TFLOP/s), GPU memory {row['bytes_per_parameter']:.2f} B/param "
                  f"(plan {row['planned_bytes_per_parameter']:.2f}; CUDA graphs' pools "
                  f"{row['graph_bytes'] / 2**30:.2f} GiB, {row['graph_launches']} launches timed), "
                  f"loss {row['loss']:.4g}", flush=True)
            del bundle, x
        except Exception as error:  # noqa: BLE001 - out of memory in CuPy's pool or in cuBLAS: try the next size
            row.update(fits=False, error=f"{type(error).__name__}: {str(error)[:200]}")
            print(f"{config.name}: {parameters / 1e9:.2f}B parameters do not fit ({row['error'][:150]})", flush=True)
        states = bundle = x = None  # noqa: F841 - release what a failed size held
        tile_program.forget_all()  # the kept program's CUDA graphs hold its step's temporaries
        rows.append(row)
        pool.free_all_blocks()
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"card": card, "memory_bytes": total, "cupy": cupy.__version__, "rows": rows,
                           "command": "python bench/largest_update.py " + " ".join(argv or __import__("sys").argv[1:])},
                          handle, indent=1)
        if row.get("fits"):
            break  # the largest that fits


if __name__ == "__main__":
    main()
