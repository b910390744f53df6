"""The float32 ``W x`` on tensor cores, as accurate as float32 FMAs: each operand split into two TF32 terms
(``3xTF32``), its fields read straight from the input map and its outputs written into the output map (CuPy).

Why: a float32 step is bound by the card's float32 FMA rate (about 51 TFLOP/s on
the H100; our SIMT kernel, :mod:`.simt_gemm`, runs ``W x`` at 40-42), so no
float32 implementation of the network can run 5x faster than a ``torch.compile``
peer at 21% of that rate.  Tensor cores take float32 operands only as TF32 (10
bits of mantissa), too coarse for the float32 the issue asks for.  Split
instead: ``a = a_big + a_small`` with ``a_big = tf32(a)`` and ``a_small =
tf32(a - a_big)`` (22 bits of ``a``'s 24), and take ``a b`` as ``a_small b_big
+ a_big b_small + a_big b_big`` on TF32 tensor cores with float32 sums (the
smallest term, ``a_small b_small``, is below float32's rounding and left out;
the small products first so that they are not lost against the big one).  That
is CUTLASS's "3xTF32" fast accurate float32 GEMM: three TF32 products cost
less than one float32 FMA product on Ampere and Hopper (the H100's TF32 rate is
about 8x its float32 rate).  ``tests/test_mma_float32_on_cpu.py`` checks that
its error against float64 is that of a float32 product, and that one term
(plain TF32) is not.

The kernel is :mod:`.mma_forward`'s (the same grid, arguments and output layout
as ``dasksae_simt_filter_forward``, 8 warps of 32 x 48 outputs over a 128 x 96
tile, ``STAGES`` buffers of shared memory filled by ``cp.async``) with float32
tiles and ``mma.sync.m16n8k8`` in TF32: a k-step of 8, A's fragments ``(g, t)``,
``(g + 8, t)``, ``(g, t + 4)``, ``(g + 8, t + 4)`` and B's ``(t, g)``, ``(t +
4, g)`` loaded as single floats (the shared rows padded so that a warp's loads
fall in 32 distinct banks) and split in registers.

Opt-in while unmeasured: ``DASKSAE_FLOAT32_TENSOR_CORES=1`` takes float32 ``W
x`` and the backward's ``U g_r`` here where the arrays fit (:func:`forward_fits`);
``0`` (the default) keeps :mod:`.simt_gemm`.  Its source also runs on the CPU under g++ (the shim of
``tests/test_mma_float32_on_cpu.py`` emulates ``mma.sync.m16n8k8`` and
``cvt.rna.tf32.f32`` from the PTX ISA), checked against NumPy in float64.
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from .mma_update import MMA_HELPERS, aligned
from .simt_gemm import THREADS, TILE_N

# float32 W x on TF32 tensor cores with split operands (this module) where the arrays fit: "1", or "0" (the default:
# the SIMT kernel) until a device run measures it
FLOAT32_TENSOR_CORES = switch("DASKSAE_FLOAT32_TENSOR_CORES")
# (inner terms a tile of shared memory, tiles of shared memory a block): k32x3 takes 93 KiB a block, two an SM
VARIANTS = {"k32x3": (32, 3), "k16x4": (16, 4)}
VARIANT = "k32x3"
A_PAD = 4  # a shared weight row: TILE_K floats and 4 (A's fragment loads (g, t) in banks 4g + t: all distinct)
B_ROW = TILE_N + 8  # a shared field row: 96 floats and 8 (B's fragment loads (t, g) in banks 8t + g: all distinct)
TERMS = 3  # products a k-step: 3 (a_small b_big + a_big b_small + a_big b_big), or 1 (plain TF32: the tests' check)


def shared_bytes(variant: str = VARIANT) -> int:
    """Dynamic shared memory a block: ``STAGES`` tiles of the weights (128 rows of ``TILE_K + 4`` floats) and of the
    fields (``TILE_K`` rows of 104)."""
    tile_k, stages = VARIANTS[variant]
    return stages * (128 * (tile_k + A_PAD) + tile_k * B_ROW) * 4


_SOURCE = r"""
#define TILE_M 128  // simt_gemm's
#define TILE_N 96
// TILE_K, STAGES, A_ROW (TILE_K + 4), B_ROW (104), SHARED_BYTES, TERMS: from mma_float32_source
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
extern __shared__ __align__(16) unsigned char float32_shared[];
// a float rounded to TF32 (10 bits of mantissa; to nearest, ties away from zero), as the bits of a float
__device__ __forceinline__ unsigned to_tf32(const float value)
{
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(value));
    return bits;
}
// d (+)= a b over one 16 x 8 x 8 product: a 4 and b 2 registers of one TF32 value each, d 4 floats (PTX ISA layouts)
__device__ __forceinline__ void mma_1688(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else  // the CPU tests' g++: the block's threads share a static array
static unsigned char float32_shared[SHARED_BYTES] __attribute__((aligned(16)));
#endif

// value = big + small, both TF32: big = tf32(value), small = tf32(value - big) (the difference is exact in float32)
__device__ __forceinline__ void split_tf32(const float value, unsigned& big, unsigned& small)
{
    big = to_tf32(value);
    small = to_tf32(value - __uint_as_float(big));
}

// out = diag(row_scale) W x for a chunk of filter blocks, as dasksae_mma_filter_forward (mma_forward.py) with float32
// weights (count, rows, fan_in) and map x (H, W, C, batch): the same arguments in the same order.  Takes batch in
// whole 4s (the last tile of 96 columns may be part full: its columns past batch are read as zeros and not written),
// fan_in in whole 4s, 16-byte aligned maps and rows; SHARED_BYTES of dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256, 2) dasksae_tf32x3_filter_forward(
    const float* __restrict__ weights, const float* __restrict__ x, float* __restrict__ out, const int rows,
    const int batch, const int fan_in, const int blocks_w, const int step, const int field_rows, const int block_h,
    const int block_w, const int maps, const long long in_row, const long long in_pixel, const long long out_row,
    const long long out_pixel, const float* __restrict__ row_scale)
{
    float(*As)[TILE_M * A_ROW] = (float(*)[TILE_M * A_ROW])float32_shared;  // [STAGES]
    float(*Bs)[TILE_K * B_ROW] = (float(*)[TILE_K * B_ROW])(float32_shared + STAGES * TILE_M * A_ROW * 4);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const int warp_m = warp % 4, warp_n = warp / 4;
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    const long long block = blockIdx.z, p = block / blocks_w, q = block % blocks_w;
    weights += block * rows * (long long)fan_in;
    x += (p * in_row + q * in_pixel) * step + n0;
    auto load = [&](const int buffer, const int k0) {  // the k-tile at k0 into buffer: 16 bytes (4 floats) a copy
        for (int c = tid; c < TILE_M * (TILE_K / 4); c += 256) {  // A: 128 rows of TILE_K / 4 copies
            const int r = c / (TILE_K / 4), part = c % (TILE_K / 4), k = k0 + part * 4, m = m0 + r;
            const bool whole = m < rows && k < fan_in;  // fan_in % 4 == 0: a copy is whole or past the end
            copy_16((unsigned short*)&As[buffer][r * A_ROW + part * 4],
                    (const unsigned short*)(weights + (whole ? (long long)m * fan_in + k : 0)), whole);
        }
        for (int c = tid; c < TILE_K * 24; c += 256) {  // B: TILE_K field rows of 24 copies (batch % 4 == 0: a copy
            const int r = c / 24, part = c % 24, k = k0 + r, safe = k < fan_in ? k : 0;  // is whole or past the end;
            const bool in = k < fan_in && n0 + part * 4 < batch;  // one past it reads nothing, at an address in the map)
            copy_16((unsigned short*)&Bs[buffer][r * B_ROW + part * 4],
                    (const unsigned short*)(x + (safe / field_rows) * in_row + (long long)(safe % field_rows) * batch +
                                            (in ? part * 4 : 0)), in);
        }
    };

    float acc[2][6][4];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 6; ++j)
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    const int tiles = (fan_in + TILE_K - 1) / TILE_K;
    for (int s = 0; s < STAGES - 1; ++s) {  // the first STAGES - 1 tiles in flight (empty groups past the end)
        if (s < tiles) load(s, s * TILE_K);
        copies_commit();
    }
    for (int s = 0; s < tiles; ++s) {
        copies_wait<STAGES - 2>();  // tile s is there (this thread's copies) ...
        __syncthreads();  // ... every thread's, and every thread is done with tile s - 1's buffer
        const int next = s + STAGES - 1;
        if (next < tiles) load(next % STAGES, next * TILE_K);  // into the buffer tile s - 1 left
        copies_commit();
        const float* a_tile = As[s % STAGES] + (warp_m * 32 + g) * A_ROW + t;
        const float* b_tile = Bs[s % STAGES] + t * B_ROW + warp_n * 48 + g;
        for (int kk = 0; kk < TILE_K; kk += 8) {
            unsigned a_big[2][4], a_small[2][4], b_big[6][2], b_small[6][2];
            for (int i = 0; i < 2; ++i)  // rows g, g + 8 of each 16 (registers 0, 1), inner terms t, t + 4 (0, 2)
                for (int r = 0; r < 4; ++r)
                    split_tf32(a_tile[(i * 16 + 8 * (r % 2)) * A_ROW + kk + 4 * (r / 2)], a_big[i][r], a_small[i][r]);
            for (int j = 0; j < 6; ++j)  // column g of each 8, inner terms t, t + 4
                for (int r = 0; r < 2; ++r)
                    split_tf32(b_tile[(kk + 4 * r) * B_ROW + j * 8], b_big[j][r], b_small[j][r]);
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 6; ++j) {
#if TERMS == 3
                    mma_1688(acc[i][j], a_small[i], b_big[j]);
                    mma_1688(acc[i][j], a_big[i], b_small[j]);
#endif
                    mma_1688(acc[i][j], a_big[i], b_big[j]);
                }
        }
    }
    copies_wait<0>();  // (only empty groups are left)

    for (int i = 0; i < 2; ++i)
        for (int h = 0; h < 2; ++h) {  // rows g and g + 8 of each 16; columns 2t, 2t + 1 of each 8
            const int m = m0 + warp_m * 32 + i * 16 + g + 8 * h;
            if (m >= rows) continue;
            const float scale = row_scale ? row_scale[block * rows + m] : 1.f;
            const int by = m / (block_w * maps), bx = (m / maps) % block_w, map = m % maps;
            float* row = out + (p * block_h + by) * out_row + (q * block_w + bx) * out_pixel + (long long)map * batch +
                         n0 + warp_n * 48 + 2 * t;
            for (int j = 0; j < 6; ++j)  // (columns 2t and 2t + 1 are both in the minibatch or both past it)
                if (n0 + warp_n * 48 + j * 8 + 2 * t < batch)
                    *(float2*)(row + j * 8) = make_float2(acc[i][j][2 * h] * scale, acc[i][j][2 * h + 1] * scale);
        }
}
"""


def mma_float32_source(variant: str = VARIANT, terms: int = TERMS) -> str:
    """The kernel's CUDA source with a variant's tile constants defined (:data:`VARIANTS`) and ``terms`` TF32 products
    a k-step (3: float32's accuracy; 1: plain TF32, for the tests' check that the split is what gives it)."""
    if terms not in (1, 3):
        raise ValueError(f"terms must be 1 or 3, not {terms!r}.")
    tile_k, stages = VARIANTS[variant]
    defines = {"TILE_K": tile_k, "STAGES": stages, "A_ROW": tile_k + A_PAD, "B_ROW": B_ROW,
               "SHARED_BYTES": shared_bytes(variant), "TERMS": terms}
    return "".join(f"#define {name} {value}\n" for name, value in defines.items()) + MMA_HELPERS + _SOURCE


@functools.lru_cache(maxsize=None)
def _kernel(variant: str):
    import cupy

    kernel = cupy.RawKernel(mma_float32_source(variant), "dasksae_tf32x3_filter_forward", options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = shared_bytes(variant)
    return kernel


def forward_fits(x, weights, out, row_scale, field: int, step: int, block_h: int, block_w: int) -> bool:
    """Whether :func:`filter_forward_float32` takes this product: a float32 map ``x (H, W, C, N)``, ``N`` in whole 4s,
    weights ``(count, rows, f*f*C)`` in whole 4s, at most 65535 blocks, a float32 output map ``(H', W', maps, N)`` with
    ``rows = block_h*block_w*maps`` and ``count`` its blocks, ``row_scale`` (if any) a float32 value a row; all
    C-contiguous and 16-byte aligned."""
    arrays = (x, weights, out) + (() if row_scale is None else (row_scale,))
    if any(a.dtype.name != "float32" or not aligned(a) for a in arrays) or x.ndim != 4 or weights.ndim != 3:
        return False
    count, rows, fan_in = weights.shape
    if x.shape[3] % 4 or fan_in % 4 or fan_in != field * field * x.shape[2] or count > 65535 or out.ndim != 4:
        return False
    if out.shape[3] != x.shape[3] or rows != block_h * block_w * out.shape[2]:
        return False
    if count != (out.shape[0] // block_h) * (out.shape[1] // block_w):
        return False
    return row_scale is None or row_scale.size == count * rows


def filter_forward_float32(x, weights, out, field: int, step: int, block_h: int, block_w: int, row_scale=None,
                           variant: str | None = None) -> None:
    """``out = diag(row_scale) W x`` for one chunk of block rows on TF32 tensor cores with split operands, the fields
    read from ``x``'s map and the outputs written into ``out``'s (the arrays must :func:`forward_fits`)."""
    from .mma_forward import launch
    from .simt_gemm import typed_launch

    variant = variant or VARIANT
    grid, arguments = typed_launch(launch, 4, x.shape, out.shape, weights.shape, field, step, block_h, block_w)
    scale = numpy.uint64(0) if row_scale is None else row_scale
    _kernel(variant)(grid, (THREADS,), (weights, x, out, *arguments, scale), shared_mem=shared_bytes(variant))


def fields_product_float32(x, weight_rows, out, field: int, step: int, blocks_w: int) -> bool:
    """``out[b] = W[b] fields_b(x)`` (float32 block rows ``(count, rows, N)``, the backward's ``U g_r``), block ``b``'s
    fields read from the float32 map ``x``: :func:`filter_forward_float32` into
    :func:`~dasksae.kernels.simt_gemm.as_block_map`.  ``False`` (nothing done) where the arrays do not fit."""
    from .simt_gemm import as_block_map

    count, rows, _ = weight_rows.shape
    if count % blocks_w or out.ndim != 3 or out.shape[:2] != (count, rows) or not out.flags.c_contiguous:
        return False
    block_map = as_block_map(out, blocks_w)
    if not forward_fits(x, weight_rows, block_map, None, field, step, 1, 1):
        return False
    filter_forward_float32(x, weight_rows, block_map, field, step, 1, 1)
    return True


def forward_on_tensor_cores(xp, precision: str) -> bool:
    """Whether float32 ``W x`` goes to this kernel (``DASKSAE_FLOAT32_TENSOR_CORES=1``, on CuPy) where the arrays
    :func:`forward_fits`."""
    return xp.__name__ == "cupy" and precision == "float32" and FLOAT32_TENSOR_CORES == "1"
