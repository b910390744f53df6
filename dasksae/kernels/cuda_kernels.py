"""Fused CuPy kernels for the memory-bound operations that the plain array code does in many passes.

Measured on the H100 (``bench/profile_kernels.py``, coates200 stage 1, M=96):
the plain pooling sum ``V x`` ran 25 strided adds over the map (3.2 ms, 65
GB/s) and its transpose 3.1 ms; the SGD update three elementwise passes
(6.2 ms for 1.3 GB of weights).  Here each is one kernel: one thread per
output element gathers its window (no atomics, the sum in the same order as
the NumPy loop), and the update reads ``param, velocity, grad`` once and
writes ``param, velocity`` once.  Compiled on first use; callers fall back to
the array code for NumPy (see :mod:`.pooling` and :mod:`dasksae.optim`).
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def _window_sum_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T x, int64 width, int64 trailing, int64 out_width, int32 size, int32 stride",
        "T out",
        """
        const long long q = i % trailing;
        const long long rest = i / trailing;
        const long long column = rest % out_width;
        const long long row = rest / out_width;
        T total = 0;
        for (int a = 0; a < size; ++a) {
            const long long base = (row * stride + a) * width + column * stride;
            for (int b = 0; b < size; ++b) {
                total += x[(base + b) * trailing + q];
            }
        }
        out = total;
        """,
        "dasksae_window_sum",
    )


@functools.lru_cache(maxsize=None)
def _window_sum_transpose_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T g, int64 width, int64 trailing, int64 out_height, int64 out_width, int32 size, int32 stride",
        "T out",
        """
        const long long q = i % trailing;
        const long long rest = i / trailing;
        const long long x = rest % width;
        const long long y = rest / width;
        T total = 0;
        for (int a = 0; a < size; ++a) {
            const long long ry = y - a;
            if (ry < 0 || ry % stride != 0 || ry / stride >= out_height) continue;
            for (int b = 0; b < size; ++b) {
                const long long cx = x - b;
                if (cx < 0 || cx % stride != 0 || cx / stride >= out_width) continue;
                total += g[((ry / stride) * out_width + cx / stride) * trailing + q];
            }
        }
        out = total;
        """,
        "dasksae_window_sum_transpose",
    )


@functools.lru_cache(maxsize=None)
def _fold_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T patches, int64 width, int64 channels, int64 batch, int64 blocks_h, int64 blocks_w, int32 field, int32 step",
        "T out",
        """
        const long long m = i % batch;
        long long rest = i / batch;
        const long long c = rest % channels;
        rest /= channels;
        const long long w = rest % width;
        const long long h = rest / width;
        const long long fan_in = (long long)field * field * channels;
        long long p_first = h >= field ? (h - field) / step + 1 : 0;
        long long q_first = w >= field ? (w - field) / step + 1 : 0;
        const long long p_last = min(h / step, blocks_h - 1);
        const long long q_last = min(w / step, blocks_w - 1);
        T total = out;
        for (long long p = p_first; p <= p_last; ++p) {
            const long long u = h - p * step;
            for (long long q = q_first; q <= q_last; ++q) {
                const long long v = w - q * step;
                total += patches[((p * blocks_w + q) * fan_in + (u * field + v) * channels + c) * batch + m];
            }
        }
        out = total;
        """,
        "dasksae_fold_patches",
    )


def fold_patches_into(out, patches, field: int, step: int, blocks_h: int, blocks_w: int):
    """Add the overlapping fields ``patches (nbh*nbw, f*f*C, M)`` into ``out (H, W, C, M)`` in one kernel.

    One thread per element of ``out`` sums the (at most ``ceil(f/step)^2``)
    field entries that land on it; ``out`` is read and written once, where
    the strided-add fold touches it once per field offset group.
    """
    import cupy

    if not out.flags.c_contiguous:
        return False
    patches = cupy.ascontiguousarray(patches)
    height, width, channels, batch = out.shape
    _fold_kernel()(patches, width, channels, batch, blocks_h, blocks_w, field, step, out)
    return True


@functools.lru_cache(maxsize=None)
def _sgd_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "T grad, T lr, T momentum",
        "T param, T velocity",
        "velocity = momentum * velocity - lr * grad; param += velocity;",
        "dasksae_sgd_momentum",
    )


def window_sum(x, out_shape, size: int, stride: int):
    import cupy

    x = cupy.ascontiguousarray(x)
    out = cupy.empty(out_shape, dtype=x.dtype)
    trailing = 1
    for extent in x.shape[2:]:
        trailing *= extent
    _window_sum_kernel()(x, x.shape[1], trailing, out_shape[1], size, stride, out)
    return out


def window_sum_transpose(g, input_shape, size: int, stride: int):
    import cupy

    g = cupy.ascontiguousarray(g)
    out = cupy.empty(input_shape, dtype=g.dtype)
    trailing = 1
    for extent in input_shape[2:]:
        trailing *= extent
    _window_sum_transpose_kernel()(g, input_shape[1], trailing, g.shape[0], g.shape[1], size, stride, out)
    return out


def sgd_momentum_update(param, velocity, grad, lr: float, momentum: float) -> bool:
    """The fused update in place; ``False`` (nothing done) where the kernel does not apply."""
    import cupy

    if not (isinstance(param, cupy.ndarray) and isinstance(velocity, cupy.ndarray) and isinstance(grad, cupy.ndarray)):
        return False
    if not (param.flags.c_contiguous and velocity.flags.c_contiguous) or param.shape != grad.shape:
        return False
    if param.dtype != velocity.dtype or param.dtype != grad.dtype:
        return False
    _sgd_kernel()(grad, param.dtype.type(lr), param.dtype.type(momentum), param, velocity)
    return True
