"""A CUDA stream for each worker thread, so that workers sharing one GPU overlap instead of taking turns.

CuPy launches on the current thread's current stream, by default CUDA's
legacy default stream, which every thread of a process shares.  Workers
run as threads of one process on one GPU (``--workers-per-gpu`` with
threads) then share one queue: each wait for a result (a halo to send, the
stage losses) drains every worker's queued work, and the GPU idles while
the threads launch again.  :func:`tile_task_stream` gives the thread its
own stream for a task:

* it is a *blocking* stream (``non_blocking=False``): it waits for work
  queued on the legacy default stream, and that stream waits for it, so
  arrays that arrive on the legacy stream (deserialised by the worker's
  communication thread, made by a task outside this context) are complete
  before the task reads them, and the task's results are before anyone
  else's reads on the legacy stream;
* the task waits for its stream before it returns, so its results are
  complete for whatever thread runs the next task; but with
  ``DASKSAE_TASK_END=queue`` (:data:`TASK_END`, the default since session
  27; ``wait`` waits at every task's end) a task of steps returns without
  that wait: it leaves an event for the next task's stream to wait on (on
  the device) and its losses copied behind its last step into host memory
  (:func:`queue_losses`), read by a task that runs after the next task has
  queued its work, so the device does not drain between tasks.  A one-tile
  task has done so since session 27; a tile task of SPMD steps since
  session 32, handing what its :class:`StepFence` still keeps to the
  tile's next task;
* a value that leaves the thread mid-task (a halo sent to another tile) is
  waited for first (:func:`ready_to_leave`): the receiving thread reads it
  on its own stream, which does not wait for this one.

On NumPy these do nothing.  In a single-threaded worker the stream changes
nothing but the queue's name.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from .kernels.backend import device_wait, on_device, stacked_float64
from .kernels.driver_launch import record_event, stream_wait_event
from .switches import switch

_local = threading.local()
# tile steps whose device work may still be queued when the host starts the next (StepFence); 0: none
RUN_AHEAD = int(switch("DASKSAE_RUN_AHEAD"))
# "queue" (default): a one-tile task of steps returns with them queued (see above); "wait": every tile task waits for
# its stream before it returns
TASK_END = switch("DASKSAE_TASK_END")
# "1": the bfloat16 tensor-core update (one launch a chunk of block rows) runs on a side stream of its tile's stream
# (side_stream_work), beside what the step queues next (the lower stages' backward) instead of between it; "priority":
# the same, with the tiles' streams made at the device's highest priority, so that as the update's blocks finish the
# SMs go to the main stream's kernels first; "0" (the default): in line on the tile's stream
UPDATE_STREAM = switch("DASKSAE_UPDATE_STREAM")
HIGHEST_PRIORITY = -1000  # CUDA clamps a priority to the device's range: this is its greatest
_side_streams: dict = {}  # a main stream's handle -> its side stream (side_stream)
_side_streams_lock = threading.Lock()


def _new_stream(cupy, non_blocking: bool, highest_priority: bool = False):
    """A CUDA stream (blocking or not with respect to the legacy default stream), at the highest priority or at the
    default one (which is the lowest)."""
    if not highest_priority:
        return cupy.cuda.Stream(non_blocking=non_blocking)
    try:  # a CuPy whose Stream takes a priority (the lent GPU machine's, which deprecates ExternalStream)
        return cupy.cuda.Stream(non_blocking=non_blocking, priority=HIGHEST_PRIORITY)
    except TypeError:
        pass
    runtime = cupy.cuda.runtime
    flags = getattr(runtime, "streamNonBlocking", 1) if non_blocking else getattr(runtime, "streamDefault", 0)
    # kept for the process's life (per thread and device, as the streams above): ExternalStream does not destroy it
    return cupy.cuda.ExternalStream(runtime.streamCreateWithPriority(flags, HIGHEST_PRIORITY))


def _thread_stream(cupy):
    device = cupy.cuda.runtime.getDevice()
    streams = getattr(_local, "streams", None)
    if streams is None:
        streams = _local.streams = {}
    if device not in streams:
        streams[device] = _new_stream(cupy, False, UPDATE_STREAM == "priority")
    return streams[device]


def side_stream(cupy, main):
    """The side stream of stream ``main`` (one for each main stream, made once): not blocking with respect to the
    legacy default stream, so that it runs beside ``main`` where that is the legacy stream too, at the default
    priority (the lowest)."""
    with _side_streams_lock:
        side = _side_streams.get(main.ptr)
        if side is None:
            side = _side_streams[main.ptr] = _new_stream(cupy, True)
        return side


def _capturing(stream) -> bool:
    try:
        return bool(stream.is_capturing())
    except Exception:  # the legacy default stream cannot be asked; nothing captures on it
        return False


_said_in_line = threading.Event()


def _say_in_line_once() -> None:
    """Log, once a process, that DASKSAE_UPDATE_STREAM is set but a step captured as a CUDA graph keeps it in line."""
    if not _said_in_line.is_set():
        _said_in_line.set()
        logging.getLogger("dasksae").warning(
            "DASKSAE_UPDATE_STREAM=%s does not apply to steps captured as CUDA graphs (one tile, or worker threads "
            "sharing a GPU, under DASKSAE_CUDA_GRAPHS=auto): their update stays in line; set DASKSAE_CUDA_GRAPHS=0 "
            "to run it on a side stream.", UPDATE_STREAM)


@contextlib.contextmanager
def side_stream_work(xp, pending: list, keep=()):
    """Run the block's launches on the current stream's :func:`side_stream` where ``DASKSAE_UPDATE_STREAM`` asks for
    it (:data:`UPDATE_STREAM`), else (and on NumPy, and while the current stream captures a CUDA graph) in line.

    The side stream first waits (on the device) for what the current stream has queued so far; the block's work then
    runs beside what the current stream queues next.  ``pending`` gets ``(event, keep)``: the event after the block's
    work, and ``keep``, the arrays it reads that the current stream allocated (dropped, their memory would go back to
    that stream's pool and could be reused there under the side stream's reads).  :func:`join_side_work` makes the
    current stream wait for them and drops ``keep``."""
    if xp.__name__ != "cupy" or UPDATE_STREAM == "0":
        yield
        return
    main = xp.cuda.get_current_stream()
    if _capturing(main):
        _say_in_line_once()
        yield
        return
    fork = xp.cuda.Event(block=False, disable_timing=True)
    record_event(fork, main)
    side = side_stream(xp, main)
    with side:
        stream_wait_event(fork)
        yield
        done = xp.cuda.Event(block=False, disable_timing=True)
        record_event(done, side)
    pending.append((done, keep))


def join_side_work(pending) -> None:
    """Make the current stream wait (on the device) for the side streams' work in ``pending``
    (:func:`side_stream_work`), and drop what that work kept: the current stream's later allocations come after it.
    Empties ``pending``; a no-op where it is empty or ``None``."""
    while pending:
        event, _ = pending.pop(0)
        stream_wait_event(event)


@contextlib.contextmanager
def tile_task_stream(xp, wait: bool = True):
    """Run the block on this thread's own CUDA stream (``xp`` CuPy) and (``wait``) wait for it at the end; else do
    nothing.  Without ``wait`` (a task that returns with its work queued) the stream is still waited for where the
    block raises."""
    if xp.__name__ != "cupy":
        yield
        return
    stream = _thread_stream(xp)
    with stream:
        try:
            yield
        except BaseException:
            with device_wait():
                stream.synchronize()
            raise
        if wait:
            with device_wait():
                stream.synchronize()


class QueuedFloats:
    """Device scalars (and numbers) copied, behind the work queued so far on the current stream, into pinned host
    memory; :meth:`floats` waits for that copy only (an event), not for whatever is queued after it."""

    def __init__(self, values):
        import cupy
        import cupyx

        values = list(values)
        self._numbers = [None if on_device(value) else float(value) for value in values]
        device = [value for value in values if on_device(value)]
        self._host, self._event, self._device = None, None, None
        if device:
            self._device = stacked_float64(device)
            self._host = cupyx.empty_pinned(self._device.shape, dtype=self._device.dtype)
            cupy.asnumpy(self._device, out=self._host, blocking=False)
            self._event = cupy.cuda.Event(block=False, disable_timing=True)
            self._event.record(cupy.cuda.get_current_stream())

    def floats(self) -> list[float]:
        if self._event is not None:
            with device_wait():
                self._event.synchronize()
            self._device = None  # its copy is done: the memory may go
        fetched = iter([] if self._host is None else self._host.tolist())
        return [next(fetched) if number is None else number for number in self._numbers]


def queue_losses(per_step: list):
    """A task's stage losses, one list a step (device scalars), copied to the host behind the work queued so far
    (:class:`QueuedFloats`): what :func:`read_losses` takes."""
    return QueuedFloats(loss for step in per_step for loss in step), [len(step) for step in per_step]


def read_losses(losses) -> list:
    """The stage losses, one list of floats a step, of :func:`queue_losses` (this waits for their copy to the host
    only) or of a list that is that already."""
    if isinstance(losses, list):
        return losses
    queued, per_step = losses
    flat = iter(queued.floats())
    return [[next(flat) for _ in range(count)] for count in per_step]


@contextlib.contextmanager
def failures_of_queued_steps():
    """A device error met while waiting for steps a task left queued (``DASKSAE_TASK_END=queue``) says so: it
    comes from one of that task's steps, not from what waited for them."""
    try:
        yield
    except Exception as error:
        if isinstance(error, MemoryError) or not type(error).__module__.startswith(("cupy", "cupy_backends")):
            raise  # an allocation that failed is the host's, in the task that asked for it: as it is
        raise RuntimeError(f"the device failed while running the steps a task left queued ({type(error).__name__}: "
                           f"{error}); set DASKSAE_TASK_END=wait to have each task wait for its steps, so that the "
                           "error is raised in the task whose step failed") from error


