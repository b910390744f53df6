"""The window kernels' CUDA source (``dasksae/kernels/cuda_kernels.py``: the pooling's ``dasksae_pool_windows`` and
``dasksae_pool_units_and_sums``, LCN's ``dasksae_lcn_smooth``) run on the CPU under g++, each CUDA thread of the grid
in turn, against NumPy's pooling (:mod:`dasksae.kernels.pooling`) and smoothing (:mod:`dasksae.kernels.contrast`):
windows one apart (a thread's rows summed through its ring of source rows, the bottom rows fewer than a thread's) and
two apart (a thread to each output).  Skipped without g++."""

import ctypes
import shutil
import subprocess

import numpy
import pytest

from dasksae.kernels import cuda_kernels
from dasksae.kernels.contrast import _axis_coverage, _coverage, _smooth_map, gaussian_window
from dasksae.kernels.pooling import pooled_size, window_sum, window_sum_transpose

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

SHIM = r"""
#include <cmath>
struct alignas(16) float4 { float x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct Index { unsigned x, y, z; };
static Index threadIdx, blockIdx, gridDim, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline void __syncthreads() {}
template <typename Kernel>  // the grid of 256-thread blocks over `threads` threads, each thread in turn
static void each_thread(const unsigned threads, Kernel kernel)
{
    const unsigned blocks = (threads + 255) / 256;
    blockDim = {256, 1, 1};
    gridDim = {blocks, 1, 1};
    for (unsigned block = 0; block < blocks; ++block)
        for (unsigned thread = 0; thread < 256; ++thread) {
            blockIdx = {block, 0, 0};
            threadIdx = {thread, 0, 0};
            kernel();
        }
}
"""
# the block's float64 sum, as each thread adds its part (the threads run one after another)
BLOCK_PARTIAL = r"""
static inline void block_partial(double part, double* partials) { partials[blockIdx.x] += part; }
"""
RUNNER = r"""
extern "C" void run(const float* x, const float* times, float* out, float* pooled, float* units, float eps,
                    float scale_squared, unsigned total, double* partials)
{
    each_thread(total, [=] {
#if TRANSPOSE
        dasksae_pool_windows((const float4*)x, (const float4*)times, (float4*)out, (float4*)pooled, (float4*)units,
                             eps, nullptr, scale_squared, 0, total);
#else
        if (partials)
            dasksae_pool_units_and_sums((const float4*)x, (float4*)pooled, (float4*)units, eps, nullptr,
                                        scale_squared, 0, total, partials);
        else
            dasksae_pool_windows((const float4*)x, (const float4*)times, (float4*)out, (float4*)pooled,
                                 (float4*)units, eps, nullptr, scale_squared, 0, total);
#endif
    });
}
"""


