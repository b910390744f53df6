"""The float32 ``W x`` on TF32 tensor cores with split operands (``dasksae/kernels/mma_float32.py``), its CUDA source
run on the CPU under g++ with ``tests/test_mma_update_on_cpu.py``'s shim and, here, ``mma.sync.m16n8k8`` in TF32 and
``cvt.rna.tf32.f32`` emulated from the PTX ISA (A: registers 0-3 hold rows g, g+8, g, g+8 and inner terms t, t, t+4,
t+4; B: registers 0-1 hold inner terms t and t+4 of column g; D: rows g, g, g+8, g+8 and columns 2t, 2t+1; the
hardware reads only a TF32 operand's top 19 bits, so the emulation drops the low 13): against NumPy in float64.

The accuracy test is the module's reason to exist: the split product's error against float64 must be that of a float32
product (NumPy's float32 ``matmul`` of the same operands), and the same source with one term (plain TF32) must fail
that bound by far, so that the test would catch a split that is not taken."""

import ctypes
import shutil

import numpy
import pytest

from dasksae.kernels import mma_float32
from dasksae.kernels.local_filter import gather_patches, local_filter_forward
from test_mma_forward_on_cpu import run_on_cpu as run_forward_on_cpu
from test_mma_update_on_cpu import MMA_EMULATION
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

TF32_EMULATION = r"""
static inline float __uint_as_float(unsigned bits) { float value; std::memcpy(&value, &bits, 4); return value; }
static inline unsigned to_tf32(const float value)  // cvt.rna.tf32.f32: to nearest, ties away from zero (finite values)
{
    return (__float_as_uint(value) + 0x1000u) & 0xffffe000u;
}
static unsigned tf32_a[512][4], tf32_b[512][2];  // every lane of a warp calls mma_1688 together
static inline void mma_1688(float* d, const unsigned* a, const unsigned* b)
{
    const int tid = threadIdx.x, warp = tid & ~31, lane = tid & 31, g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) tf32_a[tid][r] = a[r];
    for (int r = 0; r < 2; ++r) tf32_b[tid][r] = b[r];
    warp_sync();
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), column = 2 * t + e % 2;
        float sum = d[e];
        for (int k = 0; k < 8; ++k) {  // A's (row, k): lane (row % 8, k % 4), register (row >= 8) + 2 (k >= 4)
            const unsigned a_bits = tf32_a[warp + (row % 8) * 4 + k % 4][(row >= 8) + 2 * (k >= 4)] & 0xffffe000u;
            const unsigned b_bits = tf32_b[warp + column * 4 + k % 4][k >= 4] & 0xffffe000u;  // (k % 4, column)
            sum += __uint_as_float(a_bits) * __uint_as_float(b_bits);
        }
        d[e] = sum;
    }
    warp_sync();
}
"""

RUNNER = GRID_RUNNER + r"""
extern "C" void run_forward(const float* weights, const float* x, float* out, const float* row_scale,
                            unsigned grid_x, unsigned grid_y, unsigned grid_z, int rows, int batch, int fan_in,
                            int blocks_w, int step, int field_rows, int block_h, int block_w, int maps,
                            long long in_row, long long in_pixel, long long out_row, long long out_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_tf32x3_filter_forward(weights, x, out, rows, batch, fan_in, blocks_w, step, field_rows, block_h,
                                      block_w, maps, in_row, in_pixel, out_row, out_pixel, row_scale);
    });
}
"""


def build(folder, variant: str = mma_float32.VARIANT, terms: int = 3):
    """The kernel built under g++ with the TF32 shim."""
    library = built_on_cpu(folder, SHIM + MMA_EMULATION + TF32_EMULATION
                           + mma_float32.mma_float32_source(variant, terms) + RUNNER)
    library.run_forward.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9
                                    + [ctypes.c_longlong] * 4)
    return library


@pytest.fixture(scope="module")
def kernel_on_cpu(tmp_path_factory):
    """``kernel_on_cpu(variant)``: the kernel built under g++ in a variant of its tiles (mma_forward.SPLIT_VARIANTS),
    once."""
    built = {}

    def kernel(variant: str):
        if variant not in built:
            built[variant] = build(tmp_path_factory.mktemp("mma_float32"), variant)
        return built[variant]

    return kernel


def run_on_cpu(library, x, weights, out, row_scale, field, step, block_h, block_w):
    """The kernel over NumPy arrays, launched as :func:`~dasksae.kernels.mma_float32.filter_forward_float32` does."""
    run_forward_on_cpu(library, x, weights, out, row_scale, field, step, block_h, block_w, mma_float32.forward_fits)


def forward_case(seed: int, batch: int = 96, channels: int = 4, field: int = 6):
    """3x2 blocks of ``field x field x channels`` fields at step 2 (6x6x4: fan-in 144, the last tile of 32 inner terms
    half past the end), a minibatch of ``batch``, 2x1 positions of 68 maps a block (136 rows: a guarded second tile of
    128 rows); float32 operands."""
    rng = numpy.random.default_rng(seed)
    step, blocks_h, blocks_w, maps = 2, 3, 2, 68
    rows = 2 * maps
    x = rng.standard_normal(((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch))
    weights = rng.standard_normal((blocks_h * blocks_w, rows, field * field * channels))
    scale = rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows))
    out_shape = (blocks_h * 2, blocks_w, maps, batch)
    return field, step, blocks_h, blocks_w, rows, x.astype(numpy.float32), weights.astype(numpy.float32), \
        scale.astype(numpy.float32), out_shape


