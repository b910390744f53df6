"""Elementwise passes of the step that the array code makes in two or three: each one pass here on CuPy.

* :func:`difference_and_squares`: ``e = a - b`` and ``sum(e * e)`` (the
  reconstruction error and its loss): a subtraction, a squaring and a
  reduction, three passes, become one that reads ``a`` and ``b`` and writes
  ``e``;
* :func:`sum_of_ratios`: ``sum(a / b)`` (the sparsity term's ``d/da``): a
  division and a reduction become one pass that writes nothing;
* :func:`subtract_scaled_into`: ``out = g - c e`` into a window of a larger
  array (the LCN backward's padded input): a scaling, a subtraction and a
  copy into the window become one pass.

The values are those of the array code (each product, difference and ratio
rounded to the arrays' dtype); sums are taken in float64 like the array
code's ``sum(dtype=float64)``, in another order.  On CuPy each sum stays a
device scalar (no wait): one float64 partial a CUDA block over a fixed grid,
then CuPy's sum of the partials.  Where the arrays do not suit a kernel
(NumPy, not float32, not contiguous) the array code runs.  No Dask in here.
"""

from __future__ import annotations

import functools

import numpy

from .backend import array_module, on_device

_PAIR_SUM_SOURCE = r"""
template <int N> struct alignas(4 * N) Floats { float v[N]; };

// n = vectors * LANES float32 values of a and b.  DIFFERENCE 1: out = a - b and this block's sum of out * out;
// 0: this block's sum of a / b (out unused).  A grid-stride loop over a fixed grid: the same sums each launch.
extern "C" __global__ void dasksae_pair_sum(const float* __restrict__ a, const float* __restrict__ b,
                                            float* __restrict__ out, double* __restrict__ partials,
                                            const long long vectors)
{
    double part = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < vectors;
         i += (long long)gridDim.x * blockDim.x) {
        const Floats<LANES> x = ((const Floats<LANES>*)a)[i], y = ((const Floats<LANES>*)b)[i];
        Floats<LANES> result;
        for (int j = 0; j < LANES; ++j) {
            if (DIFFERENCE) {
                result.v[j] = __fsub_rn(x.v[j], y.v[j]);
                part += (double)__fmul_rn(result.v[j], result.v[j]);
            } else {
                part += (double)__fdiv_rn(x.v[j], y.v[j]);
            }
        }
        if (DIFFERENCE) ((Floats<LANES>*)out)[i] = result;
    }
    block_partial(part, partials);
}
"""

THREADS = 256
MOST_BLOCKS = 1024  # the fixed grid's most blocks (8 an SM of an H100/H200 at 256 threads): the partials to add


def pair_sum_source(difference: bool, lanes: int) -> str:
    """The CUDA source of :data:`_PAIR_SUM_SOURCE` for one pass and vector width."""
    from .cuda_kernels import BLOCK_PARTIAL

    return f"#define DIFFERENCE {int(difference)}\n#define LANES {lanes}\n" + BLOCK_PARTIAL + _PAIR_SUM_SOURCE


@functools.lru_cache(maxsize=None)
def _pair_sum_kernel(difference: bool, lanes: int):
    import cupy

    return cupy.RawKernel(pair_sum_source(difference, lanes), "dasksae_pair_sum", options=("-std=c++14",))


def _pair_sum(a, b, difference: bool):
    """``(out or None, device float64 sum)`` from the kernel, or ``None`` where ``a`` and ``b`` do not suit it."""
    if not (on_device(a) and on_device(b)) or a.shape != b.shape or a.size == 0:
        return None
    import cupy

    if a.dtype != numpy.float32 or b.dtype != numpy.float32 or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    out = cupy.empty_like(a) if difference else None
    pointers = [a.data.ptr, b.data.ptr] + ([out.data.ptr] if difference else [])
    lanes = next(n for n in (4, 2, 1) if a.size % n == 0 and all(p % (4 * n) == 0 for p in pointers))
    vectors = a.size // lanes
    blocks = min(MOST_BLOCKS, -(-vectors // THREADS))
    partials = cupy.empty(blocks, dtype=cupy.float64)
    _pair_sum_kernel(difference, lanes)((blocks,), (THREADS,), (a, b, a if out is None else out, partials,
                                                                 numpy.int64(vectors)))
    return out, partials.sum()


def difference_and_squares(a, b):
    """``(a - b, sum((a - b)^2))``, the sum in float64 (a device scalar on CuPy: no wait)."""
    fused = _pair_sum(a, b, True)
    if fused is not None:
        return fused
    xp = array_module(a, b)
    difference = a - b
    return difference, (difference * difference).sum(dtype=xp.float64)


def sum_of_ratios(a, b):
    """``sum(a / b)`` in float64 (a device scalar on CuPy: no wait)."""
    fused = _pair_sum(a, b, False)
    if fused is not None:
        return fused[1]
    xp = array_module(a, b)
    return (a / b).sum(dtype=xp.float64)


@functools.lru_cache(maxsize=None)
def _subtract_scaled_kernel(negate: bool):
    """``out = g - c e`` (``negate``: ``out = -(c e)``), the product rounded before the difference as the array code
    rounds it (no fused multiply-add)."""
    import cupy

    from .cuda_kernels import _ROUNDED_MULTIPLY

    if negate:
        return cupy.ElementwiseKernel("T e, T c", "T out", "out = -multiply_rounded(c, e)", "dasksae_negate_scaled",
                                      preamble=_ROUNDED_MULTIPLY)
    return cupy.ElementwiseKernel("T g, T e, T c", "T out", "out = g - multiply_rounded(c, e)",
                                  "dasksae_subtract_scaled", preamble=_ROUNDED_MULTIPLY)


def subtract_scaled_into(out, grad, error, scale: float) -> None:
    """``out[...] = grad - scale * error`` (``grad`` ``None``: ``-(scale * error)``); ``out`` may be a strided view
    (a window of a larger array), which one CuPy kernel writes in place."""
    if on_device(out) and error.dtype == out.dtype and (grad is None or grad.dtype == out.dtype):
        value = out.dtype.type(scale)
        if grad is None:
            _subtract_scaled_kernel(True)(error, value, out)
        else:
            _subtract_scaled_kernel(False)(grad, error, value, out)
        return
    out[...] = -(scale * error) if grad is None else grad - scale * error


__all__ = ["difference_and_squares", "sum_of_ratios", "subtract_scaled_into"]
