"""How far a task's host runs ahead of its CUDA stream (dasksae.streams.StepFence), checked with a stand-in for
CuPy's events and streams: the logic of what is waited for and when, not the device."""

import gc
import logging
import threading
import types
import weakref

import pytest

from dasksae import streams


class _Event:
    def __init__(self, block=False, disable_timing=True):
        self.done = False
        self.waited = False

    def record(self, stream):
        stream.recorded.append(self)

    def synchronize(self):
        self.waited = self.done = True


class _Stream:
    def __init__(self):
        self.recorded, self.synchronized = [], 0

    def synchronize(self):
        self.synchronized += 1


def _fake_cupy():
    stream = _Stream()
    cuda = types.SimpleNamespace(Event=_Event, get_current_stream=lambda: stream)
    return types.SimpleNamespace(__name__="cupy", cuda=cuda), stream


class _Halo:
    """A received value; dropped by the fence once the step that read it is known done."""


def test_the_host_waits_only_for_steps_more_than_run_ahead_behind_and_keeps_their_halos_until_then(monkeypatch):
    monkeypatch.setattr(streams, "RUN_AHEAD", 2)
    xp, stream = _fake_cupy()
    fence = streams.StepFence(xp)
    halos = [_Halo() for _ in range(4)]
    alive = [weakref.ref(h) for h in halos]
    fence.step_done(keep=[halos.pop(0)])
    fence.step_done(keep=[halos.pop(0)])
    gc.collect()
    assert [e.waited for e in stream.recorded] == [False, False] and all(ref() is not None for ref in alive[:2])
    fence.step_done(keep=[halos.pop(0)])  # a third unfinished step: the host waits for the first
    gc.collect()
    assert [e.waited for e in stream.recorded] == [True, False, False]
    assert alive[0]() is None and alive[1]() is not None and alive[2]() is not None
    stream.recorded[1].done = True  # finished on its own: released without a wait
    fence.step_done(keep=[halos.pop(0)])
    gc.collect()
    assert [e.waited for e in stream.recorded] == [True, False, False, False] and alive[1]() is None
    fence.finish()
    gc.collect()
    assert all(e.done for e in stream.recorded) and all(ref() is None for ref in alive)
    assert stream.synchronized == 0


def test_a_task_that_leaves_its_steps_queued_hands_what_its_fence_keeps_to_its_tiles_next_task(monkeypatch):
    """DASKSAE_TASK_END=queue on SPMD tiles: at a task's end nothing waits; the halos of steps the device has not
    passed go to the next task's fence, which counts those steps against RUN_AHEAD and waits for them as its own."""
    monkeypatch.setattr(streams, "RUN_AHEAD", 2)
    xp, stream = _fake_cupy()
    first = streams.StepFence(xp)
    halos = [_Halo() for _ in range(4)]
    alive = [weakref.ref(h) for h in halos]
    for _ in range(3):
        first.step_done(keep=[halos.pop(0)])  # the third waits for the first step (RUN_AHEAD)
    stream.recorded[1].done = True  # the second finished on its own
    pending = first.handed_on()
    gc.collect()
    assert [e.waited for e in stream.recorded] == [True, False, False]  # the task's end waited for nothing
    assert [event for event, _ in pending] == [stream.recorded[2]]  # only the unfinished step goes on
    assert alive[1]() is None and alive[2]() is not None
    assert first.handed_on() == []  # handed on once
    second = streams.StepFence(xp, pending)
    del pending
    second.step_done(keep=[halos.pop(0)])
    gc.collect()
    assert alive[2]() is not None and not stream.recorded[2].waited  # two unfinished steps: within RUN_AHEAD
    second.step_done(keep=[_Halo()])  # three: the next task waits for the one the last task left
    gc.collect()
    assert stream.recorded[2].waited and alive[2]() is None and alive[3]() is not None
    second.finish()
    gc.collect()
    assert all(e.done for e in stream.recorded) and all(ref() is None for ref in alive)
    assert stream.synchronized == 0


