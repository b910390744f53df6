"""Batched products of filter blocks in a chosen compute precision.

``batched_matmul(a, b)`` computes ``op(a[i]) @ op(b[i])`` for every block
``i``, where ``op`` is an optional transpose that is never materialised.  On
CuPy it is one call of cuBLAS's strided-batched GEMM with an explicit compute
type (``cublasGemmStridedBatchedEx``, called through ctypes on a cuBLAS
handle of our own per thread, since CuPy's binding refuses every call while
a stream is captured into a CUDA graph): ``cupy.matmul`` copies a transposed
operand first or picks a slow kernel for it (13 TFLOP/s for ``W^T Y`` against
36 for ``W Y`` on the H100, DESIGN.md), and it has no way to ask for TF32 or
for bfloat16 operands with float32 accumulation.  With ``DASKSAE_GEMM=tuned``
the same product runs with the cuBLASLt algorithm found fastest for its
shape (:mod:`.tuned_gemm`); with ``DASKSAE_GEMM=simt`` (the default) the
float32 products whose shapes suit it run in a kernel of our own with a
128 x 96 tile (:mod:`.simt_gemm`).  On NumPy it is ``matmul``.

Precisions (``PRECISIONS``):

* ``float32`` / ``float64``: operands and accumulation in that type;
* ``tf32``: float32 operands rounded by the tensor cores to 10 mantissa bits,
  float32 accumulation (``CUBLAS_COMPUTE_32F_FAST_TF32``);
* ``bfloat16``: operands stored as bfloat16 (8 mantissa bits), float32
  accumulation and a float32 result.

The result is float32 for the three float32-family precisions (float64 for
float64): everything outside the GEMMs (pooling, LCN, the objective, the
update of the float32 master weights) stays in float32.  :func:`operand`
makes an array into what the GEMM reads; doing it once for an array that
several products read (the weights) saves the conversions.  On NumPy the
reduced precisions are emulated by rounding float32 values to the kept
mantissa bits (round to nearest even), so CPU tests see the same rounding
of operands as the GPU (only the order of the float32 sums differs).
On CuPy, bfloat16 operands are held as ``uint16`` arrays of bfloat16 bits
(our own conversion kernel), which needs no bfloat16 support in CuPy itself.
"""

from __future__ import annotations

import functools
import threading

import numpy

from . import simt_gemm, tuned_gemm
from ..switches import switch
from .backend import array_module

PRECISIONS = ("float32", "float64", "tf32", "bfloat16")
switch("DASKSAE_GEMM")  # checked here; read again at each product (tuned_gemm, simt_gemm), so tests can switch it

# cudaDataType and cublasComputeType values (cuda_runtime / cublas_api.h)
_CUDA_R_32F, _CUDA_R_64F, _CUDA_R_16BF = 0, 1, 14
_COMPUTE_32F, _COMPUTE_64F, _COMPUTE_32F_FAST_TF32 = 68, 70, 77
_GEMM_DEFAULT = -1


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def native_precision(*arrays) -> str:
    """The precision of plain arrays: ``float64`` if any is float64, else ``float32``."""
    return "float64" if any(getattr(a, "dtype", None) == numpy.float64 for a in arrays) else "float32"


def result_dtype(precision: str):
    """The dtype of a product's result (and of every non-GEMM value) for ``precision``."""
    return numpy.dtype("float64") if precision == "float64" else numpy.dtype("float32")


# ---------------------------------------------------------------- operands


def _round_mantissa(values, dropped_bits: int):
    """Float32 ``values`` rounded (to nearest even) to ``23 - dropped_bits`` mantissa bits (NumPy)."""
    bits = numpy.ascontiguousarray(values, dtype=numpy.float32).view(numpy.uint32)
    half = numpy.uint32((1 << (dropped_bits - 1)) - 1)
    odd = (bits >> numpy.uint32(dropped_bits)) & numpy.uint32(1)
    mask = numpy.uint32((0xFFFFFFFF << dropped_bits) & 0xFFFFFFFF)
    return ((bits + half + odd) & mask).view(numpy.float32)


