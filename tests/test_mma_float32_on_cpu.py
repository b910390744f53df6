"""The float32 ``W x``, ``W^T y`` with the fold and the weight gradient with the update on TF32 tensor cores with split
operands (``dasksae/kernels/mma_float32.py``), their CUDA sources run on the CPU under g++ with
``tests/test_mma_update_on_cpu.py``'s shim and, here, ``mma.sync.m16n8k8`` in TF32 emulated from the PTX ISA (A:
registers 0-3 hold rows g, g+8, g, g+8 and inner terms t, t, t+4, t+4; B: registers 0-1 hold inner terms t and t+4 of
column g; D: rows g, g, g+8, g+8 and columns 2t, 2t+1; the hardware reads only a TF32 operand's top 19 bits, so the
emulation drops the low 13): against NumPy in float64.

The accuracy tests are the module's reason to exist: the split products' error against float64 must be that of a
float32 FMA chain over the same operands (the SIMT kernels' way), and the same source with one term (plain TF32) must
fail that bound by far, so that the tests would catch a split that is not taken."""

import ctypes
import shutil

import numpy
import pytest

from dasksae.kernels import mma_float32, mma_forward, mma_transpose, mma_update
from dasksae.kernels.gemm import batched_matmul
from dasksae.kernels.local_filter import fold_patches_into, gather_patches, local_filter_forward
from test_mma_forward_on_cpu import run_on_cpu as run_forward_on_cpu
from test_mma_update_on_cpu import MMA_EMULATION, WGMMA_EMULATION, assert_updated_as_expected, to_tf32, update_case
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu

# mma.sync's split and every wgmma variant (mma_forward's and mma_transpose's have the same names: a test below)
ALL_VARIANTS = [mma_float32.VARIANT, *mma_forward.SPLIT_WGMMA_VARIANTS]

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

TF32_EMULATION = r"""
static inline float __uint_as_float(unsigned bits) { float value; std::memcpy(&value, &bits, 4); return value; }
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


def built_with_the_tf32_shim(folder, source: str, runner: str, on_wgmma: bool):
    """``source`` and ``runner`` built under g++ with the TF32 shim and ``wgmma`` emulated through its descriptors;
    ``on_wgmma``: the runner calls the kernel's ``wgmma`` name."""
    if on_wgmma:
        runner = runner.replace("dasksae_tf32x3_", "dasksae_wgmma_tf32x3_")
    return built_on_cpu(folder, SHIM + MMA_EMULATION + TF32_EMULATION + WGMMA_EMULATION + source + runner)


def build(folder, variant: str = mma_float32.VARIANT, terms: int = 3):
    """The kernel built under g++ with the TF32 shim (a ``wgmma`` variant's products emulated through their
    descriptors)."""
    library = built_with_the_tf32_shim(folder, mma_float32.mma_float32_source(variant, terms), RUNNER,
                                       variant in mma_forward.SPLIT_WGMMA_VARIANTS)
    library.run_forward.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9
                                    + [ctypes.c_longlong] * 4)
    return library


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """``built_once(builder, variant)``: ``builder(folder, variant)`` (:func:`build`, :func:`build_transpose`,
    :func:`build_update`) built under g++ once a module for each builder and variant."""
    built = {}

    def kernel(builder, variant: str):
        if (builder, variant) not in built:
            built[builder, variant] = builder(tmp_path_factory.mktemp("mma_float32"), variant)
        return built[builder, variant]

    return kernel


def run_on_cpu(library, x, weights, out, row_scale, field, step, block_h, block_w):
    """The kernel over NumPy arrays, launched as :func:`~dasksae.kernels.mma_float32.filter_forward_float32` does."""
    run_forward_on_cpu(library, x, weights, out, row_scale, field, step, block_h, block_w, mma_float32.forward_fits)


