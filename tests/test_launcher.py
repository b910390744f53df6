"""One thread launches the CUDA-graphed tile steps of every worker thread of this process (dasksae.launcher).

Without a GPU the handed-over part of a step is either its staged replay (``GraphedStep._execute_steps`` in
``staged`` mode: the graph runs' calls on NumPy, the sends and receipts as on a GPU) or its launch mode with each
launch running its run's calls (``bench/graphed_host.py``: staged buffers, outboxes filled in place), so that the
training can be compared bit for bit; on a GPU it is the launch of the captured graphs (``tests/test_gpu_tiled.py``).
"""

import os
import sys
import threading
import time

import distributed
import numpy
import pytest

from dasksae import TiledNetwork, cuda_graphs, launcher, spmd, tile_program
from dasksae.network import named_config
from dasksae.tile_program import HAND_OVER
from test_tile_program import _assert_the_same_training, _trained_on_four_threads

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
import graphed_host  # noqa: E402


def _graphed_path_handing_over(monkeypatch, hands_over=lambda tile: True, fails=lambda tile: False):
    """Worker threads' steps take the CUDA-graph path on NumPy, each replayed step handed over (where
    ``hands_over(tile)``) before its staged replay; returns where each step ran: ``[(step id, tile, thread)]``."""
    ran = []
    monkeypatch.setattr(cuda_graphs, "GRAPHS", True)
    monkeypatch.setattr(cuda_graphs, "has_device_arrays", lambda inputs: True)

    def replay_steps(self, executor, inputs):
        if hands_over(executor.me):
            yield HAND_OVER
        ran.append((executor.step_id, executor.me, threading.current_thread().name))
        if fails(executor.me):
            yield None  # (it went on a while, then)
            raise RuntimeError("a kernel failed on purpose")
        return (yield from self._execute_steps(executor, inputs, "staged"))

    monkeypatch.setattr(cuda_graphs.GraphedStep, "replay_steps", replay_steps)
    cuda_graphs.failures.clear()
    return ran


def _train(config, batches, tiles="2x2"):
    tile_program.forget_all()
    return _trained_on_four_threads(config, batches, tiles, dtype="float32", seed=2)


def _threads_a_step(ran) -> dict:
    steps = {}
    for step_id, tile, thread in ran:
        steps.setdefault(step_id, {})[tile] = thread
    return steps


@pytest.mark.timeout(180)
@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_one_launcher_trains_four_worker_threads_bit_for_bit_as_each_thread_its_own_tile(monkeypatch, objective):
    """With DASKSAE_ONE_LAUNCHER each step handed over runs on one thread for all four tiles (three of them handed
    over by other threads), and the training is the same bit for bit as each thread running its own tile's step."""
    config = named_config("tiny").replace(objective=objective, name=f"tiny-{objective}")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(4)]
    outcomes = {}
    for together in (False, True):
        monkeypatch.setattr(launcher, "ONE_LAUNCHER", together)
        ran = _graphed_path_handing_over(monkeypatch)
        before = launcher.launched
        outcomes[together] = _train(config, batches)
        steps = _threads_a_step(ran)
        assert len(steps) == 3 and all(len(tiles) == 4 for tiles in steps.values())  # steps 2, 3 and the last
        assert {len(set(tiles.values())) for tiles in steps.values()} == ({1} if together else {4}), steps
        assert launcher.launched - before == (3 * 3 if together else 0)
        assert cuda_graphs.failures == [] and not launcher._handed_over and not launcher._launching
        monkeypatch.undo()
    _assert_the_same_training(outcomes[True], outcomes[False])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("together, tiles", [(False, "2x2"), (True, "2x2"), (True, "3x2")])
