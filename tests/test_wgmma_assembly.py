"""Every kernel of ours on ``wgmma`` assembles for the H100 (sm_90a) with its ``wgmma`` left asynchronous.

ptxas serializes every ``wgmma`` of a kernel (warning C7518, "wgmma.mma_async instructions are serialized") where
the program touches the products' registers, or waits for them, in a path it cannot prove the whole warpgroup takes:
the products then no longer overlap the staging of the next k-tile, and nothing fails but the speed (session 50
found the float32 ``W^T y`` so).  NVRTC compiles each source to PTX and ptxas (the nvidia-cuda-nvcc wheel) assembles
it, as ``bench/kernel_registers.py`` does; skipped where either is not installed.
"""

import os
import sys

import pytest

from dasksae.kernels import mma_float32, mma_forward, mma_transpose, mma_update

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

try:
    import nvidia.cuda_nvcc  # noqa: F401  (ptxas)
    from test_cuda_sources import NVRTC
    HAS_TOOLS = NVRTC is not None
except ImportError:
    HAS_TOOLS = False
pytestmark = pytest.mark.skipif(not HAS_TOOLS, reason="NVRTC or ptxas (nvidia-cuda-nvcc-cu12) is not installed")


def assembler_log(source: str) -> str:
    from kernel_registers import assembled

    log, _ = assembled(source, b"-std=c++17", architecture="90a")
    return log


def wgmma_sources():
    """(name, source) of every wgmma kernel the code can ask for."""
    for variant in mma_forward.SPLIT_WGMMA_VARIANTS:
        for terms in (3, 1):
            yield (f"float32 W x {variant} terms {terms}",
                   lambda v=variant, t=terms: mma_float32.mma_float32_source(v, t))
    for variant in mma_transpose.SPLIT_WGMMA_VARIANTS:
        for terms in (3, 1):
            yield (f"float32 W^T y {variant} terms {terms}",
                   lambda v=variant, t=terms: mma_float32.mma_float32_transpose_source(v, t))
    for terms in (3, 1):
        yield (f"float32 update rows-wide-wgmma terms {terms}",
               lambda t=terms: mma_update.mma_update_source("rows-wide-wgmma", split_tf32=True, terms=t))
    for variant, defines in mma_update.EPILOGUE_VARIANTS.items():
        if defines.get("WGMMA"):
            yield f"bfloat16 update {variant}", lambda v=variant: mma_update.mma_update_source(v)
    for variant in mma_forward.WGMMA_VARIANTS:
        yield f"bfloat16 W x {variant}", lambda v=variant: mma_forward.mma_forward_source(v)
    for variant in mma_transpose.WGMMA_VARIANTS:
        yield f"bfloat16 W^T y {variant}", lambda v=variant: mma_transpose.mma_transpose_source(v)


@pytest.mark.parametrize("name, source", list(wgmma_sources()),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_no_wgmma_kernel_is_serialized(name, source):
    log = assembler_log(source())
    assert "C7518" not in log and "serialized" not in log, f"{name}: ptxas serialized its wgmma:\n{log}"
