"""A tile's SPMD step recorded once and replayed (dasksae.tile_program): the same training, less bookkeeping."""

import distributed
import numpy
import pytest

from dasksae import TiledNetwork, tile_program
from dasksae.tile_program import _CONSTANT, _RECEIVED, _SLOT, TileProgram, is_array
from dasksae.tiling import TileGrid
from test_tiling import UNEVEN


class _FakeExecutor:
    """What a replay needs of an SpmdExecutor: a step id, sends, and a mailbox."""

    def __init__(self, step_id, inbox):
        self.step_id, self.timeout, self.abort_tag = step_id, 1.0, "abort"
        self.sent = []
        self._inbox = inbox

    def _send(self, tile, tag, values):
        self.sent.append((tile, tag, values))

    def receive(self, tag):
        return self._inbox.pop(tag)


def test_a_program_replays_calls_and_messages_in_order_and_drops_registers_after_their_last_reader():
    program = TileProgram()
    x = program.register()
    program.inputs["x"] = x
    added = program.register()
    program.call(lambda value, constant: value + constant, [(_SLOT, x), (_CONSTANT, 1)], [], added)
    program.send((0, 1), "add:(0, 0)>(0, 1):0", [added])
    product = program.register()
    program.call(lambda value, other: value * other, [(_SLOT, added), (_RECEIVED, None)], [("mul:(0, 1)>(0, 0):0", [1])], product)
    unread = program.register()
    program.call(lambda value: value, [(_SLOT, x)], [], unread)
    program.outputs["product"] = product
    program.finish()
    assert program._frees == [[], [], [added], [x, unread]]  # the output is kept; x is read last by the fourth
    executor = _FakeExecutor("step.3", {"step.3:mul:(0, 1)>(0, 0):0": [10]})
    assert program.replay(executor, {"x": 2}) == {"product": 30}
    assert executor.sent == [((0, 1), "step.3:add:(0, 0)>(0, 1):0", [3])]


def test_a_step_goes_on_from_an_operation_with_values_already_taken_from_the_mailbox():
    """What a step given up by the CUDA graphs does: the rest of the program from where it stopped, reusing the
    received values it took already (the mailbox no longer has them)."""
    program = TileProgram()
    x = program.register()
    program.inputs["x"] = x
    added, product = program.register(), program.register()
    program.call(lambda value: value + 1, [(_SLOT, x)], [], added)
    program.call(lambda value, other: value * other, [(_SLOT, added), (_RECEIVED, None)], [("mul", [1])], product)
    program.outputs["product"] = product
    program.finish()
    registers = [2, 3, None]  # x and the first call's result
    program.run(_FakeExecutor("step.4", {}), registers, start=1, taken=(1, [[10]]))
    assert registers[product] == 30 and registers[added] is None  # dropped after its last reader


def test_arrays_are_told_from_values_that_a_replay_may_reuse():
    assert is_array(numpy.zeros(3)) and is_array(("halo", [numpy.zeros(1)])) and is_array({"a": numpy.ones(2)})
    assert not is_array(numpy.float32(1.5)) and not is_array((1.0, "z", ((0, 4), (2, 6)))) and not is_array(None)


@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_replayed_steps_equal_steps_that_build_the_graph(monkeypatch, objective):
    """After a tile's first step its task replays the recorded program: the same losses and parameters, bit for
    bit, as building the graph every step, with several steps in a task and across tasks; every tile's program
    is replayable."""
    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (3,)) for _ in range(4)]
    replays = []
    replay_steps = tile_program.TileProgram.replay_steps

    def counted(self, *args, **kwargs):
        replays.append(1)
        return (yield from replay_steps(self, *args, **kwargs))

    monkeypatch.setattr(tile_program.TileProgram, "replay_steps", counted)
    outcomes = {}
    for replaying in (False, True):
        monkeypatch.setattr(tile_program, "REPLAY", replaying)
        tile_program.forget_all()
        outcomes[replaying] = _trained_on_four_threads(config, batches)
        if replaying:
            programs = list(tile_program._programs.values())
            assert len(programs) == 4 and all(p.replayable for p in programs), [p.reason for p in programs]
    assert len(replays) == 4 * 3  # each tile: steps 2 and 3 of the first task, and the second task's step
    _assert_the_same_training(outcomes[True], outcomes[False])


def _trained_on_four_threads(config, batches, tiles="2x2", dtype="float64", seed=3):
    """Losses and parameters of ``config`` (float64, seed 3) on 2x2 tiles over four worker threads (or ``tiles``
    over a worker thread each): all but the last of ``batches`` in one task, then the last in another."""
    workers = TileGrid.parse(config, tiles).count
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, tiles, client, seed=seed, dtype=dtype)
            losses = [r.loss for r in network.steps(batches[:-1], 1e-3, 0.9)] + [network.step(batches[-1], 1e-3, 0.9).loss]
            return losses, network.parameters()


def _assert_the_same_training(got, expected):
    """The same losses and parameters, bit for bit."""
    assert got[0] == expected[0]
    for mine, theirs in zip(got[1], expected[1]):
        for name, value in theirs.items():
            numpy.testing.assert_array_equal(mine[name], value, err_msg=name)


