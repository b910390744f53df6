"""Unit-norm filters: ``W_k = U_k / ||U_k||`` over each neuron's fan-in (the last axis)."""

from __future__ import annotations

import functools

from .backend import array_module


def unit_rows(raw):
    """Return ``(W, norms)`` with each filter (last axis) of ``raw`` scaled to unit length."""
    xp = array_module(raw)
    norms = xp.sqrt((raw * raw).sum(axis=-1, keepdims=True))
    return raw / norms, norms


def unit_rows_backward(grad_unit, unit, norms):
    """Gradient with respect to ``U`` given the gradient with respect to ``W = U/||U||``."""
    radial = (grad_unit * unit).sum(axis=-1, keepdims=True)
    return (grad_unit - unit * radial) / norms


def inverse_row_norms(raw):
    """``1 / ||U_r||`` for every filter (row) of ``raw``: shape ``raw.shape[:-1]`` (one pass over ``raw``)."""
    xp = array_module(raw)
    if xp.__name__ == "cupy":
        return _inverse_norm_kernel()(raw, axis=-1)
    return 1.0 / xp.sqrt(xp.einsum("...k,...k->...", raw, raw))


def unit_rows_sgd(raw, velocity, grad_unit, inverse_norms, lr: float, momentum: float) -> None:
    """The SGD-with-momentum step of ``U`` given ``dL/dW`` for ``W = U/||U||``, in place.

    ``g = s (dW - s U (dW . s U))`` with ``s = 1/||U||`` per row, then
    ``v = momentum v - lr g`` and ``U += v``: the chain through the unit norm
    and the update in one pass (one CUDA block per row on CuPy: the row's
    dot product, then its update, reading ``dW``, ``U`` and ``v`` once).
    ``inverse_norms`` must be those of ``raw`` before the step.
    """
    xp = array_module(raw)
    if xp.__name__ == "cupy":
        _unit_rows_sgd_cuda(raw, velocity, grad_unit, inverse_norms, lr, momentum)
        return
    scale = inverse_norms[..., None]
    radial = xp.einsum("...k,...k->...", grad_unit, raw)[..., None] * scale
    grad = (grad_unit - raw * scale * radial) * scale
    velocity *= momentum
    velocity -= lr * grad
    raw += velocity


@functools.lru_cache(maxsize=None)
def _inverse_norm_kernel():
    import cupy

    return cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = rsqrt(a)", "0", "dasksae_inverse_norm")


_UNIT_ROWS_SGD = r"""
extern "C" __global__ void dasksae_unit_rows_sgd_{T}(
    {T}* raw, {T}* velocity, const {T}* grad, const {T}* inverse_norms,
    const long long length, const {T} lr, const {T} momentum)
{
    const long long row = blockIdx.x;
    {T}* u = raw + row * length;
    {T}* v = velocity + row * length;
    const {T}* g = grad + row * length;
    {T} dot = 0;
    for (long long k = threadIdx.x; k < length; k += blockDim.x) dot += g[k] * u[k];
    __shared__ {T} partial[32];
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_down_sync(0xffffffff, dot, offset);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = dot;
    __syncthreads();
    if (threadIdx.x < 32) {
        dot = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0;
        for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_down_sync(0xffffffff, dot, offset);
        if (threadIdx.x == 0) partial[0] = dot;
    }
    __syncthreads();
    const {T} s = inverse_norms[row];
    const {T} radial = partial[0] * s * s;  // (dW . W) s, with W = s U
    for (long long k = threadIdx.x; k < length; k += blockDim.x) {
        const {T} step = momentum * v[k] - lr * (g[k] - u[k] * radial) * s;
        v[k] = step;
        u[k] += step;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _unit_rows_sgd_kernel(type_name: str):
    import cupy

    return cupy.RawKernel(_UNIT_ROWS_SGD.replace("{T}", type_name), f"dasksae_unit_rows_sgd_{type_name}")


def _unit_rows_sgd_cuda(raw, velocity, grad_unit, inverse_norms, lr, momentum):
    import cupy

    for name, array in (("raw", raw), ("velocity", velocity), ("grad", grad_unit), ("inverse_norms", inverse_norms)):
        if not array.flags.c_contiguous or array.dtype != raw.dtype:
            raise ValueError(f"unit_rows_sgd needs C-contiguous {raw.dtype} arrays; {name} is not")
    type_name = {"float32": "float", "float64": "double"}[raw.dtype.name]
    length = raw.shape[-1]
    rows = raw.size // length
    threads = 256 if length >= 256 else 32 * max(1, -(-length // 32))
    scalar = raw.dtype.type
    _unit_rows_sgd_kernel(type_name)(
        (rows,), (threads,), (raw, velocity, grad_unit, inverse_norms, cupy.int64(length), scalar(lr), scalar(momentum))
    )
