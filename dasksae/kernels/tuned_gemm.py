"""Strided-batched GEMMs through cuBLASLt, with the fastest algorithm for each shape measured once.

cuBLAS's own choice (``cublasGemmStridedBatchedEx``, algorithm "default")
is made by a heuristic that does not know our shapes well: the filter-block
products have ``M = 96`` columns, and the kernels it picks use 64- or
128-wide tiles, so a quarter of their multiply-adds fall on padding.
cuBLASLt lists the algorithms (tile shapes, split-K, stages) that can run a
product; the first time a shape is met on a thread we time each of them and
the plain cuBLAS call, keep the fastest, and use it from then on.  This is
PyFR's approach (its ``cublaslt`` provider) applied to batched products.

Only the GEMM's algorithm changes: the operands, their layout, the compute
type and the result are those of the plain call, so results differ from it
only in the order of the float32 sums.

Tuning is opt-in: ``DASKSAE_GEMM=tuned``; ``DASKSAE_GEMM=search`` also
times every algorithm, tile shape and stage count that cuBLASLt has for the
types (slow: for finding out which suit these shapes).  The default (``cublas``) is the
plain call, and so is any product whose tuning would need more than a
quarter of the device's free memory, or where cuBLASLt cannot be loaded.
Measured on an H200 (session 7, coates200 M=96, in-process): tuning on the
whole batch took the float32 step from 71.1 to 70.6 ms and the bfloat16
step from 33.9 to 32.8 ms; tuning on the first few matrices of each batch
(to save memory) chose badly for the whole (72.6 ms in float32), so a
shape is tuned on its whole batch or not at all.  ``tuning_table()`` lists
what was chosen, for the benchmarks.

The plain call is passed in as a function (``plain``): this module knows
nothing of dasksae's arrays, only pointers, shapes and strides.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy

# cublasLt enums (cublasLt.h)
_DESC_TRANSA, _DESC_TRANSB = 3, 4
_LAYOUT_BATCH_COUNT, _LAYOUT_STRIDED_BATCH_OFFSET = 5, 6
_PREF_MAX_WORKSPACE_BYTES = 1
_PREF_MIN_ALIGNMENT = {"a": 5, "b": 6, "c": 7, "d": 8}
_ALGO_CONFIG_ID, _ALGO_CONFIG_TILE_ID, _ALGO_CONFIG_SPLITK_NUM, _ALGO_CONFIG_STAGES_ID = 0, 1, 2, 6
_CUDA_R_32F = 0

WORKSPACE_BYTES = 32 * 2**20
TUNING_SHARE = 0.25  # of the device's free memory that a shape's tuning may take for its scratch arrays
CANDIDATES = 32  # algorithms asked of the heuristic per shape
_TIMED_LAUNCHES = 3


class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves_count", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


_P = ctypes.c_void_p
_SIGNATURES = {
    "cublasLtCreate": [ctypes.POINTER(_P)],
    "cublasLtMatmulDescCreate": [ctypes.POINTER(_P), ctypes.c_int, ctypes.c_int],
    "cublasLtMatmulDescSetAttribute": [_P, ctypes.c_int, _P, ctypes.c_size_t],
    "cublasLtMatrixLayoutCreate": [ctypes.POINTER(_P), ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64],
    "cublasLtMatrixLayoutSetAttribute": [_P, ctypes.c_int, _P, ctypes.c_size_t],
    "cublasLtMatmulPreferenceCreate": [ctypes.POINTER(_P)],
    "cublasLtMatmulPreferenceSetAttribute": [_P, ctypes.c_int, _P, ctypes.c_size_t],
    "cublasLtMatmulAlgoGetHeuristic": [_P, _P, _P, _P, _P, _P, _P, ctypes.c_int, ctypes.POINTER(_HeuristicResult),
                                       ctypes.POINTER(ctypes.c_int)],
    "cublasLtMatmul": [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.POINTER(_Algo), _P, ctypes.c_size_t, _P],
    "cublasLtMatmulAlgoConfigGetAttribute": [ctypes.POINTER(_Algo), ctypes.c_int, _P, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_size_t)],
    "cublasLtMatmulAlgoConfigSetAttribute": [ctypes.POINTER(_Algo), ctypes.c_int, _P, ctypes.c_size_t],
    "cublasLtMatmulAlgoCapGetAttribute": [ctypes.POINTER(_Algo), ctypes.c_int, _P, ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_size_t)],
    "cublasLtMatmulAlgoGetIds": [_P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                 ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
    "cublasLtMatmulAlgoInit": [_P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.POINTER(_Algo)],
    "cublasLtMatmulAlgoCheck": [_P, _P, _P, _P, _P, _P, ctypes.POINTER(_Algo), ctypes.POINTER(_HeuristicResult)],
}
_CAP_TILE_IDS, _CAP_STAGES_IDS = 6, 13
_ALGO_CONFIG_REDUCTION_SCHEME, _ALGO_CONFIG_CTA_SWIZZLING, _ALGO_CONFIG_CUSTOM_OPTION = 3, 4, 5
SEARCH_LIMIT = 150  # configurations checked per shape in the exhaustive search (DASKSAE_GEMM=search)


class CublasLtError(RuntimeError):
    pass


_library = None
_library_lock = threading.Lock()
_plans: dict = {}
_plans_lock = threading.Lock()
_thread = threading.local()  # each thread's handle and workspace (each worker thread has its own stream)


def enabled() -> bool:
    """Whether products are tuned: ``DASKSAE_GEMM=tuned`` (or ``search``) and cuBLASLt loads."""
    if os.environ.get("DASKSAE_GEMM", "cublas") not in ("tuned", "search"):
        return False
    return (_library if _library is not None else _load()) is not False


def _load():
    """The cuBLASLt library (ctypes), or ``False`` where it cannot be found.

    cuBLAS loads cuBLASLt, so once CuPy has made its cuBLAS handle the
    library's soname resolves to the copy already in the process.
    """
    global _library
    with _library_lock:
        if _library is None:
            _library = False
            from cupy.cuda import device

            device.get_cublas_handle()
            for name in ("libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", "cublasLt64_13.dll", "cublasLt64_12.dll"):
                try:
                    library = ctypes.CDLL(name)
                except OSError:
                    continue
                for function, arguments in _SIGNATURES.items():
                    getattr(library, function).argtypes = arguments
                    getattr(library, function).restype = ctypes.c_int
                _library = library
                break
        return _library


def _check(status, what):
    if status != 0:
        raise CublasLtError(f"{what} failed with cuBLAS status {status}")


def _handle_and_workspace():
    if getattr(_thread, "handle", None) is None:
        import cupy

        handle = _P()
        _check(_load().cublasLtCreate(ctypes.byref(handle)), "cublasLtCreate")
        _thread.handle = handle
        _thread.workspace = cupy.empty(WORKSPACE_BYTES, dtype=numpy.uint8)
    return _thread.handle, _thread.workspace


def _set(setter, target, attribute, value):
    _check(setter(target, attribute, ctypes.byref(value), ctypes.sizeof(value)), setter.__name__)


def _layout(data_type, rows, cols, ld, batch, stride):
    library = _load()
    layout = _P()
    _check(library.cublasLtMatrixLayoutCreate(ctypes.byref(layout), data_type, rows, cols, ld), "cublasLtMatrixLayoutCreate")
    _set(library.cublasLtMatrixLayoutSetAttribute, layout, _LAYOUT_BATCH_COUNT, ctypes.c_int32(batch))
    _set(library.cublasLtMatrixLayoutSetAttribute, layout, _LAYOUT_STRIDED_BATCH_OFFSET, ctypes.c_int64(stride))
    return layout


def _alignment(pointer, *byte_strides):
    """The largest power of two up to 256 dividing the pointer and every stride (bytes)."""
    value = pointer
    for stride in byte_strides:
        value |= stride
    return min(256, value & -value) if value else 256


class _Plan:
    """A product's descriptors and its chosen algorithm (``None``: the plain cuBLAS call is fastest)."""

    __slots__ = ("desc", "layouts", "algo", "workspace_size", "described", "plain_ms", "best_ms", "rejected")

    def __init__(self, desc, layouts):
        self.desc, self.layouts = desc, layouts
        self.algo, self.workspace_size, self.described = None, 0, "cublas default"
        self.plain_ms = self.best_ms = None
        self.rejected = 0


