"""Our float32 GEMM kernel's CUDA source, run on the CPU: one fiber for each CUDA thread of a block.

``dasksae/kernels/simt_gemm.py`` was written without a GPU.  This compiles its
very source text with g++ behind a small shim (``float4``, ``threadIdx``,
``__shared__`` as a static array of the block, ``__syncthreads`` as a
barrier of the block's 256 threads, each a fiber of one OS thread: since
session 56, where OS threads cost the CI suite about two minutes more in
wake-ups), runs the blocks one after another,
and compares the result with NumPy: the tile indexing, the guarded rows,
strided operands, accumulation and the shared-memory hand-offs between
threads are checked on the code itself.  It says nothing of speed, and a
missing barrier shows only where the fibers' fixed order (each thread runs
until it waits) makes a thread read before another writes.  Skipped without
a g++ that builds C++20 with ``<ucontext.h>``'s fibers.
"""

import ctypes
import hashlib
import shutil
import subprocess

import numpy
import pytest

from dasksae.kernels import simt_gemm

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

SHIM = r"""
#include <cmath>
#include <cstdlib>
#include <functional>
#include <sys/mman.h>
#include <ucontext.h>
#include <vector>

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
struct Index { unsigned x, y, z; };
// A block's threads are fibers of one OS thread (ucontext), taken round robin, each running until it waits at a
// barrier or ends: a barrier costs a switch a thread, where 256 OS threads on two cores cost a wake-up each.  The
// scheduler sets threadIdx (and the block's indices) before it resumes a fiber.  Each run interleaves the threads the
// same way: a write that another thread reads before a missing barrier is not caught unless that thread comes first
// (on OS threads it was caught only where the OS happened to interleave them so).
static Index threadIdx, blockIdx, gridDim, blockDim;
static ucontext_t fiber_scheduler;
struct Fiber { ucontext_t context; bool done; };
static Fiber* fibers;
static unsigned fiber_current;
static const std::function<void(unsigned)>* fiber_body;
static inline void fiber_yield() { swapcontext(&fibers[fiber_current].context, &fiber_scheduler); }
static void fiber_start()
{
    (*fiber_body)(fiber_current);
    fibers[fiber_current].done = true;
    fiber_yield();
}
// run body(t) for t < threads as fibers to their ends; before each resumption, resume(t) (the thread's indices)
template <typename Body, typename Resume>
static void run_fibers(const unsigned threads, const Body& body, const Resume& resume)
{
    // each fiber's stack 1 MiB, mapped once (only the pages a fiber uses are touched), its lowest page a guard: a
    // fiber that overflows its stack faults instead of writing over its neighbour's
    constexpr size_t stack_bytes = 1 << 20, guard_bytes = 4096;
    static char* stacks = nullptr;
    static size_t stacks_for = 0;
    if (stacks_for < threads) {
        if (stacks) munmap(stacks, stacks_for * stack_bytes);
        stacks = (char*)mmap(nullptr, threads * stack_bytes, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (stacks == MAP_FAILED) std::abort();
        for (unsigned t = 0; t < threads; ++t) mprotect(stacks + t * stack_bytes, guard_bytes, PROT_NONE);
        stacks_for = threads;
    }
    std::vector<Fiber> table(threads);
    const std::function<void(unsigned)> function = body;
    fiber_body = &function;
    fibers = table.data();
    for (unsigned t = 0; t < threads; ++t) {
        getcontext(&table[t].context);
        table[t].context.uc_stack.ss_sp = stacks + t * stack_bytes + guard_bytes;
        table[t].context.uc_stack.ss_size = stack_bytes - guard_bytes;
        table[t].context.uc_link = nullptr;
        table[t].done = false;
        makecontext(&table[t].context, fiber_start, 0);
    }
    for (unsigned left = threads; left;)
        for (unsigned t = 0; t < threads; ++t) {
            if (table[t].done) continue;
            fiber_current = t;
            resume(t);
            swapcontext(&fiber_scheduler, &table[t].context);
            if (table[t].done) --left;
        }
}
// std::barrier's counting for fibers: the last of count to arrive opens the phase; the others yield until it opens
struct Barrier {
    explicit Barrier(const unsigned count) : count(count) {}
    unsigned long long arrive()
    {
        const unsigned long long seen = phase;
        if (++arrived == count) { arrived = 0; ++phase; }
        return seen;
    }
    void arrive_and_wait()
    {
        const unsigned long long seen = arrive();
        while (phase == seen) fiber_yield();
    }
    unsigned count, arrived = 0;
    unsigned long long phase = 0;
};
static Barrier* block_barrier;
static inline void __syncthreads() { block_barrier->arrive_and_wait(); }
static float shuffled[256];  // __shfl_xor_sync where all 256 threads of the block call it together (as our kernel does)
static inline float __shfl_xor_sync(unsigned, float value, int offset)
{
    shuffled[threadIdx.x] = value;
    block_barrier->arrive_and_wait();
    const float other = shuffled[threadIdx.x ^ offset];
    block_barrier->arrive_and_wait();
    return other;
}
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(bytes) __attribute__((aligned(bytes)))
#define __restrict__ __restrict
"""