def current_stream(xp):
    """A context that makes this thread's current CUDA stream current again (on another thread too); a no-op on
    NumPy.  (:mod:`dasksae.launcher` runs a tile's step on its own stream from another tile's thread.)"""
    if xp.__name__ != "cupy":
        return contextlib.nullcontext()
    return xp.cuda.get_current_stream()


def has_device_arrays(value) -> bool:
    if isinstance(value, dict):
        return any(has_device_arrays(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_device_arrays(v) for v in value)
    return on_device(value)


def ready_to_leave(value) -> None:
    """Wait for the current stream if ``value`` holds CuPy arrays, so that another thread may read them."""
    if has_device_arrays(value):
        import cupy

        with device_wait():
            cupy.cuda.get_current_stream().synchronize()


def device_event(value):
    """A CUDA event recorded on the current stream if ``value`` holds CuPy arrays, else ``None``.

    A thread that receives ``value`` by reference waits for it with
    :func:`wait_for_event` on its own stream: the device orders the two
    streams, and neither thread waits for the device.
    """
    if not has_device_arrays(value):
        return None
    import cupy

    event = cupy.cuda.Event(block=False, disable_timing=True)
    record_event(event)
    return event


def wait_for_event(event) -> None:
    """Make the current stream wait (on the device) until ``event`` has happened."""
    stream_wait_event(event)


class StepFence:
    """How far a task's host may run ahead of its stream: at most :data:`RUN_AHEAD` tile steps.

    Nothing in a tile step waits for the device (the losses and ``a`` stay
    there, :func:`dasksae.tile_ops.reduce_stage`), so the host queues the next
    step while the device runs this one and the device does not idle between
    steps.  :meth:`step_done` marks the end of a step's queued work with an
    event and keeps ``keep`` (values received from other threads, whose
    memory their sender's stream would reuse once dropped) until the device
    has passed it; with more than :data:`RUN_AHEAD` steps unfinished, the host
    waits for the oldest.  ``DASKSAE_RUN_AHEAD=0`` waits for each step at its
    end, as before session 11.  On NumPy it only drops ``keep``.

    A task that returns with its steps queued hands what is still kept on
    (:meth:`handed_on`) to its tile's next task, whose fence takes it as
    ``pending``: the device has passed it once that task's own steps are.
    """

    def __init__(self, xp, pending=None):
        self._cupy = xp if xp.__name__ == "cupy" else None
        self._pending: list = list(pending or ())  # (event, kept values), oldest first

    def step_done(self, keep=None) -> None:
        if self._cupy is None:
            return
        stream = self._cupy.cuda.get_current_stream()
        if RUN_AHEAD == 0:
            with device_wait():
                stream.synchronize()
            return
        event = self._cupy.cuda.Event(block=False, disable_timing=True)
        record_event(event, stream)
        self._pending.append((event, keep))
        while self._pending and (self._pending[0][0].done or len(self._pending) > RUN_AHEAD):
            self._release_oldest()

    def finish(self) -> None:
        """Wait for every step's work (the task's end) and drop what was kept."""
        while self._pending:
            self._release_oldest()

    def handed_on(self) -> list:
        """What is kept until the device passes it, for the next task's fence (``pending``); nothing waits."""
        while self._pending and self._pending[0][0].done:
            self._pending.pop(0)
        pending, self._pending = self._pending, []
        return pending

    def _release_oldest(self) -> None:
        oldest, _ = self._pending.pop(0)
        if not oldest.done:
            with device_wait():
                oldest.synchronize()
