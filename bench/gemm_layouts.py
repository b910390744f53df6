"""Time each filter-block product of a step in its current layout and with its result transposed (GPU).

    python bench/gemm_layouts.py --config coates200 --minibatch 96 --precisions float32,bfloat16 --json out.json

The three products of a filter layer are strided-batched GEMMs with one
side of ``M = 96`` (the minibatch). cuBLAS tiles that side by 64 or 128, so
some of their multiply-adds fall on padding. The same product with its
result transposed puts ``M`` on the other side of the GEMM, where cuBLAS
may choose other tiles. For each stage this prints both layouts of:

* ``W x``: ``(rows, fan_in) @ (fan_in, M)`` against ``(M, fan_in) @ (fan_in, rows)``;
* ``W^T y``: ``(fan_in, rows) @ (rows, M)`` against ``(M, rows) @ (rows, fan_in)``;
* the weight gradient: ``(rows, 2M) @ (2M, fan_in)`` against ``(fan_in, 2M) @ (2M, rows)``.

``--simt`` adds, for the float32 products our own kernel takes
(:mod:`dasksae.kernels.simt_gemm`: ``W x`` and ``W^T y``), their time with
``DASKSAE_GEMM=simt`` (rows ``simt``) and the largest difference from
cuBLAS's result on random operands, relative to the largest value.

``--implicit`` adds, in float32, the products as the implicit kernels run
them (``DASKSAE_IMPLICIT_FIELDS`` and ``DASKSAE_IMPLICIT_BACKWARD``, session
18), their fields read straight from a map of the stage's input shape (rows
``implicit``): ``W x`` from and to the maps (``filter_forward``), ``U g_r``
into block rows (``fields_product``, named ``W x`` with layout ``implicit
rows``), and the weight gradient from the input and error maps
(``filter_weight_grad``). Their time includes what the gathers and the
block-rows pass cost before; the rows beside them do not.

``--mma-forward`` adds, in bfloat16, ``W x`` from and to the maps as the
forward pass runs it, on tensor cores (:mod:`dasksae.kernels.mma_forward`,
session 23: rows ``mma <variant>``) and gathered (fields gathered, cuBLAS, the
block-rows pass: row ``gathered``).

``--mma-transpose`` adds, in bfloat16, ``W^T y`` folded into a map as the
reconstruction runs it, on tensor cores with the fold in the product
(:mod:`dasksae.kernels.mma_transpose`, session 23: row ``mma fold``) and as
cuBLAS's product into patches, then the fold (row ``then fold``).

``--mma`` adds, in bfloat16, the tensor-core weight gradient with the update
in its epilogue (:mod:`dasksae.kernels.mma_update`, session 21: rows
``mma <variant>``, one a variant of its epilogue, and ``mma gemm-only``, the
products without the update; FLOPs those of the gradient alone) from random maps of the
stage's input shape, and the update that the cuBLAS path runs after its
gradient (:func:`~dasksae.kernels.normalize.unit_rows_sgd` with the new
norms and the bfloat16 copy, row ``update``): the mma row against that row
plus the ``grad current`` row (cuBLAS's gradient, without the gathers its
fields need) is the fused kernel's gain.

Each is one :func:`dasksae.kernels.gemm.batched_matmul` call on all the
stage's blocks at once, timed with CUDA events (median of ``--runs``, ``profile_kernels.timed``). Only
speed is measured. A faster transposed layout would mean changing the
kernels around the product (gather, fold, block rows) to read and write
it.
"""

from __future__ import annotations

import argparse
import json
import os


def products(blocks, rows, fan_in, batch):
    """``(name, layout, a shape, b shape, transpose_a, transpose_b)`` of each product in both layouts; ``a``
    and ``b`` are stored as the step stores them."""
    width = 2 * batch
    return [
        ("W x", "current", (blocks, rows, fan_in), (blocks, fan_in, batch), False, False),
        ("W x", "transposed", (blocks, fan_in, batch), (blocks, rows, fan_in), True, True),
        ("W^T y", "current", (blocks, rows, fan_in), (blocks, rows, batch), True, False),
        ("W^T y", "transposed", (blocks, rows, batch), (blocks, rows, fan_in), True, False),
        ("grad", "current", (blocks, rows, width), (blocks, fan_in, width), False, True),
        ("grad", "transposed", (blocks, fan_in, width), (blocks, rows, width), False, True),
    ]