GRID_RUNNER = r"""
template <typename Kernel>  // the blocks of a grid one after another, each block's threads (256) as fibers
static void run_grid(unsigned grid_x, unsigned grid_y, unsigned grid_z, Kernel kernel, unsigned block_threads = 256)
{
    Barrier barrier(block_threads);
    block_barrier = &barrier;
    for (unsigned z = 0; z < grid_z; ++z)
        for (unsigned y = 0; y < grid_y; ++y)
            for (unsigned x_ = 0; x_ < grid_x; ++x_) {
                const auto indices = [=](unsigned t) {
                    threadIdx = {t, 0, 0};
                    blockIdx = {x_, y, z};
                    gridDim = {grid_x, grid_y, grid_z};
                };
                run_fibers(block_threads, [&](unsigned) { kernel(); }, indices);
            }
}
"""

RUNNER = GRID_RUNNER + r"""
struct Fields { int blocks_w, step, field_rows, block_h, block_w, maps; long long in_row, in_pixel, out_row, out_pixel;
                const float* row_scale; };

template <int T, int A, int F>
static void run_blocks(const float* a, const float* b, float* c, int m, int n, int k, long long lda, long long batch_a,
                       long long ldb, long long batch_b, long long ldc, long long batch_c, int count, Fields g)
{
    Barrier barrier(256);
    block_barrier = &barrier;
    for (unsigned z = 0; z < (unsigned)count; ++z)
        for (unsigned y = 0; y < (unsigned)(n / TILE_N); ++y)
            for (unsigned x = 0; x < (unsigned)((m + TILE_M - 1) / TILE_M); ++x)
                run_fibers(256, [=](unsigned) {
                    if (F)
                        dasksae_simt_filter_forward(a, b, c, m, n, k, g.blocks_w, g.step, g.field_rows, g.block_h,
                                                    g.block_w, g.maps, g.in_row, g.in_pixel, g.out_row,
                                                    g.out_pixel, g.row_scale);
                    else
                        dasksae_simt_gemm<T, A>(a, b, c, m, n, k, lda, batch_a, ldb, batch_b, ldc, batch_c);
                }, [=](unsigned t) {
                    threadIdx = {t, 0, 0};
                    blockIdx = {x, y, z};
                });
}

#define RUN(T, A) run_blocks<T, A, 0>(a, b, c, m, n, k, lda, batch_a, ldb, batch_b, ldc, batch_c, count, Fields{})
extern "C" void run(int transpose_a, int accumulate, const float* a, const float* b, float* c, int m, int n,
                    int k, long long lda, long long batch_a, long long ldb, long long batch_b, long long ldc,
                    long long batch_c, int count)
{
    const int variant = transpose_a * 2 + accumulate;
    switch (variant) {
        case 0: RUN(0, 0); break;
        case 1: RUN(0, 1); break;
        case 2: RUN(1, 0); break;
        default: RUN(1, 1); break;
    }
}

extern "C" void run_weight_grad(const float* codes, const float* x, const float* error, float* grad, unsigned grid_x,
                                unsigned grid_y, unsigned grid_z, int rows, int fan_in, int width, int half, int blocks_w,
                                int step, int field_rows, long long in_row, long long in_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_simt_filter_weight_grad(codes, x, error, grad, rows, fan_in, width, half, blocks_w, step, field_rows,
                                        in_row, in_pixel);
    });
}

extern "C" void run_weight_grad_update(const float* codes, const float* x, const float* error, float* raw,
                                       float* velocity, const float* inverse_norms, const float* row_dots,
                                       float* partial_squares, float lr, float momentum, unsigned grid_x,
                                       unsigned grid_y, unsigned grid_z, int rows, int fan_in, int width, int half,
                                       int blocks_w, int step, int field_rows, long long in_row, long long in_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_simt_filter_weight_grad_update(codes, x, error, raw, velocity, inverse_norms, row_dots, partial_squares,
                                               lr, momentum, rows, fan_in, width, half, blocks_w, step, field_rows,
                                               in_row, in_pixel);
    });
}

extern "C" void run_inverse_norms(const float* partial_squares, float* inverse_norms, int rows, int tiles)
{
    for (unsigned block = 0; block < (unsigned)((rows + 255) / 256); ++block)
        for (unsigned t = 0; t < 256; ++t) {
            threadIdx = {t, 0, 0};
            blockIdx = {block, 0, 0};
            blockDim = {256, 1, 1};
            dasksae_inverse_norms_from_squares(partial_squares, inverse_norms, rows, tiles);
        }
}

extern "C" void run_fields(const float* a, const float* b, float* c, int m, int n, int k, int count, int blocks_w,
                           int step, int field_rows, int block_h, int block_w, int maps, long long in_row,
                           long long in_pixel, long long out_row, long long out_pixel, const float* row_scale)
{
    const Fields g{blocks_w, step, field_rows, block_h, block_w, maps, in_row, in_pixel, out_row, out_pixel, row_scale};
    run_blocks<0, 0, 1>(a, b, c, m, n, k, 0, 0, 0, 0, 0, 0, count, g);
}
"""


