"""Batched products in each precision, chunked products, the fused unit-norm update, and training in tf32/bfloat16.

On NumPy the reduced precisions are emulated by rounding operands
(:mod:`dasksae.kernels.gemm`); the GPU tests check cuBLAS against the same.
"""

import dataclasses

import numpy
import pytest

from dasksae import TiledNetwork, named_config
from dasksae.errors import ConfigError
from dasksae.kernels.gemm import batched_matmul, operand
from dasksae.kernels.local_filter import local_filter_forward, local_filter_transpose, local_filter_weight_grads
from dasksae.kernels.normalize import inverse_row_norms, radial_dots, unit_rows, unit_rows_backward, unit_rows_sgd
from dasksae.reference import split_dtype
from dasksae.tile_array import LocalExecutor


@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_batched_matmul_reads_transposes_in_place(rng, transpose_a, transpose_b):
    a = rng.standard_normal((5, 7, 3) if transpose_a else (5, 3, 7))
    b = rng.standard_normal((5, 4, 7) if transpose_b else (5, 7, 4))
    expected = numpy.einsum(
        "bij,bjk->bik", a.transpose(0, 2, 1) if transpose_a else a, b.transpose(0, 2, 1) if transpose_b else b
    )
    got = batched_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert got.dtype == numpy.float64 and numpy.allclose(got, expected, rtol=1e-12, atol=1e-12)
    out = numpy.ones(expected.shape)
    batched_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, out=out, accumulate=True)
    assert numpy.allclose(out, expected + 1, rtol=1e-12, atol=1e-12)


def test_batched_matmul_refuses_mismatched_shapes(rng):
    with pytest.raises(ValueError, match="inner dimensions"):
        batched_matmul(rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 6)))
    with pytest.raises(ValueError, match="same batch"):
        batched_matmul(rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4, 6)))


@pytest.mark.parametrize("precision,kept_bits", [("bfloat16", 7), ("tf32", 10)])
def test_reduced_precision_operands_keep_their_mantissa_bits(rng, precision, kept_bits):
    x = rng.standard_normal(10_000).astype(numpy.float32) * 10.0 ** rng.integers(-3, 4, 10_000)
    rounded = operand(x, precision)
    dropped = 23 - kept_bits
    assert rounded.dtype == numpy.float32
    assert not (rounded.view(numpy.uint32) & numpy.uint32((1 << dropped) - 1)).any()
    relative = numpy.abs(rounded - x) / numpy.abs(x)
    assert relative.max() <= 2.0 ** -(kept_bits + 1) * (1 + 1e-6)  # round to nearest: half a unit in the last place
    assert relative.max() > 2.0 ** -(kept_bits + 3)  # and something was dropped
    assert numpy.array_equal(operand(rounded, precision), rounded)  # rounding twice changes nothing


SHAPE = (18, 22, 3, 6, 4, 2, 2, 3, 5)  # H, W, C, M, field, step, block_h, block_w, K


def _problem(rng):
    height, width, channels, batch, field, step, bh, bw, maps = SHAPE
    nbh, nbw = (height - field) // step + 1, (width - field) // step + 1
    nbh, nbw = nbh - nbh % 1, nbw
    x = rng.standard_normal((height, width, channels, batch))
    weights = rng.standard_normal((nbh, nbw, bh * bw * maps, field * field * channels))
    scale = rng.uniform(0.5, 2.0, (nbh, nbw, bh * bw * maps))
    return x, weights, scale, (field, step, bh, bw)


def test_chunked_products_equal_one_chunk(rng):
    """Running the products a few block rows at a time (row scales included) gives the same numbers."""
    x, weights, scale, geometry = _problem(rng)
    y = local_filter_forward(x, weights, *geometry, row_scale=scale, chunk_bytes=None)
    assert numpy.allclose(y, local_filter_forward(x, weights * scale[..., None], *geometry, chunk_bytes=None), rtol=1e-12)
    for chunk in (1, 10_000):  # one block row at a time; a few
        assert numpy.allclose(local_filter_forward(x, weights, *geometry, row_scale=scale, chunk_bytes=chunk), y, rtol=1e-12)
        back = local_filter_transpose(y, weights, x.shape, *geometry, row_scale=scale, chunk_bytes=chunk)
        assert numpy.allclose(back, local_filter_transpose(y, weights, x.shape, *geometry, row_scale=scale, chunk_bytes=None), rtol=1e-12)
        pairs = [(y, x, None), (2 * y, rng.standard_normal(x.shape), 0.5)]
        whole = local_filter_weight_grads(pairs, *geometry, chunk_bytes=None)
        seen = numpy.zeros_like(whole)

        def keep(p0, p1, grad):
            seen[p0:p1] += grad

        assert local_filter_weight_grads(pairs, *geometry, chunk_bytes=chunk, consume=keep) is None
        assert numpy.allclose(seen, whole, rtol=1e-12)
        expected = sum((s or 1.0) * local_filter_weight_grads([(d, xx, None)], *geometry, chunk_bytes=None) for d, xx, s in pairs)
        assert numpy.allclose(whole, expected, rtol=1e-12)


