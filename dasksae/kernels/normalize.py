"""Unit-norm filters: ``W_k = U_k / ||U_k||`` over each neuron's fan-in (the last axis)."""

from __future__ import annotations

import functools

import numpy

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


def radial_dots(codes, z_rows, decoded=None, row_scale=None, a=None):
    """``W_r . dL/dW_r`` for every row of a chunk of filter blocks, from the weight-gradient GEMM's operands, without
    the gradient: ``(count, R)``.

    The weight gradient is ``codes [X | G]^T`` (:func:`dasksae.tile_ops.filter_backward`): ``codes (count, R, 2M)``
    is ``[g_z | a z]`` with the tied decoder (``decoded``, its product ``U g_r`` as ``(count, R, M)``, given), or
    ``g_z`` (its first ``M`` columns) without it.  Since ``W_r . x_m = z[r, m]`` and ``W_r . g_m = s_r (U g_r)[r,
    m]``, the dot is ``sum_m z (g_z + a s U g_r)`` (or ``sum_m z g_z``): ``M`` terms a row instead of the row's
    ``f*f*C``, and what :func:`unit_rows_sgd` and the weight gradient's fused update
    (:func:`~dasksae.kernels.simt_gemm.filter_weight_grad_update`) take as ``row_dots``.  For exact precisions
    (float32, float64) only: with rounded GEMM operands (tf32, bfloat16) the identity holds only to their rounding.
    ``codes`` may be bfloat16 bits (``uint16``, the bfloat16 backward's): read as the values they are (on CuPy in the
    kernel itself, with no float32 copy).
    """
    xp = array_module(z_rows)
    if xp is not numpy:
        dots = _radial_dots_cuda(codes, z_rows, decoded, row_scale, a)
        if dots is not None:
            return dots
    left = codes[:, :, : z_rows.shape[-1]]
    if left.dtype == numpy.uint16:  # bfloat16 bits
        from .gemm import from_bfloat16

        left = from_bfloat16(left)
    if decoded is None:
        return xp.einsum("crm,crm->cr", z_rows, left)
    return xp.einsum("crm,crm->cr", z_rows, left + (a * row_scale) * decoded)


_RADIAL_DOTS = r"""
// One warp a row (count * R rows): out[row] = sum_m z[row, m] (codes[row, m] + a s[row] decoded[row, m]), the
// decoder's term only where decoded is given; the lanes' sums added in a fixed order.  CODE: the codes' type, float
// (dasksae_radial_dots) or bfloat16 bits (unsigned short: dasksae_radial_dots_bfloat16, read as the values they are).
__device__ __forceinline__ float code_value(const float value) { return value; }
__device__ __forceinline__ float code_value(const unsigned short bits) { return __uint_as_float((unsigned)bits << 16); }
extern "C" __global__ void KERNEL(const float* __restrict__ z, const CODE* __restrict__ codes,
                                  const float* __restrict__ decoded, const float* __restrict__ row_scale,
                                  const float* __restrict__ a_pointer, const float a_value, const int a_on_device,
                                  float* __restrict__ out, const long long rows, const int batch, const int width)
{
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;  // the whole warp
    const float scaled = decoded ? (a_on_device ? *a_pointer : a_value) * row_scale[row] : 0.f;
    float sum = 0.f;
    for (int m = lane; m < batch; m += 32) {
        const float g = code_value(codes[row * width + m]);
        sum += z[row * batch + m] * (decoded ? g + scaled * decoded[row * batch + m] : g);
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) out[row] = sum;
}
"""
RADIAL_DOTS_KERNELS = {"float32": ("dasksae_radial_dots", "float"),
                       "uint16": ("dasksae_radial_dots_bfloat16", "unsigned short")}  # codes' dtype: (name, CODE)


def radial_dots_source(codes_dtype: str = "float32") -> str:
    """The CUDA source of :func:`radial_dots`'s kernel for codes of ``codes_dtype`` (float32, or ``uint16``: bfloat16
    bits)."""
    name, code = RADIAL_DOTS_KERNELS[codes_dtype]
    return f"#define KERNEL {name}\n#define CODE {code}\n" + _RADIAL_DOTS


@functools.lru_cache(maxsize=None)
def _radial_dots_kernel(codes_dtype: str):
    import cupy

    return cupy.RawKernel(radial_dots_source(codes_dtype), RADIAL_DOTS_KERNELS[codes_dtype][0])