def forward_case(seed: int, batch: int = 96, channels: int = 4, field: int = 6, maps: int = 68):
    """3x2 blocks of ``field x field x channels`` fields at step 2 (6x6x4: fan-in 144, the last tile of 32 inner terms
    half past the end), a minibatch of ``batch``, 2x1 positions of ``maps`` maps a block (68: 136 rows, a guarded
    second tile of 128 rows); float32 operands."""
    rng = numpy.random.default_rng(seed)
    step, blocks_h, blocks_w = 2, 3, 2
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


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("scaled, batch", [(True, 96), (False, 136)], ids=["row-scale", "no-scale-part-tile"])
def test_the_split_forward_writes_the_output_map_as_numpy(built_once, scaled, batch, variant):
    """``W x`` from the float32 map into the output map, each row times its scale; with a minibatch of 136, a second
    tile of 96 columns with 40 in the minibatch (nothing written past it: the slack after the map stays NaN).  The
    ``mma.sync`` split, and the ``wgmma`` variants (emulated): their k-tiles split and B transposed as they are
    staged."""
    case = forward_case(3, batch, maps=68 if scaled else 32)  # (the part-full column tile with one tile of rows)
    field, step, _, _, _, x, weights, scale, shape = case
    memory = numpy.full(int(numpy.prod(shape)) + 96, numpy.nan, dtype=numpy.float32)
    out = memory[:-96].reshape(shape)
    run_on_cpu(built_once(build, variant), x, weights, out, scale if scaled else None, field, step, 2, 1)
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


def test_both_products_name_the_same_wgmma_variants():
    """The switches take one name for both float32 products, so each ``wgmma`` variant exists for both."""
    assert list(mma_forward.SPLIT_WGMMA_VARIANTS) == list(mma_transpose.SPLIT_WGMMA_VARIANTS)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_split_is_as_accurate_as_float32_and_one_term_is_not(tmp_path, built_once, variant):
    """On a fan-in of 288 (6x6x8: 9 tiles of 32) and 64 rows, the split product's largest error against float64
    (relative to the sum of |products|) is within 3x of a float32 FMA chain's over the same operands
    (:func:`float32_chain`, the SIMT kernel's way; measured: 0.4x, the emulated ``mma`` rounding after each of its 8
    products, a k-step's three products summed from zero; 1.8x when they were added to the running sums); plain TF32
    (one term, the same source, what ``--dtype tf32`` takes with ``DASKSAE_TF32_TENSOR_CORES=1``) is more than 100x
    worse (measured: 390x), and is the product of the operands rounded to TF32 (to nearest, ties away) to within
    that bound.  The bound is float32's, so a kernel that skipped the split would fail."""
    case = forward_case(7, 96, channels=8, maps=32)
    field, step, _, _, _, x, weights, scale, shape = case
    float32_error = _error(float32_chain(case).astype(numpy.float64), case)
    errors = {}
    for terms in (3, 1):
        out = numpy.full(shape, numpy.nan, dtype=numpy.float32)
        library = built_once(build, variant) if terms == 3 else build(tmp_path, variant, terms)
        run_on_cpu(library, x, weights, out, scale, field, step, 2, 1)
        errors[terms] = _error(out.astype(numpy.float64), case)
    print(f"W x: the split's error {errors[3] / float32_error:.1f}x a float32 chain's, one term's "
          f"{errors[1] / float32_error:.0f}x")  # (pytest -s: README's figures)
    assert errors[3] <= 3 * float32_error, (errors, float32_error)
    assert errors[1] > 100 * float32_error, (errors, float32_error)
    tf32_case = case[:5] + (to_tf32(x), to_tf32(weights)) + case[7:]
    assert _error(out.astype(numpy.float64), tf32_case) <= 3 * float32_error


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


TRANSPOSE_RUNNER = GRID_RUNNER + r"""
extern "C" void run_transpose(const float* weights, const float* y, float* out, unsigned grid_x, unsigned grid_y,
                              unsigned grid_z, int rows, int batch, int channels, int field, int step, int blocks_h,
                              int blocks_w, int map_w, int accumulate)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_tf32x3_filter_transpose_fold(weights, y, out, rows, batch, channels, field, step, blocks_h, blocks_w,
                                             map_w, accumulate);
    });
}
"""


def build_transpose(folder, variant: str = mma_float32.VARIANT, terms: int = 3):
    """The split transpose built under g++ with the TF32 shim (a ``wgmma`` variant's products emulated through their
    descriptors)."""
    library = built_with_the_tf32_shim(folder, mma_float32.mma_float32_transpose_source(variant, terms),
                                       TRANSPOSE_RUNNER, variant in mma_transpose.SPLIT_WGMMA_VARIANTS)
    library.run_transpose.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_uint] * 3 + [ctypes.c_int] * 9
    return library