_FIBERS = {}  # whether this g++ builds C++20 with <ucontext.h> (the shim's fibers): probed once a test session
_BUILT = {}  # a source's SHA-256 -> its shared library, built once a test session (several tests build the same one)


def built_on_cpu(folder, source: str):
    """``source`` (a shim and CUDA source) built by g++ into a shared library in ``folder`` (or where the same source
    was built before in this test session), loaded; the test skips where g++ cannot build the shim's fibers."""
    if "ok" not in _FIBERS:
        probe = folder / "probe.cpp"
        probe.write_text("#include <ucontext.h>\nint main() { ucontext_t c; return getcontext(&c); }\n")
        _FIBERS["ok"] = not subprocess.run(["g++", "-std=c++20", str(probe), "-o", str(folder / "probe")],
                                           capture_output=True).returncode
    if not _FIBERS["ok"]:
        pytest.skip("this g++ cannot build C++20 with <ucontext.h> (the shim's fibers)")
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _BUILT:
        (folder / "kernel.cpp").write_text(source)
        build = subprocess.run(["g++", "-std=c++20", "-O1", "-fno-strict-aliasing", "-Wno-unknown-pragmas", "-shared",
                                "-fPIC", "-pthread", str(folder / "kernel.cpp"), "-o", str(folder / "kernel.so")],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stderr[-3000:]
        _BUILT[key] = str(folder / "kernel.so")
    return ctypes.CDLL(_BUILT[key])  # (a CDLL of its own: its functions' argtypes are this caller's)


@pytest.fixture(scope="module", params=[(True, True, 1), (False, False, 0), (True, False, 3)],
                ids=["swizzled-prefetching-staged", "plain", "staged-in-the-first-stage"])
def kernel_on_cpu(tmp_path_factory, request):
    """The source compiled with the weight gradient's shared tiles swizzled (``DASKSAE_SMEM_SWIZZLE=1``, the default)
    and without; swizzled, with the fused update's prefetches as well (``DASKSAE_UPDATE_PREFETCH=1``: no-ops here,
    but the code around them runs) and its ``U`` and ``v`` staged in the block's shared array at the block's start
    (``DASKSAE_UPDATE_STAGING=1``: plain copies here, read back by the epilogue); and swizzled, staged from inside
    the first stage of the products (``DASKSAE_UPDATE_STAGING=first-stage``)."""
    swizzle, prefetch, staging = request.param
    source = SHIM + simt_gemm.simt_gemm_source(swizzle=swizzle, prefetch=prefetch, staging=staging) + RUNNER
    library = built_on_cpu(tmp_path_factory.mktemp("simt"), source)
    library.run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p] \
        + [ctypes.c_int] * 3 + [ctypes.c_longlong] * 6 + [ctypes.c_int]
    library.run_fields.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 10 + [ctypes.c_longlong] * 4 + [ctypes.c_void_p]
    library.run_weight_grad.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 7 + [ctypes.c_longlong] * 2
    library.run_weight_grad_update.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_float] * 2 + [ctypes.c_uint] * 3
                                               + [ctypes.c_int] * 7 + [ctypes.c_longlong] * 2)
    library.run_inverse_norms.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2
    return library