def _describe(algo):
    library = _load()
    values = []
    for attribute in (_ALGO_CONFIG_ID, _ALGO_CONFIG_TILE_ID, _ALGO_CONFIG_SPLITK_NUM, _ALGO_CONFIG_STAGES_ID):
        value, written = ctypes.c_int32(), ctypes.c_size_t()
        library.cublasLtMatmulAlgoConfigGetAttribute(ctypes.byref(algo), attribute, ctypes.byref(value),
                                                     ctypes.sizeof(value), ctypes.byref(written))
        values.append(value.value)
    return "lt algo {} tile {} split-k {} stages {}".format(*values)


def batched_gemm(plain, op_a, op_b, m, n, k, a_ptr, a_type, ld_a, stride_a, b_ptr, b_type, ld_b, stride_b,
                 c_ptr, c_type, ld_c, stride_c, batch, compute, alpha, beta, itemsizes):
    """Column-major ``C[i] = alpha op(A[i]) op(B[i]) + beta C[i]`` (cuBLAS's terms), tuned per shape.

    ``plain(a_ptr, b_ptr, c_ptr)`` makes the same product with ``cublasGemmStridedBatchedEx``;
    ``alpha`` and ``beta`` are NumPy scalars of the scale type (float32).
    ``itemsizes``: bytes of an element of A, B and C.
    """
    size_a, size_b, size_c = itemsizes
    alignments = (_alignment(a_ptr, stride_a * size_a, ld_a * size_a), _alignment(b_ptr, stride_b * size_b, ld_b * size_b),
                  _alignment(c_ptr, stride_c * size_c, ld_c * size_c))
    key = (op_a, op_b, m, n, k, a_type, ld_a, stride_a, b_type, ld_b, stride_b, c_type, ld_c, stride_c, batch, compute,
           bool(beta), alignments, os.environ.get("DASKSAE_GEMM"))
    plan = _plans.get(key)
    if plan is None:
        plan = _tune(key, plain, alpha, beta, itemsizes)
    if plan.algo is not None:
        try:
            _run(plan, a_ptr, b_ptr, c_ptr, alpha, beta)
            return
        except CublasLtError:  # refused at run time although it ran in tuning: the plain call from now on
            plan.algo, plan.described = None, "cublas default (the tuned algorithm was refused)"
    plain(a_ptr, b_ptr, c_ptr)