def transpose_case(seed: int, field: int, step: int, channels: int, rows: int, blocks_h: int, blocks_w: int,
                   batch: int = 96):
    """Float32 weights and ``y`` for ``blocks_h x blocks_w`` blocks and a float32 map of values to add to."""
    rng = numpy.random.default_rng(seed)
    count = blocks_h * blocks_w
    weights = rng.standard_normal((count, rows, field * field * channels)).astype(numpy.float32)
    y = rng.standard_normal((count, rows, batch)).astype(numpy.float32)
    shape = ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)
    return weights, y, rng.standard_normal(shape).astype(numpy.float32), (field, step, blocks_h, blocks_w)


def folded(weights, y, out, geometry):
    """``out`` plus the fold of ``W^T y``, in float64."""
    field, step, blocks_h, blocks_w = geometry
    expected = out.astype(numpy.float64)
    fold_patches_into(expected, batched_matmul(weights.astype(numpy.float64), y.astype(numpy.float64),
                                               transpose_a=True, precision="float64"), field, step, blocks_h, blocks_w)
    return expected


def run_transpose_on_cpu(library, weights, y, out, geometry, accumulate: bool = True):
    """The split transpose over NumPy arrays, launched as :func:`~dasksae.kernels.mma_float32.add_transpose_float32`
    does (``out`` added into in place; ``accumulate`` False: written)."""
    field, step, blocks_h, blocks_w = geometry
    assert mma_float32.transpose_fits(out, weights, y, field, step, blocks_h, blocks_w)
    grid, arguments = mma_transpose.transpose_launch(out.shape, weights.shape, field, step, blocks_h, blocks_w,
                                                     accumulate=accumulate)
    library.run_transpose(weights.ctypes.data, y.ctypes.data, out.ctypes.data, *grid, *arguments)


@pytest.mark.parametrize("field, step, channels, rows, blocks_h, blocks_w, batch", [
    (8, 4, 8, 64, 3, 2, 96),  # cells of 128 values in up to 2x2 blocks, 2 tiles of 32 rows
    (8, 4, 3, 32, 2, 3, 136),  # 3 channels (runs of 12 floats, 3 copies), a part-full second column tile
], ids=["cells-of-128", "three-channels-part-tile"])
@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_split_transpose_folds_into_the_map_as_numpy(built_once, field, step, channels, rows, blocks_h, blocks_w,
                                                          batch, variant):
    """Every cell of the map gets its blocks' sum added (edges with fewer blocks and middles alike), and nothing past
    the minibatch (the 96 values of slack after the map stay NaN).  The ``mma.sync`` split, and ``w32-split-2`` on
    ``wgmma`` (emulated): both operands split and transposed as they are staged, two stages."""
    weights, y, out, geometry = transpose_case(5, field, step, channels, rows, blocks_h, blocks_w, batch)
    expected = folded(weights, y, out, geometry)
    memory = numpy.full(out.size + 96, numpy.nan, dtype=numpy.float32)
    memory[:-96] = out.ravel()
    out = memory[:-96].reshape(out.shape)
    run_transpose_on_cpu(built_once(build_transpose, variant), weights, y, out, geometry)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    assert numpy.isnan(memory[-96:]).all()


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_split_transpose_writes_each_cell_over_a_map_it_never_reads(built_once, variant):
    """``accumulate`` 0: each cell's sum written over a map of NaNs (never read), nothing past the minibatch."""
    weights, y, out, geometry = transpose_case(5, 8, 4, 3, 32, 2, 3, 136)  # (a part-full second tile of columns)
    expected = folded(weights, y, numpy.zeros_like(out), geometry)
    memory = numpy.full(out.size + 96, numpy.nan, dtype=numpy.float32)
    out = memory[:-96].reshape(out.shape)
    run_transpose_on_cpu(built_once(build_transpose, variant), weights, y, out, geometry, accumulate=False)
    numpy.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    assert numpy.isnan(memory[-96:]).all()


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_the_split_transpose_is_as_accurate_as_float32_and_one_term_is_not(tmp_path, built_once, variant):
    """64 rows of blocks of 8x8x8 fields at step 4 (up to 256 terms a value): the folded map's largest error against
    float64 (relative to the fold of ``|W|^T |y|``) within 3x of a float32 FMA chain's over the same terms in the
    kernel's order (blocks in raster order, rows in order, then added to the map; measured: 0.5x with a k-step's
    products summed from zero, 2.0x when they were added to the running sums); plain TF32 more than 20x it
    (measured: 1060x)."""
    weights, y, out, geometry = transpose_case(8, 8, 4, 8, 64, 3, 2)
    field, step, blocks_h, blocks_w = geometry
    expected = folded(weights, y, numpy.zeros_like(out), geometry) + out
    magnitudes = folded(numpy.abs(weights), numpy.abs(y), numpy.zeros_like(out), geometry)
    chain = numpy.zeros(out.shape, numpy.float32)  # each value's terms one at a time, rounded to float32 after each
    for block in range(blocks_h * blocks_w):
        p, q = divmod(block, blocks_w)
        window = chain[p * step : p * step + field, q * step : q * step + field]
        for row in range(weights.shape[1]):
            product = numpy.multiply.outer(weights[block, row].astype(numpy.float64), y[block, row])
            window[...] = (window + product.reshape(field, field, -1, y.shape[2])).astype(numpy.float32)
    errors = {"chain": float(numpy.max(numpy.abs((chain + out).astype(numpy.float64) - expected) / magnitudes))}
    for terms in (3, 1):
        mine = out.copy()
        library = (built_once(build_transpose, variant) if terms == 3
                   else build_transpose(tmp_path, variant, terms=terms))
        run_transpose_on_cpu(library, weights, y, mine, geometry)
        errors[terms] = float(numpy.max(numpy.abs(mine - expected) / magnitudes))
    print(f"W^T y: the split's error {errors[3] / errors['chain']:.1f}x a float32 chain's, one term's "
          f"{errors[1] / errors['chain']:.0f}x")  # (pytest -s: README's figures)
    assert errors[3] <= 3 * errors["chain"], errors
    assert errors[1] > 20 * errors["chain"], errors


