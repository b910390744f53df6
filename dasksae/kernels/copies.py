"""Many device copies in one launch: the values a tile sends after a graph run, those it stages before one, and the
halo strips its windows are assembled from.

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

Halo windows are assembled and summed from strips, views of rows of
contiguous bytes at a pitch (:func:`copy_views`, :func:`add_views`, used by
:mod:`dasksae.halo`): CuPy's copy of such a view took 3.16 ms of the four
threads' bfloat16 step in 400 launches; these strip kernels took the step
from 34.1 to 31.5 ms (H200, session 23, ``bench/results/session23/strips``).
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from .backend import array_module, copy_array, on_device
from .driver_launch import copy_async

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
    (:func:`~dasksae.kernels.backend.copy_array`).  Every pair is checked before anything is copied.
    """
    if pairs:
        CopyPlan(pairs).run()


class CopyPlan:
    """The copies of :func:`copy_arrays`, worked out once: :meth:`run` makes them on the current stream.

    For pairs copied again and again (a tile's sends out of its CUDA graphs' memory into the same outboxes every
    step, :mod:`dasksae.cuda_graphs`): the shapes, dtypes, devices and contiguity are checked, and the launches'
    arguments packed, once instead of every step.  A plan holds its arrays, so their memory stays while it lives.
    """

    __slots__ = ("pairs", "_singles", "_launches", "_device")

    def __init__(self, pairs):
        self.pairs = list(pairs)
        segments, current, self._singles = [], None, []
        for source, destination in self.pairs:
            if source.shape != destination.shape or source.dtype != destination.dtype:
                raise ValueError(f"cannot copy an array of shape {source.shape} and dtype {source.dtype} into one of "
                                 f"shape {destination.shape} and dtype {destination.dtype}")
            both = on_device(source) and on_device(destination)
            if both and current is None:
                import cupy

                current = cupy.cuda.runtime.getDevice()
            if (both and source.flags.c_contiguous and destination.flags.c_contiguous
                    and source.data.device_id == destination.data.device_id == current):
                if source.nbytes:
                    segments.append((source.data.ptr, destination.data.ptr, source.nbytes))
            else:
                self._singles.append((source, destination))
        self._device = current
        self._launches = [_launch_arguments(segments[first:first + SEGMENTS_A_LAUNCH])
                          for first in range(0, len(segments), SEGMENTS_A_LAUNCH)]

    def run(self) -> None:
        for source, destination in self._singles:
            if on_device(source) or on_device(destination):
                copy_array(source, out=destination)
            else:
                numpy.copyto(destination, source)
        if self._launches:
            import cupy

            stream = cupy.cuda.get_current_stream().ptr
            for grid, arguments in self._launches:
                _launch(grid, arguments, self._device, stream)


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
def _driver_launcher(device: int, kernel: str = "dasksae_copy_segments"):
    """A :class:`~dasksae.kernels.driver_launch.DriverLauncher` of ``kernel`` (the batched copy, or one of the
    strip kernels) on ``device``, or ``None`` where the driver or CuPy's function handle cannot be had (the reason
    is kept in ``_fallbacks``)."""
    from .driver_launch import DriverLauncher

    function, layout = _KERNELS[kernel]
    try:
        return DriverLauncher(function().kernel.ptr, layout)
    except (OSError, AttributeError) as error:
        _fallbacks.append(f"{type(error).__name__}: {error}")
        return None


def _launch_through_driver_or_cupy(kernel: str, grid, device: int, stream: int, arguments) -> None:
    """Launch ``kernel`` (unsigned long long arguments) with :data:`_THREADS` threads a block: through the driver
    where it can be (``DASKSAE_DRIVER_LAUNCH``), else through CuPy."""
    launcher = _driver_launcher(device, kernel) if DRIVER_LAUNCH and not _fallbacks else None
    if launcher is not None:
        try:
            launcher(grid, (_THREADS, 1, 1), stream, arguments)
            return
        except RuntimeError as error:  # a launch refused launched nothing: CuPy's launch from now on, said once
            import logging

            _fallbacks.append(str(error))
            logging.getLogger("dasksae").warning("batched copies launched through CuPy from now on: %s", error)
    _KERNELS[kernel][0]()(grid[:2], (_THREADS,), tuple(numpy.uint64(a) for a in arguments))


