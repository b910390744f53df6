"""The bfloat16 tensor-core update's CUDA source (``dasksae/kernels/mma_update.py``), run on the CPU.

As in ``tests/test_simt_gemm_on_cpu.py`` (whose shim this one extends), g++
compiles the very source text, one fiber for each CUDA thread of a
block, the blocks one after another.  ``mma.sync.m16n8k16`` is emulated from
the register fragments as the PTX ISA lays them out for bfloat16 operands
(A: registers 0-3 hold rows g, g+8, g, g+8 and inner terms 2t..2t+1,
2t..2t+1, 2t+8.., 2t+8..; B: registers 0-1 hold inner terms 2t.. and 2t+8.. of
column g; D: rows g, g, g+8, g+8 and columns 2t, 2t+1; g = lane / 4,
t = lane % 4): a fragment gathered from the wrong place shows as a wrong
product.  ``ldmatrix.x4.trans`` (``kernels/mma_forward.py``) likewise: lanes
8q .. 8q+7 give matrix q's row addresses, and lane (g, t) receives column
g's rows 2t and 2t+1.  ``cp.async`` is a copy (or 16 zero bytes where the kernel guards
a row).  Says nothing of speed, nor of the hardware's own layout beyond the
ISA's text.
"""

import ctypes
import shutil

import numpy
import pytest

from dasksae.kernels import mma_update, simt_gemm
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

# the block's shared memory as the descriptors and __cvta_generic_to_shared count it: from shared_arena, which a kernel
# sets (SET_SHARED_ARENA) before it builds a descriptor
SHARED_ARENA = r"""
#include <cstring>
static unsigned char* shared_arena;
static inline unsigned __cvta_generic_to_shared(const void* pointer)
{
    return (unsigned)((const unsigned char*)pointer - shared_arena);
}
"""

MMA_EMULATION = SHARED_ARENA + r"""
#include <cstring>
#include <memory>
// a warp's own barrier (mma.sync and ldmatrix exchange fragments between the 32 lanes of a warp), and the named
// barriers (bar.sync / bar.arrive with an id and a count: the update's specialized warps), made when first used
static std::unique_ptr<Barrier> warp_barriers[16], named_barriers[16];
static Barrier& made(std::unique_ptr<Barrier>* barriers, const int id, const int count)
{
    if (!barriers[id]) barriers[id] = std::make_unique<Barrier>(count);
    return *barriers[id];
}
static inline void warp_sync() { made(warp_barriers, threadIdx.x / 32, 32).arrive_and_wait(); }
static inline void named_sync(const int id, const int count) { made(named_barriers, id, count).arrive_and_wait(); }
static inline void named_arrive(const int id, const int count) { (void)made(named_barriers, id, count).arrive(); }
static inline unsigned __float_as_uint(float value) { unsigned bits; std::memcpy(&bits, &value, 4); return bits; }
static inline float from_bfloat16(unsigned bits16) { const unsigned bits = bits16 << 16; float f; std::memcpy(&f, &bits, 4); return f; }
static inline void copy_16(unsigned short* shared, const unsigned short* global, const bool whole)
{
    if (whole) std::memcpy(shared, global, 16);
    else std::memset(shared, 0, 16);
}
static inline void copy_8(float* shared, const float* global, const bool whole)
{
    if (whole) std::memcpy(shared, global, 8);
    else std::memset(shared, 0, 8);
}
static inline void copies_commit() {}
static inline void prefetch_l2(const float*) {}
static inline float4 load_once(const float* address) { return *(const float4*)address; }
static inline void store_once(float* address, const float4 value) { *(float4*)address = value; }
static inline void store_pair_once(unsigned short* address, const unsigned low, const unsigned high)
{
    ((unsigned*)address)[0] = low;
    ((unsigned*)address)[1] = high;
}
template <int PENDING> static inline void copies_wait() {}
// bulk copies (STAGE_BULK): a copy at once; the barrier a count of the bytes expected less those landed, which must be
// zero when the kernel waits for it (on the GPU a wrong count never completes, or lets the kernel read too early), and
// the copies' addresses and sizes in whole 16 bytes: each fault counted in bulk_faults (the tests read it)
extern "C" { int bulk_faults = 0; }
static inline void bulk_barrier_init(unsigned long long* barrier) { *barrier = 0; }
static inline void bulk_expect(unsigned long long* barrier, const unsigned bytes)
{
    __atomic_add_fetch((long long*)barrier, (long long)bytes, __ATOMIC_SEQ_CST);
}
static inline void bulk_copy(float* shared, const float* global, const unsigned bytes, unsigned long long* barrier)
{
    if ((unsigned long long)shared % 16 || (unsigned long long)global % 16 || bytes % 16 || bytes == 0)
        __atomic_add_fetch(&bulk_faults, 1, __ATOMIC_SEQ_CST);
    std::memcpy(shared, global, bytes);
    __atomic_sub_fetch((long long*)barrier, (long long)bytes, __ATOMIC_SEQ_CST);
}
static inline void bulk_wait(unsigned long long* barrier, const unsigned)
{
    if (__atomic_load_n((long long*)barrier, __ATOMIC_SEQ_CST) != 0) __atomic_add_fetch(&bulk_faults, 1, __ATOMIC_SEQ_CST);
}
static unsigned mma_a[512][4], mma_b[512][2];  // (up to 512 threads) every lane of a warp calls mma_16816 together
static inline void mma_16816(float* d, const unsigned* a, const unsigned* b)
{
    const int tid = threadIdx.x, warp = tid & ~31, lane = tid & 31, g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) mma_a[tid][r] = a[r];
    for (int r = 0; r < 2; ++r) mma_b[tid][r] = b[r];
    warp_sync();
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), column = 2 * t + e % 2;
        float sum = d[e];
        for (int k = 0; k < 16; ++k) {  // A's (row, k) and B's (k, column): whose register, which one, which half
            const unsigned a_bits = mma_a[warp + (row % 8) * 4 + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)];
            const unsigned b_bits = mma_b[warp + column * 4 + (k % 8) / 2][k >= 8];
            const unsigned shift = 16 * (k % 2);
            sum += from_bfloat16((a_bits >> shift) & 0xffffu) * from_bfloat16((b_bits >> shift) & 0xffffu);
        }
        d[e] = sum;
    }
    warp_sync();
}
static const unsigned short* ldmatrix_rows[512];  // every lane of a warp calls ldmatrix together, as kernels do
// lane (g, t) gets, in r[q], of the matrix whose rows lanes 8q .. 8q + 7 gave: row g's columns 2t and 2t + 1, or
// (transposed) column g's rows 2t and 2t + 1
static inline void ldmatrix_emulated(unsigned* r, const unsigned short* row_address, const bool transposed)
{
    const int tid = threadIdx.x, warp = tid & ~31, lane = tid & 31, g = lane / 4, t = lane % 4;
    ldmatrix_rows[tid] = row_address;
    warp_sync();
    for (int q = 0; q < 4; ++q) {
        const unsigned short* const* rows = ldmatrix_rows + warp + 8 * q;
        const unsigned low = transposed ? rows[2 * t][g] : rows[g][2 * t];
        const unsigned high = transposed ? rows[2 * t + 1][g] : rows[g][2 * t + 1];
        r[q] = low | (high << 16);
    }
    warp_sync();
}
static inline void ldmatrix_x4(unsigned* r, const unsigned short* row_address)
{
    ldmatrix_emulated(r, row_address, false);
}
static inline void ldmatrix_x4_trans(unsigned* r, const unsigned short* row_address)
{
    ldmatrix_emulated(r, row_address, true);
}
"""

