"""The bfloat16 tensor-core ``W^T y`` with the fold in the product (``dasksae/kernels/mma_transpose.py``), its CUDA
source run on the CPU under g++ with ``tests/test_mma_update_on_cpu.py``'s shim (``mma.sync`` and ``ldmatrix.trans``
emulated from the PTX ISA's fragment layouts, ``cp.async`` a copy), against NumPy's product of the same bfloat16
values in float64, folded into a map that already holds values (the kernel adds), and written over a map of NaNs
(``accumulate`` 0: the kernel writes each cell's sum)."""

import ctypes
import shutil

import numpy
import pytest

from dasksae.kernels import mma_transpose
from dasksae.kernels.gemm import batched_matmul
from dasksae.kernels.local_filter import fold_patches_into
from test_mma_update_on_cpu import MMA_EMULATION, WGMMA_EMULATION, _bfloat16
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

RUNNER = GRID_RUNNER + r"""
extern "C" void run_transpose(const unsigned short* weights, const unsigned short* y, float* out, unsigned grid_x,
                              unsigned grid_y, unsigned grid_z, int rows, int batch, int channels, int field, int step,
                              int blocks_h, int blocks_w, int map_w, int accumulate)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_mma_filter_transpose_fold(weights, y, out, rows, batch, channels, field, step, blocks_h, blocks_w,
                                          map_w, accumulate);
    }, TRANSPOSE_THREADS);
}
"""


def built_transpose(folder, variant: str, geometry=None):
    """The kernel of ``variant`` built under g++ (``mma.sync`` emulated, and ``wgmma`` through its descriptors for a
    variant of :data:`~dasksae.kernels.mma_transpose.WGMMA_VARIANTS`), ``run_transpose`` calling it."""
    runner = RUNNER
    if variant in mma_transpose.WGMMA_VARIANTS:
        runner = RUNNER.replace("dasksae_mma_filter_transpose_fold", "dasksae_wgmma_filter_transpose_fold")
    library = built_on_cpu(folder, SHIM + MMA_EMULATION + WGMMA_EMULATION
                           + mma_transpose.mma_transpose_source(variant, geometry) + runner)
    library.run_transpose.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9
    return library


def tile_rows(variant: str) -> int:
    """The block rows a tile of ``variant`` takes (a layer's rows must be whole ones)."""
    return (mma_transpose.WGMMA_VARIANTS.get(variant) or mma_transpose.VARIANTS[variant])[0]


@pytest.fixture(scope="module", params=list(mma_transpose.VARIANTS) + list(mma_transpose.WGMMA_VARIANTS))
def kernel_on_cpu(request, tmp_path_factory):
    """``(the kernel in one variant of its tiles, built under g++, the variant)``: ``mma.sync``'s and ``wgmma``'s."""
    return built_transpose(tmp_path_factory.mktemp(f"mma_transpose_{request.param}"), request.param), request.param


def transpose_case(seed: int, field: int, step: int, channels: int, rows: int, blocks_h: int, blocks_w: int,
                   batch: int = 96):
    """Random bfloat16 weights and ``y`` for ``blocks_h x blocks_w`` blocks (a minibatch of ``batch``) and a map of
    values to add to; the expected map: NumPy's float64 ``W^T y`` of the same bfloat16 values folded into it."""
    rng = numpy.random.default_rng(seed)
    count, fan_in = blocks_h * blocks_w, field * field * channels
    weight_bits, weights = _bfloat16(rng.standard_normal((count, rows, fan_in)))
    y_bits, y = _bfloat16(rng.standard_normal((count, rows, batch)))
    shape = ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)
    out = rng.standard_normal(shape).astype(numpy.float32)
    expected = out.astype(numpy.float64)
    fold_patches_into(expected, batched_matmul(weights, y, transpose_a=True, precision="float64"), field, step,
                      blocks_h, blocks_w)
    return weight_bits, y_bits, out, expected


