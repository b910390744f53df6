"""L2 pooling: each unit is ``sqrt(eps + sum of squares)`` over ``p x p`` of one map.

Maps are ``(H, W, K, M)``.  ``window_sum`` is the linear pooling operator
``V`` (weights fixed to 1) of the objective's sparsity term; L2 pooling is
``sqrt(eps + V x^2)``.  Windows step by ``stride`` and must lie inside the
map ("valid" pooling), so the output is ``((H - p)//stride + 1, ...)``.
"""

from __future__ import annotations

import numpy

from .backend import array_module


def pooled_size(input_size: int, size: int, stride: int) -> int:
    """Output length of valid pooling.

    >>> pooled_size(184, 5, 1)
    180
    >>> pooled_size(10, 3, 2)
    4
    """
    if input_size < size:
        return 0
    return (input_size - size) // stride + 1


def window_sum(x, size: int, stride: int = 1):
    """``V x``: the sum over each ``size x size`` window of one map, windows ``stride`` apart."""
    xp = array_module(x)
    out_h = pooled_size(x.shape[0], size, stride)
    out_w = pooled_size(x.shape[1], size, stride)
    if xp is not numpy:
        from . import cuda_kernels

        return cuda_kernels.window_sum(x, (out_h, out_w) + x.shape[2:], size, stride)
    out = xp.zeros((out_h, out_w) + x.shape[2:], dtype=x.dtype)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    for a in range(size):
        for b in range(size):
            out += x[a : a + span_h : stride, b : b + span_w : stride]
    return out


def window_sum_transpose(g, input_shape, size: int, stride: int = 1, times=None):
    """``V^T g``: the adjoint of :func:`window_sum`, spreading each window's value over its inputs.

    ``times``: an array of ``input_shape`` that multiplies the result (in the
    same pass on CuPy).
    """
    xp = array_module(g)
    if xp is not numpy:
        from . import cuda_kernels

        return cuda_kernels.window_sum_transpose(g, tuple(input_shape), size, stride, times)
    out = xp.zeros(input_shape, dtype=g.dtype)
    out_h, out_w = g.shape[:2]
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    for a in range(size):
        for b in range(size):
            out[a : a + span_h : stride, b : b + span_w : stride] += g
    return out if times is None else out * times


def pool_squares(x, size: int, stride: int, eps: float, scale_squared: float | None = None):
    """``(V x^2, sqrt(eps + V x^2), units)`` with ``units = sqrt(eps + scale_squared V x^2)`` (``None`` without
    ``scale_squared``): L2 pooling and the sparsity term's units in one pass over ``x`` (one kernel on CuPy)."""
    xp = array_module(x)
    if xp is not numpy:
        from . import cuda_kernels

        return cuda_kernels.pool_squares(x, size, stride, eps, scale_squared)
    squares = window_sum(x * x, size, stride)
    units = None if scale_squared is None else xp.sqrt(eps + scale_squared * squares)
    return squares, xp.sqrt(eps + squares), units


def pool_units_and_sums(x, size: int, stride: int, eps: float, scale_squared):
    """``(sqrt(eps + V x^2), units, sum(units), sum(V x^2 / units))`` with ``units = sqrt(eps + scale_squared V x^2)``:
    the objective's pooling pass, with the sparsity term (before its ``lambda / M``) and the sum its ``d/da`` needs,
    both in float64 (device scalars on CuPy: no wait).  On CuPy one kernel that never writes ``V x^2`` (and a sum
    of its blocks' partials) where the arrays suit it."""
    xp = array_module(x)
    if xp is not numpy:
        from . import cuda_kernels

        fused = cuda_kernels.pool_units_and_sums(xp.ascontiguousarray(x), size, stride, eps, scale_squared)
        if fused is not None:
            return fused
    squares, pooled, units = pool_squares(x, size, stride, eps, scale_squared)
    return pooled, units, units.sum(dtype=xp.float64), sum_of_squares_over_units(squares, units)


def pool_unit_weights(grad_pooled, pooled, units=None, scale_squared: float = 1.0, unit_scale: float = 0.0):
    """What :func:`window_sum_transpose` spreads back to ``dL/dx`` (then times ``x``) from the pooled units.

    ``grad_pooled / pooled`` (``dL/dpooled`` through ``sqrt``; ``None``: no
    gradient from above) plus, with the sparsity term's ``units``,
    ``scale_squared * unit_scale / units`` (``d/d(V x^2)`` of
    ``unit_scale * sum(units)``).  One kernel on CuPy (with ``units``).
    """
    xp = array_module(pooled)
    if units is None:
        return xp.zeros_like(pooled) if grad_pooled is None else grad_pooled / pooled
    if xp is not numpy:
        from . import cuda_kernels

        return cuda_kernels.pool_unit_weights(grad_pooled, pooled, units, scale_squared, unit_scale)
    sparsity = scale_squared * (unit_scale / units)
    return sparsity if grad_pooled is None else grad_pooled / pooled + sparsity


def sum_of_squares_over_units(squares, units):
    """``sum(squares / units)`` in float64 (a device scalar on CuPy: no wait), for the sparsity term's ``d/da``.

    One pass on CuPy (:func:`~dasksae.kernels.elementwise.sum_of_ratios`: a partial sum a CUDA block).  (A CuPy
    ``ReductionKernel`` of the two reduced a whole array in one CUDA block: 17 ms a coates200 stage on an H200.)
    """
    from .elementwise import sum_of_ratios

    return sum_of_ratios(squares, units)


def l2_pool_forward(x, size: int, stride: int = 1, eps: float = 0.0):
    """``sqrt(eps + V x^2)`` over each ``size x size`` window of each map."""
    xp = array_module(x)
    return xp.sqrt(eps + window_sum(x * x, size, stride))


def l2_pool_backward(grad_out, x, pooled, size: int, stride: int = 1):
    """Gradient of :func:`l2_pool_forward` with respect to ``x``, given its output ``pooled``."""
    return x * window_sum_transpose(grad_out / pooled, x.shape, size, stride)