def test_run_ahead_0_waits_for_each_step_and_numpy_waits_for_nothing(monkeypatch):
    import numpy

    monkeypatch.setattr(streams, "RUN_AHEAD", 0)
    xp, stream = _fake_cupy()
    fence = streams.StepFence(xp)
    for _ in range(3):
        fence.step_done(keep=[_Halo()])
    assert stream.synchronized == 3 and stream.recorded == []
    monkeypatch.setattr(streams, "RUN_AHEAD", 2)
    streams.StepFence(numpy).step_done(keep=[_Halo()])  # no CuPy: nothing to record or wait for


def test_with_the_gil_held_a_step_is_marked_by_the_driver_on_the_fences_stream(monkeypatch):
    """DASKSAE_DRIVER_GIL=hold: the step's event is recorded through the driver (``cuEventRecord``, no CuPy call), on
    the stream the fence was given, with the event's and the stream's handles."""
    from dasksae.kernels import driver_launch

    calls = []
    monkeypatch.setattr(driver_launch, "HOLD", True)
    monkeypatch.setattr(driver_launch, "driver_call", lambda name, *arguments: calls.append((name, *arguments)))
    monkeypatch.setattr(_Event, "ptr", 11, raising=False)
    monkeypatch.setattr(_Stream, "ptr", 22, raising=False)
    xp, stream = _fake_cupy()
    streams.StepFence(xp).step_done(keep=[_Halo()])
    assert calls == [("cuEventRecord", 11, 22)]
    assert stream.recorded == []  # not through CuPy's record


def test_a_device_error_met_waiting_for_queued_steps_says_where_it_comes_from():
    """``DASKSAE_TASK_END=queue``: a task returns with its steps queued, so a device error of one of them is met
    by whatever waits for them next (the losses' task, a state picked from the bundle).  That error says so, and
    how to have it raised in the task whose step failed; any other error passes through as it is."""
    from dasksae.tiled_network import fused_losses, pick_stage

    class CUDARuntimeError(RuntimeError):
        pass

    CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"  # as CuPy's own

    class Failing:
        def __init__(self, error):
            self.error = error

        def floats(self):
            raise self.error

        def synchronize(self):
            raise self.error

    device_error = CUDARuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
    for wait in (lambda failing: fused_losses({"losses": (failing, [1])}),
                 lambda failing: pick_stage({"done": failing, "states": [0]}, "states", 0)):
        with pytest.raises(RuntimeError, match="the device failed while running the steps a task left queued "
                                               r"\(CUDARuntimeError: cudaErrorIllegalAddress.*DASKSAE_TASK_END=wait") as raised:
            wait(Failing(device_error))
        assert raised.value.__cause__ is device_error
        with pytest.raises(ValueError, match="^not a device error$"):
            wait(Failing(ValueError("not a device error")))
        out_of_memory = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})
        with pytest.raises(MemoryError, match="^Out of memory allocating 8 bytes$"):  # the host's: passed as it is
            wait(Failing(out_of_memory("Out of memory allocating 8 bytes")))


class _SideStream(_Stream):
    """A stand-in CuPy stream that can be made current (``with``) and records what it was made to wait for."""

    def __init__(self, non_blocking=False, current=None):
        super().__init__()
        self.non_blocking, self.waited, self.launched, self._current = non_blocking, [], [], current
        self.ptr = id(self)

    def __enter__(self):
        self._current.append(self)
        return self

    def __exit__(self, *exc):
        self._current.pop()

    def is_capturing(self):
        return False


def _fake_cupy_with_streams(monkeypatch):
    current = []
    main = _SideStream(current=current)
    current.append(main)
    cuda = types.SimpleNamespace(Event=_Event, get_current_stream=lambda: current[-1],
                                 Stream=lambda non_blocking=False: _SideStream(non_blocking, current))
    monkeypatch.setattr(streams, "stream_wait_event", lambda event: current[-1].waited.append(event))
    monkeypatch.setattr(streams, "_side_streams", {})
    return types.SimpleNamespace(__name__="cupy", cuda=cuda), main, current