def expected_forward(case, precision: str = "float64", scaled: bool = True):
    """NumPy's ``diag(scale) W x`` (or ``W x``) of the case's float32 values, in ``precision``."""
    field, step, blocks_h, blocks_w, rows, x, weights, scale, _ = case
    dtype = numpy.dtype(precision)
    return local_filter_forward(x.astype(dtype), weights.reshape(blocks_h, blocks_w, rows, -1).astype(dtype), field,
                                step, 2, 1, row_scale=scale.astype(dtype) if scaled else None, precision=precision)


@pytest.mark.parametrize("variant, scaled, batch", [("k32x3", True, 96), ("k32x3", False, 136), ("k16x4", True, 96)],
                         ids=["row-scale", "no-scale-part-tile", "k16x4"])
def test_the_split_forward_writes_the_output_map_as_numpy(kernel_on_cpu, variant, scaled, batch):
    """``W x`` from the float32 map into the output map, each row times its scale, in each variant of the tiles; with
    a minibatch of 136, a second tile of 96 columns with 40 in the minibatch (nothing written past it: the slack after
    the map stays NaN)."""
    case = forward_case(3, batch)
    field, step, _, _, _, x, weights, scale, shape = case
    memory = numpy.full(int(numpy.prod(shape)) + 96, numpy.nan, dtype=numpy.float32)
    out = memory[:-96].reshape(shape)
    run_on_cpu(kernel_on_cpu(variant), x, weights, out, scale if scaled else None, field, step, 2, 1)
    assert numpy.isnan(memory[-96:]).all()
    numpy.testing.assert_allclose(out, expected_forward(case, scaled=scaled), rtol=1e-5, atol=1e-4)


def _error(out, case) -> float:
    """The largest error against float64, relative to the row's sum of |products| (a product's rounding scale)."""
    field, step, blocks_h, blocks_w, rows, x, weights, scale, _ = case
    magnitudes = local_filter_forward(numpy.abs(x).astype(numpy.float64),
                                      numpy.abs(weights).reshape(blocks_h, blocks_w, rows, -1).astype(numpy.float64),
                                      field, step, 2, 1, row_scale=scale.astype(numpy.float64), precision="float64")
    return float(numpy.max(numpy.abs(out - expected_forward(case)) / magnitudes))


def float32_chain(case):
    """``diag(scale) W x`` as a float32 FMA chain over the inner terms in order (one rounding a term, as the SIMT
    kernel takes a product: the float64 product of two float32 values is exact, its sum rounded once to float32)."""
    field, step, blocks_h, blocks_w, rows, x, weights, scale, shape = case
    patches = gather_patches(x, field, step, blocks_h, blocks_w).astype(numpy.float64)  # (count, fan_in, M)
    sums = numpy.zeros((blocks_h * blocks_w, rows, x.shape[3]), numpy.float32)
    for k in range(weights.shape[2]):
        sums = (sums + weights[:, :, k : k + 1].astype(numpy.float64) * patches[:, k : k + 1]).astype(numpy.float32)
    rows_scaled = sums * scale.reshape(blocks_h * blocks_w, rows, 1)
    return rows_scaled.reshape(blocks_h, blocks_w, 2, rows // 2, -1).transpose(0, 2, 1, 3, 4).reshape(shape)


def test_the_split_is_as_accurate_as_float32_and_one_term_is_not(tmp_path):
    """On a fan-in of 576 (6x6x16: 18 tiles of 32), the split product's largest error against float64 (relative to
    the sum of |products|) is within 2x of a float32 FMA chain's over the same operands (:func:`float32_chain`, the
    SIMT kernel's way; measured: 1.4x); plain TF32 (one term, the same source) is more than 100x worse (measured:
    280x).  The bound is float32's, so a kernel that skipped the split would fail."""
    case = forward_case(7, 96, channels=16)
    field, step, _, _, _, x, weights, scale, shape = case
    float32_error = _error(float32_chain(case).astype(numpy.float64), case)
    errors = {}
    for terms in (3, 1):
        out = numpy.full(shape, numpy.nan, dtype=numpy.float32)
        folder = tmp_path / f"terms{terms}"
        folder.mkdir()
        run_on_cpu(build(folder, terms=terms), x, weights, out, scale, field, step, 2, 1)
        errors[terms] = _error(out.astype(numpy.float64), case)
    assert errors[3] <= 2 * float32_error, (errors, float32_error)
    assert errors[1] > 100 * float32_error, (errors, float32_error)


def test_maps_the_kernel_does_not_take_are_refused():
    """bfloat16 operands, a minibatch or fan-in not in whole 4s, a misshapen output: the caller takes another path."""
    x = numpy.zeros((8, 8, 4, 96), numpy.float32)
    weights = numpy.zeros((4, 16, 144), numpy.float32)
    out = numpy.zeros((2, 2, 16, 96), numpy.float32)
    assert mma_float32.forward_fits(x, weights, out, None, 6, 2, 1, 1)
    assert not mma_float32.forward_fits(x.view(numpy.uint16)[..., :96], weights, out, None, 6, 2, 1, 1)
    assert not mma_float32.forward_fits(x[..., :94].copy(), weights, out[..., :94].copy(), None, 6, 2, 1, 1)
    assert not mma_float32.forward_fits(numpy.zeros((8, 8, 3, 96), numpy.float32), numpy.zeros((4, 16, 75),
                                        numpy.float32), numpy.zeros((2, 2, 16, 96), numpy.float32), None, 5, 2, 1, 1)
    assert not mma_float32.forward_fits(x, weights, numpy.zeros((2, 2, 8, 96), numpy.float32), None, 6, 2, 1, 1)
    with pytest.raises(ValueError, match="terms must be 1 or 3"):
        mma_float32.mma_float32_source(terms=2)
