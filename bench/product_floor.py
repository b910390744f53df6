"""How near the tensor-core products ``W x`` and ``W^T y`` are to their bytes (bfloat16), or to float32's (float32).

For each stage of a config (coates200, M=96 by default), in bfloat16
(``--precision``, the default), timed with CUDA events (median of ``--runs``):

* ``forward``: ``W x`` from and to the maps as the forward pass runs it
  (:func:`~dasksae.kernels.local_filter.local_filter_forward` with the rows'
  scales: :mod:`dasksae.kernels.mma_forward` in the variant the training
  takes); the backward's ``U g_r`` is the same kernel on the same weights;
* ``transpose``: ``W^T y`` with the fold, added into a map of the stage's
  input shape, as the reconstruction and the input gradient run it
  (:func:`~dasksae.kernels.local_filter.add_transpose_into`:
  :mod:`dasksae.kernels.mma_transpose`);
* ``forward-<variant>`` (bfloat16): the same ``W x`` straight into the
  output map in a variant of its kernel: ``mma.sync``'s ``k64x3``, and on an
  sm_90 GPU each of ``wgmma``'s (:data:`~dasksae.kernels.mma_forward.WGMMA_VARIANTS`);
* ``transpose-<variant>`` (bfloat16, sm_90, rows in whole 64s): ``W^T y``
  with the fold on ``wgmma`` (:data:`~dasksae.kernels.mma_transpose.WGMMA_VARIANTS`);
* ``read``: a streaming kernel that reads the bfloat16 weights once, 16
  bytes a thread, and writes nothing (this file's ``_READ_SOURCE``): the
  rate at which this card gives a product the one operand it must read
  from memory.

``TB/s`` counts 2 bytes a parameter (the bfloat16 weights; the maps each
product reads and writes are 4-12% more) over the row's time, so the gap
between a product and ``read`` is what the product loses to its bytes. Run
under Nsight Compute (``ncu -k regex:dasksae_``) for the hardware counters
of the same launches (``bench/gpu_session36_check.sh``).

With ``--precision float32`` the rows are float32's: ``forward`` and
``transpose`` what float32 training takes at the switches' settings (since
session 49 on sm_90: ``wgmma``'s split, and the SIMT product and fold at the
first stage's cells of 48; with ``DASKSAE_FLOAT32_TENSOR_CORES=0`` the SIMT
kernels of :mod:`dasksae.kernels.simt_gemm`), ``forward-3xtf32`` and
``transpose-3xtf32`` (the fold in the product) on ``mma.sync``'s split TF32
(:mod:`dasksae.kernels.mma_float32`'s ``k32x3``, by name: before session 50
these rows took the switches' variant, which on sm_90 was ``wgmma``'s since
session 49), ``forward-3xtf32-<variant>`` and ``transpose-3xtf32-<variant>``
each ``wgmma`` variant, the ``-tf32`` rows the same kernels with one TF32
product a k-step (what ``--dtype tf32`` takes), and ``read`` the float32
weights read once;
``TB/s`` counts 4 bytes a parameter::

    python bench/product_floor.py --config coates200 --minibatch 96 --runs 10 --json out.json
    python bench/product_floor.py --precision float32 --json out32.json
"""

from __future__ import annotations

import argparse

# the bfloat16 weights read once, 16 bytes a thread; nothing written unless the bits sum to a value no test data has
_READ_SOURCE = r"""
extern "C" __global__ void dasksae_stream_read(const uint4* __restrict__ weights, const long long vectors,
                                               unsigned* __restrict__ sink)
{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= vectors) return;
    const uint4 value = __ldcs(weights + c);
    if ((value.x ^ value.y ^ value.z ^ value.w) == 0x7fc07fc1u) sink[0] = 1;
}
"""
WEIGHT_BYTES = {"bfloat16": 2, "float32": 4}  # a parameter: the weights, read once by each product


