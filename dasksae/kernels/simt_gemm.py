"""A float32 batched GEMM of our own whose tile fits the minibatch: 128 x 96 outputs a CUDA block (CuPy).

cuBLAS's float32 kernels tile the product's ``M = 96`` side (the minibatch)
by 64 or 128, and on coates200's filter products they reach 34-37 TFLOP/s
for ``W x`` and ``W^T y`` against 41-45 for the weight gradient and a
ceiling of 51 (H200, ``bench/gemm_layouts.py``).

This kernel computes ``C[i] (+)= op(A[i]) B[i]`` (row-major; ``op`` an
optional transpose of ``A``; ``B`` not transposed) with one CUDA block of
256 threads for each 128 x 96 tile of ``C``: each thread holds an 8 x 6
micro-tile in registers, and 16 values of the inner dimension at a time
are staged in shared memory, the next 16 loaded from global memory into
registers while the current ones are used.  Every shape it takes divides
its tile in ``N`` (``N % 96 == 0``, the minibatch) and in ``K``
(``K % 16 == 0``); rows of ``C`` past ``M`` are guarded.  It reads 16-byte
vectors, so leading dimensions, batch strides and pointers must be
multiples of 4 floats.

``DASKSAE_GEMM=simt`` (the default) sends the float32 products it fits
(:func:`fits`) here; everything else stays with cuBLAS, and
``DASKSAE_GEMM=cublas`` sends everything there.  On an H200 (session 11,
``bench/results/session11/``) it gives cuBLAS's results bit for bit (both
sum each output in the order of ``K``, one fused multiply-add at a time),
runs coates200's ``W x`` and ``W^T y`` at 39-43 TFLOP/s against cuBLAS's
34-37, and took the in-process float32 step from 69.7 to 66.7 ms.  Two
stages of shared memory with one barrier each (tried in session 11) were
slower (31-36 TFLOP/s), and so was staging 8 values of ``K`` (30-34).
Its source also runs on the CPU under g++ with one OS thread per CUDA
thread (``tests/test_simt_gemm_on_cpu.py``).
"""

from __future__ import annotations

import functools

from ..switches import switch

TILE_M, TILE_N, TILE_K, THREADS = 128, 96, 16, 256

_SOURCE = r"""
// C[i] (+)= op(A[i]) B[i], row-major; op(A) is M x K, B is K x N, C is M x N.
// A: TRANSPOSE_A ? stored K x M (A[k * lda + m]) : stored M x K (A[m * lda + k]).
// Block: a 128 x 96 tile of C; thread (ty, tx) in 16 x 16: rows ty*4 + {0..3} and 64 + ty*4 + {0..3},
// columns tx*4 + {0..3} and 64 + tx*2 + {0, 1}.
#define TILE_M 128
#define TILE_N 96
#define TILE_K 16
#define A_PAD 4

template <int TRANSPOSE_A, int ACCUMULATE>
__global__ void __launch_bounds__(256) dasksae_simt_gemm(
    const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
    const int M, const int N, const int K,
    const long long lda, const long long batch_a, const long long ldb, const long long batch_b,
    const long long ldc, const long long batch_c)
{
    __shared__ __align__(16) float As[TILE_K][TILE_M + A_PAD];
    __shared__ __align__(16) float Bs[TILE_K][TILE_N];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    A += blockIdx.z * batch_a;
    B += blockIdx.z * batch_b;
    C += blockIdx.z * batch_c;

    constexpr int A_VECTORS = 32 * TILE_K, A_PARTS = A_VECTORS / 256;  // the A tile in vectors of 4; per thread
    constexpr int B_VECTORS = 24 * TILE_K, B_PARTS = (B_VECTORS + 255) / 256;
    float4 a_next[A_PARTS];  // this thread's share of the next A tile
    float4 b_next[B_PARTS];  // and of the next B tile (the last part only where tid + 256 * part < B_VECTORS)

    auto load = [&](const int k0) {
        for (int part = 0; part < A_PARTS; ++part) {
            const int v = tid + part * 256;
            if (TRANSPOSE_A) {               // TILE_K rows of k, 32 vectors of m each
                const int k = v / 32, m = m0 + (v % 32) * 4;
                a_next[part] = m < M ? *(const float4*)(A + (long long)(k0 + k) * lda + m) : make_float4(0.f, 0.f, 0.f, 0.f);
            } else {                         // 128 rows of m, TILE_K / 4 vectors of k each
                const int m = m0 + v / (TILE_K / 4), k = (v % (TILE_K / 4)) * 4;
                a_next[part] = m < M ? *(const float4*)(A + (long long)m * lda + k0 + k) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
        for (int part = 0; part < B_PARTS; ++part) {
            const int v = tid + part * 256;  // TILE_K rows of k, 24 vectors of n each
            if (v < B_VECTORS) {
                const int k = v / 24, n = n0 + (v % 24) * 4;
                b_next[part] = *(const float4*)(B + (long long)(k0 + k) * ldb + n);
            }
        }
    };
    auto store = [&]() {
        for (int part = 0; part < A_PARTS; ++part) {
            const int v = tid + part * 256;
            if (TRANSPOSE_A) {
                *(float4*)&As[v / 32][(v % 32) * 4] = a_next[part];
            } else {
                const int m = v / (TILE_K / 4), k = (v % (TILE_K / 4)) * 4;
                As[k + 0][m] = a_next[part].x;
                As[k + 1][m] = a_next[part].y;
                As[k + 2][m] = a_next[part].z;
                As[k + 3][m] = a_next[part].w;
            }
        }
        for (int part = 0; part < B_PARTS; ++part) {
            const int v = tid + part * 256;
            if (v < B_VECTORS) *(float4*)&Bs[v / 24][(v % 24) * 4] = b_next[part];
        }
    };

    float acc[8][6];
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 6; ++c) acc[r][c] = 0.f;

    load(0);
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        __syncthreads();  // the previous stage is no longer read
        store();
        __syncthreads();
        if (k0 + TILE_K < K) load(k0 + TILE_K);  // global loads in flight while this stage is used
#pragma unroll
        for (int k = 0; k < TILE_K; ++k) {
            const float4 a0 = *(const float4*)&As[k][ty * 4];
            const float4 a1 = *(const float4*)&As[k][64 + ty * 4];
            const float4 b0 = *(const float4*)&Bs[k][tx * 4];
            const float2 b1 = *(const float2*)&Bs[k][64 + tx * 2];
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[6] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y};
#pragma unroll
            for (int r = 0; r < 8; ++r)
#pragma unroll
                for (int c = 0; c < 6; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
    }

    for (int r = 0; r < 8; ++r) {
        const int m = m0 + (r < 4 ? ty * 4 + r : 64 + ty * 4 + (r - 4));
        if (m >= M) continue;
        float* row = C + (long long)m * ldc + n0;
        float4 first = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
        float2 second = make_float2(acc[r][4], acc[r][5]);
        if (ACCUMULATE) {
            const float4 old_first = *(const float4*)(row + tx * 4);
            const float2 old_second = *(const float2*)(row + 64 + tx * 2);
            first.x += old_first.x; first.y += old_first.y; first.z += old_first.z; first.w += old_first.w;
            second.x += old_second.x; second.y += old_second.y;
        }
        *(float4*)(row + tx * 4) = first;
        *(float2*)(row + 64 + tx * 2) = second;
    }
}
"""

