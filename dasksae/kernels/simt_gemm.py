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

``dasksae_simt_filter_forward`` is the same kernel reading a filter layer's
``B`` operand, the receptive fields, straight from the input map (each field
row of a block is a contiguous run of ``f*C`` rows of ``N`` values there,
since the minibatch is the fastest axis), and writing its rows, times the
unit norms' ``1/||U||``, straight into the output map: an implicit GEMM for
``W x``, with no fields buffer (3 bytes a parameter a pass) and no
block-rows pass (``DASKSAE_IMPLICIT_FIELDS=1``, the default; the same sums
bit for bit).  ``dasksae_simt_filter_weight_grad`` is the weight gradient
``[g | a z] [X | G]^T`` reading both halves of its right operand from the
input and error maps, and :func:`fields_product` is the forward kernel
writing block rows, for the backward pass's ``U g_r``
(``DASKSAE_IMPLICIT_BACKWARD=1``, the default): no ``[X | G]`` fields
buffer and no gathers.  On an H200 (session 18, ``bench/results/session18/``)
the in-process float32 coates200 step went from 66.2-66.4 ms to 64.6-65.2
with the first and 64.5 with both, 11.0 to 10.5 bytes a parameter.  Their
125 and 128 registers keep two blocks an SM, as the plain kernels' 119-127
do (``python bench/kernel_registers.py``, no GPU needed).

``dasksae_simt_filter_weight_grad_update`` (:func:`filter_weight_grad_update`,
``DASKSAE_FUSED_UPDATE=1``, the default since session 19) is the weight
gradient taking the unit-norm SGD step of ``U`` in its epilogue: each
output tile's ``dL/dW`` stays in registers, ``U`` and ``v`` are read and
written once, each row's ``W . dL/dW`` comes from the codes
(:func:`~dasksae.kernels.normalize.radial_dots`), and the new rows' sums of
squares a tile of columns go to a small buffer that
``dasksae_inverse_norms_from_squares`` adds up in order.  On an H200 it took
the in-process float32 coates200 step from 63.8-64.0 ms to 59.5-60.2 ms
(``bench/results/session19/fused/``); with the backward's chunks sized for
what they hold, to 55.2 ms (``session19/final/``).  Only the weight
gradient's shared tiles are XOR-swizzled (``DASKSAE_SMEM_SWIZZLE``): its
stores were 4-way bank conflicts, and swizzling the other modes' tiles made
their products 2-5% slower.

