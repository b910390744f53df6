"""Hopper's warpgroup-wide tensor-core product, ``wgmma.mma_async``, as CUDA source for our kernels, and the compile
route it needs.

Our other tensor-core kernels issue ``mma.sync``, whose operands a warp loads
into registers; ``wgmma`` (sm_90a only) reads both from shared memory through
64-bit "matrix descriptors" and spreads an ``m64nN`` product's float32 sums
over the 128 threads of a warpgroup.  On the H100 it ran at 958-983 TFLOP/s in
bfloat16 against ``mma.sync``'s 605-630 (``bench/tensor_core_probe.py``,
``bench/results/session41/pinned``, ``session42/probe``).

Two families of shared-memory layout, as the descriptor's swizzle mode says:

* without swizzling (the probe's): "core matrices" of 8 rows of 16 contiguous
  bytes.  A K-major operand (rows of the inner dimension, as the weights) has
  its 16-byte columns of K ``leading`` bytes apart and its 8-row groups
  ``stride`` apart; an MN-major one (bfloat16 only, taken with ``imm-trans-a``
  or ``-b``; the maps' fields, the minibatch contiguous) has its 8-deep groups
  of K ``leading`` apart and its 16-byte groups of columns ``stride`` apart
  (the H100 read it so: the probe's ``B^T 128/256`` row, every sum exact).
  A layer kernel copying into it was half as fast as ``mma.sync`` (session
  42): a warp's 16-byte chunks land in scattered core matrices, and the
  copies' L2 requests are not merged;
* swizzled, CUTLASS's canonical layouts, which the layer kernels take: rows of
  128 (or 64, 32) bytes, 8 of them an atom, each 16-byte chunk's index XORed
  with the row's within the atom.  K-major: row ``r`` of the operand at
  ``(r / 8) stride + (r % 8) width``; MN-major: 8 rows of K ``width`` apart,
  8-deep groups ``stride`` apart, atoms along MN ``leading`` apart.  A weight
  row's 128 bytes land in one 128-byte row of shared memory.

* :data:`WGMMA_HELPERS`: the descriptor and the fences, waits and commits, for
  the GPU.  Under the CPU tests' g++ the tests' shim defines them, with
  ``wgmma`` emulated through the descriptors
  (``tests/test_mma_update_on_cpu.py``'s ``WGMMA_EMULATION``).
* :func:`wgmma_function`: one product as a device function (its inline asm
  on the GPU, the emulation under g++).
* :func:`compiled_module`: CuPy compiles with its own ``-arch``, and ``wgmma``
  needs ``compute_90a``; NVRTC compiles for it and CuPy loads the PTX (or
  NVRTC's ``sm_90a`` machine code: ``DASKSAE_WGMMA_TARGET``).
"""

from __future__ import annotations

import functools
import os
import tempfile

from ..switches import switch