SIMT_GEMM_KERNELS = [f"dasksae_simt_gemm<{t}, {a}>" for t in (0, 1) for a in (0, 1)]


def simt_gemm_source() -> str:
    """The kernel's CUDA source (a C++ template: :data:`SIMT_GEMM_KERNELS` names its variants)."""
    return _SOURCE


def enabled() -> bool:
    """Whether float32 products that fit go to this kernel: ``DASKSAE_GEMM=simt`` (the default)."""
    return switch("DASKSAE_GEMM") == "simt"


def fits(a, b, out, transpose_a: bool, transpose_b: bool, m: int, n: int, k: int) -> bool:
    """Whether the product suits the kernel: float32 arrays, ``B`` not transposed, ``N % 96 == 0``,
    ``K % 16 == 0``, ``M % 4 == 0`` where ``A`` is transposed, every row contiguous, and leading
    dimensions, batch strides and pointers in whole 16-byte vectors."""
    if transpose_b or n % TILE_N or k % TILE_K or (transpose_a and m % 4) or a.shape[0] > 65535:
        return False
    for array in (a, b, out):
        if array.dtype.name != "float32" or array.strides[2] != 4:
            return False
        if array.strides[1] % 16 or array.strides[0] % 16 or array.data.ptr % 16:
            return False
    return True


@functools.lru_cache(maxsize=None)
def _module():
    import cupy

    return cupy.RawModule(code=_SOURCE, options=("-std=c++14",), name_expressions=SIMT_GEMM_KERNELS)


def batched_gemm(a, b, out, transpose_a: bool, m: int, n: int, k: int, accumulate: bool) -> None:
    """``out[i] (+)= op(a[i]) @ b[i]`` on the current stream (the arrays must :func:`fits`)."""
    import numpy

    kernel = _module().get_function(f"dasksae_simt_gemm<{int(transpose_a)}, {int(accumulate)}>")
    count = a.shape[0]
    grid = (-(-m // TILE_M), n // TILE_N, count)
    elements = [(x.strides[1] // 4, x.strides[0] // 4) for x in (a, b, out)]
    kernel(grid, (THREADS,), (a, b, out, numpy.int32(m), numpy.int32(n), numpy.int32(k),
                              numpy.int64(elements[0][0]), numpy.int64(elements[0][1]),
                              numpy.int64(elements[1][0]), numpy.int64(elements[1][1]),
                              numpy.int64(elements[2][0]), numpy.int64(elements[2][1])))
