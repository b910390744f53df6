"""How near the bfloat16 tensor-core update is to its bytes: the fused kernel against the same step with no products.

For each stage of a config (coates200, M=96 by default), in bfloat16, timed
with CUDA events (median of ``--runs``):

* ``fused``: :func:`~dasksae.kernels.mma_update.filter_weight_grad_update_bfloat16`
  in the variant the training takes (the weight gradient on tensor cores, the
  unit-norm SGD step in its epilogue; 18 bytes a parameter: the float32
  weights and momentum read and written, their bfloat16 copy written);
* ``fused, no copy``: the same writing no bfloat16 copy (16 bytes a parameter);
* ``fused, split``: the same on split master weights (:mod:`dasksae.master_weights`: the weights read and written
  as their two 16-bit halves, the high one the products' operand; 16 bytes a parameter);
* ``fused (<variant>)`` for each of ``--variants`` beside it (and for a ``step-only`` variant, the update's blocks
  with no products, also its ``no copy`` row; a ``-tiled`` variant reads and writes the weights and momentum in
  its tile order, ``mma_update.tile_order``, each block's tile contiguous);
* ``products``: its ``gemm-only`` variant (the products alone, no update);
* ``stream, split``: the same on split master weights (16 bytes a parameter);
* ``stream``: the same SGD step with no products (the gradient taken as
  zero, every other term as the kernel has them), a float4 a thread over
  the same arrays: the same 18 bytes a parameter at the rate a plain
  streaming kernel gets from this card (this file's ``_STREAM_SOURCE``);
* ``copy``: a device-to-device copy of the weights (8 bytes a parameter:
  read and written), the copy rate that the issue's limit is taken at.

``TB/s`` counts the bytes a parameter above over the row's time.  The gap
between ``fused`` and ``stream`` is what the products cost the update; the
gap between ``stream`` and the copy rate is what a streaming kernel of these
bytes loses to the copy.  Run under Nsight Compute (``ncu -k
regex:dasksae_``) for the hardware counters of the same launches
(``bench/gpu_session35_check.sh``, ``PART=first``)::

    python bench/update_floor.py --config coates200 --minibatch 96 --runs 10 --json out.json

With ``--precision float32`` the rows are float32's (16 bytes a parameter: the
weights and momentum read and written): ``fused (simt)``, the SIMT weight
gradient with the update in its epilogue (what float32 training takes),
``fused (3xtf32 <variant>)`` the same on split TF32 tensor cores
(:func:`~dasksae.kernels.mma_float32.filter_weight_grad_update_float32`,
``DASKSAE_FLOAT32_TENSOR_CORES=1``) in its ``rows-wide`` and ``rows``
epilogues, ``fused (tf32 rows-wide)`` with one TF32 product a k-step (what
``--dtype tf32`` takes), and ``copy``::

    python bench/update_floor.py --precision float32 --json out32.json
"""

from __future__ import annotations

import argparse
import json