def test_fused_unit_norm_update_equals_the_chain_rule_and_sgd(rng):
    raw = rng.standard_normal((3, 4, 5, 7))
    velocity = rng.standard_normal(raw.shape)
    grad = rng.standard_normal(raw.shape)
    unit, norms = unit_rows(raw)
    assert numpy.allclose(inverse_row_norms(raw), 1 / norms[..., 0], rtol=1e-14)
    expected_velocity = 0.9 * velocity - 0.01 * unit_rows_backward(grad, unit, norms)
    expected = raw + expected_velocity
    unit_rows_sgd(raw, velocity, grad, inverse_row_norms(raw), 0.01, 0.9)
    assert numpy.allclose(velocity, expected_velocity, rtol=1e-12) and numpy.allclose(raw, expected, rtol=1e-12)


def test_wave_rows_take_the_fewest_waves_then_the_fewest_launches():
    """``DASKSAE_WAVE_CHUNKS``: the chunk size that needs the fewest waves of CUDA blocks over all of a stage's
    launches (then the fewest launches), found by trying every size that fits memory."""
    from dasksae.kernels.local_filter import chunks, wave_rows

    def cost(rows, blocks_h, blocks_w, slots):
        counts = [(p1 - p0) * blocks_w for p0, p1 in chunks(blocks_h, 1, rows, blocks_w)]
        return sum(-(-count // slots) for count in counts), len(counts)

    assert wave_rows(41, 17, 41, 264) == 12  # coates200's stage 2 on an H200: 7 waves, not 17 rows' 8
    assert chunks(41, 100, 1700, 41, 264) == [(0, 12), (12, 24), (24, 36), (36, 41)]
    assert chunks(41, 100, 1700, 41) == [(0, 17), (17, 34), (34, 41)]  # no slots: by memory alone
    for blocks_h, most, blocks_w, slots in [(46, 33, 46, 264), (36, 20, 36, 264), (10, 10, 7, 16), (9, 4, 5, 8)]:
        best = min(cost(rows, blocks_h, blocks_w, slots) for rows in range(1, most + 1))
        rows = wave_rows(blocks_h, most, blocks_w, slots)
        assert 1 <= rows <= most and cost(rows, blocks_h, blocks_w, slots) == best


def test_the_code_gradient_writes_the_row_dots_of_the_gradient_it_makes(rng):
    """DASKSAE_FUSED_ROW_DOTS: ``tied_code_gradient`` given ``row_dots`` fills them with ``W . dL/dW`` a row for
    the weight gradient ``[g_z | a z] [X | G]^T`` of the codes it writes (float64, NumPy), with ``g_z`` the
    pooling's gradient plus the decoder's ``a s U g_r``."""
    from dasksae.kernels.code_gradient import tied_code_gradient

    count, rows, fan_in, batch, a = 3, 5, 12, 8, 0.7
    raw = rng.standard_normal((count, rows, fan_in))
    scale = inverse_row_norms(raw)[..., None]
    fields, error_fields = rng.standard_normal((count, fan_in, batch)), rng.standard_normal((count, fan_in, batch))
    z = (raw * scale) @ fields
    codes, dots = numpy.empty((count, rows, 2 * batch)), numpy.full((count, rows), numpy.nan)
    tied_code_gradient(raw @ error_fields, scale, z, rng.standard_normal((count, rows, batch)), a, codes, "float64",
                       row_dots=dots)
    gradient = codes @ numpy.concatenate([fields, error_fields], axis=2).transpose(0, 2, 1)
    numpy.testing.assert_allclose(dots, ((raw * scale) * gradient).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("from_maps", [False, True])
def test_training_with_the_row_dots_from_the_code_gradient_is_bit_for_bit_the_same_on_numpy(monkeypatch, from_maps):
    """DASKSAE_FUSED_ROW_DOTS=1 on NumPy (float32, tied RICA): the filter backward takes the update's row dots from
    the code gradient (the same array code) instead of calling radial_dots itself, and trains bit for bit alike;
    with DASKSAE_CODES_FROM_MAPS=1 as well it hands the code gradient z's and grad_z's maps instead of their block
    rows (which the array code then makes)."""
    from dasksae import tile_ops
    from dasksae.kernels import code_gradient

    config = named_config("tiny")
    batches = [numpy.random.default_rng(k).standard_normal(config.input_shape + (8,)).astype("float32")
               for k in range(3)]
    called = {"radial_dots": [], "block_rows": []}
    for name, calls in called.items():
        function = getattr(tile_ops, name)
        monkeypatch.setattr(tile_ops, name, lambda *args, f=function, c=calls, **kwargs: c.append(1) or f(*args, **kwargs))
    results = []
    for on in (False, True):
        monkeypatch.setattr(code_gradient, "FUSED_ROW_DOTS", on)
        monkeypatch.setattr(code_gradient, "CODES_FROM_MAPS", on and from_maps)
        for calls in called.values():
            calls[:] = []
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="float32")
        results.append(([network.step(x, 1e-3, 0.9).loss for x in batches], network.parameters(),
                        {name: len(calls) for name, calls in called.items()}))
    (losses_off, parameters_off, calls_off), (losses_on, parameters_on, calls_on) = results
    assert calls_off["radial_dots"] > 0 and calls_on["radial_dots"] == 0, (calls_off, calls_on)
    assert calls_off["block_rows"] > 0 and (calls_on["block_rows"] == 0) == from_maps, (calls_off, calls_on)
    assert losses_on == losses_off
    for mine, theirs in zip(parameters_on, parameters_off):
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def test_map_blocks_are_the_block_rows_of_their_map(rng):
    from dasksae.kernels.local_filter import MapBlocks, block_rows

    output_map = rng.standard_normal((6, 8, 3, 5))
    blocks = MapBlocks(output_map, 3, 2)
    assert blocks.shape == (8, 18, 5) == block_rows(output_map, 3, 2).shape
    numpy.testing.assert_array_equal(blocks.rows(), block_rows(output_map, 3, 2))
    assert blocks.rows()[5, 7].tolist() == output_map[3 + 1, 2 + 0, 1].tolist()  # block (1, 1), row (1, 0, 1)


@pytest.mark.parametrize("tied", [True, False])
def test_radial_dots_from_the_codes_equal_the_gradients_dots(rng, tied):
    """``W . dL/dW`` a row from the codes, ``z`` and the decoder's ``U g_r`` (``M`` terms) equals the dot of ``W``
    with the weight gradient ``[g_z | a z] [X | G]^T`` (or ``g_z X^T``) to float64 rounding, and the update given
    those dots equals the update that sums them over the gradient."""
    count, rows, fan_in, batch, a = 3, 5, 12, 8, 0.7
    raw = rng.standard_normal((count, rows, fan_in))
    scale = inverse_row_norms(raw)[..., None]
    fields, error_fields = rng.standard_normal((count, fan_in, batch)), rng.standard_normal((count, fan_in, batch))
    z = (raw * scale) @ fields
    grad_z = rng.standard_normal((count, rows, batch))
    if tied:
        codes = numpy.concatenate([grad_z, a * z], axis=2)
        gradient = codes @ numpy.concatenate([fields, error_fields], axis=2).transpose(0, 2, 1)
        dots = radial_dots(codes, z, raw @ error_fields, scale, a)
    else:
        codes, gradient = grad_z, grad_z @ fields.transpose(0, 2, 1)
        dots = radial_dots(codes, z)
    numpy.testing.assert_allclose(dots, ((raw * scale) * gradient).sum(-1), rtol=1e-12)
    velocity = rng.standard_normal(raw.shape)
    summed = [raw.copy(), velocity.copy(), scale[..., 0].copy()]
    unit_rows_sgd(summed[0], summed[1], gradient, summed[2], 0.01, 0.9, refresh_norms=True)
    unit_rows_sgd(raw, velocity, gradient, scale[..., 0], 0.01, 0.9, refresh_norms=True, row_dots=dots)
    for mine, theirs in zip((raw, velocity, scale[..., 0]), summed):
        numpy.testing.assert_allclose(mine, theirs, rtol=1e-12)


@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_a_step_leaves_the_next_steps_operands_in_the_state(precision, tmp_path, monkeypatch):
    """After an update the tile state holds 1/||U|| and U's operand for the next forward pass, equal to those made
    afresh from the new weights (in bfloat16 the operand is the high half of the split weights,
    dasksae.master_weights); a checkpoint does not store them, and stores U whole; without them the same loss comes
    out."""
    import zarr

    from dasksae import master_weights

    monkeypatch.setattr(master_weights, "SPLIT_MASTER", True)  # (DASKSAE_SPLIT_MASTER=1)
    config = named_config("tiny")
    batch = numpy.random.default_rng(3).standard_normal(config.input_shape + (8,)).astype("float32")
    network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype=precision)
    network.step(batch, 1e-2, 0.9)
    state = network.state[0].parts[(0, 0)].value  # LocalExecutor: handles hold the values
    weights = master_weights.master(state)
    assert numpy.allclose(state["_encoder_inverse_norms"], inverse_row_norms(weights), rtol=1e-6)
    assert master_weights.is_split(state) == (precision == "bfloat16")
    if precision == "bfloat16":
        assert "encoder" not in state and master_weights.DERIVED_COPY not in state
        assert numpy.array_equal(state["encoder_high"], master_weights.split(weights)[0])
    elif precision != "float32":
        assert numpy.array_equal(state[f"_encoder_operand_{precision}"], operand(weights, precision))
    path = network.save(tmp_path / "run")
    stored = [name for name, _ in zarr.open_group(str(path), mode="r")["stage1"].arrays()]
    assert "encoder" in stored and not [name for name in stored if name.startswith("_") or "_high" in name
                                        or "_low" in name]
    numpy.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["stage1/encoder"][...], weights)
    cached = network.step(batch, 1e-2, 0.9).loss
    fresh = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype=precision)
    fresh.step(batch, 1e-2, 0.9)
    for part in fresh.state:
        for key in [k for k in part.parts[(0, 0)].value if k.startswith("_")]:
            del part.parts[(0, 0)].value[key]
    assert fresh.step(batch, 1e-2, 0.9).loss == pytest.approx(cached, rel=1e-6)


