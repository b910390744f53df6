"""Every CUDA source of ours compiles with NVRTC for the H100 (sm_90), for each variant the code can ask for.

Needs only NVRTC's library, no GPU: it catches a kernel that would not
build before a device run does.  Skipped where NVRTC is not installed
(``pip install nvidia-cuda-nvrtc-cu12``; CI has none).  Whether the kernels
compute the right thing is for the GPU tests (``tests/test_gpu.py``).
"""

import ctypes
import ctypes.util
import itertools
import os

import pytest

from dasksae.kernels import (code_gradient, copies, cuda_kernels, elementwise, mma_float32, mma_forward, mma_transpose,
                             mma_update, normalize, simt_gemm)
from dasksae.kernels.gemm import BFLOAT16_ROUNDING


def _nvrtc():
    candidates = []
    try:
        import nvidia.cuda_nvrtc

        folder = os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib")
        candidates += [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.startswith("libnvrtc.so")]
    except ImportError:
        pass
    if ctypes.util.find_library("nvrtc"):
        candidates.append(ctypes.util.find_library("nvrtc"))
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


NVRTC = _nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed")


def compile_errors(source: str, name_expressions=(), options=("--gpu-architecture=compute_90", "-std=c++14")) -> str:
    """NVRTC's log for ``source`` if it does not compile, else ``""``."""
    program = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"dasksae.cu", 0, None, None) == 0
    try:
        for expression in name_expressions:
            assert NVRTC.nvrtcAddNameExpression(program, expression.encode()) == 0
        encoded = [option.encode() for option in options]
        result = NVRTC.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
        if result == 0:
            return ""
        size = ctypes.c_size_t()
        NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        NVRTC.nvrtcGetProgramLog(program, log)
        return log.value.decode(errors="replace") or f"nvrtc error {result}"
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(program))


def test_a_broken_source_is_reported():
    assert "error" in compile_errors('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }')


@pytest.mark.parametrize("unit", [16, 8, 4, 2, 1])
def test_the_fields_gather_compiles(unit):
    assert compile_errors(cuda_kernels.gather_source(unit, 24, 1200, 60, 46, 4)) == ""


@pytest.mark.parametrize("dtype, lanes", sorted(cuda_kernels._FOLD_VALUES))
def test_the_fold_compiles(dtype, lanes):
    assert compile_errors(cuda_kernels.fold_source(dtype, lanes, 24, 8, 180, 20, 4, 41)) == ""


@pytest.mark.parametrize("to_rows, rows_dtype, lanes, has_scale",
                         [v for v in itertools.product([True, False], ["float32", "uint16"], [4, 1], [True, False])
                          if v[0] or v[1] == "float32"])
def test_the_block_rows_kernel_compiles(to_rows, rows_dtype, lanes, has_scale):
    assert compile_errors(cuda_kernels.block_rows_source(to_rows, rows_dtype, lanes, has_scale, 24, 8, 4, 4, 46)) == ""


