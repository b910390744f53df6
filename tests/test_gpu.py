"""The CuPy path equals the NumPy path to float32 tolerance, kernel by kernel and for whole steps.

Marked ``gpu``: skipped where there is no CUDA device (CI); run on the GPU machine.
"""

import numpy
import pytest

from dasksae.kernels import (
    block_counts,
    l2_pool_backward,
    l2_pool_forward,
    lcn_backward,
    lcn_forward,
    local_filter_forward,
    local_filter_transpose,
    local_filter_weight_grad,
    to_numpy,
    unit_rows,
    unit_rows_backward,
    window_sum,
    window_sum_transpose,
)
from dasksae.kernels.mma_forward import SPLIT_WGMMA_VARIANTS  # (mma_transpose's has the same names)
from dasksae.network import NetworkConfig, StageConfig, named_config
from dasksae.optim import init_velocity
from dasksae.reference import init_params, loss_and_grads, train_step

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

FLOAT32 = 2e-5  # ||gpu - cpu|| / ||cpu|| for float32 sums of a few thousand terms


def relative_error(gpu, cpu):
    gpu, cpu = to_numpy(gpu).astype(numpy.float64), numpy.asarray(cpu, dtype=numpy.float64)
    return float(numpy.linalg.norm(gpu - cpu) / max(numpy.linalg.norm(cpu), 1e-30))


def both(array):
    array = numpy.asarray(array, dtype=numpy.float32)
    return array, cupy.asarray(array)


@pytest.mark.parametrize("shape", [(20, 19, 3, 8, 6, 2, 2, 2, 4), (17, 21, 2, 5, 5, 3, 3, 3, 2)])
def test_local_filter_products(rng, shape):
    height, width, channels, batch, field, step, bh, bw, maps = shape
    nbh, nbw = block_counts(height, field, step), block_counts(width, field, step)
    x, x_gpu = both(rng.standard_normal((height, width, channels, batch)))
    w, w_gpu = both(rng.standard_normal((nbh, nbw, bh * bw * maps, field * field * channels)))
    y, y_gpu = both(rng.standard_normal((nbh * bh, nbw * bw, maps, batch)))
    args = (field, step, bh, bw)
    assert relative_error(local_filter_forward(x_gpu, w_gpu, *args), local_filter_forward(x, w, *args)) < FLOAT32
    assert (
        relative_error(local_filter_transpose(y_gpu, w_gpu, x.shape, *args), local_filter_transpose(y, w, x.shape, *args))
        < FLOAT32
    )
    assert relative_error(local_filter_weight_grad(y_gpu, x_gpu, *args), local_filter_weight_grad(y, x, *args)) < FLOAT32


def test_pooling_lcn_and_normalisation(rng):
    x, x_gpu = both(rng.standard_normal((13, 12, 4, 6)))
    for size, stride in ((3, 1), (2, 2)):
        assert relative_error(window_sum(x_gpu, size, stride), window_sum(x, size, stride)) < FLOAT32
        pooled, pooled_gpu = l2_pool_forward(x, size, stride, 1e-4), l2_pool_forward(x_gpu, size, stride, 1e-4)
        assert relative_error(pooled_gpu, pooled) < FLOAT32
        g, g_gpu = both(rng.standard_normal(pooled.shape))
        assert relative_error(window_sum_transpose(g_gpu, x.shape, size, stride), window_sum_transpose(g, x.shape, size, stride)) < FLOAT32
        assert relative_error(l2_pool_backward(g_gpu, x_gpu, pooled_gpu, size, stride), l2_pool_backward(g, x, pooled, size, stride)) < FLOAT32
    for size, place in ((5, {}), (3, dict(origin=(4, 0), map_shape=(30, 12))), (5, dict(origin=(2, 3), map_shape=(17, 40)))):
        y, cache = lcn_forward(x, size, **place)  # the whole map, and a tile's window of a larger one
        y_gpu, cache_gpu = lcn_forward(x_gpu, size, **place)
        assert relative_error(y_gpu, y) < FLOAT32
        assert relative_error(cache_gpu[1], cache[1]) < FLOAT32 and relative_error(cache_gpu[2], cache[2]) < FLOAT32
        g, g_gpu = both(rng.standard_normal(y.shape))
        assert relative_error(lcn_backward(g_gpu, cache_gpu), lcn_backward(g, cache)) < FLOAT32
    u, u_gpu = both(rng.standard_normal((3, 3, 8, 20)))
    unit, norms = unit_rows(u)
    unit_gpu, norms_gpu = unit_rows(u_gpu)
    assert relative_error(unit_gpu, unit) < FLOAT32
    g, g_gpu = both(rng.standard_normal(u.shape))
    assert relative_error(unit_rows_backward(g_gpu, unit_gpu, norms_gpu), unit_rows_backward(g, unit, norms)) < FLOAT32


def test_the_lcn_backward_that_subtracts_the_error_as_it_reads_equals_its_window_made_first(rng):
    """DASKSAE_WRITE_ONCE=1, one tile: the LCN backward of ``g - 2/M e`` with the difference taken in its first pass
    (``subtract``) gives, bit for bit, the gradient of the window that ``subtract_scaled_into`` made first."""
    from dasksae.kernels.elementwise import subtract_scaled_into

    x = cupy.asarray(rng.standard_normal((13, 12, 4, 96)), dtype=cupy.float32)
    y, cache = lcn_forward(x, 5)
    g = cupy.asarray(rng.standard_normal(y.shape), dtype=cupy.float32)
    e = cupy.asarray(rng.standard_normal(y.shape), dtype=cupy.float32)
    window = cupy.empty_like(g)
    subtract_scaled_into(window, g, e, 2.0 / 96)
    expected = lcn_backward(window, cache)
    assert bool((lcn_backward(g, cache, subtract=(e, 2.0 / 96)) == expected).all())
    assert not bool((lcn_backward(g, cache) == expected).all())


UNEVEN = NetworkConfig(
    name="uneven",
    input_shape=(27, 25, 3),
    stages=(
        StageConfig(field=5, step=2, block=(2, 2, 4), maps=4, pool_size=3),
        StageConfig(field=4, step=3, block=(3, 3, 2), maps=4, pool_size=2, pool_stride=2, lcn_size=3),
        StageConfig(field=3, step=1, block=(1, 1, 4), maps=4, pool_size=1, lcn_size=3),
    ),
)


@pytest.mark.parametrize("config", [named_config("tiny"), UNEVEN, UNEVEN.replace(objective="le2012", name="uneven-le")])
def test_full_step_gradients_match(rng, config):
    params = init_params(config, seed=3, dtype="float32")
    params_gpu = init_params(config, seed=3, dtype="float32", xp=cupy)
    x, x_gpu = both(rng.standard_normal(config.input_shape + (16,)))
    cpu = loss_and_grads(params, x, config)
    gpu = loss_and_grads(params_gpu, x_gpu, config)
    assert abs(gpu.loss - cpu.loss) <= FLOAT32 * abs(cpu.loss)
    for k, grads in enumerate(cpu.grads):
        for name, value in grads.items():
            assert relative_error(gpu.grads[k][name], value) < 1e-4, (k, name)


def test_five_training_steps_give_the_same_losses(rng):
    """GPU float32 stays as close to a float64 run as NumPy float32 does (within 10x, or 1e-5)."""
    config = named_config("tiny")
    runs = {"cpu64": (numpy, "float64"), "cpu32": (numpy, "float32"), "gpu32": (cupy, "float32")}
    state = {key: init_params(config, 0, dtype, xp=xp) for key, (xp, dtype) in runs.items()}
    velocity = {key: init_velocity(params) for key, params in state.items()}
    losses = {key: [] for key in runs}
    for _ in range(5):
        x = rng.standard_normal(config.input_shape + (32,))
        for key, (xp, dtype) in runs.items():
            batch = xp.asarray(x.astype(dtype))
            losses[key].append(train_step(state[key], velocity[key], batch, config, 1e-3, 0.9).loss)
    reference = numpy.array(losses["cpu64"])
    cpu_error = numpy.abs(numpy.array(losses["cpu32"]) / reference - 1)
    gpu_error = numpy.abs(numpy.array(losses["gpu32"]) / reference - 1)
    print("losses", losses, "cpu32 error", cpu_error, "gpu32 error", gpu_error)
    assert numpy.all(gpu_error <= numpy.maximum(10 * cpu_error, 1e-5))


@pytest.mark.parametrize("precision,tolerance", [("float32", FLOAT32), ("tf32", 2e-3), ("bfloat16", 1e-5)])
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True)])
def test_cublas_products_equal_numpy(rng, precision, tolerance, transpose_a, transpose_b):
    """cuBLAS strided-batched GEMM with each compute type against NumPy (bfloat16: both round operands the
    same way, so only float32 sums differ; tf32: the tensor cores' rounding of operands may differ from ours)."""
    from dasksae.kernels.gemm import batched_matmul

    a, a_gpu = both(rng.standard_normal((7, 96, 130) if transpose_a else (7, 130, 96)))
    b, b_gpu = both(rng.standard_normal((7, 40, 96) if transpose_b else (7, 96, 40)))
    options = dict(transpose_a=transpose_a, transpose_b=transpose_b, precision=precision)
    got = batched_matmul(a_gpu, b_gpu, **options)
    assert got.dtype == cupy.float32
    assert relative_error(got, batched_matmul(a, b, **options)) < tolerance
    batched_matmul(a_gpu, b_gpu, out=got, accumulate=True, **options)
    assert relative_error(got, 2 * batched_matmul(a, b, **options)) < tolerance


@pytest.mark.parametrize("mode", ["tuned", "search"])
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True)])
def test_tuned_products_equal_the_plain_cublas_call(rng, monkeypatch, mode, precision, transpose_a, transpose_b):
    """cuBLASLt's tuned algorithm gives the plain call's product (to float32 sums), on strided views (the
    right half of a wider buffer, as the backward pass reads ``G``), and adds into ``out`` when asked
    without tuning ever writing the caller's arrays."""
    from dasksae.kernels import tuned_gemm
    from dasksae.kernels.gemm import batched_matmul, operand

    if not tuned_gemm.enabled():
        pytest.skip("cuBLASLt is not loadable here")
    a = operand(cupy.asarray(rng.standard_normal((9, 96, 200) if transpose_a else (9, 200, 96)), dtype=cupy.float32), precision)
    wide = operand(cupy.asarray(rng.standard_normal((9, 40, 2 * 96) if transpose_b else (9, 96, 2 * 40)), dtype=cupy.float32), precision)
    b = wide[:, :, 96:] if transpose_b else wide[:, :, 40:]
    options = dict(transpose_a=transpose_a, transpose_b=transpose_b, precision=precision)
    monkeypatch.setenv("DASKSAE_GEMM", "cublas")
    plain = batched_matmul(a, b, **options)
    monkeypatch.setenv("DASKSAE_GEMM", mode)  # search: every tile shape and stage count cuBLASLt has, too
    before = len(tuned_gemm.tuning_table())
    start = cupy.full(plain.shape, 0.5, dtype=cupy.float32)
    tuned = batched_matmul(a, b, out=start.copy(), accumulate=True, **options)
    assert len(tuned_gemm.tuning_table()) == before + 1  # this shape was tuned here
    assert relative_error(tuned, cupy.asnumpy(plain) + 0.5) < FLOAT32
    assert relative_error(batched_matmul(a, b, **options), cupy.asnumpy(plain)) < FLOAT32
    row = tuned_gemm.tuning_table()[-1]
    assert row["best_ms"] <= row["plain_ms"] and row["chosen"]


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("rows", [128, 136, 1200])
def test_simt_products_equal_cublas(rng, monkeypatch, transpose_a, rows):
    """DASKSAE_GEMM=simt: our 128 x 96 tile kernel gives cuBLAS's product (float32 sums) for ``W x`` and
    ``W^T y`` shapes, with ``M`` not a multiple of the tile (136, 1200: guarded rows), ``B`` the right half
    of a wider buffer (as the backward pass reads the error fields), two tiles in ``N``, and ``accumulate``;
    a shape it does not take (``N = 100``) still gets cuBLAS's product."""
    from dasksae.kernels import simt_gemm
    from dasksae.kernels.gemm import batched_matmul

    inner = 48
    a = cupy.asarray(rng.standard_normal((5, inner, rows) if transpose_a else (5, rows, inner)), dtype=cupy.float32)
    wide = cupy.asarray(rng.standard_normal((5, inner, 3 * 96)), dtype=cupy.float32)
    b = wide[:, :, 96:]
    assert simt_gemm.fits(a, b, cupy.empty((5, rows, 192), cupy.float32), transpose_a, False, rows, 192, inner)
    monkeypatch.setenv("DASKSAE_GEMM", "cublas")
    plain = cupy.asnumpy(batched_matmul(a, b, transpose_a=transpose_a, precision="float32"))
    monkeypatch.setenv("DASKSAE_GEMM", "simt")
    assert relative_error(batched_matmul(a, b, transpose_a=transpose_a, precision="float32"), plain) < FLOAT32
    start = cupy.full(plain.shape, 0.5, dtype=cupy.float32)
    added = batched_matmul(a, b, transpose_a=transpose_a, precision="float32", out=start, accumulate=True)
    assert relative_error(added, plain + 0.5) < FLOAT32
    odd = wide[:, :, :100]
    assert not simt_gemm.fits(a, odd, cupy.empty((5, rows, 100), cupy.float32), transpose_a, False, rows, 100, inner)
    monkeypatch.setenv("DASKSAE_GEMM", "cublas")
    expected = cupy.asnumpy(batched_matmul(a, odd, transpose_a=transpose_a, precision="float32"))
    monkeypatch.setenv("DASKSAE_GEMM", "simt")
    assert relative_error(batched_matmul(a, odd, transpose_a=transpose_a, precision="float32"), expected) < FLOAT32