Tried and dropped (``git show 499b63d``): ``W^T y`` adding each block's
fields straight into the input map instead of into a patches buffer that a
fold overlap-adds, one launch a phase of blocks whose fields do not overlap
(25 launches a chunk for coates200: 71.9 and 72.0 ms against 66.2-66.4 with
the fold), or all blocks in one launch adding atomically (66.3-66.6 ms
against 64.5-65.2 without).  And (session 24, ``git show 197d7a3``) one
block of threads a cell of the map (4x4 pixels, 8 channels: 128 rows)
summing it over the blocks whose fields cover it, as the bfloat16
tensor-core kernel does (:mod:`.mma_transpose`), so that no patches are
written and folded: on coates200's stages 2 and 3 it took 3.64 and 2.85 ms
against 3.64 and 2.87 for the product into patches and the fold, and the
in-process step 53.0 ms against 52.5 (``bench/results/session24/fold2/``).
My reading, not profiled: its blocks are long (200 k-tiles each, 25
covering blocks of 128 rows), and stage 2's 2116 cells make 8.02 waves of
264 blocks, so what it saves on patches its product loses.
"""

from __future__ import annotations

import functools

import numpy

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

// FIELDS (dasksae_simt_filter_forward, below): a filter layer's W x straight from and to the maps.  B[i] is not an
// array but the receptive field of filter block i = (p, q) (p = i / blocks_w, q = i % blocks_w) in the input map
// (H, W, C, N), C-contiguous: its K = f*f*C rows are f runs (one a field row dy) of field_rows = f*C rows, ldb apart
// (ldb = N), the runs in_row = W*C*N apart, and block (p, q) starts at (p * in_row + q * in_pixel) * step.  Row m of
// C[i] is neuron (m / (block_w*maps), (m / maps) % block_w, m % maps) of block i in the output map (H', W', maps, N):
// written at ldc = N within its pixel, pixels out_pixel = maps*N apart, map rows out_row = W'*maps*N apart, times
// row_scale[i * M + m] where row_scale is given.  No fields buffer, no block-rows pass; the sums are those of the
// gathered product, in the same order, so the results are the same bit for bit.
// WEIGHT_GRAD (dasksae_simt_filter_weight_grad): a filter layer's weight gradient [g | a z] [X | G]^T straight from
// the maps: A[i] is block i's codes (M = rows, K = 2 half or half), and B's row k, column n is field row n of block i
// at minibatch entry k, read from the input map B for k < half and from the error map B2 for k >= half (each field
// row's half values are contiguous there, so a tile's loads are runs of 16 along k, stored transposed into Bs).
// N = f*f*C need not be a multiple of 96: columns past it are loaded as zeros and not written.
// UPDATE (WEIGHT_GRAD only; dasksae_simt_filter_weight_grad_update): instead of writing the gradient dL/dW, take the
// SGD-with-momentum step of the raw weights U in place (C is U; W = s U with s = 1/||U|| per row), as unit_rows_sgd
// does in kernels/normalize.py: g = s (dW - U s d), v = momentum v - lr g, U += v, where d = W . dW per row is given
// (row_dots: the caller has it from the codes, without the gradient), and leave each row's sum of the new U's squares
// over this tile's columns in partial_squares[row * gridDim.y + blockIdx.y] (summed in order by
// dasksae_inverse_norms_from_squares).  The gradient is never written nor read back.
struct Update {
    float* velocity;
    const float* inverse_norms;
    const float* row_dots;
    float* partial_squares;
    float lr, momentum;
};
#define PLAIN 0
#define FIELDS 1
#define WEIGHT_GRAD 2
// SMEM_SWIZZLE 1: in WEIGHT_GRAD, row k of the shared tiles holds column c at c ^ swizzle(k), so that the scattered
// stores of its A tile (4 values of k for each of 8 rows a warp: 2 ways) and of its transposed B tile (4 ways) fall
// in 32 banks; the XOR flips bits 3 and 4 only, so 16- and 8-byte vectors of columns stay whole and aligned, and
// every column stays within its tile.  The other modes are not swizzled: the XOR in their inner loop's addresses
// cost more than their 2-way A stores (on an H200, session 19: W x 43.2 -> 41.6 and W^T y 42.2 -> 39.9 TFLOP/s
// swizzled, the weight gradient 35.2-35.9 -> 36.3-37.4).  0: no swizzle anywhere (sessions 11-18).
#ifndef SMEM_SWIZZLE
#define SMEM_SWIZZLE 1
#endif
template <int MODE> __device__ __forceinline__ int swizzle(const int k)
{
    return SMEM_SWIZZLE && MODE == WEIGHT_GRAD ? ((k >> 2) & 3) << 3 : 0;
}
// UPDATE_PREFETCH 1 (opt-in; on the H200 at most 0.6-1.0 ms of 55 ms, session 20): an UPDATE block first asks L2 for
// its rows of U and v (prefetch.global.L2), so that its epilogue reads them from L2 instead of DRAM after the products.
// Without it, every block of a wave reaches its epilogue at about the same time and the update's traffic follows the
// products instead of overlapping them.
#ifndef UPDATE_PREFETCH
#define UPDATE_PREFETCH 0
#endif
__device__ __forceinline__ void prefetch_l2(const float* address)
{
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
#endif
}
// UPDATE_STAGING 1, 2 or 3 (3, the default since session 21; on the H200's float32 coates200 step 52.3-52.7 ms with 3,
// 53.9-54.4 with 1 or 2, 54.4 unstaged): an UPDATE block copies the values of U and v that its epilogue will read into
// dynamic shared memory (cp.async: the copies run while its products do, and nothing can evict them, as L2 can
// prefetched lines), so that the epilogue reads shared memory instead of waiting for DRAM after the products.  Each
// thread copies exactly what it will read (its 8 rows' 4 + 2 columns of U and of v), so a wait for its own copies is
// all it needs: 96 KiB a block (STAGE_BYTES), two blocks an SM in the H100/H200's 228 KiB.  Where the copies are
// issued: 1 at the block's start, ahead of its first operand loads; 2 right behind those (load(0)); 3 in the first
// stage, behind the second tile's loads as well, so that the copies (96 KiB a block, 25 MB a wave of 264 blocks) queue
// behind what the products wait for first.
#ifndef UPDATE_STAGING
#define UPDATE_STAGING 0
#endif
#define STAGE_FLOATS (2 * 8 * 256 * 6)  // U and v; 8 rows of a float4 and a float2 each, for each of 256 threads
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
extern __shared__ __align__(16) float update_stage[];
__device__ __forceinline__ void copy_async(float* shared, const float* global, const int bytes)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(shared);
    if (bytes == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(address), "l"(global) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(address), "l"(global) : "memory");
}
__device__ __forceinline__ void copy_async_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }
#else  // the CPU tests' g++: the block's threads share a static array, and a copy is a copy
static float update_stage[STAGE_FLOATS] __attribute__((aligned(16)));
static inline void copy_async(float* shared, const float* global, const int bytes)
{
    for (int i = 0; i < bytes / 4; ++i) shared[i] = global[i];
}
static inline void copy_async_wait() {}
#endif
// where thread tid's copy of row r's (r < 8) first four (part 0) or last two (part 1) columns of U (value 0) or v
// (value 1) is staged: float4s for part 0, float2s for part 1, consecutive threads side by side (no bank conflicts)
__device__ __forceinline__ float* staged(const int value, const int part, const int r, const int tid)
{
    return update_stage + value * (8 * 256 * 6) + (part ? 8 * 256 * 4 + (r * 256 + tid) * 2 : (r * 256 + tid) * 4);
}
template <int TRANSPOSE_A, int ACCUMULATE, int MODE, int UPDATE = 0>
__device__ __forceinline__ void simt_gemm_body(
    const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
    const int M, const int N, const int K,
    const long long lda, const long long batch_a, const long long ldb, const long long batch_b,
    const long long ldc, const long long batch_c,
    const int blocks_w, const int step, const int field_rows, const int block_h, const int block_w, const int maps,
    const long long in_row, const long long in_pixel, const long long out_row, const long long out_pixel,
    const float* __restrict__ row_scale, const float* __restrict__ B2 = nullptr, const int half = 0,
    const Update update = Update())
{
    __shared__ __align__(16) float As[TILE_K][TILE_M + A_PAD];
    __shared__ __align__(16) float Bs[TILE_K][TILE_N];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    A += blockIdx.z * batch_a;
    if (MODE == FIELDS) {
        const long long p = blockIdx.z / blocks_w, q = blockIdx.z % blocks_w;
        B += (p * in_row + q * in_pixel) * step;
        C += p * block_h * out_row + q * block_w * out_pixel;
    } else if (MODE == PLAIN) {
        B += blockIdx.z * batch_b;
        C += blockIdx.z * batch_c;
    } else if (MODE == WEIGHT_GRAD) {
        const long long p = blockIdx.z / blocks_w, q = blockIdx.z % blocks_w, at = (p * in_row + q * in_pixel) * step;
        B += at;
        if (B2) B2 += at;
        C += blockIdx.z * batch_c;
    }

    if (MODE == WEIGHT_GRAD && UPDATE && UPDATE_PREFETCH)  // 128 rows of U and of v, 96 columns: 4 addresses a row
        for (int at = tid; at < TILE_M * 8; at += 256) {    // (0, 32, 64 and 95 columns in) cover its 128-byte lines
            const int m = m0 + at / 8, piece = at % 8, column = n0 + (piece % 4 == 3 ? 95 : (piece % 4) * 32);
            if (m < M && column < N)
                prefetch_l2((piece < 4 ? C : update.velocity + blockIdx.z * batch_c) + (long long)m * ldc + column);
        }

    // UPDATE_STAGING: what this thread's epilogue reads, as it will read it (issued where UPDATE_STAGING says)
    auto stage_update = [&]() {
        for (int r = 0; r < 8; ++r) {
            const int m = m0 + (r < 4 ? ty * 4 + r : 64 + ty * 4 + (r - 4));
            if (m >= M) continue;
            const float* row = C + (long long)m * ldc + n0;
            const float* velocity = update.velocity + blockIdx.z * batch_c + (long long)m * ldc + n0;
            if (n0 + tx * 4 < N) {
                copy_async(staged(0, 0, r, tid), row + tx * 4, 16);
                copy_async(staged(1, 0, r, tid), velocity + tx * 4, 16);
            }
            if (n0 + 64 + tx * 2 < N) {
                copy_async(staged(0, 1, r, tid), row + 64 + tx * 2, 8);
                copy_async(staged(1, 1, r, tid), velocity + 64 + tx * 2, 8);
            }
        }
    };
    constexpr bool STAGES = MODE == WEIGHT_GRAD && UPDATE && UPDATE_STAGING;
    if (STAGES && UPDATE_STAGING == 1) stage_update();  // at the block's start, before its first operand loads

    constexpr int A_VECTORS = 32 * TILE_K, A_PARTS = A_VECTORS / 256;  // the A tile in vectors of 4; per thread
    constexpr int B_VECTORS = 24 * TILE_K, B_PARTS = (B_VECTORS + 255) / 256;
    float4 a_next[A_PARTS];  // this thread's share of the next A tile
    float4 b_next[B_PARTS];  // and of the next B tile (the last part only where tid + 256 * part < B_VECTORS)
    int field_run[B_PARTS], run_row[B_PARTS];  // FIELDS: the field row (run) and row within it of each part's next row
    if (MODE == FIELDS)
        for (int part = 0; part < B_PARTS; ++part) {
            const int k = (tid + part * 256) / 24;
            field_run[part] = k / field_rows;
            run_row[part] = k % field_rows;
        }
    int field_at[B_PARTS];  // WEIGHT_GRAD: where each part's field row n starts in the maps (-1: n past N; 32 bits,
    if (MODE == WEIGHT_GRAD)  // which weight_grad_fits checks: a 64-bit offset would spill on two blocks an SM)
        for (int part = 0; part < B_PARTS; ++part) {
            const int v = tid + part * 256, n = n0 + v / 4;
            field_at[part] = v < B_VECTORS && n < N ? (int)((n / field_rows) * in_row + (n % field_rows) * ldb) : -1;
        }

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
            if (MODE == FIELDS) {  // loads come with k0 = 0, TILE_K, 2 TILE_K, ... in turn: each part steps TILE_K rows on
                if (v < B_VECTORS)
                    b_next[part] = *(const float4*)(B + field_run[part] * in_row + (long long)run_row[part] * ldb
                                                    + n0 + (v % 24) * 4);
                run_row[part] += TILE_K;
                while (run_row[part] >= field_rows) {
                    run_row[part] -= field_rows;
                    ++field_run[part];
                }
            } else if (MODE == WEIGHT_GRAD) {  // 96 field rows n, 4 vectors of k each (k0 and half multiples of 16)
                const float* source = k0 < half ? B + k0 : B2 + (k0 - half);
                b_next[part] = field_at[part] >= 0 ? *(const float4*)(source + field_at[part] + (v % 4) * 4)
                                                   : make_float4(0.f, 0.f, 0.f, 0.f);
            } else if (v < B_VECTORS) {
                const int k = v / 24, n = n0 + (v % 24) * 4;
                b_next[part] = *(const float4*)(B + (long long)(k0 + k) * ldb + n);
            }
        }
    };
    auto store = [&]() {
        for (int part = 0; part < A_PARTS; ++part) {
            const int v = tid + part * 256;
            if (TRANSPOSE_A) {
                const int k = v / 32;
                *(float4*)&As[k][((v % 32) * 4) ^ swizzle<MODE>(k)] = a_next[part];
            } else {  // the four rows k..k+3 share one swizzle
                const int k = (v % (TILE_K / 4)) * 4, m = (v / (TILE_K / 4)) ^ swizzle<MODE>(k);
                As[k + 0][m] = a_next[part].x;
                As[k + 1][m] = a_next[part].y;
                As[k + 2][m] = a_next[part].z;
                As[k + 3][m] = a_next[part].w;
            }
        }
        for (int part = 0; part < B_PARTS; ++part) {
            const int v = tid + part * 256;
            if (v >= B_VECTORS) continue;
            if (MODE == WEIGHT_GRAD) {
                const int k = (v % 4) * 4, n = (v / 4) ^ swizzle<MODE>(k);
                Bs[k + 0][n] = b_next[part].x;
                Bs[k + 1][n] = b_next[part].y;
                Bs[k + 2][n] = b_next[part].z;
                Bs[k + 3][n] = b_next[part].w;
            } else {
                const int k = v / 24;
                *(float4*)&Bs[k][((v % 24) * 4) ^ swizzle<MODE>(k)] = b_next[part];
            }
        }
    };

    float acc[8][6];
    for (int r = 0; r < 8; ++r)
        for (int c = 0; c < 6; ++c) acc[r][c] = 0.f;

    load(0);
    if (STAGES && UPDATE_STAGING == 2) stage_update();  // behind the first tiles' operand loads
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        __syncthreads();  // the previous stage is no longer read
        store();
        __syncthreads();
        if (k0 + TILE_K < K) load(k0 + TILE_K);  // global loads in flight while this stage is used
        if (STAGES && UPDATE_STAGING == 3 && k0 == 0) stage_update();  // behind the second tiles' loads as well
#pragma unroll
        for (int k = 0; k < TILE_K; ++k) {
            const float4 a0 = *(const float4*)&As[k][(ty * 4) ^ swizzle<MODE>(k)];
            const float4 a1 = *(const float4*)&As[k][(64 + ty * 4) ^ swizzle<MODE>(k)];
            const float4 b0 = *(const float4*)&Bs[k][(tx * 4) ^ swizzle<MODE>(k)];
            const float2 b1 = *(const float2*)&Bs[k][(64 + tx * 2) ^ swizzle<MODE>(k)];
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[6] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y};
#pragma unroll
            for (int r = 0; r < 8; ++r)
#pragma unroll
                for (int c = 0; c < 6; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
        }
    }

    if (MODE == WEIGHT_GRAD && UPDATE && UPDATE_STAGING) copy_async_wait();  // this thread's staged U and v are there
    float squares[8];  // UPDATE: this thread's part of each of its rows' sums of squares
    for (int r = 0; r < 8; ++r) {
        squares[r] = 0.f;
        const int m = m0 + (r < 4 ? ty * 4 + r : 64 + ty * 4 + (r - 4));
        if (m >= M) continue;
        float* row = MODE == FIELDS ? C + (m / (block_w * maps)) * out_row + ((m / maps) % block_w) * out_pixel
                                        + (long long)(m % maps) * ldc + n0
                   : C + (long long)m * ldc + n0;
        float4 first = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
        float2 second = make_float2(acc[r][4], acc[r][5]);
        if (MODE == FIELDS && row_scale) {
            const float scale = row_scale[(long long)blockIdx.z * M + m];
            first.x *= scale; first.y *= scale; first.z *= scale; first.w *= scale;
            second.x *= scale; second.y *= scale;
        }
        if (MODE == WEIGHT_GRAD && UPDATE) {  // continue after the loop: the row's squares are summed by all 32 lanes
            const long long at = (long long)blockIdx.z * M + m;
            const float s = update.inverse_norms[at], radial = update.row_dots[at] * s;
            float* velocity = update.velocity + blockIdx.z * batch_c + (long long)m * ldc + n0;
            const float g[6] = {first.x, first.y, first.z, first.w, second.x, second.y};
            float u[6], v[6];
            const bool first_in = n0 + tx * 4 < N, second_in = n0 + 64 + tx * 2 < N;  // N % 4 == 0: whole vectors
            if (UPDATE_STAGING) {  // from this thread's own copies (waited for before the loop)
                if (first_in) {
                    const float4 u4 = *(const float4*)staged(0, 0, r, tid), v4 = *(const float4*)staged(1, 0, r, tid);
                    u[0] = u4.x; u[1] = u4.y; u[2] = u4.z; u[3] = u4.w;
                    v[0] = v4.x; v[1] = v4.y; v[2] = v4.z; v[3] = v4.w;
                }
                if (second_in) {
                    const float2 u2 = *(const float2*)staged(0, 1, r, tid), v2 = *(const float2*)staged(1, 1, r, tid);
                    u[4] = u2.x; u[5] = u2.y;
                    v[4] = v2.x; v[5] = v2.y;
                }
            } else {
                if (first_in) {
                    const float4 u4 = *(const float4*)(row + tx * 4), v4 = *(const float4*)(velocity + tx * 4);
                    u[0] = u4.x; u[1] = u4.y; u[2] = u4.z; u[3] = u4.w;
                    v[0] = v4.x; v[1] = v4.y; v[2] = v4.z; v[3] = v4.w;
                }
                if (second_in) {
                    const float2 u2 = *(const float2*)(row + 64 + tx * 2), v2 = *(const float2*)(velocity + 64 + tx * 2);
                    u[4] = u2.x; u[5] = u2.y;
                    v[4] = v2.x; v[5] = v2.y;
                }
            }
            for (int c = 0; c < 6; ++c) {
                if (c < 4 ? !first_in : !second_in) continue;
                const float step = update.momentum * v[c] - update.lr * (g[c] - u[c] * radial) * s;
                v[c] = step;
                u[c] += step;
                squares[r] += u[c] * u[c];
            }
            if (first_in) {
                *(float4*)(row + tx * 4) = make_float4(u[0], u[1], u[2], u[3]);
                *(float4*)(velocity + tx * 4) = make_float4(v[0], v[1], v[2], v[3]);
            }
            if (second_in) {
                *(float2*)(row + 64 + tx * 2) = make_float2(u[4], u[5]);
                *(float2*)(velocity + 64 + tx * 2) = make_float2(v[4], v[5]);
            }
            continue;
        }
        if (MODE == WEIGHT_GRAD) {  // columns past N are not there
            if (n0 + tx * 4 < N) *(float4*)(row + tx * 4) = first;
            if (n0 + 64 + tx * 2 < N) *(float2*)(row + 64 + tx * 2) = second;
            continue;
        }
        if (ACCUMULATE) {
            const float4 old_first = *(const float4*)(row + tx * 4);
            const float2 old_second = *(const float2*)(row + 64 + tx * 2);
            first.x += old_first.x; first.y += old_first.y; first.z += old_first.z; first.w += old_first.w;
            second.x += old_second.x; second.y += old_second.y;
        }
        *(float4*)(row + tx * 4) = first;
        *(float2*)(row + 64 + tx * 2) = second;
    }
    if (MODE == WEIGHT_GRAD && UPDATE)
        for (int r = 0; r < 8; ++r) {  // a row's 16 threads are 16 lanes of one warp (tx = lane % 16): sum over them
            float sum = squares[r];
            for (int offset = 8; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
            const int m = m0 + (r < 4 ? ty * 4 + r : 64 + ty * 4 + (r - 4));
            if (tx == 0 && m < M) update.partial_squares[((long long)blockIdx.z * M + m) * gridDim.y + blockIdx.y] = sum;
        }
}

template <int TRANSPOSE_A, int ACCUMULATE>
__global__ void __launch_bounds__(256) dasksae_simt_gemm(
    const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
    const int M, const int N, const int K,
    const long long lda, const long long batch_a, const long long ldb, const long long batch_b,
    const long long ldc, const long long batch_c)
{
    simt_gemm_body<TRANSPOSE_A, ACCUMULATE, PLAIN>(A, B, C, M, N, K, lda, batch_a, ldb, batch_b, ldc, batch_c,
                                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, nullptr);
}

// Two blocks an SM, as the plain kernels have with their 119-127 registers (the field rows' bookkeeping would
// take it to 143 and one block).
extern "C" __global__ void __launch_bounds__(256, 2) dasksae_simt_filter_forward(
    const float* __restrict__ W, const float* __restrict__ x, float* __restrict__ y,
    const int rows, const int batch, const int fan_in,
    const int blocks_w, const int step, const int field_rows, const int block_h, const int block_w, const int maps,
    const long long in_row, const long long in_pixel, const long long out_row, const long long out_pixel,
    const float* __restrict__ row_scale)
{
    simt_gemm_body<0, 0, FIELDS>(W, x, y, rows, batch, fan_in, fan_in, (long long)rows * fan_in, batch, 0, batch, 0,
                                 blocks_w, step, field_rows, block_h, block_w, maps, in_row, in_pixel, out_row,
                                 out_pixel, row_scale);
}

// The weight gradient as above taking the update step of raw (blocks, rows, fan_in) in place instead of writing it
// (UPDATE above): velocity like raw; inverse_norms (1/||U||) and row_dots (W . dL/dW) a value a row, blocks * rows;
// partial_squares (blocks * rows, gridDim.y).
extern "C" __global__ void __launch_bounds__(256, 2) dasksae_simt_filter_weight_grad_update(
    const float* __restrict__ codes, const float* __restrict__ x, const float* __restrict__ error,
    float* __restrict__ raw, float* __restrict__ velocity, const float* __restrict__ inverse_norms,
    const float* __restrict__ row_dots, float* __restrict__ partial_squares, const float lr, const float momentum,
    const int rows, const int fan_in, const int width, const int half,
    const int blocks_w, const int step, const int field_rows, const long long in_row, const long long in_pixel)
{
    simt_gemm_body<0, 0, WEIGHT_GRAD, 1>(codes, x, raw, rows, fan_in, width, width, (long long)rows * width, half, 0,
                                         fan_in, (long long)rows * fan_in, blocks_w, step, field_rows, 0, 0, 0, in_row,
                                         in_pixel, 0, 0, nullptr, error, half,
                                         Update{velocity, inverse_norms, row_dots, partial_squares, lr, momentum});
}

// inverse_norms[row] = 1 / sqrt(the sum of partial_squares[row, 0..tiles), in order): one thread a row
extern "C" __global__ void dasksae_inverse_norms_from_squares(const float* __restrict__ partial_squares,
                                                              float* __restrict__ inverse_norms, const int rows,
                                                              const int tiles)
{
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float sum = 0.f;
    for (int tile = 0; tile < tiles; ++tile) sum += partial_squares[row * tiles + tile];
    inverse_norms[row] = rsqrtf(sum);
}

// grad (blocks, rows, fan_in) = codes (blocks, rows, width) [x | error]^T with the fields read from the maps (WEIGHT_GRAD
// above): width = 2 half with an error map, half (the minibatch) without (error null).
extern "C" __global__ void __launch_bounds__(256, 2) dasksae_simt_filter_weight_grad(
    const float* __restrict__ codes, const float* __restrict__ x, const float* __restrict__ error,
    float* __restrict__ grad, const int rows, const int fan_in, const int width, const int half,
    const int blocks_w, const int step, const int field_rows, const long long in_row, const long long in_pixel)
{
    simt_gemm_body<0, 0, WEIGHT_GRAD>(codes, x, grad, rows, fan_in, width, width, (long long)rows * width, half, 0,
                                      fan_in, (long long)rows * fan_in, blocks_w, step, field_rows, 0, 0, 0, in_row,
                                      in_pixel, 0, 0, nullptr, error, half);
}
"""

