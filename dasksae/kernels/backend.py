"""Array-module dispatch: one code path for NumPy and CuPy.

Kernels call :func:`array_module` on their inputs and use the module it
returns.  CuPy is imported lazily, so importing dasksae never needs a GPU.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for array in arrays:
        if type(array).__module__.startswith("cupy"):
            import cupy

            return cupy
    return numpy


def as_strided(array, shape, strides):
    """A strided view of ``array`` (NumPy or CuPy), strides in bytes."""
    xp = array_module(array)
    if xp is numpy:
        return numpy.lib.stride_tricks.as_strided(array, shape=shape, strides=strides, writeable=True)
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def on_device(value) -> bool:
    """Whether ``value`` is a CuPy array (checked without importing CuPy)."""
    return type(value).__module__.startswith("cupy")


def copy_array(value, out=None):
    """A copy of ``value`` (NumPy or CuPy), or ``value`` copied into ``out`` (same shape and dtype).

    On CuPy, C-contiguous arrays are copied with one ``cudaMemcpyAsync`` on the current stream: the same bytes
    as CuPy's copy kernel, but a few microseconds of host time instead of tens (worker threads sharing a GPU
    take turns at the GIL, and a tile step copies about a hundred staged and sent values).
    """
    if out is None:
        out = array_module(value).empty(value.shape, value.dtype)
    if on_device(value) and value.flags.c_contiguous and out.flags.c_contiguous:
        if value.nbytes:
            out.data.copy_from_device_async(value.data, value.nbytes)
        return out
    out[...] = value
    return out


def kept_apart(value):
    """A copy of ``value`` if it is a device array, else ``value``: a step's result read later (a loss read
    once a task) that the next launch of a CUDA graph would otherwise overwrite where the graph made it."""
    return copy_array(value) if on_device(value) else value


def to_numpy(array):
    """Bring an array to host memory as NumPy (no copy for NumPy input)."""
    if on_device(array):
        return array.get()
    return numpy.asarray(array)


def stacked_float64(device_values):
    """0-d CuPy arrays (any float dtype) as one float64 CuPy vector: one transfer to the host for all of them."""
    import cupy

    return cupy.stack([cupy.asarray(value, dtype=cupy.float64).reshape(()) for value in device_values])


def host_floats(values) -> list[float]:
    """``values`` (Python numbers and 0-d NumPy or CuPy arrays) as Python floats, with one device transfer for all.

    A kernel that returns a loss as a device scalar does not wait for the
    device; converting each with ``float()`` would wait once per value, and
    every wait drains the stream, so the device idles while the host
    launches the next kernels.  This waits once.
    """
    values = list(values)
    device_values = [i for i, value in enumerate(values) if on_device(value)]
    out = [None if i in device_values else float(value) for i, value in enumerate(values)]
    if device_values:
        with device_wait():
            fetched = stacked_float64([values[i] for i in device_values]).get()
        for i, value in zip(device_values, fetched):
            out[i] = float(value)
    return out


_device_waits = {"seconds": 0.0}
_device_waits_lock = threading.Lock()


@contextlib.contextmanager
def device_wait():
    """Count the block's time as the host waiting for the device (:func:`device_wait_seconds`)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        with _device_waits_lock:
            _device_waits["seconds"] += time.perf_counter() - started


def device_wait_seconds() -> float:
    """Seconds this process's threads have waited for the device (in :func:`host_floats` and stream syncs), summed."""
    return _device_waits["seconds"]
