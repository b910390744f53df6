"""Array-module dispatch: one code path for NumPy and CuPy.

Kernels call :func:`array_module` on their inputs and use the module it
returns.  CuPy is imported lazily, so importing dasksae never needs a GPU.
"""

from __future__ import annotations

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


def to_numpy(array):
    """Bring an array to host memory as NumPy (no copy for NumPy input)."""
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return numpy.asarray(array)