# the template's instances; dasksae_simt_filter_forward and dasksae_simt_filter_weight_grad are extern "C"
SIMT_GEMM_KERNELS = [f"dasksae_simt_gemm<{t}, {a}>" for t in (0, 1) for a in (0, 1)]


def simt_gemm_source(swizzle: bool | None = None, prefetch: bool | None = None, staging: int | None = None) -> str:
    """The kernel's CUDA source (a C++ template: :data:`SIMT_GEMM_KERNELS` names its variants), the weight
    gradient's shared tiles swizzled or not, the fused update's rows prefetched or not and staged in shared memory
    or not (``None``: as ``DASKSAE_SMEM_SWIZZLE``, ``DASKSAE_UPDATE_PREFETCH`` and ``DASKSAE_UPDATE_STAGING`` say)."""
    return (f"#define SMEM_SWIZZLE {int(SMEM_SWIZZLE if swizzle is None else swizzle)}\n"
            f"#define UPDATE_PREFETCH {int(UPDATE_PREFETCH if prefetch is None else prefetch)}\n"
            f"#define UPDATE_STAGING {int(UPDATE_STAGING if staging is None else staging)}\n" + _SOURCE)


# float32 filter layers in our kernels straight from the maps (dasksae.kernels.local_filter, dasksae.tile_ops), "0":
# gather the fields into a buffer and multiply, as before session 18.  IMPLICIT_FIELDS: W x reads its fields from the
# input map and writes the output map, scaled (dasksae_simt_filter_forward: no gather, no block-rows pass).
# IMPLICIT_BACKWARD: the backward pass's U g_r and weight gradient read theirs from the input and error maps.
IMPLICIT_FIELDS = switch("DASKSAE_IMPLICIT_FIELDS") == "1"
IMPLICIT_BACKWARD = switch("DASKSAE_IMPLICIT_BACKWARD") == "1"
# the weight gradient's shared tiles XOR-swizzled (SMEM_SWIZZLE in the source): conflict-free stores of its scattered tiles
SMEM_SWIZZLE = switch("DASKSAE_SMEM_SWIZZLE") == "1"
# the weight gradient taking the SGD step in its epilogue (filter_weight_grad_update) instead of being written and read
FUSED_UPDATE = switch("DASKSAE_FUSED_UPDATE") == "1"
# opt-in: the fused update's blocks prefetch their rows of U and v into L2 before their products (UPDATE_PREFETCH)
UPDATE_PREFETCH = switch("DASKSAE_UPDATE_PREFETCH") == "1"
# the fused update's blocks copy their U and v into shared memory (cp.async) while their products run (where two fit an
# SM): issued at the block's start (1), behind its first operand loads (after-loads) or in its first stage (first-stage)
STAGING_POSITIONS = {"0": 0, "1": 1, "after-loads": 2, "first-stage": 3}  # the switch's values as the source's
UPDATE_STAGING = STAGING_POSITIONS[switch("DASKSAE_UPDATE_STAGING")]
STAGE_BYTES = 2 * 8 * THREADS * 6 * 4  # the source's STAGE_FLOATS: U and v, 8 rows of 6 columns for each thread


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