def implicit_rows(stage, geometry, batch, runs):
    """The float32 implicit kernels' rows for one stage (``--implicit``): random maps of the stage's input shape."""
    import cupy

    from dasksae.kernels import simt_gemm
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    blocks, (block_h, block_w), field, step = blocks_h * blocks_w, stage.block[:2], stage.field, stage.step
    generator = cupy.random.default_rng(0)
    x = generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32)
    error = generator.standard_normal(x.shape, dtype=cupy.float32)
    weights = generator.standard_normal((blocks, rows, fan_in), dtype=cupy.float32)
    out_map = cupy.empty(tuple(geometry.filter_shape) + (batch,), dtype=cupy.float32)
    out_rows = cupy.empty((blocks, rows, batch), dtype=cupy.float32)
    codes = generator.standard_normal((blocks, rows, 2 * batch), dtype=cupy.float32)
    grad = cupy.empty((blocks, rows, fan_in), dtype=cupy.float32)
    cases = [
        ("W x", "implicit", simt_gemm.fields_fit(x, weights, out_map, None, field, step, block_h, block_w), batch,
         lambda: simt_gemm.filter_forward(x, weights, out_map, field, step, block_h, block_w)),
        ("W x", "implicit rows", simt_gemm.fields_fit(error, weights, simt_gemm.as_block_map(out_rows, blocks_w), None, field, step, 1, 1), batch,
         lambda: simt_gemm.fields_product(error, weights, out_rows, field, step, blocks_w)),
        ("weight grad", "implicit", simt_gemm.weight_grad_fits(codes, x, error, grad, field, blocks_w), 2 * batch,
         lambda: simt_gemm.filter_weight_grad(codes, x, error, grad, field, step, blocks_w)),
    ]
    found = []
    for name, layout, fits, columns, run in cases:
        if not fits:
            print(f"{name:>8} {layout}: the kernel does not take this stage's shapes")
            continue
        seconds = timed(run, runs=runs)
        flops = 2 * blocks * rows * fan_in * columns
        found.append({"product": name, "layout": layout, "precision": "float32", "blocks": blocks, "inner": None,
                      "seconds": seconds, "tflops": flops / seconds / 1e12, "max_difference_from_cublas": None})
    return found


def mma_rows(stage, geometry, batch, runs):
    """The bfloat16 tensor-core update's rows for one stage (``--mma``), and the cuBLAS path's update to set beside."""
    import cupy

    from dasksae.kernels import mma_update
    from dasksae.kernels.gemm import operand
    from dasksae.kernels.normalize import unit_rows_sgd
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    blocks, field, step = blocks_h * blocks_w, stage.field, stage.step
    generator = cupy.random.default_rng(0)
    x = operand(generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32), "bfloat16")
    error = operand(generator.standard_normal(x.shape, dtype=cupy.float32), "bfloat16")
    codes = operand(generator.standard_normal((blocks, rows, 2 * batch), dtype=cupy.float32), "bfloat16")
    raw = generator.standard_normal((blocks, rows, fan_in), dtype=cupy.float32)
    velocity = cupy.zeros_like(raw)
    weights_operand = cupy.empty(raw.shape, dtype=cupy.uint16)
    inverse_norms = 1 / cupy.sqrt((raw * raw).sum(-1))
    row_dots = cupy.zeros((blocks, rows), dtype=cupy.float32)
    gradient = generator.standard_normal(raw.shape, dtype=cupy.float32) * 1e-3
    found = []
    if mma_update.update_fits(codes, x, error, raw, velocity, weights_operand, inverse_norms, row_dots, field, blocks_w):
        for variant in mma_update.EPILOGUE_VARIANTS:  # the epilogue's variants, and the products alone (gemm-only)
            seconds = timed(lambda: mma_update.filter_weight_grad_update_bfloat16(
                codes, x, error, raw, velocity, weights_operand, inverse_norms, row_dots, 1e-6, 0.9, field, step,
                blocks_w, variant=variant), runs=runs)
            found.append({"product": "grad", "layout": f"mma {variant}", "precision": "bfloat16", "blocks": blocks,
                          "inner": 2 * batch, "seconds": seconds,
                          "tflops": 2 * blocks * rows * fan_in * 2 * batch / seconds / 1e12,
                          "max_difference_from_cublas": None})
    else:
        print("    grad mma update: the kernel does not take this stage's shapes")
    seconds = timed(lambda: unit_rows_sgd(raw, velocity, gradient, inverse_norms, 1e-6, 0.9, refresh_norms=True,
                                          raw_operand=weights_operand, precision="bfloat16", row_dots=row_dots), runs=runs)
    found.append({"product": "update", "layout": "after grad", "precision": "bfloat16", "blocks": blocks, "inner": None,
                  "seconds": seconds, "tflops": 0.0, "max_difference_from_cublas": None})
    return found