@pytest.mark.parametrize("precision,tolerance", [("tf32", 1e-4), ("bfloat16", 1e-3)])
def test_reduced_precision_training_follows_float32(precision, tolerance):
    """Five joint steps with tf32 or bfloat16 products (float32 master weights) give float32's losses
    within the stated tolerance (relative); the weights stay float32."""
    config = named_config("tiny")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(5)]
    reference = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="float32")
    reduced = TiledNetwork(config, "2x1", executor=LocalExecutor(), seed=1, dtype=precision)
    expected = numpy.array([reference.step(x, 1e-3, 0.9).loss for x in batches])
    got = numpy.array([reduced.step(x, 1e-3, 0.9).loss for x in batches])
    relative = numpy.abs(got - expected) / numpy.abs(expected)
    assert relative.max() < tolerance, relative
    assert relative.max() > 0  # the products really were rounded
    assert reduced.parameters()[0]["encoder"].dtype == numpy.float32


def test_unknown_dtype_is_refused_in_one_sentence():
    assert split_dtype("bfloat16") == (numpy.dtype("float32"), "bfloat16")
    with pytest.raises(ConfigError, match="use one of float32, float64, tf32, bfloat16"):
        TiledNetwork(named_config("tiny"), "1x1", executor=LocalExecutor(), dtype="float16")