# the unit-norm SGD step of mma_update's epilogue (its sgd_step) with dw = 0, a float4 a thread: raw and velocity
# (count * rows * fan_in float32) read and written, their bfloat16 copy written (round to nearest even)
_STREAM_SOURCE = r"""
__device__ __forceinline__ unsigned short to_bfloat16(const float value)
{
    const unsigned bits = __float_as_uint(value);
    return (unsigned short)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
extern "C" __global__ void dasksae_stream_sgd_step(float* __restrict__ raw, float* __restrict__ velocity,
    unsigned short* __restrict__ operand, const float* __restrict__ inverse_norms, const float* __restrict__ row_dots,
    const float lr, const float momentum, const long long vectors, const int fan_in)
{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= vectors) return;
    const long long row = 4 * c / fan_in;
    const float s = inverse_norms[row], radial = row_dots[row] * s;
    float4 u = ((const float4*)raw)[c], v = ((const float4*)velocity)[c];
    v.x = momentum * v.x - lr * (0.f - u.x * radial) * s; u.x += v.x;
    v.y = momentum * v.y - lr * (0.f - u.y * radial) * s; u.y += v.y;
    v.z = momentum * v.z - lr * (0.f - u.z * radial) * s; u.z += v.z;
    v.w = momentum * v.w - lr * (0.f - u.w * radial) * s; u.w += v.w;
    ((float4*)raw)[c] = u;
    ((float4*)velocity)[c] = v;
    ((uint2*)operand)[c] = make_uint2((unsigned)to_bfloat16(u.x) | ((unsigned)to_bfloat16(u.y) << 16),
                                      (unsigned)to_bfloat16(u.z) | ((unsigned)to_bfloat16(u.w) << 16));
}
"""
# the same step on split master weights (dasksae.master_weights): the high and low halves (8 bytes of each a thread)
# and velocity read and written, 16 bytes a parameter
_SPLIT_STREAM_SOURCE = r"""
extern "C" __global__ void dasksae_stream_split_sgd_step(unsigned short* __restrict__ high,
    unsigned short* __restrict__ low, float* __restrict__ velocity, const float* __restrict__ inverse_norms,
    const float* __restrict__ row_dots, const float lr, const float momentum, const long long vectors, const int fan_in)
{
    const long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= vectors) return;
    const long long row = 4 * c / fan_in;
    const float s = inverse_norms[row], radial = row_dots[row] * s;
    const uint2 h = ((const uint2*)high)[c], l = ((const uint2*)low)[c];
    float u[4] = {__uint_as_float(((h.x & 0xffffu) << 16) + (unsigned)(int)(short)(l.x & 0xffffu)),
                  __uint_as_float((h.x & 0xffff0000u) + (unsigned)(int)(short)(l.x >> 16)),
                  __uint_as_float(((h.y & 0xffffu) << 16) + (unsigned)(int)(short)(l.y & 0xffffu)),
                  __uint_as_float((h.y & 0xffff0000u) + (unsigned)(int)(short)(l.y >> 16))};
    float4 v = ((const float4*)velocity)[c];
    float* w = &v.x;
    unsigned halves[4];
    for (int i = 0; i < 4; ++i) {
        w[i] = momentum * w[i] - lr * (0.f - u[i] * radial) * s;
        u[i] += w[i];
        const unsigned bits = __float_as_uint(u[i]), rounded = (bits + 0x8000u) & 0xffff0000u;
        halves[i] = rounded | ((bits - rounded) & 0xffffu);
    }
    ((float4*)velocity)[c] = v;
    ((uint2*)high)[c] = make_uint2((halves[0] >> 16) | (halves[1] & 0xffff0000u),
                                   (halves[2] >> 16) | (halves[3] & 0xffff0000u));
    ((uint2*)low)[c] = make_uint2((halves[0] & 0xffffu) | (halves[1] << 16), (halves[2] & 0xffffu) | (halves[3] << 16));
}
"""
UPDATE_BYTES = 18  # a parameter: float32 weights and momentum read and written, the bfloat16 copy written
COPY_BYTES = 8  # a parameter of a float32 copy: read and written


