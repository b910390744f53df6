"""Split master weights (dasksae.master_weights): float32 weights kept as their bfloat16 operand and a low half.

The halves give back every bit of the weights; the high half is the weights rounded to nearest with ties away from
zero; a bfloat16 network keeps its weights split between steps and trains as one that keeps them whole; whatever
leaves the step (parameters, a Dask array of the weights, checkpoints) has them whole; tiles on worker processes
keep them split on their workers.
"""

import numpy
import pytest

from dasksae import master_weights, named_config
from dasksae.kernels.gemm import operand
from dasksae.tile_array import LocalExecutor
from dasksae.tiled_network import TiledNetwork


def awkward_weights(rng) -> numpy.ndarray:
    """float32 values of many magnitudes and both signs, with the cases a split can get wrong: exact ties (low 16
    bits 0x8000) with even and odd high halves, values that round up across a power of two, zeros, subnormals, the
    largest finite value, infinities."""
    values = [rng.standard_normal(4096) * scale for scale in (1e-30, 1e-3, 1.0, 1e3, 1e30)]
    bits = rng.integers(0, 2**32, 4096, dtype=numpy.uint64).astype(numpy.uint32)
    ties = (bits & numpy.uint32(0xFFFF0000)) | numpy.uint32(0x8000)
    special = numpy.array([0x00000000, 0x80000000, 0x00000001, 0x80008000, 0x007FFFFF, 0x3F7FFFFF, 0x3F7F8000,
                           0xBF7F8000, 0x3F808000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000], numpy.uint32)
    finite = [ties.view(numpy.float32)[numpy.isfinite(ties.view(numpy.float32))], special.view(numpy.float32)]
    return numpy.concatenate([v.astype(numpy.float32) for v in values] + finite)


def test_the_halves_give_back_every_bit(rng):
    """``join(split(w))`` is ``w`` bit for bit, from NumPy's high half (float32 values) and from the ``uint16`` bits
    CuPy's kernels read; written into given arrays, the same halves."""
    weights = awkward_weights(rng)
    high, low = master_weights.split(weights)
    assert high.dtype == numpy.float32 and low.dtype == numpy.uint16
    assert not (high.view(numpy.uint32) & numpy.uint32(0xFFFF)).any()  # bfloat16 values
    numpy.testing.assert_array_equal(master_weights.join(high, low).view(numpy.uint32), weights.view(numpy.uint32))
    bits = (high.view(numpy.uint32) >> 16).astype(numpy.uint16)
    numpy.testing.assert_array_equal(master_weights.join(bits, low).view(numpy.uint32), weights.view(numpy.uint32))
    into_high, into_low = numpy.empty_like(high), numpy.empty_like(low)
    master_weights.split(weights, into_high, into_low)
    numpy.testing.assert_array_equal(into_high, high)
    numpy.testing.assert_array_equal(into_low, low)
    with pytest.raises(TypeError, match="float32"):
        master_weights.split(weights.astype(numpy.float64))


def test_the_high_half_is_the_weights_rounded_to_nearest_ties_away(rng):
    """The high half is the nearer of the two bfloat16 values around ``w`` (in float64), the larger in magnitude on
    an exact tie; elsewhere it is the round-to-nearest-even operand the products took before the split."""
    weights = awkward_weights(rng)
    weights = weights[numpy.isfinite(weights) & (numpy.abs(weights) < 3e38)]
    high = master_weights.split(weights)[0].astype(numpy.float64)
    bits = weights.view(numpy.uint32)
    below = (bits & numpy.uint32(0xFFFF0000)).view(numpy.float32).astype(numpy.float64)  # toward zero
    above = ((bits & numpy.uint32(0xFFFF0000)) + numpy.uint32(0x10000)).view(numpy.float32).astype(numpy.float64)
    exact = weights.astype(numpy.float64)
    tie = (bits & numpy.uint32(0xFFFF)) == 0x8000
    nearer = numpy.where(numpy.abs(exact - below) < numpy.abs(above - exact), below, above)
    numpy.testing.assert_array_equal(high, numpy.where(tie, above, nearer))
    assert tie.sum() > 1000
    even = operand(weights, "bfloat16").astype(numpy.float64)
    numpy.testing.assert_array_equal(high[~tie], even[~tie])
    assert (high[tie] != even[tie]).any()  # (ties to even differ where the high half below is even)