def stage_rows(stage, geometry, batch: int, runs: int, precision: str = "bfloat16", warmup: int = 2,
               only=None) -> list[dict]:
    """The rows of one stage (random maps, weights and codes of the stage's shapes) in ``precision`` (``only``: the
    rows of those names alone, each launched ``warmup`` times before its timed runs)."""
    import cupy
    import numpy

    from dasksae.kernels.gemm import operand
    from dasksae.kernels.local_filter import add_transpose_into, local_filter_forward
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    (block_h, block_w), field, step = stage.block[:2], stage.field, stage.step
    blocks = blocks_h * blocks_w
    generator = cupy.random.default_rng(0)
    x = operand(generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32), precision)
    weights = operand(generator.standard_normal(geometry.weight_shape, dtype=cupy.float32), precision)
    scale = generator.uniform(0.5, 2.0, (blocks_h, blocks_w, rows), dtype=cupy.float32)
    y = operand(generator.standard_normal((blocks, rows, batch), dtype=cupy.float32), precision)
    out = cupy.zeros(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32)
    parameters = weights.size
    read = cupy.RawKernel(_READ_SOURCE, "dasksae_stream_read")
    weight_bytes = WEIGHT_BYTES[precision]
    vectors = parameters * weight_bytes // 16
    sink = cupy.zeros(1, dtype=cupy.uint32)
    threads = 256
    flat = weights.reshape(blocks, rows, fan_in)
    cases = [
        ("forward", lambda: local_filter_forward(x, weights, field, step, block_h, block_w, row_scale=scale,
                                                 precision=precision)),
        ("transpose", lambda: add_transpose_into(out, flat, y, field, step, blocks_h, blocks_w, precision)),
        ("read", lambda: read((-(-vectors // threads),), (threads,), (weights, numpy.int64(vectors), sink))),
    ]
    if precision == "float32":  # the same W x on split TF32 tensor cores, into the same output map
        from dasksae.kernels import mma_float32

        z = cupy.empty((blocks_h * block_h, blocks_w * block_w, rows // (block_h * block_w), batch), cupy.float32)
        assert mma_float32.forward_fits(x, flat, z, scale, field, step, block_h, block_w)
        assert mma_float32.transpose_fits(out, flat, y, field, step, blocks_h, blocks_w)
        # mma.sync's split by name (VARIANT): with no variant the kernels take the switches' (on sm_90 wgmma's, since
        # session 49), and these rows would time that again under mma.sync's name
        mma_sync = mma_float32.VARIANT
        cases[1:1] = [("forward-3xtf32", lambda: mma_float32.filter_forward_float32(x, flat, z, field, step, block_h,
                                                                                    block_w, scale, variant=mma_sync))]
        cases[3:3] = [("transpose-3xtf32", lambda: mma_float32.add_transpose_float32(
            out, flat, y, field, step, blocks_h, blocks_w, variant=mma_sync))]
        # the same kernels with one TF32 product a k-step: what --dtype tf32 takes (DASKSAE_TF32_TENSOR_CORES=1)
        cases[2:2] = [("forward-tf32", lambda: mma_float32.filter_forward_float32(
            x, flat, z, field, step, block_h, block_w, scale, terms=1, variant=mma_sync))]
        cases[5:5] = [("transpose-tf32", lambda: mma_float32.add_transpose_float32(
            out, flat, y, field, step, blocks_h, blocks_w, terms=1, variant=mma_sync))]
        from dasksae.kernels import wgmma

        if wgmma.supported():  # the split on wgmma (DASKSAE_FLOAT32_WGMMA_FORWARD's variants), three terms and one
            from dasksae.kernels import mma_forward

            cases[2:2] = [(f"forward-{name}-{variant}", lambda t=terms, v=variant: mma_float32.filter_forward_float32(
                x, flat, z, field, step, block_h, block_w, scale, variant=v, terms=t))
                for variant in mma_forward.SPLIT_WGMMA_VARIANTS for name, terms in (("3xtf32", 3), ("tf32", 1))]
            from dasksae.kernels import mma_transpose

            cases[-1:-1] = [(f"transpose-{name}-{variant}", lambda t=terms, v=variant:
                             mma_float32.add_transpose_float32(out, flat, y, field, step, blocks_h, blocks_w,
                                                               variant=v, terms=t))
                for variant in mma_transpose.SPLIT_WGMMA_VARIANTS for name, terms in (("3xtf32", 3), ("tf32", 1))]
    if precision == "bfloat16":  # the same W x straight into the output map in each kernel: mma.sync's, and wgmma's
        from dasksae.kernels import mma_forward, wgmma

        z = cupy.empty((blocks_h * block_h, blocks_w * block_w, rows // (block_h * block_w), batch), cupy.float32)
        if mma_forward.forward_fits(x, flat, z, scale, field, step, block_h, block_w):
            variants = [mma_forward.VARIANT] + (list(mma_forward.WGMMA_VARIANTS) if wgmma.supported() else [])
            cases[1:1] = [(f"forward-{variant}", lambda v=variant: mma_forward.filter_forward_bfloat16(
                x, flat, z, field, step, block_h, block_w, scale, variant=v)) for variant in variants]
        from dasksae.kernels import mma_transpose

        if (wgmma.supported() and rows % 64 == 0
                and mma_transpose.transpose_fits(out, flat, y, field, step, blocks_h, blocks_w)):
            cases[-1:-1] = [(f"transpose-{variant}", lambda v=variant: mma_transpose.add_transpose_bfloat16(
                out, flat, y, field, step, blocks_h, blocks_w, variant=v)) for variant in mma_transpose.WGMMA_VARIANTS]
    found = []
    for name, run in cases:
        if only is not None and name not in only:
            continue
        seconds = timed(run, runs=runs, warmup=warmup)
        found.append({"kernel": name, "parameters": parameters, "seconds": seconds,
                      "tb_per_s": weight_bytes * parameters / seconds / 1e12, "precision": precision,
                      "tflops": 2 * parameters * batch / seconds / 1e12 if name != "read" else None})
    return found


def float32_row_names() -> tuple[str, ...]:
    """The float32 rows' kernels in the summary's order: SIMT, ``mma.sync``'s split, then each ``wgmma`` variant, for
    three terms then one, ``W x`` then ``W^T y`` with the fold, then the weights' read."""
    from dasksae.kernels import mma_forward, mma_transpose

    names = []
    for product, variants in (("forward", mma_forward.SPLIT_WGMMA_VARIANTS),
                              ("transpose", mma_transpose.SPLIT_WGMMA_VARIANTS)):
        names.append(product)
        for terms in ("3xtf32", "tf32"):
            names += [f"{product}-{terms}"] + [f"{product}-{terms}-{variant}" for variant in variants]
    return tuple(names) + ("read",)


def main(argv=None):
    from update_floor import chosen_rows, each_stage, print_sums, stage_arguments, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stage_arguments(parser)
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--warmup-runs", type=int, default=2,
                        help="launches of each row before its timed ones: 0 under Nsight Compute (with --rows)")
    args = parser.parse_args(argv)
    found = each_stage(args, lambda stage, geometry: stage_rows(stage, geometry, args.minibatch, args.runs,
                                                                args.precision, args.warmup_runs,
                                                                chosen_rows(args)), 22)
    names = float32_row_names() if args.precision == "float32" \
        else ("forward", "forward-k64x3", "forward-w64x3-swizzled", "forward-w64x4-swizzled", "transpose",
              "transpose-w64x3-swizzled", "read")
    print_sums({name: [r for r in found if r["kernel"] == name] for name in names}, 22)
    write_json(args, found)


if __name__ == "__main__":
    main()
