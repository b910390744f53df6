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

import numpy


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
        const int x = (int)(rest % width);
        const int y = (int)(rest / width);
        T total = 0;
        for (int a = 0; a < size; ++a) {
            const int ry = y - a;
            if (ry < 0) break;
            if (stride != 1 && ry % stride != 0) continue;
            if (ry / stride >= out_height) continue;
            for (int b = 0; b < size; ++b) {
                const int cx = x - b;
                if (cx < 0) break;
                if (stride != 1 && cx % stride != 0) continue;
                if (cx / stride >= out_width) continue;
                total += g[((long long)(ry / stride) * out_width + cx / stride) * trailing + q];
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


# ---------------------------------------------------------------- local contrast normalisation
#
# Maps are (H, W, K, M); per-position planes (H, W, M).  One thread per (h, w, m) loops over the K maps
# (reads coalesced along m).  The smoothing is the 2-D zero-padded "same" Gaussian stencil of
# :mod:`.contrast` with the border weights ("coverage") of the whole map computed in the kernel from the
# window's origin and the map's size, so that a tile's window is normalised like the whole map.

_LCN_PREAMBLE = r"""
__device__ inline float dasksae_coverage(int position, int origin, int map_length, const float* window, int size) {
    const int half = size / 2;
    float total = 0;
    for (int i = 0; i < size; ++i) {
        const int p = origin + position + i - half;
        if (p >= 0 && p < map_length) total += window[i];
    }
    return total;
}
"""


@functools.lru_cache(maxsize=None)
def _lcn_smooth_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T plane, raw float32 window, int32 size, int32 height, int32 width, int64 batch, "
        "int32 origin_h, int32 origin_w, int32 map_h, int32 map_w, T maps, bool divide_before",
        "T out",
        """
        const long long m = i % batch;
        const long long hw = i / batch;
        const int w = (int)(hw % width);
        const int h = (int)(hw / width);
        const int half = size / 2;
        T total = 0;
        for (int a = 0; a < size; ++a) {
            const int y = h + a - half;
            if (y < 0 || y >= height) continue;
            const float row_cover = divide_before ? dasksae_coverage(y, origin_h, map_h, &window[0], size) : 1.0f;
            for (int b = 0; b < size; ++b) {
                const int x = w + b - half;
                if (x < 0 || x >= width) continue;
                T value = plane[((long long)y * width + x) * batch + m] * (T)(window[a] * window[b]);
                if (divide_before) value /= (T)(row_cover * dasksae_coverage(x, origin_w, map_w, &window[0], size));
                total += value;
            }
        }
        if (!divide_before) {
            total /= (T)(dasksae_coverage(h, origin_h, map_h, &window[0], size) * dasksae_coverage(w, origin_w, map_w, &window[0], size));
        }
        out = total / maps;
        """,
        "dasksae_lcn_smooth",
        preamble=_LCN_PREAMBLE,
    )


def lcn_smooth(plane, window, origin, map_shape, maps: int, divide_before: bool):
    """``G*`` of :mod:`.contrast` on an ``(H, W, M)`` plane, divided by ``maps``.

    ``divide_before=False``: the local average (smooth, then divide by the
    coverage at the output); ``True``: its adjoint (divide by the coverage at
    the input, then smooth).
    """
    import cupy

    plane = cupy.ascontiguousarray(plane)
    height, width, batch = plane.shape
    origin = origin or (0, 0)
    map_h, map_w = map_shape or (height, width)
    out = cupy.empty_like(plane)
    _lcn_smooth_kernel()(
        plane, cupy.asarray(window, dtype=cupy.float32), window.shape[0], height, width, batch,
        origin[0], origin[1], map_h, map_w, plane.dtype.type(maps), numpy.bool_(divide_before), out,
    )
    return out


@functools.lru_cache(maxsize=None)
def _sum_maps_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T x, int64 maps, int64 batch",
        "T out",
        """
        const long long m = i % batch;
        const long long base = (i / batch) * maps * batch + m;
        T total = 0;
        for (long long k = 0; k < maps; ++k) total += x[base + k * batch];
        out = total;
        """,
        "dasksae_sum_maps",
    )


@functools.lru_cache(maxsize=None)
def _centre_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T x, raw T mean, int64 maps, int64 batch",
        "raw T centred, T variance_sum",
        """
        const long long m = i % batch;
        const long long base = (i / batch) * maps * batch + m;
        const T mu = mean[i];
        T total = 0;
        for (long long k = 0; k < maps; ++k) {
            const T c = x[base + k * batch] - mu;
            centred[base + k * batch] = c;
            total += c * c;
        }
        variance_sum = total;
        """,
        "dasksae_lcn_centre",
    )


@functools.lru_cache(maxsize=None)
def _lcn_backward_first_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T grad_out, raw T centred, T sigma, T divisor, T c, int64 maps, int64 batch",
        "T grad_variance",
        """
        const long long m = i % batch;
        const long long base = (i / batch) * maps * batch + m;
        T total = 0;
        for (long long k = 0; k < maps; ++k) total += grad_out[base + k * batch] * centred[base + k * batch];
        grad_variance = sigma > c ? -total / (divisor * divisor) / (2 * sigma) : (T)0;
        """,
        "dasksae_lcn_backward_first",
    )


