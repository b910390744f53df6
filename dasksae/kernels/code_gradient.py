"""The gradient at a tied stage's codes, laid out as the weight-gradient GEMM reads it.

In :func:`dasksae.tile_ops.filter_backward`, for one chunk of filter blocks
in block-row layout ``(count, R, M)``, with ``s = 1/||U||`` per row and the
decoder's product ``c = U g_r`` (``g_r = 2/M e``, ``W = s U``)::

    t = s c                      the gradient reaching the code ``a z`` from the reconstruction
    g = grad_rows + a t          dL/dz: through pooling and sparsity, plus through the decoder
    codes[:, :, :M] = g          [g_z | a z]: the left operand of the one
    codes[:, :, M:] = a z        weight-gradient GEMM over 2M inner terms
    scaled = s g                 (optional) the operand of the input gradient W^T g
    part = sum(z t)              this chunk's part of dL/da (float64)

Written out with arrays that is about nine passes over ``(count, R, M)``
values and as many kernel launches a chunk; on CuPy (float32 values, any of
the float32-family precisions) it is one kernel that reads ``c``, ``z`` and
``grad_rows`` once, writes the operands in their storage (bfloat16 bits for
``bfloat16``), and leaves one float64 partial sum per CUDA block, which one
small reduction adds up.  No Dask in here.

With ``row_dots`` (``DASKSAE_FUSED_ROW_DOTS=1``, the default since session 55) it also writes
each row's ``W_r . dL/dW_r`` (:func:`~dasksae.kernels.normalize.radial_dots`
of the codes it wrote: ``sum_m z (codes + a s c)``), which the weight
update takes, from the values it holds, instead of a kernel of its own that
reads ``z``, the codes and ``c`` again (``dasksae_radial_dots_bfloat16``,
0.26 ms of the bfloat16 coates200 step on an H100, session 54).  The sums
go in another order (each thread's values, then the row's threads in turn;
one warp a row there), so the dots agree to float32 rounding, not bit for
bit.
"""

from __future__ import annotations

import functools
import math

import numpy

from ..switches import switch
from .backend import array_module
from .gemm import operand, storage_dtype

# "1" (the default since session 55; "0": radial_dots' own kernel): the update's row dots come out of the code
# gradient's kernel (row_dots below) instead of radial_dots' own kernel
FUSED_ROW_DOTS = switch("DASKSAE_FUSED_ROW_DOTS") == "1"
# "1" (the default since session 55; "0": the two block_rows passes): the kernel reads z and the pooling's gradient
# straight from their maps (z_rows and grad_rows given as local_filter.MapBlocks) instead of the block rows that two
# block_rows passes make first; the filter backward asks for it where nothing else reads those rows (a tied stage
# whose row dots come from this kernel too, or are not wanted)
CODES_FROM_MAPS = switch("DASKSAE_CODES_FROM_MAPS") == "1"


def tied_code_gradient(product, row_scale, z_rows, grad_rows, a: float, codes, precision: str, scaled: bool = False,
                       row_dots=None):
    """Fill ``codes (count, R, 2M)`` as the module text says; return ``(part, scaled operand or None)``.

    ``product``: ``U g_r`` per block (``(count, R, M)``, not yet scaled by
    ``s``); ``row_scale``: ``s`` as ``(count, R, 1)``; ``grad_rows``: the
    gradient reaching ``z`` from pooling (``None``: zero).  ``part`` is a
    float64 scalar (on the device for CuPy: no wait).  ``row_dots``: a
    ``(count, R)`` array that gets each row's ``W_r . dL/dW_r`` (what
    :func:`~dasksae.kernels.normalize.radial_dots` gives for these codes).
    ``z_rows`` and ``grad_rows`` may be :class:`~dasksae.kernels.local_filter.MapBlocks` (both, or ``grad_rows``
    ``None``): the kernel reads them from their maps; anything else makes their rows first.
    """
    xp = array_module(product)
    if xp is not numpy:
        done = _tied_code_gradient_cuda(product, row_scale, z_rows, grad_rows, a, codes, precision, scaled, row_dots)
        if done is not None:
            return done
    from .local_filter import MapBlocks

    z_rows, grad_rows = (v.rows() if isinstance(v, MapBlocks) else v for v in (z_rows, grad_rows))
    decoded, batch = product, z_rows.shape[-1]
    product = product * row_scale
    part = (z_rows * product).sum(dtype=xp.float64)
    product *= a
    grad = product if grad_rows is None else grad_rows + product
    operand(z_rows, precision, a, out=codes[:, :, batch:])
    operand(grad, precision, out=codes[:, :, :batch])
    if row_dots is not None:
        from .normalize import radial_dots

        row_dots[...] = radial_dots(codes, z_rows, decoded, row_scale, a)
    return part, (operand(grad, precision, row_scale) if scaled else None)


