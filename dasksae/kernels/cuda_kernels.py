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
def _window_sum_transpose_kernel(times: bool = False):
    import cupy

    return cupy.ElementwiseKernel(
        "raw T g, int64 width, int64 trailing, int64 out_height, int64 out_width, int32 size, int32 stride"
        + (", T times" if times else ""),
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
        out = """ + ("times * total;" if times else "total;") + """
        """,
        "dasksae_window_sum_transpose" + ("_times" if times else ""),
    )


@functools.lru_cache(maxsize=None)
def _pool_squares_kernel(with_units: bool):
    import cupy

    return cupy.ElementwiseKernel(
        "raw T x, int64 width, int64 trailing, int64 out_width, int32 size, int32 stride, T eps, T scale_squared",
        "T squares, T pooled" + (", T units" if with_units else ""),
        """
        const long long q = i % trailing;
        const long long rest = i / trailing;
        const long long column = rest % out_width;
        const long long row = rest / out_width;
        T total = 0;
        for (int a = 0; a < size; ++a) {
            const long long base = (row * stride + a) * width + column * stride;
            for (int b = 0; b < size; ++b) {
                const T value = x[(base + b) * trailing + q];
                total += multiply_rounded(value, value);  // rounded as the array code's x * x, not fused into the sum
            }
        }
        squares = total;
        pooled = sqrt(eps + total);
        """ + ("units = sqrt(eps + multiply_rounded(scale_squared, total));" if with_units else ""),
        "dasksae_pool_squares" + ("_units" if with_units else ""),
        preamble=_ROUNDED_MULTIPLY,
    )


# The float64 sums our one-pass kernels leave a block (code_gradient, elementwise): every thread of the block calls it
# with its part; the block's sum goes to partials[blockIdx.x] (shuffles within each warp, then across them in the first)
BLOCK_PARTIAL = r"""
__device__ __forceinline__ void block_partial(double part, double* __restrict__ partials)
{
    __shared__ double warp_sums[32];
    for (int offset = 16; offset > 0; offset /= 2) part += __shfl_down_sync(0xffffffff, part, offset);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = part;
    __syncthreads();
    if (threadIdx.x < 32) {
        part = threadIdx.x < (blockDim.x >> 5) ? warp_sums[threadIdx.x] : 0.0;
        for (int offset = 16; offset > 0; offset /= 2) part += __shfl_down_sync(0xffffffff, part, offset);
        if (threadIdx.x == 0) partials[blockIdx.x] = part;
    }
}
"""

_ROUNDED_MULTIPLY = r"""
__device__ __forceinline__ float multiply_rounded(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double multiply_rounded(double a, double b) { return __dmul_rn(a, b); }
"""


@functools.lru_cache(maxsize=None)
def _pool_unit_weights_kernel(with_grad: bool):
    import cupy

    sparsity = "multiply_rounded(scale_squared, unit_scale / units)"
    return cupy.ElementwiseKernel(
        ("T grad, " if with_grad else "") + "T pooled, T units, T scale_squared, T unit_scale",
        "T weight",
        f"weight = grad / pooled + {sparsity};" if with_grad else f"weight = {sparsity};",
        "dasksae_pool_unit_weights",
        preamble=_ROUNDED_MULTIPLY,
    )


# Pooling windows over float32 maps with the geometry compiled in: one thread per 4 values along the trailing
# (K, M) axes, 32-bit indices whose divisions by constants are multiplications.  The elementwise kernels above
# (64-bit index arithmetic at run time, one value a thread) moved 0.3 TB/s on an H200 (the transpose, 0.65 ms
# a coates200 stage-1 map); these are for float32 maps whose trailing size is a multiple of 4.
#
# With windows one apart (stride 1, every config's pooling) a thread takes WINDOW_ROWS output rows of one column in
# turn: each source row's sum over the window's columns is loaded once and kept in a ring of SIZE registers, and an
# output row is the sum of the ring, so a row of output takes SIZE loads instead of SIZE^2.  A thread to each output
# (SIZE^2 loads) read each input 25 times through L2: on an H100 (session 43, bench/results/session43/bytes/) the
# backward's transpose moved 1.24 TB/s of DRAM bytes and 9 TB/s through L2 (0.60 ms a coates200 step), the forward's
# units 1.60 TB/s (0.44 ms).  Other strides keep a thread to each output.
WINDOW_ROWS = 12

_WINDOW_SOURCE = r"""
// a thread's place: vector t of column `column`, output rows first .. last - 1 (ROWS_A_THREAD of them, or fewer at
// the bottom); false past the grid's last
__device__ __forceinline__ bool window_thread(const unsigned int i, const unsigned int total, unsigned int& t,
                                              int& column, int& first, int& last)
{
    if (i >= total) return false;
    t = i % VECTORS;
    const unsigned int rest = i / VECTORS;
    column = rest % OUT_WIDTH;
    first = (rest / OUT_WIDTH) * ROWS_A_THREAD;
    last = first + ROWS_A_THREAD < OUT_HEIGHT ? first + ROWS_A_THREAD : OUT_HEIGHT;
    return true;
}

__device__ __forceinline__ float4 root_of_eps_plus(const float eps, const float scale, const float4 s)
{
    return make_float4(sqrtf(eps + __fmul_rn(scale, s.x)), sqrtf(eps + __fmul_rn(scale, s.y)),
                       sqrtf(eps + __fmul_rn(scale, s.z)), sqrtf(eps + __fmul_rn(scale, s.w)));
}

__device__ __forceinline__ void add_to(float4& sum, const float4 v)
{
    sum.x += v.x; sum.y += v.y; sum.z += v.z; sum.w += v.w;
}

#if TRANSPOSE
// a source row's part of V^T g at (., column): the sum of g (IN_HEIGHT, IN_WIDTH) over the windows of row `row` that
// cover the column (zero for rows outside g)
__device__ __forceinline__ float4 source_row(const float4* __restrict__ g, const int row, const int column,
                                             const unsigned int t)
{
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row < 0 || row >= IN_HEIGHT) return sum;
    for (int b = 0; b < SIZE; ++b) {
        const int c = column - b;
        if (c >= 0 && c < IN_WIDTH) add_to(sum, g[((unsigned int)row * IN_WIDTH + c) * VECTORS + t]);
    }
    return sum;
}
#define FIRST_SOURCE_ROW(r) ((r) - (SIZE - 1))  // output row r (of the map) takes g's rows r - SIZE + 1 .. r
#else
// a source row's part of V x^2 at (., column): the sum of x^2 over the window's columns of input row `row`
__device__ __forceinline__ float4 source_row(const float4* __restrict__ x, const int row, const int column,
                                             const unsigned int t)
{
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    const unsigned int base = (unsigned int)row * IN_WIDTH + column;
    for (int b = 0; b < SIZE; ++b) {
        const float4 v = x[(base + b) * VECTORS + t];
        sum.x += __fmul_rn(v.x, v.x); sum.y += __fmul_rn(v.y, v.y); sum.z += __fmul_rn(v.z, v.z); sum.w += __fmul_rn(v.w, v.w);
    }
    return sum;
}
#define FIRST_SOURCE_ROW(r) (r)  // output row r takes x's rows r .. r + SIZE - 1
#endif

// the thread's output rows in turn: body(row, sum) with each row's window sum (V x^2, or V^T g), its source rows' sums
// kept in a ring (stride 1), or each output's window summed whole (other strides)
template <typename Body>
__device__ __forceinline__ void for_each_window(const float4* __restrict__ in, const int column, const unsigned int t,
                                                const int first, const int last, Body body)
{
#if STRIDE == 1
    float4 ring[SIZE];  // ring[k]: source row FIRST_SOURCE_ROW(row) + k of the row being summed
#pragma unroll
    for (int k = 1; k < SIZE; ++k) ring[k] = source_row(in, FIRST_SOURCE_ROW(first) + k - 1, column, t);
    for (int row = first; row < last; ++row) {
#pragma unroll
        for (int k = 0; k + 1 < SIZE; ++k) ring[k] = ring[k + 1];
        ring[SIZE - 1] = source_row(in, FIRST_SOURCE_ROW(row) + SIZE - 1, column, t);
        float4 sum = ring[0];
#pragma unroll
        for (int k = 1; k < SIZE; ++k) add_to(sum, ring[k]);
        body(row, sum);
    }
#else
    for (int row = first; row < last; ++row) {
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#if TRANSPOSE
        // out (H, W) from g (OH, OW): the windows that cover (row, column), in the order of the array code's loop
        for (int a = 0; a < SIZE; ++a) {
            const int r = row - a;
            if (r < 0) break;
            if (r % STRIDE != 0 || r / STRIDE >= IN_HEIGHT) continue;
            for (int b = 0; b < SIZE; ++b) {
                const int c = column - b;
                if (c < 0) break;
                if (c % STRIDE != 0 || c / STRIDE >= IN_WIDTH) continue;
                add_to(sum, in[((unsigned int)(r / STRIDE) * IN_WIDTH + c / STRIDE) * VECTORS + t]);
            }
        }
#else
        for (int a = 0; a < SIZE; ++a) {
            const unsigned int base = (unsigned int)(row * STRIDE + a) * IN_WIDTH + column * STRIDE;
            for (int b = 0; b < SIZE; ++b) {
                const float4 v = in[(base + b) * VECTORS + t];
                sum.x += __fmul_rn(v.x, v.x); sum.y += __fmul_rn(v.y, v.y); sum.z += __fmul_rn(v.z, v.z); sum.w += __fmul_rn(v.w, v.w);
            }
        }
#endif
        body(row, sum);
    }
#endif
}

#if !TRANSPOSE
// The pooled units and the sparsity term's units of the objective's forward pass, and this block's float64 sums of
// the units (the term) and of V x^2 / units (its d/da), without writing V x^2: the passes that summed them and the
// map of squares, in this one (partials: [unit sums | ratio sums], a value a block each)
extern "C" __global__ void dasksae_pool_units_and_sums(const float4* __restrict__ x, float4* __restrict__ pooled,
                                                       float4* __restrict__ units, const float eps,
                                                       const float* __restrict__ scale_squared_pointer,
                                                       const float scale_squared_value, const int scale_on_device,
                                                       const unsigned int total, double* __restrict__ partials)
{
    unsigned int t;
    int column, first, last;
    double unit_part = 0.0, ratio_part = 0.0;
    if (window_thread(blockIdx.x * blockDim.x + threadIdx.x, total, t, column, first, last)) {
        const float scale_squared = scale_on_device ? *scale_squared_pointer : scale_squared_value;  // device: graphs
        for_each_window(x, column, t, first, last, [&](const int row, const float4 sum) {
            const unsigned int i = ((unsigned int)row * OUT_WIDTH + column) * VECTORS + t;
            pooled[i] = root_of_eps_plus(eps, 1.f, sum);
            const float4 u = root_of_eps_plus(eps, scale_squared, sum);
            units[i] = u;
            unit_part += ((double)u.x + (double)u.y) + ((double)u.z + (double)u.w);
            ratio_part += ((double)__fdiv_rn(sum.x, u.x) + (double)__fdiv_rn(sum.y, u.y))
                          + ((double)__fdiv_rn(sum.z, u.z) + (double)__fdiv_rn(sum.w, u.w));
        });
    }
    block_partial(unit_part, partials);
    __syncthreads();  // block_partial's shared sums are read by the first warp before they are written again
    block_partial(ratio_part, partials + gridDim.x);
}
#endif

// TRANSPOSE: out (OUT_HEIGHT, OUT_WIDTH) = times * V^T x for x (IN_HEIGHT, IN_WIDTH); else out = V x^2 of x
// (IN_HEIGHT, IN_WIDTH) and pooled = sqrt(eps + out), with UNITS units = sqrt(eps + scale_squared out).  `total`: the
// grid's threads, ceil(OUT_HEIGHT / ROWS_A_THREAD) OUT_WIDTH VECTORS
extern "C" __global__ void dasksae_pool_windows(const float4* __restrict__ x, const float4* __restrict__ times,
                                                float4* __restrict__ out, float4* __restrict__ pooled,
                                                float4* __restrict__ units, const float eps,
                                                const float* __restrict__ scale_squared_pointer,
                                                const float scale_squared_value, const int scale_on_device,
                                                const unsigned int total)
{
    unsigned int t;
    int column, first, last;
    if (!window_thread(blockIdx.x * blockDim.x + threadIdx.x, total, t, column, first, last)) return;
    const float scale_squared = UNITS ? (scale_on_device ? *scale_squared_pointer : scale_squared_value) : 0.f;
    for_each_window(x, column, t, first, last, [&](const int row, const float4 sum) {
        const unsigned int i = ((unsigned int)row * OUT_WIDTH + column) * VECTORS + t;
#if TRANSPOSE
        const float4 f = times[i];
        out[i] = make_float4(__fmul_rn(f.x, sum.x), __fmul_rn(f.y, sum.y), __fmul_rn(f.z, sum.z), __fmul_rn(f.w, sum.w));
#else
        out[i] = sum;
        pooled[i] = root_of_eps_plus(eps, 1.f, sum);
        if (UNITS) units[i] = root_of_eps_plus(eps, scale_squared, sum);
#endif
    });
}
"""


def window_rows(stride: int) -> int:
    """The output rows a thread of the window kernels takes: :data:`WINDOW_ROWS` with windows one apart, else 1."""
    return WINDOW_ROWS if stride == 1 else 1


def window_threads(out_height: int, out_width: int, vectors: int, stride: int) -> int:
    """The threads of a window kernel's grid over an output map ``(out_height, out_width)`` of ``vectors`` float4s a
    pixel: a thread to each :func:`window_rows` rows of a column's vector."""
    return -(-out_height // window_rows(stride)) * out_width * vectors


def pool_windows_source(transpose: bool, units: bool, vectors: int, in_height: int, in_width: int, out_height: int,
                        out_width: int, size: int, stride: int) -> str:
    """The CUDA source of the pooling-window kernels for one map shape (``dasksae_pool_windows``, and
    ``dasksae_pool_units_and_sums`` where not ``transpose``).

    ``transpose=False``: squares, pooled and (``units``) sparsity units of
    ``x (in_height, in_width, 4*vectors)``; ``True``: ``times * V^T g`` for
    ``g (in_height, in_width, 4*vectors)`` into a map ``(out_height, out_width)``.
    """
    defines = (f"#define TRANSPOSE {int(transpose)}\n#define UNITS {int(units)}\n#define VECTORS {vectors}u\n"
               f"#define IN_HEIGHT {in_height}\n#define IN_WIDTH {in_width}\n#define OUT_HEIGHT {out_height}\n"
               f"#define OUT_WIDTH {out_width}\n#define SIZE {size}\n#define STRIDE {stride}\n"
               f"#define ROWS_A_THREAD {window_rows(stride)}\n")
    return defines + BLOCK_PARTIAL + _WINDOW_SOURCE


@functools.lru_cache(maxsize=None)
def _pool_windows_kernel(*geometry, name="dasksae_pool_windows"):
    import cupy

    return cupy.RawKernel(pool_windows_source(*geometry), name, options=("-std=c++14",))


def pool_units_and_sums(x, size: int, stride: int, eps: float, scale_squared):
    """:func:`dasksae.kernels.pooling.pool_units_and_sums` in one kernel (``dasksae_pool_units_and_sums``) and one
    sum of its partials, or ``None`` where the arrays do not suit it (float32, C-contiguous, 16-byte aligned, the
    trailing size in whole 4s)."""
    import cupy

    from .pooling import pooled_size

    out_shape = (pooled_size(x.shape[0], size, stride), pooled_size(x.shape[1], size, stride)) + tuple(x.shape[2:])
    trailing = 1
    for extent in out_shape[2:]:
        trailing *= extent
    on_device = isinstance(scale_squared, cupy.ndarray)  # a device scalar under CUDA graphs
    values = out_shape[0] * out_shape[1] * trailing
    total = window_threads(out_shape[0], out_shape[1], trailing // 4, stride)
    if (x.dtype != numpy.float32 or trailing % 4 or not x.flags.c_contiguous or x.data.ptr % 16 or values == 0
            or max(values, x.size) // 4 >= 2**31  # (the kernel's float4 indices: 32 bits)
            or (on_device and (scale_squared.dtype != numpy.float32 or scale_squared.size != 1))):
        return None
    pooled, units = (cupy.empty(out_shape, dtype=numpy.float32) for _ in range(2))
    threads = 256
    blocks = (total + threads - 1) // threads
    partials = cupy.empty((2, blocks), dtype=numpy.float64)
    kernel = _pool_windows_kernel(False, True, trailing // 4, x.shape[0], x.shape[1], out_shape[0], out_shape[1],
                                  size, stride, name="dasksae_pool_units_and_sums")
    kernel((blocks,), (threads,),
           (x, pooled, units, numpy.float32(eps), scale_squared if on_device else x,
            numpy.float32(0 if on_device else scale_squared), numpy.int32(on_device), numpy.uint32(total), partials))
    sums = partials.sum(axis=1)
    return pooled, units, sums[0], sums[1]


def _pool_windows(x, out_shape, size, stride, transpose, times=None, eps=0.0, scale_squared=None):
    """The compiled window kernel's outputs, or ``None`` where the arrays do not suit it."""
    import cupy

    trailing = 1
    for extent in out_shape[2:]:
        trailing *= extent
    arrays = [x] + ([] if times is None else [times])
    if (x.dtype != numpy.float32 or trailing % 4 or any(not a.flags.c_contiguous or a.data.ptr % 16 for a in arrays)
            or (times is not None and (times.dtype != numpy.float32 or times.shape != tuple(out_shape)))):
        return None
    values = out_shape[0] * out_shape[1] * trailing
    if values == 0 or max(values, x.size) // 4 >= 2**31:  # (the kernels' float4 indices: 32 bits)
        return None
    total = window_threads(out_shape[0], out_shape[1], trailing // 4, stride)
    on_device = isinstance(scale_squared, cupy.ndarray)  # a device scalar under CUDA graphs
    if on_device and (scale_squared.dtype != numpy.float32 or scale_squared.size != 1):
        return None
    outputs = [cupy.empty(out_shape, dtype=numpy.float32) for _ in range(1 if transpose else (2 if scale_squared is None else 3))]
    kernel = _pool_windows_kernel(transpose, scale_squared is not None, trailing // 4, x.shape[0], x.shape[1],
                                  out_shape[0], out_shape[1], size, stride)
    threads = 256
    padded = outputs + [outputs[0]] * (3 - len(outputs))  # pointers never written without their flag
    kernel(((total + threads - 1) // threads,), (threads,),
           (x, x if times is None else times, *padded, numpy.float32(eps), scale_squared if on_device else x,
            numpy.float32(0 if on_device or scale_squared is None else scale_squared), numpy.int32(on_device),
            numpy.uint32(total)))
    return outputs


_FOLD_SOURCE = r"""
extern "C" __global__ void dasksae_fold_patches(const VALUE* __restrict__ patches, VALUE* __restrict__ out,
                                                unsigned int total, int blocks_h)
{
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned int m = i % VECTORS;  // out (H, W, C, M) in vectors of LANES values along M
    unsigned int rest = i / VECTORS;
    const int c = rest % CHANNELS;
    rest /= CHANNELS;
    const int w = rest % WIDTH;
    const int h = rest / WIDTH;
    const int p_first = h >= FIELD ? (h - FIELD) / STEP + 1 : 0;
    const int q_first = w >= FIELD ? (w - FIELD) / STEP + 1 : 0;
    const int p_last = min(h / STEP, blocks_h - 1);
    const int q_last = min(w / STEP, BLOCKS_W - 1);
    VALUE sum = out[i];
    for (int p = p_first; p <= p_last; ++p) {
        const int u = h - p * STEP;
        for (int q = q_first; q <= q_last; ++q) {
            const int v = w - q * STEP;
            const VALUE term = patches[((long long)(p * BLOCKS_W + q) * FAN_IN + (u * FIELD + v) * CHANNELS + c) * VECTORS + m];
            ADD(sum, term);
        }
    }
    out[i] = sum;
}
"""

_FOLD_VALUES = {  # (dtype, lanes): the vector type and its add
    ("float32", 4): ("float4", "a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w"),
    ("float32", 2): ("float2", "a.x += b.x; a.y += b.y"),
    ("float32", 1): ("float", "a += b"),
    ("float64", 2): ("double2", "a.x += b.x; a.y += b.y"),
    ("float64", 1): ("double", "a += b"),
}


def fold_source(dtype: str, lanes: int, vectors: int, channels: int, width: int, field: int, step: int, blocks_w: int) -> str:
    """The CUDA source of the fold kernel for one layer shape (``dasksae_fold_patches``)."""
    value, add = _FOLD_VALUES[(dtype, lanes)]
    defines = (f"#define VALUE {value}\n#define ADD(a, b) do {{ {add}; }} while (0)\n#define VECTORS {vectors}u\n"
               f"#define CHANNELS {channels}u\n#define WIDTH {width}u\n#define FIELD {field}\n#define STEP {step}\n"
               f"#define BLOCKS_W {blocks_w}\n#define FAN_IN {field * field * channels}\n")
    return defines + _FOLD_SOURCE


@functools.lru_cache(maxsize=None)
def _fold_kernel(*geometry):
    import cupy

    return cupy.RawKernel(fold_source(*geometry), "dasksae_fold_patches")


def fold_patches_into(out, patches, field: int, step: int, blocks_h: int, blocks_w: int):
    """Add the overlapping fields ``patches (nbh*nbw, f*f*C, M)`` into ``out (H, W, C, M)`` in one kernel.

    One thread per vector of ``out`` (4 float32 values along ``M`` where the
    sizes allow) sums the (at most ``ceil(f/step)^2``) field entries that land
    on it, in a fixed order (no atomics); ``out`` is read and written once,
    where the strided-add fold touches it once per field offset group.  The
    geometry is compiled in (one kernel per layer shape, cached).
    """
    import cupy

    if not out.flags.c_contiguous or out.dtype.name not in ("float32", "float64") or patches.dtype != out.dtype:
        return False
    patches = cupy.ascontiguousarray(patches)
    height, width, channels, batch = out.shape
    if out.size == 0:
        return True
    lanes = next(n for n in (4, 2, 1) if (out.dtype.name, n) in _FOLD_VALUES and batch % n == 0
                 and out.data.ptr % (n * out.itemsize) == 0 and patches.data.ptr % (n * out.itemsize) == 0)
    vectors = batch // lanes
    total = height * width * channels * vectors
    if total >= 2**31:
        return False
    kernel = _fold_kernel(out.dtype.name, lanes, vectors, channels, width, field, step, blocks_w)
    threads = 256
    kernel(((total + threads - 1) // threads,), (threads,), (patches, out, numpy.uint32(total), numpy.int32(blocks_h)))
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


def window_sum_transpose(g, input_shape, size: int, stride: int, times=None):
    import cupy

    g = cupy.ascontiguousarray(g)
    if times is not None:
        fast = _pool_windows(g, tuple(input_shape), size, stride, True, times=times)
        if fast is not None:
            return fast[0]
    out = cupy.empty(input_shape, dtype=g.dtype)
    trailing = 1
    for extent in input_shape[2:]:
        trailing *= extent
    arguments = (g, input_shape[1], trailing, g.shape[0], g.shape[1], size, stride)
    if times is None:
        _window_sum_transpose_kernel()(*arguments, out)
    else:
        _window_sum_transpose_kernel(True)(*arguments, times.astype(g.dtype, copy=False), out)
    return out


def pool_squares(x, size: int, stride: int, eps: float, scale_squared=None):
    """:func:`dasksae.kernels.pooling.pool_squares` in one kernel: ``(squares, pooled, units or None)``."""
    import cupy

    from .pooling import pooled_size

    x = cupy.ascontiguousarray(x)
    out_shape = (pooled_size(x.shape[0], size, stride), pooled_size(x.shape[1], size, stride)) + x.shape[2:]
    trailing = 1
    for extent in x.shape[2:]:
        trailing *= extent
    fast = _pool_windows(x, out_shape, size, stride, False, eps=eps, scale_squared=scale_squared)
    if fast is not None:
        return fast[0], fast[1], (fast[2] if scale_squared is not None else None)
    value = x.dtype.type
    outputs = [cupy.empty(out_shape, dtype=x.dtype) for _ in range(2 if scale_squared is None else 3)]
    _pool_squares_kernel(scale_squared is not None)(
        x, x.shape[1], trailing, out_shape[1], size, stride, value(eps), _scalar(scale_squared, value), *outputs
    )
    return outputs[0], outputs[1], (outputs[2] if scale_squared is not None else None)


def _scalar(value, dtype):
    """A scalar argument of an elementwise kernel: a device scalar as it is (CUDA graphs read it each launch),
    else ``value`` (``None``: 0) as ``dtype``."""
    import cupy

    if isinstance(value, cupy.ndarray):
        return value.astype(dtype, copy=False)
    return dtype(0 if value is None else value)


def pool_unit_weights(grad_pooled, pooled, units, scale_squared, unit_scale):
    """:func:`dasksae.kernels.pooling.pool_unit_weights` with the sparsity term's ``units``, in one kernel."""
    value = pooled.dtype.type
    scalars = (_scalar(scale_squared, value), value(unit_scale))
    if grad_pooled is None:
        return _pool_unit_weights_kernel(False)(pooled, units, *scalars)
    return _pool_unit_weights_kernel(True)(grad_pooled.astype(pooled.dtype, copy=False), pooled, units, *scalars)


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
# Maps are (H, W, K, M); per-position planes (H, W, M).  A thread takes WINDOW_ROWS rows of one (w, m) in turn and
# loops over the K maps at each (reads coalesced along m).  The smoothing is the 2-D zero-padded "same" Gaussian stencil of
# :mod:`.contrast` with the plane's geometry compiled in (one kernel per shape, cached), and the border
# weights ("coverage") of the whole map, from the window's origin and the map's size, made once per shape
# on the device as inverse weights of each row and column, so that a tile's window is normalised like the
# whole map.  Computing the coverage in the kernel for each of the 25 terms, with 64-bit indices, made
# this stencil compute-bound: 0.2 ms a call on the H200 for a 12 MB plane.

_LCN_SMOOTH_SOURCE = r"""
// a source row's part of the stencil at (., w): row y's values over the window's columns, each times its weight (and,
// DIVIDE_BEFORE, the inverse coverage of its column and of the row); zero for rows outside the plane
__device__ __forceinline__ VALUE lcn_source_row(const VALUE* __restrict__ plane, const VALUE* __restrict__ window,
                                                const VALUE* __restrict__ inverse_cover_h,
                                                const VALUE* __restrict__ inverse_cover_w, const int y, const int w,
                                                const unsigned int m)
{
    if (y < 0 || y >= HEIGHT) return 0;
    VALUE row = 0;
#pragma unroll
    for (int b = 0; b < SIZE; ++b) {
        const int x = w + b - SIZE / 2;
        if (x < 0 || x >= WIDTH) continue;
#if DIVIDE_BEFORE
        row += plane[((unsigned int)y * WIDTH + x) * BATCH + m] * (window[b] * inverse_cover_w[x]);
#else
        row += plane[((unsigned int)y * WIDTH + x) * BATCH + m] * window[b];
#endif
    }
#if DIVIDE_BEFORE
    row *= inverse_cover_h[y];
#endif
    return row;
}

// A thread takes ROWS_A_THREAD rows of one column's value m in turn (fewer at the bottom): each source row's part
// (lcn_source_row) is made once and kept in a ring of SIZE registers, so that a row takes SIZE loads of the plane
// instead of SIZE^2.  TOTAL: the grid's threads, ceil(HEIGHT / ROWS_A_THREAD) WIDTH BATCH
extern "C" __global__ void dasksae_lcn_smooth(const VALUE* __restrict__ plane, const VALUE* __restrict__ window,
                                              const VALUE* __restrict__ inverse_cover_h,
                                              const VALUE* __restrict__ inverse_cover_w, VALUE* __restrict__ out,
                                              VALUE* __restrict__ floored, VALUE inverse_maps, VALUE floor,
                                              const VALUE* maps_in, VALUE* maps_out)
{
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= TOTAL) return;
    const unsigned int m = i % BATCH;  // plane (HEIGHT, WIDTH, BATCH)
    const unsigned int rest = i / BATCH;
    const int w = rest % WIDTH;
    const int first = (rest / WIDTH) * ROWS_A_THREAD;
    const int last = first + ROWS_A_THREAD < HEIGHT ? first + ROWS_A_THREAD : HEIGHT;
    VALUE ring[SIZE];  // ring[k]: source row h - SIZE / 2 + k of the row h being smoothed
#pragma unroll
    for (int k = 1; k < SIZE; ++k)
        ring[k] = lcn_source_row(plane, window, inverse_cover_h, inverse_cover_w, first - SIZE / 2 + k - 1, w, m);
    for (int h = first; h < last; ++h) {
#pragma unroll
        for (int k = 0; k + 1 < SIZE; ++k) ring[k] = ring[k + 1];
        ring[SIZE - 1] = lcn_source_row(plane, window, inverse_cover_h, inverse_cover_w, h + SIZE - 1 - SIZE / 2, w, m);
        VALUE total = 0;
#pragma unroll
        for (int k = 0; k < SIZE; ++k) total += ring[k] * window[k];
#if !DIVIDE_BEFORE
        total *= inverse_cover_h[h] * inverse_cover_w[w];
#endif
        total *= inverse_maps;
        const unsigned int at = ((unsigned int)h * WIDTH + w) * BATCH + m, hw = (unsigned int)h * WIDTH + w;
#if ROOT
        total = sqrt(total);
        const VALUE divisor = total > floor ? total : floor;
        floored[at] = divisor;
#endif
        out[at] = total;
        // the maps (HEIGHT, WIDTH, MAPS, BATCH) at this plane position: reads and writes coalesced along m
#if MAPS_OPERATION == 1  // divided by the divisor (LCN's output from the centred maps)
        for (unsigned int k = 0; k < MAPS; ++k) maps_out[(hw * MAPS + k) * BATCH + m] = maps_in[(hw * MAPS + k) * BATCH + m] / divisor;
#elif MAPS_OPERATION == 2  // less the average (the backward's mean term, in place)
        for (unsigned int k = 0; k < MAPS; ++k) maps_out[(hw * MAPS + k) * BATCH + m] = maps_in[(hw * MAPS + k) * BATCH + m] - total;
#endif
    }
}
"""
MAPS_OPERATIONS = {None: 0, "divide": 1, "subtract": 2}  # what dasksae_lcn_smooth does to the maps beside its plane


# LCN's planes (H, W, M) have a value a position where the pooling's maps have K M: a 2x2 tile's plane at WINDOW_ROWS
# rows a thread is too few threads for the GPU (coates200's first stage, M=96: 94 x 94 x 96 values, 72k threads; on an
# H100, session 44, bench/results/session44/tables/, the four worker threads' smoothing took 0.99 ms a step against
# one tile's 0.42).  Planes that would have fewer than this many threads take fewer rows a thread
LCN_THREADS_WANTED = 2**17


def lcn_rows(height: int, width: int, batch: int) -> int:
    """The rows a thread of :func:`lcn_smooth` takes in a plane ``(height, width, batch)``: :data:`WINDOW_ROWS`, or
    fewer (at least 1) where that would leave fewer than :data:`LCN_THREADS_WANTED` threads."""
    return max(1, min(WINDOW_ROWS, height * width * batch // LCN_THREADS_WANTED))


def lcn_threads(height: int, width: int, batch: int, rows: int | None = None) -> int:
    """The threads of :func:`lcn_smooth`'s grid over a plane ``(height, width, batch)``: a thread to each ``rows``
    (by default :func:`lcn_rows`) rows of a column's value."""
    rows = rows or lcn_rows(height, width, batch)
    return -(-height // rows) * width * batch


def lcn_smooth_source(dtype: str, size: int, height: int, width: int, batch: int, divide_before: bool, root: bool,
                      maps_operation: str | None = None, maps: int = 0, rows: int | None = None) -> str:
    """The CUDA source of LCN's window average for one plane shape (``dasksae_lcn_smooth``).

    ``G*`` of :mod:`.contrast` on a plane ``(height, width, batch)`` of
    ``dtype`` values, divided by the number of maps; ``divide_before``: its
    adjoint.  ``root``: the output is ``sqrt`` of that, and a second output
    holds ``max(sqrt, floor)`` (LCN's ``sigma`` and divisor in one pass).
    ``maps_operation`` (on ``maps`` maps ``(height, width, maps, batch)``):
    ``"divide"`` writes ``maps_in / divisor`` to ``maps_out`` (with ``root``),
    ``"subtract"`` writes ``maps_in - average`` (in place where they are one
    array): the passes that followed the stencil, in it.  ``rows``: the rows a thread takes (by default
    :func:`lcn_rows`'s).
    """
    value = {"float32": "float", "float64": "double"}[dtype]
    rows = rows or lcn_rows(height, width, batch)
    if maps_operation == "divide" and not root:
        raise ValueError("lcn_smooth divides the maps only by the divisor it makes (root=True)")
    defines = (f"#define VALUE {value}\n#define SIZE {size}\n#define HEIGHT {height}\n#define WIDTH {width}\n"
               f"#define BATCH {batch}u\n#define TOTAL {lcn_threads(height, width, batch, rows)}u\n"
               f"#define ROWS_A_THREAD {rows}\n"
               f"#define DIVIDE_BEFORE {int(divide_before)}\n#define ROOT {int(root)}\n"
               f"#define MAPS_OPERATION {MAPS_OPERATIONS[maps_operation]}\n#define MAPS {maps}u\n")
    return defines + _LCN_SMOOTH_SOURCE


@functools.lru_cache(maxsize=None)
def _lcn_smooth_kernel(*geometry):
    import cupy

    return cupy.RawKernel(lcn_smooth_source(*geometry), "dasksae_lcn_smooth")


@functools.lru_cache(maxsize=64)
def _lcn_weights(window: tuple, height: int, width: int, origin: tuple, map_shape: tuple, dtype: str):
    """The window and the inverse border coverage of each row and column, on the device (made once per shape)."""
    import cupy

    from .contrast import _axis_coverage

    window = numpy.asarray(window)
    return (cupy.asarray(window.astype(dtype)),
            cupy.asarray((1.0 / _axis_coverage(height, origin[0], map_shape[0], window)).astype(dtype)),
            cupy.asarray((1.0 / _axis_coverage(width, origin[1], map_shape[1], window)).astype(dtype)))


def lcn_smooth(plane, window, origin, map_shape, maps: int, divide_before: bool, floor=None, divide=None,
               subtract_from=None):
    """``G*`` of :mod:`.contrast` on an ``(H, W, M)`` plane, divided by ``maps``.

    ``divide_before=False``: the local average (smooth, then divide by the
    coverage at the output); ``True``: its adjoint (divide by the coverage at
    the input, then smooth).  ``floor``: return ``(sqrt(average),
    max(sqrt(average), floor))`` instead (LCN's ``sigma`` and divisor).
    ``divide`` (with ``floor``): C-contiguous maps ``(H, W, maps, M)``; also
    return them divided by the divisor, a third output.  ``subtract_from``:
    C-contiguous maps ``(H, W, maps, M)`` less the result, in place.  Each in
    the stencil's pass (a plane position's ``maps`` values a thread), instead
    of a broadcast pass of CuPy's after it.
    """
    import cupy

    plane = cupy.ascontiguousarray(plane)
    height, width, batch = plane.shape
    origin = tuple(origin or (0, 0))
    map_shape = tuple(map_shape or (height, width))
    total = height * width * batch
    if plane.dtype not in (numpy.float32, numpy.float64) or total >= 2**31:
        raise ValueError(f"lcn_smooth needs a float32 or float64 plane of fewer than 2^31 values, got {plane.dtype} {plane.shape}")
    dtype = str(plane.dtype)
    weights, inverse_h, inverse_w = _lcn_weights(tuple(float(v) for v in numpy.asarray(window)), height, width, origin,
                                                 map_shape, dtype)
    if divide is not None and floor is None:
        raise ValueError("lcn_smooth divides maps only by the divisor it makes: give floor with divide")
    operation, maps_in, maps_out = None, plane, plane  # (unread without an operation)
    if divide is not None or subtract_from is not None:
        maps_in = divide if divide is not None else subtract_from
        if (maps_in.shape != (height, width, maps, batch) or maps_in.dtype != plane.dtype
                or not maps_in.flags.c_contiguous or maps_in.size >= 2**31):
            raise ValueError(f"lcn_smooth needs C-contiguous {dtype} maps {(height, width, maps, batch)} of fewer than "
                             f"2^31 values beside its plane, got {maps_in.dtype} {maps_in.shape}")
        operation = "divide" if divide is not None else "subtract"
        maps_out = cupy.empty_like(maps_in) if divide is not None else subtract_from
    out = cupy.empty_like(plane)
    floored = cupy.empty_like(plane) if floor is not None else out
    kernel = _lcn_smooth_kernel(dtype, len(weights), height, width, batch, bool(divide_before), floor is not None,
                                operation, maps if operation else 0)
    threads, grid = 256, lcn_threads(height, width, batch)
    kernel(((grid + threads - 1) // threads,), (threads,),
           (plane, weights, inverse_h, inverse_w, out, floored, plane.dtype.type(1.0 / maps), plane.dtype.type(floor or 0),
            maps_in, maps_out))
    if divide is not None:
        return out, floored, maps_out
    return (out, floored) if floor is not None else out


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
def _lcn_backward_first_kernel(subtract: bool = False):
    """The LCN backward's first pass: each position's ``grad_variance`` from ``sum_k g centred`` over the maps.
    ``subtract``: of ``g = grad - scale e`` (rounded as ``subtract_scaled_into`` rounds it), which it also writes for
    the second pass: the LCN backward's input made in the pass that first reads it."""
    import cupy

    if subtract:
        inputs, outputs = "raw T grad, raw T error, T scale, ", "raw T grad_out, T grad_variance"
        value = "const T g = grad[at] - multiply_rounded(scale, error[at]); grad_out[at] = g;"
    else:
        inputs, outputs, value = "raw T grad_out, ", "T grad_variance", "const T g = grad_out[at];"
    return cupy.ElementwiseKernel(
        inputs + "raw T centred, T sigma, T divisor, T c, int64 maps, int64 batch",
        outputs,
        f"""
        const long long m = i % batch;
        const long long base = (i / batch) * maps * batch + m;
        T total = 0;
        for (long long k = 0; k < maps; ++k) {{
            const long long at = base + k * batch;
            {value}
            total += g * centred[at];
        }}
        grad_variance = sigma > c ? -total / (divisor * divisor) / (2 * sigma) : (T)0;
        """,
        "dasksae_lcn_backward_first_subtract" if subtract else "dasksae_lcn_backward_first",
        preamble=_ROUNDED_MULTIPLY,
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
    if centred.size >= 2**31:  # past the fused pass's 32-bit indices
        sigma, divisor = lcn_smooth(variance_sums, window, origin, map_shape, maps, False, floor=c)
        sigma, divisor = sigma[:, :, None, :], divisor[:, :, None, :]
        return centred / divisor, (centred, sigma, divisor)
    sigma, divisor, normalised = lcn_smooth(variance_sums, window, origin, map_shape, maps, False, floor=c,
                                            divide=centred)
    return normalised, (centred, sigma[:, :, None, :], divisor[:, :, None, :])


def lcn_backward(grad_out, centred, sigma, divisor, window, c: float, origin=None, map_shape=None, subtract=None):
    """The fused LCN backward of :func:`dasksae.kernels.contrast.lcn_backward` (``subtract = (e, scale)``: of
    ``grad_out - scale e``, which the first pass takes as it reads and writes for the second)."""
    import cupy

    grad_out = cupy.ascontiguousarray(grad_out)
    height, width, maps, batch = centred.shape
    plane = (height, width, batch)
    sigma2, divisor2 = sigma.reshape(plane), divisor.reshape(plane)
    grad_variance = cupy.empty(plane, dtype=centred.dtype)
    if subtract is not None:
        error, scale = subtract
        error = cupy.ascontiguousarray(error)
        if not (grad_out.dtype == error.dtype == centred.dtype and grad_out.shape == error.shape == centred.shape):
            raise ValueError("the LCN backward's gradient, error and cache must be arrays of one shape and dtype")
        difference = cupy.empty_like(centred)
        _lcn_backward_first_kernel(True)(grad_out, error, centred.dtype.type(scale), centred, sigma2, divisor2,
                                         centred.dtype.type(c), maps, batch, difference, grad_variance)
        grad_out = difference
    else:
        _lcn_backward_first_kernel()(grad_out, centred, sigma2, divisor2, centred.dtype.type(c), maps, batch,
                                     grad_variance)
    spread = lcn_smooth(grad_variance, window, origin, map_shape, maps, True)
    grad_centred = cupy.empty_like(centred)
    grad_mean = cupy.empty(plane, dtype=centred.dtype)
    _lcn_backward_second_kernel()(grad_out, centred, divisor2, spread, maps, batch, grad_centred, grad_mean)
    if grad_centred.size >= 2**31:  # past the fused pass's 32-bit indices
        grad_centred -= lcn_smooth(grad_mean, window, origin, map_shape, maps, True)[:, :, None, :]
    else:
        lcn_smooth(grad_mean, window, origin, map_shape, maps, True, subtract_from=grad_centred)
    return grad_centred


# ---------------------------------------------------------------- the fields gather
#
# Field row k = (u, v, c) of block b = (p, q) is x[p*step + u, q*step + v, c, :], and (v, c) together are
# one run of f*C*M contiguous values of x: the gather is a copy of runs.  CuPy's copy of the 6-D strided
# view spends its time on 64-bit index arithmetic (21 ms a coates200 step, the same for 2-byte as for
# 4-byte values), and so did a first kernel of ours with one thread per value and one 64-bit division
# (27.6 ms, about 0.5 TB/s).  Here each thread moves one 16-byte vector (8, 4 or 2 where the sizes and
# addresses do not allow 16), and the geometry is compiled in (one kernel per layer shape, cached), so
# its four divisions are multiplications; launches are split so that the index fits 32 bits.

_GATHER_SOURCE = r"""
extern "C" __global__ void dasksae_gather_fields(const UNIT* __restrict__ x, UNIT* __restrict__ out, unsigned int total,
                                                 long long x_row, long long x_column, long long out_block, long long out_row)
{
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned int row = i / VECTORS;  // VECTORS units make one field row (M values)
    const unsigned int m = i - row * VECTORS;
    const unsigned int b = row / FAN_IN;
    const unsigned int k = row - b * FAN_IN;
    const unsigned int u = k / ROW_RUN;
    const unsigned int r = k - u * ROW_RUN;
    const unsigned int p = b / BLOCKS_W;
    const unsigned int q = b - p * BLOCKS_W;
    out[(long long)b * out_block + (long long)k * out_row + m] =
        x[(long long)(p * STEP + u) * x_row + (long long)(q * STEP) * x_column + (long long)r * VECTORS + m];
}
"""

INDEX_LIMIT = 2**31 - 1  # vectors a launch: the kernel's index is 32 bits
_UNIT_TYPES = {16: "uint4", 8: "uint2", 4: "unsigned int", 2: "unsigned short", 1: "unsigned char"}


def gather_source(unit: int, vectors: int, fan_in: int, row_run: int, blocks_w: int, step: int) -> str:
    """The CUDA source of the fields gather for one layer shape (``dasksae_gather_fields``)."""
    defines = (f"#define UNIT {_UNIT_TYPES[unit]}\n#define VECTORS {vectors}u\n#define FAN_IN {fan_in}u\n"
               f"#define ROW_RUN {row_run}u\n#define BLOCKS_W {blocks_w}u\n#define STEP {step}u\n")
    return defines + _GATHER_SOURCE


@functools.lru_cache(maxsize=None)
def _gather_kernel(*geometry):
    import cupy

    return cupy.RawKernel(gather_source(*geometry), "dasksae_gather_fields")


def _copy_unit(*sizes) -> int:
    """The widest of 16, 8, 4, 2, 1 bytes that divides every size, stride and address in ``sizes``."""
    for unit in (16, 8, 4, 2):
        if all(size % unit == 0 for size in sizes):
            return unit
    return 1


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
    if out.size == 0:
        return out
    unit = _copy_unit(batch * x.itemsize, x.data.ptr, out.data.ptr, out.strides[0], out.strides[1])
    vectors = batch * x.itemsize // unit
    kernel = _gather_kernel(unit, vectors, fan_in, field * channels, blocks_w, step)
    rows_per_launch = max(1, INDEX_LIMIT // (blocks_w * fan_in * vectors))  # block rows whose index fits 32 bits
    threads = 256
    for p0 in range(0, blocks_h, rows_per_launch):
        p1 = min(blocks_h, p0 + rows_per_launch)
        total = (p1 - p0) * blocks_w * fan_in * vectors
        kernel(
            ((total + threads - 1) // threads,), (threads,),
            (x[p0 * step:], out[p0 * blocks_w:p1 * blocks_w], numpy.uint32(total),
             numpy.int64(x.strides[0] // unit), numpy.int64(x.strides[1] // unit),
             numpy.int64(out.strides[0] // unit), numpy.int64(out.strides[1] // unit)),
        )
    return out


# ---------------------------------------------------------------- block rows
#
# A map (H, W, K, M) in block layout: row r = (i, j, k) of block b = (p, q) is map[p*bh + i, q*bw + j, k, :], a run
# of M values.  CuPy's elementwise kernels over the 6-D strided view spend their time on 64-bit index arithmetic
# (as the gather did); here one thread moves 4 values, with the geometry compiled in.

_BLOCK_ROWS_SOURCE = r"""
extern "C" __global__ void dasksae_block_rows(const float* __restrict__ map_in, float* __restrict__ map_out,
                                              const float* __restrict__ rows_in, OUT* __restrict__ rows_out,
                                              const float* __restrict__ scale, unsigned int total)
{
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned int v = i % VECTORS;
    const unsigned int row = i / VECTORS;
    const unsigned int r = row % ROWS;
    const unsigned int b = row / ROWS;
    const unsigned int k = r % MAPS;
    const unsigned int t = r / MAPS;
    const unsigned int j = t % BLOCK_W;
    const unsigned int h = t / BLOCK_W;
    const unsigned int q = b % BLOCKS_W;
    const unsigned int p = b / BLOCKS_W;
    const long long at = ((((long long)(p * BLOCK_H + h)) * (BLOCKS_W * BLOCK_W) + q * BLOCK_W + j) * MAPS + k) * VECTORS + v;
    const float s = HAS_SCALE ? scale[row] : 1.0f;
    if (TO_ROWS) {
        const VEC value = ((const VEC*)map_in)[at];
        STORE_ROWS(rows_out, i, value, s);
    } else {
        const VEC value = ((const VEC*)rows_in)[i];
        STORE_MAP(map_out, at, value, s);
    }
}
"""

_VEC4 = ("float4", "{ float4 x = value; x.x *= s; x.y *= s; x.z *= s; x.w *= s; ((float4*)map_out)[at] = x; }")
_VEC1 = ("float", "((float*)map_out)[at] = value * s")
_ROW_STORES = {  # (lanes, rows dtype) -> storing a vector into the rows
    (4, "float32"): "{ float4 x = value; x.x *= s; x.y *= s; x.z *= s; x.w *= s; ((float4*)rows_out)[i] = x; }",
    (1, "float32"): "((float*)rows_out)[i] = value * s",
    (4, "uint16"): ("{ ushort4 x; x.x = round_to_bfloat16(value.x * s); x.y = round_to_bfloat16(value.y * s); x.z = round_to_bfloat16(value.z * s);"
                    " x.w = round_to_bfloat16(value.w * s); ((ushort4*)rows_out)[i] = x; }"),
    (1, "uint16"): "((unsigned short*)rows_out)[i] = round_to_bfloat16(value * s)",
}
def block_rows_source(to_rows: bool, rows_dtype: str, lanes: int, has_scale: bool, vectors: int, maps: int,
                      block_h: int, block_w: int, blocks_w: int) -> str:
    """The CUDA source of the block-rows kernel for one layer shape and direction (``dasksae_block_rows``)."""
    from .gemm import BFLOAT16_ROUNDING

    vec, store_map = _VEC4 if lanes == 4 else _VEC1
    out_type = "unsigned short" if rows_dtype == "uint16" else "float"
    defines = (f"#define OUT {out_type}\n#define VEC {vec}\n#define VECTORS {vectors}u\n#define ROWS {block_h * block_w * maps}u\n"
               f"#define MAPS {maps}u\n#define BLOCK_H {block_h}u\n#define BLOCK_W {block_w}u\n#define BLOCKS_W {blocks_w}u\n"
               f"#define HAS_SCALE {int(has_scale)}\n#define TO_ROWS {int(to_rows)}\n"
               f"#define STORE_ROWS(rows_out, i, value, s) {_ROW_STORES[(lanes, rows_dtype)]}\n"
               f"#define STORE_MAP(map_out, at, value, s) {store_map}\n")
    return BFLOAT16_ROUNDING + defines + _BLOCK_ROWS_SOURCE


@functools.lru_cache(maxsize=None)
def _block_rows_kernel(*geometry):
    import cupy

    return cupy.RawKernel(block_rows_source(*geometry), "dasksae_block_rows")


def block_rows(output_map, block_h: int, block_w: int, rows=None, row_scale=None, rows_dtype=None, to_rows: bool = True):
    """Block rows of a float32 map, scaled per row, to ``(count, bh*bw*K, M)`` float32 or bf16 rows (``to_rows``) or
    back into the map; ``None`` where the arrays do not suit the kernel (the caller runs the array code)."""
    import cupy

    height, width, maps, batch = output_map.shape
    blocks_h, blocks_w = height // block_h, width // block_w
    count, row_count = blocks_h * blocks_w, block_h * block_w * maps
    rows_dtype = numpy.dtype(rows_dtype or "float32") if to_rows else rows.dtype
    if (output_map.dtype != numpy.float32 or not output_map.flags.c_contiguous or rows_dtype.name not in ("float32", "uint16")
            or (row_scale is not None and (row_scale.dtype != numpy.float32 or not row_scale.flags.c_contiguous
                                           or row_scale.size != count * row_count))):
        return None
    if to_rows:
        rows = cupy.empty((count, row_count, batch), dtype=rows_dtype)
    elif not rows.flags.c_contiguous or rows.shape != (count, row_count, batch) or rows.dtype != numpy.float32:
        return None
    lanes = 4 if batch % 4 == 0 and output_map.data.ptr % 16 == 0 and rows.data.ptr % (4 * rows.itemsize) == 0 else 1
    vectors = batch // lanes
    total = count * row_count * vectors
    if total >= 2**31:
        return None
    if total:
        kernel = _block_rows_kernel(to_rows, rows_dtype.name, lanes, row_scale is not None, vectors, maps, block_h, block_w, blocks_w)
        scale = row_scale if row_scale is not None else output_map  # never read without HAS_SCALE
        threads = 256
        kernel(((total + threads - 1) // threads,), (threads,),
               (output_map, output_map, rows if not to_rows else output_map, rows, scale, numpy.uint32(total)))
    return rows