def test_a_state_is_split_used_and_exported_whole(rng):
    """:func:`split_state` replaces ``encoder`` and its bfloat16 copy by the halves (the copy's array reused);
    :func:`master`, :func:`master_rows` and :func:`exported` give the weights whole; rows stepped through
    :func:`master_rows` land in the halves."""
    weights = rng.standard_normal((3, 4, 8)).astype(numpy.float32)
    copy = operand(weights, "bfloat16")
    state = {"encoder": weights.copy(), "encoder_velocity": numpy.zeros_like(weights),
             master_weights.DERIVED_COPY: copy, "_encoder_inverse_norms": numpy.ones((3, 4), numpy.float32)}
    master_weights.split_state(state)
    assert master_weights.is_split(state) and "encoder" not in state and master_weights.DERIVED_COPY not in state
    assert state["encoder_high"] is copy
    assert master_weights.weights_shape(state) == weights.shape
    numpy.testing.assert_array_equal(master_weights.master(state), weights)
    with master_weights.master_rows(state, 1, 2) as rows:
        rows += 1.0
    expected = weights.copy()
    expected[1:2] += 1.0
    numpy.testing.assert_array_equal(master_weights.master(state), expected)
    numpy.testing.assert_array_equal(state["encoder_high"][1], master_weights.split(expected[1])[0])
    out = master_weights.exported(state)
    assert sorted(out) == ["_encoder_inverse_norms", "encoder", "encoder_velocity"]
    numpy.testing.assert_array_equal(out["encoder"], expected)
    numpy.testing.assert_array_equal(master_weights.pick_entry(state, "encoder"), expected)
    assert master_weights.is_split(state)  # exporting leaves the state as it was
    whole = {"encoder": weights, "encoder_velocity": weights}
    assert master_weights.exported(whole) is whole


def _batches(config, count, seed=3):
    data = numpy.random.default_rng(seed)
    return [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(count)]


def _states(network):
    return [part.value for stage in network.state for part in stage.parts.values()]  # LocalExecutor: the values


def _without_ties(params):
    """``params`` with every weight whose low 16 bits are exactly ``0x8000`` moved one float32 step away from the
    tie: there the split's high half (ties away from zero) and the whole weights' bfloat16 copy (ties to even) may
    differ, and nowhere else."""
    out = []
    for entry in params:
        entry = {name: numpy.array(value) for name, value in entry.items()}
        bits = entry["encoder"].view(numpy.uint32)
        bits[(bits & numpy.uint32(0xFFFF)) == 0x8000] += numpy.uint32(1)
        out.append(entry)
    return out


@pytest.mark.parametrize("tiles", ["1x1", "2x1"])
def test_a_bfloat16_network_keeps_its_weights_split_and_trains_as_with_them_whole(monkeypatch, tiles):
    """bfloat16 steps with the weights split (``DASKSAE_SPLIT_MASTER=1``) and whole (the default) from the same
    weights with no exact ties: the first step's loss and new weights bit for bit (the same float32 arithmetic on the
    same values); four steps' losses within 1e-4 and weights within 1e-4 of their largest (a step's new weights
    hold a few exact ties, about 8 of tiny's 540k a step, whose bfloat16 operands then differ by one bfloat16 step;
    bfloat16 itself is 1e-3 from float32).  The split network's tile states hold the halves and no whole weights;
    float32 keeps them whole."""
    from dasksae.reference import init_params

    config = named_config("tiny")
    batches = _batches(config, 4)
    params = _without_ties(init_params(config, seed=1))

    def trained(split: bool, steps: int, dtype="bfloat16"):
        monkeypatch.setattr(master_weights, "SPLIT_MASTER", split)
        network = TiledNetwork(config, tiles, executor=LocalExecutor(), params=params, dtype=dtype)
        losses = numpy.array([network.step(x, 1e-2, 0.9).loss for x in batches[:steps]])
        return network, losses

    whole, whole_losses = trained(False, 1)
    split, split_losses = trained(True, 1)
    assert all(master_weights.is_split(state) and "encoder" not in state for state in _states(split))
    assert not any(master_weights.is_split(state) for state in _states(whole))
    numpy.testing.assert_array_equal(split_losses, whole_losses)
    for mine, theirs in zip(split.parameters(), whole.parameters()):
        assert mine["encoder"].dtype == numpy.float32
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])
    (whole, whole_losses), (split, split_losses) = trained(False, 4), trained(True, 4)
    numpy.testing.assert_allclose(split_losses, whole_losses, rtol=1e-4)
    for mine, theirs in zip(split.parameters(), whole.parameters()):
        assert numpy.abs(mine["encoder"] - theirs["encoder"]).max() < 1e-4 * numpy.abs(theirs["encoder"]).max()
    float32, _ = trained(True, 1, "float32")
    assert not any(master_weights.is_split(state) for state in _states(float32))


