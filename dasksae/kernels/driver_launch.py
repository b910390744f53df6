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
The launch releases the GIL as CuPy's does. Where the driver library or
CuPy's function handle cannot be had, the caller launches through CuPy
(:func:`dasksae.kernels.copies.copy_arrays` does).
"""

from __future__ import annotations

import ctypes
import struct
import threading

_PARAM_BUFFER_POINTER, _PARAM_BUFFER_SIZE, _PARAM_END = 1, 2, 0  # CU_LAUNCH_PARAM_* of cuda.h
_INVALID_CONTEXT = 201  # CUDA_ERROR_INVALID_CONTEXT: this thread has no current context yet
_driver = None
_driver_lock = threading.Lock()


def _launch_kernel():
    """``cuLaunchKernel`` of ``libcuda.so.1`` with its argument types (loaded once)."""
    global _driver
    with _driver_lock:
        if _driver is None:
            library = ctypes.CDLL("libcuda.so.1")
            function = library.cuLaunchKernel
            function.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
            function.restype = ctypes.c_int
            _driver = function
    return _driver


class DriverLauncher:
    """Launch ``CUfunction`` ``function`` (an integer handle) with arguments laid out as ``struct`` format
    ``layout`` (native alignment: each argument at the offset CUDA gives a kernel parameter of its type)."""

    def __init__(self, function: int, layout: str):
        self.function = function
        self.layout = struct.Struct(layout)
        self._launch = _launch_kernel()
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
        status = self._launch(self.function, *grid, *block, 0, stream, None, extra)
        if status == _INVALID_CONTEXT:  # a thread whose first CUDA call this is: make the device's context current
            import cupy

            cupy.cuda.runtime.setDevice(cupy.cuda.runtime.getDevice())
            status = self._launch(self.function, *grid, *block, 0, stream, None, extra)
        if status:
            raise RuntimeError(f"cuLaunchKernel failed with CUDA error {status}")
