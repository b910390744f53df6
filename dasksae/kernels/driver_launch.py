"""A kernel launched through the CUDA driver with its arguments packed in one buffer: little host work a launch.

Four worker threads sharing a GPU spend the GIL on Python around their
CUDA graphs, and the largest single part of it is launching the batched
copy of :mod:`dasksae.kernels.copies`: sampled by py-spy from outside the
process (``bench/gil_sampler.py``; H200, coates200 bfloat16, M=96,
``bench/results/session14/gil/``), 9.3% of the step's wall time was
CuPy's launch call with its 24 scalar arguments, which it converts one by
one, and 5.5% making the ``numpy.uint64`` scalars it takes; about 150
launches a step, so some 25 us of GIL each.

:class:`DriverLauncher` packs the arguments with :mod:`struct` into a
buffer of this thread's and hands it to ``cuLaunchKernel`` (through
:mod:`ctypes`) as ``CU_LAUNCH_PARAM_BUFFER_POINTER``: one call, the same
kernel (the ``CUfunction`` CuPy loaded), the same grid, block and stream.
The launch releases the GIL as CuPy's does (unless ``DASKSAE_DRIVER_GIL=hold``).
Where the driver library or CuPy's function handle cannot be had, the caller launches through CuPy
(:func:`dasksae.kernels.copies.copy_arrays` does).

The other short calls of that host path go through the driver here too where
``DASKSAE_DRIVER_GIL=hold`` (:data:`HOLD`): a graph's launch
(:func:`launch_graph`), a stream's wait for an event
(:func:`stream_wait_event`), an event's record (:func:`record_event`) and a
one-array copy (:func:`copy_async`); with ``hold``, these calls and the
kernel's launch keep the GIL while the driver runs them (``ctypes.PyDLL``).
Each is a few microseconds, and none waits for the device.  Released (the
default, as CuPy's calls and ``ctypes.CDLL`` do), each lets another worker
thread take the GIL, and the caller must then wait to get it back: four
threads sharing a GPU in bfloat16 made about 220 such waits a tile step each
(session 28, ``bench/results/session28/next/``, "context switches").  Held,
they made about 105, and the threads ran 7 ms a step on a CPU instead of
8-9, but the step was no faster (``session28/gil/``): ``release`` stays the
default.
"""

from __future__ import annotations

import collections
import ctypes
import struct
import threading

from ..switches import switch

_PARAM_BUFFER_POINTER, _PARAM_BUFFER_SIZE, _PARAM_END = 1, 2, 0  # CU_LAUNCH_PARAM_* of cuda.h
_INVALID_CONTEXT = 201  # CUDA_ERROR_INVALID_CONTEXT: this thread has no current context yet
# the driver calls of this module keep the GIL while they run ("hold": ctypes.PyDLL) or let it go ("release")
HOLD = switch("DASKSAE_DRIVER_GIL") == "hold"
_P = ctypes.c_void_p
ARGUMENT_TYPES = {  # the driver functions this module calls, with their arguments' types (cuda.h)
    "cuLaunchKernel": [_P] + [ctypes.c_uint] * 7 + [_P] * 3,
    "cuGraphLaunch": [_P, _P],
    "cuStreamWaitEvent": [_P, _P, ctypes.c_uint],
    "cuEventRecord": [_P, _P],
    "cuMemcpyDtoDAsync_v2": [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, _P],
}
_functions: dict = {}  # (name, hold) -> the function of libcuda.so.1 with its argument types
_driver_lock = threading.Lock()
calls: collections.Counter = collections.Counter()  # name -> calls made through driver_call in this process


def driver_function(name: str, hold: bool):
    """Driver function ``name`` of ``libcuda.so.1`` (loaded once a GIL policy): through ``ctypes.PyDLL`` where
    ``hold`` (the GIL kept while it runs), else ``ctypes.CDLL``."""
    key = (name, hold)
    function = _functions.get(key)
    if function is None:
        with _driver_lock:
            library = (ctypes.PyDLL if hold else ctypes.CDLL)("libcuda.so.1")
            function = getattr(library, name)
            function.argtypes = ARGUMENT_TYPES[name]
            function.restype = ctypes.c_int
            _functions[key] = function
    return function


def driver_call(name: str, *arguments) -> None:
    """Call driver function ``name`` with ``arguments`` under the GIL policy of :data:`HOLD`; a thread whose first
    CUDA call this is gets the device's context first.  Raises ``RuntimeError`` with the CUDA error's number."""
    function = driver_function(name, HOLD)
    status = function(*arguments)
    if status == _INVALID_CONTEXT:
        import cupy

        cupy.cuda.runtime.setDevice(cupy.cuda.runtime.getDevice())
        status = function(*arguments)
    calls[name] += 1
    if status:
        raise RuntimeError(f"{name} failed with CUDA error {status}")


def _current_stream() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def launch_graph(graph) -> None:
    """Launch CuPy graph ``graph`` on the current stream: through the driver where :data:`HOLD` (once CuPy has made
    its executable graph), else CuPy's launch."""
    executable = getattr(graph, "graphExec", 0) if HOLD else 0
    if executable:
        driver_call("cuGraphLaunch", executable, _current_stream())
    else:
        graph.launch()


def stream_wait_event(event) -> None:
    """Make the current stream wait (on the device) for CuPy event ``event``."""
    if HOLD:
        driver_call("cuStreamWaitEvent", _current_stream(), event.ptr, 0)
    else:
        import cupy

        cupy.cuda.get_current_stream().wait_event(event)


def record_event(event, stream=None) -> None:
    """Record CuPy event ``event`` on CuPy stream ``stream`` (the current stream if ``None``)."""
    if HOLD:
        driver_call("cuEventRecord", event.ptr, _current_stream() if stream is None else stream.ptr)
    elif stream is not None:
        event.record(stream)
    else:
        import cupy

        event.record(cupy.cuda.get_current_stream())


def copy_async(destination: int, source: int, nbytes: int, stream: int) -> None:
    """Copy ``nbytes`` from device address ``source`` to ``destination`` on ``stream`` (no wait)."""
    if HOLD:
        driver_call("cuMemcpyDtoDAsync_v2", destination, source, nbytes, stream)
    else:
        import cupy

        cupy.cuda.runtime.memcpyAsync(destination, source, nbytes, cupy.cuda.runtime.memcpyDeviceToDevice, stream)


class DriverLauncher:
    """Launch ``CUfunction`` ``function`` (an integer handle) with arguments laid out as ``struct`` format
    ``layout`` (native alignment: each argument at the offset CUDA gives a kernel parameter of its type)."""

    def __init__(self, function: int, layout: str):
        self.function = function
        self.layout = struct.Struct(layout)
        driver_function("cuLaunchKernel", HOLD)  # loaded here: a launcher that cannot be had fails at once
        self._local = threading.local()

    def _buffers(self):
        """This thread's argument buffer and the ``extra`` array that points at it (threads launch at once)."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            arguments = ctypes.create_string_buffer(self.layout.size)
            size = ctypes.c_size_t(self.layout.size)
            extra = (ctypes.c_void_p * 5)(_PARAM_BUFFER_POINTER, ctypes.addressof(arguments), _PARAM_BUFFER_SIZE,
                                          ctypes.addressof(size), _PARAM_END)
            buffers = self._local.buffers = (arguments, size, extra)
        return buffers

    def __call__(self, grid, block, stream: int, arguments) -> None:
        buffer, _, extra = self._buffers()
        self.layout.pack_into(buffer, 0, *arguments)
        driver_call("cuLaunchKernel", self.function, *grid, *block, 0, stream, None, extra)
