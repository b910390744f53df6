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


def window_sum_transpose(g, input_shape, size: int, stride: int = 1):
    """``V^T g``: the adjoint of :func:`window_sum`, spreading each window's value over its inputs."""
    xp = array_module(g)
    if xp is not numpy:
        from . import cuda_kernels

        return cuda_kernels.window_sum_transpose(g, tuple(input_shape), size, stride)
    out = xp.zeros(input_shape, dtype=g.dtype)
    out_h, out_w = g.shape[:2]
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    for a in range(size):
        for b in range(size):
            out[a : a + span_h : stride, b : b + span_w : stride] += g
    return out


def l2_pool_forward(x, size: int, stride: int = 1, eps: float = 0.0):
    """``sqrt(eps + V x^2)`` over each ``size x size`` window of each map."""
    xp = array_module(x)
    return xp.sqrt(eps + window_sum(x * x, size, stride))


def l2_pool_backward(grad_out, x, pooled, size: int, stride: int = 1):
    """Gradient of :func:`l2_pool_forward` with respect to ``x``, given its output ``pooled``."""
    return x * window_sum_transpose(grad_out / pooled, x.shape, size, stride)