@pytest.mark.parametrize("field, channels, chunk_bytes", [(20, 3, None), (20, 8, None), (20, 8, 1 << 20), (6, 4, None)])
@pytest.mark.parametrize("scaled", [False, True])
def test_implicit_fields_equal_the_gathered_product(rng, monkeypatch, field, channels, chunk_bytes, scaled):
    """DASKSAE_IMPLICIT_FIELDS: ``W x`` with the fields read from the map and the outputs written into the map in
    our kernel gives, bit for bit, what gathering, our GEMM and the block-rows pass give: coates200's stage 1
    (20x20x3 fields, runs of 60 rows) and 2 (20x20x8), in whole and in chunks of block rows, and 6x6x4 fields
    with 2x2 blocks of 34 maps (136 rows, a guarded tile); with and without the unit norms' row scale."""
    from dasksae.kernels import simt_gemm

    step, batch = 4 if field == 20 else 2, 96
    block_h, block_w, maps = (4, 4, 8) if field == 20 else (2, 2, 34)
    blocks_h, blocks_w = 5, 3
    x = cupy.asarray(rng.standard_normal(((blocks_h - 1) * step + field, (blocks_w - 1) * step + field, channels, batch)),
                     dtype=cupy.float32)
    rows, fan_in = block_h * block_w * maps, field * field * channels
    weights = cupy.asarray(rng.standard_normal((blocks_h, blocks_w, rows, fan_in)), dtype=cupy.float32)
    row_scale = cupy.asarray(rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows)), dtype=cupy.float32) if scaled else None
    _simt_kernels(monkeypatch)
    monkeypatch.setattr(simt_gemm, "IMPLICIT_FIELDS", False)
    gathered = cupy.asnumpy(local_filter_forward(x, weights, field, step, block_h, block_w, row_scale=row_scale,
                                                 chunk_bytes=chunk_bytes))
    monkeypatch.setattr(simt_gemm, "IMPLICIT_FIELDS", True)
    launched = []
    monkeypatch.setattr(simt_gemm, "filter_forward", lambda *args, _run=simt_gemm.filter_forward: launched.append(1) or _run(*args))
    implicit = cupy.asnumpy(local_filter_forward(x, weights, field, step, block_h, block_w, row_scale=row_scale,
                                                 chunk_bytes=chunk_bytes))
    assert launched
    numpy.testing.assert_array_equal(implicit, gathered)


def _simt_kernels(monkeypatch):
    """Float32 products on the SIMT kernels (``DASKSAE_GEMM=simt``, ``DASKSAE_FLOAT32_TENSOR_CORES=0``): what the tests
    of the SIMT kernels' own switches run, since the split TF32 kernels (the default since session 41) take the
    products first where the arrays fit."""
    from dasksae.kernels import mma_float32

    monkeypatch.setenv("DASKSAE_GEMM", "simt")
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "0")


def _small_steps(monkeypatch, config, tiles, device="cuda", **switches):
    """Three float32 SGD steps (M=96) of ``config`` on ``tiles`` in this process, with ``simt_gemm``'s module switches
    set as given: ``(losses, parameters)``.  The same minibatches every call."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import simt_gemm
    from dasksae.tile_array import LocalExecutor

    for name, value in switches.items():
        monkeypatch.setattr(simt_gemm, name, value)
    tile_program.forget_all()
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    network = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype="float32", device=device)
    return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()


def _assert_trained_alike(trained, *references):
    """``(losses, parameters)`` of :func:`_small_steps` equal to each of ``references``' to float32 rounding."""
    losses, parameters = trained
    for reference_losses, reference_parameters in references:
        numpy.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
        for mine, theirs in zip(parameters, reference_parameters):
            for name in mine:
                assert relative_error(mine[name], theirs[name]) < FLOAT32, name


def test_training_steps_with_implicit_fields_equal_those_without(monkeypatch):
    """Float32 steps of ``small`` on one tile with DASKSAE_IMPLICIT_FIELDS=1 (``W x`` reading its fields from the map)
    give the losses and weights of steps with the fields gathered, bit for bit (the same sums).  Stage 1's 108-row
    fields do not fit ``W x``'s 16-row stages and are gathered either way; stages 2 and 3 take it."""
    from dasksae.kernels import simt_gemm

    config = named_config("small")
    launched = []
    monkeypatch.setattr(simt_gemm, "filter_forward", lambda *args, _run=simt_gemm.filter_forward: launched.append(1) or _run(*args))
    _simt_kernels(monkeypatch)
    # the backward's U g_r runs filter_forward too (simt_gemm.fields_product): off here, so launched counts W x alone
    expected_losses, expected_parameters = _small_steps(monkeypatch, config, "1x1", IMPLICIT_FIELDS=False,
                                                        IMPLICIT_BACKWARD=False)
    assert not launched
    losses, parameters = _small_steps(monkeypatch, config, "1x1", IMPLICIT_FIELDS=True, IMPLICIT_BACKWARD=False)
    assert launched
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])


@pytest.mark.parametrize("objective, tiles", [("rica", "1x1"), ("le2012", "1x1"), ("rica", "2x2")])
def test_training_steps_reading_the_backward_fields_from_the_maps_equal_those_gathering_them(monkeypatch, objective, tiles):
    """Float32 steps of ``small`` with DASKSAE_IMPLICIT_BACKWARD=1 (``U g_r`` and the weight gradient with their fields
    read from the maps, no ``[X | G]`` buffer) give the losses and weights of steps that gather the fields, and of
    the CPU, to float32 rounding (the weight gradient's sums are ours, not cuBLAS's): the tied objective (``[X | G]``,
    2M inner terms), Le 2012's untied one (``X`` and ``G`` apart, the decoder's gradient), and 2x2 tiles (each
    tile's window with its halo)."""
    import dataclasses

    from dasksae.kernels import simt_gemm

    config = dataclasses.replace(named_config("small"), objective=objective)
    launched = []
    for name in ("fields_product", "filter_weight_grad"):
        monkeypatch.setattr(simt_gemm, name, lambda *args, _run=getattr(simt_gemm, name), _name=name: launched.append(_name) or _run(*args))
    _simt_kernels(monkeypatch)
    expected_losses, expected_parameters = _small_steps(monkeypatch, config, tiles, IMPLICIT_BACKWARD=False)
    assert not launched
    # the update fused into the weight gradient (next test) off: here the weight gradient is written
    losses, parameters = _small_steps(monkeypatch, config, tiles, IMPLICIT_BACKWARD=True, FUSED_UPDATE=False)
    assert set(launched) == {"fields_product", "filter_weight_grad"}
    _assert_trained_alike((losses, parameters), (expected_losses, expected_parameters),
                          _small_steps(monkeypatch, config, tiles, device="cpu"))


@pytest.mark.parametrize("objective, tiles", [("rica", "1x1"), ("le2012", "1x1"), ("rica", "2x2")])
def test_training_steps_with_the_update_in_the_weight_gradient_equal_those_without(monkeypatch, objective, tiles):
    """Float32 steps of ``small`` with DASKSAE_FUSED_UPDATE=1 (the weight gradient's kernel takes the unit-norm SGD
    step in its epilogue, the gradient never written, ``W . dL/dW`` from the codes) give the losses and weights of
    steps that write the gradient and update it apart, and of the CPU, to float32 rounding: tied and untied
    objectives, 1x1 and 2x2 tiles."""
    import dataclasses

    from dasksae.kernels import simt_gemm

    config = dataclasses.replace(named_config("small"), objective=objective)
    launched = []
    for name in ("filter_weight_grad", "filter_weight_grad_update"):
        monkeypatch.setattr(simt_gemm, name, lambda *args, _run=getattr(simt_gemm, name), _name=name: launched.append(_name) or _run(*args))
    _simt_kernels(monkeypatch)
    expected_losses, expected_parameters = _small_steps(monkeypatch, config, tiles, IMPLICIT_BACKWARD=True,
                                                        FUSED_UPDATE=False)
    assert set(launched) == {"filter_weight_grad"}
    launched.clear()
    losses, parameters = _small_steps(monkeypatch, config, tiles, IMPLICIT_BACKWARD=True, FUSED_UPDATE=True)
    assert "filter_weight_grad_update" in launched
    _assert_trained_alike((losses, parameters), (expected_losses, expected_parameters),
                          _small_steps(monkeypatch, config, tiles, device="cpu"))


def test_training_with_the_update_prefetch_and_wave_chunks_equals_without(monkeypatch):
    """The opt-in DASKSAE_UPDATE_PREFETCH (the fused update's rows asked of L2 first) and DASKSAE_WAVE_CHUNKS (the
    backward's chunks sized by waves of our kernels' blocks) train as without them, to float32 rounding (the
    prefetch changes no arithmetic; the chunks change only how the float64 sum of dL/da is grouped), with the
    backward cut into several chunks a stage."""
    from dasksae import tile_ops

    config = named_config("small")
    _simt_kernels(monkeypatch)
    monkeypatch.setattr(tile_ops, "CHUNK_BYTES", 2**18)
    chunked = []
    monkeypatch.setattr(tile_ops, "chunks", lambda *args, _run=tile_ops.chunks: chunked.append(_run(*args)) or chunked[-1])
    expected = _small_steps(monkeypatch, config, "1x1", UPDATE_PREFETCH=False, WAVE_CHUNKS=False)
    assert max(len(ranges) for ranges in chunked) > 1
    trained = _small_steps(monkeypatch, config, "1x1", UPDATE_PREFETCH=True, WAVE_CHUNKS=True)  # compiled with it
    _assert_trained_alike(trained, expected)


@pytest.mark.parametrize("objective, staging", [("rica", 1), ("le2012", 1), ("rica", 2), ("rica", 3)],
                         ids=["rica-at-the-start", "le2012-at-the-start", "rica-after-loads", "rica-first-stage"])
def test_training_with_the_update_staged_in_shared_memory_equals_without_bit_for_bit(monkeypatch, objective, staging):
    """DASKSAE_UPDATE_STAGING (the fused update's blocks copy their ``U`` and ``v`` into shared memory with
    cp.async while their products run) reads the same values into the same arithmetic: the same losses and weights
    bit for bit, with the backward cut into several chunks a stage and ``small``'s first stage's fan-in of 108 ending in a
    column tile of 12 (the copies past it guarded as the loads are)."""
    import dataclasses

    from dasksae import tile_ops
    from dasksae.kernels import simt_gemm

    config = dataclasses.replace(named_config("small"), objective=objective)
    _simt_kernels(monkeypatch)
    monkeypatch.setattr(tile_ops, "CHUNK_BYTES", 2**18)
    launched = []
    monkeypatch.setattr(simt_gemm, "filter_weight_grad_update",
                        lambda *args, _run=simt_gemm.filter_weight_grad_update: launched.append(1) or _run(*args))
    if cupy.cuda.Device().compute_capability == "90":  # an H100 or H200: 228 KiB of shared memory an SM
        assert simt_gemm.staged_blocks_fit(cupy.cuda.Device().id)
    elif not simt_gemm.staged_blocks_fit(cupy.cuda.Device().id):
        pytest.skip("two staged blocks do not fit an SM of this GPU: the update runs unstaged")
    expected_losses, expected_parameters = _small_steps(monkeypatch, config, "1x1", UPDATE_STAGING=0)
    assert launched
    losses, parameters = _small_steps(monkeypatch, config, "1x1", UPDATE_STAGING=staging)  # compiled with it
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


@pytest.mark.parametrize("size", [96_000, 96_002, 96_001, 10_000_003])
def test_the_fused_difference_and_ratio_sums_equal_numpy(rng, size):
    """``a - b`` with ``sum((a - b)^2)``, and ``sum(a / b)``, each one kernel (float4, float2 and float vectors, and
    10M values, more than the fixed grid's threads, so that each thread takes several), equal NumPy's: the differences
    bit for bit, the float64 sums to float64 rounding (a term lost or taken twice would show)."""
    from dasksae.kernels import elementwise

    a, a_gpu = both(rng.standard_normal(size))
    b, b_gpu = both(rng.uniform(0.5, 2.0, size))
    assert elementwise._pair_sum(a_gpu, b_gpu, True) is not None  # the kernel, not array code
    difference, squares = elementwise.difference_and_squares(a_gpu, b_gpu)
    numpy.testing.assert_array_equal(difference.get(), a - b)
    expected = numpy.sum((a - b) * (a - b), dtype=numpy.float64)
    assert abs(float(squares) - expected) <= 2e-9 * expected
    ratios = elementwise.sum_of_ratios(a_gpu, b_gpu)
    expected = numpy.sum(a / b, dtype=numpy.float64)
    assert abs(float(ratios) - expected) <= 2e-9 * numpy.sum(numpy.abs(a / b), dtype=numpy.float64)


@pytest.mark.parametrize("with_grad", [True, False])
def test_subtract_scaled_into_a_window_on_the_gpu_equals_numpy(rng, with_grad):
    """``out[window] = g - c e`` written by one kernel into a strided window of a zeroed map equals NumPy's, bit for
    bit, and leaves the rest of the map zero."""
    from dasksae.kernels.elementwise import subtract_scaled_into

    shape, window = (14, 15, 4, 96), (slice(2, 12), slice(3, 13))
    g, g_gpu = both(rng.standard_normal((10, 10, 4, 96)))
    e, e_gpu = both(rng.standard_normal((10, 10, 4, 96)))
    expected = numpy.zeros(shape, numpy.float32)
    expected[window] = -(numpy.float32(2 / 96) * e) if not with_grad else g - numpy.float32(2 / 96) * e
    out = cupy.zeros(shape, cupy.float32)
    subtract_scaled_into(out[window], g_gpu if with_grad else None, e_gpu, 2 / 96)
    numpy.testing.assert_array_equal(out.get(), expected)