def _call(run, a, b, out, transpose_a, accumulate):
    m, k = (a.shape[2], a.shape[1]) if transpose_a else (a.shape[1], a.shape[2])
    n = b.shape[2]
    strides = [s // 4 for x in (a, b, out) for s in (x.strides[1], x.strides[0])]
    run.run(int(transpose_a), int(accumulate), a.ctypes.data, b.ctypes.data, out.ctypes.data, m, n, k, *strides, a.shape[0])


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_the_kernel_source_computes_the_product(kernel_on_cpu, transpose_a, accumulate):
    """``op(A) B`` for two blocks, ``M = 136`` (a second tile of 8 guarded rows), two tiles in ``N``, ``K = 48``
    (three stages of the inner dimension), ``B`` the right part of a wider buffer, and ``accumulate`` adding to what ``C`` holds."""
    rng = numpy.random.default_rng(0)
    count, m, n, k = 2, 136, 192, 48
    a = rng.standard_normal((count, k, m) if transpose_a else (count, m, k)).astype(numpy.float32)
    wide = rng.standard_normal((count, k, n + 96)).astype(numpy.float32)
    b = wide[:, :, 96:]
    start = rng.standard_normal((count, m, n)).astype(numpy.float32)
    out = start.copy()
    _call(kernel_on_cpu, a, b, out, transpose_a, accumulate)
    expected = numpy.matmul((a.transpose(0, 2, 1) if transpose_a else a).astype(numpy.float64), b.astype(numpy.float64))
    if accumulate:
        expected += start
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transpose_a", [False, True])
def test_the_kernel_source_on_coates200_stage_one_shapes(kernel_on_cpu, transpose_a):
    """One block of coates200's first stage as the step multiplies it: ``W x`` is (128 x 1200) (1200 x 96) and
    ``W^T y`` is (1200 x 128) (128 x 96), whose 1200 rows end in a tile of 48."""
    rng = numpy.random.default_rng(1)
    rows, fan_in, batch = 128, 1200, 96
    a = rng.standard_normal((1, rows, fan_in)).astype(numpy.float32)
    b = rng.standard_normal((1, rows if transpose_a else fan_in, batch)).astype(numpy.float32)
    out = numpy.full((1, fan_in if transpose_a else rows, batch), numpy.nan, dtype=numpy.float32)
    _call(kernel_on_cpu, a, b, out, transpose_a, False)
    expected = numpy.matmul((a.transpose(0, 2, 1) if transpose_a else a).astype(numpy.float64), b.astype(numpy.float64))
    numpy.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scaled", [False, True])
def test_the_kernel_source_computes_a_filter_layer_from_and_to_the_maps(kernel_on_cpu, scaled):
    """``FIELDS``: ``diag(row_scale) W x`` with the fields read from the input map and the outputs written into the
    output map, as :func:`~dasksae.kernels.local_filter.local_filter_forward` computes it by gathering.  3x2 blocks
    of 6x6x4 fields at step 2 (runs of 24 rows: the kernel's 16-row stages straddle them), 2x2 neurons of 34 maps a
    block (136 rows: a second, guarded tile), a minibatch of 192 (two tiles)."""
    from dasksae.kernels.local_filter import local_filter_forward

    rng = numpy.random.default_rng(2)
    field, step, block_h, block_w, maps, channels, batch, blocks_h, blocks_w = 6, 2, 2, 2, 34, 4, 192, 3, 2
    x = rng.standard_normal(((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)).astype(numpy.float32)
    rows, fan_in = block_h * block_w * maps, field * field * channels
    weights = rng.standard_normal((blocks_h, blocks_w, rows, fan_in)).astype(numpy.float32)
    row_scale = rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows)).astype(numpy.float32) if scaled else None
    out = numpy.full((blocks_h * block_h, blocks_w * block_w, maps, batch), numpy.nan, dtype=numpy.float32)
    assert simt_gemm.fields_fit(_Host(x), _Host(weights.reshape(-1, rows, fan_in)), _Host(out),
                                None if row_scale is None else _Host(row_scale), field, step, block_h, block_w)
    g = simt_gemm.field_geometry(x.shape, out.shape, field, step, block_h, block_w)
    kernel_on_cpu.run_fields(weights.ctypes.data, x.ctypes.data, out.ctypes.data, rows, batch, fan_in, blocks_h * blocks_w,
                             *(g[name] for name in ("blocks_w", "step", "field_rows", "block_h", "block_w", "maps",
                                                    "in_row", "in_pixel", "out_row", "out_pixel")),
                             None if row_scale is None else row_scale.ctypes.data)
    expected = local_filter_forward(x.astype(numpy.float64), weights.astype(numpy.float64), field, step, block_h, block_w,
                                    row_scale=None if row_scale is None else row_scale.astype(numpy.float64))
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