def _module():
    """The compiled source with the switches as they are now (tests set them on this module)."""
    return _compiled_module(SMEM_SWIZZLE, UPDATE_PREFETCH, UPDATE_STAGING)


@functools.lru_cache(maxsize=None)
def _compiled_module(swizzle: bool, prefetch: bool, staging: int):
    import cupy

    return cupy.RawModule(code=simt_gemm_source(swizzle, prefetch, staging), options=("-std=c++14",),
                          name_expressions=SIMT_GEMM_KERNELS)


def batched_gemm(a, b, out, transpose_a: bool, m: int, n: int, k: int, accumulate: bool) -> None:
    """``out[i] (+)= op(a[i]) @ b[i]`` on the current stream (the arrays must :func:`fits`)."""
    kernel = _module().get_function(f"dasksae_simt_gemm<{int(transpose_a)}, {int(accumulate)}>")
    count = a.shape[0]
    grid = (-(-m // TILE_M), n // TILE_N, count)
    elements = [(x.strides[1] // 4, x.strides[0] // 4) for x in (a, b, out)]
    kernel(grid, (THREADS,), (a, b, out, numpy.int32(m), numpy.int32(n), numpy.int32(k),
                              numpy.int64(elements[0][0]), numpy.int64(elements[0][1]),
                              numpy.int64(elements[1][0]), numpy.int64(elements[1][1]),
                              numpy.int64(elements[2][0]), numpy.int64(elements[2][1])))


def field_geometry(x_shape, out_shape, field: int, step: int, block_h: int, block_w: int) -> dict:
    """The :data:`_SOURCE` kernel's ``FIELDS`` arguments for ``W x`` from a map of ``x_shape (H, W, C, N)`` into one
    of ``out_shape (H', W', maps, N)`` (blocks in row-major order, ``blocks_w`` a row)."""
    height, width, channels, batch = x_shape
    _, out_width, maps, _ = out_shape
    return {"blocks_w": out_width // block_w, "step": step, "field_rows": field * channels, "block_h": block_h,
            "block_w": block_w, "maps": maps, "in_row": width * channels * batch, "in_pixel": channels * batch,
            "out_row": out_width * maps * batch, "out_pixel": maps * batch}


def fields_fit(x, weights, out, row_scale, field: int, step: int, block_h: int, block_w: int) -> bool:
    """Whether :func:`filter_forward` takes this product: float32 C-contiguous 16-byte-aligned maps and weights,
    a minibatch of whole 96s, ``f*f*C % 16 == 0``, ``rows = block_h*block_w*maps``, and ``row_scale`` (if any) float32
    and contiguous."""
    count, rows, fan_in = weights.shape
    if x.ndim != 4 or out.ndim != 4 or x.shape[3] % TILE_N or out.shape[3] != x.shape[3] or fan_in % TILE_K:
        return False
    if fan_in != field * field * x.shape[2] or rows != block_h * block_w * out.shape[2] or count > 65535:
        return False
    if count != (out.shape[0] // block_h) * (out.shape[1] // block_w):
        return False
    for array in (x, weights, out) + (() if row_scale is None else (row_scale,)):
        if array.dtype.name != "float32" or not array.flags.c_contiguous or array.data.ptr % 16:
            return False
    return row_scale is None or row_scale.size == count * rows


def filter_forward(x, weights, out, field: int, step: int, block_h: int, block_w: int, row_scale=None) -> None:
    """``out = diag(row_scale) W x`` for one chunk of block rows, fields read from ``x``'s map and outputs written
    into ``out``'s in the kernel itself (``FIELDS``; the arrays must :func:`fields_fit`)."""
    grid, arguments = typed_launch(forward_launch, 4, x.shape, out.shape, weights.shape, field, step, block_h, block_w)
    scale = _NULL if row_scale is None else row_scale
    _module().get_function("dasksae_simt_filter_forward")(grid, (THREADS,), (weights, x, out, *arguments, scale))


_NULL = numpy.uint64(0)  # a null pointer argument


def forward_launch(x_shape, out_shape, weights_shape, field: int, step: int, block_h: int, block_w: int):
    """``(grid, scalar arguments between the three arrays and row_scale)`` of ``dasksae_simt_filter_forward``."""
    count, rows, fan_in = weights_shape
    batch = x_shape[3]
    g = field_geometry(x_shape, out_shape, field, step, block_h, block_w)
    return (-(-rows // TILE_M), batch // TILE_N, count), (
        rows, batch, fan_in, *(g[name] for name in ("blocks_w", "step", "field_rows", "block_h", "block_w", "maps",
                                                    "in_row", "in_pixel", "out_row", "out_pixel")))


@functools.lru_cache(maxsize=256)
def typed_launch(make, wide: int, *shapes):
    """``make(*shapes)``'s grid and scalar arguments as the kernel's types (``int``, the last ``wide`` ``long
    long``), made once for these shapes: a launch a chunk of block rows reuses them."""
    grid, arguments = make(*shapes)
    return grid, tuple(numpy.int32(a) for a in arguments[:-wide]) + tuple(numpy.int64(a) for a in arguments[-wide:])


def maps_fit(*maps) -> bool:
    """Float32 C-contiguous 16-byte-aligned ``(H, W, C, N)`` maps (``None`` skipped) of one shape, ``N`` whole 96s."""
    maps = [x for x in maps if x is not None]
    return all(x.ndim == 4 and x.shape == maps[0].shape and x.shape[3] % TILE_N == 0 and x.dtype.name == "float32"
               and x.flags.c_contiguous and x.data.ptr % 16 == 0 for x in maps)


def _rows_fit(*arrays) -> bool:
    """Float32 C-contiguous 16-byte-aligned arrays of blocks' rows ``(count, rows, columns)``, ``count`` a grid's z."""
    return all(a.ndim == 3 and a.shape[0] <= 65535 and a.dtype.name == "float32" and a.flags.c_contiguous
               and a.data.ptr % 16 == 0 for a in arrays)


def as_block_map(rows, blocks_w: int):
    """Block rows ``(count, rows, N)`` as the output map :func:`filter_forward` writes with one-position blocks of
    ``rows`` maps: ``(count / blocks_w, blocks_w, rows, N)``, a view."""
    count, width, batch = rows.shape
    return rows.reshape(count // blocks_w, blocks_w, width, batch)


def fields_product(x, weight_rows, out, field: int, step: int, blocks_w: int) -> None:
    """``out[b] = W[b] fields_b(x)``, block ``b``'s fields read from the map ``x``, its rows written as ``out``'s block
    rows: :func:`filter_forward` into :func:`as_block_map` (the arrays must :func:`fields_fit` so)."""
    filter_forward(x, weight_rows, as_block_map(out, blocks_w), field, step, 1, 1)


def weight_grad_fits(codes, x, error, out, field: int, blocks_w: int) -> bool:
    """Whether :func:`filter_weight_grad` takes ``out = codes [fields(x) | fields(error)]^T``: ``codes (count, rows,
    width)`` with ``width`` the minibatch (``error`` ``None``) or twice it, ``out (count, rows, f*f*C)`` with
    ``f*f*C % 4 == 0``, the maps of one shape."""
    count, rows, width = codes.shape
    if not (maps_fit(x, error) and _rows_fit(codes, out)) or count % blocks_w:
        return False
    batch, fan_in = x.shape[3], field * field * x.shape[2]
    offsets = field * x.shape[1] * x.shape[2] * batch  # a field's reach in the map, in 32 bits in the kernel
    return (width == batch * (1 if error is None else 2) and fan_in % 4 == 0 and out.shape == (count, rows, fan_in)
            and offsets < 2**31)


def filter_weight_grad(codes, x, error, out, field: int, step: int, blocks_w: int) -> None:
    """``out[b] = codes[b] [fields_b(x) | fields_b(error)]^T`` (or ``codes[b] fields_b(x)^T`` without ``error``), the
    fields read from the maps in the kernel (``WEIGHT_GRAD``; the arrays must :func:`weight_grad_fits`)."""
    grid, arguments = typed_launch(weight_grad_launch, 2, codes.shape, x.shape, field, step, blocks_w)
    _module().get_function("dasksae_simt_filter_weight_grad")(grid, (THREADS,), (
        codes, x, _NULL if error is None else error, out, *arguments))


# opt-in: the backward's chunks sized for the fewest waves of our kernels' blocks (local_filter.wave_rows)
WAVE_CHUNKS = switch("DASKSAE_WAVE_CHUNKS") == "1"


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: int) -> int:
    import cupy

    return cupy.cuda.Device(device).attributes["MultiProcessorCount"]


def wave_slots() -> int:
    """The blocks of our kernels the current GPU runs at once (two an SM: their 256 threads and up to 128
    registers) where ``DASKSAE_WAVE_CHUNKS=1``; 0 otherwise (chunks sized by memory alone)."""
    if not WAVE_CHUNKS:
        return 0
    import cupy

    return 2 * _multiprocessors(cupy.cuda.Device().id)


def update_fits(raw, velocity, inverse_norms, row_dots) -> bool:
    """Whether :func:`filter_weight_grad_update` takes these: ``raw`` and ``velocity`` float32 C-contiguous
    16-byte-aligned ``(count, rows, fan_in)`` blocks' rows, ``inverse_norms`` and ``row_dots`` float32 and contiguous,
    a value a row."""
    if not _rows_fit(raw, velocity) or velocity.shape != raw.shape:
        return False
    rows = raw.shape[0] * raw.shape[1]
    return all(a.dtype.name == "float32" and a.flags.c_contiguous and a.size == rows for a in (inverse_norms, row_dots))


def filter_weight_grad_update(codes, x, error, raw, velocity, inverse_norms, row_dots, lr: float, momentum: float,
                              field: int, step: int, blocks_w: int) -> None:
    """The SGD-with-momentum step of the unit-norm rows ``raw`` (``W = U/||U||``), in place, with the weight gradient
    ``codes [fields(x) | fields(error)]^T`` as :func:`filter_weight_grad` computes it, taken in the kernel's epilogue
    instead of written out (``UPDATE`` in the source): what :func:`~dasksae.kernels.normalize.unit_rows_sgd` does
    with ``refresh_norms``, given ``row_dots`` (:func:`~dasksae.kernels.normalize.radial_dots`), without the
    gradient's write and read.  ``inverse_norms`` (``1/||U||`` before the step) then holds the new rows'.  The arrays
    must :func:`weight_grad_fits` (``raw`` as the output) and :func:`update_fits`."""
    import cupy

    grid, arguments = typed_launch(weight_grad_launch, 2, codes.shape, x.shape, field, step, blocks_w)
    rows = raw.shape[0] * raw.shape[1]
    partial_squares = cupy.empty((rows, grid[1]), dtype=cupy.float32)
    device = cupy.cuda.Device().id
    staging = int(UPDATE_STAGING) if staged_blocks_fit(device) else 0
    module = _compiled_module(SMEM_SWIZZLE, UPDATE_PREFETCH, staging)
    _update_kernel(module, device, staging)(grid, (THREADS,), (
        codes, x, _NULL if error is None else error, raw, velocity, inverse_norms, row_dots, partial_squares,
        numpy.float32(lr), numpy.float32(momentum), *arguments), shared_mem=STAGE_BYTES if staging else 0)
    inverse_norms_from_squares(partial_squares, inverse_norms, module)


def inverse_norms_from_squares(partial_squares, inverse_norms, module=None) -> None:
    """``inverse_norms[row] = 1 / sqrt(partial_squares[row].sum())``, each row's partial sums of squares (one a tile of
    columns, ``(rows, tiles)``) added in order: the new rows' norms after a fused update."""
    rows, tiles = partial_squares.shape
    (module or _module()).get_function("dasksae_inverse_norms_from_squares")((-(-rows // 256),), (256,), (
        partial_squares, inverse_norms, numpy.int32(rows), numpy.int32(tiles)))


STATIC_SHARED_BYTES = 14592  # the kernels' As and Bs tiles (bench/kernel_registers.py prints it)


@functools.lru_cache(maxsize=None)
def staged_blocks_fit(device: int) -> bool:
    """Whether two blocks of the staged update kernel fit an SM of ``device`` (``DASKSAE_UPDATE_STAGING``): their
    static tiles and :data:`STAGE_BYTES` each, and the 1 KiB a block the driver keeps (228 KiB an SM on an H100
    or H200; an A100's 164 or a consumer card's 100 do not), within what a block may opt in to.  Elsewhere the
    update runs unstaged."""
    import cupy

    block = STATIC_SHARED_BYTES + STAGE_BYTES
    per_block = cupy.cuda.runtime.deviceGetAttribute(97, device)  # cudaDevAttrMaxSharedMemoryPerBlockOptin
    per_multiprocessor = cupy.cuda.runtime.deviceGetAttribute(81, device)  # ...MaxSharedMemoryPerMultiprocessor
    return per_block >= block and per_multiprocessor >= 2 * (block + 1024)


@functools.lru_cache(maxsize=None)
def _update_kernel(module, device: int, staging: int):
    """``dasksae_simt_filter_weight_grad_update`` of ``module`` on ``device``, set up once; staged
    (``DASKSAE_UPDATE_STAGING`` not 0, compiled into ``module``), allowed its :data:`STAGE_BYTES` of dynamic shared
    memory (over the 48 KiB a launch may take unasked) and preferring shared memory to L1, so that two blocks fit
    an SM."""
    kernel = module.get_function("dasksae_simt_filter_weight_grad_update")
    if staging:
        kernel.max_dynamic_shared_size_bytes = STAGE_BYTES
        kernel.preferred_shared_memory_carveout = 100
    return kernel


def weight_grad_launch(codes_shape, x_shape, field: int, step: int, blocks_w: int):
    """``(grid, scalar arguments after the four arrays)`` of ``dasksae_simt_filter_weight_grad``."""
    count, rows, width = codes_shape
    height, map_width, channels, batch = x_shape
    fan_in = field * field * channels
    return (-(-rows // TILE_M), -(-fan_in // TILE_N), count), (
        rows, fan_in, width, batch, blocks_w, step, field * channels, map_width * channels * batch, channels * batch)