def test_operands_never_round_the_callers_array(rng):
    weights = rng.standard_normal((4, 5)).astype(numpy.float32)
    kept = weights.copy()
    for precision in ("tf32", "bfloat16"):
        assert not numpy.array_equal(operand(weights, precision), weights)
    assert numpy.array_equal(weights, kept)


@pytest.mark.parametrize("scaled", [False, True])
def test_block_rows_and_back(scaled):
    """Block rows of a map are its block view's rows (times the row scales), a new array; writing them back restores the map."""
    from dasksae.kernels.local_filter import block_rows, block_view, write_block_rows

    rng = numpy.random.default_rng(5)
    output_map = rng.standard_normal((4 * 2, 3 * 3, 2, 5)).astype("float32")
    scale = rng.uniform(0.5, 2, (4, 3, 2 * 3 * 2)).astype("float32") if scaled else None
    rows = block_rows(output_map, 2, 3, scale)
    view = block_view(output_map, 2, 3).reshape(12, 12, 5)
    assert numpy.allclose(rows, view * (1 if scale is None else scale.reshape(12, 12, 1)), rtol=1e-6)
    assert not numpy.shares_memory(rows, output_map)
    restored = numpy.zeros_like(output_map)
    write_block_rows(restored, rows, 2, 3, None if scale is None else 1 / scale)
    assert numpy.allclose(restored, output_map, rtol=1e-5)
    assert numpy.array_equal(block_rows(output_map, 2, 3, scale, "bfloat16"), operand(rows, "bfloat16"))


def test_gemm_tuning_is_opt_in_and_reads_alignments_right(monkeypatch):
    """cuBLASLt tuning runs only with DASKSAE_GEMM=tuned (decided before CuPy is touched), and the alignment
    its candidates must accept is the largest power of two up to 256 dividing the pointer and every stride."""
    from dasksae.kernels import tuned_gemm

    monkeypatch.delenv("DASKSAE_GEMM", raising=False)
    assert not tuned_gemm.enabled()
    monkeypatch.setenv("DASKSAE_GEMM", "cublas")
    assert not tuned_gemm.enabled()
    assert tuned_gemm._alignment(4096, 384 * 4, 96 * 4) == 128
    assert tuned_gemm._alignment(4096 + 96 * 4, 192 * 4) == 128
    assert tuned_gemm._alignment(4096 + 40 * 2, 80 * 2) == 16
    assert tuned_gemm._alignment(1 << 20, 1 << 12) == 256
    assert tuned_gemm._alignment(4100, 4096) == 4