class _Host:
    """A NumPy array dressed as a CuPy one for :func:`simt_gemm.fields_fit` (which reads ``.data.ptr``)."""

    def __init__(self, array):
        self.array = array
        self.data = type("Pointer", (), {"ptr": array.ctypes.data})()

    def __getattr__(self, name):
        return getattr(self.array, name)


def test_only_products_the_kernel_can_read_in_place_take_the_fields_path():
    """:func:`simt_gemm.fields_fit` sends the kernel only float32 C-contiguous maps with a minibatch of whole 96s and
    fields of whole 16-row stages (else gather, multiply, write: the results are the same)."""
    def fit(x, weights, out, row_scale=None, field=6, step=2, block=2):
        return simt_gemm.fields_fit(_Host(x), _Host(weights), _Host(out), None if row_scale is None else _Host(row_scale),
                                    field, step, block, block)

    x = numpy.zeros((10, 8, 4, 96), numpy.float32)
    weights = numpy.zeros((6, 2 * 2 * 34, 144), numpy.float32)
    out = numpy.zeros((6, 4, 34, 96), numpy.float32)
    assert fit(x, weights, out) and fit(x, weights, out, numpy.ones((3, 2, 136), numpy.float32))
    assert not fit(x.astype(numpy.float64), weights, out)
    assert not fit(numpy.zeros((10, 8, 4, 100), numpy.float32), weights, numpy.zeros((6, 4, 34, 100), numpy.float32))
    assert not fit(numpy.zeros((10, 8, 8, 192), numpy.float32)[:, :, :4], weights, out)  # not contiguous
    assert not fit(numpy.zeros((10, 8, 3, 96), numpy.float32), numpy.zeros((6, 136, 108), numpy.float32), out)  # 108 rows
    assert not fit(x, weights, out, numpy.ones((3, 2, 136), numpy.float64))
    assert not fit(x, weights[:5], out)  # a block short


