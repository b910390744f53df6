"""dasksae.collector: gc.freeze() once a process's tile programs are built (DASKSAE_GC_FREEZE)."""

import gc
import types
import weakref

import distributed
import numpy
import pytest

from dasksae import collector
from dasksae.network import named_config
from dasksae.tiled_network import TiledNetwork


@pytest.fixture
def freezing(monkeypatch):
    monkeypatch.setattr(collector, "GC_FREEZE", "1")
    yield
    collector.thaw()  # nothing of ours stays frozen for the other tests
    assert gc.get_freeze_count() == 0


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self):
        self.me = self


def test_settle_freezes_once_a_program_changed_and_thaw_lets_dropped_programs_be_freed(freezing):
    collector.programs_changed()
    cycle = Node()
    alive = weakref.ref(cycle)
    assert collector.settle(numpy)
    assert gc.get_freeze_count() > 0
    assert not collector.settle(numpy)  # nothing built since: no second collection
    del cycle
    gc.collect()
    assert alive() is not None  # frozen: out of the collector's sight
    collector.thaw()  # a new program is about to replace it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None


def test_settle_freezes_nothing_when_it_is_off_or_nothing_changed(monkeypatch):
    monkeypatch.setattr(collector, "GC_FREEZE", "0")
    collector.programs_changed()
    assert not collector.settle(numpy) and gc.get_freeze_count() == 0
    monkeypatch.setattr(collector, "GC_FREEZE", "1")
    assert collector.settle(numpy) and gc.get_freeze_count() > 0
    assert not collector.settle(numpy)
    collector.thaw()


def test_auto_freezes_where_the_tiles_are_on_a_gpu_only(monkeypatch):
    monkeypatch.setattr(collector, "GC_FREEZE", "auto")
    assert not collector.enabled(numpy)
    assert collector.enabled(types.SimpleNamespace(__name__="cupy"))
    monkeypatch.setattr(collector, "GC_FREEZE", "1")
    assert collector.enabled(numpy)


def test_thaw_leaves_a_freeze_of_the_callers_own_alone(monkeypatch):
    monkeypatch.setattr(collector, "_froze", False)
    gc.freeze()
    try:
        collector.thaw()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _losses_and_freeze_counts(monkeypatch, value):
    monkeypatch.setenv("DASKSAE_GC_FREEZE", value)  # the workers' processes start with it
    config = named_config("tiny")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (8,))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        one_tile = TiledNetwork(config, "1x1", client, seed=0, dtype="float64")  # one task a step: the fused step
        one_tile.step(x, 1e-3, 0.9)
        one_tile_counts = client.run(gc.get_freeze_count)
        network = TiledNetwork(config, "2x1", client, seed=0, dtype="float64")  # SPMD steps, halos between workers
        losses = [report.stage_losses for report in (network.step(x, 1e-3, 0.9) for _ in range(3))]
        counts = client.run(gc.get_freeze_count)
    return losses, one_tile_counts, counts


def test_workers_freeze_after_building_their_programs_and_train_the_same(monkeypatch):
    """With DASKSAE_GC_FREEZE=1 a worker process froze its objects after the tasks that built its tile programs
    (a single tile's fused step, then SPMD steps); with 0 none did; the losses are the same."""
    frozen_losses, one_tile_counts, frozen_counts = _losses_and_freeze_counts(monkeypatch, "1")
    plain_losses, _, plain_counts = _losses_and_freeze_counts(monkeypatch, "0")
    assert sorted(count > 0 for count in one_tile_counts.values()) == [False, True], one_tile_counts  # its worker only
    assert len(frozen_counts) == 2 and all(count > 0 for count in frozen_counts.values()), frozen_counts
    assert all(count == 0 for count in plain_counts.values()), plain_counts
    assert frozen_losses == plain_losses