_SOURCE = r"""
template <int N> struct alignas(4 * N) Floats { float v[N]; };
template <int N> struct alignas(2 * N) Halves { unsigned short v[N]; };

__device__ __forceinline__ void store(float& out, float value) { out = value; }
__device__ __forceinline__ void store(unsigned short& out, float value) { out = round_to_bfloat16(value); }
__device__ __forceinline__ float stored(const float value) { return value; }
__device__ __forceinline__ float stored(const unsigned short bits) { return __uint_as_float((unsigned)bits << 16); }

// One thread per LANES values of a row (VECTORS threads a row of M values); rows are (block, R) in order.  DOTS:
// blocks of DOT_THREADS threads, whole rows each, and row_dots[row] = sum_m z (code + a s c) from the codes as stored
extern "C" __global__ void dasksae_tied_code_gradient(
    const float* __restrict__ product, const float* __restrict__ row_scale, const float* __restrict__ z_rows,
    const float* __restrict__ grad_rows, STORAGE* __restrict__ codes, STORAGE* __restrict__ scaled,
    double* __restrict__ partials, const float* __restrict__ a_pointer, const float a_value, const int a_on_device,
    const unsigned int total, float* __restrict__ row_dots)
{
    const float a = a_on_device ? *a_pointer : a_value;  // a device scalar under CUDA graphs (read each launch)
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int row = i / VECTORS;
    const unsigned int v = i - row * VECTORS;
    double part = 0;
    float dot = 0.f;
    if (i < total) {
        const float s = row_scale[row];
        const float as = a * s;
#if FROM_MAPS  // z and g from their maps (H, MAP_BLOCKS_W * BLOCK_W, MAP_K, M): block row (i, j, k) of block (bi, bj)
        const unsigned int block = row / (BLOCK_H * BLOCK_W * MAP_K), r = row - block * (BLOCK_H * BLOCK_W * MAP_K);
        const unsigned int bi = block / MAP_BLOCKS_W, bj = block - bi * MAP_BLOCKS_W;
        const unsigned int ii = r / (BLOCK_W * MAP_K), jk = r - ii * (BLOCK_W * MAP_K);
        const unsigned int jj = jk / MAP_K, k = jk - jj * MAP_K;
        const unsigned long long at = (((unsigned long long)(bi * BLOCK_H + ii) * (MAP_BLOCKS_W * BLOCK_W)
                                        + bj * BLOCK_W + jj) * MAP_K + k) * VECTORS + v;
#else
        const unsigned long long at = i;
#endif
        const Floats<LANES> c = ((const Floats<LANES>*)product)[i];
        const Floats<LANES> z = ((const Floats<LANES>*)z_rows)[at];
        Floats<LANES> g;
        if (HAS_GRAD) g = ((const Floats<LANES>*)grad_rows)[at];
        PACK left, right, input;
        for (int j = 0; j < LANES; ++j) {
            const float t = __fmul_rn(c.v[j], s);
            part += (double)__fmul_rn(z.v[j], t);
            const float grad = HAS_GRAD ? __fadd_rn(g.v[j], __fmul_rn(t, a)) : __fmul_rn(t, a);
            store(left.v[j], grad);
            store(right.v[j], __fmul_rn(z.v[j], a));
            if (SCALED) store(input.v[j], __fmul_rn(grad, s));
            if (DOTS) dot += z.v[j] * (stored(left.v[j]) + as * c.v[j]);  // radial_dots' term
        }
        PACK* out = (PACK*)codes + (unsigned long long)row * (2 * VECTORS) + v;
        out[0] = left;
        out[VECTORS] = right;
        if (SCALED) ((PACK*)scaled)[i] = input;
    }
#if DOTS
    __shared__ float row_parts[DOT_THREADS];
    row_parts[threadIdx.x] = dot;
    __syncthreads();
    if (i < total && v == 0) {  // the row's threads, in order (a block holds whole rows)
        float sum = 0.f;
        for (unsigned int k = 0; k < VECTORS; ++k) sum += row_parts[threadIdx.x + k];
        row_dots[row] = sum;
    }
#endif
    block_partial(part, partials);
}
"""

THREADS = 256