@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_the_tensor_core_update_trains_as_the_gathered_bfloat16_path(monkeypatch, objective):
    """DASKSAE_TENSOR_CORE_UPDATE=1 (the default): the bfloat16 backward takes the tied decoder's update with its weight
    gradient from the maps (on NumPy in array code, so that its plumbing runs here: no X fields gathered, the row
    dots from the bfloat16 codes, the chunk's rows, velocity, operand copy and norms handed over) and trains as the
    gathered path (``=0``) does to bfloat16's rounding of the row dots, on 2x1 tiles; the untied Le 2012 never
    takes it."""
    from dasksae.kernels import local_filter, mma_update

    config = dataclasses.replace(named_config("tiny"), objective=objective)
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(3)]

    def trained(tensor_cores: bool):
        monkeypatch.setattr(mma_update, "TENSOR_CORE_UPDATE", tensor_cores)
        network = TiledNetwork(config, "2x1", executor=LocalExecutor(), seed=1, dtype="bfloat16")
        losses = [network.step(x, 1e-3, 0.9).loss for x in batches]
        return numpy.array(losses), network.parameters(), network.velocity()

    taken, gathered = [], []
    monkeypatch.setattr(local_filter, "update_with_tensor_cores",
                        lambda *args, _run=local_filter.update_with_tensor_cores: taken.append(1) or _run(*args))
    import dasksae.tile_ops as tile_ops

    monkeypatch.setattr(tile_ops, "update_with_tensor_cores", local_filter.update_with_tensor_cores)
    monkeypatch.setattr(tile_ops, "gather_patches",
                        lambda x, *args, _run=tile_ops.gather_patches, **kw: gathered.append(x.shape) or _run(x, *args, **kw))
    expected_losses, expected_parameters, expected_velocity = trained(False)
    gathered_by_default = len(gathered)
    assert not taken
    losses, parameters, velocity = trained(True)
    if objective == "le2012":
        assert not taken and len(gathered) == 2 * gathered_by_default
        numpy.testing.assert_array_equal(losses, expected_losses)
        return
    assert taken and len(gathered) - gathered_by_default < gathered_by_default  # the X halves were not gathered
    # to 1e-4: the row dots' bfloat16 rounding, where the CPU's BLAS kernel (its summation order, chosen for the CPU
    # at run time) moves a value across a rounding step, changes the third step's loss by 1.3e-5 on an AVX-512 CPU
    numpy.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    # the weights to 1e-4 of their largest, the velocities (the steps, where the row dots' rounding shows most) to 2%
    for tolerance, mine_all, theirs_all in ((1e-4, parameters, expected_parameters), (2e-2, velocity, expected_velocity)):
        for mine, theirs in zip(mine_all, theirs_all):
            for name in mine:
                assert numpy.abs(mine[name] - theirs[name]).max() < tolerance * numpy.abs(theirs[name]).max(), name


def test_the_tensor_core_kernels_take_the_minibatches_their_switch_says(monkeypatch):
    """DASKSAE_TENSOR_CORE_FORWARD / _TRANSPOSE: ``auto`` (the default) takes whole 96s only (on an H200 a part-full
    last tile of 96 columns lost to cuBLAS, whole tiles won or tied), ``1`` any whole 8s, ``0`` none; a value
    outside these is refused in one sentence naming the choices."""
    from dasksae.kernels.mma_forward import minibatch_on_tensor_cores
    from dasksae.switches import SWITCHES, SwitchError, switch

    assert SWITCHES["DASKSAE_TENSOR_CORE_FORWARD"][1] == SWITCHES["DASKSAE_TENSOR_CORE_TRANSPOSE"][1] == "auto"
    assert [batch for batch in (8, 96, 128, 192, 512, 576) if minibatch_on_tensor_cores("auto", batch)] == [96, 192, 576]
    assert [batch for batch in (8, 96, 100, 128, 512) if minibatch_on_tensor_cores("1", batch)] == [8, 96, 128, 512]
    assert not any(minibatch_on_tensor_cores("0", batch) for batch in (8, 96, 512))
    monkeypatch.setenv("DASKSAE_TENSOR_CORE_FORWARD", "yes")
    with pytest.raises(SwitchError, match="must be auto, 1 or 0"):
        switch("DASKSAE_TENSOR_CORE_FORWARD")


