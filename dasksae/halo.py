"""Halo exchange as plain array functions: cut strips, assemble windows, sum overlaps back.

A 2-D window is ``((row0, row1), (col0, col1))`` in whole-map coordinates;
arrays are ``(rows, cols, ...)`` with the window's extent in the first two
axes.  The Dask layer runs :func:`cut` on the worker that owns a piece (so
only the strip crosses the network, contiguous as UCX wants it) and
:func:`assemble` / :func:`sum_into` in the consumer's task, which take the
tile's own pieces as views (:func:`part_view`) and copy each element once.
No Dask here.
"""

from __future__ import annotations

from .kernels.backend import array_module
from .kernels.copies import add_views, contiguous, copy_views
from .tiling import intersect

Window = tuple[tuple[int, int], tuple[int, int]]


def overlap(a: Window, b: Window) -> Window | None:
    """The overlap of two windows, or ``None``.

    >>> overlap(((0, 4), (0, 4)), ((2, 6), (3, 9)))
    ((2, 4), (3, 4))
    """
    rows, cols = intersect(a[0], b[0]), intersect(a[1], b[1])
    return (rows, cols) if rows and cols else None


def part_view(array, window: Window, part: Window):
    """The strip ``part`` of ``array``, which covers ``window``, as a view (strided where ``part`` is narrower)."""
    (r0, _), (c0, _) = window
    (p0, p1), (q0, q1) = part
    return array[p0 - r0 : p1 - r0, q0 - c0 : q1 - c0]


def cut(array, window: Window, part: Window):
    """The contiguous strip ``part`` of ``array``, which covers ``window`` (to send: UCX moves contiguous buffers)."""
    return contiguous(part_view(array, window, part))


def cut_many(pieces: list) -> list:
    """:func:`cut` of each ``(array, window, part)``: the strips that are not contiguous as views are copied in one
    :func:`~dasksae.kernels.copies.copy_views` call (on CuPy, one launch for up to eight strips instead of one each)."""
    views = [part_view(array, window, part) for array, window, part in pieces]
    strips = [view if view.flags.c_contiguous else array_module(view).empty(view.shape, dtype=view.dtype) for view in views]
    copy_views([(view, strip) for view, strip in zip(views, strips) if strip is not view])
    return strips


def assemble(window: Window, strips: list[tuple[Window, object]]):
    """The contiguous array over ``window`` from strips that tile it exactly (each element covered once).

    Strips may be strided views (:func:`part_view`): each is copied once,
    straight into the result (on CuPy, the strips in one kernel: :func:`~dasksae.kernels.copies.copy_views`).
    """
    first = strips[0][1]
    xp = array_module(first)
    if len(strips) == 1 and _covers(strips[0][0], window, first):
        # one strip that is the whole window (a single tile): no copy where it is contiguous; tile functions never
        # write into inputs
        return contiguous(first)
    (r0, r1), (c0, c1) = window
    covered = sum((rows[1] - rows[0]) * (cols[1] - cols[0]) for (rows, cols), _ in strips)
    if covered != (r1 - r0) * (c1 - c0):
        raise ValueError(f"strips cover {covered} of the {(r1 - r0) * (c1 - c0)} positions of window {window}")
    out = xp.empty((r1 - r0, c1 - c0) + first.shape[2:], dtype=first.dtype)
    copy_views([(strip, out[rows[0] - r0 : rows[1] - r0, cols[0] - c0 : cols[1] - c0]) for (rows, cols), strip in strips])
    return out


def sum_into(window: Window, contributions: list[tuple[Window, object]]):
    """The contiguous sum over ``window`` of overlapping contributions (the adjoint of cutting and assembling).

    Contributions may be strided views.  Where one covers the whole window
    (a tile's own contribution to its owned window), the sum starts from a
    copy of it and adds the others in their order; otherwise from zeros.
    On CuPy the copy and each add are one strip kernel (:mod:`dasksae.kernels.copies`).
    """
    first = contributions[0][1]
    xp = array_module(first)
    if len(contributions) == 1 and _covers(contributions[0][0], window, first):
        return contiguous(first)
    (r0, r1), (c0, c1) = window
    covering = next((index for index, (part, value) in enumerate(contributions) if _covers(part, window, value)), None)
    shape = (r1 - r0, c1 - c0) + first.shape[2:]
    if covering is None:
        out = xp.zeros(shape, dtype=first.dtype)
    else:  # one pass instead of zeros, then an add
        out = xp.empty(shape, dtype=first.dtype)
        copy_views([(contributions[covering][1], out)])
    add_views([(part, out[rows[0] - r0 : rows[1] - r0, cols[0] - c0 : cols[1] - c0])
               for index, ((rows, cols), part) in enumerate(contributions) if index != covering])
    return out


def _covers(part: Window, window: Window, array) -> bool:
    """Whether ``array`` over ``part`` is exactly the whole ``window``."""
    (r0, r1), (c0, c1) = window
    return tuple(map(tuple, part)) == tuple(map(tuple, window)) and tuple(array.shape[:2]) == (r1 - r0, c1 - c0)