def _weight_grad_case(seed: int, with_error: bool):
    """3x2 blocks of 6x6x4 fields at step 2 (fan-in 144: a second, part-empty tile of 96 columns), 136 rows (a guarded
    tile), a minibatch of 96: ``(geometry, x, error, codes, the float64 gradient codes [fields(x) | fields(error)]^T)``,
    ``geometry`` as ``(field, step, blocks_h, blocks_w, rows, fan_in)``."""
    from dasksae.kernels.local_filter import gather_patches

    rng = numpy.random.default_rng(seed)
    field, step, channels, batch, blocks_h, blocks_w, rows = 6, 2, 4, 96, 3, 2, 136
    shape = ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)
    x = rng.standard_normal(shape).astype(numpy.float32)
    error = rng.standard_normal(shape).astype(numpy.float32) if with_error else None
    count, fan_in, width = blocks_h * blocks_w, field * field * channels, batch * (2 if with_error else 1)
    codes = rng.standard_normal((count, rows, width)).astype(numpy.float32)
    fields = gather_patches(x.astype(numpy.float64), field, step, blocks_h, blocks_w)
    if with_error:
        fields = numpy.concatenate([fields, gather_patches(error.astype(numpy.float64), field, step, blocks_h, blocks_w)], axis=2)
    gradient = numpy.matmul(codes.astype(numpy.float64), fields.transpose(0, 2, 1))
    return (field, step, blocks_h, blocks_w, rows, fan_in), x, error, codes, gradient


@pytest.mark.parametrize("with_error", [True, False], ids=["x-and-error", "x-only"])
def test_the_kernel_source_computes_a_weight_gradient_from_the_maps(kernel_on_cpu, with_error):
    """``WEIGHT_GRAD``: ``codes [fields(x) | fields(error)]^T`` with the fields read from the input and error maps
    (or ``codes fields(x)^T``), as gathering and multiplying give it: 3x2 blocks of 6x6x4 fields at step 2 (fan-in
    144: a second, part-empty tile of 96 columns), 136 rows (a guarded tile), a minibatch of 96 (2 x 96 inner terms
    with the error map: the second half's loads switch maps)."""
    (field, step, blocks_h, blocks_w, rows, fan_in), x, error, codes, expected = _weight_grad_case(5, with_error)
    count = blocks_h * blocks_w
    wide = numpy.full((count, rows, fan_in + 4), numpy.nan, numpy.float32)  # the columns past fan_in stay untouched
    out = wide[:, :, :fan_in]
    contiguous = numpy.empty((count, rows, fan_in), numpy.float32)
    assert simt_gemm.weight_grad_fits(_Host(codes), _Host(x), None if error is None else _Host(error),
                                      _Host(contiguous), field, blocks_w)
    grid, arguments = simt_gemm.weight_grad_launch(codes.shape, x.shape, field, step, blocks_w)
    kernel_on_cpu.run_weight_grad(codes.ctypes.data, x.ctypes.data, None if error is None else error.ctypes.data,
                                  contiguous.ctypes.data, *grid, *arguments)
    numpy.testing.assert_allclose(contiguous, expected, rtol=1e-5, atol=1e-4)
    assert not simt_gemm.weight_grad_fits(_Host(codes), _Host(x), None if error is None else _Host(error), _Host(out),
                                          field, blocks_w)  # rows fan_in + 4 apart: not the kernel's layout