WGMMA_HELPERS = r"""
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// a shared-memory matrix descriptor: the address, the leading and stride byte offsets, each over 16, and the swizzle
// (0 none; 1, 2, 3: 128-, 64-, 32-byte rows whose 16-byte chunks are XORed with address bits 7 on, the atoms aligned)
__device__ __forceinline__ unsigned long long descriptor(const void* shared, unsigned leading, unsigned stride,
                                                         unsigned swizzle = 0)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(shared);
    return (unsigned long long)((address >> 4) & 0x3fff) | ((unsigned long long)((leading >> 4) & 0x3fff) << 16)
           | ((unsigned long long)((stride >> 4) & 0x3fff) << 32) | ((unsigned long long)(swizzle & 3) << 62);
}
// this thread's shared-memory writes (st.shared, cp.async) seen by the tensor cores' reads (the async proxy)
#define ASYNC_PROXY_FENCE() asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory")
#define WGMMA_FENCE() asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory")
#define WGMMA_COMMIT() asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory")
#define SET_SHARED_ARENA(arena)
// until at most GROUPS of this thread's commit groups are pending
template <int GROUPS> __device__ __forceinline__ void wgmma_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(GROUPS) : "memory");
}
// sums that a pending wgmma writes, kept where they are: the compiler may not move or read them across this point
// (CUTLASS's warpgroup_fence_operand)
template <int COUNT> __device__ __forceinline__ void sums_fenced(float* d)
{
#pragma unroll
    for (int i = 0; i < COUNT; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
#endif
// where 16-byte chunk `part` (8 bfloat16 values along K) of row r lies (in values) in a K-major tile of 64-value
// rows, 128-byte swizzled: row r at 64 r, the chunk at 8 (part ^ r % 8) (the weights in mma_forward, the codes and
// fields in mma_update)
__device__ __forceinline__ int k_major_128_at(const int r, const int part) { return 64 * r + 8 * (part ^ (r % 8)); }
// where 8-column chunk `part` of row k of a K x 96 bfloat16 tile lies (in values) MN-major in 64-byte swizzled rows:
// atoms of 32 columns 4096 bytes apart (a descriptor's leading offset), 8-deep groups of K 512 (its stride), row k % 8
// at 64 (k % 8), the chunk at 16 (part % 4 ^ k % 8 / 2): the fields (mma_forward) and y (mma_transpose) as B
__device__ __forceinline__ int mn_major_64_at(const int k, const int part)
{
    return 2048 * (part / 4) + 256 * (k / 8) + 32 * (k % 8) + 8 * ((part % 4) ^ ((k % 8) / 2));
}
// one k-tile's products into a warpgroup's COUNT sums: STEPS products, descriptor a (b) moving A_STEP (B_STEP) 16-byte
// units a product, in one commit group, then until at most PENDING groups are pending; the sums fenced before and
// after, so that the compiler keeps them where the pending products write them
template <int COUNT, int STEPS, int A_STEP, int B_STEP, int PENDING,
          void (*PRODUCT)(float*, unsigned long long, unsigned long long, int)>
__device__ __forceinline__ void wgmma_k_tile(float* sums, const unsigned long long a, const unsigned long long b)
{
    sums_fenced<COUNT>(sums);
    WGMMA_FENCE();
#pragma unroll
    for (int k = 0; k < STEPS; ++k) PRODUCT(sums, a + k * A_STEP, b + k * B_STEP, 1);
    WGMMA_COMMIT();
    wgmma_wait<PENDING>();
    sums_fenced<COUNT>(sums);
}
"""


def wgmma_statement(n: int, k: int, types: str, transpose_b: bool, transpose_a: bool = False) -> str:
    """The inline-asm statement of one ``wgmma.mma_async`` ``m64n{n}k{k}`` into ``d[0 .. n/2 - 1]`` (float32 sums),
    the operands by descriptors ``a`` and ``b``, the old sums kept where ``keep`` is nonzero; ``transpose_b``: B
    MN-major (``imm-trans-b 1``), ``transpose_a``: A MN-major (``imm-trans-a 1``; bfloat16 takes both, TF32
    neither)."""
    count = n // 2
    sums = ", ".join(f"%{i}" for i in range(count))
    transposes = f", {int(transpose_a)}, {int(transpose_b)}" if types.startswith("bf16") else ""
    if (transpose_a or transpose_b) and not transposes:
        raise ValueError(f"wgmma .{types} takes no transposed operand")
    constraints = ", ".join(f'"+f"(d[{i}])' for i in range(count))
    return (f'asm volatile("{{\\n.reg .pred keep;\\nsetp.ne.b32 keep, %{count + 2}, 0;\\n'
            f'wgmma.mma_async.sync.aligned.m64n{n}k{k}.f32.{types} {{{sums}}}, %{count}, %{count + 1}, keep, 1, 1'
            f'{transposes};\\n}}\\n"\n        : {constraints}\n        : "l"(a), "l"(b), "r"(keep));')


def wgmma_function(name: str, n: int, dtype: str = "bfloat16", transpose_b: bool = False,
                   transpose_a: bool = False) -> str:
    """CUDA source of ``name(float* d, a, b, int keep)``: one ``m64n{n}`` product of ``dtype`` (``bfloat16``, k 16;
    ``tf32``, k 8) from descriptors ``a`` and ``b`` into this thread's ``n / 2`` sums (warp ``w`` of the warpgroup:
    rows ``16 w + g (+ 8)``, columns ``8 j + 2 t (+ 1)`` in ``d[4 j + 2 (row half) + column]``, as ``mma.sync``'s
    ``m16n8``), A and B MN-major where ``transpose_a`` and ``transpose_b`` (bfloat16 only); under g++,
    ``wgmma_emulated`` (the tests' shim)."""
    k, size, types = {"bfloat16": (16, 2, "bf16.bf16"), "tf32": (8, 4, "tf32.tf32")}[dtype]
    return (f"#if defined(__CUDACC_RTC__) || defined(__CUDACC__)\n"
            f"__device__ __forceinline__ void {name}(float* d, unsigned long long a, unsigned long long b, int keep)\n"
            f"{{\n    {wgmma_statement(n, k, types, transpose_b, transpose_a)}\n}}\n#else\n"
            f"static inline void {name}(float* d, unsigned long long a, unsigned long long b, int keep)\n"
            f"{{\n    wgmma_emulated(d, a, b, keep, {n}, {k}, {size}, {int(transpose_a)}, {int(transpose_b)});\n}}\n"
            f"#endif\n")


