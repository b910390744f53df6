"""How fast the H100's tensor cores run from kernels of ours: ``mma.sync`` against ``wgmma``, bfloat16 and TF32.

    python bench/tensor_core_probe.py --json probe.json            # on the GPU machine
    python bench/tensor_core_probe.py --check-ptx                  # here: NVRTC and ptxas for sm_90a, no GPU

Every tensor-core kernel of dasksae issues ``mma.sync`` (``m16n8k16`` in
bfloat16, ``m16n8k8`` in TF32), which Hopper runs on its tensor cores at a
rate below the warpgroup-wide ``wgmma.mma_async`` that cuBLAS uses.  The two
targets of issue 5 still missed (50% of the bfloat16 limit, 5x the compiled
peer in float32) would need the products near their reads' rate
(docs/gpu-performance.md), and ``wgmma`` is the change that would take them
there; before building it into the layers, this probe answers two questions
on the card:

* the ceiling of each instruction with nothing else in the loop: ``mma.sync``
  with its fragments in registers (8 independent products a warp), and
  ``wgmma`` ``m64n128`` with both operands in shared memory (one warpgroup a
  block, several blocks an SM, 8 products a commit group);
* whether our shared-memory descriptors are right: a ``wgmma`` product of
  small integers (exact in bfloat16 and TF32, and in float32 sums) checked
  against NumPy, element by element;
* (added after session 41's run) whether bfloat16 ``wgmma`` reads B
  MN-major, as the maps hold the fields (the minibatch contiguous), with
  ``imm-trans-b`` and the descriptor's two offsets read either way
  (:func:`mn_major_order`, :data:`MN_MAJOR_OFFSETS`).

The operands' layout in shared memory is the one without swizzling: 8 x 16-byte
"core matrices" (8 rows of 8 bfloat16 or 4 TF32 values along K), 128 bytes
each, the two along K of a 16-byte-wide k-step adjacent (leading byte offset
128) and the row groups 256 bytes apart (stride byte offset 256); the host
writes the tiles in that order (:func:`core_matrix_order`), and the kernel
copies them into shared memory as they are.

Its ``wgmma`` kernels also run on the CPU under g++, ``wgmma`` emulated through
the descriptors (``tests/test_tensor_core_probe_on_cpu.py``), so that the tiles'
order, the descriptors and the sums' writing are checked before the card is.

Prints one table (instruction, dtype, TFLOP/s, whether the sums were exact)
and writes JSON.  Compiled by CuPy's NVRTC for ``compute_90a`` (``wgmma``
needs the ``a`` target) and loaded as PTX.
"""

from __future__ import annotations

import json

import numpy

from dasksae.kernels import wgmma

WGMMA_N = 128  # the wgmma products' width: m64n128, 64 float32 sums a thread
GROUP = 8  # wgmma products a commit group
LEADING_BYTES, STRIDE_BYTES = 128, 256  # the descriptors' byte offsets: core matrices along K, and along M (or N)