def test_the_update_takes_wgmma_where_the_card_and_the_codes_allow(monkeypatch):
    """DASKSAE_WGMMA_UPDATE=1 (the default): on a card that runs ``wgmma`` (here said to), under
    ``DASKSAE_MMA_EPILOGUE=auto``, codes in whole 64s (2M at M=96) take ``rows-wide-wgmma`` at any channel count;
    codes of 96 (M=96 without the error map), ``=0``, an epilogue asked for by name, the cache hints, or a card without
    ``wgmma`` keep ``mma.sync``'s variants."""
    from dasksae.kernels import mma_update, wgmma

    monkeypatch.setattr(wgmma, "supported", lambda: True)
    assert [mma_update.default_variant(channels, 192) for channels in (3, 8)] == ["rows-wide-wgmma"] * 2
    assert mma_update.default_variant(8, 96) == "rows"
    assert mma_update.wgmma_or_rows("rows-wide-wgmma", 96) == "rows-wide"
    monkeypatch.setattr(mma_update, "CACHE_HINTS", True)
    assert mma_update.default_variant(8, 192) == "rows-cs"
    monkeypatch.setattr(mma_update, "CACHE_HINTS", False)
    monkeypatch.setattr(mma_update, "EPILOGUE", "fragments")
    assert mma_update.default_variant(8, 192) == "fragments"
    monkeypatch.setattr(mma_update, "EPILOGUE", "auto")
    monkeypatch.setattr(mma_update, "WGMMA_UPDATE", "0")
    assert mma_update.default_variant(3, 192) == "rows-wide"
    monkeypatch.setattr(mma_update, "WGMMA_UPDATE", "1")
    monkeypatch.setattr(wgmma, "supported", lambda: False)
    assert mma_update.default_variant(8, 192) == "rows"


def test_the_float32_update_takes_wgmma_for_three_terms_where_the_card_allows(monkeypatch):
    """DASKSAE_FLOAT32_WGMMA_UPDATE=auto (the default since session 48): on a card that runs ``wgmma`` (here said to)
    the float32 update (three TF32 terms) takes ``rows-wide-wgmma``, tf32's (one term) ``mma.sync``'s ``rows-wide``;
    ``1`` takes ``wgmma`` for both, ``0`` for neither, and a card without ``wgmma`` keeps ``rows-wide``."""
    from dasksae.kernels import mma_float32, mma_update, wgmma
    from dasksae.switches import SWITCHES

    assert SWITCHES["DASKSAE_FLOAT32_WGMMA_UPDATE"] == (("auto", "1", "0"), "auto")
    monkeypatch.setattr(wgmma, "supported", lambda: True)
    for setting, expected in (("auto", ["rows-wide-wgmma", "rows-wide"]), ("1", ["rows-wide-wgmma"] * 2),
                              ("0", ["rows-wide"] * 2)):
        monkeypatch.setattr(mma_float32, "WGMMA_UPDATE", setting)
        assert [mma_float32.update_variant(terms) for terms in (3, 1)] == expected, setting
    assert mma_update.SPLIT_VARIANT == "rows-wide" and "rows-wide-wgmma" in mma_update.SPLIT_VARIANTS
    monkeypatch.setattr(wgmma, "supported", lambda: False)
    monkeypatch.setattr(mma_float32, "WGMMA_UPDATE", "1")
    assert mma_float32.update_variant(3) == "rows-wide"


def _float32_variants_taken(monkeypatch, switch_name: str, variant_for, settings) -> dict:
    """``{setting: (variant_for(3), variant_for(1))}``: the variants three terms (float32) and one (tf32) take with
    ``mma_float32.switch_name`` at each setting."""
    from dasksae.kernels import mma_float32

    taken = {}
    for setting in settings:
        monkeypatch.setattr(mma_float32, switch_name, setting)
        taken[setting] = (variant_for(3), variant_for(1))
    return taken