@pytest.mark.parametrize("tied, a_on_device", [(True, True), (True, False), (False, False)])
def test_radial_dots_on_the_gpu_equal_numpy(rng, tied, a_on_device):
    """``W . dL/dW`` a row from the codes (one kernel on CuPy, a warp a row) equals NumPy's, ``a`` on the device or
    the host; from float32 codes and from bfloat16 bits (the bfloat16 backward's, read in the kernel)."""
    from dasksae.kernels.gemm import operand
    from dasksae.kernels.normalize import _radial_dots_cuda, radial_dots

    count, rows, batch = 5, 40, 96
    codes, codes_gpu = both(rng.standard_normal((count, rows, 2 * batch if tied else batch)))
    z, z_gpu = both(rng.standard_normal((count, rows, batch)))
    decoded, decoded_gpu = both(rng.standard_normal((count, rows, batch))) if tied else (None, None)
    scale, scale_gpu = both(rng.uniform(0.5, 2, (count, rows, 1))) if tied else (None, None)
    expected = radial_dots(codes, z, decoded, scale, 0.7)
    assert expected.shape == (count, rows)
    a = cupy.asarray([0.7], cupy.float32) if a_on_device else 0.7
    assert _radial_dots_cuda(codes_gpu, z_gpu, decoded_gpu, scale_gpu, a) is not None  # the kernel, not array code
    assert relative_error(radial_dots(codes_gpu, z_gpu, decoded_gpu, scale_gpu, a), expected) < FLOAT32
    bits = operand(codes_gpu.astype(cupy.float32), "bfloat16")  # the bfloat16 backward's codes: read in the kernel
    assert bits.dtype == cupy.uint16 and _radial_dots_cuda(bits, z_gpu, decoded_gpu, scale_gpu, a) is not None
    on_host = radial_dots(bits.get(), z, decoded, scale, 0.7)  # NumPy from the same bits
    assert relative_error(radial_dots(bits, z_gpu, decoded_gpu, scale_gpu, a), on_host) < FLOAT32


def test_unit_norm_update_given_the_row_dots_equals_numpy(rng):
    """The update kernel given each row's ``W . dL/dW`` (no dot over the gradient) equals the NumPy chain given the
    same, and, given the true dots, the update that sums them itself."""
    from dasksae.kernels.normalize import inverse_row_norms, unit_rows_sgd

    raw, raw_gpu = both(rng.standard_normal((3, 32, 1200)))
    velocity, velocity_gpu = both(rng.standard_normal(raw.shape))
    grad, grad_gpu = both(rng.standard_normal(raw.shape))
    norms, norms_gpu = inverse_row_norms(raw), inverse_row_norms(raw_gpu)
    dots = (numpy.einsum("...k,...k->...", grad.astype(numpy.float64), raw) * norms).astype(numpy.float32)
    summed = [a.copy() for a in (raw_gpu, velocity_gpu, norms_gpu)]
    unit_rows_sgd(raw, velocity, grad, norms, 0.01, 0.9, refresh_norms=True, row_dots=dots)
    unit_rows_sgd(raw_gpu, velocity_gpu, grad_gpu, norms_gpu, 0.01, 0.9, refresh_norms=True, row_dots=cupy.asarray(dots))
    unit_rows_sgd(summed[0], summed[1], grad_gpu, summed[2], 0.01, 0.9, refresh_norms=True)
    for mine, numpys, sums in zip((raw_gpu, velocity_gpu, norms_gpu), (raw, velocity, norms), summed):
        assert relative_error(mine, numpys) < FLOAT32 and relative_error(mine, to_numpy(sums)) < FLOAT32


def test_bfloat16_operands_round_like_numpy(rng):
    from dasksae.kernels.gemm import from_bfloat16, operand

    x, x_gpu = both(rng.standard_normal((300, 301)) * 100)
    assert numpy.array_equal(to_numpy(from_bfloat16(operand(x_gpu, "bfloat16"))), operand(x, "bfloat16"))
    scale, scale_gpu = both(rng.uniform(0.5, 2, (300, 1)))
    assert numpy.array_equal(to_numpy(from_bfloat16(operand(x_gpu, "bfloat16", scale_gpu))), operand(x * scale, "bfloat16"))
    # four values a thread (whole 4s, contiguous, a number's scale) and CuPy's one a thread (the rest): the same bits,
    # NumPy's rounding where finite, a NaN where NaN
    from dasksae.kernels.gemm import _to_bfloat16_kernel

    special = [numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0, 3.4e38, 1e-45, 1.00390625]
    for shape in ((96, 8), (97, 3)):
        values = rng.standard_normal(shape).astype(numpy.float32)
        values.flat[numpy.arange(0, values.size, 7)[:len(special)]] = special
        y, y_gpu = both(values)
        for chosen in (None, 2.0 / 96, numpy.float32(3.0)):
            fast = to_numpy(operand(y_gpu, "bfloat16", chosen))
            one = to_numpy(_to_bfloat16_kernel()(y_gpu, numpy.float32(1 if chosen is None else chosen),
                                                 cupy.empty(shape, dtype=cupy.uint16)))
            assert numpy.array_equal(fast, one)
            assert numpy.array_equal(to_numpy(operand(y_gpu[:, 1:], "bfloat16", chosen)), fast[:, 1:])
            with numpy.errstate(over="ignore", invalid="ignore"):
                product = y if chosen is None else y * numpy.float32(chosen)
                rounded = (operand(numpy.where(numpy.isnan(product), 0, product), "bfloat16").view(numpy.uint32)
                           >> 16).astype(numpy.uint16)
            nan = numpy.isnan(product)
            assert numpy.array_equal(fast[~nan], rounded[~nan])
            assert numpy.all((fast[nan] & 0x7F80) == 0x7F80) and numpy.all(fast[nan] & 0x7F) and nan.any()


@pytest.mark.parametrize("length, operand_kind", [(1200, None), (1200, "bfloat16"), (1202, "bfloat16"), (1201, "float32"),
                                                 (20, "float32")])
def test_fused_unit_norm_update_and_norms(rng, length, operand_kind):
    """The update kernel (vectors of 4, 2 or 1 values) equals the NumPy chain; the refreshed norms and the operand
    it writes for the next step equal those computed afresh from the updated weights (bf16: bit for bit but for ties)."""
    from dasksae.kernels.gemm import from_bfloat16, operand
    from dasksae.kernels.normalize import inverse_row_norms, unit_rows_sgd

    raw, raw_gpu = both(rng.standard_normal((3, 4, 32, length)))
    velocity, velocity_gpu = both(rng.standard_normal(raw.shape))
    grad, grad_gpu = both(rng.standard_normal(raw.shape))
    norms, norms_gpu = inverse_row_norms(raw), inverse_row_norms(raw_gpu)
    assert relative_error(norms_gpu, norms) < FLOAT32
    unit_rows_sgd(raw, velocity, grad, norms, 0.01, 0.9)
    target = None if operand_kind is None else cupy.full(raw.shape, 7, dtype="uint16" if operand_kind == "bfloat16" else "float32")
    unit_rows_sgd(raw_gpu, velocity_gpu, grad_gpu, norms_gpu, 0.01, 0.9, refresh_norms=True, raw_operand=target,
                  precision=operand_kind)
    assert relative_error(velocity_gpu, velocity) < FLOAT32 and relative_error(raw_gpu, raw) < FLOAT32
    assert relative_error(norms_gpu, inverse_row_norms(raw)) < FLOAT32
    if operand_kind == "bfloat16":
        fresh = operand(raw_gpu, "bfloat16")
        assert float((target != fresh).mean()) < 1e-3  # the update's float32 sums may differ in the last bit
        assert relative_error(from_bfloat16(target), raw) < 4e-3
    elif operand_kind == "float32":
        assert bool((target == raw_gpu).all())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_chunked_scaled_products_on_the_gpu(rng, precision):
    from dasksae.kernels.local_filter import local_filter_weight_grads

    x, x_gpu = both(rng.standard_normal((20, 19, 3, 8)))
    w, w_gpu = both(rng.standard_normal((4, 4, 24, 48)))
    s, s_gpu = both(rng.uniform(0.5, 2, (4, 4, 24)))
    args = (4, 4, 2, 2)
    options = dict(precision=precision, chunk_bytes=1)
    tolerance = FLOAT32 if precision == "float32" else 1e-5
    y = local_filter_forward(x, w, *args, row_scale=s, **options)
    assert relative_error(local_filter_forward(x_gpu, w_gpu, *args, row_scale=s_gpu, **options), y) < tolerance
    back = local_filter_transpose(y, w, x.shape, *args, row_scale=s, **options)
    assert relative_error(local_filter_transpose(cupy.asarray(y), w_gpu, x.shape, *args, row_scale=s_gpu, **options), back) < tolerance
    grads = local_filter_weight_grads([(y, x, None), (y, x, 0.5)], *args, **options)
    got = local_filter_weight_grads([(cupy.asarray(y), x_gpu, None), (cupy.asarray(y), x_gpu, 0.5)], *args, **options)
    assert relative_error(got, grads) < tolerance


@pytest.mark.parametrize("batch, dtype", [(6, "float32"), (8, "float32"), (5, "float32"), (6, "uint16"), (8, "float64")])
def test_the_fields_gather_kernel_into_strided_rows(rng, batch, dtype, monkeypatch):
    """The gather kernel equals NumPy's strided copy for every copy width (16, 8, 4 bytes), into a new array and
    into half of a poisoned wider buffer, also when the launch is split (a small index limit forces it)."""
    from dasksae.kernels import cuda_kernels
    from dasksae.kernels.local_filter import gather_patches

    x = (rng.standard_normal((21, 18, 3, batch)) * 1000).astype(dtype)
    x_gpu = cupy.asarray(x)
    expected = gather_patches(x, 5, 3, 6, 5)
    assert numpy.array_equal(to_numpy(gather_patches(x_gpu, 5, 3, 6, 5)), expected)
    wide = cupy.full((30, 75, 2 * batch), 77, dtype=dtype)
    gather_patches(x_gpu, 5, 3, 6, 5, out=wide[:, :, batch:])
    assert numpy.array_equal(to_numpy(wide[:, :, batch:]), expected) and bool((wide[:, :, :batch] == 77).all())
    monkeypatch.setattr(cuda_kernels, "INDEX_LIMIT", 5 * 75 * 2)  # one block row of vectors a launch, or less
    wide[...] = 77
    gather_patches(x_gpu[3:], 5, 3, 5, 5, out=wide[:25, :, :batch])
    assert numpy.array_equal(to_numpy(wide[:25, :, :batch]), gather_patches(x[3:], 5, 3, 5, 5))
    assert bool((wide[25:] == 77).all()) and bool((wide[:, :, batch:] == 77).all())


@pytest.mark.parametrize("batch, dtype", [(8, "float32"), (6, "float32"), (5, "float32"), (6, "float64")])
def test_the_fold_kernel_adds_into_what_is_there(rng, batch, dtype):
    """The fold kernel (vectors of 4, 2 or 1 values) adds the overlapping fields onto ``out`` as NumPy's strided adds do."""
    from dasksae.kernels.local_filter import fold_patches_into

    patches = rng.standard_normal((6 * 5, 5 * 5 * 3, batch)).astype(dtype)
    start = rng.standard_normal((21, 18, 3, batch)).astype(dtype)
    expected = start.copy()
    fold_patches_into(expected, patches, 5, 3, 6, 5)
    got = cupy.asarray(start)
    fold_patches_into(got, cupy.asarray(patches), 5, 3, 6, 5)
    assert relative_error(got, expected) < (1e-6 if dtype == "float32" else 1e-14)
    rows = got[3:]  # a chunk of block rows folds into a row slice
    fold_patches_into(rows, cupy.asarray(patches[5:]), 5, 3, 5, 5)
    fold_patches_into(expected[3:], patches[5:], 5, 3, 5, 5)
    assert relative_error(got, expected) < (1e-6 if dtype == "float32" else 1e-14)




@pytest.mark.parametrize("batch", [8, 5])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_block_rows_kernel_both_ways(rng, batch, precision, scaled):
    """Block rows of a map (4 or 1 values a thread, float32 or bf16 rows, with or without row scales) equal the
    array code's, and writing rows back into a poisoned map sets every element as the array code does."""
    from dasksae.kernels.gemm import from_bfloat16
    from dasksae.kernels.local_filter import block_rows, write_block_rows

    output_map, map_gpu = both(rng.standard_normal((6 * 2, 5 * 3, 4, batch)))
    scale, scale_gpu = both(rng.uniform(0.5, 2, (6, 5, 2 * 3 * 4))) if scaled else (None, None)
    expected = block_rows(output_map, 2, 3, scale, precision)
    got = block_rows(map_gpu, 2, 3, scale_gpu, precision)
    if precision == "bfloat16":
        assert got.dtype == numpy.uint16
        assert numpy.array_equal(to_numpy(from_bfloat16(got)), expected)
    else:
        assert relative_error(got, expected) < 1e-7 and got.shape == (30, 24, batch)
    rows, rows_gpu = both(rng.standard_normal((30, 24, batch)))
    written = numpy.full(output_map.shape, numpy.nan, dtype=numpy.float32)
    write_block_rows(written, rows, 2, 3, scale)
    written_gpu = cupy.full(output_map.shape, numpy.nan, dtype=cupy.float32)
    write_block_rows(written_gpu, rows_gpu, 2, 3, scale_gpu)
    assert not numpy.isnan(written).any() and relative_error(written_gpu, written) < 1e-7


def test_host_floats_fetches_device_scalars_with_host_numbers():
    from dasksae.kernels.backend import host_floats

    values = [cupy.float32(0.25) + cupy.zeros(()), 2, numpy.float64(0.5), cupy.arange(3, dtype=cupy.float64).sum()]
    got = host_floats(values)
    assert got == [0.25, 2.0, 0.5, 3.0] and all(type(v) is float for v in got)