WGMMA_EMULATION = r"""
// wgmma_emulated: a thread's share of a wgmma, read from shared memory through the descriptors (SHARED_ARENA's
// addresses), one thread at a time; the fences, commits and waits are nothing here (the kernels' barriers order the
// shared memory), and descriptor() is dasksae.kernels.wgmma's
static inline unsigned long long descriptor(const void* shared, unsigned leading, unsigned stride, unsigned swizzle = 0)
{
    const unsigned address = __cvta_generic_to_shared(shared);
    return (unsigned long long)((address >> 4) & 0x3fff) | ((unsigned long long)((leading >> 4) & 0x3fff) << 16)
           | ((unsigned long long)((stride >> 4) & 0x3fff) << 32) | ((unsigned long long)(swizzle & 3) << 62);
}
#define ASYNC_PROXY_FENCE()
#define WGMMA_FENCE()
#define WGMMA_COMMIT()
template <int GROUPS> static inline void wgmma_wait() {}
template <int COUNT> static inline void sums_fenced(float*) {}
#define SET_SHARED_ARENA(arena) shared_arena = (unsigned char*)(arena)
// operand (row, k) of a wgmma through its descriptor.  No swizzle: K-major, 8-row groups `stride` bytes apart and
// 16-byte columns of K `leading` apart; MN-major (a transposed B), 16-byte groups of rows `stride` apart and 8-deep
// groups of K `leading` apart.  Swizzled rows of `width` bytes (128, 64, 32; CUTLASS's canonical layouts): K-major,
// row r at (r / 8) stride + (r % 8) width, K along the row (the leading offset unused); MN-major, 8 rows of K `width`
// apart and 8-deep groups `stride`, the rows' `width`-byte groups `leading` apart; then each 16-byte chunk's index
// XORed with the address bits from 7 on (CUTLASS's Swizzle<3|2|1, 4, 3>).  bfloat16 (size 2) widened, TF32 (size 4)
// its low 13 bits dropped
static inline float wgmma_operand(unsigned long long descriptor, int row, int k, int size, int mn_major)
{
    const unsigned char* base = shared_arena;
    const long start = (descriptor & 0x3fff) << 4;
    const long leading = ((descriptor >> 16) & 0x3fff) << 4, stride = ((descriptor >> 32) & 0x3fff) << 4;
    const int per = 16 / size, swizzle = (int)((descriptor >> 62) & 3), width = 256 >> swizzle, across = width / size;
    long byte = swizzle == 0
        ? start + (mn_major ? (row / per) * stride + (k / 8) * leading + (k % 8) * 16 + (row % per) * size
                            : (row / 8) * stride + (k / per) * leading + (row % 8) * 16 + (k % per) * size)
        : start + (mn_major ? (row / across) * leading + (row % across) * size + (k % 8) * width + (k / 8) * stride
                            : (row / 8) * stride + (row % 8) * width + k * size);
    if (swizzle) byte ^= ((byte >> 7) & ((width >> 4) - 1)) << 4;
    unsigned bits = 0;
    if (size == 2) {
        unsigned short half;
        std::memcpy(&half, base + byte, 2);
        bits = (unsigned)half << 16;
    } else {
        std::memcpy(&bits, base + byte, 4);
        bits &= 0xffffe000u;
    }
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}
// this thread's share of d (+)= A B for an m64nNkK wgmma: warp w of the warpgroup rows 16 w + g (+ 8), columns
// 8 j + 2 t (+ 1), in d[4 j + 2 (row half) + column]; A and B MN-major (transposed) where a_mn_major, b_mn_major
static inline void wgmma_emulated(float* d, unsigned long long a, unsigned long long b, int keep, int n, int k,
                                  int size, int a_mn_major, int b_mn_major)
{
    const int tid = threadIdx.x % 128, warp = tid / 32, g = (tid % 32) / 4, t = tid % 4;
    for (int j = 0; j < n / 8; ++j)
        for (int e = 0; e < 4; ++e) {
            const int row = warp * 16 + g + 8 * (e / 2), column = j * 8 + 2 * t + (e % 2);
            float sum = keep ? d[j * 4 + e] : 0.0f;
            for (int i = 0; i < k; ++i)
                sum += wgmma_operand(a, row, i, size, a_mn_major) * wgmma_operand(b, column, i, size, b_mn_major);
            d[j * 4 + e] = sum;
        }
}
// wgmma_emulated with A from registers (TF32, k 8): each thread's four registers a[0 .. 3] (rows g, g + 8 of its
// warp's 16 at columns t, t + 4: a[0] (g, t), a[1] (g + 8, t), a[2] (g, t + 4), a[3] (g + 8, t + 4)) published to
// the block, every thread of the block waiting there (as __shfl_xor_sync's shim: a kernel's every thread must take
// the product, as mma_forward's do), then this thread's share of d from its warpgroup's registers and B
static unsigned wgmma_a_registers[1024][4];
static inline void wgmma_emulated_registers(float* d, const unsigned* a, unsigned long long b, int keep, int n)
{
    for (int i = 0; i < 4; ++i) wgmma_a_registers[threadIdx.x][i] = a[i];
    block_barrier->arrive_and_wait();
    const int first = threadIdx.x / 128 * 128, tid = threadIdx.x % 128, warp = tid / 32, g = (tid % 32) / 4,
              t = tid % 4;
    for (int j = 0; j < n / 8; ++j)
        for (int e = 0; e < 4; ++e) {
            const int half = e / 2, column = j * 8 + 2 * t + (e % 2);
            float sum = keep ? d[j * 4 + e] : 0.0f;
            for (int i = 0; i < 8; ++i) {  // A (16 warp + g + 8 half, i): lane 4 g + i % 4's register half + 2 (i / 4)
                unsigned bits = wgmma_a_registers[first + warp * 32 + g * 4 + i % 4][half + 2 * (i / 4)] & 0xffffe000u;
                float value;
                std::memcpy(&value, &bits, 4);
                sum += value * wgmma_operand(b, column, i, 4, 0);
            }
            d[j * 4 + e] = sum;
        }
    block_barrier->arrive_and_wait();
}
"""