def test_the_float32_forward_takes_wgmma_only_when_asked_and_the_card_allows(monkeypatch):
    """DASKSAE_FLOAT32_WGMMA_FORWARD: ``auto`` (the default since session 49) takes ``w32-a-registers-hoisted`` (since
    session 53) for float32 (three terms) and ``mma.sync``'s split (``k32x3``) for tf32 (one) on a card that runs
    ``wgmma`` (here said to); ``1`` takes ``w32-a-registers-hoisted`` for both, a variant's name that variant, ``0``
    ``k32x3``; a card without ``wgmma`` ``k32x3`` whatever the switch; ``w32-split-2``'s launch asks for two stages of
    four tiles, ``w32-a-registers-hoisted``'s for two of B's two."""
    from dasksae.kernels import mma_float32, mma_forward, wgmma
    from dasksae.switches import SWITCHES

    assert SWITCHES["DASKSAE_FLOAT32_WGMMA_FORWARD"] == (
        ("auto", "1", "0", "w32-split-2", "w32-a-registers-hoisted"), "auto")
    monkeypatch.setattr(wgmma, "supported", lambda: True)
    assert _float32_variants_taken(monkeypatch, "WGMMA_FORWARD", mma_float32.forward_variant,
                                   ("auto", "1", "w32-split-2", "0")) == {
        "auto": ("w32-a-registers-hoisted", "k32x3"), "1": ("w32-a-registers-hoisted", "w32-a-registers-hoisted"),
        "w32-split-2": ("w32-split-2", "w32-split-2"), "0": ("k32x3", "k32x3")}
    monkeypatch.setattr(wgmma, "supported", lambda: False)
    assert set(_float32_variants_taken(monkeypatch, "WGMMA_FORWARD", mma_float32.forward_variant,
                                       ("auto", "1", "w32-split-2")).values()) == {("k32x3", "k32x3")}
    assert mma_forward.shared_bytes("w32-split-2", split_tf32=True) == 2 * 2 * (128 + 96) * 32 * 4
    assert mma_forward.shared_bytes("w32-a-registers-hoisted", split_tf32=True) == 2 * 2 * 96 * 32 * 4  # (B only)


def test_the_float32_transpose_takes_wgmma_only_when_asked_and_the_card_allows(monkeypatch):
    """DASKSAE_FLOAT32_WGMMA_TRANSPOSE: ``auto`` (the default since session 49) takes ``w32-a-registers-hoisted``
    (since session 53) for float32 (three terms) and ``mma.sync``'s split (``k32x3``) for tf32 on a card that runs
    ``wgmma`` (here said to), at cells of 128 values; ``1`` both on it; ``all`` also at the first stage's cells of 48
    (else the SIMT product and fold), on CuPy only; ``0`` ``k32x3``; a card without ``wgmma`` ``k32x3``.
    ``w32-split-2``'s launch asks for two stages of four float32 tiles (the cell's 128 values and y's 96 columns, two
    terms each), ``w32-a-registers-hoisted``'s for two of y's two."""
    from dasksae.kernels import mma_float32, mma_transpose, wgmma
    from dasksae.switches import SWITCHES

    assert SWITCHES["DASKSAE_FLOAT32_WGMMA_TRANSPOSE"] == (
        ("auto", "1", "all", "0", "w32-split-2", "w32-a-registers-hoisted"), "auto")
    monkeypatch.setattr(wgmma, "supported", lambda: True)
    monkeypatch.setattr(mma_float32, "FLOAT32_TENSOR_CORES", "1")
    cupy_module = type(numpy)("cupy")
    assert _float32_variants_taken(monkeypatch, "WGMMA_TRANSPOSE", mma_float32.transpose_variant,
                                   ("auto", "0", "w32-split-2", "1")) == {
        "auto": ("w32-a-registers-hoisted", "k32x3"), "0": ("k32x3", "k32x3"),
        "w32-split-2": ("w32-split-2", "w32-split-2"), "1": ("w32-a-registers-hoisted", "w32-a-registers-hoisted")}
    # cells of 128 values (8 channels at step 4) on tensor cores, the first stage's 48 (3 at 4) only with "all"
    assert mma_float32.transpose_on_tensor_cores(cupy_module, "float32", 8, 4)
    assert not mma_float32.transpose_on_tensor_cores(cupy_module, "float32", 3, 4)
    monkeypatch.setattr(mma_float32, "WGMMA_TRANSPOSE", "all")
    assert mma_float32.transpose_variant() == "w32-a-registers-hoisted"
    assert mma_float32.transpose_on_tensor_cores(cupy_module, "float32", 3, 4)
    assert not mma_float32.transpose_on_tensor_cores(numpy, "float32", 3, 4)
    monkeypatch.setattr(wgmma, "supported", lambda: False)
    assert mma_float32.transpose_variant() == "k32x3"
    assert not mma_float32.transpose_on_tensor_cores(cupy_module, "float32", 3, 4)
    assert mma_transpose.shared_bytes("w32-split-2", split_tf32=True) == 2 * 2 * (128 + 96) * 32 * 4
    assert mma_transpose.shared_bytes("w32-a-registers-hoisted", split_tf32=True) == 2 * 2 * 96 * 32 * 4  # (y only)