def mma_forward_rows(stage, geometry, batch, runs):
    """``W x`` in bfloat16 for one stage (``--mma-forward``) as the forward pass runs it, from and to the maps
    (:func:`~dasksae.kernels.local_filter.local_filter_forward` with the rows' scales): ``mma <variant>`` on tensor
    cores (:mod:`dasksae.kernels.mma_forward`, each variant of its tiles), ``gathered`` with ``DASKSAE_TENSOR_CORE_FORWARD=0`` (the fields gathered,
    cuBLAS's product, the block-rows pass into the map), and the largest difference between the two."""
    import cupy

    from dasksae.kernels import mma_forward
    from dasksae.kernels.gemm import operand
    from dasksae.kernels.local_filter import local_filter_forward
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    (block_h, block_w), field, step = stage.block[:2], stage.field, stage.step
    generator = cupy.random.default_rng(0)
    x = operand(generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32), "bfloat16")
    weights = operand(generator.standard_normal(geometry.weight_shape, dtype=cupy.float32), "bfloat16")
    scale = generator.uniform(0.5, 2.0, (blocks_h, blocks_w, rows), dtype=cupy.float32)
    default_variant = mma_forward.VARIANT
    found, outputs = [], {}
    variants = [("0", "gathered", None)] + [("1", f"mma {variant}", variant) for variant in mma_forward.VARIANTS]
    try:
        for on, layout, variant in variants:
            mma_forward.TENSOR_CORE_FORWARD = on
            mma_forward.VARIANT = variant or mma_forward.VARIANT
            run = lambda: local_filter_forward(x, weights, field, step, block_h, block_w, row_scale=scale,  # noqa: E731
                                               precision="bfloat16")
            outputs[layout] = run()
            seconds = timed(run, runs=runs)
            found.append({"product": "W x", "layout": layout, "precision": "bfloat16", "blocks": blocks_h * blocks_w,
                          "inner": fan_in, "seconds": seconds,
                          "tflops": 2 * blocks_h * blocks_w * rows * fan_in * batch / seconds / 1e12,
                          "max_difference_from_cublas": None})
    finally:
        mma_forward.TENSOR_CORE_FORWARD = mma_forward.switch("DASKSAE_TENSOR_CORE_FORWARD")
        mma_forward.VARIANT = default_variant
    for row in found[1:]:
        difference = float(cupy.abs(outputs[row["layout"]] - outputs["gathered"]).max()
                           / cupy.abs(outputs["gathered"]).max())
        row["max_difference_from_cublas"] = difference
        print(f"    W x {row['layout']}: largest difference from the gathered path {difference:.1e} of its largest value")
    return found


