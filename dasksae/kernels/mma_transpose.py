"""The bfloat16 ``W^T y`` on tensor cores with the fold taken in the product: each output pixel's sum over the blocks
whose fields cover it, written into the map once, with no patches (CuPy).  Opt-in: built in session 23 without a GPU.

In bfloat16 ``W^T y`` (the reconstruction, and the input gradient) is
cuBLAS's batched GEMM into float32 patches ``(blocks, f*f*C, M)``, then
:func:`~dasksae.kernels.local_filter.fold_patches_into` adds them into the
map.  On the H200 (session 23, coates200, M=96) the product is near its
bytes already (stage 2: 0.91 ms against 0.82 ms of weights read and patches
written at the copy rate), and the patches are written and read back: 8.3 GB
a step, about 2 ms of the products and the fold's 2.3 ms.

Here a block of 256 threads owns one *cell* of the output map: ``step x
step`` pixels at ``(a*step, b*step)`` with all ``C`` channels (``step^2 C``
rows of at most 128) and 96 minibatch columns.  Where ``field`` is a
multiple of ``step``, a cell lies inside the fields of the blocks ``(p, q)``
with ``a - field/step < p <= a`` (and likewise ``q``), and in each of them
at the field's rows ``(a - p) step ..`` and columns ``(b - q) step ..``: for
each such block and each of its ``R`` rows ``r``, the cell's part of
``W[r]`` is ``step`` runs of ``step C`` contiguous values.  So the cell's
sum is one product ``A (step^2 C, K) B (K, M)`` with ``K = blocks x R``:
``A``'s columns those runs of ``W``'s rows (a ``k``-major tile, fragments by
``ldmatrix.trans``), ``B`` the blocks' rows of ``y``, as in
:mod:`.mma_forward`.  The blocks are taken in a fixed order, so the sums do
not depend on scheduling; each cell is added into the map by its own
block, so nothing races.  ``mma.sync.m16n8k16``, float32 sums, ``cp.async``
tiles of 64 (or 32) inner terms in 3 (or 4) buffers (:data:`VARIANTS`).

Its source runs on the CPU under g++ (``tests/test_mma_transpose_on_cpu.py``,
the shim of ``tests/test_mma_update_on_cpu.py``) against NumPy's product
and fold.  On by default at minibatches of whole 96s (``DASKSAE_TENSOR_CORE_TRANSPOSE=auto``; ``1`` at any
minibatch of whole 8s, ``0`` never: :func:`.mma_forward.minibatch_on_tensor_cores`): on an
H200 (session 24) it took coates200's stages 2 and 3 in 0.98 and 0.78 ms
against 1.44 and 1.12 ms for cuBLAS's product then the fold, and the
bfloat16 step from 24.3 to 22.7 ms.

``DASKSAE_WGMMA_TRANSPOSE=1`` (the default since session 43) takes the same product on Hopper's
``wgmma`` (:data:`WGMMA_VARIANTS`, :mod:`.wgmma`), as :mod:`.mma_forward`
takes ``W x`` by default: each of two warpgroups 64 of the cell's rows by
the 96 columns, both operands MN-major by descriptor (``imm-trans-a`` and
``-b``) in CUTLASS's swizzled layouts, checked under g++ with ``wgmma``
emulated through the descriptors.
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from . import mma_update, wgmma
from .mma_update import MMA_HELPERS, SPLIT_TF32_HELPERS, aligned, split_terms
from .simt_gemm import THREADS, TILE_N

# W^T y with the fold in bfloat16 in this kernel where the arrays fit and the minibatch is one it takes
# (local_filter.add_transpose_into, mma_forward.minibatch_on_tensor_cores): "auto", "1" or "0"
TENSOR_CORE_TRANSPOSE = switch("DASKSAE_TENSOR_CORE_TRANSPOSE")
# (block rows (inner terms) a tile of shared memory, tiles of shared memory a block: STAGES - 1 in flight while one is
# multiplied).  k32x4 is what ran in sessions 24-26; k64x3 takes 64 block rows a tile, as mma_forward's k64x3 does
# for W x: half the barriers a cell, twice the products between them.  On the H200 (session 27, coates200's stages
# 2 / 3, M=96) k64x3 took 0.90 / 0.71 ms against k32x4's 1.08 / 0.81, and the in-process bfloat16 step 20.3 against
# 20.85 ms; the default since.  It takes layers whose rows are whole 64s; others keep k32x4.
VARIANTS = {"k32x4": (32, 4), "k64x3": (64, 3)}
TILES = switch("DASKSAE_TENSOR_CORE_TRANSPOSE_TILES")  # the variant the training asks for
TILE_K = VARIANTS["k32x4"][0]  # the smallest tile: the rows a layer must have in whole TILE_Ks
CELL_ROWS = 128  # the most rows a cell may have (step^2 C): the block's rows of products
A_ROW = CELL_ROWS + 8  # a shared row of the weights' tile: a block row's 128 cell values and 8 of padding (272 bytes;
# in float32, split TF32, A's fragment loads (t, g) fall in banks 8t + g)
B_ROW = TILE_N + 8  # a shared row of y's tile: 96 minibatch values and 8 of padding (208 bytes)
# the tiles of the float32 kernel on split TF32 tensor cores (kernels/mma_float32.py): k32x3 takes 92 KiB a block
SPLIT_VARIANTS = {"k32x3": (32, 3)}
# (session 49, DASKSAE_FLOAT32_WGMMA_TRANSPOSE=1) the same on wgmma (sm_90), as mma_forward's w32-split-2: (TILE_K,
# STAGES), k-tiles of 32 block rows staged through registers, split into their TF32 terms and both operands
# transposed to K-major as they are staged, two stages (112 KiB), one block an SM
# w32-a-registers-hoisted (sessions 51 and 52; the default since session 53), as mma_forward's: A, the cell's values,
# split into wgmma's register fragments (a thread's two rows are the cell's values 2 g and 2 g + 1 of its warp's 16, a
# float2 of a weight row; no A tiles, a stage 24 KiB), and the fetch's block and addresses kept from k-tile to
# k-tile.  On the H100 (session 53, bench/results/session53/next/) W^T y over coates200's stages took 5.56 ms against
# w32-split-2's 9.07.  (Gone, having lost there: w32-hoisted, 7.31 ms; w32-a-registers, 6.49; w32-a-registers-sectors,
# 5.63; before them session 49's w32-async-3 and -4, cp.async into raw stages; session 50's w32-regs-2, two register
# sets of loads.)  (TILE_K, STAGES, A_REGISTERS)
SPLIT_WGMMA_VARIANTS = {"w32-split-2": (32, 2, 0), "w32-a-registers-hoisted": (32, 2, 1)}
# bfloat16 on wgmma (kernels/wgmma.py; sm_90 only), as mma_forward's WGMMA_VARIANTS: (TILE_K, STAGES, WGMMA_PENDING),
# the tiles in CUTLASS's swizzled layouts (the weights' cell values MN-major in 128-byte rows, y's columns MN-major in
# 64-byte rows).  It takes layers whose rows are whole 64s.  On an H100 (session 43, coates200, M=96) it took the
# stages' W^T y with the fold in 1.953 ms against mma.sync's k64x3 2.241, and the in-process bfloat16 step 22.9
# against 23.2-23.6 ms (bench/results/session43/next/)
WGMMA_VARIANTS = {"w64x3-swizzled": (64, 3, 0), "w64x3-pairs": (64, 3, 0)}
# (session 43; for benchmarks: in session 44 it lost, stages 0.796 / 0.867 / 0.679 ms against w64x3-swizzled's 0.600 /
# 0.754 / 0.582 and the in-process step 22.6-22.8 ms against 22.1, H100, bench/results/session44/pairs/) w64x3-pairs:
# a block of 512 threads takes
# two cells side by side (CELLS 2), two warpgroups a cell, so that where a block's field covers both (4 of the 6
# blocks at field / step = 5) a weight row's two runs are read as one (128 bytes at step 4 and 8 channels, where one
# cell's are 64: half lines, twice the L2 requests) and y's tile serves both cells.  On an H100 (session 43,
# bench/results/session43/bytes/) W^T y moved its DRAM bytes at 2.0-2.2 TB/s where W x, on the same weights, moved
# 2.6-2.9; one block an SM (135 KB of shared memory)
CELLS_A_BLOCK = {"w64x3-pairs": 2}
# "1" (the default): W^T y with the fold on wgmma (WGMMA_VARIANT) where the GPU runs it and the layer's rows are
# whole 64s; or a variant of WGMMA_VARIANTS by name; "0": on mma.sync
WGMMA_TRANSPOSE = switch("DASKSAE_WGMMA_TRANSPOSE")
WGMMA_VARIANT = "w64x3-swizzled"


def cells_a_block(variant: str | None) -> int:
    """The cells a block of ``variant`` takes side by side (:data:`CELLS_A_BLOCK`; 1 for the others)."""
    return CELLS_A_BLOCK.get(variant, 1)


def block_threads(variant: str | None) -> int:
    """The threads of a block of ``variant``: 256 a cell."""
    return THREADS * cells_a_block(variant)


def shared_bytes(variant: str, split_tf32: bool = False) -> int:
    """Dynamic shared memory a block of ``variant``: its stages of weight and ``y`` tiles (float32 with
    ``split_tf32``, a variant of :data:`SPLIT_VARIANTS`; else bfloat16; on ``wgmma`` with no padding, the weights'
    tile a cell's values for each of its cells)."""
    if variant in WGMMA_VARIANTS:
        tile_k, stages, _ = WGMMA_VARIANTS[variant]
        return stages * tile_k * (CELL_ROWS * cells_a_block(variant) + TILE_N) * 2
    if variant in SPLIT_WGMMA_VARIANTS:  # each operand's two terms a stage, no padding
        tile_k, stages, a_registers = SPLIT_WGMMA_VARIANTS[variant]
        return stages * 2 * tile_k * ((0 if a_registers else CELL_ROWS) + TILE_N) * 4
    tile_k, stages = (SPLIT_VARIANTS if split_tf32 else VARIANTS)[variant]
    return stages * (tile_k * A_ROW + tile_k * B_ROW) * (4 if split_tf32 else 2)


def variant_for(rows: int, asked: str | None = None) -> str:
    """The variant a layer of ``rows`` block rows takes when ``asked`` (default: ``wgmma``'s where
    ``DASKSAE_WGMMA_TRANSPOSE=1`` and the GPU runs it, else :data:`TILES`): it, where the rows are whole tiles of it,
    else ``k32x4``."""
    if asked is None and WGMMA_TRANSPOSE != "0" and wgmma.supported():
        asked = WGMMA_VARIANT if WGMMA_TRANSPOSE == "1" else WGMMA_TRANSPOSE
    asked = asked or TILES
    tile_k = (WGMMA_VARIANTS.get(asked) or VARIANTS[asked])[0]
    return asked if rows % tile_k == 0 else "k32x4"

_SOURCE = r"""
#define TILE_N 96
// TILE_K, STAGES, CELL_ROWS, A_ROW, B_ROW, SHARED_BYTES: from mma_transpose_source.  SPLIT_TF32
// (kernels/mma_float32.py's): float32 operands, each split into two TF32 terms, in dasksae_tf32x3_filter_transpose_fold; else bfloat16 ones in
// dasksae_mma_filter_transpose_fold
#if SPLIT_TF32 && WGMMA  // float32 on wgmma (w32-split-2): each warpgroup 64 of the cell's rows by 96 columns, m64n96k8
#define OPERAND float
#define TRANSPOSE_KERNEL dasksae_wgmma_tf32x3_filter_transpose_fold
#define K_STEP 8
#define ROW_PARTS 1
#define COLUMN_PARTS 12
#elif SPLIT_TF32
#define OPERAND float
#define TRANSPOSE_KERNEL dasksae_tf32x3_filter_transpose_fold
#define K_STEP 8  // inner terms a tensor-core product
#define ROW_PARTS 2  // a warp's sums: 2 x 16 rows by 6 x 8 columns
#define COLUMN_PARTS 6
#elif WGMMA  // bfloat16 on wgmma (kernels/wgmma.py): each warpgroup 64 of the cell's rows by 96 columns, m64n96k16
#define OPERAND unsigned short
#define TRANSPOSE_KERNEL dasksae_wgmma_filter_transpose_fold
#define K_STEP 16
#define ROW_PARTS 1  // a warp's sums: 16 rows by 12 x 8 columns
#define COLUMN_PARTS 12
#else
#define OPERAND unsigned short
#define TRANSPOSE_KERNEL dasksae_mma_filter_transpose_fold
#define K_STEP 16
#define ROW_PARTS 2
#define COLUMN_PARTS 6
#endif
#ifndef SUBTRACT  // 1: the map written is W^T y - subtract (accumulate 0), and each block's sum of its squares
#define SUBTRACT 0
#endif
#ifndef CELLS  // (wgmma's w64x3-pairs) the cells a block takes side by side: 1, or 2 (two warpgroups a cell)
#define CELLS 1
#endif
#define TRANSPOSE_THREADS (256 * CELLS)
#ifndef TRANSPOSE_MIN_BLOCKS  // (w32-split-2: one, its sums and partial sums and loads in flight past 128 registers)
#define TRANSPOSE_MIN_BLOCKS (2 / CELLS)
#endif
#if CELLS != 1 && !WGMMA
#error "a block of two cells takes wgmma's tiles"
#endif
#define PER_COPY (16 / (int)sizeof(OPERAND))  // operands a 16-byte copy (an 8-byte copy: half as many)
#define B_COPIES (TILE_N / PER_COPY)  // copies a row of y's 96 columns
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
extern __shared__ __align__(1024) unsigned char transpose_shared[];  // (wgmma's swizzled atoms: 1024-byte aligned)
#else  // the CPU tests' g++: the block's threads share a static array
static unsigned char transpose_shared[SHARED_BYTES] __attribute__((aligned(1024)));
#endif

// out (H, W, C, batch) float32 += (accumulate 0: =) the fold of W^T y: weights (blocks_h * blocks_w, rows,
// field*field*C) and y (blocks_h * blocks_w, rows, batch) OPERAND, block (p, q)'s field at (p*step, q*step).
// Block (b, a, n-tile) of the grid owns cell (a, b): pixels (a*step + i, b*step + j), i, j < step, every channel;
// its row m = (i*step + j)*C + c.  Takes field a multiple of step, step*C in whole 4s, step*step*C <= CELL_ROWS,
// rows in whole TILE_Ks, batch in whole 8s (the last tile of 96 columns may be part full), H = (blocks_h - 1)*step
// + field (W likewise: every cell is some block's), 16-byte aligned rows; SHARED_BYTES of dynamic shared memory.
// LAYER_GEOMETRY (mma_transpose_source's, given a layer): its block rows, channels, field and step compiled in, so
// that the loads' index divisions and products become shifts and multiplications by constants; the arguments of
// those names are then not read (they must be the same)
// CELLS 2: the block owns cells (a, CELLS b') and (a, CELLS b' + 1) (the second past the map's last column: none),
// two warpgroups each; its blocks are those of either cell, and where a block's field covers both, the two cells'
// runs of a weight row lie end to end (128 bytes at step 4 and 8 channels: whole lines) and y's rows serve both
extern "C" __global__ void __launch_bounds__(TRANSPOSE_THREADS, TRANSPOSE_MIN_BLOCKS) TRANSPOSE_KERNEL(
    const OPERAND* __restrict__ weights, const OPERAND* __restrict__ y, float* __restrict__ out,
    const int rows_argument, const int batch, const int channels_argument, const int field_argument,
    const int step_argument, const int blocks_h, const int blocks_w, const int map_w, const int accumulate
#if SUBTRACT
    , const float* __restrict__ subtract, double* __restrict__ partials
#endif
    )
{
#ifdef LAYER_GEOMETRY
    const int rows = LAYER_ROWS, channels = LAYER_CHANNELS, field = LAYER_FIELD, step = LAYER_STEP;
#else
    const int rows = rows_argument, channels = channels_argument, field = field_argument, step = step_argument;
#endif
    OPERAND(*As)[TILE_K * A_ROW] = (OPERAND(*)[TILE_K * A_ROW])transpose_shared;  // [STAGES]
    OPERAND(*Bs)[TILE_K * B_ROW] =
        (OPERAND(*)[TILE_K * B_ROW])(transpose_shared + STAGES * TILE_K * A_ROW * sizeof(OPERAND));
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
#if !WGMMA
    const int warp_m = warp % 4, warp_n = warp / 4;
#endif
    const int a = blockIdx.y, b = blockIdx.x * CELLS, n0 = blockIdx.z * TILE_N;  // (b: the block's first cell)
#if WGMMA  // CUTLASS's canonical swizzled layouts (kernels/wgmma.py): A, the cell's values m of block row r, MN-major
    // in 128-byte rows: 64-value atoms 8192 bytes apart, 8-deep groups of r 1024, row r % 8 at 128 (r % 8), its
    // 16-byte chunk at 16 ((m % 64) / 8 ^ r % 8); B, y's columns, MN-major in 64-byte rows as mma_forward's
    auto a_at = [](const int r, const int m) {  // (in bfloat16 values)
        return 4096 * (m / 64) + 512 * (r / 8) + 64 * (r % 8) + 8 * (((m % 64) / 8) ^ (r % 8)) + m % 8;
    };
    auto b_at = [](const int r, const int part) { return mn_major_64_at(r, part); };
#else
    auto a_at = [](const int r, const int m) { return r * A_ROW + m; };
    auto b_at = [](const int r, const int part) { return r * B_ROW + part * PER_COPY; };
#endif
    const int reach = field / step;  // the blocks a cell lies in, along each axis (fewer at the map's edges)
    // the block's cells: CELLS, or fewer at the map's last column (map_w / step cells across)
    const int cells = map_w / step - b < CELLS ? map_w / step - b : CELLS, b_last = b + cells - 1;
    const int p_first = a - reach + 1 > 0 ? a - reach + 1 : 0, p_last = a < blocks_h - 1 ? a : blocks_h - 1;
    const int q_first = b - reach + 1 > 0 ? b - reach + 1 : 0, q_last = b_last < blocks_w - 1 ? b_last : blocks_w - 1;
    auto covers = [&](const int q, const int cell) {  // whether block column q's field covers the block's cell
        return cell < cells && q >= b + cell - reach + 1 && q <= b + cell;
    };
    const int blocks_q = q_last - q_first + 1, run = step * channels, cell_rows = step * run;
    const long long fan_in = (long long)field * field * channels;
    const int tiles_a_block = rows / TILE_K, tiles = (p_last - p_first + 1) * blocks_q * tiles_a_block;
    auto load = [&](const int buffer, const int tile) {  // tile: a block of the cell's (in order) and TILE_K of its rows
        const int which = tile / tiles_a_block, r0 = (tile % tiles_a_block) * TILE_K;
        const int p = p_first + which / blocks_q, q = q_first + which % blocks_q;
        const long long block = (long long)p * blocks_w + q;
        // A: for each of the TILE_K rows, the cell's step runs of step*C values in the block's field (16 bytes a copy
        // where step*C is whole PER_COPYs; else 8 bytes: in bfloat16, 3 channels' runs of 12 values, 24 bytes)
        const OPERAND* field_at = weights + (block * rows + r0) * fan_in +
                                  ((long long)(a - p) * step * field + (long long)(b - q) * step) * channels;
        // (CELLS 2: each covered cell's runs, the second's right after the first's in the row, into its own 128
        // values of the tile; copy c's cell is (c / copies_a_run) % CELLS, so that a warp reads whole runs of both)
        if (run % PER_COPY == 0) {
            const int copies_a_run = run / PER_COPY, copies_a_row = step * copies_a_run * CELLS;
            for (int c = tid; c < TILE_K * copies_a_row; c += TRANSPOSE_THREADS) {
                const int r = c / copies_a_row, i = (c % copies_a_row) / (copies_a_run * CELLS);
                const int cell = (c / copies_a_run) % CELLS, part = c % copies_a_run;
                if (CELLS > 1 && !covers(q, cell)) continue;
                copy_16((unsigned short*)&As[buffer][a_at(r, cell * CELL_ROWS + i * run + part * PER_COPY)],
                        (const unsigned short*)(field_at + r * fan_in + (long long)i * field * channels + cell * run +
                                                part * PER_COPY), true);
            }
        } else {
            const int copies_a_run = run / (PER_COPY / 2), copies_a_row = step * copies_a_run * CELLS;
            for (int c = tid; c < TILE_K * copies_a_row; c += TRANSPOSE_THREADS) {
                const int r = c / copies_a_row, i = (c % copies_a_row) / (copies_a_run * CELLS);
                const int cell = (c / copies_a_run) % CELLS, part = c % copies_a_run;
                if (CELLS > 1 && !covers(q, cell)) continue;
                copy_8((float*)&As[buffer][a_at(r, cell * CELL_ROWS + i * run + part * (PER_COPY / 2))],
                       (const float*)(field_at + r * fan_in + (long long)i * field * channels + cell * run +
                                      part * (PER_COPY / 2)), true);
            }
        }
        const OPERAND* y_at = y + (block * rows + r0) * batch + n0;
        for (int c = tid; c < TILE_K * B_COPIES; c += TRANSPOSE_THREADS) {  // B: TILE_K rows of y's 96 columns, B_COPIES copies a
            const int r = c / B_COPIES, part = c % B_COPIES;  // row (zeros past the minibatch, read from nowhere)
            const bool in = n0 + part * PER_COPY < batch;
            copy_16((unsigned short*)&Bs[buffer][b_at(r, part)],
                    (const unsigned short*)(y_at + (long long)r * batch + (in ? part * PER_COPY : 0)), in);
        }
    };

    float acc[ROW_PARTS][COLUMN_PARTS][4];
    for (int i = 0; i < ROW_PARTS; ++i)
        for (int j = 0; j < COLUMN_PARTS; ++j)
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#if WGMMA && SPLIT_TF32
    // float32 weights and y through registers, as mma_forward's w32-split-2: each k-tile of 32 block rows loaded a
    // float4 at a time, split as it is staged into its big and small TF32 terms, each term in a K-major tile of
    // 128-byte swizzled rows (A big, A small, B big, B small; two stages, 112 KiB).  TF32 wgmma takes no MN-major
    // operand, and both are MN-major in memory (a weight row's cell values and a y row's minibatch contiguous), so
    // both are transposed as they are staged: a warp takes one quad of the cell's values (or of y's columns) in all 32
    // rows of the k-tile, a float4 from each, and each of its four stores fills one 128-byte row of the tile.  A k-step
    // of 8 takes small x big, big x small, big x big into partial sums started from zero at the k-tile's first product,
    // added to the sums rounded after it (the tensor cores' sums truncate; a cell's sum runs over its blocks' rows)
    static_assert(TILE_K == 32 && CELLS == 1, "the split's tiles take rows of 32 float32 values, 128 bytes");
    SET_SHARED_ARENA(transpose_shared);
    const int group = warp / 4;  // the warpgroup: the cell's rows 64 group ..
    constexpr int A_STAGED = A_REGISTERS ? 0 : CELL_ROWS;  // (A in registers: no tiles of it)
    constexpr int STAGE_FLOATS = 2 * (A_STAGED + TILE_N) * TILE_K;  // a stage's tiles
    float* const a_big = (float*)transpose_shared;
    float* const a_small = a_big + A_STAGED * TILE_K;
    float* const b_big = a_small + A_STAGED * TILE_K;
    float* const b_small = b_big + TILE_N * TILE_K;
    constexpr int A_LOADS = CELL_ROWS * TILE_K / 4 / TRANSPOSE_THREADS;
    constexpr int B_LOADS = TILE_N * TILE_K / 4 / TRANSPOSE_THREADS;
    static_assert(A_LOADS * TRANSPOSE_THREADS * 4 == CELL_ROWS * TILE_K &&
                  B_LOADS * TRANSPOSE_THREADS * 4 == TILE_N * TILE_K, "whole loads");
    float4 a_next[A_LOADS], b_next[B_LOADS];  // a k-tile's loads
#if A_REGISTERS  // (w32-a-registers-hoisted, as mma_forward's) A's fragments in registers: this thread's rows of
    // its warp's 16 are the cell's values a_m and a_m + 1 (fragment rows g and g + 8: the epilogue's row_in_16),
    // side by side in a weight row (step C is whole 4s), at the k-tile's block rows 8 t .. 8 t + 7, a float2 each;
    // k-step s takes block row 8 t + 2 s as its column t and 8 t + 2 s + 1 as its column t + 4 (B's staged to
    // match: k_position)
    const int a_m = group * 64 + (warp % 4) * 16 + 2 * g;
    const long long a_m_offset = (long long)(a_m / run) * field * channels + a_m % run;
    float2 a_pairs[8];  // block rows 8 t + j
    unsigned a_big_fragments[2][16], a_small_fragments[2][16];  // a stage's (each named by a constant: by_pairs)
    // the fetch's block, its row and two addresses kept from k-tile to k-tile (fetch takes the k-tiles in order, once
    // each), and each load's offset from them computed once: no divisions in the loop; y's block row b_k of the
    // k-tile at quads b_quad + 8 i
    const int b_k = lane, b_quad = warp;
    int fetch_p = p_first, fetch_q = q_first, fetch_r0 = 0;
    const float *fetch_field, *fetch_y;  // block (fetch_p, fetch_q)'s field of the cell and its y, at row fetch_r0
    auto aim = [&]() {
        const long long block = (long long)fetch_p * blocks_w + fetch_q;
        fetch_field = weights + block * rows * fan_in +
                      ((long long)(a - fetch_p) * step * field + (long long)(b - fetch_q) * step) * channels;
        fetch_y = y + block * rows * batch + n0;
    };
    aim();
    const int a_register_offset = 8 * t * (int)fan_in + (int)a_m_offset;  // the cell's values a_m .. of block row 8 t
#endif
    auto fetch = [&](const int tile) {  // k-tile tile's float4s of this thread into registers (zeros past the ends;
#if A_REGISTERS                          // none past the last k-tile)
        if (tile >= tiles) return;
        const float* a_at = fetch_field + a_register_offset;
        for (int j = 0; j < 8; ++j, a_at += fan_in)  // the cell's values a_m, a_m + 1 of block row r0 + 8 t + j
            a_pairs[j] = a_m < cell_rows ? *(const float2*)a_at : make_float2(0.f, 0.f);
        for (int i = 0; i < B_LOADS; ++i) {  // y's columns 4 (b_quad + 8 i) .. of block row b_k
            const int n = 4 * (b_quad + 8 * i);
            const bool whole = n0 + n < batch;
            const float* from = whole ? fetch_y + b_k * batch + n : y;
            b_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        fetch_r0 += TILE_K;  // the next k-tile: the block's next rows, or the next block's first
        fetch_field += TILE_K * fan_in;
        fetch_y += TILE_K * batch;
        if (fetch_r0 == rows) {
            fetch_r0 = 0;
            if (++fetch_q > q_last) {
                fetch_q = q_first;
                ++fetch_p;
            }
            aim();
        }
#else
        if (tile < tiles) {
            const int which = tile / tiles_a_block, r0 = (tile % tiles_a_block) * TILE_K;
            const int p = p_first + which / blocks_q, q = q_first + which % blocks_q;
            const long long block = (long long)p * blocks_w + q;
            const float* field_at = weights + (block * rows + r0) * fan_in +
                                    ((long long)(a - p) * step * field + (long long)(b - q) * step) * channels;
            for (int i = 0; i < A_LOADS; ++i) {  // the cell's values 4 (c / 32) .. of block row r0 + c % 32
                const int c = tid + i * TRANSPOSE_THREADS, r = c % TILE_K, m = 4 * (c / TILE_K);
                const bool whole = m < cell_rows;
                const float* from = whole ? field_at + r * fan_in + (long long)(m / run) * field * channels + m % run
                                          : weights;
                a_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
            }
            const float* y_at = y + (block * rows + r0) * batch + n0;
            for (int i = 0; i < B_LOADS; ++i) {  // y's columns 4 (c / 32) .. of block row r0 + c % 32
                const int c = tid + i * TRANSPOSE_THREADS, r = c % TILE_K, n = 4 * (c / TILE_K);
                const bool whole = n0 + n < batch;
                const float* from = whole ? y_at + (long long)r * batch + n : y;
                b_next[i] = whole ? *(const float4*)from : make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
#endif
    };
    auto stage = [&](const int tile, const int buffer) {  // this thread's float4s of fetched k-tile tile, split, into
        float* const stage_at = a_big + buffer * STAGE_FLOATS;  // stage buffer
#if A_REGISTERS  // A split into buffer's fragments: k-step s's (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4) are
        // values a_m, a_m + 1 of block row 8 t + 2 s, then of 8 t + 2 s + 1
        for (int e = 0; e < 16; ++e) {  // e = 4 s + 2 (column half) + row half
            const float2 pair = a_pairs[2 * (e / 4) + (e % 4) / 2];
            split_tf32(e % 2 ? pair.y : pair.x, a_big_fragments[buffer][e], a_small_fragments[buffer][e]);
        }
        auto k_position = registers_k_position;  // B's block row r0 + k where the k-steps take it
#else
        for (int i = 0; i < A_LOADS; ++i) {
            const int c = tid + i * TRANSPOSE_THREADS;
            store_split_transposed(stage_at, stage_at + (a_small - a_big), 4 * (c / TILE_K), c % TILE_K,
                                   a_next[i]);
        }
        auto k_position = [](const int k) { return k; };
#endif
        for (int i = 0; i < B_LOADS; ++i) {
            const int c = tid + i * TRANSPOSE_THREADS;
            store_split_transposed(stage_at + (b_big - a_big), stage_at + (b_small - a_big), 4 * (c / TILE_K),
                                   k_position(c % TILE_K), b_next[i]);
        }
        ASYNC_PROXY_FENCE();  // these stores seen by the tensor cores' reads
    };
#if TERMS == 3
    float part[48];  // a k-tile's partial sums
    for (int e = 0; e < 48; ++e) part[e] = 0.f;
    float* const sums = part;
#else
    float* const sums = &acc[0][0][0];
#endif
#if A_REGISTERS  // every warpgroup takes the products: an idle one's fragments are zeros (cells of 48 take wgmma only
    // where asked, =all)
    auto product = [&](const int buffer) {
        split_k_tile_registers<wgmma_transpose_registers>(sums, a_big_fragments[buffer], a_small_fragments[buffer],
                                                          b_big + buffer * STAGE_FLOATS,
                                                          b_small + buffer * STAGE_FLOATS, TERMS == 1);
    };
#else
    const bool has_rows = group * 64 < cell_rows;  // (a warpgroup whose rows are all past the cell's, as at cells of
    auto product = [&](const int buffer) {         // 48, idles)
        float* const stage_at = a_big + buffer * STAGE_FLOATS + group * 64 * TILE_K;
        if (has_rows)
            split_k_tile<wgmma_transpose>(sums, stage_at, stage_at + (a_small - a_big), b_big + buffer * STAGE_FLOATS,
                                          b_small + buffer * STAGE_FLOATS, TERMS == 1);
    };
#endif
    // (every warpgroup waits and adds, outside has_rows: a wgmma wait in a divergent path has ptxas serialize every
    // wgmma of the kernel, C7518; an idle warpgroup waits for nothing and adds its partial sums' zeros)
    auto finish = [&]() { split_k_tile_done(&acc[0][0][0], sums); };
#if A_REGISTERS
    split_k_tiles_in_two_stages_by_pairs(tiles, fetch, stage, product, finish);
#else
    split_k_tiles_in_two_stages(tiles, fetch, stage, product, finish);
#endif
    const int first_row = group * 64 + (warp % 4) * 16, first_column = n0, cell = 0;
#elif WGMMA  // as mma_forward's wgmma loop
    static_assert(TILE_K == 64 && A_ROW == CELL_ROWS * CELLS && B_ROW == TILE_N, "the swizzled tiles' shape");
    SET_SHARED_ARENA(transpose_shared);
    const int group = warp / 4;  // the warpgroup: the cell's rows 64 group .. (CELLS 2: cell group / 2's, 64 (group % 2) ..)
    constexpr int ahead = STAGES - 1 - WGMMA_PENDING;  // tiles of copies in flight
    for (int s = 0; s < ahead; ++s) {  // (empty groups past the end)
        if (s < tiles) load(s, s);
        copies_commit();
    }
    for (int s = 0; s < tiles; ++s) {
        copies_wait<ahead - 1>();  // tile s is there (this thread's copies) ...
        __syncthreads();  // ... every thread's, and every warpgroup's products of tile s - 1 - WGMMA_PENDING done
        if (s + ahead < tiles) load((s + ahead) % STAGES, s + ahead);  // into the buffer that tile left
        copies_commit();
        // A: the warpgroup's 64-value atom, 8-deep groups of block rows 1024 bytes apart (stride), a k-step two
        // groups; B: 32-column atoms 4096 bytes apart (leading), 8-deep groups 512 (stride), a k-step two groups
        // (a warpgroup whose rows are all past the cell's, as at cells of 48, idles; CELLS 2: so does a cell's where
        // the tile's block does not cover it, or the cell is past the map)
        const int tile_q = q_first + (s / tiles_a_block) % blocks_q;
        if ((group % 2) * 64 < cell_rows && (CELLS == 1 || covers(tile_q, group / 2)))
            wgmma_k_tile<48, TILE_K / K_STEP, 128, 64, WGMMA_PENDING, wgmma_transpose>(
                &acc[0][0][0], descriptor(As[s % STAGES] + group * 4096, 8192, 1024, 1),
                descriptor(Bs[s % STAGES], 4096, 512, 2));
    }
    wgmma_wait<0>();
    copies_wait<0>();  // (only empty groups are left)
    const int first_row = (group % 2) * 64 + (warp % 4) * 16, first_column = n0, cell = group / 2;
#else
    for (int s = 0; s < STAGES - 1; ++s) {  // the first STAGES - 1 tiles in flight (empty groups past the end)
        if (s < tiles) load(s, s);
        copies_commit();
    }
    for (int s = 0; s < tiles; ++s) {
        copies_wait<STAGES - 2>();  // tile s is there (this thread's copies) ...
        __syncthreads();  // ... every thread's, and every thread is done with tile s - 1's buffer
        if (s + STAGES - 1 < tiles) load((s + STAGES - 1) % STAGES, s + STAGES - 1);  // into the buffer s - 1 left
        copies_commit();
        const OPERAND* a_tile = As[s % STAGES];
        const OPERAND* b_tile = Bs[s % STAGES];
#if SPLIT_TF32 && TERMS == 1
#pragma unroll  // (plain TF32: the fragments' addresses constant offsets from one base a tile)
#endif
        for (int kk = 0; kk < TILE_K; kk += K_STEP) {
#if SPLIT_TF32  // A (m, k) at a_tile[k * A_ROW + m]
            split_tf32_k_step(acc, a_tile + kk * A_ROW + warp_m * 32, 1, A_ROW, b_tile + kk * B_ROW + warp_n * 48,
                              B_ROW, 1, g, t);
#else
            unsigned a_frag[2][4], b_frag[6][2];
            for (int i = 0; i < 2; ++i)  // rows (cell values) of each 16 and inner terms (block rows), transposed
                ldmatrix_x4_trans(a_frag[i], a_tile + (kk + (lane & 7) + ((lane >> 4) << 3)) * A_ROW + warp_m * 32 +
                                                 i * 16 + ((lane >> 3) & 1) * 8);
            b_fragments_transposed(b_frag, b_tile, B_ROW, kk, warp_n * 48, lane);
            for (int i = 0; i < 2; ++i)
                for (int j = 0; j < 6; ++j) mma_16816(acc[i][j], a_frag[i], b_frag[j]);
#endif
        }
    }
    copies_wait<0>();  // (only empty groups are left)
    const int first_row = warp_m * 32, first_column = n0 + warp_n * 48, cell = 0;
#endif

#if A_REGISTERS && WGMMA && SPLIT_TF32
    const int row_in_16[2] = {2 * g, 2 * g + 1};  // (fragment rows g and g + 8 hold the cell's values 2 g, 2 g + 1)
#else
    const int row_in_16[2] = {g, g + 8};
#endif
#if SUBTRACT
    double squares = 0;  // this thread's share of the sum of the errors' squares
#endif
    for (int i = 0; i < ROW_PARTS; ++i)
        for (int h = 0; h < 2; ++h) {  // rows g and g + 8 of each 16 (the cell's values); columns 2t, 2t + 1 of each 8
            const int m = first_row + i * 16 + row_in_16[h];
            if (m >= cell_rows || cell >= cells) continue;
            const int pixel_i = m / run, pixel_j = (m % run) / channels, c = m % channels;
            float* row = out + (((long long)(a * step + pixel_i) * map_w + (b + cell) * step + pixel_j) * channels + c)
                         * batch + first_column + 2 * t;
            for (int j = 0; j < COLUMN_PARTS; ++j) {
                if (first_column + j * 8 + 2 * t >= batch) continue;  // (past the minibatch: the last tile's)
                float2 value;  // accumulate 0: the cell's sum is its value (the map need not be zeroed first)
                if (accumulate) value = *(float2*)(row + j * 8);
                else value.x = value.y = 0.0f;
                value.x += acc[i][j][2 * h];
                value.y += acc[i][j][2 * h + 1];
#if SUBTRACT  // the map written is the error r - x, x subtract's value at the same place (its sum of squares kept)
                const float2 x = *(const float2*)(subtract + (row - out) + j * 8);
                value.x -= x.x;
                value.y -= x.y;
                squares += (double)(value.x * value.x) + (double)(value.y * value.y);
#endif
                *(float2*)(row + j * 8) = value;
            }
        }
#if SUBTRACT  // the block's sum into partials[its index in the grid], halving in shared memory (same order each run)
    static_assert((TRANSPOSE_THREADS & (TRANSPOSE_THREADS - 1)) == 0 && TRANSPOSE_THREADS * 8 <= SHARED_BYTES,
                  "the halving takes a power of two of threads, one double each in the tiles' shared memory");
    __syncthreads();  // every warp done with the tiles
    double* const sums = (double*)transpose_shared;
    sums[tid] = squares;
    __syncthreads();
    for (int half = TRANSPOSE_THREADS / 2; half > 0; half /= 2) {
        if (tid < half) sums[tid] += sums[tid + half];
        __syncthreads();
    }
    if (tid == 0) partials[((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x] = sums[0];
#endif
}
"""


def mma_transpose_source(variant: str, geometry: tuple[int, int, int, int] | None = None, split_tf32: bool = False,
                         terms: int = 3, subtract: bool = False) -> str:
    """The kernel's CUDA source with the tile constants of ``variant`` (:data:`VARIANTS`) defined, and where given
    ``geometry``, the layer's ``(rows, channels, field, step)`` compiled in (``LAYER_GEOMETRY``).  With
    ``split_tf32``, the float32 kernel on TF32 tensor cores (:mod:`.mma_float32`) in a variant of
    :data:`SPLIT_VARIANTS`, ``terms`` TF32 products a k-step (:data:`.mma_update.SPLIT_TF32_HELPERS`)."""
    if variant in WGMMA_VARIANTS:
        tile_k, stages, pending = WGMMA_VARIANTS[variant]
        defines = {"WGMMA": 1, "WGMMA_PENDING": pending, "TILE_K": tile_k, "STAGES": stages, "CELL_ROWS": CELL_ROWS,
                   "A_ROW": CELL_ROWS * cells_a_block(variant), "B_ROW": TILE_N, "SHARED_BYTES": shared_bytes(variant),
                   "CELLS": cells_a_block(variant)}
        helpers = (MMA_HELPERS + wgmma.WGMMA_HELPERS
                   + wgmma.wgmma_function("wgmma_transpose", TILE_N, "bfloat16", transpose_b=True, transpose_a=True))
    elif variant in SPLIT_WGMMA_VARIANTS:
        tile_k, stages, a_registers = SPLIT_WGMMA_VARIANTS[variant]
        defines = {"WGMMA": 1, "TILE_K": tile_k, "STAGES": stages, "A_REGISTERS": a_registers, "CELL_ROWS": CELL_ROWS,
                   "A_ROW": tile_k, "B_ROW": TILE_N, "SHARED_BYTES": shared_bytes(variant, True),
                   "TRANSPOSE_MIN_BLOCKS": 1}
        helpers = (MMA_HELPERS + wgmma.WGMMA_HELPERS + wgmma.wgmma_function("wgmma_transpose", TILE_N, "tf32")
                   + wgmma.wgmma_registers_function("wgmma_transpose_registers", TILE_N))
    else:
        tile_k, stages = (SPLIT_VARIANTS if split_tf32 else VARIANTS)[variant]
        defines = {"TILE_K": tile_k, "STAGES": stages, "CELL_ROWS": CELL_ROWS, "A_ROW": A_ROW, "B_ROW": B_ROW,
                   "SHARED_BYTES": shared_bytes(variant, split_tf32)}
        helpers = MMA_HELPERS
    if split_tf32 or variant in SPLIT_WGMMA_VARIANTS:
        defines |= {"SPLIT_TF32": 1, "TERMS": split_terms(terms)}
        helpers += SPLIT_TF32_HELPERS + (mma_update.SPLIT_WGMMA_HELPERS if variant in SPLIT_WGMMA_VARIANTS else "")
    if geometry is not None:
        defines |= {"LAYER_GEOMETRY": 1} | dict(zip(("LAYER_ROWS", "LAYER_CHANNELS", "LAYER_FIELD", "LAYER_STEP"),
                                                     geometry))
    if subtract:
        defines["SUBTRACT"] = 1
    return "".join(f"#define {name} {value}\n" for name, value in defines.items()) + helpers + _SOURCE


@functools.lru_cache(maxsize=None)
def _kernel(variant: str, geometry: tuple[int, int, int, int] | None = None, subtract: bool = False):
    import cupy

    source = mma_transpose_source(variant, geometry, subtract=subtract)
    if variant in WGMMA_VARIANTS:
        kernel = wgmma.compiled_module(source, "mma_transpose").get_function("dasksae_wgmma_filter_transpose_fold")
        kernel.max_dynamic_shared_size_bytes = shared_bytes(variant)
        return kernel
    kernel = cupy.RawKernel(source, "dasksae_mma_filter_transpose_fold", options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = shared_bytes(variant)
    return kernel


def layer_fits(channels: int, rows: int, batch: int, field: int, step: int) -> bool:
    """What :func:`transpose_fits` asks of the layer's shape alone: ``field`` a multiple of ``step``, ``step C`` in
    whole 4s (the weights' runs are copied 16 bytes at a time where they are whole 8s, else 8: a first stage's 3
    channels at step 4), ``step^2 C`` at most 128, ``rows`` in whole 32s, ``M`` in whole 8s."""
    return not (field % step or (step * channels) % 4 or step * step * channels > CELL_ROWS or rows % TILE_K
                or batch % 8)


def transpose_fits(out, weight_rows, y_rows, field: int, step: int, blocks_h: int, blocks_w: int,
                   operands: str = "uint16") -> bool:
    """Whether :func:`add_transpose_bfloat16` takes this product: a float32 map ``out (H, W, C, M)`` with ``H =
    (blocks_h - 1) step + field`` (``W`` likewise), bfloat16 (``uint16``; ``operands``: ``float32`` for
    :func:`~dasksae.kernels.mma_float32.add_transpose_float32`) ``weight_rows (blocks, rows, f*f*C)`` and ``y_rows
    (blocks, rows, M)``; ``field`` a multiple of ``step``, ``step C`` in whole 4s, ``step^2 C`` at most 128, ``rows``
    in whole 32s, ``M`` in whole 8s (M=512: 6 tiles of 96 columns, the last a third full); C-contiguous and 16-byte
    aligned."""
    if out.ndim != 4 or weight_rows.ndim != 3 or y_rows.ndim != 3:
        return False
    height, width, channels, batch = out.shape
    count, rows, fan_in = weight_rows.shape
    if out.dtype.name != "float32" or weight_rows.dtype.name != operands or y_rows.dtype.name != operands:
        return False
    if not layer_fits(channels, rows, batch, field, step):
        return False
    if (height, width) != ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field):
        return False
    if count != blocks_h * blocks_w or fan_in != field * field * channels or y_rows.shape != (count, rows, batch):
        return False
    return all(aligned(array) for array in (out, weight_rows, y_rows))


def transpose_launch(out_shape, weights_shape, field: int, step: int, blocks_h: int, blocks_w: int,
                     variant: str | None = None, accumulate: bool = True):
    """``(grid, scalar arguments after the three arrays)`` of ``dasksae_mma_filter_transpose_fold``: a block a cell
    (or ``variant``'s :func:`cells_a_block` side by side) and 96 columns; ``accumulate`` False: the kernel writes
    each cell's sum instead of adding it to the map's value (every cell is written: the map need not be zeroed)."""
    height, width, channels, batch = out_shape
    _, rows, _ = weights_shape
    grid = (-(-(width // step) // cells_a_block(variant)), height // step, -(-batch // TILE_N))
    return grid, (rows, batch, channels, field, step, blocks_h, blocks_w, width, int(accumulate))


def add_transpose_bfloat16(out, weight_rows, y_rows, field: int, step: int, blocks_h: int, blocks_w: int,
                           variant: str | None = None, accumulate: bool = True, subtract=None):
    """``out +=`` the fold of ``W^T y`` on tensor cores, each cell's sum written once (the arrays must
    :func:`transpose_fits`), in ``variant``'s tiles (default: :func:`variant_for` the rows); ``accumulate`` False:
    ``out =`` it (``out``'s values are not read).  With ``subtract`` (and ``accumulate`` False; a map that
    :func:`subtract_fits`): ``out = W^T y - subtract``, and the sum of ``out``'s squares in float64 is returned (a
    device scalar: the blocks' partial sums, each over a block's cells in the same order every run, then summed)."""
    variant = variant_for(weight_rows.shape[1], variant)
    if subtract is not None and (accumulate or not subtract_fits(out, subtract)):
        raise ValueError("the fold subtracts only a float32 map of out's shape, C-contiguous and aligned, into a map "
                         "it writes whole (accumulate=False).")
    grid, arguments = typed_launch(out.shape, weight_rows.shape, field, step, blocks_h, blocks_w, variant, accumulate)
    geometry = (weight_rows.shape[1], out.shape[2], field, step) if mma_update.COMPILED_GEOMETRY else None
    partials, extra = None, ()
    if subtract is not None:
        import cupy

        partials = cupy.empty(grid[0] * grid[1] * grid[2], dtype=numpy.float64)
        extra = (subtract, partials)
    _kernel(variant, geometry, subtract is not None)(grid, (block_threads(variant),),
                                                     (weight_rows, y_rows, out, *arguments, *extra),
                                                     shared_mem=shared_bytes(variant))
    return None if partials is None else partials.sum()


def subtract_fits(out, subtract) -> bool:
    """Whether :func:`add_transpose_bfloat16` takes ``subtract``: a float32 map of ``out``'s shape, C-contiguous and
    16-byte aligned."""
    return (subtract.shape == out.shape and subtract.dtype.name == "float32" and subtract.flags.c_contiguous
            and aligned(subtract))


@functools.lru_cache(maxsize=256)
def typed_launch(*shapes):
    """:func:`transpose_launch` with its arguments as the kernel's ints, made once for these shapes."""
    grid, arguments = transpose_launch(*shapes)
    return grid, tuple(numpy.int32(value) for value in arguments)