def stage_rows(stage, geometry, batch: int, runs: int, variants=(), warmup: int = 2) -> list[dict]:
    """The four rows of one stage (random maps and codes of the stage's shapes, the weights unit rows)."""
    import cupy
    import numpy

    from dasksae import master_weights
    from dasksae.kernels import mma_update
    from dasksae.kernels.gemm import operand
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    blocks, field, step = blocks_h * blocks_w, stage.field, stage.step
    generator = cupy.random.default_rng(0)
    x = operand(generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32), "bfloat16")
    error = operand(generator.standard_normal(x.shape, dtype=cupy.float32), "bfloat16")
    codes = operand(generator.standard_normal((blocks, rows, 2 * batch), dtype=cupy.float32), "bfloat16")
    raw = generator.standard_normal((blocks, rows, fan_in), dtype=cupy.float32)
    raw /= cupy.sqrt((raw * raw).sum(-1, keepdims=True))
    velocity = cupy.zeros_like(raw)
    weights_operand = cupy.empty(raw.shape, dtype=cupy.uint16)
    inverse_norms = cupy.ones((blocks, rows), dtype=cupy.float32)
    row_dots = cupy.full((blocks, rows), 1e-3, dtype=cupy.float32)
    parameters = raw.size
    high, low = master_weights.split(raw)
    variant = mma_update.default_variant(x.shape[2], codes.shape[2])
    if not mma_update.update_fits(codes, x, error, raw, velocity, weights_operand, inverse_norms, row_dots, field,
                                  blocks_w):
        raise SystemExit(f"the tensor-core update does not take this stage's shapes ({raw.shape})")

    in_tiles = {}  # a tiled variant's tile shape -> raw, velocity and low in its tile order (mma_update.tile_order)

    def state(which):
        """raw, velocity and the low halves as ``which`` reads them: in rows, or (``-tiled``) in tile order."""
        if not mma_update.EPILOGUE_VARIANTS[which].get("TILE_ORDER"):
            return raw, velocity, low
        shape = (mma_update.tile_rows(which), mma_update.tile_columns(which))
        if shape not in in_tiles:
            in_tiles[shape] = tuple(mma_update.tile_order(a, which) for a in (raw, velocity, low))
        return in_tiles[shape]

    def fused(which, operand=weights_operand):
        weights, momentum, _ = state(which)
        return lambda: mma_update.filter_weight_grad_update_bfloat16(
            codes, x, error, weights, momentum, operand, inverse_norms, row_dots, 1e-6, 0.9, field, step,
            blocks_w, variant=which)

    def split(which):
        _, momentum, low_halves = state(which)
        return lambda: mma_update.filter_weight_grad_update_bfloat16(
            codes, x, error, low_halves, momentum, high, inverse_norms, row_dots, 1e-6, 0.9, field, step, blocks_w,
            variant=which, split_master=True)

    stream = cupy.RawKernel(_STREAM_SOURCE, "dasksae_stream_sgd_step")
    split_stream = cupy.RawKernel(_SPLIT_STREAM_SOURCE, "dasksae_stream_split_sgd_step")
    vectors = parameters // 4
    threads = 256
    stream_args = (raw, velocity, weights_operand, inverse_norms, row_dots, numpy.float32(1e-6), numpy.float32(0.9),
                   numpy.int64(vectors), numpy.int32(fan_in))
    scratch = cupy.empty_like(raw)
    cases = [(f"fused ({variant})", UPDATE_BYTES, fused(variant))] + [
        (f"fused, no copy ({which})", FLOAT32_UPDATE_BYTES, fused(which, None))  # (and each step alone's: step-only)
        for which in [variant] + [v for v in variants if v.startswith("step-only")]] + [
        (f"fused, split ({which})", FLOAT32_UPDATE_BYTES, split(which))
        for which in [variant] + [v for v in variants if v != variant]
        if which in mma_update.SPLIT_MASTER_VARIANTS] + [
        (f"fused ({other})", UPDATE_BYTES, fused(other)) for other in variants if other != variant] + [
        ("products (gemm-only)", None, fused("gemm-only")),
        ("stream", UPDATE_BYTES, lambda: stream((-(-vectors // threads),), (threads,), stream_args)),
        ("stream, split", FLOAT32_UPDATE_BYTES, lambda: split_stream((-(-vectors // threads),), (threads,), (
            high, low, velocity, inverse_norms, row_dots, numpy.float32(1e-6), numpy.float32(0.9),
            numpy.int64(vectors), numpy.int32(fan_in)))),
        ("copy", COPY_BYTES, lambda: scratch.__setitem__(Ellipsis, raw)),
    ]
    found = []
    for index, (name, bytes_a_parameter, run) in enumerate(cases):
        seconds = timed(run, runs=runs, warmup=warmup)
        found.append({"kernel": name, "training": index == 0, "split_training": name == f"fused, split ({variant})",
                      "no_copy_training": name == f"fused, no copy ({variant})",
                      "parameters": parameters, "seconds": seconds,
                      "bytes_per_parameter": bytes_a_parameter,
                      "tb_per_s": bytes_a_parameter * parameters / seconds / 1e12 if bytes_a_parameter else None,
                      "tflops": 2 * parameters * 2 * batch / seconds / 1e12 if name.startswith(("fused", "products"))
                      else None})
    return found


def stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this file's table and ``product_floor.py``'s: ``--config``, ``--minibatch``, ``--runs``,
    ``--stages``, ``--json``."""
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--stages", default=None, help="the stages to time, counted from 1, comma-separated (all)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--rows", default=None,
                        help="(float32) only the rows of these names, comma-separated: under Nsight Compute with "
                             "--runs 1 --warmup-runs 0, one launch each, in the table's order")


def chosen_rows(args):
    """``--rows`` as a set of row names, or ``None`` (every row)."""
    return None if args.rows is None else {name.strip() for name in args.rows.split(",") if name.strip()}


def each_stage(args, rows_of, name_width: int) -> list[dict]:
    """The rows ``rows_of(stage, geometry)`` of each stage of ``args.config`` that ``--stages`` chose, each printed as
    it comes (stage, kernel, parameters, ms, TB/s, TFLOP/s) and given its ``stage``; the device's memory pool emptied
    after each stage."""
    import cupy

    from gpu_step import coates

    config = coates(args.config)
    chosen = None if args.stages is None else {int(s) for s in args.stages.split(",")}
    found = []
    print(f"{'stage':>5} {'kernel':<{name_width}} {'params':>12} {'ms':>8} {'TB/s':>6} {'TFLOP/s':>8}")
    for index, geometry in enumerate(config.geometry()):
        if chosen is not None and index + 1 not in chosen:
            continue
        for row in rows_of(config.stages[index], geometry):
            row["stage"] = index + 1
            found.append(row)
            rate = "" if row["tb_per_s"] is None else f"{row['tb_per_s']:.2f}"
            flops = "" if row["tflops"] is None else f"{row['tflops']:.0f}"
            print(f"{index + 1:>5} {row['kernel']:<{name_width}} {row['parameters']:>12} {row['seconds'] * 1e3:>8.3f} "
                  f"{rate:>6} {flops:>8}", flush=True)
        cupy.get_default_memory_pool().free_all_blocks()
    return found


def print_sums(sums: dict, name_width: int) -> None:
    """Each named list of rows' parameters and time, summed over its stages (stage ``all``)."""
    for name, rows in sums.items():
        print(f"{'all':>5} {name:<{name_width}} {sum(r['parameters'] for r in rows):>12} "
              f"{sum(r['seconds'] for r in rows) * 1e3:>8.3f}")


def write_json(args, found: list[dict]) -> None:
    """The rows, the config, the minibatch and the device into ``--json`` (if given)."""
    import cupy

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "minibatch": args.minibatch,
                       "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "rows": found}, f, indent=1)


def float32_rows(stage, geometry, batch: int, runs: int, warmup: int = 2, only=None) -> list[dict]:
    """The float32 rows of one stage: the SIMT fused update, the split-TF32 one in two epilogues, the copy (``only``:
    the rows of those names alone, each launched ``warmup`` times before its timed runs)."""
    import cupy
    import numpy

    from dasksae.kernels import mma_update, simt_gemm, wgmma
    from profile_kernels import timed

    blocks_h, blocks_w, rows, fan_in = geometry.weight_shape
    blocks, field, step = blocks_h * blocks_w, stage.field, stage.step
    generator = cupy.random.default_rng(0)
    x = generator.standard_normal(tuple(geometry.input_shape) + (batch,), dtype=cupy.float32)
    error = generator.standard_normal(x.shape, dtype=cupy.float32)
    codes = generator.standard_normal((blocks, rows, 2 * batch), dtype=cupy.float32)
    raw = generator.standard_normal((blocks, rows, fan_in), dtype=cupy.float32)
    raw /= cupy.sqrt((raw * raw).sum(-1, keepdims=True))
    velocity = cupy.zeros_like(raw)
    inverse_norms = cupy.ones((blocks, rows), dtype=cupy.float32)
    row_dots = cupy.full((blocks, rows), 1e-3, dtype=cupy.float32)
    arguments = (codes, x, error, raw, velocity, inverse_norms, row_dots, numpy.float32(1e-6), numpy.float32(0.9),
                 field, step, blocks_w)

    def split(variant, terms=3):
        return lambda: mma_update.filter_weight_grad_update(*arguments[:5], None, *arguments[5:], variant,
                                                            split_tf32=True, terms=terms)

    scratch = cupy.empty_like(raw)
    cases = [("fused (simt)", FLOAT32_UPDATE_BYTES, lambda: simt_gemm.filter_weight_grad_update(*arguments)),
             ("fused (3xtf32 rows-wide)", FLOAT32_UPDATE_BYTES, split("rows-wide")),
             ("fused (3xtf32 rows)", FLOAT32_UPDATE_BYTES, split("rows")),
             ("fused (tf32 rows-wide)", FLOAT32_UPDATE_BYTES, split("rows-wide", terms=1)),  # what --dtype tf32 takes
             ("fused (3xtf32 rows-wide-wgmma)", FLOAT32_UPDATE_BYTES, split("rows-wide-wgmma")),  # (sm_90, below)
             ("fused (tf32 rows-wide-wgmma)", FLOAT32_UPDATE_BYTES, split("rows-wide-wgmma", terms=1)),
             ("copy", COPY_BYTES, lambda: scratch.__setitem__(Ellipsis, raw))]
    if not wgmma.supported():
        cases = [case for case in cases if "wgmma" not in case[0]]
    found = []
    for index, (name, bytes_a_parameter, run) in enumerate(cases):
        if only is not None and name not in only:
            continue
        seconds = timed(run, runs=runs, warmup=warmup)
        found.append({"kernel": name, "training": index == 0, "parameters": raw.size, "seconds": seconds,
                      "bytes_per_parameter": bytes_a_parameter,
                      "tb_per_s": bytes_a_parameter * raw.size / seconds / 1e12,
                      "tflops": 4 * raw.size * batch / seconds / 1e12 if name.startswith("fused") else None})
    return found


FLOAT32_UPDATE_BYTES = 16  # a parameter: float32 weights and momentum read and written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stage_arguments(parser)
    parser.add_argument("--variants", default="",
                        help="more of mma_update.EPILOGUE_VARIANTS to time beside the training's, comma-separated")
    parser.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--warmup-runs", type=int, default=2,
                        help="launches of each row before its timed ones: 0 under Nsight Compute, so that it profiles "
                             "one launch a row")
    args = parser.parse_args(argv)
    if args.precision == "float32":
        found = each_stage(args, lambda stage, geometry: float32_rows(stage, geometry, args.minibatch, args.runs,
                                                                      args.warmup_runs, chosen_rows(args)), 32)
        print_sums({name: [r for r in found if r["kernel"] == name] for name in (
            "fused (simt)", "fused (3xtf32 rows-wide)", "fused (3xtf32 rows)", "fused (tf32 rows-wide)",
            "fused (3xtf32 rows-wide-wgmma)", "fused (tf32 rows-wide-wgmma)", "copy")}, 32)
        write_json(args, found)
        return
    variants = [v for v in args.variants.split(",") if v]
    found = each_stage(args, lambda stage, geometry: stage_rows(stage, geometry, args.minibatch, args.runs, variants,
                                                                args.warmup_runs), 26)
    sums = {"fused (the training's)": [r for r in found if r["training"]],  # each stage's own variant
            "fused, no copy": [r for r in found if r.get("no_copy_training")],
            "fused, split": [r for r in found if r.get("split_training")]}  # each stage's own variant, split
    for variant in variants:
        sums[f"fused ({variant})"] = [r for r in found if r["kernel"] == f"fused ({variant})"]
        if variant.startswith("step-only"):
            sums[f"fused, no copy ({variant})"] = [r for r in found if r["kernel"] == f"fused, no copy ({variant})"]
    from dasksae.kernels import mma_update

    for variant in [v for v in variants if v in mma_update.SPLIT_MASTER_VARIANTS]:
        sums[f"fused, split ({variant})"] = [r for r in found if r["kernel"] == f"fused, split ({variant})"]
    for name in ("products (gemm-only)", "stream", "stream, split", "copy"):
        sums[name] = [r for r in found if r["kernel"] == name]
    print_sums(sums, 26)
    write_json(args, found)


if __name__ == "__main__":
    main()