@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_the_one_tile_fused_step_replays_too(monkeypatch, objective):
    """A one-tile network's fused step (in-process, or one worker) records its step and replays it: the same
    losses and parameters, bit for bit, as building the graph every step."""
    from dasksae.tile_array import LocalExecutor

    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    data = numpy.random.default_rng(6)
    batches = [data.standard_normal(config.input_shape + (3,)) for _ in range(4)]
    outcomes = {}
    for replaying in (False, True):
        monkeypatch.setattr(tile_program, "REPLAY", replaying)
        tile_program.forget_all()
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=2, dtype="float64")
        losses = [network.step(x, 1e-3, 0.9).loss for x in batches]
        outcomes[replaying] = (losses, network.parameters())
        if replaying:
            programs = [p for key, p in tile_program._programs.items() if key[0] == "fused"]
            assert len(programs) == 1 and programs[0].replayable, [p.reason for p in programs]
    _assert_the_same_training(outcomes[True], outcomes[False])


def test_a_program_that_cannot_be_replayed_is_kept_empty_and_not_recorded_again():
    program = TileProgram()
    register = program.register()
    program.call(lambda value: value, [(_CONSTANT, numpy.zeros(3))], [], register)
    program.refuse("an array is a constant argument of test")
    tile_program.forget_all()
    tile_program.keep("key", program)
    kept = tile_program.lookup("key")
    assert kept is program and not kept.replayable and kept.operations == [] and "array" in kept.reason
    tile_program.forget_all()


def _negated(value):
    return -value


def _negated_all(*values):
    return [-value for value in values]


_negated.batched = _negated_all


def test_consecutive_calls_with_a_batched_form_become_one_call_and_replay_the_same(monkeypatch):
    """TileProgram.fuse (DASKSAE_FUSED_CUTS): calls of a function with a batched form, with only sends between them,
    become one batched call and a pick of each result; the sends follow in their order; a call that reads an
    earlier one's result, or takes a receipt, ends the run; the replay sends and returns what the unfused one does.
    Fusing twice changes nothing."""
    monkeypatch.setattr(tile_program, "FUSED_CUTS", False)  # finish() leaves the plain program unfused

    def recorded():
        program = TileProgram()
        x, y = program.register(), program.register()
        program.inputs.update(x=x, y=y)
        a, b, c, d, total = (program.register() for _ in range(5))
        program.call(_negated, [(_SLOT, x)], [], a)
        program.send((0, 1), "a", [a])
        program.call(_negated, [(_SLOT, y)], [], b)
        program.send((1, 0), "b", [b])
        program.call(_negated, [(_SLOT, a)], [], c)  # reads a: a run of its own
        program.call(_negated, [(_RECEIVED, None)], [("r", [0])], d)  # a receipt: not fused
        program.call(lambda *values: sum(values), [(_SLOT, b), (_SLOT, c), (_SLOT, d)], [], total)
        program.outputs["total"] = total
        return program

    def replayed(program):
        executor = _FakeExecutor("step.2", {"step.2:r": [7]})
        return program.replay(executor, {"x": 2, "y": 5}), executor.sent

    plain = recorded()
    plain.finish()
    fused = recorded()
    fused.fuse()
    fused.fuse()
    fused.finish()
    assert [op[1] for op in plain.operations if op[0] == 1].count(_negated) == 4
    kinds = [(op[0], op[1].__name__ if op[0] == 1 else op[2]) for op in fused.operations]
    assert kinds == [(1, "_negated_all"), (1, "_pick"), (1, "_pick"), (0, "a"), (0, "b"), (1, "_negated"),
                     (1, "_negated"), (1, "<lambda>")]
    assert replayed(fused) == replayed(plain) == ({"total": -5 + 2 - 7}, [((0, 1), "step.2:a", [-2]),
                                                                        ((1, 0), "step.2:b", [-5])])


@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_replayed_steps_with_fused_halo_cuts_equal_those_without(monkeypatch, objective):
    """DASKSAE_FUSED_CUTS=1: a tile's cuts for its neighbours are replayed as one call of ``cut_parts`` (one copy of
    the strips that are not contiguous): the same losses and parameters, bit for bit, as one call a cut, within a task
    and across tasks."""
    from dasksae.tile_array import cut_parts

    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (3,)) for _ in range(4)]
    outcomes = {}
    for fused in (False, True):
        monkeypatch.setattr(tile_program, "FUSED_CUTS", fused)
        tile_program.forget_all()
        outcomes[fused] = _trained_on_four_threads(config, batches)
        batched = sum(op[0] == 1 and op[1] is cut_parts for p in tile_program._programs.values() for op in p.operations)
        assert (batched > 0) == fused, batched
    _assert_the_same_training(outcomes[True], outcomes[False])


@pytest.mark.parametrize("tiles", ["2x2", "3x3"])
def test_the_tiles_calls_of_a_layer_wait_only_for_the_layer_before(tiles):
    """Each tile's task sends its neighbours their strips of a layer before it waits for its own, so no tile's graph
    run waits for another tile's run of the same layer: the step's longest chain of waits
    (``bench/graph_runs.py``'s levels) is one tile's runs plus the stage reductions on the first tile, not the four
    tiles' runs one after another (on 2x2 tiles of config tiny, 73 levels of 20 runs before session 46)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    from graph_runs import run_levels

    config = UNEVEN.replace(objective="rica", name="uneven-rica")
    batches = [numpy.random.default_rng(7).standard_normal(config.input_shape + (2,)) for _ in range(2)]
    tile_program.forget_all()
    _trained_on_four_threads(config, batches, tiles=tiles)
    levels = run_levels(list(tile_program._programs.values()))
    longest_program = max(run for _, run in levels) + 1
    assert longest_program >= 10
    assert max(levels.values()) <= longest_program + len(config.stages), (max(levels.values()), longest_program)