@functools.lru_cache(maxsize=None)
def _lcn_backward_second_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T grad_out, raw T centred, T divisor, T spread, int64 maps, int64 batch",
        "raw T grad_centred, T grad_mean",
        """
        const long long m = i % batch;
        const long long base = (i / batch) * maps * batch + m;
        T total = 0;
        for (long long k = 0; k < maps; ++k) {
            const long long at = base + k * batch;
            const T g = grad_out[at] / divisor + 2 * centred[at] * spread;
            grad_centred[at] = g;
            total += g;
        }
        grad_mean = total;
        """,
        "dasksae_lcn_backward_second",
    )


def lcn_forward(x, window, c: float, origin=None, map_shape=None):
    """The fused LCN forward of :func:`dasksae.kernels.contrast.lcn_forward` (same result and cache)."""
    import cupy

    x = cupy.ascontiguousarray(x)
    height, width, maps, batch = x.shape
    sums = cupy.empty((height, width, batch), dtype=x.dtype)
    _sum_maps_kernel()(x, maps, batch, sums)
    mean = lcn_smooth(sums, window, origin, map_shape, maps, False)
    centred = cupy.empty_like(x)
    variance_sums = cupy.empty_like(sums)
    _centre_kernel()(x, mean, maps, batch, centred, variance_sums)
    sigma = cupy.sqrt(lcn_smooth(variance_sums, window, origin, map_shape, maps, False))
    divisor = cupy.maximum(sigma, x.dtype.type(c))
    sigma, divisor = sigma[:, :, None, :], divisor[:, :, None, :]
    return centred / divisor, (centred, sigma, divisor)


def lcn_backward(grad_out, centred, sigma, divisor, window, c: float, origin=None, map_shape=None):
    """The fused LCN backward of :func:`dasksae.kernels.contrast.lcn_backward`."""
    import cupy

    grad_out = cupy.ascontiguousarray(grad_out)
    height, width, maps, batch = centred.shape
    plane = (height, width, batch)
    sigma2, divisor2 = sigma.reshape(plane), divisor.reshape(plane)
    grad_variance = cupy.empty(plane, dtype=centred.dtype)
    _lcn_backward_first_kernel()(grad_out, centred, sigma2, divisor2, centred.dtype.type(c), maps, batch, grad_variance)
    spread = lcn_smooth(grad_variance, window, origin, map_shape, maps, True)
    grad_centred = cupy.empty_like(centred)
    grad_mean = cupy.empty(plane, dtype=centred.dtype)
    _lcn_backward_second_kernel()(grad_out, centred, divisor2, spread, maps, batch, grad_centred, grad_mean)
    grad_centred -= lcn_smooth(grad_mean, window, origin, map_shape, maps, True)[:, :, None, :]
    return grad_centred


# ---------------------------------------------------------------- the fields gather
#
# CuPy's copy of a 6-D strided view spends its time on 64-bit index arithmetic, not on memory (the same
# time for 2-byte as for 4-byte values: 21 ms a coates200 step).  Here one thread per element does one
# 64-bit division and three 32-bit ones: field row k = (u, v, c) of block b = (p, q) reads
# x[p*step + u, q*step + v, c, m], and (v, c) together are one run of f*C*M values of x.

@functools.lru_cache(maxsize=None)
def _gather_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "raw T x, int64 batch, int32 fan_in, int32 row_run, int32 blocks_w, int32 step, int64 x_row, int64 x_column",
        "raw T out",
        """
        const long long row = i / batch;
        const long long m = i - row * batch;
        const int b = (int)(row / fan_in);
        const int k = (int)(row - (long long)b * fan_in);
        const int u = k / row_run;
        const int r = k - u * row_run;
        const int p = b / blocks_w;
        const int q = b - p * blocks_w;
        out[i] = x[(long long)(p * step + u) * x_row + (long long)(q * step) * x_column + (long long)r * batch + m];
        """,
        "dasksae_gather_fields",
    )


def gather_patches(x, field: int, step: int, blocks_h: int, blocks_w: int, out=None):
    """The fields of ``x (H, W, C, M)`` into ``out (nbh*nbw, f*f*C, M)`` (new, or a view with strided rows)."""
    import cupy

    x = cupy.ascontiguousarray(x)
    height, width, channels, batch = x.shape
    fan_in = field * field * channels
    count = blocks_h * blocks_w
    if out is None:
        out = cupy.empty((count, fan_in, batch), dtype=x.dtype)
    if out.dtype != x.dtype or out.strides[2] != out.itemsize or out.shape != (count, fan_in, batch):
        return None
    _gather_kernel()(
        x, batch, fan_in, field * channels, blocks_w, step, width * channels * batch, channels * batch, out,
        size=count * fan_in * batch,
    )
    return out
