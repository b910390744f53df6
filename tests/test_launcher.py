"""One thread runs the replayed steps of every worker thread's tile in this process (dasksae.launcher)."""

import sys
import threading

import distributed
import numpy
import pytest

from dasksae import TiledNetwork, cuda_graphs, launcher, spmd, tile_program
from dasksae.network import named_config
from test_tile_program import _assert_the_same_training, _trained_on_four_threads
from test_tiling import UNEVEN


def _counting_threads(monkeypatch):
    """Record which thread runs each tile's replayed step (by the thread's name), step by step."""
    runs = []
    replay_steps = tile_program.TileProgram.replay_steps

    def recorded(self, executor, inputs):
        runs.append((executor.step_id, executor.me, threading.current_thread().name))
        return (yield from replay_steps(self, executor, inputs))

    monkeypatch.setattr(tile_program.TileProgram, "replay_steps", recorded)
    return runs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("objective", ["rica", "le2012"])
def test_one_launcher_trains_four_worker_threads_bit_for_bit_as_each_thread_its_own_tile(monkeypatch, objective):
    """With DASKSAE_ONE_LAUNCHER, each replayed step of the four tiles runs on one thread, the same for all four
    (the others hand theirs over), and the training is the same bit for bit as each thread replaying its own."""
    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (3,)) for _ in range(4)]
    outcomes = {}
    for together in (False, True):
        monkeypatch.setattr(launcher, "ONE_LAUNCHER", together)
        tile_program.forget_all()
        runs = _counting_threads(monkeypatch)
        before = launcher.launched
        outcomes[together] = _trained_on_four_threads(config, batches)
        steps = {}
        for step_id, tile, thread in runs:
            steps.setdefault(step_id, {})[tile] = thread
        assert len(steps) == 3 and all(len(tiles) == 4 for tiles in steps.values())  # steps 2, 3 and the last
        threads_a_step = {len(set(tiles.values())) for tiles in steps.values()}
        assert threads_a_step == ({1} if together else {4}), steps
        # every step meets, the recording one too (its steps end at once: each thread then builds its own)
        assert launcher.launched - before == (4 * 3 if together else 0)
        monkeypatch.undo()
    _assert_the_same_training(outcomes[True], outcomes[False])


@pytest.mark.timeout(120)
def test_one_launcher_takes_the_cuda_graph_path_in_message_order(monkeypatch):
    """The worker threads' CUDA-graph path (its staged replay, which runs on NumPy) under one launcher: every tile's
    graph runs and sends in the planned order from one thread, and the same losses and weights as plain replays."""
    config = named_config("tiny")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(3)]

    def train():
        tile_program.forget_all()
        with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                network = TiledNetwork(config, "2x2", client, seed=2, dtype="float32")
                return [r.loss for r in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected, expected_parameters = train()
    cuda_graphs.failures.clear()
    threads = []
    monkeypatch.setattr(launcher, "ONE_LAUNCHER", True)
    monkeypatch.setattr(cuda_graphs, "GRAPHS", True)
    monkeypatch.setattr(cuda_graphs, "has_device_arrays", lambda inputs: True)

    def staged_replay(self, executor, inputs):
        threads.append(threading.current_thread().name)
        return (yield from self._execute_steps(executor, inputs, "staged"))

    monkeypatch.setattr(cuda_graphs.GraphedStep, "replay_steps", staged_replay)
    got, parameters = train()
    assert len(threads) == 4 * (len(batches) - 1) and len(set(threads[:4])) == 1 and len(set(threads[4:])) == 1
    assert cuda_graphs.failures == []
    numpy.testing.assert_array_equal(got, expected)
    for mine, theirs in zip(parameters, expected_parameters):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])


@pytest.mark.timeout(120)
def test_a_step_that_fails_under_one_launcher_fails_the_whole_step_at_once_naming_its_tile(monkeypatch):
    """A tile whose replayed step raises midway: the launcher tells the other tiles at once (they would wait for its
    messages until the timeout), every tile's task fails within seconds, and the error names the tile."""
    import time

    monkeypatch.setattr(launcher, "ONE_LAUNCHER", True)
    config = named_config("tiny")
    data = numpy.random.default_rng(1)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(2)]
    replay_steps = tile_program.TileProgram.replay_steps
    failing = {"on": False}

    def fails_on_tile_1_0(self, executor, inputs):
        if failing["on"] and executor.me == (1, 0):
            yield None  # (it went on a while, then)
            raise RuntimeError("a kernel failed on purpose")
        return (yield from replay_steps(self, executor, inputs))

    monkeypatch.setattr(tile_program.TileProgram, "replay_steps", fails_on_tile_1_0)
    told = []
    abort_for = spmd._abort_for

    def recorded_abort_for(executor):
        abort = abort_for(executor)
        return lambda reason: told.append((executor.me, reason)) or abort(reason)

    monkeypatch.setattr(spmd, "_abort_for", recorded_abort_for)  # (the launcher's own telling, whichever thread it is)
    tile_program.forget_all()
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, "2x2", client, seed=2, dtype="float32")
            network.steps(batches, 1e-3, 0.9)  # recorded, then replayed
            failing["on"] = True
            started = time.perf_counter()
            with pytest.raises(Exception, match=r"tile \(1, 0\).*a kernel failed on purpose|a kernel failed on purpose"):
                network.steps(batches, 1e-3, 0.9)
            assert time.perf_counter() - started < 30
    assert told == [((1, 0), "RuntimeError: a kernel failed on purpose")]  # the others' NeighbourFailed tell no one
    assert not launcher._rendezvous  # nothing left waiting


def test_tiles_in_this_process_counts_worker_threads_not_other_processes():
    from distributed import Worker

    assert spmd._tiles_in_this_process({(0, 0): "tcp://elsewhere:1"}) == 0
    assert "distributed" in sys.modules and Worker is not None


def test_the_switch_is_refused_with_its_values(monkeypatch):
    from dasksae.switches import SwitchError, switch

    monkeypatch.setenv("DASKSAE_ONE_LAUNCHER", "yes")
    with pytest.raises(SwitchError, match="DASKSAE_ONE_LAUNCHER must be 0 or 1"):
        switch("DASKSAE_ONE_LAUNCHER")