PROBE_SOURCE = r"""
// one warpgroup: A (64 x K) and B (128 x K, K-major; or K x 128, MN-major: KIND 2) copied into shared memory in
// core-matrix order, then iterations x GROUP products into the same sums (the first from zero), GROUP a commit
// group; block 0 writes D.  B's descriptor takes the byte offsets given (A's: LEADING_BYTES, STRIDE_BYTES).
// KIND: 0 bfloat16, 1 TF32, 2 bfloat16 with B MN-major
template <int TILE_BYTES_A, int TILE_BYTES_B, int KIND>
__device__ void wgmma_loop(const uint4* a_tile, const uint4* b_tile, float* out, const int iterations,
                           const unsigned leading_b, const unsigned stride_b)
{
    __shared__ __align__(128) uint4 tiles[(TILE_BYTES_A + TILE_BYTES_B) / 16];  // A, then B
    uint4* const a_shared = tiles;
    uint4* const b_shared = tiles + TILE_BYTES_A / 16;
    SET_SHARED_ARENA(tiles);
    for (int i = threadIdx.x; i < TILE_BYTES_A / 16; i += blockDim.x) a_shared[i] = a_tile[i];
    for (int i = threadIdx.x; i < TILE_BYTES_B / 16; i += blockDim.x) b_shared[i] = b_tile[i];
    ASYNC_PROXY_FENCE();  // the stores, seen by the tensor cores' reads
    __syncthreads();
    const unsigned long long a = descriptor(a_shared, LEADING_BYTES, STRIDE_BYTES);
    const unsigned long long b = descriptor(b_shared, leading_b, stride_b);
    float d[64];
    for (int i = 0; i < 64; ++i) d[i] = 0.0f;
    WGMMA_FENCE();
    for (int it = 0; it < iterations; ++it) {
        #pragma unroll
        for (int g = 0; g < GROUP; ++g) {
            if (KIND == 0) wgmma_bf16(d, a, b, it + g);
            else if (KIND == 1) wgmma_tf32(d, a, b, it + g);
            else wgmma_bf16_mn(d, a, b, it + g);
        }
        WGMMA_COMMIT();
        wgmma_wait<1>();
    }
    wgmma_wait<0>();
    if (blockIdx.x == 0) {  // warp w: rows 16 w + g (+ 8); n8 column j: columns 8 j + 2 t (+ 1), as mma.sync's m16n8
        const int warp = threadIdx.x / 32, g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
        for (int j = 0; j < WGMMA_N / 8; ++j)
            for (int r = 0; r < 4; ++r)
                out[(warp * 16 + g + 8 * (r / 2)) * WGMMA_N + j * 8 + 2 * t + (r % 2)] = d[j * 4 + r];
    }
}
extern "C" __global__ void __launch_bounds__(128) probe_wgmma_bf16(const uint4* a, const uint4* b, float* out,
                                                                   const int iterations, const unsigned leading_b,
                                                                   const unsigned stride_b)
{
    wgmma_loop<64 * 16 * 2, WGMMA_N * 16 * 2, 0>(a, b, out, iterations, leading_b, stride_b);
}
extern "C" __global__ void __launch_bounds__(128) probe_wgmma_tf32(const uint4* a, const uint4* b, float* out,
                                                                   const int iterations, const unsigned leading_b,
                                                                   const unsigned stride_b)
{
    wgmma_loop<64 * 8 * 4, WGMMA_N * 8 * 4, 1>(a, b, out, iterations, leading_b, stride_b);
}
extern "C" __global__ void __launch_bounds__(128) probe_wgmma_bf16_mn(const uint4* a, const uint4* b, float* out,
                                                                      const int iterations, const unsigned leading_b,
                                                                      const unsigned stride_b)
{
    wgmma_loop<64 * 16 * 2, WGMMA_N * 16 * 2, 2>(a, b, out, iterations, leading_b, stride_b);
}
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// mma.sync with its fragments in registers (made from the lane, never loaded): 8 independent products a warp an
// iteration (m16n8k16 in bfloat16, m16n8k8 in TF32), summed into out so that none is dropped
template <bool BF16>
__device__ void mma_sync_loop(float* out, const int iterations)
{
    const unsigned lane = threadIdx.x % 32, one = BF16 ? 0x3f803f80u : 0x3f800000u;  // two bfloat16 ones, or a 1.0f
    unsigned a[4] = {one, one ^ (BF16 ? lane : lane << 13), one, one}, b[2] = {one, BF16 ? one ^ (lane << 16) : one};
    float d[8][4] = {};
    for (int it = 0; it < iterations; ++it)
        #pragma unroll
        for (int p = 0; p < 8; ++p) {
            if (BF16)
                asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                             "{%8,%9}, {%0,%1,%2,%3};"
                             : "+f"(d[p][0]), "+f"(d[p][1]), "+f"(d[p][2]), "+f"(d[p][3])
                             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
            else
                asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                             "{%8,%9}, {%0,%1,%2,%3};"
                             : "+f"(d[p][0]), "+f"(d[p][1]), "+f"(d[p][2]), "+f"(d[p][3])
                             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
        }
    float sum = 0.0f;
    for (int p = 0; p < 8; ++p) sum += d[p][0] + d[p][1] + d[p][2] + d[p][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}
extern "C" __global__ void probe_mma_sync_bf16(float* out, const int iterations)
{
    mma_sync_loop<true>(out, iterations);
}
extern "C" __global__ void probe_mma_sync_tf32(float* out, const int iterations)
{
    mma_sync_loop<false>(out, iterations);
}
#endif
"""


def probe_source() -> str:
    """The probe's CUDA source: its constants, :mod:`dasksae.kernels.wgmma`'s helpers and its three ``wgmma``
    products (:func:`~dasksae.kernels.wgmma.wgmma_function`), then its kernels."""
    defines = (f"#define WGMMA_N {WGMMA_N}\n#define GROUP {GROUP}\n#define LEADING_BYTES {LEADING_BYTES}\n"
               f"#define STRIDE_BYTES {STRIDE_BYTES}\n")
    return (defines + wgmma.WGMMA_HELPERS + wgmma.wgmma_function("wgmma_bf16", WGMMA_N)
            + wgmma.wgmma_function("wgmma_tf32", WGMMA_N, "tf32")
            + wgmma.wgmma_function("wgmma_bf16_mn", WGMMA_N, transpose_b=True) + PROBE_SOURCE)