@pytest.mark.parametrize("field, step, channels, rows, blocks_h, blocks_w, batch", [
    (8, 4, 8, 64, 3, 2, 96),  # cells of 128 values (4x4 pixels, 8 channels) in up to 2x2 blocks, 2 tiles of rows
    (6, 2, 4, 32, 3, 4, 96),  # cells of 16 values (most rows of the block's products guarded), up to 3x3 blocks
    (8, 4, 8, 32, 2, 2, 136),  # a second tile of 96 columns with 40 in the minibatch
    (6, 2, 4, 32, 2, 2, 104),  # and with 8 (one copy of 8 values a row), cells of 16
    (8, 4, 8, 128, 3, 2, 96),  # 128 rows: 2 tiles of 64 (k64x3), 4 of 32
    (6, 2, 4, 64, 2, 3, 136),  # 64 rows, cells of 16, a part-full second tile of columns
    (8, 4, 3, 64, 3, 2, 96),  # 3 channels (a first stage's): cells of 48 values, runs of 12 copied 8 bytes at a time
    (8, 4, 3, 32, 2, 3, 136),  # and a part-full second tile of columns
], ids=["cells-of-128", "cells-of-16", "part-tile", "8-column-tile", "rows-128", "rows-64-part-tile", "three-channels",
        "three-channels-part-tile"])
def test_the_tensor_core_transpose_folds_into_the_map_as_numpy(kernel_on_cpu, field, step, channels, rows, blocks_h,
                                                                blocks_w, batch):
    """Every cell of the map gets its blocks' sum added, edges (fewer blocks) and middles alike, and nothing past
    the minibatch (a column past it would land in the next row, or in the 96 values of slack after the map); in
    each variant of the tiles, for the rows it takes (whole tiles of it)."""
    kernel_on_cpu, variant = kernel_on_cpu
    if rows % tile_rows(variant):
        assert mma_transpose.variant_for(rows, variant) == "k32x4"  # the layer keeps the smaller tiles
        pytest.skip(f"{variant} takes rows in whole {tile_rows(variant)}s")
    weight_bits, y_bits, out, expected = transpose_case(5, field, step, channels, rows, blocks_h, blocks_w, batch)
    memory = numpy.full(out.size + 96, numpy.nan, dtype=numpy.float32)
    memory[:-96] = out.ravel()
    out = memory[:-96].reshape(out.shape)
    assert mma_transpose.transpose_fits(out, weight_bits, y_bits, field, step, blocks_h, blocks_w)
    grid, arguments = mma_transpose.transpose_launch(out.shape, weight_bits.shape, field, step, blocks_h, blocks_w,
                                                     variant)
    kernel_on_cpu.run_transpose(weight_bits.ctypes.data, y_bits.ctypes.data, out.ctypes.data, *grid, *arguments)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    assert numpy.isnan(memory[-96:]).all()


@pytest.mark.parametrize("field, step, channels, rows, blocks_h, blocks_w, batch", [(8, 4, 3, 32, 2, 3, 136)],
                         ids=["three-channels-part-tile"])
def test_the_tensor_core_transpose_writes_each_cell_over_a_map_it_never_reads(kernel_on_cpu, field, step, channels,
                                                                              rows, blocks_h, blocks_w, batch):
    """``accumulate`` 0 (a map that the blocks' fields cover, written once: no zeroing pass first): each cell's sum
    written over a map of NaNs, which are never read, and nothing past the minibatch; in each variant."""
    kernel_on_cpu, variant = kernel_on_cpu
    if rows % tile_rows(variant):
        pytest.skip(f"{variant} takes rows in whole {tile_rows(variant)}s")
    weight_bits, y_bits, out, expected = transpose_case(5, field, step, channels, rows, blocks_h, blocks_w, batch)
    fold = expected - out.astype(numpy.float64)
    memory = numpy.full(out.size + 96, numpy.nan, dtype=numpy.float32)
    out = memory[:-96].reshape(out.shape)
    grid, arguments = mma_transpose.transpose_launch(out.shape, weight_bits.shape, field, step, blocks_h, blocks_w,
                                                     variant, accumulate=False)
    assert arguments[-1] == 0
    kernel_on_cpu.run_transpose(weight_bits.ctypes.data, y_bits.ctypes.data, out.ctypes.data, *grid, *arguments)
    numpy.testing.assert_allclose(out, fold, rtol=1e-5, atol=1e-3)
    assert numpy.isnan(memory[-96:]).all()


