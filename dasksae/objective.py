"""Per-stage training objectives and their gradients (plain array functions).

Coates et al. 2013, eq. 1 (tied RICA), per example ``x`` of the stage input::

    ||W^T (a W x) - x||^2  +  lambda * sum_j sqrt(eps + V_j (a W x)^2)

with ``W = U / ||U||`` (unit-norm filters), ``a`` a learned scalar and ``V``
the L2-pooling windows.  Le et al. 2012 (untied)::

    ||W2^T (W1 x) - x||^2  +  lambda * sum_j sqrt(eps + V_j (W1 x)^2)

with ``W1`` unit-norm and the decoder ``W2`` (same layout as ``W1``) free.
Both are averaged over the minibatch (sum over examples / M), so a learning
rate does not depend on M.

The encoder output ``z = W x`` is computed by the caller (it is also the
input of the stage's pooling layer); these functions add the reconstruction
and sparsity terms and return the gradients with respect to ``z``, ``x``, the
decoder weights and ``a``.
"""

from __future__ import annotations

from .kernels.backend import array_module
from .kernels.local_filter import local_filter_forward, local_filter_transpose, local_filter_weight_grad
from .kernels.pooling import window_sum_transpose


def stage_objective(x, z, pooled_squares, decoder, scale, geometry_args, sparsity: float, epsilon: float):
    """Loss of one stage and a cache for :func:`stage_objective_backward`.

    ``decoder`` is the (unit-norm) tied ``W`` for RICA or the untied ``W2``;
    ``scale`` is ``a`` for RICA and ``None`` for Le 2012 (then ``a = 1``).
    ``pooled_squares`` is ``V z^2`` (shared with the L2-pooling layer).
    ``geometry_args`` is ``(field, step, block_h, block_w, pool_size, pool_stride)``.
    """
    xp = array_module(x)
    field, step, block_h, block_w, _, _ = geometry_args
    batch = x.shape[-1]
    a = 1.0 if scale is None else scale
    code = z * a
    reconstruction = local_filter_transpose(code, decoder, x.shape, field, step, block_h, block_w)
    error = reconstruction - x
    sparse_units = xp.sqrt(epsilon + (a * a) * pooled_squares)
    # totals over whole maps accumulate in float64: float32 sums of 1e5+ terms
    # lose digits, and the scalar gradient below is a difference of two such sums
    reconstruction_loss = (error * error).sum(dtype=xp.float64) / batch
    sparsity_loss = sparsity * sparse_units.sum(dtype=xp.float64) / batch
    cache = (x, z, code, error, pooled_squares, sparse_units, decoder, scale, geometry_args, sparsity)
    return reconstruction_loss + sparsity_loss, cache


def stage_objective_backward(cache):
    """Gradients of :func:`stage_objective`: ``(grad_z, grad_x, grad_decoder, grad_scale)``.

    ``grad_scale`` is ``None`` for Le 2012.  ``grad_decoder`` is with respect to
    the decoder matrix as passed in (the caller chains it through ``U/||U||``).
    """
    x, z, code, error, pooled_squares, sparse_units, decoder, scale, geometry_args, sparsity = cache
    field, step, block_h, block_w, pool_size, pool_stride = geometry_args
    batch = x.shape[-1]
    a = 1.0 if scale is None else scale
    grad_reconstruction = (2.0 / batch) * error
    grad_x = -grad_reconstruction
    grad_code = local_filter_forward(grad_reconstruction, decoder, field, step, block_h, block_w)
    grad_decoder = local_filter_weight_grad(code, grad_reconstruction, field, step, block_h, block_w)
    # d/d(V z^2) of lambda/M * sqrt(eps + a^2 V z^2) = lambda a^2 / (2 M s)
    per_unit = (sparsity / batch) / sparse_units
    grad_z = a * grad_code + z * window_sum_transpose((a * a) * per_unit, z.shape, pool_size, pool_stride)
    grad_scale = None
    if scale is not None:
        xp = array_module(z)
        total = (z * grad_code).sum(dtype=xp.float64) + a * (per_unit * pooled_squares).sum(dtype=xp.float64)
        grad_scale = total.astype(z.dtype)
    return grad_z, grad_x, grad_decoder, grad_scale


__all__ = ["stage_objective", "stage_objective_backward"]