def test_the_kernel_source_multiplies_fields_into_block_rows(kernel_on_cpu):
    """``fields_product``: ``W fields(x)`` with the fields read from the map and the products written as block rows
    ``(blocks, rows, N)`` (what the backward pass's ``U g_r`` needs), as gathering and multiplying give it."""
    from dasksae.kernels.local_filter import gather_patches

    rng = numpy.random.default_rng(6)
    field, step, channels, batch, blocks_h, blocks_w, rows = 6, 2, 4, 192, 3, 2, 136
    x = rng.standard_normal(((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)).astype(numpy.float32)
    count, fan_in = blocks_h * blocks_w, field * field * channels
    weights = rng.standard_normal((count, rows, fan_in)).astype(numpy.float32)
    out = numpy.full((count, rows, batch), numpy.nan, numpy.float32)
    block_map = simt_gemm.as_block_map(out, blocks_w)  # what fields_product writes: block rows as a map
    assert simt_gemm.fields_fit(_Host(x), _Host(weights), _Host(block_map), None, field, step, 1, 1)
    grid, arguments = simt_gemm.forward_launch(x.shape, block_map.shape, weights.shape, field, step, 1, 1)
    m, n, k, *geometry = arguments
    assert grid == (-(-m // 128), n // 96, count)
    kernel_on_cpu.run_fields(weights.ctypes.data, x.ctypes.data, out.ctypes.data, m, n, k, count, *geometry, None)
    expected = numpy.matmul(weights.astype(numpy.float64), gather_patches(x.astype(numpy.float64), field, step, blocks_h, blocks_w))
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("with_error", [True, False], ids=["x-and-error", "x-only"])
def test_the_kernel_source_takes_the_update_step_in_the_weight_gradient(kernel_on_cpu, with_error):
    """``UPDATE``: the weight gradient's kernel takes the unit-norm SGD step of ``U`` in place instead of writing the
    gradient, as the update's array code does with the gradient gathered and multiplied in float64 (the same
    ``row_dots`` given to both), and its per-tile sums of squares give the new rows' ``1/||U||``: 3x2 blocks of 6x6x4
    fields (fan-in 144: a part-empty second tile of columns), 136 rows (a guarded tile)."""
    from dasksae.kernels.normalize import unit_rows_sgd

    (field, step, blocks_h, blocks_w, rows, fan_in), x, error, codes, gradient = _weight_grad_case(7, with_error)
    count = blocks_h * blocks_w
    rng = numpy.random.default_rng(8)
    raw = rng.standard_normal((count, rows, fan_in)).astype(numpy.float32)
    velocity = rng.standard_normal((count, rows, fan_in)).astype(numpy.float32) * 0.1
    inverse_norms = (1 / numpy.sqrt((raw.astype(numpy.float64) ** 2).sum(-1))).astype(numpy.float32)
    row_dots = rng.standard_normal((count, rows)).astype(numpy.float32)
    lr, momentum = 0.01, 0.9
    expected_raw, expected_velocity = raw.astype(numpy.float64), velocity.astype(numpy.float64)
    expected_norms = inverse_norms.astype(numpy.float64)
    unit_rows_sgd(expected_raw, expected_velocity, gradient, expected_norms, lr, momentum, refresh_norms=True,
                  row_dots=row_dots.astype(numpy.float64))
    assert simt_gemm.update_fits(_Host(raw), _Host(velocity), _Host(inverse_norms), _Host(row_dots))
    grid, arguments = simt_gemm.weight_grad_launch(codes.shape, x.shape, field, step, blocks_w)
    partial_squares = numpy.full((count * rows, grid[1]), numpy.nan, numpy.float32)
    kernel_on_cpu.run_weight_grad_update(codes.ctypes.data, x.ctypes.data, None if error is None else error.ctypes.data,
                                         raw.ctypes.data, velocity.ctypes.data, inverse_norms.ctypes.data,
                                         row_dots.ctypes.data, partial_squares.ctypes.data, lr, momentum, *grid,
                                         *arguments)
    numpy.testing.assert_allclose(velocity, expected_velocity, rtol=1e-4, atol=1e-5)
    numpy.testing.assert_allclose(raw, expected_raw, rtol=1e-5, atol=1e-5)
    assert not numpy.isnan(partial_squares).any()  # every row's every tile of columns
    kernel_on_cpu.run_inverse_norms(partial_squares.ctypes.data, inverse_norms.ctypes.data, count * rows, grid[1])
    numpy.testing.assert_allclose(inverse_norms, expected_norms, rtol=1e-5)
    assert not simt_gemm.update_fits(_Host(raw), _Host(velocity[:, :, :-4].copy()), _Host(inverse_norms), _Host(row_dots))
    assert not simt_gemm.update_fits(_Host(raw), _Host(velocity), _Host(inverse_norms), _Host(row_dots[:, :-1].copy()))
