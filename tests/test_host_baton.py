"""The host baton (dasksae.host_baton): one thread at a time between its waits, and tile tasks that hold it
train as the reference does."""

import threading

import pytest

from dasksae import host_baton, named_config

distributed = pytest.importorskip("distributed")


def test_a_thread_takes_the_baton_only_where_its_holder_waits():
    order, holder_waits, other_in, other_done = [], threading.Event(), threading.Event(), threading.Event()

    def holder():
        with host_baton.holding("device-test"):
            order.append("holder works")
            other_started.wait(5)
            assert not other_in.wait(0.2)  # the other thread cannot start while this one holds the baton
            with host_baton.let_go():
                order.append("holder waits")
                holder_waits.set()
                assert other_in.wait(5)
                assert not host_baton.holds()
            order.append("holder works again")  # only once the other thread let go of the baton
            assert other_done.is_set()
            assert host_baton.holds()
        assert not host_baton.holds()

    def other():
        other_started.set()
        with host_baton.holding("device-test"):
            order.append("other works")
            other_in.set()
            assert not threading.Event().wait(0.1) and holder_waits.is_set()
            other_done.set()

    other_started = threading.Event()
    threads = [threading.Thread(target=holder), threading.Thread(target=other)]
    threads[0].start()
    while not order:
        threading.Event().wait(0.01)
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert order == ["holder works", "holder waits", "other works", "holder works again"]
    assert host_baton.waited_seconds() == 0.0  # this thread never took a baton


def test_a_baton_is_not_taken_twice_by_one_thread_and_let_go_without_one_does_nothing():
    with host_baton.let_go():
        assert not host_baton.holds()
    with host_baton.holding("device-twice"):
        with pytest.raises(RuntimeError, match="holds a host baton already"):
            with host_baton.holding("device-other"):
                pass
        assert host_baton.holds()
    assert not host_baton.holds()
    with host_baton.holding("device-twice", hold=False):
        assert not host_baton.holds()


@pytest.mark.parametrize("setting,on_device,shares,expected", [
    ("auto", True, True, True), ("auto", False, True, False), ("auto", True, False, False),
    ("1", False, True, True), ("1", True, False, False), ("0", True, True, False)])
def test_which_tile_tasks_hold_the_baton(setting, on_device, shares, expected):
    assert host_baton.wanted(on_device, shares, setting) is expected


@pytest.mark.parametrize("setting", ["1", "0"])
def test_worker_threads_holding_the_baton_train_as_the_reference(monkeypatch, setting):
    """Four worker threads of one process, 2x2 tiles, float64: the same losses and parameters as the reference,
    and with the baton on, threads waited to take it (handed over at their waits); off, none did."""
    from dasksae import spmd
    from dasksae.tiled_network import TiledNetwork
    from tiled_checks import check_steps_in_one_task, check_training_steps

    monkeypatch.setattr(host_baton, "BATON", setting)

    def factory(config, tiles, **kwargs):
        return TiledNetwork(config, tiles, client, **kwargs)

    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            check_training_steps(factory, named_config("tiny"), 2, 2, steps=2)
            check_steps_in_one_task(factory, named_config("tiny"), 2, 2, steps=3)
            waited = client.run(lambda dask_worker: getattr(dask_worker, spmd.MAILBOX).baton_seconds)
    assert len(waited) == 4
    if setting == "1":
        assert sum(waited.values()) > 0
    else:
        assert sum(waited.values()) == 0.0