UPDATE_RUNNER = GRID_RUNNER + r"""
extern "C" void run_update(const float* codes, const float* x, const float* error, float* raw, float* velocity,
                           const float* inverse_norms, const float* row_dots, float* partial_squares, float lr,
                           float momentum, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_threads,
                           int rows, int fan_in, int width, int half, int blocks_w, int step, int field_rows,
                           long long in_row, long long in_pixel)
{
    run_grid(grid_x, grid_y, grid_z, [=] {
        dasksae_tf32x3_filter_weight_grad_update(codes, x, error, raw, velocity, nullptr, inverse_norms, row_dots,
                                                 partial_squares, lr, momentum, rows, fan_in, width, half, blocks_w,
                                                 step, field_rows, in_row, in_pixel);
    }, block_threads);
}
"""


def build_update(folder, variant: str = "rows-wide", terms: int = 3):
    """The split update built under g++ with the TF32 shim, in one of its epilogues (mma_update.SPLIT_VARIANTS; a
    ``wgmma`` one's products emulated through their descriptors)."""
    runner = UPDATE_RUNNER
    if mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA"):
        runner = runner.replace("dasksae_tf32x3_", "dasksae_wgmma_tf32x3_")
    library = built_on_cpu(folder, SHIM + MMA_EMULATION + TF32_EMULATION + WGMMA_EMULATION
                           + mma_float32.mma_float32_update_source(variant, terms) + runner)
    library.run_update.argtypes = ([ctypes.c_void_p] * 8 + [ctypes.c_float] * 2 + [ctypes.c_uint] * 4
                                   + [ctypes.c_int] * 7 + [ctypes.c_longlong] * 2)
    return library


@pytest.mark.parametrize("variant, terms", [(mma_update.SPLIT_VARIANT, 3), (mma_update.SPLIT_VARIANT, 1),
                                            ("rows-wide-wgmma", 3), ("rows-wide-wgmma", 1)])
