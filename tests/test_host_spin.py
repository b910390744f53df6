"""The host spinner: one busy CPU while tile tasks that share a process keep coming, gone when they stop."""

import time

import numpy
import psutil
import pytest

from dasksae import host_spin


def _wait_for_exit(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_spinner_keeps_a_cpu_busy_until_stopped():
    spinner = host_spin.HostSpinner(linger=30)
    spinner.renew()
    try:
        pid = spinner.pid
        assert pid is not None
        process = psutil.Process(pid)
        time.sleep(1.0)
        busy = process.cpu_times().user + process.cpu_times().system
        assert busy > 0.4, busy  # it spins (about a second of CPU in a second), it does not sleep
        spinner.renew()  # renewing a running spinner starts no other
        assert spinner.pid == pid and spinner.starts == 1
    finally:
        spinner.stop()
    assert not spinner.running
    assert _wait_for_exit(pid, 5)


def test_spinner_ends_by_itself_when_not_renewed_and_starts_again_when_renewed():
    spinner = host_spin.HostSpinner(linger=0.5)
    spinner.renew()
    first = spinner.pid
    assert _wait_for_exit(first, 10)  # half a second after the last renewal, it exits
    assert not spinner.running
    spinner.renew()
    try:
        assert spinner.running and spinner.pid != first and spinner.starts == 2
    finally:
        spinner.stop()


@pytest.mark.parametrize("mode,shares_gpu,shares_process,expected", [
    ("auto", True, True, True), ("auto", False, True, False), ("auto", False, False, False),
    ("0", True, True, False), ("1", False, True, True), ("1", False, False, False)])
def test_keep_host_awake_follows_the_switch(monkeypatch, mode, shares_gpu, shares_process, expected):
    spinner = host_spin.HostSpinner(linger=30)
    monkeypatch.setattr(host_spin, "_spinner", spinner)
    monkeypatch.setattr(host_spin, "SPIN", mode)
    try:
        assert host_spin.keep_host_awake(shares_gpu, shares_process) is expected
        assert spinner.running is expected
    finally:
        spinner.stop()


def test_worker_threads_sharing_a_process_on_the_cpu_start_no_spinner(monkeypatch):
    """``auto`` on the CPU: tile tasks of worker threads of one process (the test cluster) leave the host idle;
    with ``1`` the same tasks start it."""
    distributed = pytest.importorskip("distributed")
    from dasksae import TiledNetwork, named_config

    config = named_config("tiny")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (4,)).astype("float32")
    for mode, expected in (("auto", 0), ("1", 1)):
        spinner = host_spin.HostSpinner(linger=30)
        monkeypatch.setattr(host_spin, "_spinner", spinner)
        monkeypatch.setattr(host_spin, "SPIN", mode)
        try:
            with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                TiledNetwork(config, "1x2", client, seed=0).steps([x, x], 1e-3, 0.9)
            assert spinner.starts == expected, mode
        finally:
            spinner.stop()