def core_matrix_order(matrix: numpy.ndarray) -> numpy.ndarray:
    """``matrix`` (rows x K, K-major: A, or B as N x K) in the order of the descriptors without swizzling: 8-row
    groups (``STRIDE_BYTES`` apart), in each the 16-byte columns of K (``LEADING_BYTES`` apart), in each 8 rows of
    16 bytes.  The rows a whole 8s and K a whole 16 bytes."""
    rows, inner = matrix.shape
    per_core = 16 // matrix.itemsize  # values of one core matrix's row
    if rows % 8 or inner % per_core or STRIDE_BYTES != LEADING_BYTES * (inner // per_core):
        raise ValueError(f"a {rows} x {inner} tile of {matrix.dtype} does not fill whole core matrices")
    blocks = matrix.reshape(rows // 8, 8, inner // per_core, per_core)  # (row group, row, k column, value)
    return numpy.ascontiguousarray(blocks.transpose(0, 2, 1, 3)).reshape(-1)


def mn_major_order(matrix: numpy.ndarray) -> numpy.ndarray:
    """``matrix`` (K x N, N contiguous: B as the maps hold the minibatch) as 8 x 16-byte core matrices of 8 inner
    terms by 16 bytes along N: for each 8-column group of N (``STRIDE_BYTES`` apart), its K groups of 8
    (``LEADING_BYTES`` apart), in each 8 rows of K of 16 bytes along N.  Which of the descriptor's two byte offsets
    the hardware reads as which for a transposed B is what the probe tries (:data:`MN_MAJOR_OFFSETS`)."""
    inner, columns = matrix.shape
    per_core = 16 // matrix.itemsize
    if inner % 8 or columns % per_core or STRIDE_BYTES != LEADING_BYTES * (inner // 8):
        raise ValueError(f"a {inner} x {columns} tile of {matrix.dtype} does not fill whole core matrices")
    blocks = matrix.reshape(inner // 8, 8, columns // per_core, per_core)  # (k group, k, column group, value)
    return numpy.ascontiguousarray(blocks.transpose(2, 0, 1, 3)).reshape(-1)


# the (leading, stride) byte offsets tried for B MN-major in mn_major_order's order: as K-major's (CUTLASS's
# canonical layouts give the K-direction stride as the leading offset for both majors), and swapped
MN_MAJOR_OFFSETS = ((LEADING_BYTES, STRIDE_BYTES), (STRIDE_BYTES, LEADING_BYTES))


def exact_operands(seed: int, k: int):
    """A (64 x k) and B (``WGMMA_N`` x k) of small integers, exact in bfloat16 and TF32 and summed exactly."""
    rng = numpy.random.default_rng(seed)
    return (rng.integers(-3, 4, (64, k)).astype(numpy.float32),
            rng.integers(-3, 4, (WGMMA_N, k)).astype(numpy.float32))


def bfloat16_bits(values: numpy.ndarray) -> numpy.ndarray:
    """float32 ``values`` exact in bfloat16, as their bfloat16 bits (uint16)."""
    return (values.astype(numpy.float32).view(numpy.uint32) >> 16).astype(numpy.uint16)


def check_ptx() -> None:
    """Compile the probe with NVRTC for compute_90a and assemble it with ptxas for sm_90a
    (:func:`kernel_registers.assembled`), printing a line a kernel: what can be checked without a GPU."""
    import kernel_registers

    log, _ = kernel_registers.assembled(probe_source(), b"-std=c++17", architecture="90a")
    print("\n".join(kernel_registers.register_lines(log)))


def _timed(kernel, grid, block, arguments, runs: int) -> float:
    """The median seconds of ``runs`` launches after one (:func:`profile_kernels.timed`)."""
    from profile_kernels import timed

    return timed(lambda: kernel(grid, block, arguments), runs=runs, warmup=1)


def measure(runs: int, blocks_per_sm: int) -> list[dict]:
    """Each probe's rate on this GPU, and the ``wgmma`` products checked against NumPy."""
    import cupy

    module = wgmma.compiled_module(probe_source(), "probe")
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    rows = []
    for dtype, k in (("bfloat16", 16), ("tf32", 8)):
        a, b = exact_operands(7, k)
        if dtype == "bfloat16":
            a_bits, b_bits = bfloat16_bits(a), bfloat16_bits(b)
        else:
            a_bits, b_bits = a.view(numpy.uint32), b.view(numpy.uint32)
        a_tile = cupy.asarray(core_matrix_order(a_bits).view(numpy.uint8))
        b_tile = cupy.asarray(core_matrix_order(b_bits).view(numpy.uint8))
        out = cupy.zeros((64, WGMMA_N), dtype=cupy.float32)
        kernel = module.get_function("probe_wgmma_" + ("bf16" if dtype == "bfloat16" else "tf32"))
        offsets = (numpy.uint32(LEADING_BYTES), numpy.uint32(STRIDE_BYTES))
        kernel((1,), (128,), (a_tile, b_tile, out, numpy.int32(1), *offsets))
        expected = GROUP * (a.astype(numpy.float64) @ b.astype(numpy.float64).T)
        wrong = int(numpy.count_nonzero(out.get() != expected))
        iterations = 4096
        seconds = _timed(kernel, (sms * blocks_per_sm,), (128,), (a_tile, b_tile, out, numpy.int32(iterations),
                                                                  *offsets), runs)
        flops = sms * blocks_per_sm * iterations * GROUP * 2 * 64 * WGMMA_N * k
        rows.append({"instruction": f"wgmma m64n{WGMMA_N}k{k}", "dtype": dtype, "tflops": flops / seconds / 1e12,
                     "seconds": seconds, "wrong_sums": wrong})
        sync = module.get_function("probe_mma_sync_" + ("bf16" if dtype == "bfloat16" else "tf32"))
        threads, warps_grid = 256, sms * 4
        sink = cupy.zeros(warps_grid * threads, dtype=cupy.float32)
        seconds = _timed(sync, (warps_grid,), (threads,), (sink, numpy.int32(iterations)), runs)
        flops = warps_grid * (threads // 32) * iterations * 8 * 2 * 16 * 8 * k
        rows.append({"instruction": f"mma.sync m16n8k{k}", "dtype": dtype, "tflops": flops / seconds / 1e12,
                     "seconds": seconds, "wrong_sums": None})
    a, b = exact_operands(11, 16)  # bfloat16 with B MN-major (the maps' minibatch contiguous), each offset pair
    a_tile = cupy.asarray(core_matrix_order(bfloat16_bits(a)).view(numpy.uint8))
    b_tile = cupy.asarray(mn_major_order(bfloat16_bits(numpy.ascontiguousarray(b.T))).view(numpy.uint8))
    expected = GROUP * (a.astype(numpy.float64) @ b.astype(numpy.float64).T)
    kernel = module.get_function("probe_wgmma_bf16_mn")
    for leading, stride in MN_MAJOR_OFFSETS:
        out = cupy.zeros((64, WGMMA_N), dtype=cupy.float32)
        arguments = (a_tile, b_tile, out, numpy.int32(1), numpy.uint32(leading), numpy.uint32(stride))
        kernel((1,), (128,), arguments)
        wrong = int(numpy.count_nonzero(out.get() != expected))
        seconds = _timed(kernel, (sms * blocks_per_sm,), (128,), arguments[:3] + (numpy.int32(4096),) + arguments[4:],
                         runs)
        flops = sms * blocks_per_sm * 4096 * GROUP * 2 * 64 * WGMMA_N * 16
        rows.append({"instruction": f"wgmma m64n{WGMMA_N}k16 B^T {leading}/{stride}", "dtype": "bfloat16",
                     "tflops": flops / seconds / 1e12, "seconds": seconds, "wrong_sums": wrong})
    return rows


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-ptx", action="store_true", help="compile and assemble for sm_90a only (no GPU)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--blocks-per-sm", type=int, default=4, help="wgmma blocks (one warpgroup each) an SM")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.check_ptx:
        check_ptx()
        return
    import cupy

    rows = measure(args.runs, args.blocks_per_sm)
    card = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"card: {card}")
    print(f"{'instruction':<34} {'dtype':<9} {'TFLOP/s':>8} {'wrong sums':>13}")
    for row in rows:
        wrong = "-" if row["wrong_sums"] is None else f"{row['wrong_sums']} of {64 * WGMMA_N}"
        print(f"{row['instruction']:<34} {row['dtype']:<9} {row['tflops']:>8.1f} {wrong:>13}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"card": card, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