BFLOAT16_ROUNDING = r"""
__device__ __forceinline__ unsigned short round_to_bfloat16(float value)  // to nearest even; NaN stays NaN
{
    unsigned int bits = __float_as_uint(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (unsigned short)(bits >> 16);
}
"""  # CUDA source: every kernel that writes bfloat16 operands rounds with this one function


@functools.lru_cache(maxsize=None)
def _to_bfloat16_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "T x, T scale", "uint16 y", "y = round_to_bfloat16((float)(x * scale))", "dasksae_to_bfloat16",
        preamble=BFLOAT16_ROUNDING,
    )


# float32 to bfloat16 bits times a scalar, four values a thread (16-byte loads, 8-byte stores): CuPy's
# elementwise kernel of one value a thread took 0.54 ms a coates200 step on the H200 for its six maps (stage
# inputs and errors, 673 MB: 1.25 TB/s; session 24's kernel table)
_TO_BFLOAT16_VECTOR_SOURCE = BFLOAT16_ROUNDING + r"""
extern "C" __global__ void dasksae_to_bfloat16_vector(const float4* __restrict__ x, ushort4* __restrict__ y,
                                                      const float scale, const unsigned long long vectors)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < vectors;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const float4 value = x[i];
        ushort4 out;
        out.x = round_to_bfloat16(value.x * scale);
        out.y = round_to_bfloat16(value.y * scale);
        out.z = round_to_bfloat16(value.z * scale);
        out.w = round_to_bfloat16(value.w * scale);
        y[i] = out;
    }
}
"""


@functools.lru_cache(maxsize=None)
def _to_bfloat16_vector_kernel():
    import cupy

    return cupy.RawKernel(_TO_BFLOAT16_VECTOR_SOURCE, "dasksae_to_bfloat16_vector")