def test_side_stream_work_runs_after_what_was_queued_and_the_join_waits_for_it_before_dropping_its_arrays(monkeypatch):
    """DASKSAE_UPDATE_STREAM=1: the block runs on a side stream (not blocking with respect to the legacy stream) that
    first waits for an event recorded on the current stream; its end is an event on the side stream, and the arrays
    it reads are kept until join_side_work has made the current stream wait for that event.  One side stream a main
    stream, made once."""
    monkeypatch.setattr(streams, "UPDATE_STREAM", "1")
    xp, main, current = _fake_cupy_with_streams(monkeypatch)
    pending, codes = [], _Halo()
    alive = weakref.ref(codes)
    with streams.side_stream_work(xp, pending, keep=(codes,)):
        side = current[-1]
        side.launched.append("update")
    del codes
    gc.collect()
    assert side is not main and side.non_blocking and current == [main]
    assert [e for e in main.recorded] == [side.waited[0]] and side.recorded == [pending[0][0]]
    assert alive() is not None and main.waited == []  # the side stream's work is not waited for yet
    with streams.side_stream_work(xp, pending):
        assert current[-1] is side  # the same side stream again
    streams.join_side_work(pending)
    gc.collect()
    assert main.waited == side.recorded and len(main.waited) == 2 and pending == [] and alive() is None
    streams.join_side_work(None)  # nothing pending: nothing to do


@pytest.mark.parametrize("setting", ["0", "1"])
def test_side_stream_work_runs_in_line_when_off_and_on_numpy(monkeypatch, setting):
    import numpy

    monkeypatch.setattr(streams, "UPDATE_STREAM", setting)
    xp, main, current = _fake_cupy_with_streams(monkeypatch)
    pending = []
    for module in ([xp] if setting == "0" else []) + [numpy]:
        with streams.side_stream_work(module, pending, keep=(_Halo(),)):
            assert current == [main]
    assert pending == [] and main.recorded == [] and main.waited == []


def test_side_stream_work_stays_in_line_while_the_stream_captures_a_graph_and_says_so_once(monkeypatch, caplog):
    """DASKSAE_UPDATE_STREAM=1 on a stream that captures a CUDA graph (DASKSAE_CUDA_GRAPHS=auto graphs one tile
    and worker threads): the block runs in line, nothing is recorded or kept, and the log says once a process
    that the switch does not apply and what to set."""
    monkeypatch.setattr(streams, "UPDATE_STREAM", "1")
    monkeypatch.setattr(streams, "_said_in_line", threading.Event())
    xp, main, current = _fake_cupy_with_streams(monkeypatch)
    monkeypatch.setattr(main, "is_capturing", lambda: True)
    pending = []
    with caplog.at_level(logging.WARNING, logger="dasksae"):
        for _ in range(2):
            with streams.side_stream_work(xp, pending, keep=(_Halo(),)):
                assert current == [main]
    assert pending == [] and main.recorded == [] and main.waited == []
    said = [record.getMessage() for record in caplog.records if "DASKSAE_UPDATE_STREAM" in record.getMessage()]
    assert len(said) == 1 and "set DASKSAE_CUDA_GRAPHS=0" in said[0], said


def test_highest_priority_streams_come_from_cupy_where_it_takes_a_priority_else_from_the_runtime():
    """DASKSAE_UPDATE_STREAM=priority: the tile's stream at the device's greatest priority, made by CuPy where its
    Stream takes a priority (``Stream(priority=...)``; the lent GPU machine's CuPy deprecates ExternalStream); an
    older CuPy's Stream refuses the argument, and the stream comes from ``streamCreateWithPriority`` with the flags asked for."""
    made = []

    class Stream:
        def __init__(self, non_blocking=False, priority=None):
            made.append(("Stream", non_blocking, priority))

    runtime = types.SimpleNamespace(streamCreateWithPriority=lambda flags, priority: ("handle", flags, priority))
    cuda = types.SimpleNamespace(Stream=Stream, runtime=runtime, ExternalStream=lambda ptr: ("external", ptr))
    cupy = types.SimpleNamespace(cuda=cuda)
    assert isinstance(streams._new_stream(cupy, True, True), Stream)
    assert made == [("Stream", True, streams.HIGHEST_PRIORITY)]
    cuda.Stream = lambda non_blocking=False: made.append(("old Stream", non_blocking))
    assert streams._new_stream(cupy, False, True) == ("external", ("handle", 0, streams.HIGHEST_PRIORITY))
    assert streams._new_stream(cupy, True, True) == ("external", ("handle", 1, streams.HIGHEST_PRIORITY))
    assert streams._new_stream(cupy, True) is None and made[-1] == ("old Stream", True)  # default priority