def _run(plan, a_ptr, b_ptr, c_ptr, alpha, beta):
    import cupy

    handle, workspace = _handle_and_workspace()
    a_layout, b_layout, c_layout = plan.layouts
    status = _load().cublasLtMatmul(
        handle, plan.desc, alpha.ctypes.data, a_ptr, a_layout, b_ptr, b_layout, beta.ctypes.data, c_ptr, c_layout,
        c_ptr, c_layout, ctypes.byref(plan.algo), workspace.data.ptr, plan.workspace_size,
        cupy.cuda.get_current_stream().ptr,
    )
    _check(status, "cublasLtMatmul")


_ELEMENT = {0: numpy.float32, 1: numpy.float64, 14: numpy.uint16}  # cudaDataType -> storage (bfloat16 as bits)
_AGREEMENT = 1e-4  # |candidate - plain| over max |plain|: float32 sums in another order, not another product


def _scratch(ld, cols, stride, batch, data_type, alignment, fill=True):
    """A matrix batch laid out as (``ld``, ``cols``, ``stride``) at a pointer aligned to exactly ``alignment``,
    of random values (``fill``) or as it comes."""
    import cupy

    element = numpy.dtype(_ELEMENT[data_type])
    extent = stride * (batch - 1) + ld * cols
    buffer = cupy.empty(extent * element.itemsize + 256, dtype=numpy.uint8)
    offset = alignment % 256
    values = buffer[offset: offset + extent * element.itemsize].view(element)
    if not fill:
        return buffer, values, buffer.data.ptr + offset
    uniform = cupy.random.RandomState(seed=extent).uniform(-1, 1, extent, dtype=numpy.float32)  # not the global stream
    if element == numpy.uint16:  # bfloat16 bits (truncated: any bfloat16 values will do)
        values[...] = (uniform.view(numpy.uint32) >> 16).astype(numpy.uint16)
    else:
        values[...] = uniform
    return buffer, values, buffer.data.ptr + offset