def _radial_dots_cuda(codes, z_rows, decoded, row_scale, a):
    """:func:`radial_dots` in one kernel for C-contiguous float32 arrays (the codes float32 or bfloat16 bits);
    ``None`` where they do not suit it."""
    import cupy

    arrays = [z_rows] + ([] if decoded is None else [decoded, row_scale])
    if any(x.dtype != numpy.float32 or not x.flags.c_contiguous for x in arrays):
        return None
    if codes.dtype.name not in RADIAL_DOTS_KERNELS or not codes.flags.c_contiguous:
        return None
    count, rows, batch = z_rows.shape
    if (codes.shape[:2] != (count, rows) or (decoded is not None and decoded.shape != z_rows.shape)
            or (isinstance(a, cupy.ndarray) and (a.dtype != numpy.float32 or a.size != 1))):
        return None
    out = cupy.empty((count, rows), dtype=cupy.float32)
    on_device = isinstance(a, cupy.ndarray)
    total = count * rows
    _radial_dots_kernel(codes.dtype.name)((-(-total // 8),), (256,), (
        z_rows, codes, decoded if decoded is not None else numpy.uint64(0),
        row_scale if decoded is not None else numpy.uint64(0), a if on_device else numpy.uint64(0),
        numpy.float32(0 if on_device or a is None else a), numpy.int32(on_device), out, numpy.int64(total),
        numpy.int32(batch), numpy.int32(codes.shape[2])))
    return out


def unit_rows_sgd(raw, velocity, grad_unit, inverse_norms, lr: float, momentum: float,
                  refresh_norms: bool = False, raw_operand=None, precision: str | None = None,
                  row_dots=None) -> None:
    """The SGD-with-momentum step of ``U`` given ``dL/dW`` for ``W = U/||U||``, in place.

    ``g = s (dW - s U (dW . s U))`` with ``s = 1/||U||`` per row, then
    ``v = momentum v - lr g`` and ``U += v``: the chain through the unit norm
    and the update in one pass (one CUDA block per row on CuPy: the row's
    dot product, then its update, reading ``dW``, ``U`` and ``v`` once, in
    vectors of 4 values where the rows allow).  ``inverse_norms`` must be
    those of ``raw`` before the step.  What the next forward pass reads of
    the new ``U`` can come out of the same pass instead of two more over the
    weights: ``refresh_norms`` overwrites ``inverse_norms`` with those of the
    updated rows, and ``raw_operand`` (a :func:`~.gemm.operand` of ``raw`` in
    ``precision``) receives the updated rows in that storage.  ``row_dots`` (a value a row: :func:`radial_dots`)
    are the rows' ``W . dL/dW`` where the caller has them without the gradient; otherwise they are summed from it.
    """
    xp = array_module(raw)
    if xp.__name__ == "cupy" and _unit_rows_sgd_cuda(raw, velocity, grad_unit, inverse_norms, lr, momentum,
                                                    refresh_norms, raw_operand, precision, row_dots):
        return
    scale = inverse_norms[..., None]
    if row_dots is None:
        radial = xp.einsum("...k,...k->...", grad_unit, raw)[..., None] * scale
    else:
        radial = row_dots.reshape(raw.shape[:-1])[..., None]
    grad = (grad_unit - raw * scale * radial) * scale
    velocity *= momentum
    velocity -= lr * grad
    raw += velocity
    if refresh_norms:
        inverse_norms[...] = inverse_row_norms(raw)
    if raw_operand is not None:
        from .gemm import operand

        operand(raw, precision, out=raw_operand)


@functools.lru_cache(maxsize=None)
def _inverse_norm_kernel():
    import cupy

    return cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = rsqrt(a)", "0", "dasksae_inverse_norm")


_UNIT_ROWS_SGD = r"""
template <typename T, int N> struct alignas(sizeof(T) * N) Pack { T v[N]; };

template <typename T> __device__ T block_sum(T value, T* partial)  // every thread gets the block's sum
{
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffff, value, offset);
    __syncthreads();  // partial may still be read from a previous sum
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = value;
    __syncthreads();
    if (threadIdx.x < 32) {
        value = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : (T)0;
        for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffff, value, offset);
        if (threadIdx.x == 0) partial[32] = value;
    }
    __syncthreads();
    return partial[32];
}

// OPERAND: 0 none, 1 the same type as raw, 2 bfloat16 bits
template <typename T, int N, int OPERAND>
__global__ void unit_rows_sgd(T* raw, T* velocity, const T* grad, T* inverse_norms, const long long length,
                              const T lr, const T momentum, const int refresh_norms, void* raw_operand,
                              const T* row_dots)
{
    typedef Pack<T, N> P;
    __shared__ T partial[33];
    const long long row = blockIdx.x;
    const long long vectors = length / N;
    P* u = (P*)(raw + row * length);
    P* v = (P*)(velocity + row * length);
    const P* g = (const P*)(grad + row * length);
    const T s = inverse_norms[row];
    T radial;  // (dW . W) s, with W = s U
    if (row_dots) {  // the caller's W . dW (radial_dots)
        radial = row_dots[row] * s;
    } else {
        T dot = 0;
        for (long long k = threadIdx.x; k < vectors; k += blockDim.x) {
            const P gk = g[k], uk = u[k];
            for (int j = 0; j < N; ++j) dot += gk.v[j] * uk.v[j];
        }
        radial = block_sum(dot, partial) * s * s;
    }
    T squares = 0;
    for (long long k = threadIdx.x; k < vectors; k += blockDim.x) {
        const P gk = g[k];
        P uk = u[k], vk = v[k];
        for (int j = 0; j < N; ++j) {
            const T step = momentum * vk.v[j] - lr * (gk.v[j] - uk.v[j] * radial) * s;
            vk.v[j] = step;
            uk.v[j] += step;
            squares += uk.v[j] * uk.v[j];
        }
        v[k] = vk;
        u[k] = uk;
        if (OPERAND == 1) ((P*)raw_operand + row * vectors)[k] = uk;
        if (OPERAND == 2) {
            unsigned short* out = (unsigned short*)raw_operand + row * length + k * N;
            for (int j = 0; j < N; ++j) out[j] = round_to_bfloat16((float)uk.v[j]);
        }
    }
    if (refresh_norms) {
        squares = block_sum(squares, partial);
        if (threadIdx.x == 0) inverse_norms[row] = rsqrt(squares);
    }
}
"""


UNIT_ROWS_SGD_KERNELS = [f"unit_rows_sgd<{t}, {n}, {o}>" for t in ("float", "double") for n in (1, 2, 4) for o in (0, 1, 2)]


def unit_rows_sgd_source() -> str:
    """The CUDA source of the update kernels (C++ templates: :data:`UNIT_ROWS_SGD_KERNELS` name them)."""
    from .gemm import BFLOAT16_ROUNDING

    return BFLOAT16_ROUNDING + _UNIT_ROWS_SGD


@functools.lru_cache(maxsize=None)
def _unit_rows_sgd_module():
    import cupy

    return cupy.RawModule(code=unit_rows_sgd_source(), options=("-std=c++14",), name_expressions=UNIT_ROWS_SGD_KERNELS)


def _unit_rows_sgd_cuda(raw, velocity, grad_unit, inverse_norms, lr, momentum, refresh_norms, raw_operand, precision,
                        row_dots=None):
    """The update as one CUDA kernel; ``False`` where the arrays do not suit it (the caller runs the array code)."""
    import cupy

    arrays = (("raw", raw), ("velocity", velocity), ("grad", grad_unit), ("inverse_norms", inverse_norms))
    for name, array in arrays:
        if not array.flags.c_contiguous or array.dtype != raw.dtype:
            raise ValueError(f"unit_rows_sgd needs C-contiguous {raw.dtype} arrays; {name} is not")
    if raw.dtype.name not in ("float32", "float64"):
        return False
    if row_dots is not None and (row_dots.dtype != raw.dtype or not row_dots.flags.c_contiguous
                                 or row_dots.size != raw.size // raw.shape[-1]):
        return False
    kind = 0
    if raw_operand is not None:
        if not raw_operand.flags.c_contiguous or raw_operand.shape != raw.shape:
            return False
        if raw_operand.dtype == raw.dtype:
            kind = 1
        elif raw_operand.dtype.name == "uint16" and precision == "bfloat16":
            kind = 2
        else:
            return False
    length = raw.shape[-1]
    rows = raw.size // length
    if rows == 0:
        return True
    pointers = [a.data.ptr for _, a in arrays[:3]] + ([raw_operand.data.ptr] if kind == 1 else [])
    lanes = next(n for n in (4, 2, 1) if length % n == 0 and all(p % (n * raw.itemsize) == 0 for p in pointers))
    if raw.dtype.name == "float64":
        lanes = min(lanes, 2)
    vectors = length // lanes
    threads = 256 if vectors >= 256 else 32 * max(1, -(-vectors // 32))
    kernel = _unit_rows_sgd_module().get_function(f"unit_rows_sgd<{'float' if raw.dtype.name == 'float32' else 'double'}, {lanes}, {kind}>")
    scalar = raw.dtype.type
    kernel((rows,), (threads,), (raw, velocity, grad_unit, inverse_norms, cupy.int64(length), scalar(lr), scalar(momentum),
                                 numpy.int32(bool(refresh_norms)), raw_operand if raw_operand is not None else numpy.uint64(0),
                                 row_dots if row_dots is not None else numpy.uint64(0)))
    return True
