"""The bfloat16 ``W x`` on tensor cores, its fields read straight from the input map and its outputs written into the
output map (CuPy).

In bfloat16 a filter layer's ``W x`` (and the backward's ``U g_r``) was a
gather of every block's fields into a buffer, cuBLAS's batched GEMM into
block rows, and a pass writing those into the map: on the H200, coates200's
three stages took 1.41 ms of cuBLAS (about 200 TFLOP/s of 786,
``bench/results/session23/tables``) plus the gathers (1.30 ms a step with
``U g_r``'s).  This kernel is the float32 path's
``dasksae_simt_filter_forward`` (:mod:`dasksae.kernels.simt_gemm`, the same
grid, arguments and output layout) on tensor cores: ``mma.sync.m16n8k16``
with bfloat16 operands and float32 sums, as :mod:`.mma_update`.

The product reads each bfloat16 weight once for 2 M FLOPs (M = 96: 96
FLOPs a byte, under the H200's 786 TFLOP/s / 4.8 TB/s), so it streams the
weights: the inner dimension ``f*f*C`` goes ``TILE_K`` at a time through
``STAGES`` buffers of shared memory filled with ``cp.async``, ``STAGES -
1`` tiles in flight while one is multiplied (:data:`VARIANTS`).  The weights' rows are the
``A`` tile as stored; a field row holds its M minibatch values contiguous in
the map, so the ``B`` tile is stored ``k``-major and its fragments taken with
``ldmatrix.trans``.  Each product is scaled by its row's ``row_scale``
(``1/||U||``) and written where the neuron sits in the output map.

On a GPU of compute capability 9.0 (the H100 and H200) the same product runs
on ``wgmma`` by default since session 42 (``DASKSAE_WGMMA_FORWARD``,
:data:`WGMMA_VARIANTS`, :mod:`.wgmma`): each of the block's two warpgroups
takes 64 rows by the 96 columns as ``m64n96k16`` products read by descriptor
from shared memory, where the tiles lie in CUTLASS's swizzled layouts (a
weight row's 128 bytes in one 128-byte row of shared memory, so that the
copies' L2 requests stay whole).  On the H100, coates200's stages take 1.360
ms against ``mma.sync``'s 1.521.

Its source also runs on the CPU under g++ (``tests/test_mma_update_on_cpu.py``'s
shim: ``mma.sync`` and ``ldmatrix`` emulated from the PTX ISA's fragment
layouts, ``wgmma`` through its descriptors), checked against NumPy.
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from . import mma_update, wgmma
from .mma_update import MMA_HELPERS, SPLIT_TF32_HELPERS, aligned, split_terms
from .simt_gemm import TILE_M, TILE_N, as_block_map, forward_launch, typed_launch

# W x and U g_r in bfloat16 in this kernel where the arrays fit and the minibatch is one it takes
# (local_filter.forward_on_tensor_cores, minibatch_on_tensor_cores): "auto", "1" or "0"
TENSOR_CORE_FORWARD = switch("DASKSAE_TENSOR_CORE_FORWARD")
# (inner terms a tile of shared memory, tiles of shared memory a block: STAGES - 1 in flight while one is multiplied)
# On the H200 (session 23, coates200's stages, M=96): k32x4 0.42 / 0.80 / 0.60 ms, k64x3 0.38 / 0.71 / 0.53 ms,
# k32x6 0.42 / 0.82 / 0.61 ms (bench/results/session23/variants): 64 inner terms read each weight row's 128 bytes at a
# time instead of 64.
VARIANTS = {"k32x4": (32, 4), "k64x3": (64, 3), "k32x6": (32, 6)}
VARIANT = "k64x3"  # what the training takes
B_ROW = TILE_N + 8  # a shared field row: 96 bfloat16 values and 8 of padding (208 bytes: an ldmatrix's 8 rows in
# distinct 16-byte bank groups); in float32 (split TF32) 96 floats and 8 (B's fragment loads (t, g) in banks 8t + g)
# bfloat16 on wgmma (kernels/wgmma.py; sm_90 only): (TILE_K, STAGES, WGMMA_PENDING: commit groups of products left in
# flight across a k-tile's barrier, so that STAGES - 1 - WGMMA_PENDING tiles of copies are in flight).  The tiles are
# in CUTLASS's swizzled layouts (no padding): a warp copies 4 whole weight rows of 128 bytes, each into one 128-byte
# row of shared memory.  On the H100 (session 42, coates200's stages, M=96; bench/results/session42/swizzled) w64x3
# took 1.360 ms against mma.sync's 1.521, w64x4 1.367.  Layouts without swizzling took 2.65-2.96 ms whatever their
# pipeline (docs/gpu-performance.md: their copies were split into single-sector L2 requests)
WGMMA_VARIANTS = {"w64x3-swizzled": (64, 3, 0), "w64x4-swizzled": (64, 4, 1), "w64x3-half": (64, 3, 0)}
# (session 44, for benchmarks: DASKSAE_WGMMA_FORWARD=w64x3-half) a variant's rows a block where not TILE_M: w64x3-half
# is w64x3-swizzled in blocks of one warpgroup, 64 rows (128 threads, 60 KiB, three blocks an SM), twice the blocks of
# a grid.  A 2x2 tile's grids of coates200 (M=96) are 529, 400-441 and 324 blocks of 128 rows: 2.00, 1.5-1.67 and 1.23
# waves of an H100's 264 blocks at once, so their last wave is part empty.  On an H100 (bench/results/session44/half/,
# half-row/) taking it where 128-row blocks would fill their last wave less than 80% took the 4 worker threads' W x
# from 3.30 to 3.18 ms a step, and their step from 28.6 ms to 29.1 (within the runs' spread: not kept); on one tile's
# grids it took W x in 1.447 ms against 1.348
WGMMA_TILE_ROWS = {"w64x3-half": 64}
# "1" (the default since session 42: WGMMA_VARIANT) or a variant of WGMMA_VARIANTS: W x and U g_r on wgmma where the
# GPU runs it (compute capability 9.0), else on mma.sync (VARIANT); "0": on mma.sync
WGMMA_FORWARD = switch("DASKSAE_WGMMA_FORWARD")
WGMMA_VARIANT = "w64x3-swizzled"
# the tiles of the float32 kernel on split TF32 tensor cores (kernels/mma_float32.py): k32x3 takes 93 KiB a block
SPLIT_VARIANTS = {"k32x3": (32, 3)}
# w32-split-2 (session 49; mma_float32's default until session 53) the same on wgmma (sm_90): k-tiles of 32 staged
# through registers, split into their TF32 terms and B transposed to K-major as they are staged, two stages (112 KiB),
# k-tile s + 1 split and staged while k-tile s's products run, one block of 256 threads an SM (the partial sums and the
# next k-tile's loads take more than 128 registers).  w32-a-registers-hoisted (sessions 51 and 52; mma_float32's
# default since session 53): A (the weights) split into wgmma's register fragments instead of staged in shared memory:
# no A tiles (a stage 24 KiB, B's two terms), and the tensor cores read only B from shared memory (its reads by both
# warpgroups' three products a k-step and the split's stores were 176 KiB a k-tile, 96 without A).  Each thread loads
# its two rows' 8 values of the k-tile (two float4s a row), so k-step s takes the k-tile's inner terms 8 t + 2 s and
# 8 t + 2 s + 1 (t = lane % 4) as its columns t and t + 4, and B's field rows are staged at the places that
# permutation gives them; and the fetch keeps B's address from k-tile to k-tile (a pointer, the field row's place a
# counter) instead of recomputing it, with a division, each k-tile.  On the H100 (session 53,
# bench/results/session53/next/) W x over coates200's stages took 3.74 ms against w32-split-2's 5.29.  (Gone, having
# lost there: w32-hoisted, only the kept addresses, 4.53 ms; w32-a-registers, only A in registers, 4.31; and
# w32-a-registers-sectors, B's loads by whole 32-byte sectors, 3.83; before them session 48's w32-split, one stage;
# session 49's w32-async-3 and -4, cp.async into raw stages; session 50's w32-regs-2, two register sets of loads.)
# (TILE_K, STAGES, A_REGISTERS)
SPLIT_WGMMA_VARIANTS = {"w32-split-2": (32, 2, 0), "w32-a-registers-hoisted": (32, 2, 1)}
SPLIT_A_PAD = 4  # its shared weight row: TILE_K floats and 4 (A's fragment loads (g, t) in banks 4g + t: distinct)


def minibatch_on_tensor_cores(setting: str, batch: int) -> bool:
    """Whether a tensor-core kernel whose switch (``DASKSAE_TENSOR_CORE_FORWARD``, ``DASKSAE_TENSOR_CORE_TRANSPOSE``)
    is ``setting`` takes a minibatch of ``batch``: ``auto`` (the default) whole 96s, ``1`` whole 8s (the last tile
    of 96 columns part full), ``0`` none.  On an H200 (session 25, coates200's in-process bfloat16 step, this kernel
    and the transpose on against both off) they won or tied at whole 96s (M=192 38.6 against 40.5 ms, M=576 107.4
    against 107.1) and lost with a part-full last tile (M=128 32.6 against 30.8, M=512 100.8 against 96.5;
    ``bench/results/session25/next``, ``second``); at M=96 the forward and the transpose each won (sessions 23, 24)."""
    if setting == "auto":
        return batch % TILE_N == 0
    return setting == "1" and batch % 8 == 0


def shared_bytes(variant: str = VARIANT, split_tf32: bool = False) -> int:
    """Dynamic shared memory a block: ``STAGES`` tiles of the weights (128 rows of ``TILE_K`` values and 8 of padding;
    float32 ones with ``split_tf32``, and 4; on ``wgmma`` none) and of the fields (``TILE_K`` rows of 96 and 8; on
    ``wgmma`` none)."""
    if split_tf32 and variant in SPLIT_WGMMA_VARIANTS:  # each operand's two terms a stage, no padding
        tile_k, stages, a_registers = SPLIT_WGMMA_VARIANTS[variant]
        return stages * 2 * ((0 if a_registers else TILE_M) + TILE_N) * tile_k * 4
    if split_tf32:
        tile_k, stages = SPLIT_VARIANTS[variant]
        return stages * (TILE_M * (tile_k + SPLIT_A_PAD) + tile_k * B_ROW) * 4
    if variant in WGMMA_VARIANTS:  # no padding
        tile_k, stages, _ = WGMMA_VARIANTS[variant]
        return stages * (tile_rows(variant) + TILE_N) * tile_k * 2
    tile_k, stages = VARIANTS[variant]
    return stages * (TILE_M * (tile_k + 8) + tile_k * B_ROW) * 2


def tile_rows(variant: str) -> int:
    """The rows of ``W`` a block of ``variant`` takes: 128 (simt_gemm's ``TILE_M``), or its :data:`WGMMA_TILE_ROWS`."""
    return WGMMA_TILE_ROWS.get(variant, TILE_M)


def block_threads(variant: str) -> int:
    """The threads of a block of ``variant``: two a row (a warpgroup to each 64 rows on ``wgmma``)."""
    return 2 * tile_rows(variant)


_SOURCE = r"""
#ifndef TILE_M
#define TILE_M 128  // simt_gemm's (a variant's: WGMMA_TILE_ROWS)
#endif
#define FORWARD_THREADS (2 * TILE_M)
#ifndef FORWARD_MIN_BLOCKS  // (a variant's: SPLIT_WGMMA_VARIANTS take one)
#define FORWARD_MIN_BLOCKS (TILE_M == 128 ? 2 : 3)
#endif
#define TILE_N 96
// TILE_K, STAGES, A_ROW (TILE_K + 8; float32: + 4; wgmma: TILE_K), B_ROW, SHARED_BYTES: from mma_forward_source.
// SPLIT_TF32 (kernels/mma_float32.py's): float32 operands, each split into two TF32 terms, in
// dasksae_tf32x3_filter_forward; WGMMA: bfloat16 ones on wgmma in dasksae_wgmma_filter_forward, WGMMA_PENDING
// its commit groups left in flight across a k-tile's barrier (STAGES - 1 - WGMMA_PENDING tiles of copies in flight);
// else bfloat16 ones on mma.sync in dasksae_mma_filter_forward
#if SPLIT_TF32 && WGMMA  // float32 split into TF32 terms on wgmma: each warpgroup 64 rows by 96 columns, m64n96k8
#define OPERAND float
#define FORWARD_KERNEL dasksae_wgmma_tf32x3_filter_forward
#define K_STEP 8
#define ROW_PARTS 1
#define COLUMN_PARTS 12
#elif SPLIT_TF32
#define OPERAND float
#define FORWARD_KERNEL dasksae_tf32x3_filter_forward
#define K_STEP 8  // inner terms a tensor-core product
#define ROW_PARTS 2  // a warp's sums: 2 x 16 rows by 6 x 8 columns
#define COLUMN_PARTS 6
#elif WGMMA  // bfloat16 on wgmma (kernels/wgmma.py): each warpgroup 64 rows by 96 columns, m64n96k16 from shared memory
#define OPERAND unsigned short
#define FORWARD_KERNEL dasksae_wgmma_filter_forward
#define K_STEP 16
#define ROW_PARTS 1  // a warp's sums: 16 rows by 12 x 8 columns
#define COLUMN_PARTS 12
#else
#define OPERAND unsigned short
#define FORWARD_KERNEL dasksae_mma_filter_forward
#define K_STEP 16
#define ROW_PARTS 2
#define COLUMN_PARTS 6
#endif
#define PER_COPY (16 / (int)sizeof(OPERAND))  // operands a 16-byte copy
#define B_COPIES (TILE_N / PER_COPY)  // copies a field row of 96 columns
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
extern __shared__ __align__(1024) unsigned char forward_shared[];  // (wgmma's swizzled atoms: 1024-byte aligned)
#else  // the CPU tests' g++: the block's threads share a static array
static unsigned char forward_shared[SHARED_BYTES] __attribute__((aligned(1024)));
#endif

// out = diag(row_scale) W x for a chunk of filter blocks: weights (count, rows, fan_in) OPERAND; x the input map
// (H, W, C, batch) OPERAND, block i = (p, q)'s field row k (k < fan_in = f*f*C) at (p*in_row + q*in_pixel)*step +
// (k / field_rows)*in_row + (k % field_rows)*batch; out the output map (H', W', maps, batch) float32, row m of block i
// being neuron (m / (block_w*maps), (m / maps) % block_w, m % maps) of the block, its pixel at out_pixel, its map
// row at out_row; row_scale (count * rows) or null.  The arguments of dasksae_simt_filter_forward, in its order.
// Takes batch in whole PER_COPYs (the last tile of 96 columns may be part full: its columns past batch are read as
// zeros and not written), fan_in in whole PER_COPYs, 16-byte aligned maps and rows; SHARED_BYTES of dynamic shared
// memory.
// LAYER_GEOMETRY (mma_forward_source's, given a layer): its rows, batch, fan_in, field_rows, block_w, maps and in_row
// compiled in, so that the loads' and the output's index divisions and products become shifts and multiplications by
// constants; the arguments of those names are then not read (they must be the same)
extern "C" __global__ void __launch_bounds__(FORWARD_THREADS, FORWARD_MIN_BLOCKS) FORWARD_KERNEL(
    const OPERAND* __restrict__ weights, const OPERAND* __restrict__ x, float* __restrict__ out,
    const int rows_argument, const int batch_argument, const int fan_in_argument, const int blocks_w, const int step,
    const int field_rows_argument, const int block_h, const int block_w_argument, const int maps_argument,
    const long long in_row_argument, const long long in_pixel, const long long out_row, const long long out_pixel,
    const float* __restrict__ row_scale)
{
#ifdef LAYER_GEOMETRY
    const int rows = LAYER_ROWS, batch = LAYER_BATCH, fan_in = LAYER_FAN_IN, field_rows = LAYER_FIELD_ROWS;
    const int block_w = LAYER_BLOCK_W, maps = LAYER_MAPS;
    const long long in_row = LAYER_IN_ROW;
#else
    const int rows = rows_argument, batch = batch_argument, fan_in = fan_in_argument, field_rows = field_rows_argument;
    const int block_w = block_w_argument, maps = maps_argument;
    const long long in_row = in_row_argument;
#endif
    OPERAND(*As)[TILE_M * A_ROW] = (OPERAND(*)[TILE_M * A_ROW])forward_shared;  // [STAGES]
    OPERAND(*Bs)[TILE_K * B_ROW] =
        (OPERAND(*)[TILE_K * B_ROW])(forward_shared + STAGES * TILE_M * A_ROW * sizeof(OPERAND));
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
#if !WGMMA
    const int warp_m = warp % 4, warp_n = warp / 4;
#endif
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    const long long block = blockIdx.z, p = block / blocks_w, q = block % blocks_w;
    weights += block * rows * (long long)fan_in;
    x += (p * in_row + q * in_pixel) * step + n0;
#if !(WGMMA && SPLIT_TF32)  // (the split on wgmma stages its k-tiles through registers, below)
    auto load = [&](const int buffer, const int k0) {  // the k-tile at k0 into buffer: 16 bytes a copy
#if WGMMA  // CUTLASS's canonical swizzled layouts (kernels/wgmma.py): A K-major in 128-byte swizzled rows, row r at
        // 128 r, its 16-byte chunk part at 16 (part ^ r % 8); B MN-major in 64-byte swizzled rows, field row k's 32
        // columns part / 4 at 4096 (part / 4) + 512 (k / 8) + 64 (k % 8), its chunk part % 4 at 16 (part % 4 ^ k % 8
        // / 2).  Copy c is A's (c / 8, c % 8) and B's (c / 12, c % 12): a warp reads 4 whole weight rows and writes
        // each into one 128-byte row of shared memory, which keeps the copies' L2 requests whole
        for (int c = tid; c < TILE_M * 8; c += FORWARD_THREADS) {
            const int r = c / 8, part = c % 8, k = k0 + part * 8, m = m0 + r;
            const bool whole = m < rows && k < fan_in;
            copy_16(&As[buffer][k_major_128_at(r, part)], weights + (whole ? (long long)m * fan_in + k : 0), whole);
        }
        for (int c = tid; c < TILE_K * B_COPIES; c += FORWARD_THREADS) {
            const int r = c / B_COPIES, part = c % B_COPIES, k = k0 + r, safe = k < fan_in ? k : 0;
            const bool in = k < fan_in && n0 + part * 8 < batch;
            const long long field = (safe / field_rows) * in_row + (long long)(safe % field_rows) * batch;
            copy_16(&Bs[buffer][mn_major_64_at(r, part)], x + field + (in ? part * 8 : 0), in);
        }
#else
        for (int c = tid; c < TILE_M * (TILE_K / PER_COPY); c += 256) {  // A: 128 rows of TILE_K / PER_COPY copies
            const int r = c / (TILE_K / PER_COPY), part = c % (TILE_K / PER_COPY), k = k0 + part * PER_COPY, m = m0 + r;
            const bool whole = m < rows && k < fan_in;  // fan_in % PER_COPY == 0: a copy is whole or past the end
            copy_16((unsigned short*)&As[buffer][r * A_ROW + part * PER_COPY],
                    (const unsigned short*)(weights + (whole ? (long long)m * fan_in + k : 0)), whole);
        }
        for (int c = tid; c < TILE_K * B_COPIES; c += 256) {  // B: TILE_K field rows of B_COPIES copies (batch in
            const int r = c / B_COPIES, part = c % B_COPIES, k = k0 + r, safe = k < fan_in ? k : 0;  // whole copies:
            const bool in = k < fan_in && n0 + part * PER_COPY < batch;  // a copy is whole or past the end; one past
            copy_16((unsigned short*)&Bs[buffer][r * B_ROW + part * PER_COPY],  // it reads nothing, in the map)
                    (const unsigned short*)(x + (safe / field_rows) * in_row + (long long)(safe % field_rows) * batch +
                                            (in ? part * PER_COPY : 0)), in);
        }
#endif
    };
#endif

    float acc[ROW_PARTS][COLUMN_PARTS][4];
    for (int i = 0; i < ROW_PARTS; ++i)
        for (int j = 0; j < COLUMN_PARTS; ++j)
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    const int tiles = (fan_in + TILE_K - 1) / TILE_K;
#if WGMMA && SPLIT_TF32
    // float32 weights (A, K-major) and fields (B) through registers: each k-tile of 32 inner terms loaded a float4 at
    // a time (A's 4 a thread, B's 3), split as it is staged into its big and small TF32 terms (split_tf32), each term
    // in a K-major tile of 128-byte swizzled rows (A big, A small, B big, B small: 56 KiB, one stage).  TF32 wgmma
    // takes no MN-major operand, so B, whose field rows hold the minibatch contiguous, is transposed as it is staged:
    // a warp takes one quad of columns of all 32 field rows of the k-tile (a float4 from each), and each of its four
    // stores fills one 128-byte row of B's tile (no bank conflicts).  The next k-tile's loads are in flight while this
    // one's products run.  A k-step of 8 takes small x big, big x small, big x big into partial sums started from zero
    // at the k-tile's first product; after the k-tile they are added to the sums by float32 adds rounded to nearest
    // (the tensor cores' own sums truncate: fed a fan-in of 3200 they were 14x the SIMT kernel's error, session 38).
    // TERMS 1 (plain TF32): big x big into the sums
    static_assert(TILE_K == 32, "the split's tiles take rows of 32 float32 values, 128 bytes");
    SET_SHARED_ARENA(forward_shared);
    const int group = warp / 4;  // the warpgroup
    constexpr int A_STAGED = A_REGISTERS ? 0 : TILE_M;  // (A in registers: no tiles of it)
    float* const a_big = (float*)forward_shared;
    float* const a_small = a_big + A_STAGED * TILE_K;
    float* const b_big = a_small + A_STAGED * TILE_K;
    float* const b_small = b_big + TILE_N * TILE_K;
    constexpr int STAGE_FLOATS = 2 * (A_STAGED + TILE_N) * TILE_K;  // a stage's tiles (STAGES 2: the second's after)
    constexpr int A_LOADS = TILE_M * (TILE_K / 4) / FORWARD_THREADS, B_LOADS = TILE_K * (TILE_N / 4) / FORWARD_THREADS;
    static_assert(A_LOADS * FORWARD_THREADS == TILE_M * TILE_K / 4 && B_LOADS * FORWARD_THREADS == TILE_K * TILE_N / 4,
                  "whole loads");
    float4 a_next[A_LOADS], b_next[B_LOADS];  // a k-tile's loads
#if A_REGISTERS  // (w32-a-registers-hoisted) B's address kept from k-tile to k-tile instead of recomputed from the
    // k-tile's place (fetch takes the k-tiles in order, once each): field row k = k0 + b_k of the k-tile (its field
    // row and place in it kept as counters, not divided) at columns 4 (b_quad + 8 i), one pointer
    const int b_k = lane, b_quad = warp;
    int field_place = b_k % field_rows;
    const float* b_at = x + (b_k / field_rows) * in_row + (long long)field_place * batch + 4 * b_quad;
    // A's fragments in registers: this thread's rows a_row and a_row + 8 (its warp's g and g + 8) at the k-tile's
    // 8 t .. 8 t + 7, two float4s a row; k-step s takes 8 t + 2 s as its column t and 8 t + 2 s + 1 as its column
    // t + 4 (the k-tile's inner terms permuted, B's staged to match: k_position)
    static_assert(A_LOADS == 4, "A's fragments: two rows of 8 values a thread");
    const int a_row = m0 + group * 64 + (warp % 4) * 16 + g;
    const float* const a_from = weights + (long long)a_row * fan_in + 8 * t;
    unsigned a_big_fragments[2][16], a_small_fragments[2][16];  // a stage's (each named by a constant: by_pairs)
#endif
    auto fetch = [&](const int tile) {  // k-tile tile's float4s of this thread into registers (zeros past the ends;
        const int k0 = tile * TILE_K;  // none past the last k-tile)
        if (tile >= tiles) return;
#if A_REGISTERS
        for (int j = 0; j < A_LOADS; ++j) {  // row a_row + 8 (j / 2), values 4 (j % 2) .. of 8 t
            const int k = k0 + 8 * t + 4 * (j % 2);
            const bool whole = a_row + 8 * (j / 2) < rows && k < fan_in;
            const float* from = whole ? a_from + (long long)(j / 2) * 8 * fan_in + k0 + 4 * (j % 2) : weights;
            a_next[j] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#else
        for (int i = 0; i < A_LOADS; ++i) {
            const int c = tid + i * FORWARD_THREADS, r = c / 8, k = k0 + (c % 8) * 4, m = m0 + r;
            const bool whole = m < rows && k < fan_in;
            const float* from = whole ? weights + (long long)m * fan_in + k : weights;
            a_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#endif
#if A_REGISTERS
        for (int i = 0; i < B_LOADS; ++i) {
            const bool whole = k0 + b_k < fan_in && n0 + 4 * (b_quad + 8 * i) < batch;
            const float* from = whole ? b_at + 32 * i : x;
            b_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        b_at += (long long)TILE_K * batch;  // the next k-tile's
        for (field_place += TILE_K; field_place >= field_rows; field_place -= field_rows)
            b_at += in_row - (long long)field_rows * batch;  // (past the field row's end: the next field row's start)
#else
        for (int i = 0; i < B_LOADS; ++i) {  // field row k0 + c % 32, columns 4 (c / 32) .. of 96
            const int c = tid + i * FORWARD_THREADS, k = k0 + c % TILE_K, quad = c / TILE_K;
            const bool whole = k < fan_in && n0 + 4 * quad < batch;
            const float* from = whole ? x + (k / field_rows) * in_row + (long long)(k % field_rows) * batch + 4 * quad
                                      : x;
            b_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#endif
    };
#if TERMS == 3
    float part[48];  // a k-tile's partial sums
    for (int e = 0; e < 48; ++e) part[e] = 0.f;
    float* const sums = part;
#else
    float* const sums = &acc[0][0][0];
#endif
    auto stage = [&](const int tile, const int buffer) {  // this thread's float4s of fetched k-tile tile, split, into
        // stage buffer
        float* const stage_at = a_big + buffer * STAGE_FLOATS;
#if A_REGISTERS  // A split into buffer's fragments: k-step s's (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) are
        // rows a_row, a_row + 8 at 8 t + 2 s, then at 8 t + 2 s + 1
        const float values[2][8] = {{a_next[0].x, a_next[0].y, a_next[0].z, a_next[0].w, a_next[1].x, a_next[1].y,
                                     a_next[1].z, a_next[1].w},
                                    {a_next[2].x, a_next[2].y, a_next[2].z, a_next[2].w, a_next[3].x, a_next[3].y,
                                     a_next[3].z, a_next[3].w}};
        for (int e = 0; e < 16; ++e)  // e = 4 s + 2 (column half) + row half
            split_tf32(values[(e % 4) % 2][2 * (e / 4) + (e % 4) / 2], a_big_fragments[buffer][e],
                       a_small_fragments[buffer][e]);
        auto k_position = registers_k_position;  // B's field row k0 + k where the k-steps take it
#else
        for (int i = 0; i < A_LOADS; ++i) {  // A's chunk c % 8 of row c / 8 (k_major_128_at counts 2-byte values)
            const int c = tid + i * FORWARD_THREADS;
            store_split_tf32(stage_at, stage_at + (a_small - a_big), k_major_128_at(c / 8, c % 8) / 2, a_next[i]);
        }
        auto k_position = [](const int k) { return k; };
#endif
        for (int i = 0; i < B_LOADS; ++i) {  // B's rows 4 quad .. 4 quad + 3, inner term c % 32 of each
            const int c = tid + i * FORWARD_THREADS;
            store_split_transposed(stage_at + (b_big - a_big), stage_at + (b_small - a_big), 4 * (c / TILE_K),
                                   k_position(c % TILE_K), b_next[i]);
        }
        ASYNC_PROXY_FENCE();  // these stores seen by the tensor cores' reads
    };
    auto product = [&](const int buffer) {  // (three terms: partial sums from zero)
#if A_REGISTERS
        split_k_tile_registers<wgmma_forward_registers>(sums, a_big_fragments[buffer], a_small_fragments[buffer],
                                                        b_big + buffer * STAGE_FLOATS, b_small + buffer * STAGE_FLOATS,
                                                        TERMS == 1);
#else
        float* const stage_at = a_big + buffer * STAGE_FLOATS + group * 64 * TILE_K;
        split_k_tile<wgmma_forward>(sums, stage_at, stage_at + (a_small - a_big), b_big + buffer * STAGE_FLOATS,
                                    b_small + buffer * STAGE_FLOATS, TERMS == 1);
#endif
    };
    auto finish = [&]() { split_k_tile_done(&acc[0][0][0], sums); };
    // k-tile s + 1 staged into the other buffer while k-tile s's products run
    static_assert(STAGES == 2, "two stages");
#if A_REGISTERS
    split_k_tiles_in_two_stages_by_pairs(tiles, fetch, stage, product, finish);
#else
    split_k_tiles_in_two_stages(tiles, fetch, stage, product, finish);
#endif
    const int first_row = m0 + group * 64 + (warp % 4) * 16, first_column = n0;
#elif WGMMA
    static_assert(TILE_K == 64, "the swizzled tiles take weight rows of 128 bytes");
    SET_SHARED_ARENA(forward_shared);
    const int group = warp / 4;  // the warpgroup
    constexpr int ahead = STAGES - 1 - WGMMA_PENDING;  // tiles of copies in flight
    for (int s = 0; s < ahead; ++s) {  // (empty groups past the end)
        if (s < tiles) load(s, s * TILE_K);
        copies_commit();
    }
    for (int s = 0; s < tiles; ++s) {
        copies_wait<ahead - 1>();  // tile s is there (this thread's copies) ...
        __syncthreads();  // ... every thread's, and every warpgroup's products of tile s - 1 - WGMMA_PENDING done
        // (no fence.proxy.async for the copies: CUTLASS's cp.async mainloop for wgmma has none, and with one the
        // products were no faster and no different, session 42)
        const int next = s + ahead;
        if (next < tiles) load(next % STAGES, next * TILE_K);  // into the buffer that tile left
        copies_commit();
        // A: 8-row atoms 1024 bytes apart, a k-step 32 bytes along the rows; B: 32-column atoms 4096 bytes apart
        // (leading), 8-deep groups of K 512 (stride), a k-step two groups (the descriptors count 16 bytes)
        wgmma_k_tile<48, TILE_K / K_STEP, 2, 64, WGMMA_PENDING, wgmma_forward>(
            &acc[0][0][0], descriptor(As[s % STAGES] + group * 64 * 64, 16, 1024, 1),
            descriptor(Bs[s % STAGES], 4096, 512, 2));
    }
    wgmma_wait<0>();
    copies_wait<0>();  // (only empty groups are left)
    const int first_row = m0 + group * 64 + (warp % 4) * 16, first_column = n0;
#else
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
        const OPERAND* a_tile = As[s % STAGES];
        const OPERAND* b_tile = Bs[s % STAGES];
#if SPLIT_TF32 && TERMS == 1
#pragma unroll  // (plain TF32: the fragments' addresses constant offsets from one base a tile)
#endif
        for (int kk = 0; kk < TILE_K; kk += K_STEP) {
#if SPLIT_TF32  // A (m, k) at a_tile[m * A_ROW + k]
            split_tf32_k_step(acc, a_tile + warp_m * 32 * A_ROW + kk, A_ROW, 1,
                              b_tile + kk * B_ROW + warp_n * 48, B_ROW, 1, g, t);
#else
            unsigned a[2][4], b[6][2];
            a_fragments(a, a_tile, warp_m * 32, A_ROW, kk, g, t);
            b_fragments_transposed(b, b_tile, B_ROW, kk, warp_n * 48, lane);
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 6; ++j) mma_16816(acc[i][j], a[i], b[j]);
#endif
        }
    }
    copies_wait<0>();  // (only empty groups are left)
    const int first_row = m0 + warp_m * 32, first_column = n0 + warp_n * 48;
#endif

    for (int i = 0; i < ROW_PARTS; ++i)
        for (int h = 0; h < 2; ++h) {  // rows g and g + 8 of each 16; columns 2t, 2t + 1 of each 8
            const int m = first_row + i * 16 + g + 8 * h;
            if (m >= rows) continue;
            const float scale = row_scale ? row_scale[block * rows + m] : 1.f;
            const int by = m / (block_w * maps), bx = (m / maps) % block_w, map = m % maps;
            float* row = out + (p * block_h + by) * out_row + (q * block_w + bx) * out_pixel + (long long)map * batch +
                         first_column + 2 * t;
            for (int j = 0; j < COLUMN_PARTS; ++j)  // (columns 2t and 2t + 1 are both in the minibatch or past it)
                if (first_column + j * 8 + 2 * t < batch)
                    *(float2*)(row + j * 8) = make_float2(acc[i][j][2 * h] * scale, acc[i][j][2 * h + 1] * scale);
        }
}
"""


GEOMETRY_NAMES = ("LAYER_ROWS", "LAYER_BATCH", "LAYER_FAN_IN", "LAYER_FIELD_ROWS", "LAYER_BLOCK_W", "LAYER_MAPS",
                  "LAYER_IN_ROW")


@functools.lru_cache(maxsize=256)
def layer_geometry(arguments) -> tuple[int, ...]:
    """The kernel's scalar arguments (:func:`launch`'s, a tuple) that ``LAYER_GEOMETRY`` compiles in, in
    :data:`GEOMETRY_NAMES`' order (made once for these arguments: a launch reads it each step)."""
    rows, batch, fan_in, _, _, field_rows, _, block_w, maps, in_row = arguments[:10]
    return tuple(int(value) for value in (rows, batch, fan_in, field_rows, block_w, maps, in_row))


def mma_forward_source(variant: str = VARIANT, geometry: tuple[int, ...] | None = None, ldmatrix: bool = False,
                       split_tf32: bool = False, terms: int = 3) -> str:
    """The kernel's CUDA source with a variant's tile constants defined (:data:`VARIANTS`), where given ``geometry``
    (:func:`layer_geometry`) the layer's compiled in (``LAYER_GEOMETRY``), and ``A_LDMATRIX`` where ``ldmatrix``.
    With ``split_tf32``, the float32 kernel on TF32 tensor cores (:mod:`.mma_float32`) in a variant of
    :data:`SPLIT_VARIANTS`, ``terms`` TF32 products a k-step (:data:`.mma_update.SPLIT_TF32_HELPERS`); with a variant
    of :data:`WGMMA_VARIANTS`, the bfloat16 kernel on ``wgmma`` (``ldmatrix`` does not apply)."""
    if variant in WGMMA_VARIANTS:
        tile_k, stages, pending = WGMMA_VARIANTS[variant]
        defines = {"WGMMA": 1, "WGMMA_PENDING": pending, "TILE_K": tile_k, "STAGES": stages, "A_ROW": tile_k,
                   "B_ROW": TILE_N, "SHARED_BYTES": shared_bytes(variant), "TILE_M": tile_rows(variant)}
        helpers = (MMA_HELPERS + wgmma.WGMMA_HELPERS
                   + wgmma.wgmma_function("wgmma_forward", TILE_N, "bfloat16", transpose_b=True))
    elif split_tf32 and variant in SPLIT_WGMMA_VARIANTS:
        tile_k, stages, a_registers = SPLIT_WGMMA_VARIANTS[variant]
        defines = {"WGMMA": 1, "SPLIT_TF32": 1, "TERMS": split_terms(terms), "TILE_K": tile_k, "STAGES": stages,
                   "A_REGISTERS": a_registers, "A_ROW": tile_k,
                   "B_ROW": TILE_N, "SHARED_BYTES": shared_bytes(variant, True), "FORWARD_MIN_BLOCKS": 1}
        helpers = (MMA_HELPERS + SPLIT_TF32_HELPERS + wgmma.WGMMA_HELPERS
                   + wgmma.wgmma_function("wgmma_forward", TILE_N, "tf32")
                   + wgmma.wgmma_registers_function("wgmma_forward_registers", TILE_N) + mma_update.SPLIT_WGMMA_HELPERS)
    elif split_tf32:
        tile_k, stages = SPLIT_VARIANTS[variant]
        defines = {"SPLIT_TF32": 1, "TERMS": split_terms(terms), "TILE_K": tile_k, "STAGES": stages,
                   "A_ROW": tile_k + SPLIT_A_PAD, "B_ROW": B_ROW, "SHARED_BYTES": shared_bytes(variant, True)}
        helpers = MMA_HELPERS + SPLIT_TF32_HELPERS
    else:
        tile_k, stages = VARIANTS[variant]
        defines = {"TILE_K": tile_k, "STAGES": stages, "A_ROW": tile_k + 8, "B_ROW": B_ROW,
                   "SHARED_BYTES": shared_bytes(variant), "A_LDMATRIX": int(ldmatrix)}
        helpers = MMA_HELPERS
    if geometry is not None:
        defines |= {"LAYER_GEOMETRY": 1} | dict(zip(GEOMETRY_NAMES, geometry))
    return "".join(f"#define {name} {value}\n" for name, value in defines.items()) + helpers + _SOURCE


@functools.lru_cache(maxsize=None)
def _kernel(variant: str, geometry: tuple[int, ...] | None = None, ldmatrix: bool = False):
    import cupy

    if variant in WGMMA_VARIANTS:
        kernel = wgmma.compiled_module(mma_forward_source(variant, geometry), "mma_forward").get_function(
            "dasksae_wgmma_filter_forward")
        kernel.max_dynamic_shared_size_bytes = shared_bytes(variant)
        return kernel
    kernel = cupy.RawKernel(mma_forward_source(variant, geometry, ldmatrix), "dasksae_mma_filter_forward",
                            options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = shared_bytes(variant)
    return kernel


def operands_fit(x, weights, field: int, operands: str = "uint16") -> bool:
    """Whether the kernel reads these: a bfloat16 (``uint16``; ``operands="float32"``: the split TF32 kernel's
    float32) map ``x (H, W, C, N)`` and weights ``(count, rows, f*f*C)``, ``N`` and ``f*f*C`` in whole 16-byte
    copies (8 bfloat16 values, 4 floats; M=512 takes 6 tiles of 96 columns, the last a third full), at most 65535
    blocks, C-contiguous and 16-byte aligned."""
    if x.ndim != 4 or weights.ndim != 3 or x.dtype.name != operands or weights.dtype.name != operands:
        return False
    count, _, fan_in = weights.shape
    per_copy = 16 // x.itemsize
    return (x.shape[3] % per_copy == 0 and fan_in % per_copy == 0 and fan_in == field * field * x.shape[2]
            and count <= 65535 and aligned(x) and aligned(weights))


def forward_fits(x, weights, out, row_scale, field: int, step: int, block_h: int, block_w: int,
                 operands: str = "uint16") -> bool:
    """Whether :func:`filter_forward_bfloat16` (``operands="float32"``:
    :func:`~dasksae.kernels.mma_float32.filter_forward_float32`) takes this product: :func:`operands_fit`, a float32
    output map ``(H', W', maps, N)`` with ``rows = block_h*block_w*maps`` and ``count`` its blocks, ``row_scale``
    (if any) a float32 value a row; C-contiguous and 16-byte aligned."""
    if not operands_fit(x, weights, field, operands):
        return False
    if out.ndim != 4 or out.dtype.name != "float32" or not aligned(out):
        return False
    count, rows, _ = weights.shape
    if out.shape[3] != x.shape[3] or rows != block_h * block_w * out.shape[2]:
        return False
    if count != (out.shape[0] // block_h) * (out.shape[1] // block_w):
        return False
    return row_scale is None or (row_scale.dtype.name == "float32" and row_scale.size == count * rows
                                 and aligned(row_scale))


def filter_forward_bfloat16(x, weights, out, field: int, step: int, block_h: int, block_w: int,
                            row_scale=None, variant: str | None = None) -> None:
    """``out = diag(row_scale) W x`` for one chunk of block rows on tensor cores, the fields read from ``x``'s map
    and the outputs written into ``out``'s (the arrays must :func:`forward_fits`); on ``wgmma`` where
    ``DASKSAE_WGMMA_FORWARD`` asks and the GPU runs it (:func:`default_variant`)."""
    variant = variant or default_variant()
    grid, arguments = typed_launch(launch, 4, x.shape, out.shape, weights.shape, field, step, block_h, block_w,
                                   tile_rows(variant))
    scale = numpy.uint64(0) if row_scale is None else row_scale
    geometry = layer_geometry(arguments) if mma_update.COMPILED_GEOMETRY else None
    _kernel(variant, geometry, mma_update.LDMATRIX)(grid, (block_threads(variant),),
                                                    (weights, x, out, *arguments, scale), shared_mem=shared_bytes(variant))


def default_variant() -> str:
    """The variant a product takes: ``DASKSAE_WGMMA_FORWARD``'s on ``wgmma`` (``1``: :data:`WGMMA_VARIANT`) where
    the GPU runs it, else :data:`VARIANT`."""
    if WGMMA_FORWARD != "0" and wgmma.supported():
        return WGMMA_VARIANT if WGMMA_FORWARD == "1" else WGMMA_FORWARD
    return VARIANT


def launch(x_shape, out_shape, weights_shape, field: int, step: int, block_h: int, block_w: int,
           rows_a_block: int = TILE_M):
    """``(grid, scalar arguments between the three arrays and row_scale)`` of ``dasksae_mma_filter_forward``: those
    of ``dasksae_simt_filter_forward`` (:func:`~dasksae.kernels.simt_gemm.forward_launch`), with a last tile of 96
    columns where the minibatch is not whole 96s, and blocks of ``rows_a_block`` rows (a variant's
    :func:`tile_rows`)."""
    (_, _, count), arguments = forward_launch(x_shape, out_shape, weights_shape, field, step, block_h, block_w)
    return (-(-weights_shape[1] // rows_a_block), -(-x_shape[3] // TILE_N), count), arguments


def fields_product(x, weight_rows, out, field: int, step: int, blocks_w: int, fits=None, multiply=None) -> bool:
    """``out[b] = W[b] fields_b(x)`` (float32 block rows ``(count, rows, N)``, the backward's ``U g_r``) on tensor
    cores, block ``b``'s fields read from the map ``x``: ``multiply`` (default :func:`filter_forward_bfloat16`) into
    :func:`~dasksae.kernels.simt_gemm.as_block_map`, where ``fits`` (default :func:`forward_fits`) takes them;
    ``False`` (nothing done) where the arrays do not fit."""
    count, rows, _ = weight_rows.shape
    if count % blocks_w or out.ndim != 3 or out.shape[:2] != (count, rows) or not out.flags.c_contiguous:
        return False
    block_map = as_block_map(out, blocks_w)
    if not (fits or forward_fits)(x, weight_rows, block_map, None, field, step, 1, 1):
        return False
    (multiply or filter_forward_bfloat16)(x, weight_rows, block_map, field, step, 1, 1)
    return True


def fields_product_bfloat16(x, weight_rows, out, field: int, step: int, blocks_w: int) -> bool:
    """:func:`fields_product` from the bfloat16 map ``x``."""
    return fields_product(x, weight_rows, out, field, step, blocks_w)


assert TILE_M == 128 and TILE_N == 96  # the source's tile (simt_gemm's launch geometry)