def mma_transpose_rows(stage, geometry, batch, runs):
    """``W^T y`` with the fold in bfloat16 for one stage (``--mma-transpose``) as the reconstruction runs it
    (:func:`~dasksae.kernels.local_filter.add_transpose_into` into a zeroed map of the stage's input shape):
    ``mma fold`` on tensor cores with the fold in the product (:mod:`dasksae.kernels.mma_transpose`; ``mma fold
    k64x3``: in that variant's tiles, where the rows take it), ``then fold`` with ``DASKSAE_TENSOR_CORE_TRANSPOSE=0``
    (cuBLAS's product into patches, then the fold), and the largest difference of each from the last."""
    import cupy

    from dasksae.kernels import mma_transpose
    from dasksae.kernels.gemm import operand
    from dasksae.kernels.local_filter import add_transpose_into
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    field, step, blocks = stage.field, stage.step, blocks_h * blocks_w
    generator = cupy.random.default_rng(0)
    weights = operand(generator.standard_normal((blocks, rows, fan_in), dtype=cupy.float32), "bfloat16")
    y = operand(generator.standard_normal((blocks, rows, batch), dtype=cupy.float32), "bfloat16")
    out = cupy.zeros(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32)
    if not mma_transpose.transpose_fits(out, weights, y, field, step, blocks_h, blocks_w):
        print("   W^T y mma fold: the kernel does not take this stage's shapes")
        return []
    found, outputs = [], {}
    layouts = [("0", "k32x4", "then fold"), ("1", "k32x4", "mma fold")]
    if mma_transpose.variant_for(rows, "k64x3") == "k64x3":
        layouts.append(("1", "k64x3", "mma fold k64x3"))
    try:
        for on, variant, layout in layouts:
            mma_transpose.TENSOR_CORE_TRANSPOSE, mma_transpose.TILES = on, variant
            out[...] = 0
            add_transpose_into(out, weights, y, field, step, blocks_h, blocks_w, "bfloat16")
            outputs[layout] = out.copy()
            seconds = timed(lambda: add_transpose_into(out, weights, y, field, step, blocks_h, blocks_w, "bfloat16"),
                            runs=runs)
            found.append({"product": "W^T y", "layout": layout, "precision": "bfloat16", "blocks": blocks,
                          "inner": rows, "seconds": seconds,
                          "tflops": 2 * blocks * rows * fan_in * batch / seconds / 1e12,
                          "max_difference_from_cublas": None})
    finally:
        mma_transpose.TENSOR_CORE_TRANSPOSE = mma_transpose.switch("DASKSAE_TENSOR_CORE_TRANSPOSE")
        mma_transpose.TILES = mma_transpose.switch("DASKSAE_TENSOR_CORE_TRANSPOSE_TILES")
    for row in found[1:]:
        difference = float(cupy.abs(outputs[row["layout"]] - outputs["then fold"]).max()
                           / cupy.abs(outputs["then fold"]).max())
        row["max_difference_from_cublas"] = difference
        print(f"    W^T y {row['layout']}: largest difference from the product then the fold {difference:.1e} of its "
              "largest value")
    return found