def test_the_wgmma_switches_name_their_kernels_variants(monkeypatch):
    """DASKSAE_WGMMA_FORWARD: ``1`` (the default: ``w64x3-swizzled``, session 42) or ``0``, or a variant of the
    forward's ``wgmma`` tiles by name; DASKSAE_WGMMA_TRANSPOSE and DASKSAE_WGMMA_UPDATE likewise ``1`` (session 43; the update's variant leaves codes not in whole 64s to ``rows-wide``); a variant name the
    forward does not have is refused in one sentence; TF32 ``wgmma`` takes no transposed operand."""
    from dasksae.kernels import mma_forward, mma_transpose, mma_update, wgmma
    from dasksae.switches import SWITCHES, SwitchError, switch

    choices, default = SWITCHES["DASKSAE_WGMMA_FORWARD"]
    assert default == "1" and set(choices) == {"0", "1"} | set(mma_forward.WGMMA_VARIANTS)
    assert mma_forward.WGMMA_VARIANT in mma_forward.WGMMA_VARIANTS
    assert mma_transpose.WGMMA_VARIANT in mma_transpose.WGMMA_VARIANTS
    choices, default = SWITCHES["DASKSAE_WGMMA_TRANSPOSE"]
    assert default == "1" and set(choices) == {"0", "1"} | set(mma_transpose.WGMMA_VARIANTS)
    choices, default = SWITCHES["DASKSAE_WGMMA_UPDATE"]
    assert default == "1" and {"0", "1", mma_update.WGMMA_VARIANT} <= set(choices)
    for name in set(choices) - {"0", "1"}:  # each a wgmma variant of the update, leaving codes not in whole 64s to
        assert mma_update.EPILOGUE_VARIANTS[name].get("WGMMA")  # rows-wide (session 45's bulk variants too)
        assert mma_update.wgmma_or_rows(name, 96) == "rows-wide"
    assert mma_transpose.variant_for(64, "w64x3-swizzled") == "w64x3-swizzled"
    assert mma_transpose.variant_for(96, "w64x3-swizzled") == "k32x4"  # rows not in whole 64s keep mma.sync's tiles
    monkeypatch.setenv("DASKSAE_WGMMA_FORWARD", "w64x3")
    with pytest.raises(SwitchError, match="DASKSAE_WGMMA_FORWARD"):
        switch("DASKSAE_WGMMA_FORWARD")
    with pytest.raises(ValueError, match="takes no transposed operand"):
        wgmma.wgmma_statement(96, 8, "tf32.tf32", transpose_b=True)
    assert ", 1, 1;" in wgmma.wgmma_statement(96, 16, "bf16.bf16", transpose_b=True, transpose_a=True)


def test_the_update_epilogue_is_chosen_by_the_input_channels(monkeypatch):
    """DASKSAE_MMA_EPILOGUE: ``auto`` (the default) takes ``rows-wide`` for an image's 3 channels (faster on the
    H200 there) and ``rows`` for 8 (faster there); a named variant is taken everywhere; anything else is refused."""
    from dasksae.kernels.mma_update import EPILOGUE_VARIANTS, epilogue_for
    from dasksae.switches import SWITCHES, SwitchError, switch

    assert SWITCHES["DASKSAE_MMA_EPILOGUE"][1] == "auto"
    assert [epilogue_for("auto", channels) for channels in (1, 3, 7, 8, 64)] == ["rows-wide"] * 3 + ["rows"] * 2
    assert {epilogue_for(variant, channels) for variant in ("rows", "fragments") for channels in (3, 8)} == {
        "rows", "fragments"}
    assert all(choice in EPILOGUE_VARIANTS for choice in SWITCHES["DASKSAE_MMA_EPILOGUE"][0] if choice != "auto")
    monkeypatch.setenv("DASKSAE_MMA_EPILOGUE", "wide")
    with pytest.raises(SwitchError, match="must be auto, rows, rows-wide, fragments, rows-144 or rows-overlap"):
        switch("DASKSAE_MMA_EPILOGUE")


def test_cache_hints_take_the_streaming_twin_of_a_rows_epilogue(monkeypatch):
    """DASKSAE_UPDATE_CACHE_HINTS=1: ``rows`` and ``rows-wide`` (as ``auto`` picks them, or named) become their
    cache-streaming ``-cs`` variants, which differ from them only in that; ``fragments`` has none and stays."""
    from dasksae.kernels import mma_update

    monkeypatch.setattr(mma_update, "CACHE_HINTS", True)
    assert [mma_update.epilogue_for("auto", channels) for channels in (3, 8)] == ["rows-wide-cs", "rows-cs"]
    assert mma_update.epilogue_for("fragments", 8) == "fragments"
    for variant in ("rows", "rows-wide"):
        assert mma_update.EPILOGUE_VARIANTS[variant + "-cs"] == {**mma_update.EPILOGUE_VARIANTS[variant], "STREAMING": 1}
        assert "STREAMING 1" in mma_update.mma_update_source(variant + "-cs")
    monkeypatch.setattr(mma_update, "CACHE_HINTS", False)
    assert [mma_update.epilogue_for("auto", channels) for channels in (3, 8)] == ["rows-wide", "rows"]
