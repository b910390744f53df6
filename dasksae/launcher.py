"""One thread runs the replayed tile steps of every worker thread of this process, in message order.

``DASKSAE_ONE_LAUNCHER=1`` (opt-in).  Worker threads that share a GPU each
replay their tile's step and hand halos to each other about twenty times a
step; between two exchanges the four take turns at the GIL, and each
hand-off wakes a thread (README, "Why the missed targets are missed").
With one launcher, each tile task still runs on its own worker thread, but
at each step it hands its replayed step (a generator that yields the tags
of the messages it is about to take, :func:`dasksae.tile_program.finished`)
to a rendezvous of this process's tiles; the last to arrive runs them all
in turn, each on its own tile's CUDA stream, resuming a step only when the
messages it waits for are in its mailbox.  So the halos between these tiles
never wait for another thread to be scheduled, and the others sleep until
their step is done.  Messages from tiles in other processes arrive as
before; the launcher waits for them.

What the step computes, the messages, their order and the streams are those
of each thread running its own step, so training is the same bit for bit
(``tests/test_launcher.py``).  A step that fails tells the other tiles at
once, as a tile task does, and its error is raised in its own tile's task.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .switches import switch

ONE_LAUNCHER = switch("DASKSAE_ONE_LAUNCHER") == "1"

_WAIT_SLICE = 0.001  # seconds the launcher sleeps on one mailbox when no step can go on (messages from elsewhere)


class _Participant:
    """A tile's step handed to the launcher, and what became of it."""

    __slots__ = ("steps", "stream", "mailbox", "abort_tag", "abort", "needed", "finished", "result", "error")

    def __init__(self, steps, stream, mailbox, abort_tag, abort):
        self.steps, self.stream, self.mailbox, self.abort_tag, self.abort = steps, stream, mailbox, abort_tag, abort
        self.needed = None  # the tags the step waits for before it goes on (None: it can go on)
        self.finished, self.result, self.error = False, None, None

    def ready(self) -> bool:
        return self.needed is None or self.mailbox.has(self.needed, self.abort_tag)

    def finish(self, result=None, error=None):
        def done():
            self.result, self.error, self.finished = result, error, True

        self.mailbox.wake(done)  # the tile's thread waits on its mailbox for this, or for an abort


_rendezvous: dict = {}  # step tag -> (tiles expected, participants so far)
_rendezvous_lock = threading.Lock()
launched = 0  # tile steps run by another tile's thread (a counter for tests and benchmarks)


def run_together(step_tag: str, expected: int, steps, stream, mailbox, abort_tag: str, abort, timeout: float):
    """What ``steps`` (a tile's replayed step, :func:`~dasksae.tile_program.replayed_steps`) returns, run by the
    thread of the last of ``expected`` tiles of this process to hand theirs over for ``step_tag``.

    ``stream``: a context that makes the tile's CUDA stream current (a no-op on NumPy); ``mailbox``: its
    worker's :class:`~dasksae.spmd.Mailbox`; ``abort(reason)`` tells the other tiles that this one failed.
    Raises the step's error in this thread, :class:`~dasksae.spmd.NeighbourFailed` if another tile fails before
    this one's step ran, and ``TimeoutError`` after ``timeout`` seconds without either.
    """
    from .spmd import NeighbourFailed

    participant = _Participant(steps, stream, mailbox, abort_tag, abort)
    with _rendezvous_lock:
        participants = _rendezvous.setdefault(step_tag, [])
        participants.append(participant)
        last = len(participants) == expected
        if last:
            del _rendezvous[step_tag]
    if last:
        _launch(participants, timeout)
    elif not mailbox.wait_until(lambda: participant.finished or mailbox.peek(abort_tag) is not None, timeout):
        _forget(step_tag, participant)
        raise TimeoutError(f"the tile steps of {step_tag} did not all start within {timeout:g} s "
                           "(a neighbour's task failed or died)")
    elif not participant.finished:  # a tile failed before the step could run: nothing of this one ran
        _forget(step_tag, participant)
        raise NeighbourFailed(mailbox.peek(abort_tag))
    if participant.error is not None:
        raise participant.error
    return participant.result


def _forget(step_tag, participant):
    with _rendezvous_lock:
        participants = _rendezvous.get(step_tag, [])
        if participant in participants:
            participants.remove(participant)
            if not participants:
                del _rendezvous[step_tag]


def _launch(participants: list, timeout: float):
    """Run every participant's step to its end, each resumed when its messages are there."""
    global launched
    from .spmd import NeighbourFailed

    pending = list(participants)
    stuck_since = None
    while pending:
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
            return
        first = pending[0]  # messages from another process: wait a little on one mailbox, then look at them all
        first.mailbox.wait_until(lambda: first.ready(), _WAIT_SLICE)
    launched += len(participants) - 1