def built(folder, source: str, runner: str = RUNNER):
    (folder / "kernel.cpp").write_text(SHIM + source.replace(cuda_kernels.BLOCK_PARTIAL, BLOCK_PARTIAL) + runner)
    build = subprocess.run(["g++", "-std=c++17", "-O1", "-Wno-unknown-pragmas", "-shared", "-fPIC",
                            str(folder / "kernel.cpp"), "-o", str(folder / "kernel.so")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    return ctypes.CDLL(str(folder / "kernel.so"))


def pointer(array):
    return ctypes.c_void_p(None if array is None else array.ctypes.data)


# (input rows, columns, size, stride): 20 - 5 + 1 = 16 output rows, a thread's 12 and then 4; windows two apart
GEOMETRIES = [(20, 9, 5, 1), (27, 7, 5, 1), (11, 10, 3, 2)]


@pytest.mark.parametrize("height, width, size, stride", GEOMETRIES)
def test_the_window_kernels_pool_as_numpy_does(tmp_path, height, width, size, stride):
    """Squares, pooled and units (``dasksae_pool_windows``), and the same with the block sums of the units and of
    ``V x^2 / units`` (``dasksae_pool_units_and_sums``), against NumPy's ``V x^2``."""
    rng = numpy.random.default_rng(height)
    x = rng.standard_normal((height, width, 2, 4)).astype(numpy.float32)  # 2 float4s a pixel
    out_h, out_w = pooled_size(height, size, stride), pooled_size(width, size, stride)
    vectors, eps, scale_squared = 2, numpy.float32(1e-2), numpy.float32(0.5)
    total = cuda_kernels.window_threads(out_h, out_w, vectors, stride)
    library = built(tmp_path, cuda_kernels.pool_windows_source(False, True, vectors, height, width, out_h, out_w,
                                                               size, stride))
    out, pooled, units = (numpy.full((out_h, out_w, 2, 4), numpy.nan, numpy.float32) for _ in range(3))
    library.run(pointer(x), pointer(x), pointer(out), pointer(pooled), pointer(units), ctypes.c_float(eps),
                ctypes.c_float(scale_squared), ctypes.c_uint(total), pointer(None))
    squares = window_sum(x.astype(numpy.float64) ** 2, size, stride)
    numpy.testing.assert_allclose(out, squares, rtol=1e-5)
    numpy.testing.assert_allclose(pooled, numpy.sqrt(eps + squares), rtol=1e-5)
    numpy.testing.assert_allclose(units, numpy.sqrt(eps + scale_squared * squares), rtol=1e-5)

    blocks = -(-total // 256)
    partials = numpy.zeros((2, blocks), numpy.float64)
    pooled[:] = units[:] = numpy.nan
    library.run(pointer(x), pointer(x), pointer(out), pointer(pooled), pointer(units), ctypes.c_float(eps),
                ctypes.c_float(scale_squared), ctypes.c_uint(total), pointer(partials))
    expected_units = numpy.sqrt(eps + scale_squared * squares)
    numpy.testing.assert_allclose(pooled, numpy.sqrt(eps + squares), rtol=1e-5)
    numpy.testing.assert_allclose(units, expected_units, rtol=1e-5)
    numpy.testing.assert_allclose(partials.sum(axis=1), [expected_units.sum(), (squares / expected_units).sum()],
                                  rtol=1e-5)


@pytest.mark.parametrize("height, width, size, stride", GEOMETRIES)
def test_the_window_kernels_spread_back_as_numpy_does(tmp_path, height, width, size, stride):
    """``times * V^T g`` (``dasksae_pool_windows`` with ``TRANSPOSE``) against NumPy's adjoint: at the map's edges a
    pixel is in fewer windows, and the first and last rows of a thread's take source rows outside ``g``."""
    rng = numpy.random.default_rng(height + 1)
    out_h, out_w = pooled_size(height, size, stride), pooled_size(width, size, stride)
    g = rng.standard_normal((out_h, out_w, 2, 4)).astype(numpy.float32)
    times = rng.standard_normal((height, width, 2, 4)).astype(numpy.float32)
    total = cuda_kernels.window_threads(height, width, 2, stride)
    library = built(tmp_path, cuda_kernels.pool_windows_source(True, False, 2, out_h, out_w, height, width, size,
                                                               stride))
    out = numpy.full((height, width, 2, 4), numpy.nan, numpy.float32)
    library.run(pointer(g), pointer(times), pointer(out), pointer(out), pointer(out), ctypes.c_float(0),
                ctypes.c_float(0), ctypes.c_uint(total), pointer(None))
    expected = times * window_sum_transpose(g.astype(numpy.float64), times.shape, size, stride)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


LCN_RUNNER = r"""
extern "C" void run(const VALUE* plane, const VALUE* window, const VALUE* inverse_h, const VALUE* inverse_w, VALUE* out,
                    VALUE* floored, VALUE inverse_maps, VALUE floor, const VALUE* maps_in, VALUE* maps_out)
{
    each_thread(TOTAL, [=] {
        dasksae_lcn_smooth(plane, window, inverse_h, inverse_w, out, floored, inverse_maps, floor, maps_in, maps_out);
    });
}
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("divide_before, root, operation, rows", [
    (False, True, "divide", 12), (True, False, "subtract", 12), (False, False, None, 12), (False, True, "divide", 4),
    (True, False, None, 1)])
def test_the_lcn_smoothing_kernel_smooths_as_numpy_does(tmp_path, dtype, divide_before, root, operation, rows):
    """LCN's window average (``divide_before=False``) and its adjoint (``True``) of a plane 27 rows high (a
    thread's 12 rows, then 3; or 4 rows, then 3; or 1), placed at (2, 1) of a 40 x 9 map so that its top and left
    rows are inside the map's window, with the root and floor and the maps divided by it, or the maps less the
    average."""
    rng = numpy.random.default_rng(7)
    height, width, batch, maps, floor = 27, 7, 3, 4, 0.3
    window = gaussian_window(5)
    origin, map_shape = (2, 1), (40, 9)
    plane = rng.uniform(0.1, 1.0, (height, width, batch)).astype(dtype)
    maps_in = rng.standard_normal((height, width, maps, batch)).astype(dtype)
    weights = window.astype(dtype)
    inverse_h = (1.0 / _axis_coverage(height, origin[0], map_shape[0], window)).astype(dtype)
    inverse_w = (1.0 / _axis_coverage(width, origin[1], map_shape[1], window)).astype(dtype)
    source = cuda_kernels.lcn_smooth_source(dtype, 5, height, width, batch, divide_before, root, operation,
                                            maps if operation else 0, rows)
    library = built(tmp_path, source, LCN_RUNNER.replace("VALUE", {"float32": "float", "float64": "double"}[dtype])
                    .replace("TOTAL", str(cuda_kernels.lcn_threads(height, width, batch, rows))))
    out, floored = (numpy.full(plane.shape, numpy.nan, dtype) for _ in range(2))
    maps_out = numpy.full(maps_in.shape, numpy.nan, dtype)
    value = ctypes.c_float if dtype == "float32" else ctypes.c_double
    library.run(pointer(plane), pointer(weights), pointer(inverse_h), pointer(inverse_w), pointer(out),
                pointer(floored), value(1.0 / maps), value(floor), pointer(maps_in), pointer(maps_out))
    coverage = _coverage(height, width, window, numpy, "float64", origin, map_shape)
    if divide_before:
        expected = _smooth_map(plane / coverage, window) / maps
    else:
        expected = _smooth_map(plane.astype(numpy.float64), window) / maps / coverage
    if root:
        expected = numpy.sqrt(expected)
        numpy.testing.assert_allclose(floored, numpy.maximum(expected, floor), rtol=1e-5)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5)
    if operation == "divide":
        numpy.testing.assert_allclose(maps_out, maps_in / numpy.maximum(expected, floor)[:, :, None, :], rtol=1e-5)
    elif operation == "subtract":
        numpy.testing.assert_allclose(maps_out, maps_in - expected[:, :, None, :], rtol=1e-5, atol=1e-6)



def test_small_lcn_planes_take_fewer_rows_a_thread():
    """A plane with enough threads at 12 rows a thread keeps 12 (coates200's one-tile planes at M=96); a 2x2 tile's
    plane takes fewer, so that its grid keeps at least LCN_THREADS_WANTED threads; a tiny one takes 1."""
    assert cuda_kernels.lcn_rows(180, 180, 96) == cuda_kernels.lcn_rows(140, 140, 96) == cuda_kernels.WINDOW_ROWS
    rows = cuda_kernels.lcn_rows(94, 94, 96)
    assert rows == 6 and cuda_kernels.lcn_threads(94, 94, 96) >= cuda_kernels.LCN_THREADS_WANTED
    assert cuda_kernels.lcn_threads(94, 94, 96) == -(-94 // 6) * 94 * 96
    assert cuda_kernels.lcn_rows(27, 7, 3) == 1