def test_the_split_update_takes_the_unit_norm_step_from_the_maps(built_once, tmp_path, variant, terms):
    """``codes [fields(x) | fields(error)]^T`` from float32 codes and maps on split TF32 tensor cores, taken as the
    unit-norm SGD step as the update's array code takes it in float64 (the same values, the same ``row_dots``), and
    the per-warp sums of squares giving the new ``1/||U||``: test_mma_update_on_cpu's case (a guarded second tile of
    rows, a part-empty second tile of columns) in float32.  (The same source with one TF32 term fails this test's
    tolerance: velocity off by up to 1e-3 relative, 12% of it past rtol 1e-4.)  With one term (plain TF32, its k-step's
    inner terms paired for 8-byte loads) on codes and maps that are already TF32 values, so that its products are
    exact as the split's are: the same tolerance holds, and any term it mispairs or drops fails it.  ``rows-wide`` (rows
    differs in its registers a thread, not in its code), and ``rows-wide-wgmma``: the k-tiles split as they are
    staged, the products on ``wgmma`` (emulated)."""
    library = built_once(build_update, variant) if terms == 3 else build_update(tmp_path, variant, terms)
    case = update_case(11, True, False, bfloat16=False, tf32=terms == 1)  # (the bfloat16 tests' x-only case)
    raw, velocity = case["raw"], case["velocity"]
    count, rows, _ = raw.shape
    assert mma_float32.update_fits(case["codes"], case["x"], case["error"], raw, velocity, case["inverse_norms"],
                                   case["row_dots"], case["field"], case["blocks_w"])
    grid, (threads,), arguments, _ = mma_update._update_launch(variant, case["codes"].shape, case["x"].shape,
                                                                case["field"], case["step"], case["blocks_w"], True)
    partial_squares = numpy.full((count * rows, 4), numpy.nan, numpy.float32)
    library.run_update(case["codes"].ctypes.data, case["x"].ctypes.data, case["error"].ctypes.data, raw.ctypes.data,
                       velocity.ctypes.data, case["inverse_norms"].ctypes.data, case["row_dots"].ctypes.data,
                       partial_squares.ctypes.data, case["lr"], case["momentum"], *grid, threads, *arguments)
    assert not numpy.isnan(partial_squares).any() and (partial_squares[:, 3] == 0).all()
    new_norms = (1 / numpy.sqrt(partial_squares.astype(numpy.float64).sum(-1))).reshape(count, rows)
    assert_updated_as_expected(case, raw, velocity, None, new_norms)


def test_the_split_update_takes_only_the_rows_epilogues_and_float32():
    """The split source is refused for epilogues it does not take; bfloat16 codes do not fit the float32 kernel."""
    with pytest.raises(ValueError, match="split TF32 takes the epilogues"):
        mma_update.mma_update_source("fragments", split_tf32=True)
    case = update_case(3, True, False)  # bfloat16 codes and maps
    assert not mma_float32.update_fits(case["codes"], case["x"], case["error"], case["raw"], case["velocity"],
                                       case["inverse_norms"], case["row_dots"], case["field"], case["blocks_w"])


def test_the_split_transpose_takes_only_layers_with_whole_cells_and_the_switch_on(monkeypatch):
    """Float32 ``W^T y`` goes to the split kernel only with ``DASKSAE_FLOAT32_TENSOR_CORES=1``, on CuPy, in float32, and
    where a cell of the map holds 128 values (coates200's stages 2 and 3: 8 channels at step 4); coates200's stage 1
    (3 channels at step 4: 48 values, twice the SIMT product and fold's time on the H100) keeps the SIMT kernels."""
    import types

    cupy_like = types.SimpleNamespace(__name__="cupy")
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "1")
    assert mma_float32.transpose_on_tensor_cores(cupy_like, "float32", 8, 4)
    assert not mma_float32.transpose_on_tensor_cores(cupy_like, "float32", 3, 4)
    assert not mma_float32.transpose_on_tensor_cores(cupy_like, "bfloat16", 8, 4)
    assert not mma_float32.transpose_on_tensor_cores(numpy, "float32", 8, 4)
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "0")
    assert not mma_float32.transpose_on_tensor_cores(cupy_like, "float32", 8, 4)


def test_tf32_takes_one_term_and_float32_three_only_where_switched_on(monkeypatch):
    """``terms_for``: float32 products take the split (3 TF32 products a k-step) only with
    ``DASKSAE_FLOAT32_TENSOR_CORES=1``, tf32 products one (plain TF32) only with ``DASKSAE_TF32_TENSOR_CORES=1``,
    each switch for its own precision alone; bfloat16 and NumPy never."""
    import types

    cupy_like = types.SimpleNamespace(__name__="cupy")
    for float32_switch, tf32_switch, expected in (("0", "0", (0, 0)), ("1", "0", (3, 0)), ("0", "1", (0, 1)),
                                                  ("1", "1", (3, 1))):
        monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", float32_switch)
        monkeypatch.setattr(mma_float32, "TF32_TENSOR_CORES", tf32_switch)
        assert (mma_float32.terms_for(cupy_like, "float32"), mma_float32.terms_for(cupy_like, "tf32")) == expected
        assert mma_float32.terms_for(cupy_like, "bfloat16") == 0
        assert mma_float32.terms_for(numpy, "float32") == mma_float32.terms_for(numpy, "tf32") == 0