RUNNER = GRID_RUNNER + r"""
extern "C" void run_update(const unsigned short* codes, const unsigned short* x, const unsigned short* error, float* raw,
                           float* velocity, unsigned short* operand, const float* inverse_norms, const float* row_dots,
                           float* partial_squares, float lr, float momentum, unsigned grid_x, unsigned grid_y,
                           unsigned grid_z, unsigned block_threads, int rows, int fan_in, int width, int half,
                           int blocks_w, int step, int field_rows, long long in_row, long long in_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_mma_filter_weight_grad_update(codes, x, error, raw, velocity, operand, inverse_norms, row_dots,
                                              partial_squares, lr, momentum, rows, fan_in, width, half, blocks_w, step,
                                              field_rows, in_row, in_pixel);
    }, block_threads);
}
"""


@pytest.fixture(scope="module", params=["rows", "fragments", "rows-l2", "rows-wide", "rows-staged", "frag64-staged",
                                        "frag64-staged-first", "rows-cs", "rows-wide-cs", "rows-resident-whole",
                                        "rows-resident-whole-1", "rows-144", "rows-overlap", "rows-wide-wgmma",
                                        "rows-bulk-raw-wgmma", "rows-bulk-wgmma", "rows-wide-wgmma-192"])
def kernel_on_cpu(tmp_path_factory, request):
    """The kernel built under g++ with each epilogue that takes the step (mma_update.EPILOGUE_VARIANTS; a ``wgmma``
    variant's products emulated through their descriptors)."""
    library = update_built_on_cpu(tmp_path_factory.mktemp("mma"), request.param)
    library.variant = request.param
    return library


