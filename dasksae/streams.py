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
* the task waits for its stream before it returns (:func:`synchronize`),
  so its results are complete for whatever thread runs the next task;
* a value that leaves the thread mid-task (a halo sent to another tile) is
  waited for first (:func:`ready_to_leave`): the receiving thread reads it
  on its own stream, which does not wait for this one.

On NumPy these do nothing.  In a single-threaded worker the stream changes
nothing but the queue's name.
"""

from __future__ import annotations

import contextlib
import os
import threading

from .kernels.backend import device_wait

_local = threading.local()


def _thread_stream(cupy):
    device = cupy.cuda.runtime.getDevice()
    streams = getattr(_local, "streams", None)
    if streams is None:
        streams = _local.streams = {}
    if device not in streams:
        streams[device] = cupy.cuda.Stream(non_blocking=False)
    return streams[device]


@contextlib.contextmanager
def tile_task_stream(xp):
    """Run the block on this thread's own CUDA stream (``xp`` CuPy) and wait for it at the end; else do nothing."""
    if xp.__name__ != "cupy":
        yield
        return
    stream = _thread_stream(xp)
    with stream:
        try:
            yield
        finally:
            with device_wait():
                stream.synchronize()


def has_device_arrays(value) -> bool:
    if isinstance(value, dict):
        return any(has_device_arrays(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_device_arrays(v) for v in value)
    return type(value).__module__.startswith("cupy")


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
    event.record(cupy.cuda.get_current_stream())
    return event


def wait_for_event(event) -> None:
    """Make the current stream wait (on the device) until ``event`` has happened."""
    import cupy

    cupy.cuda.get_current_stream().wait_event(event)


# DASKSAE_OVERLAP_UPDATE=1: each chunk's weight update runs on a second stream of the thread, beside
# the next chunk's GEMMs (memory-bound next to compute-bound); 0: in order on the thread's stream
_OVERLAP = os.environ.get("DASKSAE_OVERLAP_UPDATE", "0")
if _OVERLAP not in ("0", "1"):
    raise ValueError(f"DASKSAE_OVERLAP_UPDATE must be 1 or 0, got {_OVERLAP!r}; unset it for the default (0).")
OVERLAP_UPDATES = _OVERLAP == "1"


def _side_stream(cupy):
    device = cupy.cuda.runtime.getDevice()
    streams = getattr(_local, "side_streams", None)
    if streams is None:
        streams = _local.side_streams = {}
    if device not in streams:
        streams[device] = cupy.cuda.Stream(non_blocking=True)  # CUDA's default priority, the lowest
    return streams[device]


class SideWork:
    """Work that may run beside the current stream's: each :meth:`beside` block runs on the thread's side stream
    after everything queued so far on the current stream, and the current stream waits for it again within
    ``depth`` blocks and at :meth:`join`.

    The arrays a block reads that the current stream would otherwise free and reuse (``keep``) are held until
    the current stream has waited for the block: CuPy's pool hands a freed block to the next allocation on the
    stream that freed it, so dropping them earlier would let the current stream overwrite them while the side
    stream still reads them.  On NumPy, with the switch off, or while the current stream is being captured into
    a CUDA graph, the blocks run in order on the current stream and nothing is held.
    """

    def __init__(self, xp, depth: int = 2, enabled: bool | None = None):
        enabled = OVERLAP_UPDATES if enabled is None else enabled
        self._cupy = xp if (enabled and xp.__name__ == "cupy" and not _capturing(xp)) else None
        self.depth, self._pending = depth, []

    @contextlib.contextmanager
    def beside(self, keep=()):
        cupy = self._cupy
        if cupy is None:
            yield
            return
        main, side = cupy.cuda.get_current_stream(), _side_stream(cupy)
        side.wait_event(_record(cupy, main))
        with side:
            yield
        self._pending.append((_record(cupy, side), keep))
        while len(self._pending) > self.depth:
            self._wait_oldest(main)

    def _wait_oldest(self, main):
        done, _ = self._pending.pop(0)
        main.wait_event(done)

    def join(self):
        """The current stream waits for every block; what they read is released."""
        if self._cupy is not None:
            main = self._cupy.cuda.get_current_stream()
            while self._pending:
                self._wait_oldest(main)


def _record(cupy, stream):
    event = cupy.cuda.Event(block=False, disable_timing=True)
    event.record(stream)
    return event


def _capturing(cupy) -> bool:
    try:
        return cupy.cuda.get_current_stream().is_capturing()
    except Exception:  # noqa: BLE001 - the legacy default stream cannot be captured; old CuPy lacks the call
        return False