def test_each_thread_runs_its_tile_tasks_on_its_own_stream():
    import threading

    from dasksae.streams import tile_task_stream

    seen = {}

    def task(name):
        with tile_task_stream(cupy):
            seen[name] = cupy.cuda.get_current_stream().ptr
            seen[name + " again"] = cupy.cuda.get_current_stream().ptr

    threads = [threading.Thread(target=task, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen["a"] == seen["a again"] and seen["b"] == seen["b again"]
    assert len({seen["a"], seen["b"], cupy.cuda.Stream.null.ptr}) == 3
    assert cupy.cuda.get_current_stream().ptr == cupy.cuda.Stream.null.ptr  # the caller's stream is untouched


@pytest.mark.parametrize("size, stride", [(5, 1), (3, 2)])
@pytest.mark.parametrize("objective", [False, True])
@pytest.mark.parametrize("with_grad", [False, True])
@pytest.mark.parametrize("trailing", [8, 5])
def test_fused_pooling_kernels_equal_the_array_code(rng, size, stride, objective, with_grad, trailing):
    """The pooling forward (squares, pooled, units in one kernel), the backward's unit weights, the sparsity
    term's sum and the transpose times z equal the NumPy array code."""
    from dasksae.kernels.pooling import pool_squares, pool_unit_weights, pool_units_and_sums, sum_of_squares_over_units

    x, x_gpu = both(rng.standard_normal((13, 12, 3, trailing)))  # 3*8: the compiled kernels; 3*5: the elementwise ones
    scale_squared = 0.7 if objective else None
    expected = pool_squares(x, size, stride, 1e-3, scale_squared)
    got = pool_squares(x_gpu, size, stride, 1e-3, scale_squared)
    for name, want, have in zip(("squares", "pooled", "units"), expected, got):
        if want is None:
            assert have is None, name
        else:
            assert have.shape == want.shape and relative_error(have, want) < 1e-6, name
    squares, pooled, units = expected
    grad, grad_gpu = both(rng.standard_normal(pooled.shape)) if with_grad else (None, None)
    weight = pool_unit_weights(grad, pooled, units, 0.7, 0.05)
    weight_gpu = pool_unit_weights(grad_gpu, *(None if v is None else cupy.asarray(v) for v in (pooled, units)), 0.7, 0.05)
    assert relative_error(weight_gpu, weight) < 1e-6 or (not with_grad and not objective and not weight.any())
    if objective:
        total = sum_of_squares_over_units(cupy.asarray(squares), cupy.asarray(units))
        assert isinstance(total, cupy.ndarray) and abs(float(total) / sum_of_squares_over_units(squares, units) - 1) < 1e-9
        # the objective's pass (one kernel where trailing is in whole 4s, with a device scale as under CUDA graphs):
        # the units and both sums, V x^2 never written
        for scale in (0.7, cupy.float32(0.7) * cupy.ones((), dtype=cupy.float32)):
            fused = pool_units_and_sums(x_gpu, size, stride, 1e-3, scale)
            for want, have in zip((pooled, units), fused[:2]):
                assert have.shape == want.shape and relative_error(have, want) < 1e-6
            for want, have in zip((units.sum(dtype=numpy.float64), sum_of_squares_over_units(squares, units)), fused[2:]):
                assert isinstance(have, cupy.ndarray) and have.ndim == 0 and abs(float(have) / want - 1) < 1e-6
    w, w_gpu = both(rng.standard_normal(pooled.shape))
    expected_spread = window_sum_transpose(w, x.shape, size, stride, times=x)
    assert relative_error(window_sum_transpose(w_gpu, x.shape, size, stride, times=x_gpu), expected_spread) < 1e-6


@pytest.mark.parametrize("batch", [96, 6, 5])
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_grad, a_on_device", [(False, False), (True, False), (True, True)])
def test_the_tied_code_gradient_kernel_writes_the_row_dots_of_its_codes(rng, batch, precision, with_grad, a_on_device):
    """DASKSAE_FUSED_ROW_DOTS: given ``row_dots`` the kernel (in blocks of whole rows) writes the very codes and
    scaled operand that it writes without them, its part of dL/da to float64 summation order, and each row's
    ``W_r . dL/dW_r`` as radial_dots' kernel gives it from those codes, to float32 rounding (another order)."""
    from dasksae.kernels.code_gradient import _tied_code_gradient_cuda, tied_code_gradient
    from dasksae.kernels.gemm import storage_dtype
    from dasksae.kernels.normalize import radial_dots

    count, rows = 7, 24
    _, product = both(rng.standard_normal((count, rows, batch)))
    _, scale = both(rng.uniform(0.5, 2, (count, rows, 1)))
    _, z = both(rng.standard_normal((count, rows, batch)))
    grad = both(rng.standard_normal((count, rows, batch)))[1] if with_grad else None
    a = cupy.asarray([0.8], cupy.float32) if a_on_device else 0.8
    storage = storage_dtype(precision)
    codes = [cupy.full((count, rows, 2 * batch), 0xFFFF if storage == numpy.uint16 else numpy.nan, dtype=storage)
             for _ in range(2)]
    part, operand = tied_code_gradient(product, scale, z, grad, a, codes[0], precision, True)
    dots = cupy.full((count, rows), numpy.nan, dtype=cupy.float32)
    fused = _tied_code_gradient_cuda(product, scale, z, grad, a, codes[1], precision, True, dots)
    assert fused is not None  # the kernel, not the array code
    assert cupy.array_equal(codes[1], codes[0]) and cupy.array_equal(fused[1], operand)
    assert abs(float(fused[0]) - float(part)) <= 1e-9 * abs(float(part)) + 1e-12
    assert relative_error(dots, to_numpy(radial_dots(codes[0], z, product, scale, a))) < FLOAT32


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_grad, dots", [(True, True), (False, True), (True, False)])
def test_the_tied_code_gradient_kernel_reads_z_and_its_gradient_from_their_maps_as_from_their_rows(rng, precision,
                                                                                                   with_grad, dots):
    """DASKSAE_CODES_FROM_MAPS: given ``MapBlocks`` of z's and grad_z's maps (blocks of 4 x 2 positions by 8 maps,
    3 x 2 of them, M=96) the kernel reads each block row where it lies in the map, and writes bit for bit the codes,
    scaled operand, row dots and partial sums that it writes from the block rows that ``block_rows`` makes."""
    from dasksae.kernels.code_gradient import _tied_code_gradient_cuda
    from dasksae.kernels.gemm import storage_dtype
    from dasksae.kernels.local_filter import MapBlocks, block_rows

    block_h, block_w, maps, batch = 4, 2, 8, 96
    count, rows = 6, block_h * block_w * maps
    z_map = cupy.asarray(rng.standard_normal((3 * block_h, 2 * block_w, maps, batch)), dtype=cupy.float32)
    grad_map = cupy.asarray(rng.standard_normal(z_map.shape), dtype=cupy.float32) if with_grad else None
    _, product = both(rng.standard_normal((count, rows, batch)))
    _, scale = both(rng.uniform(0.5, 2, (count, rows, 1)))
    storage = storage_dtype(precision)
    results = []
    for from_maps in (False, True):
        z = MapBlocks(z_map, block_h, block_w) if from_maps else block_rows(z_map, block_h, block_w)
        grad = None if grad_map is None else (MapBlocks(grad_map, block_h, block_w) if from_maps
                                              else block_rows(grad_map, block_h, block_w))
        codes = cupy.full((count, rows, 2 * batch), 0xFFFF if storage == numpy.uint16 else numpy.nan, dtype=storage)
        row_dots = cupy.full((count, rows), numpy.nan, dtype=cupy.float32) if dots else None
        done = _tied_code_gradient_cuda(product, scale, z, grad, 0.8, codes, precision, True, row_dots)
        assert done is not None  # the kernel, not the array code
        results.append([codes, done[1], done[0]] + ([row_dots] if dots else []))
    for mine, theirs in zip(*results):
        assert cupy.array_equal(mine, theirs)


def _small_bfloat16_trained_counting(monkeypatch, switch_name: str, function_name: str):
    """``small`` (tied RICA, 1x1 tiles, M=96) trained 3 steps in bfloat16 with ``code_gradient.switch_name`` off,
    then on: each run's losses, parameters, and how often the filter backward called ``tile_ops.function_name``."""
    from dasksae import TiledNetwork, tile_ops, tile_program
    from dasksae.kernels import code_gradient
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    called, function = [], getattr(tile_ops, function_name)
    monkeypatch.setattr(tile_ops, function_name, lambda *args, **kwargs: called.append(1) or function(*args, **kwargs))

    def trained(on: bool):
        monkeypatch.setattr(code_gradient, switch_name, on)
        tile_program.forget_all()
        called[:] = []
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters(), len(called)

    return trained(False), trained(True)


def test_bfloat16_training_with_the_code_gradient_reading_the_maps_equals_it_reading_block_rows(monkeypatch):
    """DASKSAE_CODES_FROM_MAPS=1 (with DASKSAE_FUSED_ROW_DOTS=1): ``small`` trained 3 steps in bfloat16 with the code
    gradient reading z and grad_z from their maps gives the very losses and weights of its reading their block rows
    (the same values, the same sums), and the backward makes no block rows of them."""
    from dasksae.kernels import code_gradient

    monkeypatch.setattr(code_gradient, "FUSED_ROW_DOTS", True)
    off, on = _small_bfloat16_trained_counting(monkeypatch, "CODES_FROM_MAPS", "block_rows")
    (expected_losses, expected_parameters, made_off), (losses, parameters, made_on) = off, on
    assert made_off > 0 and made_on == 0, (made_off, made_on)
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def test_bfloat16_training_with_the_row_dots_from_the_code_gradient_equals_radial_dots(monkeypatch):
    """DASKSAE_FUSED_ROW_DOTS=1: ``small`` (tied RICA, M=96) trained 3 steps in bfloat16 with the update's row dots
    written by the code gradient's kernel trains as with radial_dots' own kernel (the dots to float32 rounding), and
    that kernel no longer runs."""
    off, on = _small_bfloat16_trained_counting(monkeypatch, "FUSED_ROW_DOTS", "radial_dots")
    (expected_losses, expected_parameters, calls_off), (losses, parameters, calls_on) = off, on
    assert calls_off > 0 and calls_on == 0, (calls_off, calls_on)
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name


@pytest.mark.parametrize("batch", [96, 6, 5])
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
@pytest.mark.parametrize("with_grad", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_the_tied_code_gradient_kernel_equals_the_array_code(rng, batch, precision, with_grad, scaled):
    """[g_z | a z] and s g_z written by the kernel (4, 2 or 1 values a thread, float32 or bf16 storage) into
    poisoned buffers are bit for bit the array code's (the same IEEE float32 operations, none fused), and the
    chunk's part of dL/da agrees to float64 summation order."""
    from dasksae.kernels.code_gradient import tied_code_gradient
    from dasksae.kernels.gemm import storage_dtype

    count, rows = 7, 24
    product, product_gpu = both(rng.standard_normal((count, rows, batch)))
    scale, scale_gpu = both(rng.uniform(0.5, 2, (count, rows, 1)))
    z, z_gpu = both(rng.standard_normal((count, rows, batch)))
    grad, grad_gpu = both(rng.standard_normal((count, rows, batch))) if with_grad else (None, None)
    codes = numpy.zeros((count, rows, 2 * batch), dtype=numpy.float32)
    # tf32 operands are float32 on the GPU (the tensor cores round them); NumPy emulates the rounding
    part, operand = tied_code_gradient(product, scale, z, grad, 0.8, codes, "float32" if precision == "tf32" else precision, scaled)
    storage = storage_dtype(precision)
    codes_gpu = cupy.full((count, rows, 2 * batch), 0xFFFF if storage == numpy.uint16 else numpy.nan, dtype=storage)
    part_gpu, operand_gpu = tied_code_gradient(product_gpu, scale_gpu, z_gpu, grad_gpu, 0.8, codes_gpu, precision, scaled)
    if precision == "bfloat16":
        from dasksae.kernels.gemm import from_bfloat16

        codes_gpu = from_bfloat16(codes_gpu)
        operand_gpu = None if operand_gpu is None else from_bfloat16(operand_gpu)
    assert numpy.array_equal(to_numpy(codes_gpu), codes)
    assert (operand_gpu is None) == (not scaled)
    if scaled:
        assert numpy.array_equal(to_numpy(operand_gpu), operand)
    assert isinstance(part_gpu, cupy.ndarray) and abs(float(part_gpu) - float(part)) <= 1e-9 * abs(float(part)) + 1e-12


def test_copy_arrays_copies_many_pairs_in_few_launches_byte_for_byte(rng):
    """The batched copy (sends and staged receipts of graphed tile steps) moves every byte: more pairs than one
    launch takes, sizes that are not a multiple of 16 bytes, ends that are not 16-byte aligned, an empty array
    and a non-contiguous pair; and a clone made through it equals the source."""
    from dasksae.cuda_graphs import clone
    from dasksae.kernels.copies import SEGMENTS_A_LAUNCH, copy_arrays

    raw = cupy.asarray(rng.integers(0, 256, size=1 << 20), dtype=cupy.uint8)
    sources = [cupy.asarray(rng.standard_normal(n), dtype=dtype)
               for n, dtype in [(1 << 18, "float32"), (3, "float32"), (1001, "uint16"), (0, "float32"), (96 * 77, "float64")]]
    sources += [raw[1:1 + n] for n in (5, 4099, 300_001)]  # not aligned
    sources += [cupy.asarray(rng.standard_normal((40, 33)), dtype="float32")[:, ::2]]  # not contiguous
    sources += [cupy.asarray(rng.standard_normal(64 * k + 3), dtype="float32") for k in range(SEGMENTS_A_LAUNCH)]
    unaligned_out = cupy.zeros(1 << 20, dtype=cupy.uint8)
    destinations = [cupy.full(s.shape, 7, dtype=s.dtype) if i not in (5, 6, 7) else None for i, s in enumerate(sources)]
    destinations[5], destinations[6], destinations[7] = unaligned_out[3:8], unaligned_out[100:4199], unaligned_out[5000:305_001]
    copy_arrays(list(zip(sources, destinations)))
    for source, destination in zip(sources, destinations):
        numpy.testing.assert_array_equal(cupy.asnumpy(destination), cupy.asnumpy(source))
    value = {"strips": [sources[0], sources[2]], "count": 3}
    pairs = []
    copied = clone(value, pairs)
    assert len(pairs) == 2 and copied["count"] == 3 and copied["strips"][0] is not sources[0]
    copy_arrays(pairs)
    numpy.testing.assert_array_equal(cupy.asnumpy(copied["strips"][1]), cupy.asnumpy(sources[2]))



def test_batched_copy_launched_through_the_driver_equals_cupys_launch_from_four_threads(monkeypatch):
    """The batched copy launched with cuLaunchKernel and packed arguments (kernels/driver_launch.py, the default)
    moves the same bytes as CuPy's launch of the kernel, with four threads launching at once on their own
    streams (each thread packs into a buffer of its own); and it is the driver path that ran."""
    import threading

    from dasksae.kernels import copies

    assert copies._driver_launcher(cupy.cuda.runtime.getDevice()) is not None, copies._fallbacks
    sizes = [(1 << 16) + 5 * k for k in range(copies.SEGMENTS_A_LAUNCH)]
    results, errors = {}, []

    def copy_in_thread(name, seed):
        try:
            stream = cupy.cuda.Stream(non_blocking=True)
            with stream:
                own = numpy.random.default_rng(seed)
                sources = [cupy.asarray(own.standard_normal(n), dtype="float32") for n in sizes]
                destinations = [cupy.zeros(n, dtype="float32") for n in sizes]
                for _ in range(20):
                    copies.copy_arrays(list(zip(sources, destinations)))
                stream.synchronize()
            results[name] = [(cupy.asnumpy(s), cupy.asnumpy(d)) for s, d in zip(sources, destinations)]
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for driver in (True, False):
        monkeypatch.setattr(copies, "DRIVER_LAUNCH", driver)
        threads = [threading.Thread(target=copy_in_thread, args=((driver, i), i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert not copies._fallbacks, copies._fallbacks  # no driver launch was refused
    for name, pairs in results.items():
        for source, destination in pairs:
            numpy.testing.assert_array_equal(destination, source, err_msg=str(name))


def test_strip_copies_and_adds_equal_numpy_through_the_driver_and_cupy(rng, monkeypatch):
    """``copy_views`` and ``add_views`` (halo strips, ``kernels/copies.py``) on the GPU equal NumPy's copies and adds:
    more strips than a launch takes, strips whose rows are not 16-byte multiples, a pair strided inside its rows
    (copied by CuPy), and bfloat16-like uint16 values; through the driver's launch and CuPy's."""
    from dasksae.kernels import copies

    maps = [rng.standard_normal((12, 13, 3, 8)).astype(numpy.float32), rng.standard_normal((9, 7, 3)).astype(numpy.float32)]
    for driver in (True, False):
        monkeypatch.setattr(copies, "DRIVER_LAUNCH", driver)
        for add in (False, True):
            windows = [rng.standard_normal((12, 13, 3, 8)).astype(numpy.float32), rng.standard_normal((9, 7, 3)).astype(numpy.float32)]
            on_gpu = [cupy.asarray(m) for m in maps], [cupy.asarray(w) for w in windows]
            cuts = [(0, slice(r + 1, r + 3), slice(c + 1, c + 6), slice(r, r + 2), slice(c, c + 5))
                    for r in (0, 2, 4, 6) for c in (0, 6)]  # 8 disjoint destinations in map 0's window's rows 0-8
            cuts += [(1, slice(0, 4), slice(1, 4), slice(5, 9), slice(2, 5)),
                     (0, slice(10, 12), slice(0, 13), slice(8, 10), slice(0, 13))]
            for xp, (sources, targets) in ((numpy, (maps, windows)), (cupy, on_gpu)):
                pairs = [(sources[k][rs, cs], targets[k][rd, cd]) for k, rs, cs, rd, cd in cuts]
                pairs.append((sources[0][0:2, 0:4, 1:], targets[0][10:12, 0:4, 1:]))  # strided inside its rows
                (copies.add_views if add else copies.copy_views)(pairs)
            for expected, got in zip(windows, on_gpu[1]):
                numpy.testing.assert_array_equal(cupy.asnumpy(got), expected)
    values = cupy.asarray(rng.integers(0, 1 << 16, size=(5, 6, 4, 8)), dtype=cupy.uint16)
    assert numpy.array_equal(cupy.asnumpy(copies.contiguous(values[1:4, 2:5])), cupy.asnumpy(values)[1:4, 2:5])
    assert not copies._fallbacks, copies._fallbacks


def test_halo_windows_from_strided_views_equal_numpy(rng):
    """CuPy assembles and sums windows from a tile's own pieces as strided views exactly as NumPy does (session 13)."""
    from dasksae.halo import assemble, part_view, sum_into

    own = rng.standard_normal((6, 7, 3, 4)).astype(numpy.float32)  # over ((2, 8), (1, 8))
    right = rng.standard_normal((4, 2, 3, 4)).astype(numpy.float32)  # over ((3, 7), (8, 10))
    window = ((3, 7), (2, 10))
    results = {}
    for xp in (numpy, cupy):
        pieces = [(((3, 7), (2, 8)), part_view(xp.asarray(own), ((2, 8), (1, 8)), ((3, 7), (2, 8)))),
                  (((3, 7), (8, 10)), xp.asarray(right))]
        assembled = assemble(window, pieces)
        contributions = [(((3, 5), (2, 4)), xp.asarray(right[:2])),
                         (((3, 7), (2, 8)), part_view(xp.asarray(own), ((2, 8), (1, 8)), ((3, 7), (2, 8))))]
        summed = sum_into(((3, 7), (2, 8)), contributions)
        assert assembled.flags.c_contiguous and summed.flags.c_contiguous
        results[xp.__name__] = (to_numpy(assembled), to_numpy(summed))
    for on_cpu, on_gpu in zip(results["numpy"], results["cupy"]):
        numpy.testing.assert_array_equal(on_gpu, on_cpu)


@pytest.mark.parametrize("variant", ["rows", "fragments", "rows-l2", "rows-2", "rows-wide", "rows-staged",
                                     "frag64-staged", "frag64-staged-first", "rows-cs", "rows-wide-cs", "rows-resident-whole",
                                     "rows-resident-whole-1", "rows-144", "rows-overlap", "rows-wide-wgmma",
                                     "rows-overlap-wgmma", "rows-bulk-raw-wgmma", "rows-bulk-wgmma",
                                     "rows-wide-wgmma-192"])
@pytest.mark.parametrize("with_error, with_operand", [(True, True), (False, False)], ids=["x-and-error", "x-only"])
def test_the_tensor_core_update_on_the_gpu_equals_numpy(with_error, with_operand, variant):
    """``dasksae_mma_filter_weight_grad_update`` (bfloat16 ``mma.sync`` from the maps, the unit-norm SGD step in its
    epilogue, each epilogue variant) on the device against the float64 update of the same bfloat16 values: the case,
    tolerances and checks of its g++ test (``tests/test_mma_update_on_cpu.py``), with the per-warp squares summed on
    the device.  The ``wgmma`` variants (sm_90 only) at a minibatch of 96: with the error map, 3 k-tiles of 64, the
    middle one from both maps; without, codes 96 wide, which they leave to their ``mma.sync`` twins."""
    from dasksae.kernels import mma_update, wgmma
    from test_mma_update_on_cpu import assert_updated_as_expected, update_case

    on_wgmma = mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA")
    if on_wgmma and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    case = update_case(11, with_error, with_operand, batch=96 if on_wgmma else 64)  # (x only: 96 wide, rows-wide's)
    names = ("codes", "x", "error", "raw", "velocity", "operand", "inverse_norms", "row_dots")
    on_device = {name: None if case[name] is None else cupy.asarray(case[name]) for name in names}
    arrays = [on_device[name] for name in names]
    assert mma_update.update_fits(*arrays, case["field"], case["blocks_w"])
    mma_update.filter_weight_grad_update_bfloat16(*arrays, case["lr"], case["momentum"], case["field"], case["step"],
                                                  case["blocks_w"], variant=variant)
    operand = on_device["operand"]
    assert_updated_as_expected(case, on_device["raw"].get(), on_device["velocity"].get(),
                               None if operand is None else operand.get(),
                               on_device["inverse_norms"].get().astype(numpy.float64))


@pytest.mark.parametrize("wgmma_forward", ["0", "w64x3-swizzled", "w64x4-swizzled", "w64x3-half"])
@pytest.mark.parametrize("scaled, minibatch", [(True, 96), (False, 96), (True, 136)],
                         ids=["row-scale", "no-scale", "row-scale-part-tile"])
def test_the_tensor_core_forward_on_the_gpu_equals_numpy(monkeypatch, scaled, minibatch, wgmma_forward):
    """``dasksae_mma_filter_forward`` (bfloat16 ``mma.sync`` and ``ldmatrix.trans``, fields from the map, outputs into
    the output map) on the device against NumPy's float64 product of the same bfloat16 values: the g++ test's cases
    (``tests/test_mma_forward_on_cpu.py``), ``W x`` into a map and ``U g_r`` into block rows; a minibatch of 136
    takes a second tile of 96 columns with 40 in it.  Likewise ``dasksae_wgmma_filter_forward`` in each of its
    variants (``DASKSAE_WGMMA_FORWARD``; sm_90 only): its tiles in core-matrix order, read by ``wgmma``'s
    descriptors."""
    from dasksae.kernels import mma_forward, wgmma
    from dasksae.kernels.local_filter import gather_patches, local_filter_forward
    from dasksae.kernels.gemm import batched_matmul
    from test_mma_forward_on_cpu import forward_case

    if wgmma_forward != "0" and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    monkeypatch.setattr(mma_forward, "WGMMA_FORWARD", wgmma_forward)
    assert mma_forward.default_variant() == (mma_forward.VARIANT if wgmma_forward == "0" else wgmma_forward)

    field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, rng = forward_case(3, 2, 1, 68,
                                                                                                      minibatch)
    scale = rng.uniform(0.5, 2.0, (blocks_h, blocks_w, rows)).astype(numpy.float32) if scaled else None
    out = cupy.full((blocks_h * 2, blocks_w, 68, batch), numpy.nan, dtype=cupy.float32)
    arrays = (cupy.asarray(x_bits), cupy.asarray(weight_bits), out, None if scale is None else cupy.asarray(scale))
    assert mma_forward.forward_fits(*arrays, field, step, 2, 1)
    mma_forward.filter_forward_bfloat16(*arrays[:3], field, step, 2, 1, arrays[3])
    expected = local_filter_forward(x, weights.reshape(blocks_h, blocks_w, rows, -1), field, step, 2, 1,
                                    row_scale=None if scale is None else scale.astype(numpy.float64), precision="float64")
    numpy.testing.assert_allclose(out.get(), expected, rtol=1e-5, atol=1e-4)
    field, step, blocks_h, blocks_w, rows, batch, x_bits, x, weight_bits, weights, _ = forward_case(4, 1, 1, 136,
                                                                                                    minibatch)
    rows_out = cupy.full((blocks_h * blocks_w, rows, batch), numpy.nan, dtype=cupy.float32)
    assert mma_forward.fields_product_bfloat16(cupy.asarray(x_bits), cupy.asarray(weight_bits), rows_out, field, step,
                                               blocks_w)
    expected = batched_matmul(weights, gather_patches(x, field, step, blocks_h, blocks_w), precision="float64")
    numpy.testing.assert_allclose(rows_out.get(), expected, rtol=1e-5, atol=1e-4)


def _trained_on_mma_sync_then_wgmma(monkeypatch, module, switch_name: str, config, seed: int,
                                    setting: str = "1") -> list[str]:
    """``config`` (1x1 tiles, M=96) trained 3 steps in bfloat16 with ``module.switch_name`` at ``0`` (``mma.sync``),
    then ``setting`` (``wgmma``; sm_90 only, else the test skips), the two runs' losses and parameters checked alike
    (the same bfloat16 products, their float32 sums in another order): the variants ``module._kernel`` was asked
    for."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import wgmma
    from dasksae.tile_array import LocalExecutor

    if not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    data = numpy.random.default_rng(seed)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    variants = []
    kernel = module._kernel
    monkeypatch.setattr(module, "_kernel", lambda variant, *rest: variants.append(variant) or kernel(variant, *rest))
    runs = []
    for value in ("0", setting):
        monkeypatch.setattr(module, switch_name, value)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        runs.append(([report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()))
    (expected_losses, expected_parameters), (losses, parameters) = runs
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name
    return variants


def test_bfloat16_training_on_wgmma_follows_mma_sync(monkeypatch):
    """DASKSAE_WGMMA_FORWARD=1: ``small`` (M=96) trained in bfloat16 with ``W x`` and ``U g_r`` on ``wgmma``
    (:data:`~dasksae.kernels.mma_forward.WGMMA_VARIANT`) as with them on ``mma.sync`` (``=0``)."""
    from dasksae.kernels import mma_forward

    variants = _trained_on_mma_sync_then_wgmma(monkeypatch, mma_forward, "WGMMA_FORWARD", named_config("small"), 5)
    assert set(variants) == {mma_forward.VARIANT, mma_forward.WGMMA_VARIANT}


def test_bfloat16_training_with_the_update_on_wgmma_follows_mma_sync(monkeypatch):
    """DASKSAE_WGMMA_UPDATE=1 (the default): ``small`` (M=96: codes 192 wide, in whole 64s) trained in bfloat16 with
    the update's products on ``wgmma`` (:data:`~dasksae.kernels.mma_update.WGMMA_VARIANT`) as with ``mma.sync``'s
    epilogue variants (``=0``)."""
    from dasksae.kernels import mma_update

    variants = _trained_on_mma_sync_then_wgmma(monkeypatch, mma_update, "WGMMA_UPDATE", named_config("small"), 7)
    assert mma_update.WGMMA_VARIANT in variants and set(variants) - {mma_update.WGMMA_VARIANT}


def test_bfloat16_training_with_the_tensor_core_forward_follows_cublas(monkeypatch):
    """DASKSAE_TENSOR_CORE_FORWARD=1 (the default): ``small`` (tied RICA, 1x1 tiles, M=96; stage 1's fan-in 108 is
    not a multiple of 8, so it keeps cuBLAS, stages 2 and 3 take the kernel for ``W x`` and ``U g_r``) trained in
    bfloat16 as with cuBLAS over gathered fields (``=0``): their float32 sums differ in order only."""
    from dasksae.kernels import mma_forward

    (expected_losses, expected_parameters), (losses, parameters), launched = _small_bfloat16_trained_off_and_on(
        monkeypatch, mma_forward, "TENSOR_CORE_FORWARD", "filter_forward_bfloat16", lambda args: args[5:7],
        settings=("0", "1"))
    assert (2, 2) in launched and (1, 1) in launched  # W x into the maps (2x2 positions), U g_r into block rows
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name


@pytest.mark.parametrize("variant", ["k32x4", "k64x3", "w64x3-swizzled", "w64x3-pairs"])
@pytest.mark.parametrize("case", [(8, 4, 8, 64, 3, 2, 96), (6, 2, 4, 32, 3, 4, 96), (8, 4, 8, 32, 2, 2, 136),
                                  (8, 4, 8, 128, 3, 2, 96), (6, 2, 4, 64, 2, 3, 136), (8, 4, 3, 64, 3, 2, 96),
                                  (8, 4, 3, 32, 2, 3, 136)],
                         ids=["cells-of-128", "cells-of-16", "part-tile", "rows-128", "rows-64-part-tile",
                              "three-channels", "three-channels-part-tile"])
def test_the_tensor_core_transpose_with_the_fold_on_the_gpu_equals_numpy(case, variant):
    """``dasksae_mma_filter_transpose_fold`` (bfloat16 ``mma.sync``, both operands by ``ldmatrix.trans``, each cell of
    the map summed over its blocks and added in, or written over NaNs with ``accumulate=False``) on the device against
    NumPy's float64 product and fold of the same bfloat16 values: the g++ test's cases (``tests/test_mma_transpose_on_cpu.py``), a minibatch of 136 among them, in
    each variant of the tiles asked for (rows not in whole 64s keep k32x4); ``dasksae_wgmma_filter_transpose_fold``
    likewise (``w64x3-swizzled``, ``DASKSAE_WGMMA_TRANSPOSE``; sm_90 only)."""
    from dasksae.kernels import mma_transpose, wgmma
    from dasksae.kernels.elementwise import difference_and_squares
    from test_mma_transpose_on_cpu import transpose_case

    if variant in mma_transpose.WGMMA_VARIANTS and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    field, step, channels, rows, blocks_h, blocks_w, _ = case
    weight_bits, y_bits, out, expected = transpose_case(5, *case)
    arrays = cupy.asarray(out), cupy.asarray(weight_bits), cupy.asarray(y_bits)
    assert mma_transpose.transpose_fits(*arrays, field, step, blocks_h, blocks_w)
    mma_transpose.add_transpose_bfloat16(*arrays, field, step, blocks_h, blocks_w, variant=variant)
    numpy.testing.assert_allclose(arrays[0].get(), expected, rtol=1e-5, atol=1e-3)
    arrays[0].fill(numpy.nan)  # accumulate=False: each cell's sum written, the map's NaNs never read
    mma_transpose.add_transpose_bfloat16(*arrays, field, step, blocks_h, blocks_w, variant=variant, accumulate=False)
    fold = arrays[0].get()
    numpy.testing.assert_allclose(fold, expected - out.astype(numpy.float64), rtol=1e-5, atol=1e-3)
    # SUBTRACT (DASKSAE_WRITE_ONCE, one tile's error): W^T y - x written over NaNs, rounded as fold - x is, and the
    # sum of its squares as difference_and_squares sums them
    x = cupy.asarray(numpy.random.default_rng(6).standard_normal(out.shape).astype(numpy.float32))
    arrays[0].fill(numpy.nan)
    squares = mma_transpose.add_transpose_bfloat16(*arrays, field, step, blocks_h, blocks_w, variant=variant,
                                                   accumulate=False, subtract=x)
    error, expected_squares = difference_and_squares(cupy.asarray(fold), x)
    numpy.testing.assert_array_equal(arrays[0].get(), error.get())
    numpy.testing.assert_allclose(float(squares), float(expected_squares), rtol=1e-12)


@pytest.mark.parametrize("setting", ["1", "w64x3-pairs"])
def test_bfloat16_training_with_the_transpose_on_wgmma_follows_mma_sync(monkeypatch, setting):
    """DASKSAE_WGMMA_TRANSPOSE=1: ``small`` with 16 maps a stage (M=96) trained in bfloat16 with ``W^T y`` and the
    fold on ``wgmma`` (stages 2 and 3: 64 rows, cells of 64 values), as on ``mma.sync`` (``=0``); likewise in blocks
    of two cells (``w64x3-pairs``)."""
    import dataclasses

    from dasksae.kernels import mma_transpose

    small = named_config("small")  # with 16 maps a stage: 64 block rows, which the wgmma tiles take
    config = dataclasses.replace(small, stages=tuple(dataclasses.replace(stage, block=(2, 2, 16), maps=16)
                                                     for stage in small.stages))
    variants = _trained_on_mma_sync_then_wgmma(monkeypatch, mma_transpose, "WGMMA_TRANSPOSE", config, 6, setting)
    assert (mma_transpose.WGMMA_VARIANT if setting == "1" else setting) in variants


def test_bfloat16_training_with_the_tensor_core_transpose_follows_cublas(monkeypatch):
    """DASKSAE_TENSOR_CORE_TRANSPOSE=1 (the default): ``small`` (stage 1's 3 channels make cells the kernel does not take;
    stages 2 and 3 take it for the reconstruction and the input gradient) trained in bfloat16 as with cuBLAS's product
    and the fold (``=0``): their float32 sums differ in order only."""
    from dasksae.kernels import mma_transpose

    (expected_losses, expected_parameters), (losses, parameters), launched = _small_bfloat16_trained_off_and_on(
        monkeypatch, mma_transpose, "TENSOR_CORE_TRANSPOSE", "add_transpose_bfloat16", lambda args: args[0].shape,
        settings=("0", "1"))
    assert len(set(launched)) >= 2  # the maps of stages 2 and 3
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name


def test_bfloat16_training_with_the_update_cache_hints_equals_without_bit_for_bit(monkeypatch):
    """DASKSAE_UPDATE_CACHE_HINTS=1: ``small`` (tied RICA, 1x1 tiles, M=96) trained in bfloat16 with the update's
    cache-streaming epilogues (the ``-cs`` twins of the variants ``auto`` picks) gives the very losses and weights of
    the plain ones: the hints change where the weights and momentum are cached, not one operation."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import mma_update
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    monkeypatch.setattr(mma_update, "WGMMA_UPDATE", "0")  # the -cs twins are mma.sync's: compare them with theirs
    chosen, choose = [], mma_update.epilogue_for
    monkeypatch.setattr(mma_update, "epilogue_for", lambda setting, channels: chosen.append(choose(setting, channels))
                        or chosen[-1])

    def trained(hints: bool):
        monkeypatch.setattr(mma_update, "CACHE_HINTS", hints)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected_losses, expected_parameters = trained(False)
    plain, chosen[:] = set(chosen), []
    losses, parameters = trained(True)
    assert plain and {variant + "-cs" for variant in plain} == set(chosen), (plain, chosen)
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


@pytest.mark.parametrize("variant", ["rows-resident-whole", "rows-144", "rows-overlap"])
def test_bfloat16_training_with_fewer_loads_of_the_codes_equals_the_rows_epilogues_bit_for_bit(monkeypatch, variant):
    """The update's epilogue set to ``rows-resident-whole`` (a benchmark's variant; no switch takes it), ``rows-144`` or
    ``rows-overlap`` (slower on an H100; ``DASKSAE_MMA_EPILOGUE`` takes them): ``small`` (tied RICA, 1x1 tiles, M=96:
    codes 192 wide, within RESIDENT_WIDTH) trained in bfloat16 with each block taking 8 column tiles in turn, its
    codes kept in shared memory, or blocks of 144 columns instead of 96, or producer and consumer warps, gives the
    very losses and weights of ``auto``'s epilogues: the same products in the same order, the same step and the same
    sums of squares, only fewer loads of the codes."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import mma_update
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    launched, launch = [], mma_update._update_launch
    monkeypatch.setattr(mma_update, "_update_launch", lambda variant, *args: launched.append(variant)
                        or launch(variant, *args))

    def trained(setting: str):
        monkeypatch.setattr(mma_update, "EPILOGUE", setting)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected_losses, expected_parameters = trained("auto")
    assert launched and variant not in launched
    launched[:] = []
    losses, parameters = trained(variant)
    assert set(launched) == {variant}, launched
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def _small_bfloat16_trained_off_and_on(monkeypatch, module, switch_name: str, kernel_name: str, record,
                                       minibatch: int = 96, settings=(False, True)):
    """``small`` (tied RICA, 1x1 tiles, M=``minibatch``) trained 3 steps in bfloat16 with ``module.switch_name`` off,
    then on (``settings``: its values for off and on): each run's losses and parameters, and ``record(args)`` of each launch of ``module.kernel_name`` while it
    was on (the off run must launch none)."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (minibatch,)).astype(numpy.float32) for _ in range(3)]
    launched = []
    kernel = getattr(module, kernel_name)
    monkeypatch.setattr(module, kernel_name, lambda *args, **kwargs: launched.append(record(args)) or kernel(*args, **kwargs))

    def trained(on: bool):
        monkeypatch.setattr(module, switch_name, settings[on])
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    off = trained(False)
    assert not launched
    return off, trained(True), launched


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_training_with_maps_written_once_follows_zeroed_maps(monkeypatch, dtype):
    """DASKSAE_WRITE_ONCE=1 (the default): ``small`` (tied RICA, 1x1 tiles, M=96) trained 3 steps with ``W^T y``'s
    map and the input gradient taken from ``empty`` and written whole by the fold's kernel (``accumulate=False``),
    and the LCN backward's window not zeroed, gives the losses and weights of zeroed maps (``=0``) to float32
    rounding (``W^T y`` in one launch, not chunks).  The memory pool is filled with NaNs before each run, so that a
    value the kernels left unwritten would show."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import local_filter, mma_float32, mma_transpose
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    accumulated = []  # each tensor-core fold's accumulate
    for module, name in ((mma_transpose, "add_transpose_bfloat16"), (mma_float32, "add_transpose_float32")):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, kernel=kernel, **kwargs: accumulated.append(
            (kwargs.get("accumulate", True), kwargs.get("subtract") is not None)) or kernel(*args, **kwargs))

    def trained(on: bool):
        monkeypatch.setattr(local_filter, "WRITE_ONCE", on)
        tile_program.forget_all()
        accumulated.clear()
        cupy.get_default_memory_pool().free_all_blocks()
        poison = cupy.full(2**28, numpy.nan, dtype=numpy.float32)  # 1 GiB of NaNs back into the pool
        del poison
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype=dtype, device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters(), list(accumulated)

    expected_losses, expected_parameters, zeroed = trained(False)
    losses, parameters, written = trained(True)
    assert all(accumulate and not subtract for accumulate, subtract in zeroed)
    if dtype == "bfloat16":  # stages 2 and 3 take the tensor-core fold, which writes each stage's error
        assert (False, True) in written
    assert numpy.isfinite(losses).all()
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name


@pytest.mark.parametrize("switch_name", ["COMPILED_GEOMETRY", "LDMATRIX"])
def test_bfloat16_training_with_the_layers_compiled_in_or_ldmatrix_equals_the_default_bit_for_bit(monkeypatch,
                                                                                                  switch_name):
    """DASKSAE_MMA_GEOMETRY=1: ``small`` (M=96) trained in bfloat16 with the tensor-core ``W x`` and ``W^T y``
    compiled for each layer (its geometry constants) gives the very losses and weights of one kernel for all: the
    same products in the same order, only the loads' index arithmetic done at compile time.  DASKSAE_MMA_LDMATRIX=1
    (``W x``'s A fragments by ``ldmatrix.x4``) likewise: the same fragments, fewer loads."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import mma_forward, mma_transpose, mma_update
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    compiled = []  # (module, whether its kernel was the switch's: a layer's geometry given, or ldmatrix asked for)

    def recorded(module):
        kernel = module._kernel

        def record(variant, geometry=None, flag=False):  # (flag: W x's ldmatrix, W^T y's subtracting build)
            changed = geometry is not None if switch_name == "COMPILED_GEOMETRY" else flag and module is mma_forward
            compiled.append((module.__name__, changed))
            return kernel(variant, geometry, flag)
        return record

    for module in (mma_forward, mma_transpose):
        monkeypatch.setattr(module, "_kernel", recorded(module))
    if switch_name == "LDMATRIX":  # (ldmatrix is mma.sync's: W x on wgmma, the default on sm_90, has no A fragments)
        monkeypatch.setattr(mma_forward, "WGMMA_FORWARD", "0")

    def trained(on: bool):
        monkeypatch.setattr(mma_update, switch_name, on)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected_losses, expected_parameters = trained(False)
    assert compiled and not any(changed for _, changed in compiled)
    compiled[:] = []
    losses, parameters = trained(True)
    names = {name for name, changed in compiled if changed}
    assert names == ({mma_forward.__name__, mma_transpose.__name__} if switch_name == "COMPILED_GEOMETRY"
                     else {mma_forward.__name__}), compiled
    assert losses == expected_losses
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


@pytest.mark.parametrize("module_name, switch_name, kernel_name", [
    ("mma_forward", "TENSOR_CORE_FORWARD", "filter_forward_bfloat16"),
    ("mma_transpose", "TENSOR_CORE_TRANSPOSE", "add_transpose_bfloat16"),
], ids=["forward", "transpose"])
def test_bfloat16_training_at_a_minibatch_of_128_takes_the_tensor_core_kernels(monkeypatch, module_name, switch_name,
                                                                               kernel_name):
    """At M=128 (not whole 96s: the last tile of columns a third full, as at M=512) ``small`` trains in bfloat16 with
    the tensor-core forward (and, in turn, the transpose with the fold) as without it, and the kernel ran."""
    import importlib

    module = importlib.import_module(f"dasksae.kernels.{module_name}")
    (expected_losses, expected_parameters), (losses, parameters), launched = _small_bfloat16_trained_off_and_on(
        monkeypatch, module, switch_name, kernel_name, lambda args: 1, minibatch=128, settings=("0", "1"))
    assert launched
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-3 * numpy.abs(theirs[name]).max(), name


@pytest.mark.parametrize("setting, tiles", [("1", "1x1"), ("priority", "1x1"), ("1", "2x2")])
def test_bfloat16_training_with_the_update_on_a_side_stream_equals_it_in_line_bit_for_bit(monkeypatch, setting, tiles):
    """DASKSAE_UPDATE_STREAM: ``small`` (tied RICA, M=96) trained in bfloat16 with each chunk's tensor-core update
    launched on a side stream of its tile's stream, beside the lower stages' backward, gives the very losses and
    weights of the update in line: the same kernels on the same values, so anything read early or overwritten under
    a reader would show.  Every update ran on a side stream (none did with the switch off).  Each run is a thread of
    its own, so that its tile stream is made anew (``priority``: at the device's highest priority).  Steps replayed
    as calls: a stream capturing a CUDA graph keeps the update in line (DASKSAE_CUDA_GRAPHS=auto graphs one tile)."""
    import threading

    from dasksae import TiledNetwork, cuda_graphs, streams, tile_program
    from dasksae.kernels import mma_update
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    launched_on, kernel = [], mma_update.filter_weight_grad_update_bfloat16
    monkeypatch.setattr(mma_update, "filter_weight_grad_update_bfloat16",
                        lambda *args, **kwargs: launched_on.append(cupy.cuda.get_current_stream().ptr)
                        or kernel(*args, **kwargs))

    monkeypatch.setattr(cuda_graphs, "GRAPHS", False)

    def trained(value):
        monkeypatch.setattr(streams, "UPDATE_STREAM", value)
        tile_program.forget_all()
        result = {}

        def run():
            try:
                network = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype="bfloat16",
                                       device="cuda")
                result["losses"] = [report.loss for report in network.steps(batches, 1e-3, 0.9)]
                result["parameters"] = network.parameters()
                priority_of = getattr(cupy.cuda.runtime, "streamGetPriority", None)  # (where CuPy has it)
                result["priority"] = priority_of and priority_of(streams._thread_stream(cupy).ptr)
            except BaseException as error:  # raised in the test's thread below
                result["error"] = error

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        launches, launched_on[:] = list(launched_on), []
        return result, launches

    (expected, in_line), (result, launches) = trained("0"), trained(setting)
    side = {stream.ptr for stream in streams._side_streams.values()}
    assert in_line and launches and not side & set(in_line) and set(launches) <= side
    if setting == "priority" and result["priority"] is not None:
        assert result["priority"] < expected["priority"]
    assert result["losses"] == expected["losses"]
    for mine, theirs in zip(result["parameters"], expected["parameters"]):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def test_bfloat16_training_with_the_tensor_core_update_follows_the_gathered_path(monkeypatch):
    """DASKSAE_TENSOR_CORE_UPDATE=1 (the default): ``small`` (tied RICA; fan-ins 108 and more, 1x1 tiles, M=96)
    trained in bfloat16 with the update taken in the tensor-core kernel, which ran, as the gathered path (``=0``:
    cuBLAS's gradient over gathered fields, then the update) trains it, to the rounding of the row dots (the CPU
    test's tolerances)."""
    from dasksae.kernels import mma_update

    (expected_losses, expected_parameters), (losses, parameters), launched = _small_bfloat16_trained_off_and_on(
        monkeypatch, mma_update, "TENSOR_CORE_UPDATE", "filter_weight_grad_update_bfloat16", lambda args: 1)
    assert launched
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for mine, theirs in zip(parameters, expected_parameters):
        for name in mine:
            assert numpy.abs(mine[name] - theirs[name]).max() < 1e-4 * numpy.abs(theirs[name]).max(), name


@pytest.mark.parametrize("variant", ["k32x3", *SPLIT_WGMMA_VARIANTS])
def test_the_split_tf32_forward_on_the_gpu_is_as_accurate_as_the_simt_kernel(monkeypatch, variant):
    """``dasksae_tf32x3_filter_forward`` (float32 operands split into two TF32 terms, ``mma.sync.m16n8k8``) on a
    coates-like layer (20x20x8 fields at step 4, 4x4x8 blocks: fan-in 3200, 128 rows, M=96, 3x3 blocks): its error
    against float64 (largest, relative to the sum of |products|) within 3x of the float32 SIMT kernel's, and plain
    TF32's (cuBLAS over gathered fields, ``precision="tf32"``) more than 20x it; and the g++ test's cases.
    ``w32-split``: the same on ``wgmma`` (sm_90), ``DASKSAE_FLOAT32_WGMMA_FORWARD=1``; ``w32-split-2`` with two
    stages."""
    from dasksae.kernels import mma_float32, wgmma
    from dasksae.kernels.local_filter import local_filter_forward

    if variant.startswith("w32") and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    monkeypatch.setattr(mma_float32, "forward_variant", lambda terms=3: variant)

    rng = numpy.random.default_rng(11)
    field, step, channels, blocks, block = 20, 4, 8, 3, (4, 4)
    x = cupy.asarray(rng.standard_normal(((blocks - 1) * step + field,) * 2 + (channels, 96)), dtype=cupy.float32)
    weights = cupy.asarray(rng.standard_normal((blocks, blocks, 128, field * field * channels)), dtype=cupy.float32)
    scale = cupy.asarray(rng.uniform(0.5, 2.0, (blocks, blocks, 128)), dtype=cupy.float32)

    def product(values, weight_values, precision):
        return local_filter_forward(values, weight_values, field, step, *block, row_scale=scale.astype(values.dtype),
                                    precision=precision)

    expected = product(x.astype(cupy.float64), weights.astype(cupy.float64), "float64")
    magnitudes = product(cupy.abs(x).astype(cupy.float64), cupy.abs(weights).astype(cupy.float64), "float64")
    out = cupy.full(expected.shape, numpy.nan, dtype=cupy.float32)
    assert mma_float32.forward_fits(x, weights.reshape(blocks * blocks, 128, -1), out, scale, field, step, *block)
    mma_float32.filter_forward_float32(x, weights.reshape(blocks * blocks, 128, -1), out, field, step, *block, scale)
    errors = {name: float(cupy.max(cupy.abs(value.astype(cupy.float64) - expected) / magnitudes))
              for name, value in (("split", out), ("simt", product(x, weights, "float32")),
                                  ("tf32", product(x, weights, "tf32")))}
    assert errors["split"] <= 3 * errors["simt"], errors
    assert errors["tf32"] > 20 * errors["simt"], errors
    from test_mma_float32_on_cpu import expected_forward, forward_case

    for seed, batch, scaled in ((3, 96, True), (4, 136, False)):
        case = forward_case(seed, batch)
        field_, step_, _, _, _, x_, weights_, scale_, shape = case
        out = cupy.full(shape, numpy.nan, dtype=cupy.float32)
        arrays = (cupy.asarray(x_), cupy.asarray(weights_), out, cupy.asarray(scale_) if scaled else None)
        assert mma_float32.forward_fits(*arrays, field_, step_, 2, 1)
        mma_float32.filter_forward_float32(*arrays[:3], field_, step_, 2, 1, arrays[3])
        numpy.testing.assert_allclose(out.get(), expected_forward(case, scaled=scaled), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", ["k32x3", *SPLIT_WGMMA_VARIANTS])
def test_the_split_tf32_transpose_on_the_gpu_is_as_accurate_as_the_simt_product_and_fold(monkeypatch, variant):
    """``dasksae_tf32x3_filter_transpose_fold`` on a coates-like layer (20x20x8 fields at step 4, 128 rows, M=96, 3x3
    blocks), added into a map: its error against float64 (largest, relative to the fold of ``|W|^T |y|``) within 3x
    of the float32 SIMT product then the fold, and plain TF32's (cuBLAS into patches, then the fold) more than 20x
    it; and the g++ test's cases, added in and written (``accumulate=False``).  ``w32-split-2``: the same on ``wgmma`` (sm_90),
    ``DASKSAE_FLOAT32_WGMMA_TRANSPOSE=1``."""
    from dasksae.kernels import mma_float32, wgmma
    from dasksae.kernels.local_filter import add_transpose_into
    from test_mma_float32_on_cpu import folded, transpose_case

    if variant.startswith("w32") and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    monkeypatch.setattr(mma_float32, "transpose_variant", lambda terms=3: variant)

    weights, y, out, geometry = transpose_case(12, 20, 4, 8, 128, 3, 3)
    expected = folded(weights, y, out, geometry)
    magnitudes = folded(numpy.abs(weights), numpy.abs(y), numpy.zeros_like(out), geometry)
    mine = cupy.asarray(out)
    assert mma_float32.transpose_fits(mine, cupy.asarray(weights), cupy.asarray(y), *geometry)
    mma_float32.add_transpose_float32(mine, cupy.asarray(weights), cupy.asarray(y), *geometry)
    errors = {"split": float(numpy.max(numpy.abs(mine.get() - expected) / magnitudes))}
    for precision in ("float32", "tf32"):  # (the switch is off: the SIMT product, or cuBLAS's, then the fold)
        theirs = cupy.asarray(out)
        add_transpose_into(theirs, cupy.asarray(weights), cupy.asarray(y), geometry[0], geometry[1], geometry[2],
                           geometry[3], precision)
        errors[precision] = float(numpy.max(numpy.abs(theirs.get() - expected) / magnitudes))
    assert errors["split"] <= 3 * errors["float32"], errors
    assert errors["tf32"] > 20 * errors["float32"], errors
    for case in ((5, 8, 4, 8, 64, 3, 2, 96), (5, 8, 4, 3, 32, 2, 3, 136), (5, 6, 2, 4, 32, 3, 4, 96)):
        weights, y, out, geometry = transpose_case(*case)
        mine = cupy.asarray(out)
        mma_float32.add_transpose_float32(mine, cupy.asarray(weights), cupy.asarray(y), *geometry)
        numpy.testing.assert_allclose(mine.get(), folded(weights, y, out, geometry), rtol=1e-5, atol=1e-4)
        mine.fill(numpy.nan)  # accumulate=False: written over the map, whose NaNs are never read
        mma_float32.add_transpose_float32(mine, cupy.asarray(weights), cupy.asarray(y), *geometry, accumulate=False)
        numpy.testing.assert_allclose(mine.get(), folded(weights, y, numpy.zeros_like(out), geometry), rtol=1e-5,
                                      atol=1e-4)


@pytest.mark.parametrize("variant, with_error", [("rows-wide", True), ("rows", False), ("rows-wide-wgmma", True)])
def test_the_split_tf32_update_on_the_gpu_equals_numpy(variant, with_error):
    """``dasksae_tf32x3_filter_weight_grad_update`` (float32 codes and maps split into TF32 terms, the rows epilogues)
    on the device: the g++ test's case, against the update's array code in float64 (the same values and row dots);
    ``rows-wide-wgmma`` (sm_90): its k-tiles split as they are staged, the products on ``wgmma``."""
    from dasksae.kernels import mma_float32, mma_update, wgmma
    from test_mma_update_on_cpu import assert_updated_as_expected, update_case

    if mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA") and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")

    case = update_case(11, with_error, False, bfloat16=False)
    arrays = [None if case[name] is None else cupy.asarray(case[name])
              for name in ("codes", "x", "error", "raw", "velocity", "inverse_norms", "row_dots")]
    assert mma_float32.update_fits(*arrays, case["field"], case["blocks_w"])
    mma_update.filter_weight_grad_update(*arrays[:5], None, *arrays[5:], case["lr"], case["momentum"], case["field"],
                                         case["step"], case["blocks_w"], variant, split_tf32=True)
    assert_updated_as_expected(case, arrays[3].get(), arrays[4].get(), None, arrays[5].get())


def test_float32_training_with_the_split_tf32_forward_follows_the_simt_kernel(monkeypatch):
    """DASKSAE_FLOAT32_TENSOR_CORES=1: ``small`` trained 3 float32 steps with ``W x``, the backward's ``U g_r``, ``W^T
    y`` (the reconstruction, the input gradient) and the weight gradient with the update on split TF32 tensor cores
    gives the losses and weights of the SIMT kernels' (``=0``) to float32 rounding, and the kernels ran (``W x`` into
    the map's 2x2 positions, ``U g_r`` into block rows: one-position blocks; the transpose, at small's cells of 12
    and 32 values, below the 128 it takes by default; the update)."""
    from dasksae.kernels import mma_float32

    config = named_config("small")
    launched = []
    kernel, transpose = mma_float32.filter_forward_float32, mma_float32.add_transpose_float32
    update = mma_float32.filter_weight_grad_update_float32
    monkeypatch.setattr(mma_float32, "filter_forward_float32",
                        lambda *args, **options: launched.append(tuple(args[5:7])) or kernel(*args, **options))
    monkeypatch.setattr(mma_float32, "add_transpose_float32",
                        lambda *args, **options: launched.append("transpose") or transpose(*args, **options))
    monkeypatch.setattr(mma_float32, "filter_weight_grad_update_float32",
                        lambda *args, **options: launched.append("update") or update(*args, **options))
    monkeypatch.setattr(mma_float32, "TRANSPOSE_CELL_VALUES", 0)
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "0")
    expected = _small_steps(monkeypatch, config, "1x1")
    assert not launched
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "1")
    trained = _small_steps(monkeypatch, config, "1x1")
    assert (2, 2) in launched and (1, 1) in launched and "transpose" in launched and "update" in launched
    _assert_trained_alike(trained, expected)


@pytest.mark.parametrize("dtype", ["float32", "tf32"])
def test_training_with_the_split_update_on_wgmma_follows_mma_sync(monkeypatch, dtype):
    """DASKSAE_FLOAT32_WGMMA_UPDATE=1 (``auto``, the default, takes float32's): ``small`` trained 3 steps in float32
    (three TF32 terms) and in tf32 (one) with
    the weight gradient and update on ``wgmma`` (rows-wide-wgmma, the k-tiles split as they are staged) gives the
    losses and weights of the same training on ``mma.sync``'s split update (``=0``) to float32 rounding, and the
    ``wgmma`` kernel ran."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import mma_float32, mma_update, wgmma
    from dasksae.tile_array import LocalExecutor

    if not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    config = named_config("small")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    variants = []
    update = mma_update.filter_weight_grad_update
    monkeypatch.setattr(mma_update, "filter_weight_grad_update",
                        lambda *args, **options: variants.append(args[13]) or update(*args, **options))

    def trained(on_wgmma: bool):
        monkeypatch.setattr(mma_float32, "WGMMA_UPDATE", "1" if on_wgmma else "0")
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype=dtype, device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected = trained(False)
    assert set(variants) == {mma_update.SPLIT_VARIANT}, variants
    variants.clear()
    losses, parameters = trained(True)
    assert set(variants) == {"rows-wide-wgmma"}, variants
    numpy.testing.assert_allclose(losses, expected[0], rtol=1e-5)
    for mine, theirs in zip(parameters, expected[1]):
        for name in mine:
            assert relative_error(mine[name], theirs[name]) < 1e-4, name


def _float32_trained_on_mma_sync_then(monkeypatch, kernel_name: str, switch_name: str, variant: str):
    """``small`` trained 3 float32 steps on one tile with the split TF32 kernels and ``mma_float32.switch_name`` at
    ``0`` (``mma.sync``), then at ``variant`` (``wgmma``; sm_90 only, else the test skips): the two runs' losses and
    weights alike to float32 rounding, and ``mma_float32.kernel_name`` asked for ``k32x3`` alone, then ``variant``
    alone."""
    from dasksae.kernels import mma_float32, wgmma

    if not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    config = named_config("small")
    variants = []
    kernel = getattr(mma_float32, kernel_name)
    monkeypatch.setattr(mma_float32, kernel_name, lambda name, terms=3: variants.append(name) or kernel(name, terms))
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "1")
    runs = []
    for setting, expected_variant in (("0", mma_float32.VARIANT), (variant, variant)):
        monkeypatch.setattr(mma_float32, switch_name, setting)
        variants.clear()
        runs.append(_small_steps(monkeypatch, config, "1x1"))
        assert set(variants) == {expected_variant}, variants
    _assert_trained_alike(runs[1], runs[0])


@pytest.mark.parametrize("variant", list(SPLIT_WGMMA_VARIANTS))
def test_float32_training_with_the_split_forward_on_wgmma_follows_mma_sync(monkeypatch, variant):
    """DASKSAE_FLOAT32_WGMMA_FORWARD=``variant``: ``small`` trained 3 float32 steps with ``W x`` and ``U g_r`` on
    ``wgmma`` (the k-tiles split, and the fields transposed, as they are staged) gives the losses and weights of the
    same training on ``mma.sync``'s split (``=0``) to float32 rounding, and the ``wgmma`` kernel ran."""
    _float32_trained_on_mma_sync_then(monkeypatch, "_kernel", "WGMMA_FORWARD", variant)


@pytest.mark.parametrize("variant", list(SPLIT_WGMMA_VARIANTS))
def test_float32_training_with_the_split_transpose_on_wgmma_follows_mma_sync(monkeypatch, variant):
    """DASKSAE_FLOAT32_WGMMA_TRANSPOSE=``variant``: ``small`` trained 3 float32 steps with ``W^T y`` (the
    reconstruction, the input gradient) on ``wgmma`` (at small's cells of 12 and 32 values, below the 128 it takes by
    default) gives the losses and weights of the same training on ``mma.sync``'s split (``=0``) to float32 rounding,
    and the ``wgmma`` kernel ran."""
    from dasksae.kernels import mma_float32

    monkeypatch.setattr(mma_float32, "TRANSPOSE_CELL_VALUES", 0)
    _float32_trained_on_mma_sync_then(monkeypatch, "_transpose_kernel", "WGMMA_TRANSPOSE", variant)


def test_tf32_training_on_tf32_tensor_cores_stays_within_tf32s_tolerance_of_float32(monkeypatch):
    """DASKSAE_TF32_TENSOR_CORES=1: ``small`` trained 3 steps with ``--dtype tf32`` takes ``W x``, ``U g_r``, ``W^T y``
    (at any cell size here) and the weight gradient with the update on TF32 tensor cores with one product a k-step
    (the kernels ran, each with ``terms=1``), and its losses stay within tf32's stated tolerance of float32's (1e-4,
    README's "Checks", ``tests/test_precision.py``) and its weights within 1e-3, as cuBLAS's tf32 path (``=0``)
    does."""
    from dasksae import TiledNetwork, tile_program
    from dasksae.kernels import mma_float32
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(3)]
    launched = []
    for name in ("filter_forward_float32", "add_transpose_float32", "filter_weight_grad_update_float32"):
        kernel = getattr(mma_float32, name)
        monkeypatch.setattr(mma_float32, name, lambda *args, _kernel=kernel, _name=name, **options:
                            launched.append((_name, options.get("terms", args[-1] if "update" in _name else None)))
                            or _kernel(*args, **options))
    monkeypatch.setattr(mma_float32, "TRANSPOSE_CELL_VALUES", 0)

    def trained(dtype: str, switch: str):
        monkeypatch.setattr(mma_float32, "TF32_TENSOR_CORES", switch)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype=dtype, device="cuda")
        return [report.loss for report in network.steps(batches, 1e-3, 0.9)], network.parameters()

    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "0")  # float32 on the SIMT kernels: the reference
    expected = trained("float32", "1")
    cublas = trained("tf32", "0")
    assert not launched
    tensor_cores = trained("tf32", "1")
    assert {name for name, _ in launched} == {"filter_forward_float32", "add_transpose_float32",
                                              "filter_weight_grad_update_float32"}, launched
    assert all(terms == 1 for _, terms in launched), launched
    for losses, parameters in (cublas, tensor_cores):
        numpy.testing.assert_allclose(losses, expected[0], rtol=1e-4)
        for mine, theirs in zip(parameters, expected[1]):
            for name in mine:
                assert relative_error(mine[name], theirs[name]) < 1e-3, name


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_whole_products_take_one_launch_with_the_chunked_results(monkeypatch, precision):
    """DASKSAE_WHOLE_PRODUCTS=1: a layer's ``W x`` (the bfloat16 tensor-core kernel, the float32 SIMT one: both read
    the fields from the map) and bfloat16 ``W^T y`` with the fold in the product run as one launch where chunks of
    block rows (here 2 MiB of patches) took several: ``W x`` the same bit for bit (each output is one product either
    way), ``W^T y`` to float32 rounding (a chunk's border cells were added in two launches)."""
    from dasksae.kernels import local_filter, mma_forward, mma_transpose, simt_gemm

    rng = numpy.random.default_rng(13)
    field, step, channels, blocks, block = 8, 4, 8, (6, 3), (2, 2)
    height, width = (blocks[0] - 1) * step + field, (blocks[1] - 1) * step + field
    x = cupy.asarray(rng.standard_normal((height, width, channels, 96)), dtype=cupy.float32)
    weights = cupy.asarray(rng.standard_normal(blocks + (64, field * field * channels)), dtype=cupy.float32)
    y = cupy.asarray(rng.standard_normal((blocks[0] * 2, blocks[1] * 2, 16, 96)), dtype=cupy.float32)
    launched = []
    for module, name in ((mma_forward, "filter_forward_bfloat16"), (simt_gemm, "filter_forward"),
                         (mma_transpose, "add_transpose_bfloat16")):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _kernel=kernel, _name=name, **keywords: launched.append(_name)
                            or _kernel(*args, **keywords))
    _simt_kernels(monkeypatch)

    def products(whole: bool):
        monkeypatch.setattr(local_filter, "WHOLE_PRODUCTS", whole)
        monkeypatch.setattr(local_filter, "WRITE_ONCE", False)  # (which also folds in one launch, since session 56)
        launched.clear()
        z = local_filter.local_filter_forward(x, weights, field, step, *block, precision=precision, chunk_bytes=2 << 20)
        forward_launches = len(launched)
        r = local_filter.local_filter_transpose(y, weights, x.shape, field, step, *block, precision=precision,
                                                chunk_bytes=2 << 20)
        return z.get(), r.get(), forward_launches, len(launched) - forward_launches

    z_chunked, r_chunked, forward_chunked, transpose_chunked = products(False)
    z_whole, r_whole, forward_whole, transpose_whole = products(True)
    assert forward_chunked > 1 and forward_whole == 1
    numpy.testing.assert_array_equal(z_whole, z_chunked)
    if precision == "bfloat16":
        assert transpose_chunked > 1 and transpose_whole == 1
    numpy.testing.assert_allclose(r_whole, r_chunked, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", ["rows", "rows-wide", "rows-wide-wgmma", "rows-wide-wgmma-192"])
def test_the_update_of_split_master_weights_on_the_gpu_is_the_update_of_the_weights_bit_for_bit(variant):
    """The tensor-core update with ``split_master`` (the weights read and written as their halves,
    :mod:`dasksae.master_weights`) on the device against the same kernel on the whole weights: the joined new
    weights, the momentum and the new norms bit for bit (the step is the same float32 arithmetic on the same
    values), and the new halves the split of the new weights (the high half ties away from zero, where the whole
    weights' copy rounds ties to even)."""
    from dasksae import master_weights
    from dasksae.kernels import mma_update, wgmma
    from test_mma_update_on_cpu import update_case

    on_wgmma = mma_update.EPILOGUE_VARIANTS[variant].get("WGMMA")
    if on_wgmma and not wgmma.supported():
        pytest.skip("wgmma needs a GPU of compute capability 9.0")
    case = update_case(19, True, True, batch=96 if on_wgmma else 64)
    bits = case["raw"].view(numpy.uint32)
    bits[0, :, :8] = (bits[0, :, :8] & numpy.uint32(0xFFFF0000)) | numpy.uint32(0x8000)  # exact ties read
    names = ("codes", "x", "error", "raw", "velocity", "operand", "inverse_norms", "row_dots")
    whole = {name: cupy.asarray(case[name]) for name in names}
    split = {name: cupy.asarray(case[name]) for name in names}
    split["operand"], split["raw"] = master_weights.split(cupy.asarray(case["raw"]))  # high, low
    for arrays, halves in ((whole, False), (split, True)):
        assert mma_update.update_fits(*(arrays[name] for name in names), case["field"], case["blocks_w"],
                                      split_master=halves)
        mma_update.filter_weight_grad_update_bfloat16(*(arrays[name] for name in names), case["lr"], case["momentum"],
                                                      case["field"], case["step"], case["blocks_w"], variant=variant,
                                                      split_master=halves)
    joined = master_weights.join(split["operand"], split["raw"])
    cupy.testing.assert_array_equal(joined.view(cupy.uint32), whole["raw"].view(cupy.uint32))
    cupy.testing.assert_array_equal(split["velocity"], whole["velocity"])
    cupy.testing.assert_array_equal(split["inverse_norms"], whole["inverse_norms"])
    high, low = master_weights.split(whole["raw"])
    cupy.testing.assert_array_equal(split["operand"], high)
    cupy.testing.assert_array_equal(split["raw"], low)


def test_bfloat16_training_with_split_master_weights_follows_whole_ones(monkeypatch):
    """DASKSAE_SPLIT_MASTER=1 (opt-in): ``small`` (tied RICA, 1x1 tiles, M=96) trained in bfloat16 with its
    weights kept as halves, the update's kernel reading and writing them, gives the losses and weights of the same
    training with the weights whole (``=0``) to float32's rounding (the products' operand differs where a weight is
    an exact tie); the tile's state holds the halves on the device."""
    from dasksae import TiledNetwork, master_weights, tile_program
    from dasksae.kernels import mma_update
    from dasksae.tile_array import LocalExecutor

    config = named_config("small")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (96,)).astype(numpy.float32) for _ in range(4)]
    calls, update = [], mma_update.filter_weight_grad_update_bfloat16
    monkeypatch.setattr(mma_update, "filter_weight_grad_update_bfloat16",
                        lambda *args, **kwargs: calls.append(kwargs.get("split_master", False)) or update(*args, **kwargs))

    def trained(split: bool):
        monkeypatch.setattr(master_weights, "SPLIT_MASTER", split)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="bfloat16", device="cuda")
        losses = [report.loss for report in network.steps(batches, 1e-3, 0.9)]
        states = [part.value for stage in network.state for part in stage.parts.values()]
        return losses, network.parameters(), states

    expected_losses, expected_parameters, states = trained(False)
    assert calls and not any(calls) and not any(master_weights.is_split(state) for state in states)
    calls.clear()
    losses, parameters, states = trained(True)
    assert calls and all(calls)
    assert all(master_weights.is_split(state) and state["encoder_low"].__class__ is cupy.ndarray for state in states)
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for mine, theirs in zip(parameters, expected_parameters):
        assert numpy.abs(mine["encoder"] - theirs["encoder"]).max() < 1e-5 * numpy.abs(theirs["encoder"]).max()