def _to_bfloat16_vectors(x, scale, out) -> bool:
    """``out = bfloat16(x * scale)`` four values a thread where both are C-contiguous, 16- and 8-byte aligned, of whole
    4s of values, ``x`` float32 and ``scale`` a number; False (nothing written) otherwise."""
    if (x.dtype != numpy.float32 or not isinstance(scale, (numpy.generic, int, float)) or x.size % 4 or x.size == 0
            or x.shape != out.shape or not (x.flags.c_contiguous and out.flags.c_contiguous) or x.data.ptr % 16
            or out.data.ptr % 8):
        return False
    vectors = x.size // 4
    threads = 256
    blocks = min(-(-vectors // threads), 65535 * 4)  # a grid-stride loop past that
    _to_bfloat16_vector_kernel()((blocks,), (threads,), (x, out, numpy.float32(scale), numpy.uint64(vectors)))
    return True


def storage_dtype(precision: str):
    """The dtype of a GEMM operand on CuPy for ``precision`` (``uint16`` bits for bfloat16)."""
    return numpy.dtype("uint16") if precision == "bfloat16" else result_dtype(precision)


def operand(x, precision: str | None = None, scale=None, out=None):
    """``x`` (times ``scale``, broadcast) as an array in the storage the GEMM reads for ``precision``.

    One pass over ``x`` (a strided view is fine).  ``out``: write there (any
    view of the right shape and storage dtype) instead of a new contiguous
    array.  No copy where nothing changes (a contiguous float32 array in
    float32 or tf32 on CuPy, without ``scale`` or ``out``).
    """
    xp = array_module(x)
    precision = precision or native_precision(x)
    if precision == "bfloat16" and xp is not numpy:
        if x.dtype == numpy.uint16:
            if scale is None and out is None:
                return x
            x = from_bfloat16(x)
        if out is None:
            out = xp.empty(x.shape, dtype=numpy.uint16)
        if scale is None or not hasattr(scale, "dtype"):
            scale = x.dtype.type(1 if scale is None else scale)
        if _to_bfloat16_vectors(x, scale, out):
            return out
        return _to_bfloat16_kernel()(x, scale, out)
    dtype = result_dtype(precision)
    if out is None and scale is None:
        value = xp.ascontiguousarray(x, dtype=dtype)
    else:
        value = xp.empty(x.shape, dtype=dtype) if out is None else out
        if scale is None:
            value[...] = x
        else:
            xp.multiply(x, scale, out=value)
    if xp is numpy and precision in ("tf32", "bfloat16"):
        rounded = _round_mantissa(value, 13 if precision == "tf32" else 16)  # a new array: never round the caller's x
        if out is None:
            return rounded
        out[...] = rounded
    return value


def from_bfloat16(bits):
    """Float32 values of a CuPy ``uint16`` array of bfloat16 bits."""
    xp = array_module(bits)
    return (bits.astype(numpy.uint32) << 16).view(numpy.float32) if xp is numpy else (bits.astype(xp.uint32) << 16).view(xp.float32)


# ---------------------------------------------------------------- the product


def batched_matmul(a, b, *, transpose_a: bool = False, transpose_b: bool = False, precision: str | None = None,
                   out=None, accumulate: bool = False):
    """``out[i] (+)= op(a[i]) @ op(b[i])`` for 3-D ``a``, ``b`` with the same number of blocks.

    ``op`` transposes the last two axes when asked (read in place, never
    copied).  ``out``: a C-contiguous result array to write (``accumulate``:
    add to it); by default a new one.  ``a`` and ``b`` may be views whose
    rows are strided (e.g. half of a wider buffer) as long as each row is
    contiguous.  See the module text for precisions (default: that of the
    arrays, float64 or float32).
    """
    precision = check_precision(precision or native_precision(a, b))
    xp = array_module(a, b)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"batched_matmul needs two 3-D arrays with the same batch, got {a.shape} and {b.shape}")
    m, k = (a.shape[2], a.shape[1]) if transpose_a else (a.shape[1], a.shape[2])
    k_b, n = (b.shape[2], b.shape[1]) if transpose_b else (b.shape[1], b.shape[2])
    if k != k_b:
        raise ValueError(f"inner dimensions differ: {a.shape}{'^T' if transpose_a else ''} @ {b.shape}{'^T' if transpose_b else ''}")
    shape = (a.shape[0], m, n)
    if out is None:
        out = xp.zeros(shape, dtype=result_dtype(precision)) if accumulate else xp.empty(shape, dtype=result_dtype(precision))
    elif out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {shape}, got {out.shape}")
    if xp is numpy:
        a, b = operand(a, precision), operand(b, precision)
        product = numpy.matmul(a.transpose(0, 2, 1) if transpose_a else a, b.transpose(0, 2, 1) if transpose_b else b)
        if accumulate:
            out += product
        else:
            out[...] = product
        return out
    a, b = _gemm_view(a, precision), _gemm_view(b, precision)
    if precision == "float32" and simt_gemm.enabled() and simt_gemm.fits(a, b, out, transpose_a, transpose_b, m, n, k):
        simt_gemm.batched_gemm(a, b, out, transpose_a, m, n, k, accumulate)  # our 128 x 96 tiles (the default)
        return out
    _cublas_batched(a, b, out, transpose_a, transpose_b, m, n, k, precision, accumulate)
    return out


def _gemm_view(x, precision):
    """``x`` as cuBLAS can read it: the operand storage dtype, each row contiguous (else an operand copy)."""
    if x.dtype == storage_dtype(precision) and x.strides[2] == x.itemsize and x.strides[1] % x.itemsize == 0 \
            and x.strides[0] % x.itemsize == 0:
        return x
    return operand(x, precision)


_cublas_library = None
_cublas_handles = threading.local()  # each thread's handles, by device (a handle runs on one stream at a time)


def _cublas():
    """cuBLAS through ctypes, with a handle of our own for this thread and device.

    CuPy's binding refuses every cuBLAS call while a stream is being captured
    into a CUDA graph (:mod:`dasksae.cuda_graphs`), which cuBLAS itself
    allows; a handle of our own does not depend on which copy of the library
    CuPy loaded.
    """
    global _cublas_library
    import ctypes

    if _cublas_library is None:
        for name in ("libcublas.so.13", "libcublas.so.12", "libcublas.so", "cublas64_13.dll", "cublas64_12.dll"):
            try:
                library = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("cuBLAS could not be loaded (libcublas.so.13 or .12): install CUDA's cuBLAS with CuPy")
        pointer, integer, long_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        library.cublasCreate_v2.argtypes = [ctypes.POINTER(pointer)]
        library.cublasSetStream_v2.argtypes = [pointer, pointer]
        library.cublasGemmStridedBatchedEx.argtypes = [
            pointer, integer, integer, integer, integer, integer, pointer,
            pointer, integer, integer, long_long, pointer, integer, integer, long_long,
            pointer, pointer, integer, integer, long_long, integer, integer, integer]
        for function in (library.cublasCreate_v2, library.cublasSetStream_v2, library.cublasGemmStridedBatchedEx):
            function.restype = integer
        _cublas_library = library
    from cupy.cuda import runtime

    handles = getattr(_cublas_handles, "by_device", None)
    if handles is None:
        handles = _cublas_handles.by_device = {}
    device = runtime.getDevice()
    if device not in handles:
        handle = ctypes.c_void_p()
        _checked(_cublas_library.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        handles[device] = handle
    return _cublas_library, handles[device]


def _checked(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


def _cublas_batched(a, b, out, transpose_a, transpose_b, m, n, k, precision, accumulate):
    """Row-major ``C = op(A) op(B)`` as column-major ``C^T = op(B)^T op(A)^T``: cuBLAS sees ``B`` first."""
    if precision == "float64":
        data_type, compute, scalar = _CUDA_R_64F, _COMPUTE_64F, numpy.float64
    elif precision == "bfloat16":
        data_type, compute, scalar = _CUDA_R_16BF, _COMPUTE_32F, numpy.float32
    else:
        data_type, compute, scalar = _CUDA_R_32F, (_COMPUTE_32F_FAST_TF32 if precision == "tf32" else _COMPUTE_32F), numpy.float32
    out_type = _CUDA_R_64F if precision == "float64" else _CUDA_R_32F
    alpha = numpy.array(1, dtype=scalar)
    beta = numpy.array(1 if accumulate else 0, dtype=scalar)
    # a row-major (r, c) block with row stride s is a column-major (c, r) matrix with leading dimension s
    op_b, op_a = (1 if transpose_b else 0), (1 if transpose_a else 0)
    ld_b, batch_b = b.strides[1] // b.itemsize, b.strides[0] // b.itemsize
    ld_a, batch_a = a.strides[1] // a.itemsize, a.strides[0] // a.itemsize
    import cupy

    (library, handle), count = _cublas(), a.shape[0]
    # a handle does not follow CuPy's current stream: left alone, every product ran on the legacy default
    # stream, which orders itself against every worker thread's blocking stream (and no capture of a
    # non-blocking stream would see it)
    _checked(library.cublasSetStream_v2(handle, cupy.cuda.get_current_stream().ptr), "cublasSetStream")

    def plain(b_ptr, a_ptr, out_ptr):
        _checked(library.cublasGemmStridedBatchedEx(
            handle, op_b, op_a, n, m, k,
            alpha.ctypes.data,
            b_ptr, data_type, ld_b, batch_b,
            a_ptr, data_type, ld_a, batch_a,
            beta.ctypes.data,
            out_ptr, out_type, n, m * n,
            count, compute, _GEMM_DEFAULT,
        ), "cublasGemmStridedBatchedEx")

    if precision != "float64" and tuned_gemm.enabled():
        tuned_gemm.batched_gemm(plain, op_b, op_a, n, m, k, b.data.ptr, data_type, ld_b, batch_b, a.data.ptr, data_type,
                                ld_a, batch_a, out.data.ptr, out_type, n, m * n, count, compute, alpha, beta,
                                (b.itemsize, a.itemsize, out.itemsize))
    else:
        plain(b.data.ptr, a.data.ptr, out.data.ptr)
