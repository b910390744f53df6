"""The bfloat16 tensor-core ``W x`` (``dasksae/kernels/mma_forward.py``), its CUDA source run on the CPU under g++
with ``tests/test_mma_update_on_cpu.py``'s shim (``mma.sync`` and ``ldmatrix.trans`` emulated from the PTX ISA's
fragment layouts, ``cp.async`` a copy), against NumPy's product of the same bfloat16 values in float64."""

import ctypes
import shutil

import numpy
import pytest

from dasksae.kernels import mma_forward, simt_gemm
from dasksae.kernels.local_filter import batched_matmul, gather_patches, local_filter_forward
from test_mma_update_on_cpu import MMA_EMULATION, WGMMA_EMULATION, _bfloat16
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

RUNNER = GRID_RUNNER + r"""
extern "C" void run_forward(const unsigned short* weights, const unsigned short* x, float* out, const float* row_scale,
                            unsigned grid_x, unsigned grid_y, unsigned grid_z, int rows, int batch, int fan_in,
                            int blocks_w, int step, int field_rows, int block_h, int block_w, int maps,
                            long long in_row, long long in_pixel, long long out_row, long long out_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_mma_filter_forward(weights, x, out, rows, batch, fan_in, blocks_w, step, field_rows, block_h, block_w,
                                   maps, in_row, in_pixel, out_row, out_pixel, row_scale);
    }, FORWARD_THREADS);
}
"""


def built_forward(folder, variant: str, geometry=None, ldmatrix: bool = False):
    """The kernel of ``variant`` built under g++ (``mma.sync`` emulated, and ``wgmma`` through its descriptors for a
    variant of :data:`~dasksae.kernels.mma_forward.WGMMA_VARIANTS`), ``run_forward`` calling it."""
    runner = RUNNER
    if variant in mma_forward.WGMMA_VARIANTS:
        runner = RUNNER.replace("dasksae_mma_filter_forward", "dasksae_wgmma_filter_forward")
    library = built_on_cpu(folder, SHIM + MMA_EMULATION + WGMMA_EMULATION
                           + mma_forward.mma_forward_source(variant, geometry, ldmatrix) + runner)
    library.run_forward.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9 + [ctypes.c_longlong] * 4
    return library


@pytest.fixture(scope="module", params=list(mma_forward.VARIANTS) + list(mma_forward.WGMMA_VARIANTS))
def kernel_on_cpu(tmp_path_factory, request):
    """The kernel built under g++ in each variant of its tiles (mma_forward.VARIANTS, and WGMMA_VARIANTS on
    wgmma)."""
    library = built_forward(tmp_path_factory.mktemp("mma_forward"), request.param)
    library.variant = request.param
    return library


def taken_by_training(variant: str) -> bool:
    """Whether the training takes ``variant`` by default (``mma.sync``'s, and ``wgmma``'s on sm_90): those get every
    case of a test, the others its fullest one (the suite's time: CI's ten minutes)."""
    return variant in (mma_forward.VARIANT, mma_forward.WGMMA_VARIANT)


def run_on_cpu(library, x, weights, out, row_scale, field, step, block_h, block_w, fits=mma_forward.forward_fits):
    """The kernel over NumPy arrays, launched as :func:`~dasksae.kernels.mma_forward.filter_forward_bfloat16` does
    (and :func:`~dasksae.kernels.mma_float32.filter_forward_float32`, whose arrays ``fits`` checks)."""
    assert fits(x, weights, out, row_scale, field, step, block_h, block_w)
    rows_a_block = mma_forward.tile_rows(getattr(library, "variant", mma_forward.VARIANT))
    grid, arguments = mma_forward.launch(x.shape, out.shape, weights.shape, field, step, block_h, block_w, rows_a_block)
    assert grid[0] == -(-weights.shape[1] // rows_a_block)  # (136 rows: 2 blocks of 128 rows, or 3 of 64)
    library.run_forward(weights.ctypes.data, x.ctypes.data, out.ctypes.data,
                        None if row_scale is None else row_scale.ctypes.data, *grid, *arguments)


def forward_case(seed: int, block_h: int, block_w: int, maps: int, batch: int = 96):
    """3x2 blocks of 6x6x4 fields at step 2: fan-in 144 (the last tile of 32 inner terms half past the end), a
    minibatch of ``batch``; ``block_h x block_w x maps`` rows a block (136: a guarded second tile of 128 rows)."""
    rng = numpy.random.default_rng(seed)
    field, step, channels, blocks_h, blocks_w = 6, 2, 4, 3, 2
    rows = block_h * block_w * maps
    x_bits, x = _bfloat16(rng.standard_normal(((blocks_h - 1) * step + field, (blocks_w - 1) * step + field,
                                               channels, batch)))
    weight_bits, weights = _bfloat16(rng.standard_normal((blocks_h * blocks_w, rows, field * field * channels)))
    return field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, rng


@pytest.mark.parametrize("scaled, batch", [(True, 96), (False, 96), (True, 136), (False, 104)],
                         ids=["row-scale", "no-scale", "row-scale-part-tile", "no-scale-8-column-tile"])
def test_the_tensor_core_forward_writes_the_output_map_as_numpy(kernel_on_cpu, scaled, batch):
    """``W x`` from the map into the output map (2x1 positions of 68 maps a block), each row times its scale; with a
    minibatch of 136 or 104, a second tile of 96 columns with 40 or 8 in the minibatch (nothing written past it)."""
    if not taken_by_training(kernel_on_cpu.variant) and (scaled, batch) != (True, 136):
        pytest.skip(f"{kernel_on_cpu.variant} is checked with a row scale and a part-full tile only")
    field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, rng = forward_case(3, 2, 1, 68, batch)
    scale = rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows)).astype(numpy.float32) if scaled else None
    shape = (blocks_h * 2, blocks_w, 68, batch)
    memory = numpy.full(int(numpy.prod(shape)) + 96, numpy.nan, dtype=numpy.float32)  # 96 values of slack after it
    out = memory[:-96].reshape(shape)  # (a column past the minibatch written would land in the next row or the slack)
    run_on_cpu(kernel_on_cpu, x_bits, weight_bits, out, scale, field, step, 2, 1)
    assert numpy.isnan(memory[-96:]).all()
    expected = local_filter_forward(x, weights.reshape(blocks_h, blocks_w, rows, -1), field, step, 2, 1,
                                    row_scale=None if scale is None else scale.astype(numpy.float64),
                                    precision="float64")
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_the_tensor_core_fields_product_writes_block_rows_as_numpy(kernel_on_cpu):
    """The backward's ``U g_r``: one-position blocks of 136 rows into block rows ``(count, rows, M)``."""
    if not taken_by_training(kernel_on_cpu.variant):
        pytest.skip(f"{kernel_on_cpu.variant} is checked on the forward's part-full tile only")
    field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, _ = forward_case(4, 1, 1, 136)
    out = numpy.full((blocks_h * blocks_w, rows, batch), numpy.nan, dtype=numpy.float32)
    run_on_cpu(kernel_on_cpu, x_bits, weight_bits, simt_gemm.as_block_map(out, blocks_w), None, field, step, 1, 1)
    expected = batched_matmul(weights, gather_patches(x, field, step, blocks_h, blocks_w), precision="float64")
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("compiled, ldmatrix, batch", [(True, False, 136), (False, True, 136), (True, True, 96)],
                         ids=["compiled-part-tile", "ldmatrix-part-tile", "compiled-ldmatrix"])