SUBTRACTING_RUNNER = GRID_RUNNER + r"""
extern "C" void run_transpose(const unsigned short* weights, const unsigned short* y, float* out, unsigned grid_x,
                              unsigned grid_y, unsigned grid_z, int rows, int batch, int channels, int field, int step,
                              int blocks_h, int blocks_w, int map_w, int accumulate, const float* subtract,
                              double* partials)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_mma_filter_transpose_fold(weights, y, out, rows, batch, channels, field, step, blocks_h, blocks_w,
                                          map_w, accumulate, subtract, partials);
    }, TRANSPOSE_THREADS);
}
"""


@pytest.mark.parametrize("variant", ["k32x4"])  # (wgmma's under g++: 28 s to build; on the GPU in tests/test_gpu.py)
def test_the_transpose_that_subtracts_writes_the_error_and_its_blocks_sums_of_squares(tmp_path, variant):
    """``SUBTRACT`` (one tile's reconstruction error in the fold, ``DASKSAE_WRITE_ONCE``): over a map of NaNs, the
    kernel writes ``W^T y - x`` rounded as ``r - x`` of the float32 fold ``r`` is, and each block's sum of the
    squares into its slot of the partials (the slack past the map and past the partials untouched), in ``mma.sync``'s
    tiles."""
    runner = SUBTRACTING_RUNNER
    if variant in mma_transpose.WGMMA_VARIANTS:
        runner = runner.replace("dasksae_mma_filter_transpose_fold", "dasksae_wgmma_filter_transpose_fold")
    library = built_on_cpu(tmp_path, SHIM + MMA_EMULATION + WGMMA_EMULATION
                           + mma_transpose.mma_transpose_source(variant, subtract=True) + runner)
    library.run_transpose.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9 + [
        ctypes.c_void_p] * 2
    field, step, channels, rows, blocks_h, blocks_w, batch = 8, 4, 8, 64, 3, 3, 136
    weight_bits, y_bits, out, expected = transpose_case(7, field, step, channels, rows, blocks_h, blocks_w, batch)
    fold = expected - out.astype(numpy.float64)  # W^T y in float64
    x = numpy.random.default_rng(8).standard_normal(out.shape).astype(numpy.float32)
    memory = numpy.full(out.size + 96, numpy.nan, dtype=numpy.float32)
    out = memory[:-96].reshape(out.shape)
    grid, arguments = mma_transpose.transpose_launch(out.shape, weight_bits.shape, field, step, blocks_h, blocks_w,
                                                     variant, accumulate=False)
    partials = numpy.full(grid[0] * grid[1] * grid[2] + 1, numpy.nan)
    library.run_transpose(weight_bits.ctypes.data, y_bits.ctypes.data, out.ctypes.data, *grid, *arguments,
                          x.ctypes.data, partials.ctypes.data)
    numpy.testing.assert_allclose(out, fold - x, rtol=1e-5, atol=1e-3)
    assert numpy.isnan(memory[-96:]).all() and numpy.isnan(partials[-1])
    squares = (out * out).astype(numpy.float64)  # each square rounded to float32, as pair_sum's, summed in float64
    assert grid[2] == 2 and numpy.isfinite(partials[:-1]).all()
    numpy.testing.assert_allclose(partials[:-1].sum(), squares.sum(), rtol=1e-12)
    # block (x, y, z) at index (z gy + y) gx + x: cells (a = y, b = CELLS x ..), columns 96 z ..
    cells = mma_transpose.cells_a_block(variant)
    numpy.testing.assert_allclose(partials[0], squares[:step, :cells * step, :, :96].sum(), rtol=1e-12)
    last = squares[-step:, (grid[0] - 1) * cells * step:, :, 96:]  # (the last block of the grid: cells past the map
    numpy.testing.assert_allclose(partials[-2], last.sum(), rtol=1e-12)  # none)