@pytest.mark.parametrize("bfloat16, lanes, has_grad, scaled", list(itertools.product([False, True], [4, 2, 1], [True, False], [True, False])))
def test_the_tied_code_gradient_compiles(bfloat16, lanes, has_grad, scaled):
    assert compile_errors(code_gradient.tied_code_gradient_source(bfloat16, lanes, 96 // lanes, has_grad, scaled)) == ""


@pytest.mark.parametrize("bfloat16, lanes, has_grad", list(itertools.product([False, True], [4, 1], [True, False])))
def test_the_tied_code_gradient_with_row_dots_compiles(bfloat16, lanes, has_grad):
    assert compile_errors(code_gradient.tied_code_gradient_source(bfloat16, lanes, 96 // lanes, has_grad, True,
                                                                  dots=True)) == ""


@pytest.mark.parametrize("dots, has_grad", [(True, True), (True, False), (False, True)])
def test_the_tied_code_gradient_from_maps_compiles(dots, has_grad):
    assert compile_errors(code_gradient.tied_code_gradient_source(True, 4, 24, has_grad, True, dots=dots,
                                                                  maps=(46, 4, 4, 8))) == ""


@pytest.mark.parametrize("difference, lanes", itertools.product([True, False], [4, 2, 1]))
def test_the_pair_sum_compiles(difference, lanes):
    assert compile_errors(elementwise.pair_sum_source(difference, lanes)) == ""


@pytest.mark.parametrize("swizzle, prefetch, staging", [(True, False, 0), (False, False, 0), (True, True, 0),
                                                       (True, False, 1), (True, False, 2), (True, False, 3)])
def test_every_simt_gemm_variant_compiles(swizzle, prefetch, staging):
    assert compile_errors(simt_gemm.simt_gemm_source(swizzle, prefetch, staging), simt_gemm.SIMT_GEMM_KERNELS) == ""


@pytest.mark.parametrize("variant", list(mma_update.EPILOGUE_VARIANTS))
def test_the_tensor_core_update_compiles(variant):
    """The bfloat16 ``mma.sync`` update in each epilogue variant (sm_90 PTX; its arithmetic is checked under g++ in
    test_mma_update_on_cpu)."""
    assert compile_errors(mma_update.mma_update_source(variant),
                          options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


@pytest.mark.parametrize("variant", list(mma_forward.VARIANTS))
def test_the_tensor_core_forward_compiles(variant):
    """The bfloat16 ``mma.sync`` ``W x`` from the maps with ``ldmatrix.trans``, each variant of its tiles (checked
    under g++ in test_mma_forward_on_cpu)."""
    assert compile_errors(mma_forward.mma_forward_source(variant),
                          options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


@pytest.mark.parametrize("variant", list(mma_transpose.WGMMA_VARIANTS))
def test_the_wgmma_transpose_compiles(variant):
    """The bfloat16 ``W^T y`` with the fold on ``wgmma`` (``compute_90a``; checked under g++ with ``wgmma`` emulated
    in test_mma_transpose_on_cpu), its layer compiled in, and the build that subtracts (one tile's error)."""
    for geometry, subtract in ((None, False), ((128, 16, 8, 4), False), (None, True)):
        assert compile_errors(mma_transpose.mma_transpose_source(variant, geometry, subtract=subtract),
                              options=("--gpu-architecture=compute_90a", "-std=c++17")) == ""


@pytest.mark.parametrize("variant", list(mma_forward.WGMMA_VARIANTS))
def test_the_wgmma_forward_compiles(variant):
    """The bfloat16 ``W x`` on ``wgmma`` in each variant (``compute_90a``, which ``wgmma`` needs; checked under g++
    with ``wgmma`` emulated in test_mma_forward_on_cpu), and its layer compiled in."""
    for geometry in (None, (2048, 96, 1728, 288, 4, 16, 10000)):
        assert compile_errors(mma_forward.mma_forward_source(variant, geometry),
                              options=("--gpu-architecture=compute_90a", "-std=c++17")) == ""


@pytest.mark.parametrize("variant, terms", [(v, 3) for v in mma_forward.SPLIT_VARIANTS] + [("k32x3", 1)])
def test_the_split_tf32_forward_compiles(variant, terms):
    """The float32 ``W x`` on TF32 tensor cores with split operands (``mma.sync.m16n8k8``), each
    variant of its tiles, and its one-term form (checked under g++ in test_mma_float32_on_cpu)."""
    assert compile_errors(mma_float32.mma_float32_source(variant, terms),
                          options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


@pytest.mark.parametrize("variant, terms", [(v, 3) for v in mma_transpose.SPLIT_VARIANTS] + [("k32x3", 1)])
def test_the_split_tf32_transpose_compiles(variant, terms):
    """The float32 ``W^T y`` with the fold on TF32 tensor cores with split operands, each variant of its tiles, and
    its one-term form (checked under g++ in test_mma_float32_on_cpu)."""
    assert compile_errors(mma_float32.mma_float32_transpose_source(variant, terms),
                          options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


@pytest.mark.parametrize("variant, terms", [(v, 3) for v in mma_update.SPLIT_VARIANTS] + [("rows", 1)])
def test_the_split_tf32_update_compiles(variant, terms):
    """The float32 weight gradient with the update in its rows epilogues on TF32 tensor cores with split operands, and
    its one-term form (checked under g++ in test_mma_float32_on_cpu)."""
    assert compile_errors(mma_float32.mma_float32_update_source(variant, terms),
                          options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


@pytest.mark.parametrize("variant", list(mma_transpose.VARIANTS))
def test_the_tensor_core_transpose_with_the_fold_compiles(variant):
    """The bfloat16 ``mma.sync`` ``W^T y`` with the fold in the product, in each variant of its tiles (checked under
    g++ in test_mma_transpose_on_cpu), and the build that subtracts (one tile's error)."""
    for subtract in (False, True):
        assert compile_errors(mma_transpose.mma_transpose_source(variant, subtract=subtract),
                              options=("--gpu-architecture=compute_90", "-std=c++17")) == ""


def test_every_update_kernel_compiles():
    assert compile_errors(normalize.unit_rows_sgd_source(), normalize.UNIT_ROWS_SGD_KERNELS) == ""


@pytest.mark.parametrize("codes_dtype", list(normalize.RADIAL_DOTS_KERNELS))
def test_the_radial_dots_kernel_compiles(codes_dtype):
    assert compile_errors(normalize.radial_dots_source(codes_dtype)) == ""


def test_the_vectorised_bfloat16_conversion_compiles():
    from dasksae.kernels.gemm import _TO_BFLOAT16_VECTOR_SOURCE

    assert compile_errors(_TO_BFLOAT16_VECTOR_SOURCE) == ""


def test_the_bfloat16_rounding_compiles_as_the_conversion_uses_it():
    wrapper = ('extern "C" __global__ void k(const float* x, const float* s, unsigned short* y)'
               " { const float value = x[threadIdx.x] * s[0]; y[threadIdx.x] = round_to_bfloat16((float)(value)); }")
    assert compile_errors(BFLOAT16_ROUNDING + wrapper) == ""


@pytest.mark.parametrize("transpose, units", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("size, stride", [(5, 1), (3, 2)])
def test_the_pooling_window_kernels_compile(transpose, units, size, stride):
    assert compile_errors(cuda_kernels.pool_windows_source(transpose, units, 192, 184, 184, 180, 180, size, stride)) == ""


@pytest.mark.parametrize("dtype,divide_before,root,maps_operation", [
    ("float32", False, False, None), ("float32", False, True, None), ("float32", True, False, None),
    ("float64", True, False, None), ("float64", False, True, None),
    ("float32", False, True, "divide"), ("float32", True, False, "subtract"), ("float64", True, False, "subtract")])
def test_the_lcn_smoothing_kernel_compiles(dtype, divide_before, root, maps_operation):
    source = cuda_kernels.lcn_smooth_source(dtype, 5, 180, 180, 96, divide_before, root, maps_operation,
                                            8 if maps_operation else 0)
    assert compile_errors(source) == ""


def test_the_lcn_smoothing_kernel_divides_only_by_its_divisor():
    with pytest.raises(ValueError, match="divisor"):
        cuda_kernels.lcn_smooth_source("float32", 5, 180, 180, 96, False, False, "divide", 8)


def test_the_batched_copy_compiles():
    assert compile_errors(copies.copy_segments_source()) == ""


def test_the_strip_kernels_compile():
    assert compile_errors(copies.copy_strips_source()) == ""