def wgmma_registers_statement(n: int) -> str:
    """The inline-asm statement of one TF32 ``wgmma.mma_async`` ``m64n{n}k8`` into ``d[0 .. n/2 - 1]`` with A from
    this thread's four registers ``a[0 .. 3]`` (rows ``g`` and ``g + 8`` of its warp's 16 at columns ``t`` and
    ``t + 4``: ``a[0]`` (g, t), ``a[1]`` (g + 8, t), ``a[2]`` (g, t + 4), ``a[3]`` (g + 8, t + 4), as ``mma.sync``'s
    ``m16n8k8``; CUTLASS's ``ALayout_64x8``, its register layout of 32-bit A for SM90 ``wgmma``, says the same) and
    B by descriptor ``b``, the old sums kept where ``keep`` is nonzero."""
    count = n // 2
    sums = ", ".join(f"%{i}" for i in range(count))
    registers = ", ".join(f"%{count + i}" for i in range(4))
    constraints = ", ".join(f'"+f"(d[{i}])' for i in range(count))
    return (f'asm volatile("{{\\n.reg .pred keep;\\nsetp.ne.b32 keep, %{count + 5}, 0;\\n'
            f'wgmma.mma_async.sync.aligned.m64n{n}k8.f32.tf32.tf32 {{{sums}}}, {{{registers}}}, %{count + 4}, keep, '
            f'1, 1;\\n}}\\n"\n        : {constraints}\n        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), '
            f'"r"(keep));')


def wgmma_registers_function(name: str, n: int) -> str:
    """CUDA source of ``name(float* d, const unsigned* a, b, int keep)``: one TF32 ``m64n{n}k8`` product with A from
    this thread's registers ``a[0 .. 3]`` (:func:`wgmma_registers_statement`'s layout: the values' float32 bits, of
    which the tensor cores read the TF32 ones) and B (K-major) by descriptor ``b``; under g++,
    ``wgmma_emulated_registers`` (the tests' shim, which gathers the warpgroup's registers)."""
    return (f"#if defined(__CUDACC_RTC__) || defined(__CUDACC__)\n"
            f"__device__ __forceinline__ void {name}(float* d, const unsigned* a, unsigned long long b, int keep)\n"
            f"{{\n    {wgmma_registers_statement(n)}\n}}\n#else\n"
            f"static inline void {name}(float* d, const unsigned* a, unsigned long long b, int keep)\n"
            f"{{\n    wgmma_emulated_registers(d, a, b, keep, {n});\n}}\n#endif\n")


def supported() -> bool:
    """Whether this process's current GPU runs ``wgmma`` (compute capability 9.0: the H100 and H200)."""
    import cupy

    return _capability(cupy.cuda.Device().id) == "90"


@functools.lru_cache(maxsize=None)
def _capability(device: int) -> str:
    import cupy

    return cupy.cuda.Device(device).compute_capability


# "ptx": NVRTC's PTX for compute_90a, assembled by the driver when loaded; "cubin": NVRTC's own machine code for sm_90a
TARGET = switch("DASKSAE_WGMMA_TARGET")


@functools.lru_cache(maxsize=None)
def compiled_module(source: str, name: str = "kernel", target: str | None = None):
    """``source`` compiled by NVRTC for ``compute_90a`` (``wgmma`` needs the ``a`` target, which CuPy's own
    ``-arch`` does not give) and loaded by CuPy (made once for a source): as PTX that the driver assembles, or as
    NVRTC's machine code for ``sm_90a`` (``target``, by default ``DASKSAE_WGMMA_TARGET``)."""
    import cupy
    from cupy.cuda import nvrtc

    target = target or TARGET
    architecture = "sm_90a" if target == "cubin" else "compute_90a"
    program = nvrtc.createProgram(source, f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"--gpu-architecture={architecture}", "-std=c++17"])
    except nvrtc.NVRTCError:
        raise RuntimeError(f"{name} does not compile for {architecture}:\n" + nvrtc.getProgramLog(program)) from None
    code = nvrtc.getCUBIN(program) if target == "cubin" else nvrtc.getPTX(program)
    path = os.path.join(tempfile.mkdtemp(prefix="dasksae-wgmma-"), f"{name}.{target}")
    with open(path, "w" if isinstance(code, str) else "wb") as file:
        file.write(code)
    return cupy.RawModule(path=path)
