"""One tile thread at a time does host work, where worker threads of one process share a GPU.

Four worker threads that share a GPU replay their tile steps as CUDA graphs
(:mod:`dasksae.cuda_graphs`) and trade halos by reference
(:mod:`dasksae.spmd`).  Their step is bound by the host, but not by the
GIL's capacity: sampled from outside the process (``bench/gil_sampler.py``;
H200, coates200 bfloat16, M=96, ``bench/results/session15/next/``) the
GIL was held 65% of the step, each thread ran on a CPU about 10 ms of a
40 ms step, and waited 27 ms for its neighbours' messages.  The threads
work in lockstep: a message wakes a thread while the others run the same
phase of their step, and it waits for the GIL, which a thread running
Python keeps across its short CUDA calls (a woken thread may wait up to
the switch interval before Python makes the holder let go).

The baton makes the hand-off explicit: a tile task holds it while it does
host work and lets go only where it would wait anyway (for a message, for
the device), so the four threads never contend for the GIL; the next
thread whose message is there takes the baton.  It is one
:class:`threading.Lock` a process and device.  ``DASKSAE_HOST_BATON``:
``auto`` (the default) holds it in tile tasks on a GPU whose steps
exchange halos with worker threads of the same process, ``1`` in every
tile task that does (NumPy too: the CPU tests' way to exercise it), ``0``
never.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .switches import switch

BATON = switch("DASKSAE_HOST_BATON")
_batons: dict = {}
_batons_lock = threading.Lock()
_local = threading.local()


def wanted(on_device: bool, shares_process: bool, setting: str | None = None) -> bool:
    """Whether a tile task holds the baton: ``setting`` (default :data:`BATON`) for a task on a GPU or not whose
    step does or does not exchange halos with worker threads of this process."""
    setting = BATON if setting is None else setting
    return shares_process and (setting == "1" or (setting == "auto" and on_device))


def _baton(key) -> threading.Lock:
    with _batons_lock:
        if key not in _batons:
            _batons[key] = threading.Lock()
        return _batons[key]


def waited_seconds() -> float:
    """Seconds this thread has waited to take a baton, so far."""
    return getattr(_local, "waited", 0.0)


def _take(lock) -> None:
    if not lock.acquire(blocking=False):
        started = time.perf_counter()
        lock.acquire()
        _local.waited = waited_seconds() + time.perf_counter() - started
    _local.held = lock


@contextlib.contextmanager
def holding(key, hold: bool = True):
    """Hold the baton of ``key`` (a device) for the block, except inside :func:`let_go` blocks; ``hold=False``:
    do nothing.  Not re-entrant: a thread holds one baton at a time."""
    if not hold:
        yield
        return
    if getattr(_local, "held", None) is not None:
        raise RuntimeError("this thread holds a host baton already")
    lock = _baton(key)
    _take(lock)
    try:
        yield
    finally:
        _local.held = None
        lock.release()


@contextlib.contextmanager
def let_go():
    """The block waits (for a message, for the device): another thread may take this thread's baton meanwhile,
    and this thread takes it again after.  Without a baton it does nothing."""
    lock = getattr(_local, "held", None)
    if lock is None:
        yield
        return
    _local.held = None
    lock.release()
    try:
        yield
    finally:
        _take(lock)


def holds() -> bool:
    """Whether this thread holds a baton now."""
    return getattr(_local, "held", None) is not None
