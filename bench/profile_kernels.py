"""Where the time of the CuPy reference step goes: every kernel of one stage, timed alone on the GPU.

    python bench/profile_kernels.py --config coates200 --minibatch 96 --json out.json

For stage 1 of the config (the largest stage), with device events around each
call (median of ``--runs`` after warm-up), prints each operation's time,
TFLOP/s for the GEMMs and GB/s for the memory-bound ones, then the sum of one
joint step's worth of operations for that stage (how many times each runs in
:func:`dasksae.reference.loss_and_grads` + the update) against the timed step.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy


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
    from dasksae.kernels.local_filter import blocks_to_map, fold_patches, gather_patches, map_to_blocks
    from dasksae.kernels.normalize import unit_rows, unit_rows_backward
    from dasksae.kernels.pooling import window_sum, window_sum_transpose
    from dasksae.optim import sgd_momentum_update
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
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
    weights, norms = unit_rows(raw)
    flat = weights.reshape(count, rows, fan_in)
    patches = gather_patches(x, f, s, blocks_h, blocks_w)
    out_blocks = cupy.matmul(flat, patches)
    z = blocks_to_map(out_blocks, blocks_h, blocks_w, bh, bw)
    velocity = cupy.zeros_like(raw)
    grad = random.standard_normal(raw.shape, dtype=cupy.float32)
    pooled_squares = window_sum(z * z, stage.pool_size, stage.pool_stride)
    pooled = cupy.sqrt(1e-4 + pooled_squares)
    normalised, cache = lcn_forward(pooled, stage.lcn_size, 0.01)
    transposed = cupy.ascontiguousarray(flat.transpose(0, 2, 1))
    gemm_flops = 2 * count * rows * fan_in * batch
    weight_bytes = raw.nbytes
    patch_bytes = patches.nbytes
    # (name, function, flops, bytes moved at least, times per joint step of this stage)
    operations = [
        ("unit_rows (W = U/|U|)", lambda: unit_rows(raw), 0, 2 * weight_bytes, 1),
        ("gather_patches", lambda: gather_patches(x, f, s, blocks_h, blocks_w), 0, 2 * patch_bytes, 3),
        ("GEMM W @ X (NN)", lambda: cupy.matmul(flat, patches), gemm_flops, 0, 2),
        ("blocks_to_map", lambda: blocks_to_map(out_blocks, blocks_h, blocks_w, bh, bw), 0, 2 * out_blocks.nbytes, 2),
        ("map_to_blocks", lambda: map_to_blocks(z, bh, bw), 0, 2 * z.nbytes, 4),
        ("GEMM W^T @ Y (TN view)", lambda: cupy.matmul(flat.transpose(0, 2, 1), out_blocks), gemm_flops, 0, 2),
        ("transpose copy of W", lambda: cupy.ascontiguousarray(flat.transpose(0, 2, 1)), 0, 2 * weight_bytes, 0),
        ("GEMM W^T @ Y (contiguous W^T)", lambda: cupy.matmul(transposed, out_blocks), gemm_flops, 0, 0),
        ("fold_patches", lambda: fold_patches(patches, x.shape, f, s, blocks_h, blocks_w), 0, 2 * patch_bytes, 2),
        ("GEMM Y @ X^T (NT view)", lambda: cupy.matmul(out_blocks, patches.transpose(0, 2, 1)), gemm_flops, 0, 2),
        ("pool window_sum", lambda: window_sum(z * z, stage.pool_size, stage.pool_stride), 0, 2 * z.nbytes, 1),
        ("pool window_sum_transpose", lambda: window_sum_transpose(pooled, z.shape, stage.pool_size, stage.pool_stride), 0, 2 * z.nbytes, 2),
        ("lcn_forward", lambda: lcn_forward(pooled, stage.lcn_size, 0.01), 0, 2 * pooled.nbytes, 1),
        ("lcn_backward", lambda: lcn_backward(normalised, cache), 0, 2 * pooled.nbytes, 1),
        ("unit_rows_backward", lambda: unit_rows_backward(grad, weights, norms), 0, 3 * weight_bytes, 1),
        ("sgd_momentum_update", lambda: sgd_momentum_update(raw, velocity, grad, 1e-9, 0.9), 0, 5 * weight_bytes, 1),
    ]
    rows_out = []
    print(f"{args.config} stage 1: {count} blocks of {rows}x{fan_in}, M={batch}; weights {weight_bytes / 1e9:.2f} GB, "
          f"patches {patch_bytes / 1e9:.2f} GB")
    print(f"{'operation':<32}{'ms':>8}{'TFLOP/s':>9}{'GB/s':>8}{'per step':>9}{'ms/step':>9}")
    total = 0.0
    for name, function, flops, moved, per_step in operations:
        seconds = timed(function, args.runs)
        total += seconds * per_step
        rows_out.append({"operation": name, "seconds": seconds, "tflops": flops / seconds / 1e12 if flops else None,
                         "gb_per_s": moved / seconds / 1e9 if moved else None, "per_step": per_step})
        print(f"{name:<32}{seconds * 1e3:>8.2f}{(flops / seconds / 1e12 if flops else 0):>9.1f}"
              f"{(moved / seconds / 1e9 if moved else 0):>8.0f}{per_step:>9}{seconds * per_step * 1e3:>9.1f}")
    print(f"stage 1, one joint step's worth of the operations above: {total * 1e3:.1f} ms")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "minibatch": batch, "stage": 1, "rows": rows_out, "stage_total_seconds": total}, handle, indent=1)


if __name__ == "__main__":
    main()