def _blocks_for(largest: int, bytes_a_block: int = 16 * _THREADS) -> int:
    """Blocks a launch takes along x for a largest copy of ``largest`` bytes: enough for ``bytes_a_block`` each (16
    bytes a thread), at most 4 blocks an SM of an H100/H200."""
    return max(1, min(-(-largest // bytes_a_block), 528))


def _launch_arguments(segments):
    """``(grid, arguments)`` of one launch copying ``segments`` (``grid`` ``None``: one array, which the runtime's
    copy takes in one call too; ``arguments`` its destination, source and bytes)."""
    if len(segments) == 1:
        source, destination, nbytes = segments[0]
        return None, (destination, source, nbytes)
    blocks = _blocks_for(max(nbytes for _, _, nbytes in segments))
    return (blocks, len(segments), 1), segment_arguments(segments)


def _launch(grid, arguments, device: int, stream: int) -> None:
    """One launch of :func:`_launch_arguments` on ``stream`` of ``device`` (the current one)."""
    if grid is None:
        copy_async(*arguments, stream)
        return
    _launch_through_driver_or_cupy("dasksae_copy_segments", grid, device, stream, arguments)


# ---------------------------------------------------------------- strips: rows of contiguous bytes at a pitch

# Halo windows are assembled from strips (:mod:`dasksae.halo`): views ``map[p0:p1, q0:q1]`` whose rows are runs of
# ``(q1 - q0) C M`` contiguous values at the map's row pitch.  CuPy's copy of such a view computes each 4-byte
# value's index: on the H200 the four worker threads' bfloat16 step spent 3.16 ms of GPU time a step in 400 such
# copies (``bench/results/session23/tables``).  These kernels move a strip 16 bytes a thread, several strips a launch.
STRIPS_A_LAUNCH = 8
STRIP_FIELDS = 6  # source, destination, rows, row bytes, source pitch, destination pitch (unsigned long long each)
STRIP_LAYOUT = "@" + "Q" * (STRIP_FIELDS * STRIPS_A_LAUNCH)
STRIP_CHUNK = 16 * _THREADS * 4  # the bytes a block of the strip kernels moves at a time (16 a unit, UNROLL a thread)


def copy_strips_source() -> str:
    """CUDA source of ``dasksae_copy_strips`` (block row ``blockIdx.y`` copies strip ``y``) and of
    ``dasksae_add_strips_float32`` (adds the float32 values of its strips into their destinations): 16 bytes a
    thread where the pointers, pitches and row bytes are multiples of 16, one byte (one float) a thread otherwise."""
    fields = ("s", "d", "rows", "bytes", "sp", "dp")
    parameters = ", ".join(f"unsigned long long {name}{i}" for i in range(STRIPS_A_LAUNCH) for name in fields)
    cases = " ".join(f"case {i}: " + " ".join(f"f[{k}] = {name}{i};" for k, name in enumerate(fields)) + " break;"
                     for i in range(STRIPS_A_LAUNCH))
    body = r"""
typedef unsigned long long u64;
// the unit `from` stored at `to`, or (add: floats) added to `old`, the value there, and stored
__device__ __forceinline__ void put(uint4* to, const uint4 from, const uint4 old, const bool add)
{
    if (!add) {
        *to = from;
        return;
    }
    const float4 a = *(const float4*)&from;
    float4 b = *(const float4*)&old;
    b.x += a.x; b.y += a.y; b.z += a.z; b.w += a.w;
    *(float4*)to = b;
}
__device__ __forceinline__ void put(char* to, const char from, const char, const bool) { *to = from; }
__device__ __forceinline__ void put(float* to, const float from, const float old, const bool add)
{
    *to = add ? old + from : from;
}
// strip f: f[0] source, f[1] destination, f[2] rows, f[3] bytes a row, f[4] and f[5] the rows' pitches in bytes;
// T the unit a thread moves (its size divides all of them).  A block takes a chunk of a row at a time (UNROLL units
// a thread, their loads, and the adds' loads of what they add to, in flight together), the chunks of all rows in
// turn across the grid: one division a chunk, not a 64-bit division a unit (session 44: the four worker threads'
// step spent 1.86 ms in this kernel)
#define UNROLL 4
template <typename T> __device__ __forceinline__ void strip_units(const u64* f, const bool add)
{
    const u64 per_row = f[3] / sizeof(T), chunk = (u64)blockDim.x * UNROLL;
    const u64 chunks_a_row = (per_row + chunk - 1) / chunk, chunks = f[2] * chunks_a_row;
    for (u64 c = blockIdx.x; c < chunks; c += gridDim.x) {
        const u64 row = c / chunks_a_row, first = (c - row * chunks_a_row) * chunk + threadIdx.x;
        const T* from = (const T*)(f[0] + row * f[4]);
        T* to = (T*)(f[1] + row * f[5]);
        T values[UNROLL], olds[UNROLL];  // (olds: what the adds add to, loaded with the values)
        for (int u = 0; u < UNROLL; ++u) {
            const u64 unit = first + (u64)u * blockDim.x;
            if (unit < per_row) {
                values[u] = from[unit];
                olds[u] = add ? to[unit] : T{};
            }
        }
        for (int u = 0; u < UNROLL; ++u) {
            const u64 unit = first + (u64)u * blockDim.x;
            if (unit < per_row) put(to + unit, values[u], olds[u], add);
        }
    }
}
__device__ __forceinline__ void strip(const u64* f, const bool add)
{
    if (((f[0] | f[1] | f[3] | f[4] | f[5]) & 15ULL) == 0) strip_units<uint4>(f, add);
    else if (add) strip_units<float>(f, true);
    else strip_units<char>(f, false);
}
"""
    kernels = "".join(
        f'extern "C" __global__ void {name}({parameters})\n{{\n    u64 f[{STRIP_FIELDS}] = {{0, 0, 0, 0, 0, 0}};\n'
        f"    switch (blockIdx.y) {{ {cases} }}\n    strip(f, {add});\n}}\n"
        for name, add in (("dasksae_copy_strips", "false"), ("dasksae_add_strips_float32", "true")))
    return body + kernels


@functools.lru_cache(maxsize=None)
def _strips_kernel(name: str):
    import cupy

    return cupy.RawKernel(copy_strips_source(), name)


def strip_layout(array):
    """``(pointer, rows, row bytes, pitch)`` of an array (CuPy, or NumPy for the CPU tests) whose axes after the first are C-contiguous together
    (a view ``map[p0:p1, q0:q1]`` of a C-contiguous map), or ``None`` where it is not laid out so."""
    if array.ndim == 0 or array.size == 0:
        return None
    expected = array.itemsize
    for size, stride in reversed(list(zip(array.shape[1:], array.strides[1:]))):
        if size != 1 and stride != expected:
            return None
        expected *= size
    rows = array.shape[0]
    pitch = array.strides[0] if rows > 1 else expected
    if pitch < expected:
        return None
    pointer = array.data.ptr if on_device(array) else array.ctypes.data
    return pointer, rows, expected, pitch


def _strips(pairs, add: bool):
    """The ``(source, destination)`` pairs that the strip kernels take as their strips' fields (a pair's two
    layouts: same rows and row bytes, on the current device), and the others."""
    import cupy

    device = cupy.cuda.runtime.getDevice()
    strips, others = [], []
    for source, destination in pairs:
        if source.shape != destination.shape or source.dtype != destination.dtype:
            raise ValueError(f"cannot copy an array of shape {source.shape} and dtype {source.dtype} into one of "
                             f"shape {destination.shape} and dtype {destination.dtype}")
        if source.size == 0:
            continue
        taken = (on_device(source) and on_device(destination) and source.data.device_id == device
                 and destination.data.device_id == device and (not add or source.dtype == numpy.float32))
        source_layout = strip_layout(source) if taken else None
        destination_layout = strip_layout(destination) if source_layout else None
        if destination_layout and source_layout[1:3] == destination_layout[1:3]:
            strips.append((source_layout[0], destination_layout[0], *source_layout[1:3], source_layout[3],
                           destination_layout[3]))
        else:
            others.append((source, destination))
    return strips, others, device


def _launch_strips(kernel: str, strips, device: int) -> None:
    import cupy

    stream = cupy.cuda.get_current_stream().ptr
    # (a block a chunk of a row: a row's chunks rounded up)
    blocks = _blocks_for(max(rows * -(-row_bytes // STRIP_CHUNK) for _, _, rows, row_bytes, _, _ in strips) * STRIP_CHUNK,
                         STRIP_CHUNK)
    arguments = [value for strip in strips for value in strip] + [0] * (STRIP_FIELDS * (STRIPS_A_LAUNCH - len(strips)))
    _launch_through_driver_or_cupy(kernel, (blocks, len(strips), 1), device, stream, arguments)


def copy_views(pairs) -> None:
    """Copy each ``(source, destination)`` pair of same-shaped arrays (views allowed) on the current stream.

    On CuPy, pairs that are :func:`strip_layout` strips on both sides (halo strips and the windows they go into)
    go :data:`STRIPS_A_LAUNCH` to a launch of one kernel; any other pair is copied by the array module.  NumPy
    pairs are copied by NumPy.  The destinations must not overlap each other or the sources.
    """
    if not pairs:
        return
    if not any(on_device(array) for pair in pairs for array in pair):
        for source, destination in pairs:
            numpy.copyto(destination, source)
        return
    strips, others, device = _strips(pairs, add=False)
    for first in range(0, len(strips), STRIPS_A_LAUNCH):
        _launch_strips("dasksae_copy_strips", strips[first:first + STRIPS_A_LAUNCH], device)
    for source, destination in others:
        destination[...] = source


def add_views(pairs) -> None:
    """``destination += source`` for each pair in turn (destinations may overlap: one pair a launch, in order, so
    that each value's sum is taken in the pairs' order).  On CuPy, float32 :func:`strip_layout` pairs in the strip
    kernel; others, and NumPy, by the array module."""
    for source, destination in pairs:
        if on_device(source) or on_device(destination):
            strips, others, device = _strips([(source, destination)], add=True)
            if strips:
                _launch_strips("dasksae_add_strips_float32", strips, device)
                continue
        destination += source


_KERNELS = {  # name: (the CuPy kernel's getter, its arguments' struct layout)
    "dasksae_copy_segments": (_copy_segments_kernel, ARGUMENT_LAYOUT),
    "dasksae_copy_strips": (functools.partial(_strips_kernel, "dasksae_copy_strips"), STRIP_LAYOUT),
    "dasksae_add_strips_float32": (functools.partial(_strips_kernel, "dasksae_add_strips_float32"), STRIP_LAYOUT),
}


def contiguous(array):
    """``array`` if it is C-contiguous, else a C-contiguous copy of it (:func:`copy_views`: one strip kernel on
    CuPy): ``ascontiguousarray`` for halo strips."""
    if array.flags.c_contiguous:
        return array
    out = array_module(array).empty(array.shape, dtype=array.dtype)
    copy_views([(array, out)])
    return out