def test_the_forward_with_its_layer_compiled_in_or_ldmatrix_writes_the_output_map_as_numpy(tmp_path, compiled,
                                                                                          ldmatrix, batch):
    """``DASKSAE_MMA_GEOMETRY=1``: the source with the layer's rows, minibatch, fan-in, field rows, block width, maps
    and input row compiled in (its arguments of those names then unread: here given as zeros) writes the same map;
    and ``DASKSAE_MMA_LDMATRIX=1``, its A fragments taken by ``ldmatrix.x4``."""
    field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, rng = forward_case(5, 2, 1, 68,
                                                                                                      batch)
    scale = rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows)).astype(numpy.float32)
    out = numpy.full((blocks_h * 2, blocks_w, 68, batch), numpy.nan, dtype=numpy.float32)
    grid, arguments = mma_forward.launch(x_bits.shape, out.shape, weight_bits.shape, field, step, 2, 1)
    library = built_forward(tmp_path, "k64x3", mma_forward.layer_geometry(arguments) if compiled else None, ldmatrix)
    unread = list(arguments)
    for index in (0, 1, 2, 5, 7, 8, 9) if compiled else ():  # rows, batch, fan_in, field_rows, block_w, maps, in_row
        unread[index] = 0
    library.run_forward(weight_bits.ctypes.data, x_bits.ctypes.data, out.ctypes.data, scale.ctypes.data, *grid,
                        *unread)
    expected = local_filter_forward(x, weights.reshape(blocks_h, blocks_w, rows, -1), field, step, 2, 1,
                                    row_scale=scale.astype(numpy.float64), precision="float64")
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_maps_the_kernel_does_not_take_are_refused():
    """A minibatch not in whole 8s, a fan-in not in whole 8s, float32 operands: the caller takes another path."""
    x = numpy.zeros((8, 8, 4, 96), numpy.uint16)
    weights = numpy.zeros((4, 16, 144), numpy.uint16)
    out = numpy.zeros((2, 2, 16, 96), numpy.float32)
    assert mma_forward.forward_fits(x, weights, out, None, 6, 2, 1, 1)
    assert mma_forward.forward_fits(x[..., :64].copy(), weights, out[..., :64].copy(), None, 6, 2, 1, 1)
    assert not mma_forward.forward_fits(x[..., :60].copy(), weights, out[..., :60].copy(), None, 6, 2, 1, 1)
    assert not mma_forward.operands_fit(numpy.zeros((8, 8, 3, 96), numpy.uint16), numpy.zeros((4, 16, 75), numpy.uint16), 5)
    assert not mma_forward.operands_fit(x.astype(numpy.float32), weights, 6)


def test_the_half_variant_takes_blocks_of_64_rows():
    """w64x3-half (for benchmarks, DASKSAE_WGMMA_FORWARD=w64x3-half): one warpgroup a block, 64 rows, three stages of
    64 + 96 rows of 128 bytes; the others 128 rows, 256 threads."""
    assert mma_forward.shared_bytes("w64x3-half") == 3 * (64 + 96) * 64 * 2
    assert mma_forward.block_threads("w64x3-half") == 128 and mma_forward.block_threads("w64x3-swizzled") == 256
    assert mma_forward.tile_rows("w64x3-half") == 64 and mma_forward.tile_rows("k64x3") == 128