def _tune(key, plain, alpha, beta, itemsizes):
    """Time the plain call and cuBLASLt's candidates for ``key`` on scratch arrays; keep the fastest.

    The scratch arrays have the whole batch: an algorithm chosen on a few
    matrices (a fraction of a wave of the GPU's CTAs) can be slow on all of
    them.  Where they would take more than ``TUNING_SHARE`` of the free
    device memory, the shape keeps the plain call.  Candidates are checked
    against the plain call on a sample of the output.
    """
    import cupy

    (op_a, op_b, m, n, k, a_type, ld_a, stride_a, b_type, ld_b, stride_b, c_type, ld_c, stride_c, batch, compute,
     _, alignments, _) = key
    library = _load()
    handle, _ = _handle_and_workspace()
    desc = _P()
    _check(library.cublasLtMatmulDescCreate(ctypes.byref(desc), compute, _CUDA_R_32F if c_type == _CUDA_R_32F else c_type),
           "cublasLtMatmulDescCreate")
    _set(library.cublasLtMatmulDescSetAttribute, desc, _DESC_TRANSA, ctypes.c_int32(op_a))
    _set(library.cublasLtMatmulDescSetAttribute, desc, _DESC_TRANSB, ctypes.c_int32(op_b))
    a_rows, a_cols = (m, k) if op_a == 0 else (k, m)
    b_rows, b_cols = (k, n) if op_b == 0 else (n, k)
    layouts = (_layout(a_type, a_rows, a_cols, ld_a, batch, stride_a), _layout(b_type, b_rows, b_cols, ld_b, batch, stride_b),
               _layout(c_type, m, n, ld_c, batch, stride_c))
    plan = _Plan(desc, layouts)
    extents = [(stride * (batch - 1) + ld * cols) * size for stride, ld, cols, size in
               ((stride_a, ld_a, a_cols, itemsizes[0]), (stride_b, ld_b, b_cols, itemsizes[1]), (stride_c, ld_c, n, itemsizes[2]))]
    need = sum(extents) + (extents[2] if beta else 0) + 4 * max(extents[:2]) // min(itemsizes[:2])  # + random floats
    free = cupy.cuda.runtime.memGetInfo()[0] + cupy.get_default_memory_pool().free_bytes()
    if need > TUNING_SHARE * free:
        plan.described = "cublas default (not tuned: too little free memory for its scratch arrays)"
        with _plans_lock:
            _plans.setdefault(key, plan)
        return _plans[key]
    preference = _P()
    _check(library.cublasLtMatmulPreferenceCreate(ctypes.byref(preference)), "cublasLtMatmulPreferenceCreate")
    _set(library.cublasLtMatmulPreferenceSetAttribute, preference, _PREF_MAX_WORKSPACE_BYTES, ctypes.c_uint64(WORKSPACE_BYTES))
    for name, alignment in zip("abc", alignments):
        _set(library.cublasLtMatmulPreferenceSetAttribute, preference, _PREF_MIN_ALIGNMENT[name], ctypes.c_uint32(alignment))
    _set(library.cublasLtMatmulPreferenceSetAttribute, preference, _PREF_MIN_ALIGNMENT["d"], ctypes.c_uint32(alignments[2]))
    results = (_HeuristicResult * CANDIDATES)()
    returned = ctypes.c_int()
    status = library.cublasLtMatmulAlgoGetHeuristic(handle, desc, *layouts, layouts[2], preference, CANDIDATES, results,
                                                    ctypes.byref(returned))
    candidates = [results[i] for i in range(returned.value) if results[i].state == 0] if status == 0 else []
    if os.environ.get("DASKSAE_GEMM") == "search":
        candidates += _enumerated(handle, desc, layouts, compute, a_type, b_type, c_type)

    # Scratch operands and output with the same strides and alignments, filled with random values: tuning never
    # touches the caller's arrays, and a candidate is kept only if its product equals the plain call's.
    a_buffer, _, a_ptr = _scratch(ld_a, a_cols, stride_a, batch, a_type, alignments[0])
    b_buffer, _, b_ptr = _scratch(ld_b, b_cols, stride_b, batch, b_type, alignments[1])
    c_buffer, c_values, c_ptr = _scratch(ld_c, n, stride_c, batch, c_type, alignments[2], fill=bool(beta))
    c_start = c_values.copy() if beta else None  # what C held, where the product adds to it
    sample = slice(None, None, max(1, c_values.size // 65536))  # about 64k values of the output, spread over it
    plain(a_ptr, b_ptr, c_ptr)
    expected = c_values[sample].copy()
    scale = float(cupy.abs(expected).max()) or 1.0

    def timed(launch):
        stream = cupy.cuda.get_current_stream()
        launch()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record(stream)
        for _ in range(_TIMED_LAUNCHES):
            launch()
        stop.record(stream)
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / _TIMED_LAUNCHES

    plan.plain_ms = plan.best_ms = timed(lambda: plain(a_ptr, b_ptr, c_ptr))
    plan.rejected = 0
    for candidate in candidates:
        trial = _Plan(desc, layouts)
        trial.algo, trial.workspace_size = candidate.algo, candidate.workspace_size
        try:
            if c_start is not None:
                c_values[...] = c_start
            _run(trial, a_ptr, b_ptr, c_ptr, alpha, beta)
            if not float(cupy.abs(c_values[sample] - expected).max()) <= _AGREEMENT * scale:
                plan.rejected += 1
                continue
            elapsed = timed(lambda: _run(trial, a_ptr, b_ptr, c_ptr, alpha, beta))
        except CublasLtError:
            continue
        if elapsed < plan.best_ms * 0.98:  # a clear win only: the plain call needs no workspace
            plan.best_ms, plan.algo, plan.workspace_size = elapsed, _Algo.from_buffer_copy(candidate.algo), candidate.workspace_size
    if plan.algo is not None:
        plan.described = _describe(plan.algo)
    del a_buffer, b_buffer, c_buffer, c_values, c_start
    cupy.get_default_memory_pool().free_all_blocks()  # the scratch goes back to the device, not into the pool's cache
    with _plans_lock:
        _plans.setdefault(key, plan)
    return _plans[key]


def _capability(algo, attribute):
    """An array-valued capability of ``algo`` (tile or stages ids) as a list of ints."""
    library = _load()
    written = ctypes.c_size_t()
    library.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attribute, None, 0, ctypes.byref(written))
    count = written.value // 4
    if count == 0:
        return []
    values = (ctypes.c_uint32 * count)()
    library.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attribute, values, ctypes.sizeof(values),
                                              ctypes.byref(written))
    return list(values)