@pytest.mark.parametrize("field, step, channels, rows, blocks_h, blocks_w, batch", [
    (8, 4, 8, 64, 3, 2, 96), (8, 4, 3, 32, 2, 3, 136)], ids=["cells-of-128", "three-channels-part-tile"])
def test_the_transpose_with_its_layer_compiled_in_folds_as_numpy(tmp_path, field, step, channels, rows, blocks_h,
                                                                 blocks_w, batch):
    """``DASKSAE_MMA_GEOMETRY=1``: the source with the layer's rows, channels, field and step compiled in (its
    arguments of those names then unread: here given wrong) folds the same map as NumPy."""
    library = built_on_cpu(tmp_path, SHIM + MMA_EMULATION + mma_transpose.mma_transpose_source(
        "k32x4", (rows, channels, field, step)) + RUNNER)
    library.run_transpose.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9
    weight_bits, y_bits, out, expected = transpose_case(9, field, step, channels, rows, blocks_h, blocks_w, batch)
    grid, (_, batch_argument, _, _, _, *rest) = mma_transpose.transpose_launch(out.shape, weight_bits.shape, field,
                                                                                step, blocks_h, blocks_w)
    library.run_transpose(weight_bits.ctypes.data, y_bits.ctypes.data, out.ctypes.data, *grid, 0, batch_argument,
                          0, 0, 0, *rest)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)


def test_shapes_the_kernel_does_not_take_are_refused():
    """A field that is not a multiple of the step, cells of more than 128 values, rows not in whole 32s, a map of
    another size, a minibatch not in whole 8s, runs of ``step C`` values not in whole 4s (3 channels at step 2): the
    caller multiplies and folds."""
    weights = numpy.zeros((6, 64, 8 * 8 * 8), numpy.uint16)
    y = numpy.zeros((6, 64, 96), numpy.uint16)
    out = numpy.zeros((16, 12, 8, 96), numpy.float32)
    assert mma_transpose.transpose_fits(out, weights, y, 8, 4, 3, 2)
    assert not mma_transpose.transpose_fits(out, weights, y, 8, 3, 3, 2)
    assert not mma_transpose.transpose_fits(out[:15], weights, y, 8, 4, 3, 2)
    assert not mma_transpose.transpose_fits(out, weights[:, :48], y[:, :48], 8, 4, 3, 2)
    assert not mma_transpose.transpose_fits(out[..., :60].copy(), weights, y[..., :60].copy(), 8, 4, 3, 2)
    wide = numpy.zeros((16, 12, 16, 96), numpy.float32)  # 4x4 pixels of 16 channels: 256 values a cell
    assert not mma_transpose.transpose_fits(wide, numpy.zeros((6, 64, 8 * 8 * 16), numpy.uint16), y, 8, 4, 3, 2)
    three = numpy.zeros((16, 12, 3, 96), numpy.float32)  # runs of 12 values at step 4: taken, 8 bytes a copy
    assert mma_transpose.transpose_fits(three, numpy.zeros((6, 64, 8 * 8 * 3), numpy.uint16), y, 8, 4, 3, 2)
    six = numpy.zeros((10, 8, 3, 96), numpy.float32)  # runs of 6 values at step 2
    assert not mma_transpose.transpose_fits(six, numpy.zeros((6, 64, 6 * 6 * 3), numpy.uint16), y, 6, 2, 3, 2)
