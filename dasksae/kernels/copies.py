"""Many device copies in one launch: the values a tile sends after a graph run, and those it stages before one.

Four worker threads sharing a GPU replay their tile steps as CUDA graphs
(:mod:`dasksae.cuda_graphs`); the host work left in a step is mostly the
messages around the graphs.  On ``tiny`` 2x2, a tile copies 60-93 sent
arrays out of its graphs' memory a step and 69 received ones into the
buffers its graphs read (``bench/graph_runs.py``), each with its own
``cudaMemcpyAsync``.  In session 12, 27% of the four threads' sampled time
was in those calls (H200, coates200 bfloat16, ``bench/results/session12/diag``),
made one thread at a time, as the four take turns at the GIL.  Here the
arrays of one send batch, or of one receipt, go in one kernel launch,
:data:`SEGMENTS_A_LAUNCH` arrays a launch: the four threads' bfloat16 step
went from 46.0 to 41.8 ms (``session12/check``).

Launching that kernel through CuPy, with its 24 scalar arguments, was still
the largest single use of the GIL in session 14 (``bench/gil_sampler.py``);
it now goes through the driver with its arguments packed in one buffer
(:mod:`dasksae.kernels.driver_launch`; ``DASKSAE_DRIVER_LAUNCH=0`` goes
back to CuPy's launch, as does a machine where the driver cannot be had).
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from .backend import copy_array, on_device

SEGMENTS_A_LAUNCH = 8  # (source, destination, bytes) triples passed by value: one launch copies this many arrays
_THREADS = 256


def copy_segments_source() -> str:
    """CUDA source of the kernel: block row ``blockIdx.y`` copies segment ``y``'s bytes, 16 a thread where both
    ends are 16-byte aligned, one a thread otherwise (and for the tail)."""
    segment = ", ".join(f"unsigned long long s{i}, unsigned long long d{i}, unsigned long long n{i}"
                        for i in range(SEGMENTS_A_LAUNCH))
    cases = " ".join(f"case {i}: src = s{i}; dst = d{i}; n = n{i}; break;" for i in range(SEGMENTS_A_LAUNCH))
    return r"""
extern "C" __global__ void dasksae_copy_segments(""" + segment + r""") {
    unsigned long long src = 0, dst = 0, n = 0;
    switch (blockIdx.y) { """ + cases + r""" }
    const char* s = (const char*)src;
    char* d = (char*)dst;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long start = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long done = 0;
    if (((src | dst) & 15ULL) == 0) {  // 16 bytes a thread where both ends allow it
        const unsigned long long vectors = n >> 4;
        for (unsigned long long i = start; i < vectors; i += stride) {
            ((uint4*)d)[i] = ((const uint4*)s)[i];
        }
        done = vectors << 4;
    }
    for (unsigned long long i = done + start; i < n; i += stride) {
        d[i] = s[i];
    }
}
"""


@functools.lru_cache(maxsize=None)
def _copy_segments_kernel():
    import cupy

    return cupy.RawKernel(copy_segments_source(), "dasksae_copy_segments")


def copy_arrays(pairs) -> None:
    """Copy each ``(source, destination)`` pair (same shape and dtype; NumPy or CuPy), on the current stream.

    On CuPy, pairs of C-contiguous arrays on the current device go
    :data:`SEGMENTS_A_LAUNCH` to a launch of one kernel (bytes as they are,
    so any dtype); any other pair is copied on its own
    (:func:`~dasksae.kernels.backend.copy_array`).
    """
    segments, current = [], None
    for source, destination in pairs:
        if source.shape != destination.shape or source.dtype != destination.dtype:
            raise ValueError(f"cannot copy an array of shape {source.shape} and dtype {source.dtype} into one of "
                             f"shape {destination.shape} and dtype {destination.dtype}")
        if on_device(source) and on_device(destination) and current is None:
            import cupy

            current = cupy.cuda.runtime.getDevice()
        if (on_device(source) and on_device(destination) and source.flags.c_contiguous and destination.flags.c_contiguous
                and source.data.device_id == destination.data.device_id == current):
            if source.nbytes:
                segments.append((source.data.ptr, destination.data.ptr, source.nbytes))
        elif on_device(source) or on_device(destination):
            copy_array(source, out=destination)
        else:
            numpy.copyto(destination, source)
    for first in range(0, len(segments), SEGMENTS_A_LAUNCH):
        _launch(segments[first:first + SEGMENTS_A_LAUNCH], current)


# launch the batched copy through the driver with packed arguments (kernels/driver_launch.py); "0": through CuPy
DRIVER_LAUNCH = switch("DASKSAE_DRIVER_LAUNCH") == "1"
_fallbacks: list = []  # why the driver launch could not be used, in this process (then it is not tried again)


def segment_arguments(segments) -> list:
    """The kernel's arguments for up to :data:`SEGMENTS_A_LAUNCH` ``(source, destination, bytes)`` triples: each
    triple's three integers in turn, then zeros (segments that copy nothing)."""
    if len(segments) > SEGMENTS_A_LAUNCH:
        raise ValueError(f"one launch copies at most {SEGMENTS_A_LAUNCH} segments, got {len(segments)}")
    arguments = [0] * (3 * SEGMENTS_A_LAUNCH)
    for index, segment in enumerate(segments):
        arguments[3 * index:3 * index + 3] = segment
    return arguments


ARGUMENT_LAYOUT = "@" + "Q" * (3 * SEGMENTS_A_LAUNCH)  # the kernel's parameters: unsigned long long each


@functools.lru_cache(maxsize=None)
def _driver_launcher(device: int):
    """The batched copy's :class:`~dasksae.kernels.driver_launch.DriverLauncher` on ``device``, or ``None`` where
    the driver or CuPy's function handle cannot be had (the reason is kept in ``_fallbacks``)."""
    from .driver_launch import DriverLauncher

    try:
        return DriverLauncher(_copy_segments_kernel().kernel.ptr, ARGUMENT_LAYOUT)
    except (OSError, AttributeError) as error:
        _fallbacks.append(f"{type(error).__name__}: {error}")
        return None


def _launch(segments, device: int) -> None:
    """Copy ``segments`` on the current stream of ``device`` (the current one)."""
    import cupy

    stream = cupy.cuda.get_current_stream().ptr
    if len(segments) == 1:  # one array: the runtime's copy is one call too
        source, destination, nbytes = segments[0]
        cupy.cuda.runtime.memcpyAsync(destination, source, nbytes, cupy.cuda.runtime.memcpyDeviceToDevice, stream)
        return
    largest = max(nbytes for _, _, nbytes in segments)
    blocks = max(1, min(-(-largest // (16 * _THREADS)), 528))  # enough for 16 bytes a thread, at most 4 blocks an SM
    arguments = segment_arguments(segments)
    launcher = _driver_launcher(device) if DRIVER_LAUNCH and not _fallbacks else None
    if launcher is not None:
        try:
            launcher((blocks, len(segments), 1), (_THREADS, 1, 1), stream, arguments)
            return
        except RuntimeError as error:  # a launch refused launched nothing: CuPy's launch from now on, said once
            import logging

            _fallbacks.append(str(error))
            logging.getLogger("dasksae").warning("batched copies launched through CuPy from now on: %s", error)
    _copy_segments_kernel()((blocks, len(segments)), (_THREADS,), tuple(numpy.uint64(a) for a in arguments))
