"""``bench/tensor_core_probe.py``'s ``wgmma`` kernels run on the CPU under g++, ``wgmma`` emulated through its
shared-memory descriptors: the tiles' order on the host, the descriptors the kernel builds and its writing of the
sums, checked against NumPy.  The emulation reads K-major operands as the H100 did in session 41 (every sum exact,
``bench/results/session41/pinned/``); and a transposed B as CUTLASS's canonical layouts describe (the leading
offset along K, the stride along N), as the H100 did in session 42 (``bench/results/session42/probe/``: every sum
exact with those offsets, 8049 of 8192 wrong with them swapped).  The emulation lives in
``tests/test_mma_update_on_cpu.py`` (``WGMMA_EMULATION``), where the layer kernels' tests take it too."""

import ctypes
import os
import shutil
import sys

import numpy
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
sys.path.insert(0, os.path.dirname(__file__))

import tensor_core_probe  # noqa: E402
from test_mma_update_on_cpu import SHARED_ARENA, WGMMA_EMULATION  # noqa: E402
from test_simt_gemm_on_cpu import GRID_RUNNER, SHIM, built_on_cpu  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

RUNNER = GRID_RUNNER + r"""
extern "C" void run_probe(int kind, const uint4* a, const uint4* b, float* out, int iterations, unsigned leading,
                          unsigned stride)
{
    run_grid(1, 1, 1, [=] {
        blockDim = {128, 1, 1};
        if (kind == 0) probe_wgmma_bf16(a, b, out, iterations, leading, stride);
        else if (kind == 1) probe_wgmma_tf32(a, b, out, iterations, leading, stride);
        else probe_wgmma_bf16_mn(a, b, out, iterations, leading, stride);
    }, 128);
}
"""


@pytest.fixture(scope="module")
def probe_on_cpu(tmp_path_factory):
    library = built_on_cpu(tmp_path_factory.mktemp("probe"), SHIM + SHARED_ARENA + WGMMA_EMULATION
                           + tensor_core_probe.probe_source() + RUNNER)
    library.run_probe.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 3 + [ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    return library


def _run(library, kind: int, a_tile, b_tile, iterations: int, leading: int, stride: int):
    out = numpy.full((64, tensor_core_probe.WGMMA_N), numpy.nan, dtype=numpy.float32)
    a_tile, b_tile = numpy.ascontiguousarray(a_tile), numpy.ascontiguousarray(b_tile)
    library.run_probe(kind, a_tile.ctypes.data, b_tile.ctypes.data, out.ctypes.data, iterations, leading, stride)
    return out


@pytest.mark.parametrize("kind, inner", [(0, 16), (1, 8)], ids=["bfloat16", "tf32"])
def test_the_probes_wgmma_sums_a_tile_product_as_numpy(probe_on_cpu, kind, inner):
    """K-major A and B in the probe's core-matrix order, through the descriptors the kernel builds: two iterations of
    GROUP products, the first from zero, give 2 GROUP A B^T in every one of the 64 x 128 sums; a tile taken in
    another order does not."""
    a, b = tensor_core_probe.exact_operands(3, inner)
    bits = tensor_core_probe.bfloat16_bits if kind == 0 else (lambda values: values.view(numpy.uint32))
    a_tile = tensor_core_probe.core_matrix_order(bits(a))
    b_tile = tensor_core_probe.core_matrix_order(bits(b))
    expected = 2 * tensor_core_probe.GROUP * (a.astype(numpy.float64) @ b.astype(numpy.float64).T)
    leading, stride = tensor_core_probe.LEADING_BYTES, tensor_core_probe.STRIDE_BYTES
    numpy.testing.assert_array_equal(_run(probe_on_cpu, kind, a_tile, b_tile, 2, leading, stride), expected)
    plain = numpy.ascontiguousarray(bits(b)).reshape(-1)  # rows one after another: not what the descriptor reads
    assert numpy.any(_run(probe_on_cpu, kind, a_tile, plain, 2, leading, stride) != expected)


def test_the_probes_transposed_b_is_read_with_the_leading_offset_along_k(probe_on_cpu):
    """bfloat16 with B MN-major (K x N, N contiguous, as the maps hold the minibatch) in mn_major_order: with the
    offsets as CUTLASS reads them (MN_MAJOR_OFFSETS[0]: leading along K, stride along N) the sums are A B^T; with
    them swapped (the probe's second row on the card) they are not."""
    a, b = tensor_core_probe.exact_operands(5, 16)
    a_tile = tensor_core_probe.core_matrix_order(tensor_core_probe.bfloat16_bits(a))
    b_tile = tensor_core_probe.mn_major_order(tensor_core_probe.bfloat16_bits(numpy.ascontiguousarray(b.T)))
    expected = tensor_core_probe.GROUP * (a.astype(numpy.float64) @ b.astype(numpy.float64).T)
    (leading, stride), swapped = tensor_core_probe.MN_MAJOR_OFFSETS
    numpy.testing.assert_array_equal(_run(probe_on_cpu, 2, a_tile, b_tile, 1, leading, stride), expected)
    assert numpy.any(_run(probe_on_cpu, 2, a_tile, b_tile, 1, *swapped) != expected)