def dot_threads(vectors: int) -> int | None:
    """The threads of a block that writes row dots: whole rows of ``vectors`` threads and whole warps (the block's
    partial sum shuffles whole warps), at most :data:`THREADS` where a warp's worth of rows fits; ``None`` past 1024."""
    step = 32 // math.gcd(vectors, 32)  # rows to a whole number of warps
    rows = max(step, THREADS // (step * vectors) * step)
    return rows * vectors if rows * vectors <= 1024 else None


def tied_code_gradient_source(bfloat16: bool, lanes: int, vectors: int, has_grad: bool, scaled: bool,
                              dots: bool = False, maps: tuple | None = None) -> str:
    """The CUDA source of the kernel for one storage, vector width, row length and variant (``dots``: with the row
    dots, in blocks of :func:`dot_threads`; ``maps``: ``(blocks_w, block_h, block_w, K)``, z and the pooling's
    gradient read from their maps)."""
    from .cuda_kernels import BLOCK_PARTIAL
    from .gemm import BFLOAT16_ROUNDING

    pack = f"Halves<{lanes}>" if bfloat16 else f"Floats<{lanes}>"
    defines = (f"#define STORAGE {'unsigned short' if bfloat16 else 'float'}\n#define PACK {pack}\n#define LANES {lanes}\n"
               f"#define VECTORS {vectors}u\n#define HAS_GRAD {int(has_grad)}\n#define SCALED {int(scaled)}\n"
               f"#define DOTS {int(dots)}\n" + (f"#define DOT_THREADS {dot_threads(vectors)}\n" if dots else "")
               + f"#define FROM_MAPS {int(maps is not None)}\n")
    if maps is not None:
        defines += "".join(f"#define {name} {value}u\n"
                           for name, value in zip(("MAP_BLOCKS_W", "BLOCK_H", "BLOCK_W", "MAP_K"), maps))
    return BFLOAT16_ROUNDING + BLOCK_PARTIAL + defines + _SOURCE


@functools.lru_cache(maxsize=None)
def _kernel(*variant):
    import cupy

    return cupy.RawKernel(tied_code_gradient_source(*variant), "dasksae_tied_code_gradient", options=("-std=c++14",))


def _from_maps(z_rows, grad_rows):
    """``(z, grad or None, (blocks_w, block_h, block_w, K))`` where ``z_rows`` and ``grad_rows`` are
    :class:`~dasksae.kernels.local_filter.MapBlocks` of whole blocks, C-contiguous float32 maps of one shape; else
    ``None``."""
    from .local_filter import MapBlocks

    if not isinstance(z_rows, MapBlocks) or not (grad_rows is None or isinstance(grad_rows, MapBlocks)):
        return None
    maps = [z_rows] + ([] if grad_rows is None else [grad_rows])
    height, width, channels, _ = z_rows.map.shape
    if (height % z_rows.block_h or width % z_rows.block_w
            or any(m.map.shape != z_rows.map.shape or (m.block_h, m.block_w) != (z_rows.block_h, z_rows.block_w)
                   or m.map.dtype != numpy.float32 or not m.map.flags.c_contiguous for m in maps)):
        return None
    return (z_rows.map, None if grad_rows is None else grad_rows.map,
            (z_rows.blocks_w, z_rows.block_h, z_rows.block_w, channels))


def _tied_code_gradient_cuda(product, row_scale, z_rows, grad_rows, a, codes, precision, scaled, row_dots=None):
    """The kernel's result, or ``None`` where the arrays do not suit it (the caller runs the array code)."""
    import cupy

    count, rows, batch = z_rows.shape
    maps = None
    if not isinstance(z_rows, cupy.ndarray):  # MapBlocks: read from the maps, if they suit the kernel
        from_maps = _from_maps(z_rows, grad_rows)
        if from_maps is None:
            return None
        z_rows, grad_rows, maps = from_maps
    elif grad_rows is not None and not isinstance(grad_rows, cupy.ndarray):  # rows of z, blocks of the gradient's map
        return None
    storage = storage_dtype(precision)
    rows_read = [product] + ([] if maps is not None else [z_rows] + ([] if grad_rows is None else [grad_rows]))
    maps_read = [] if maps is None else [z_rows] + ([] if grad_rows is None else [grad_rows])
    if (storage.name not in ("float32", "uint16") or row_scale.size != count * rows
            or codes.shape != (count, rows, 2 * batch) or codes.dtype != storage or not codes.flags.c_contiguous
            or not row_scale.flags.c_contiguous or row_scale.dtype != numpy.float32
            or any(v.shape != (count, rows, batch) or v.dtype != numpy.float32 or not v.flags.c_contiguous
                   for v in rows_read)
            or (isinstance(a, cupy.ndarray) and (a.dtype != numpy.float32 or a.size != 1))
            or (row_dots is not None and (row_dots.shape != (count, rows) or row_dots.dtype != numpy.float32
                                          or not row_dots.flags.c_contiguous))):
        return None
    pointers = [v.data.ptr for v in rows_read + maps_read] + [codes.data.ptr]
    lanes = next(n for n in (4, 2, 1) if batch % n == 0 and all(p % (n * 4) == 0 for p in pointers))
    vectors = batch // lanes
    total = count * rows * vectors
    threads = THREADS if row_dots is None else dot_threads(vectors)
    if total == 0 or total >= 2**31 or threads is None:
        return None
    launches = -(-total // threads)
    partials = cupy.empty(launches, dtype=cupy.float64)
    scaled_operand = cupy.empty((count, rows, batch), dtype=storage) if scaled else None
    kernel = _kernel(storage.name == "uint16", lanes, vectors, grad_rows is not None, scaled, row_dots is not None,
                     maps)
    on_device = isinstance(a, cupy.ndarray)
    kernel((launches,), (threads,), (product, row_scale, z_rows, z_rows if grad_rows is None else grad_rows, codes,
                                     codes if scaled_operand is None else scaled_operand, partials,
                                     a if on_device else row_scale, numpy.float32(0 if on_device else a),
                                     numpy.int32(on_device), numpy.uint32(total),
                                     row_scale if row_dots is None else row_dots))
    return partials.sum(), scaled_operand
