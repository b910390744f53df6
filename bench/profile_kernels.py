"""Where the time of a GPU step goes: the kernels of one stage, timed alone on the GPU.

    python bench/profile_kernels.py --config coates200 --minibatch 96 --chunk-mb 32,256,0 --json out.json

For stage 1 of the config (the largest stage), with device events around each
call (median of ``--runs`` after warm-up): the three GEMM layouts in each
precision (cuBLAS strided-batched, :mod:`dasksae.kernels.gemm`; and
``cupy.matmul`` of a transposed view for comparison), the chunked products
as the tile step runs them (forward; transpose; weight gradient of two pairs
with the fused unit-norm SGD update) for each chunk size, and the
memory-bound kernels.  Prints time, TFLOP/s of the GEMMs and GB/s of the
memory-bound ones, and how many times each runs in one joint step.
"""

from __future__ import annotations

import argparse
import json
import statistics



def timed(function, runs=5, warmup=2):
    import cupy

    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def main(argv=None):
    import cupy

    from dasksae.kernels.contrast import lcn_backward, lcn_forward
    from dasksae.kernels.gemm import batched_matmul, operand
    from dasksae.kernels.local_filter import (
        fold_patches,
        gather_patches,
        local_filter_forward,
        local_filter_transpose,
        local_filter_weight_grads,
    )
    from dasksae.kernels.normalize import inverse_row_norms, unit_rows_sgd
    from dasksae.kernels.pooling import window_sum, window_sum_transpose
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precisions", default="float32,tf32,bfloat16")
    parser.add_argument("--chunk-mb", default="256", help="comma-separated chunk sizes (MiB) of the products; 0: one chunk")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = coates(args.config)
    stage, geometry = config.stages[0], config.geometry()[0]
    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    count = blocks_h * blocks_w
    batch = args.minibatch
    f, s, bh, bw = stage.field, stage.step, stage.block[0], stage.block[1]
    random = cupy.random.default_rng(0)
    x = random.standard_normal(geometry.input_shape + (batch,), dtype=cupy.float32)
    raw = random.standard_normal(geometry.weight_shape, dtype=cupy.float32)
    inverse_norms = inverse_row_norms(raw)
    velocity = cupy.zeros_like(raw)
    patches = gather_patches(x, f, s, blocks_h, blocks_w)
    z = local_filter_forward(x, raw, f, s, bh, bw, row_scale=inverse_norms)
    pooled_squares = window_sum(z * z, stage.pool_size, stage.pool_stride)
    pooled = cupy.sqrt(1e-4 + pooled_squares)
    normalised, cache = lcn_forward(pooled, stage.lcn_size, 0.01)
    gemm_flops = 2 * count * rows * fan_in * batch
    weight_bytes = raw.nbytes
    patch_bytes = patches.nbytes
    flat = raw.reshape(count, rows, fan_in)
    block_rows = cupy.ascontiguousarray(random.standard_normal((count, rows, batch), dtype=cupy.float32))
    # (name, function, flops, bytes moved at least, times per joint step of this stage)
    operations = [
        ("inverse_row_norms", lambda: inverse_row_norms(raw), 0, weight_bytes, 1),
        ("gather_patches", lambda: gather_patches(x, f, s, blocks_h, blocks_w), 0, 2 * patch_bytes, 3),
        ("fold_patches", lambda: fold_patches(patches, x.shape, f, s, blocks_h, blocks_w), 0, 2 * patch_bytes, 1),
        ("cupy.matmul W^T Y (view)", lambda: cupy.matmul(flat.transpose(0, 2, 1), block_rows), gemm_flops, 0, 0),
        ("pool window_sum", lambda: window_sum(z * z, stage.pool_size, stage.pool_stride), 0, 2 * z.nbytes, 1),
        ("pool window_sum_transpose", lambda: window_sum_transpose(pooled, z.shape, stage.pool_size, stage.pool_stride), 0, 2 * z.nbytes, 2),
        ("lcn_forward", lambda: lcn_forward(pooled, stage.lcn_size, 0.01), 0, 2 * pooled.nbytes, 1),
        ("lcn_backward", lambda: lcn_backward(normalised, cache), 0, 2 * pooled.nbytes, 1),
        ("unit_rows_sgd (fused)", lambda: unit_rows_sgd(raw, velocity, raw, inverse_norms, 0.0, 0.9), 0, 5 * weight_bytes, 1),
    ]
    for precision in args.precisions.split(","):
        weights = operand(raw, precision)
        rows_op = operand(block_rows, precision)
        patches_op = operand(patches, precision)
        operations += [
            (f"{precision} GEMM NN  W X", lambda w=weights, p=patches_op, q=precision: batched_matmul(w.reshape(count, rows, fan_in), p, precision=q), gemm_flops, 0, 0),
            (f"{precision} GEMM TN  W^T Y", lambda w=weights, r=rows_op, q=precision: batched_matmul(w.reshape(count, rows, fan_in), r, transpose_a=True, precision=q), gemm_flops, 0, 0),
            (f"{precision} GEMM NT  Y X^T", lambda r=rows_op, p=patches_op, q=precision: batched_matmul(r, p, transpose_b=True, precision=q), gemm_flops, 0, 0),
        ]
        if precision != "float32":
            operations.append((f"{precision} operand(U)", lambda q=precision: operand(raw, q), 0, 1.5 * weight_bytes if precision == "bfloat16" else 0, 1))
        for megabytes in (int(v) for v in args.chunk_mb.split(",")):
            chunk = None if megabytes == 0 else megabytes * 2**20
            label = f"{precision} chunk {megabytes or 'all'}MB"
            operations += [
                (f"{label} forward", lambda w=weights, q=precision, c=chunk: local_filter_forward(x, w, f, s, bh, bw, row_scale=inverse_norms, precision=q, chunk_bytes=c), gemm_flops, 0, 2),
                (f"{label} transpose", lambda w=weights, q=precision, c=chunk: local_filter_transpose(z, w, x.shape, f, s, bh, bw, row_scale=inverse_norms, precision=q, chunk_bytes=c), gemm_flops, 0, 1),
                (f"{label} grad+update", lambda q=precision, c=chunk: local_filter_weight_grads(
                    [(z, x, None), (z, x, 0.5)], f, s, bh, bw, precision=q, chunk_bytes=c,
                    consume=lambda p0, p1, g: unit_rows_sgd(raw[p0:p1], velocity[p0:p1], g, inverse_norms[p0:p1], 0.0, 0.9)),
                 2 * gemm_flops, 5 * weight_bytes, 1),
            ]
    rows_out = []
    print(f"{args.config} stage 1: {count} blocks of {rows}x{fan_in}, M={batch}; weights {weight_bytes / 1e9:.2f} GB, "
          f"patches {patch_bytes / 1e9:.2f} GB")
    print(f"{'operation':<36}{'ms':>8}{'TFLOP/s':>9}{'GB/s':>8}{'per step':>9}")
    for name, function, flops, moved, per_step in operations:
        try:
            seconds = timed(function, args.runs)
        except Exception as error:  # noqa: BLE001 - a profile reports and goes on
            print(f"{name:<36} failed: {type(error).__name__}: {str(error)[:150]}")
            continue
        rows_out.append({"operation": name, "seconds": seconds, "tflops": flops / seconds / 1e12 if flops else None,
                         "gb_per_s": moved / seconds / 1e9 if moved else None, "per_step": per_step})
        print(f"{name:<36}{seconds * 1e3:>8.2f}{(flops / seconds / 1e12 if flops else 0):>9.1f}"
              f"{(moved / seconds / 1e9 if moved else 0):>8.0f}{per_step:>9}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": batch, "stage": 1, "rows": rows_out}, handle, indent=1)


if __name__ == "__main__":
    main()