def test_split_weights_leave_the_step_whole_and_come_back_from_a_checkpoint(tmp_path, monkeypatch):
    """A split bfloat16 network's parameters, its weights as a Dask array (in this process) and its checkpoint are the
    joined halves, bit for bit; a network loaded from the checkpoint splits them again and goes on as the saved one
    does."""
    monkeypatch.setattr(master_weights, "SPLIT_MASTER", True)
    config = named_config("tiny")
    batches = _batches(config, 3)
    network = TiledNetwork(config, "2x1", executor=LocalExecutor(), seed=1, dtype="bfloat16")
    network.step(batches[0], 1e-2, 0.9)
    parameters = network.parameters()
    for k, stage in enumerate(network.state):
        assert all(master_weights.is_split(part.value) for part in stage.parts.values())
        joined = {tile: master_weights.master(part.value) for tile, part in stage.parts.items()}
        numpy.testing.assert_array_equal(network.weights(k).compute(), parameters[k]["encoder"])
        for tile, (rows, cols) in stage.windows.items():
            numpy.testing.assert_array_equal(parameters[k]["encoder"][rows[0]:rows[1], cols[0]:cols[1]], joined[tile])
    path = network.save(tmp_path / "run")
    loaded = TiledNetwork.load(path, executor=LocalExecutor(), precision="bfloat16")
    for mine, theirs in zip(loaded.parameters(), parameters):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])
    for x in batches[1:]:
        assert loaded.step(x, 1e-2, 0.9).loss == pytest.approx(network.step(x, 1e-2, 0.9).loss, rel=1e-6)
    assert all(master_weights.is_split(state) for state in _states(loaded))


def test_tiles_on_worker_processes_keep_their_weights_split_there(monkeypatch):
    """bfloat16 SPMD steps of 2x2 tiles on a LocalCluster of worker processes started with
    ``DASKSAE_SPLIT_MASTER=1``: each tile's state on its worker holds the halves, the network trains as the same
    tiles in one process do (graph execution), and its weights as a Dask array are its parameters."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(master_weights, "SPLIT_MASTER", True)  # (this process's tiles)
    config = named_config("tiny")
    batches = _batches(config, 3)
    local = TiledNetwork(config, "2x2", executor=LocalExecutor(), seed=1, dtype="bfloat16")
    expected = [local.step(x, 1e-2, 0.9).loss for x in batches]
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB", env={"DASKSAE_SPLIT_MASTER": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        network = TiledNetwork(config, "2x2", client, seed=1, dtype="bfloat16")
        assert network.execution == "spmd"
        losses = [report.loss for report in network.steps(batches, 1e-2, 0.9)]
        numpy.testing.assert_allclose(losses, expected, rtol=1e-6)
        executor = network.executor
        split = executor.gather([executor.run(tile, master_weights.is_split, handle, name="is-split")
                                 for stage in network.state for tile, handle in stage.parts.items()])
        assert all(split) and len(split) == 4 * len(config.stages)
        parameters = network.parameters()
        for k, (mine, theirs) in enumerate(zip(parameters, local.parameters())):
            numpy.testing.assert_allclose(mine["encoder"], theirs["encoder"], rtol=1e-6, atol=1e-7)
            numpy.testing.assert_array_equal(network.weights(k).compute(), mine["encoder"])  # joined on the workers