def main(argv=None):
    import cupy

    from dasksae.kernels import simt_gemm
    from dasksae.kernels.gemm import batched_matmul, storage_dtype
    from gpu_step import coates
    from profile_kernels import timed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--simt", action="store_true",
                        help="also time DASKSAE_GEMM=simt (dasksae.kernels.simt_gemm) on the float32 products it takes, "
                             "with its largest difference from cuBLAS's result")
    parser.add_argument("--implicit", action="store_true",
                        help="also time, in float32, the implicit kernels that read their fields from the maps")
    parser.add_argument("--mma", action="store_true",
                        help="also time, in bfloat16, the tensor-core weight gradient with the update in its epilogue "
                             "and the cuBLAS path's update")
    parser.add_argument("--mma-forward", action="store_true",
                        help="bfloat16 W x from the maps on tensor cores against the gathered path (kernels/mma_forward.py)")
    parser.add_argument("--mma-transpose", action="store_true",
                        help="bfloat16 W^T y with the fold on tensor cores against the product, then the fold "
                             "(kernels/mma_transpose.py)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = coates(args.config)
    rows_out = []
    print(f"{'stage':>5} {'product':>8} {'layout':>10} {'precision':>9} {'blocks':>6} {'ms':>8} {'TFLOP/s':>8}")
    for precision in args.precisions.split(","):
        for stage, geometry in enumerate(config.geometry()):
            blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
            blocks = blocks_h * blocks_w
            cases = products(blocks, rows, fan_in, args.minibatch)
            if args.simt and precision == "float32":
                cases += [(name, "simt", *rest) for name, layout, *rest in cases if layout == "current" and not rest[3]]
            for name, layout, a_shape, b_shape, transpose_a, transpose_b in cases:
                dtype = storage_dtype(precision)
                simt = layout.startswith("simt")
                if simt:  # random values: the difference from cuBLAS is checked below
                    generator = cupy.random.default_rng(0)
                    a = generator.standard_normal(a_shape, dtype=cupy.float32)
                    b = generator.standard_normal(b_shape, dtype=cupy.float32)
                else:
                    a = cupy.ones(a_shape, dtype=dtype)
                    b = cupy.ones(b_shape, dtype=dtype)
                os.environ["DASKSAE_GEMM"] = "simt" if simt else "cublas"
                difference = None
                if simt:
                    m, k = (a_shape[2], a_shape[1]) if transpose_a else (a_shape[1], a_shape[2])
                    if not simt_gemm.fits(a, b, cupy.empty((blocks, m, b_shape[2]), cupy.float32), transpose_a, False, m, b_shape[2], k):
                        print(f"{stage + 1:>5} {name:>8} {layout:>10} does not take this shape")
                        continue
                    mine = batched_matmul(a, b, transpose_a=transpose_a, precision=precision)
                    os.environ["DASKSAE_GEMM"] = "cublas"
                    theirs = batched_matmul(a, b, transpose_a=transpose_a, precision=precision)
                    difference = float(cupy.abs(mine - theirs).max() / cupy.abs(theirs).max())
                    mine = theirs = None
                    os.environ["DASKSAE_GEMM"] = "simt"
                out = batched_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision)
                seconds = timed(lambda a=a, b=b, out=out, ta=transpose_a, tb=transpose_b, p=precision: batched_matmul(
                    a, b, transpose_a=ta, transpose_b=tb, precision=p, out=out), runs=args.runs)
                inner = a_shape[1] if transpose_a else a_shape[2]
                flops = 2 * blocks * out.shape[1] * out.shape[2] * inner
                row = {"stage": stage + 1, "product": name, "layout": layout, "precision": precision, "blocks": blocks,
                       "out_shape": list(out.shape[1:]), "inner": inner, "seconds": seconds, "tflops": flops / seconds / 1e12,
                       "max_difference_from_cublas": difference}
                rows_out.append(row)
                print(f"{stage + 1:>5} {name:>8} {layout:>10} {precision:>9} {blocks:>6} {seconds * 1e3:>8.3f} "
                      f"{row['tflops']:>8.1f}" + ("" if difference is None else f"  max difference {difference:.1e}"), flush=True)
                os.environ["DASKSAE_GEMM"] = "cublas"
                a = b = out = None
                cupy.get_default_memory_pool().free_all_blocks()
            extra = ((implicit_rows if args.implicit and precision == "float32" else None),
                     (mma_rows if args.mma and precision == "bfloat16" else None),
                     (mma_forward_rows if args.mma_forward and precision == "bfloat16" else None),
                     (mma_transpose_rows if args.mma_transpose and precision == "bfloat16" else None))
            for rows_of in [f for f in extra if f is not None]:
                for row in rows_of(config.stages[stage], geometry, args.minibatch, args.runs):
                    row["stage"] = stage + 1
                    rows_out.append(row)
                    print(f"{stage + 1:>5} {row['product']:>8} {row['layout']:>10} {precision:>9} {blocks:>6} "
                          f"{row['seconds'] * 1e3:>8.3f} {row['tflops']:>8.1f}", flush=True)
                cupy.get_default_memory_pool().free_all_blocks()
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"config": args.config, "minibatch": args.minibatch, "card": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
                       "rows": rows_out}, file, indent=1)


if __name__ == "__main__":
    main()