def _enumerated(handle, desc, layouts, compute, a_type, b_type, c_type):
    """Every algorithm cuBLASLt has for these types, at each tile shape and stage count it supports, without
    split-K, that passes ``cublasLtMatmulAlgoCheck`` for this product (``DASKSAE_GEMM=search``, at most
    ``SEARCH_LIMIT``).  The heuristic lists only a few of them; the search is for finding out which tile
    shapes suit ``M = 96`` (NVIDIA's "LtSgemmCustomFind" sample does the same)."""
    library = _load()
    scale = _CUDA_R_32F if c_type == _CUDA_R_32F else c_type
    ids, returned = (ctypes.c_int * 256)(), ctypes.c_int()
    if library.cublasLtMatmulAlgoGetIds(handle, compute, scale, a_type, b_type, c_type, c_type, 256, ids,
                                        ctypes.byref(returned)) != 0:
        return []
    found = []
    for algo_id in list(ids)[: returned.value]:
        algo = _Algo()
        if library.cublasLtMatmulAlgoInit(handle, compute, scale, a_type, b_type, c_type, c_type, algo_id,
                                          ctypes.byref(algo)) != 0:
            continue
        for tile in _capability(algo, _CAP_TILE_IDS) or [0]:
            for stages in _capability(algo, _CAP_STAGES_IDS) or [0]:
                if len(found) >= SEARCH_LIMIT:
                    return found
                trial = _Algo.from_buffer_copy(algo)
                for attribute, value in ((_ALGO_CONFIG_TILE_ID, tile), (_ALGO_CONFIG_STAGES_ID, stages),
                                         (_ALGO_CONFIG_SPLITK_NUM, 1), (_ALGO_CONFIG_REDUCTION_SCHEME, 0),
                                         (_ALGO_CONFIG_CTA_SWIZZLING, 0), (_ALGO_CONFIG_CUSTOM_OPTION, 0)):
                    number = ctypes.c_uint32(value) if attribute != _ALGO_CONFIG_SPLITK_NUM else ctypes.c_int32(value)
                    library.cublasLtMatmulAlgoConfigSetAttribute(ctypes.byref(trial), attribute, ctypes.byref(number),
                                                                 ctypes.sizeof(number))
                result = _HeuristicResult()
                if library.cublasLtMatmulAlgoCheck(handle, desc, *layouts, layouts[2], ctypes.byref(trial),
                                                   ctypes.byref(result)) == 0 and result.workspace_size <= WORKSPACE_BYTES:
                    result.algo = trial
                    found.append(result)
    return found


def tuning_table():
    """One row per tuned product: its shape, the plain call's and the chosen algorithm's time, and what was chosen."""
    rows = []
    for key, plan in list(_plans.items()):
        op_a, op_b, m, n, k = key[:5]
        batch, compute = key[14], key[15]
        rows.append({"ops": f"{'nt'[op_a]}{'nt'[op_b]}", "m": m, "n": n, "k": k, "batch": batch, "compute": compute,
                     "plain_ms": plan.plain_ms, "best_ms": plan.best_ms, "chosen": plan.described,
                     "candidates_rejected": plan.rejected,
                     "tflops_plain": 2e-9 * m * n * k * batch / plan.plain_ms if plan.plain_ms else None,
                     "tflops_best": 2e-9 * m * n * k * batch / plan.best_ms if plan.best_ms else None})
    return rows
