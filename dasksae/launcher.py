"""One thread launches the CUDA-graphed tile steps of every worker thread of this process, in message order.

``DASKSAE_ONE_LAUNCHER=1`` (the default since session 31; ``0``: each thread launches its own tile's step).
On the H200 the four threads' bfloat16 step took 26.2-26.9 ms with it against 26.7-29.4 without, in turn, and
a tile thread no longer waited for messages (``bench/results/session31/``).  Worker threads that share a GPU each
replay their tile's step and hand halos to each other about twenty times a
step; between two exchanges the four take turns at the GIL, and each
hand-off wakes a thread (README, "Why the missed targets are missed").
With one launcher, each tile task still runs on its own worker thread and
starts its step there; once the step has nothing left but to launch the
CUDA graphs its thread captured, make its sends and take its receipts (it
yields :data:`~dasksae.tile_program.HAND_OVER`), the thread hands it to
this process's launcher for that step and sleeps until it is done.  The
first thread to hand one over is the launcher: it runs every step handed
over, each on its own tile's CUDA stream, resuming a step only when the
messages it is about to take are in its mailbox (the step yields their
tags), and takes in steps handed over while it runs.  So the halos between
these tiles never wait for another thread to be scheduled.  Messages from
tiles in other processes, and from steps that did not reach the hand-over
(staged or captured steps, steps replayed as calls), arrive as before; the
launcher waits for them.

Graphs, streams, messages and their order are those of each thread running
its own step, so training is the same bit for bit (``tests/test_launcher.py``,
and on a GPU ``tests/test_gpu_tiled.py``).  Only launches are handed over:
the calls a staged or captured step makes use their own thread's cuBLAS
handle, whose workspace must not serve two streams at once.  A step that
fails tells the other tiles at once, as a tile task does, and its error is
raised in its own tile's task.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .switches import switch
from .tile_program import HAND_OVER

ONE_LAUNCHER = switch("DASKSAE_ONE_LAUNCHER") == "1"

_WAIT_SLICE = 0.001  # seconds the launcher sleeps on one mailbox when no step can go on (messages from elsewhere)


class _Participant:
    """A tile's step handed to the launcher, and what became of it."""

    __slots__ = ("steps", "stream", "mailbox", "abort_tag", "abort", "needed", "finished", "result", "error")

    def __init__(self, steps, stream, mailbox, abort_tag, abort):
        self.steps, self.stream, self.mailbox, self.abort_tag, self.abort = steps, stream, mailbox, abort_tag, abort
        self.needed = None  # the tags the step waits for before it goes on (None: it can go on)
        # what the tile's thread sleeps on (not its mailbox: every message put there would wake it)
        self.finished = threading.Event()
        self.result, self.error = None, None

    def ready(self) -> bool:
        return self.needed is None or self.mailbox.has(self.needed, self.abort_tag)

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.finished.set()


_handed_over: dict = {}  # step tag -> the steps handed over and not yet taken in by its launcher
_launching: set = set()  # step tags whose launcher is running
_lock = threading.Lock()
_hand_over = threading.Condition(_lock)  # notified at each hand-over: a launcher with nothing to do wakes for it
launched = 0  # tile steps launched by another tile's thread (a counter for tests and benchmarks)
idle_seconds = 0.0  # launchers' time with no step able to go on (for benchmarks)


def run(step_tag: str, steps, stream, mailbox, abort_tag: str, abort, timeout: float):
    """What ``steps`` (a tile's replayed step, :func:`~dasksae.tile_program.replayed_steps`) returns.

    This thread runs it until it yields :data:`~dasksae.tile_program.HAND_OVER`, then hands it to the launcher of
    ``step_tag`` in this process (this thread, if none is running).  ``stream``: a context that makes the tile's
    CUDA stream current (a no-op on NumPy); ``mailbox``: its worker's :class:`~dasksae.spmd.Mailbox`;
    ``abort(reason)`` tells the other tiles that this one failed.  Raises the step's error in this thread, and
    ``TimeoutError`` after ``timeout`` seconds without an end.
    """
    while True:  # this thread's own part: whatever comes before the hand-over (its takes wait for their messages)
        try:
            if next(steps) is HAND_OVER:
                break
        except StopIteration as end:
            return end.value
    participant = _Participant(steps, stream, mailbox, abort_tag, abort)
    with _hand_over:
        _handed_over.setdefault(step_tag, []).append(participant)
        launching = step_tag not in _launching
        if launching:
            _launching.add(step_tag)
        else:
            _hand_over.notify_all()
    if launching:
        _launch(step_tag, timeout, participant)
    elif not participant.finished.wait(timeout):
        raise TimeoutError(f"the launcher of {step_tag} did not end this tile's step within {timeout:g} s")
    if participant.error is not None:
        raise participant.error
    return participant.result


def _taken_in(step_tag, pending: list) -> bool:
    """Add the steps handed over since the last look to ``pending``; with none left at all, the launcher ends (under
    the same lock as a hand-over, so that a step handed over later starts a launcher of its own)."""
    with _lock:
        pending.extend(_handed_over.pop(step_tag, ()))
        if not pending:
            _launching.discard(step_tag)
        return bool(pending)


def _launch(step_tag: str, timeout: float, own: _Participant):
    """Run every step handed over for ``step_tag`` to its end, each resumed when its messages are there (``own``:
    this thread's)."""
    global launched, idle_seconds
    from .spmd import NeighbourFailed

    pending: list = []
    stuck_since = None
    while _taken_in(step_tag, pending):
        went_on = False
        for participant in list(pending):
            if not participant.ready():
                continue
            went_on = True
            try:
                with participant.stream:
                    participant.needed = next(participant.steps)
            except StopIteration as end:
                pending.remove(participant)
                participant.finish(result=end.value)
                launched += participant is not own
            except BaseException as error:  # noqa: BLE001 - raised in its own tile's task
                pending.remove(participant)
                if not isinstance(error, NeighbourFailed):  # tell the others now: they may wait for its messages
                    with contextlib.suppress(Exception):
                        participant.abort(f"{type(error).__name__}: {error}")
                participant.finish(error=error)
        if went_on:
            stuck_since = None
            continue
        now = time.perf_counter()
        stuck_since = stuck_since or now
        if now - stuck_since > timeout:
            for participant in pending:
                participant.finish(error=TimeoutError(
                    f"no message {participant.needed[0]} arrived within {timeout:g} s (a neighbour's task failed or died)"))
            pending.clear()
            continue
        # nothing can go on: wait for a step handed over (it wakes this at once) or, a little at a time, for messages
        # from elsewhere (steps that their own threads run, other processes), then look at them all again
        with _hand_over:
            if not _handed_over.get(step_tag):
                _hand_over.wait(_WAIT_SLICE)
        idle_seconds += time.perf_counter() - now