def update_built_on_cpu(folder, variant: str, split_master: bool = False):
    """``variant``'s update kernel built under g++ in ``folder`` (``wgmma`` emulated; with ``split_master`` on the
    weights' halves), its ``run_update`` taking the kernel's arguments, the grid and the block's threads."""
    on_wgmma = mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA")
    runner = RUNNER.replace("dasksae_mma_", "dasksae_wgmma_") if on_wgmma else RUNNER
    library = built_on_cpu(folder, SHIM + MMA_EMULATION + WGMMA_EMULATION + (SPLIT_MASTER_SHIM if split_master else "")
                           + mma_update.mma_update_source(variant, split_master=split_master) + runner)
    library.run_update.argtypes = ([ctypes.c_void_p] * 9 + [ctypes.c_float] * 2 + [ctypes.c_uint] * 4
                                   + [ctypes.c_int] * 7 + [ctypes.c_longlong] * 2)
    return library


# the epilogues DASKSAE_MMA_EPILOGUE=auto takes (mma_update.epilogue_for; on wgmma, WGMMA_VARIANT)
TRAINING_EPILOGUES = {mma_update.epilogue_for("auto", channels) for channels in (3, 8)} | {mma_update.WGMMA_VARIANT}


def _bfloat16(values):
    """The bfloat16 bits (``uint16``) of float32 ``values``, rounded to nearest even, and those values as float64."""
    bits = values.astype(numpy.float32).view(numpy.uint32).astype(numpy.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(numpy.uint16)
    return bits, (bits.astype(numpy.uint32) << 16).view(numpy.float32).astype(numpy.float64)


def _pointer(array):
    return None if array is None else array.ctypes.data


def to_tf32(values):
    """float32 ``values`` rounded to TF32 as ``cvt.rna.tf32.f32`` rounds them (10 bits of mantissa, to nearest, ties
    away from zero; finite values)."""
    bits = values.view(numpy.uint32)
    return ((bits + numpy.uint32(0x1000)) & numpy.uint32(0xFFFFE000)).view(numpy.float32)


def update_case(seed: int, with_error: bool, with_operand: bool, channels: int = 4, bfloat16: bool = True,
                tf32: bool = False, batch: int = 64) -> dict:
    """3x2 blocks of 6x6x4 fields at step 2 (fan-in 144: a part-empty second tile of 96 columns; with 12 channels 432,
    5 tiles, the last part full), 136 rows (a guarded
    second tile of rows), a minibatch of 64 (2 tiles of 32 inner terms a map: the loads switch maps between them; a
    ``wgmma`` variant's tests take 96, so that the middle of its 3 k-tiles of 64 holds both maps' terms):
    the kernel's arguments (bfloat16 bits as ``uint16``; with ``bfloat16=False`` float32 codes and maps, for the split
    TF32 kernel, and with ``tf32`` as well TF32 values, whose products the one-term kernel takes exactly; NumPy arrays)
    and what the update's array code makes of them in float64 from the same values and ``row_dots``: ``expected_raw``,
    ``expected_velocity``, ``expected_norms``."""
    from dasksae.kernels.local_filter import gather_patches

    rng = numpy.random.default_rng(seed)
    field, step, blocks_h, blocks_w, rows = 6, 2, 3, 2, 136
    shape = ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)
    count, fan_in, width = blocks_h * blocks_w, field * field * channels, batch * (2 if with_error else 1)
    def stored(values):  # (what the kernel reads, its values in float64)
        if bfloat16:
            return _bfloat16(values)
        values = to_tf32(values.astype(numpy.float32)) if tf32 else values.astype(numpy.float32)
        return values, values.astype(numpy.float64)

    x_bits, x = stored(rng.standard_normal(shape))
    error_bits, error = stored(rng.standard_normal(shape)) if with_error else (None, None)
    codes_bits, codes = stored(rng.standard_normal((count, rows, width)))
    fields = gather_patches(x, field, step, blocks_h, blocks_w)
    if with_error:
        fields = numpy.concatenate([fields, gather_patches(error, field, step, blocks_h, blocks_w)], axis=2)
    raw = rng.standard_normal((count, rows, fan_in)).astype(numpy.float32)
    velocity = (rng.standard_normal((count, rows, fan_in)) * 0.1).astype(numpy.float32)
    inverse_norms = (1 / numpy.sqrt((raw.astype(numpy.float64) ** 2).sum(-1))).astype(numpy.float32)
    row_dots = rng.standard_normal((count, rows)).astype(numpy.float32)
    case = {"codes": codes_bits, "x": x_bits, "error": error_bits, "raw": raw, "velocity": velocity,
            "operand": numpy.zeros((count, rows, fan_in), numpy.uint16) if with_operand else None,
            "inverse_norms": inverse_norms, "row_dots": row_dots, "lr": 0.01, "momentum": 0.9,
            "field": field, "step": step, "blocks_w": blocks_w,
            "gradient": numpy.matmul(codes, fields.transpose(0, 2, 1))}  # float64, from the values the kernel reads
    return with_expected(case)


