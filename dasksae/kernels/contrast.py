"""Local contrast normalisation (Jarrett et al. 2009), forward and backward.

For a map ``x (H, W, K, M)`` and a normalised Gaussian window ``G`` of size
``n x n`` that also averages over the ``K`` maps::

    g = x - G*x                       (subtractive)
    y = g / max(c, sqrt(G*g^2))       (divisive)

At the borders ``G*`` averages only over positions inside the map (zero
padding, divided by the window weight that falls inside), so edges are
normalised like the interior.  The output has the input's shape.

A tile computes LCN on a *window* of a larger map: ``origin`` (the window's
first row and column in the map) and ``map_shape`` (the map's height and
width) make the border weights those of the whole map.  Only outputs at least
two window radii inside the window's edges that are not map edges are exact;
the tile keeps just those.
"""

from __future__ import annotations

from .backend import array_module


def gaussian_window(size: int, sigma: float | None = None, xp=None):
    """1-D Gaussian weights of length ``size`` (odd), summing to 1; ``sigma`` defaults to ``size/4``."""
    import numpy

    xp = xp or numpy
    sigma = sigma if sigma is not None else size / 4.0
    offsets = numpy.arange(size) - (size - 1) / 2.0
    weights = numpy.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return xp.asarray(weights / weights.sum())


def _smooth_map(plane, window):
    """Separable zero-padded 'same' filtering of ``plane (H, W, M)`` by ``window`` along H then W.

    With a symmetric window this operator is self-adjoint.
    """
    xp = array_module(plane)
    size = window.shape[0]
    half = size // 2
    height, width = plane.shape[:2]
    rows = xp.zeros_like(plane)
    for i in range(size):
        shift = i - half
        lo, hi = max(0, -shift), min(height, height - shift)
        rows[lo:hi] += float(window[i]) * plane[lo + shift : hi + shift]
    out = xp.zeros_like(plane)
    for j in range(size):
        shift = j - half
        lo, hi = max(0, -shift), min(width, width - shift)
        out[:, lo:hi] += float(window[j]) * rows[:, lo + shift : hi + shift]
    return out


def _axis_coverage(length, start, map_length, window):
    """Window weight inside ``[0, map_length)`` at positions ``start .. start+length-1`` of the map."""
    import numpy

    half = window.shape[0] // 2
    positions = numpy.arange(start, start + length)[:, None] + numpy.arange(window.shape[0])[None, :] - half
    inside = (positions >= 0) & (positions < map_length)
    return (inside * numpy.asarray(window)[None, :]).sum(axis=1)


def _coverage(height, width, window, xp, dtype, origin=None, map_shape=None):
    origin = origin or (0, 0)
    map_shape = map_shape or (height, width)
    rows = _axis_coverage(height, origin[0], map_shape[0], window)
    cols = _axis_coverage(width, origin[1], map_shape[1], window)
    return xp.asarray((rows[:, None] * cols[None, :])[:, :, None].astype(dtype))


def local_average(x, window, origin=None, map_shape=None):
    """``G*x``: the window-weighted mean over neighbours and all maps, shape ``(H, W, 1, M)``."""
    xp = array_module(x)
    height, width, maps, _ = x.shape
    smoothed = _smooth_map(x.sum(axis=2), window) / maps
    return (smoothed / _coverage(height, width, window, xp, x.dtype, origin, map_shape))[:, :, None, :]


def local_average_transpose(g, maps: int, window, origin=None, map_shape=None):
    """Adjoint of :func:`local_average`: ``g (H, W, 1, M)`` -> ``(H, W, K, M)``."""
    xp = array_module(g)
    height, width = g.shape[:2]
    scaled = g[:, :, 0, :] / _coverage(height, width, window, xp, g.dtype, origin, map_shape)
    spread = _smooth_map(scaled, window) / maps
    return xp.broadcast_to(spread[:, :, None, :], (height, width, maps, g.shape[3]))


def lcn_forward(x, size: int = 5, c: float = 0.01, origin=None, map_shape=None):
    """Local contrast normalisation of ``x (H, W, K, M)``; returns ``(y, cache)`` for the backward pass.

    ``origin`` and ``map_shape`` place ``x`` as a window of a larger map (see the module notes).
    """
    xp = array_module(x)
    window = gaussian_window(size)
    if xp.__name__ == "cupy":  # the same arithmetic in five fused kernels (:mod:`.cuda_kernels`)
        from . import cuda_kernels

        y, (centred, sigma, divisor) = cuda_kernels.lcn_forward(x, window, c, origin, map_shape)
        return y, (centred, sigma, divisor, size, c, origin, map_shape)
    centred = x - local_average(x, window, origin, map_shape)
    sigma = xp.sqrt(local_average(centred * centred, window, origin, map_shape))
    divisor = xp.maximum(sigma, c)
    y = centred / divisor
    return y, (centred, sigma, divisor, size, c, origin, map_shape)


def lcn_backward(grad_out, cache, subtract=None):
    """Gradient of :func:`lcn_forward` with respect to its input.

    ``subtract = (e, c)``: of ``grad_out - c e`` instead (the product rounded
    before the difference, as :func:`~dasksae.kernels.elementwise.subtract_scaled_into`
    rounds it); on CuPy the first fused pass takes the difference as it reads.
    """
    xp = array_module(grad_out)
    centred, sigma, divisor, size, c, origin, map_shape = cache
    window = gaussian_window(size)
    if xp.__name__ == "cupy":
        from . import cuda_kernels

        return cuda_kernels.lcn_backward(grad_out, centred, sigma, divisor, window, c, origin, map_shape, subtract)
    if subtract is not None:
        error, scale = subtract
        grad_out = grad_out - scale * error
    maps = centred.shape[2]
    grad_centred = grad_out / divisor
    grad_divisor = -(grad_out * centred).sum(axis=2, keepdims=True) / (divisor * divisor)
    active = sigma > c
    grad_sigma = xp.where(active, grad_divisor, 0.0)
    safe_sigma = xp.where(active, sigma, 1.0)
    grad_variance = grad_sigma / (2.0 * safe_sigma)
    grad_centred = grad_centred + 2.0 * centred * local_average_transpose(grad_variance, maps, window, origin, map_shape)
    grad_mean = grad_centred.sum(axis=2, keepdims=True)
    return grad_centred - local_average_transpose(grad_mean, maps, window, origin, map_shape)


def lcn_halo(size: int) -> int:
    """Rows/columns of neighbours LCN reads on each side: two window radii (mean, then variance)."""
    return 2 * (size // 2)


__all__ = ["gaussian_window", "local_average", "local_average_transpose", "lcn_forward", "lcn_backward", "lcn_halo"]