def test_launched_steps_sending_in_place_train_as_plain_replays(monkeypatch, together, tiles):
    """The launch mode's protocol on NumPy: each graph run's launch runs its calls instead, on the staged buffers and
    the receipts its graph would read, and sends go into the outboxes their receivers' graphs read (in place, after
    each receiver has launched the step that read the one before).  Worker threads, each launching its own tile's
    steps or all launched by one thread, train bit for bit as plain replays do (2x2 tiles, and 3x2 on six)."""
    config = named_config("tiny")
    data = numpy.random.default_rng(9)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(6)]
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", False)
    expected = _train(config, batches, tiles=tiles)  # plain replays: no device arrays, so no graphs
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", together)
    cuda_graphs.failures.clear()
    in_place, launches, launched = cuda_graphs.filled_in_place, cuda_graphs.launches, launcher.launched
    with graphed_host.graph_launches_as_no_ops(send_plans=False, launches_run_calls=True):
        got = _train(config, batches, tiles=tiles)
    assert cuda_graphs.failures == []
    count = int(tiles[0]) * int(tiles[2])
    tile_steps_launched = count * (len(batches) - 3)  # recorded, staged and captured steps before
    assert cuda_graphs.launches - launches > 15 * tile_steps_launched  # about 20 graph runs a tile step
    assert cuda_graphs.filled_in_place - in_place > 30 * tile_steps_launched  # most of a tile step's sends
    assert (launcher.launched - launched) == ((count - 1) * (len(batches) - 3) if together else 0)
    _assert_the_same_training(got, expected)


@pytest.mark.timeout(180)
def test_a_tile_that_runs_its_own_step_trades_messages_with_the_launched_ones(monkeypatch):
    """A step that is not handed over (a staged or captured one, or one replayed as calls) runs on its own thread
    while the launcher runs the others': they wait for each other's messages, and train as before, bit for bit."""
    config = named_config("tiny")
    data = numpy.random.default_rng(8)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(3)]
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", False)
    _graphed_path_handing_over(monkeypatch)
    expected = _train(config, batches)
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", True)
    ran = _graphed_path_handing_over(monkeypatch, hands_over=lambda tile: tile != (0, 1))
    got = _train(config, batches)
    for tiles in _threads_a_step(ran).values():
        others = {thread for tile, thread in tiles.items() if tile != (0, 1)}
        assert len(others) == 1 and tiles[(0, 1)] not in others, tiles
    _assert_the_same_training(got, expected)


@pytest.mark.timeout(120)
def test_a_step_that_fails_under_one_launcher_fails_the_whole_step_at_once_naming_its_tile(monkeypatch):
    """A tile whose handed-over step raises midway: the launcher tells the other tiles at once (they would wait for
    its messages until the timeout), every tile's task fails within seconds, and the error names the tile."""
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", True)
    config = named_config("tiny")
    data = numpy.random.default_rng(1)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(2)]
    failing = {"on": False}
    _graphed_path_handing_over(monkeypatch, fails=lambda tile: failing["on"] and tile == (1, 0))
    told = []
    abort_for = spmd._abort_for

    def recorded_abort_for(executor):
        abort = abort_for(executor)
        return lambda reason: told.append((executor.me, reason)) or abort(reason)

    monkeypatch.setattr(spmd, "_abort_for", recorded_abort_for)  # the launcher's own telling, whichever thread it is
    tile_program.forget_all()
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, "2x2", client, seed=2, dtype="float32")
            network.steps(batches, 1e-3, 0.9)  # recorded, then handed over
            failing["on"] = True
            started = time.perf_counter()
            with pytest.raises(Exception, match="a kernel failed on purpose"):
                network.steps(batches, 1e-3, 0.9)
            assert time.perf_counter() - started < 30
    assert told == [((1, 0), "RuntimeError: a kernel failed on purpose")]  # the others' NeighbourFailed tell no one
    assert not launcher._handed_over and not launcher._launching  # nothing left waiting


def test_without_the_switch_or_other_tiles_here_no_step_is_handed_over(monkeypatch):
    assert spmd._tiles_in_this_process({(0, 0): "tcp://elsewhere:1", (0, 1): "tcp://elsewhere:2"}) == 0


def test_the_switch_is_refused_with_its_values(monkeypatch):
    from dasksae.switches import SwitchError, switch

    monkeypatch.setenv("DASKSAE_ONE_LAUNCHER", "yes")
    with pytest.raises(SwitchError, match="DASKSAE_ONE_LAUNCHER must be 1 or 0"):
        switch("DASKSAE_ONE_LAUNCHER")
