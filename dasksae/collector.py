"""Python's full garbage collections kept out of the training steps: ``gc.freeze()`` once a process's programs are built.

A full collection (generation 2) walks every object the process tracks, and
a Dask worker with recorded tile programs and CUDA graphs tracks many: on an
H200, four worker threads on coates200 in bfloat16 paused for one about every
50 steps, which made one group of ten steps in five take 45-56 ms a step
against 38 (``bench/results/session16/next``, rows ``gc-freeze-*``: with
``gc.freeze()`` after the warm-up those groups were gone, and collections
took 0.12-0.13 ms a step against 1.7-3.3 ms).  A collection holds the GIL, so
it pauses every worker thread of the process at once.

``DASKSAE_GC_FREEZE``: ``auto`` (the default) freezes where a task's tiles
are on a GPU, ``1`` everywhere, ``0`` never.  The objects alive at the end of
a task that built or captured a program (:func:`programs_changed`) are moved
out of the collector's sight (``gc.collect()`` first, so that no garbage is
frozen); later objects are collected as usual.  Before a program is built or
its graphs captured again, :func:`thaw` gives the frozen objects back to the
collector, so that programs dropped later (another stage, other shapes) are
freed, cycles and all.
"""

from __future__ import annotations

import gc
import threading

from .switches import switch

GC_FREEZE = switch("DASKSAE_GC_FREEZE")

_lock = threading.Lock()
_changes = 0  # programs built or captured in this process, each counted before and after (thaw, programs_changed)
_frozen_at = 0  # the value of _changes at the last freeze
_froze = False  # whether this module froze anything (a freeze of the caller's own is left alone)


def enabled(xp) -> bool:
    """Whether a task whose arrays are of module ``xp`` freezes (:data:`GC_FREEZE`)."""
    return GC_FREEZE == "1" or (GC_FREEZE == "auto" and xp.__name__ == "cupy")


def thaw() -> None:
    """A program is about to be built or captured: what is frozen goes back to the collector (it may become
    garbage once the new program replaces an old one)."""
    global _changes, _froze
    with _lock:
        _changes += 1
        if _froze:
            gc.unfreeze()
            _froze = False


def programs_changed() -> None:
    """A program was built or captured: the objects it keeps are worth freezing at the end of the task."""
    global _changes
    with _lock:
        _changes += 1


def settle(xp) -> bool:
    """At the end of a tile task: collect and freeze if programs changed since the last freeze and freezing is on
    for ``xp``'s arrays.  Returns whether it froze."""
    global _frozen_at, _froze
    if not enabled(xp):
        return False
    with _lock:
        if _changes == _frozen_at:
            return False
        gc.collect()
        gc.freeze()
        _frozen_at, _froze = _changes, True
    return True