def with_expected(case: dict) -> dict:
    """``case`` with what the update's array code makes of its ``raw``, ``velocity``, ``inverse_norms`` and
    ``row_dots`` and its gradient, in float64: ``expected_raw``, ``expected_velocity``, ``expected_norms`` (made
    again where a test changes ``raw``)."""
    from dasksae.kernels.normalize import unit_rows_sgd

    expected_raw, expected_velocity = case["raw"].astype(numpy.float64), case["velocity"].astype(numpy.float64)
    expected_norms = case["inverse_norms"].astype(numpy.float64)
    unit_rows_sgd(expected_raw, expected_velocity, case["gradient"], expected_norms, case["lr"], case["momentum"],
                  refresh_norms=True, row_dots=case["row_dots"].astype(numpy.float64))
    return case | {"expected_raw": expected_raw, "expected_velocity": expected_velocity,
                   "expected_norms": expected_norms}


def assert_updated_as_expected(case: dict, raw, velocity, operand, inverse_norms):
    """The kernel's results (NumPy arrays) against :func:`update_case`'s float64 update."""
    numpy.testing.assert_allclose(velocity, case["expected_velocity"], rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(raw, case["expected_raw"], rtol=1e-5, atol=1e-6)
    if operand is not None:
        numpy.testing.assert_array_equal(operand, _bfloat16(raw)[0])  # the new U's bfloat16 bits
    numpy.testing.assert_allclose(inverse_norms, case["expected_norms"], rtol=1e-5)


@pytest.mark.parametrize("with_error, with_operand", [(True, True), (False, False)], ids=["x-and-error", "x-only"])
def test_the_tensor_core_update_takes_the_unit_norm_step_from_the_maps(kernel_on_cpu, with_error, with_operand):
    """``codes [fields(x) | fields(error)]^T`` in bfloat16 with float32 sums, taken as the unit-norm SGD step as the
    update's array code takes it (float64, the same bfloat16 values, the same ``row_dots``), ``U``'s bfloat16 copy
    rewritten, and the per-warp sums of squares giving the new ``1/||U||`` (:func:`update_case`).  The epilogues
    the training takes by default (``rows``, ``rows-wide``) in both cases; the others in the fuller one (the suite's
    time: CI's ten minutes)."""
    if not with_error and kernel_on_cpu.variant not in TRAINING_EPILOGUES:
        pytest.skip(f"{kernel_on_cpu.variant} is checked with x and the error only")
    on_wgmma = mma_update.EPILOGUE_VARIANTS[kernel_on_cpu.variant].get("WGMMA")
    # (wgmma: codes of 192 with the error map, 3 k-tiles of 64, the middle one from both maps; of 128 without)
    case = update_case(11, with_error, with_operand, batch=(96 if with_error else 128) if on_wgmma else 64)
    raw, velocity, operand = case["raw"], case["velocity"], case["operand"]
    count, rows, _ = raw.shape
    assert mma_update.update_fits(case["codes"], case["x"], case["error"], raw, velocity, operand,
                                  case["inverse_norms"], case["row_dots"], case["field"], case["blocks_w"])
    grid, _ = simt_gemm.weight_grad_launch(case["codes"].shape, case["x"].shape, case["field"], case["step"],
                                           case["blocks_w"])
    assert grid == (2, 2, count)
    grid, (threads,), arguments, _ = mma_update._update_launch(  # what the launch uses: 64-row variants take 3
        kernel_on_cpu.variant, case["codes"].shape, case["x"].shape, case["field"], case["step"], case["blocks_w"])
    # blocks of rows (128 threads: 64 rows), and the 2 column tiles a block each or (resident variants) in groups, or
    # (rows-144) one tile of 144 columns, 3 warps across, or (rows-wide-wgmma-192) one of 192, 4 warps across
    warps = mma_update.warps_across(kernel_on_cpu.variant)
    tiles = -(-case["raw"].shape[2] // mma_update.tile_columns(kernel_on_cpu.variant))
    assert (tiles, warps) == {2: (2, 2), 3: (1, 3), 4: (1, 4)}[warps]
    column_groups = -(-tiles // mma_update.column_tiles_a_block(kernel_on_cpu.variant))
    assert grid == (-(-rows // mma_update.tile_rows(kernel_on_cpu.variant)), column_groups, count)
    assert threads == mma_update.block_threads(kernel_on_cpu.variant)
    partial_squares = numpy.full((count * rows, tiles * warps), numpy.nan, numpy.float32)
    kernel_on_cpu.run_update(case["codes"].ctypes.data, case["x"].ctypes.data, _pointer(case["error"]),
                             raw.ctypes.data, velocity.ctypes.data, _pointer(operand), case["inverse_norms"].ctypes.data,
                             case["row_dots"].ctypes.data, partial_squares.ctypes.data, case["lr"], case["momentum"],
                             *grid, threads, *arguments)
    # every warp's part of every row is there (what sums them adds all), zero from the warp wholly past fan_in (the
    # second tile's second warp: columns 144..191; none in a tile of 144)
    assert ctypes.c_int.in_dll(kernel_on_cpu, "bulk_faults").value == 0  # bulk copies whole, and as many as expected
    assert not numpy.isnan(partial_squares).any()
    assert (partial_squares[:, 3] == 0).all() if warps != 3 else (partial_squares != 0).all()
    assert (partial_squares[:, :3] != 0).all()
    new_norms = (1 / numpy.sqrt(partial_squares.astype(numpy.float64).sum(-1))).reshape(count, rows)
    assert_updated_as_expected(case, raw, velocity, operand, new_norms)


@pytest.mark.parametrize("variant", ["rows-overlap", "rows", "rows-overlap-wgmma"])
def test_the_overlapped_update_takes_many_column_tiles_in_turn(tmp_path, variant):
    """``rows-overlap``'s producer and consumer warps over 5 column tiles (fan-in 432), so that the producers wait for
    the consumers to free a products tile (from the third tile on) and the tiles alternate an odd number of times:
    the same update as NumPy's (and ``rows``'s, the same case).  ``rows-overlap-wgmma``'s producers on ``wgmma``
    (emulated) at a minibatch of 96: 3 k-tiles of 64 resident, the middle one from both maps."""
    on_wgmma = mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA")
    library = update_built_on_cpu(tmp_path, variant)
    case = update_case(13, True, True, channels=12, batch=96 if on_wgmma else 64)
    raw, velocity, operand = case["raw"], case["velocity"], case["operand"]
    count, rows, fan_in = raw.shape
    grid, (threads,), arguments, _ = mma_update._update_launch(variant, case["codes"].shape, case["x"].shape,
                                                                case["field"], case["step"], case["blocks_w"])
    assert fan_in == 432 and grid == (2, 5 if variant == "rows" else 1, count)
    partial_squares = numpy.full((count * rows, 10), numpy.nan, numpy.float32)
    library.run_update(case["codes"].ctypes.data, case["x"].ctypes.data, case["error"].ctypes.data, raw.ctypes.data,
                       velocity.ctypes.data, operand.ctypes.data, case["inverse_norms"].ctypes.data,
                       case["row_dots"].ctypes.data, partial_squares.ctypes.data, case["lr"], case["momentum"], *grid,
                       threads, *arguments)
    assert not numpy.isnan(partial_squares).any() and (partial_squares[:, 9] == 0).all()
    new_norms = (1 / numpy.sqrt(partial_squares.astype(numpy.float64).sum(-1))).reshape(count, rows)
    assert_updated_as_expected(case, raw, velocity, operand, new_norms)


def test_the_tensor_core_update_refuses_what_it_cannot_read():
    """Codes or maps not bfloat16, a minibatch not in whole 32s, a fan-in not in whole 4s (the rows epilogue's float4s),
    the error map's width wrong."""
    codes = numpy.zeros((6, 136, 128), numpy.uint16)
    x = numpy.zeros((10, 8, 4, 64), numpy.uint16)
    raw = numpy.zeros((6, 136, 144), numpy.float32)
    rows = numpy.zeros((6, 136), numpy.float32)
    fit = mma_update.update_fits
    assert fit(codes, x, x, raw, raw.copy(), None, rows, rows.copy(), 6, 2)
    assert not fit(codes, x, None, raw, raw.copy(), None, rows, rows.copy(), 6, 2)  # width 128 is 2 x 64: the error map
    assert not fit(codes.astype(numpy.float32), x, x, raw, raw.copy(), None, rows, rows.copy(), 6, 2)
    assert not fit(codes[:, :, :96].copy(), x[..., :48].copy(), x[..., :48].copy(), raw, raw.copy(), None, rows, rows, 6, 2)
    odd = numpy.zeros((10, 8, 3, 64), numpy.uint16)  # fan-in 6*6*3 = 108 is even; 5*5*3 = 75 is not
    assert not fit(codes, odd, odd, numpy.zeros((6, 136, 75), numpy.float32), numpy.zeros((6, 136, 75), numpy.float32),
                   None, rows, rows.copy(), 5, 2)
    two = numpy.zeros((10, 8, 2, 64), numpy.uint16)  # fan-in 5*5*2 = 50: even, not in whole 4s
    assert not fit(codes, two, two, numpy.zeros((6, 136, 50), numpy.float32), numpy.zeros((6, 136, 50), numpy.float32),
                   None, rows, rows.copy(), 5, 2)
    assert not fit(codes, x, x, raw, raw.copy(), numpy.zeros((6, 136, 144), numpy.float32), rows, rows.copy(), 6, 2)


# what the split master weights' epilogue uses beyond MMA_EMULATION (TF32_EMULATION defines __uint_as_float for its
# kernels, so this is not part of MMA_EMULATION)
SPLIT_MASTER_SHIM = r"""
struct alignas(8) uint2 { unsigned x, y; };
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline float __uint_as_float(unsigned bits) { float value; std::memcpy(&value, &bits, 4); return value; }
"""


def _high_bits(high):
    """NumPy's high halves (float32 values of bfloat16 precision, dasksae.master_weights) as the ``uint16`` bits the
    kernel reads."""
    return (high.view(numpy.uint32) >> 16).astype(numpy.uint16)


@pytest.mark.parametrize("variant", ["rows", "rows-wide-wgmma", "rows-wide-wgmma-192"])
def test_the_update_of_split_master_weights_is_the_update_of_the_weights(tmp_path, variant):
    """With ``split_master`` the kernel reads the float32 weights from their high and low halves
    (:mod:`dasksae.master_weights`: ``raw`` points to the low ones, ``operand`` holds the high ones) and writes the new
    weights' halves back: joined, they are the unit-norm step :func:`update_case` expects, and they are exactly the
    split of those joined weights (the high half rounded to nearest, ties away from zero), the momentum and norms as
    without the split.  The case's weights include exact ties and values that round up across a power of two."""
    from dasksae import master_weights

    on_wgmma = mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA")
    library = update_built_on_cpu(tmp_path, variant, split_master=True)
    case = update_case(17, True, True, batch=96 if on_wgmma else 64)
    raw, velocity = case["raw"], case["velocity"]
    bits = raw.view(numpy.uint32)
    bits[0, 0, :8] = (bits[0, 0, :8] & numpy.uint32(0xFFFF0000)) | numpy.uint32(0x8000)  # exact ties
    bits[0, 1, :4] = numpy.array([0x3F7FFFFF, 0xBF7FF800, 0x3F7F8000, 0x00008000], numpy.uint32)  # across 1.0, tiny
    expected = with_expected(case)  # of these weights
    high, low = master_weights.split(raw)
    assert numpy.array_equal(master_weights.join(high, low), raw)
    high = _high_bits(high)
    assert mma_update.update_fits(case["codes"], case["x"], case["error"], low, velocity, high, case["inverse_norms"],
                                  case["row_dots"], case["field"], case["blocks_w"], split_master=True)
    assert not mma_update.update_fits(case["codes"], case["x"], case["error"], low, velocity, None,
                                      case["inverse_norms"], case["row_dots"], case["field"], case["blocks_w"],
                                      split_master=True)
    new_norms = _updated_norms(library, variant, case, low, velocity, high)
    joined = master_weights.join(high, low)
    new_high, new_low = master_weights.split(joined)
    numpy.testing.assert_array_equal(high, _high_bits(new_high))  # the halves are the split of the new weights
    numpy.testing.assert_array_equal(low, new_low)
    assert_updated_as_expected(expected, joined, velocity, None, new_norms)


@pytest.mark.parametrize("variant, split_master", [("step-only-wgmma", False), ("step-only-wgmma-192", True)])
def test_the_step_alone_is_the_update_of_a_zero_gradient(tmp_path, variant, split_master):
    """The benchmarks' ``step-only`` variants (the rows epilogue with no operands read and no products) take the
    unit-norm step of a zero gradient, whatever the codes and maps hold: on the whole weights with their bfloat16 copy,
    and on their halves."""
    from dasksae import master_weights

    library = update_built_on_cpu(tmp_path, variant, split_master)
    case = with_expected(update_case(23, True, True, batch=96) | {"gradient": numpy.zeros((6, 136, 144))})
    raw, operand = _weights_as_read(case, split_master)
    velocity = case["velocity"]
    new_norms = _updated_norms(library, variant, case, raw, velocity, operand)
    if split_master:
        assert_updated_as_expected(case, master_weights.join(operand, raw), velocity, None, new_norms)
    else:
        assert_updated_as_expected(case, raw, velocity, operand, new_norms)


def _weights_as_read(case: dict, split_master: bool):
    """The case's weights and operand as the kernel reads them: ``raw`` and its bfloat16 copy, or (``split_master``)
    the low halves and the high halves' bits."""
    from dasksae import master_weights

    if not split_master:
        return case["raw"], case["operand"]
    high, low = master_weights.split(case["raw"])
    return low, _high_bits(high)


def _updated_norms(library, variant: str, case: dict, raw, velocity, operand):
    """``variant``'s kernel (``library``, :func:`update_built_on_cpu`) run on ``case`` with these weights, momentum and
    operand (in whatever layout the variant reads: stepped in place): the new ``1/||U||`` from its sums of squares."""
    count, rows = case["codes"].shape[:2]
    grid, (threads,), arguments, _ = mma_update._update_launch(variant, case["codes"].shape, case["x"].shape,
                                                                case["field"], case["step"], case["blocks_w"])
    partial_squares = numpy.full((count * rows, 4), numpy.nan, numpy.float32)
    library.run_update(case["codes"].ctypes.data, case["x"].ctypes.data, case["error"].ctypes.data, raw.ctypes.data,
                       velocity.ctypes.data, operand.ctypes.data, case["inverse_norms"].ctypes.data,
                       case["row_dots"].ctypes.data, partial_squares.ctypes.data, case["lr"], case["momentum"], *grid,
                       threads, *arguments)
    return (1 / numpy.sqrt(partial_squares.astype(numpy.float64).sum(-1))).reshape(count, rows)


def test_tile_order_puts_each_blocks_tile_together_and_back():
    """``tile_order`` lays a block's tile of rows and columns out contiguously, the last tiles padded with zeros, and
    ``row_order`` gives the rows back, for 128 x 96 and 64 x 192 tiles."""
    values = numpy.random.default_rng(5).standard_normal((2, 136, 200)).astype(numpy.float32)
    for variant, (tile_m, tile_n) in (("rows-wide-wgmma-tiled", (128, 96)), ("rows-wide-wgmma-192-tiled", (64, 192))):
        tiled = mma_update.tile_order(values, variant)
        row_tiles, column_tiles = -(-136 // tile_m), -(-200 // tile_n)
        assert tiled.shape == (2, row_tiles * column_tiles, tile_m * tile_n)
        tile = tiled[1, 1 * column_tiles + 1].reshape(tile_m, tile_n)  # block 1's second row tile, second column tile
        part = values[1, tile_m:2 * tile_m, tile_n:2 * tile_n]
        numpy.testing.assert_array_equal(tile[:part.shape[0], :part.shape[1]], part)
        assert not tile[part.shape[0]:].any() and not tile[:, part.shape[1]:].any()  # padding
        numpy.testing.assert_array_equal(mma_update.row_order(tiled, 136, 200, variant), values)


@pytest.mark.parametrize("variant, split_master", [
    ("rows-wide-wgmma-tiled", False), ("rows-wide-wgmma-192-tiled", True), ("step-only-wgmma-tiled", False)])
def test_the_update_in_tile_order_is_the_update(tmp_path, variant, split_master):
    """The benchmarks' ``-tiled`` variants read and write the weights (or their low halves) and the momentum in tile
    order (``mma_update.tile_order``), the products' operand (the bfloat16 copy, or the high halves) in rows: put back
    in rows, the same unit-norm step as :func:`update_case` expects (of a zero gradient for ``step-only``)."""
    from dasksae import master_weights

    library = update_built_on_cpu(tmp_path, variant, split_master)
    case = update_case(29, True, True, batch=96)
    if variant.startswith("step-only"):
        case = with_expected(case | {"gradient": numpy.zeros(case["gradient"].shape)})
    count, rows, fan_in = case["raw"].shape
    raw, operand = _weights_as_read(case, split_master)
    raw, velocity = mma_update.tile_order(raw, variant), mma_update.tile_order(case["velocity"], variant)
    new_norms = _updated_norms(library, variant, case, raw, velocity, operand)
    raw, velocity = (mma_update.row_order(a, rows, fan_in, variant) for a in (raw, velocity))
    if split_master:
        assert_updated_as_expected(case, master_weights.join(operand, raw), velocity, None, new_norms)
    else:
        assert_updated_as_expected(case, raw, velocity, operand, new_norms)
