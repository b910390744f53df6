"""The bfloat16 weight gradient on tensor cores, from the maps, taking the unit-norm SGD step in its epilogue (CuPy).

Built in session 21 without a GPU; checked against NumPy on the H200 in
session 22 (``tests/test_gpu.py``), where it took the in-process bfloat16
coates200 step from 29.7-29.8 ms to 26.3 ms (``bench/results/session22/tensor``).
The bfloat16 backward calls it by default (``DASKSAE_TENSOR_CORE_UPDATE=0``
turns it off: :func:`~dasksae.kernels.local_filter.update_with_tensor_cores`);
off, it takes cuBLAS's weight gradient over gathered fields and
:func:`~dasksae.kernels.normalize.unit_rows_sgd`.

In bfloat16 the step's weight gradient is cuBLAS's batched GEMM over
gathered fields (``[X | G]``), written in float32 and read back by the
update, which also writes the weights' bfloat16 copy: 22 bytes a parameter
of update traffic, about 9.7 ms of the H200's 30 ms coates200 step
(session 12's kernel table).  This kernel is the float32 path's
``dasksae_simt_filter_weight_grad_update`` (:mod:`dasksae.kernels.simt_gemm`)
on tensor cores: ``mma.sync.m16n8k16`` with bfloat16 operands and float32
sums; the fields read straight from the bfloat16 input and error maps; each
128 x 96 tile of ``dL/dW`` kept on chip (passed through shared memory so
that the epilogue reads and writes whole rows: ``EPILOGUE_VARIANTS``) and
turned into the step
``g = s (dW - U s d)``, ``v = momentum v - lr g``, ``U += v``, with ``U``
and ``v`` (float32, the master weights and the momentum) read and written
once and ``U``'s bfloat16 copy for the next step's products written beside
them; each row's sum of the new ``U``'s squares over each 48 columns goes
to ``partial_squares`` for :func:`~dasksae.kernels.simt_gemm.\
inverse_norms_from_squares`.  The gradient is never written.

The block: 256 threads, 8 warps as 4 x 2 over its 128 x 96 tile, each warp
32 x 48 (2 x 6 products of 16 x 8 a step of 16 inner terms).  The inner
dimension (``[g | a z]``'s ``2M`` or ``M``) goes 32 at a time through two
buffers of shared memory filled with ``cp.async``, the next while the
current is multiplied.  The codes' rows are the ``A`` tile as they are
stored; a field row's 32 values of the minibatch are contiguous in the map,
so the ``B`` tile is stored ``n``-major as it is read: no transposes.

On a GPU of compute capability 9.0 the training takes its products on Hopper's ``wgmma`` instead (session 43,
``DASKSAE_WGMMA_UPDATE=1``, :data:`WGMMA_VARIANT`, :func:`default_variant`): each of the block's two warpgroups
64 rows by the 96 columns, the codes and fields K-major in 128-byte swizzled rows read by descriptor
(:mod:`.wgmma`), then the same rows epilogue; compiled by NVRTC for ``compute_90a``.

Its source also runs on the CPU under g++ (``tests/test_mma_update_on_cpu.py``):
``mma.sync`` there is the product of the fragments as the PTX ISA lays them
out (``_MMA_EMULATION`` in the test's shim), so the test checks this
kernel's fragment indexing, guards and epilogue against NumPy.
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from . import wgmma
from .gemm import BFLOAT16_ROUNDING
from .simt_gemm import TILE_M, TILE_N  # the float32 kernels' tile: the launches' shapes (a variant's may have fewer rows)

TILE_K = 32  # inner terms a stage of shared memory (the source's TILE_K)
WARP_COLUMN_TILES = 2  # the warps across a block's 96 columns: partial_squares has 2 a block of columns
# the bfloat16 backward's update taken with its weight gradient in this kernel (local_filter.update_with_tensor_cores)
TENSOR_CORE_UPDATE = switch("DASKSAE_TENSOR_CORE_UPDATE") == "1"
# "1": mma_forward's A fragments taken by ldmatrix.x4 (a_fragments' A_LDMATRIX: its 32 loads of 32 bits a k-tile go).
# Not this kernel's: with them its rows epilogue spills 12 bytes at 80 registers (4 without)
LDMATRIX = switch("DASKSAE_MMA_LDMATRIX") == "1"
# "1": the tensor-core W x and W^T y (mma_forward's and mma_transpose's kernels) compiled for each layer, its geometry
# constants (LAYER_GEOMETRY), so that their loads' index divisions become multiplications; "0": one kernel for all.
# The default since session 38 (H100, bench/results/session38/geometry/: W x 1.876 -> 1.759 ms, W^T y 2.663 -> 2.312
# ms a pass over every stage).
# Not this kernel: compiled in, its 6 k-tiles unrolled, it spills 20-40 bytes at 80 registers (4 without)
COMPILED_GEOMETRY = switch("DASKSAE_MMA_GEOMETRY") == "1"

# cp.async copies, mma.sync and ldmatrix as device functions (under the CPU tests' g++, with no CUDA compiler, the
# tests' shim defines them: tests/test_mma_update_on_cpu.py's MMA_EMULATION), and the fragments' loads the kernels
# share
MMA_HELPERS = r"""
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
__device__ __forceinline__ void copy_16(unsigned short* shared, const unsigned short* global, const bool whole)
{  // 16 bytes, or 16 zero bytes where !whole (nothing read)
    const unsigned address = (unsigned)__cvta_generic_to_shared(shared);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(global), "r"(whole ? 16 : 0)
                 : "memory");
}
// 8 bytes, or 8 zero bytes where !whole (nothing read)
__device__ __forceinline__ void copy_8(float* shared, const float* global, const bool whole)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(shared);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(address), "l"(global), "r"(whole ? 8 : 0)
                 : "memory");
}
__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int PENDING> __device__ __forceinline__ void copies_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}
// d (+)= a b over one 16 x 8 x 16 product: a 4 and b 2 registers of two bfloat16 each, d 4 floats (PTX ISA layouts)
__device__ __forceinline__ void mma_16816(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void prefetch_l2(const float* address) { asm volatile("prefetch.global.L2 [%0];" ::"l"(address)); }
#if STAGE_BULK  // (sm_90) bulk copies into shared memory, counted on a barrier in shared memory (mbarrier)
// the barrier made, expecting one arrival (the thread that then says how many bytes will land: bulk_expect)
__device__ __forceinline__ void bulk_barrier_init(unsigned long long* barrier)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n\tfence.mbarrier_init.release.cluster;"
                 ::"r"((unsigned)__cvta_generic_to_shared(barrier)) : "memory");
}
// the one arrival, with the bytes the copies will land (before or after some of them do: the count may go below zero)
__device__ __forceinline__ void bulk_expect(unsigned long long* barrier, const unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
                 ::"r"((unsigned)__cvta_generic_to_shared(barrier)), "r"(bytes) : "memory");
}
// bytes (a multiple of 16; both addresses 16-byte aligned) from global to shared memory by the copy engine: no
// registers, no L1; the barrier counts them as they land
__device__ __forceinline__ void bulk_copy(float* shared, const float* global, const unsigned bytes,
                                          unsigned long long* barrier)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"((unsigned)__cvta_generic_to_shared(shared)), "l"(global), "r"(bytes),
                 "r"((unsigned)__cvta_generic_to_shared(barrier)) : "memory");
}
// wait until the barrier's phase `parity` is complete: every byte expected has landed
__device__ __forceinline__ void bulk_wait(unsigned long long* barrier, const unsigned parity)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(barrier);
    unsigned done = 0;
    do {
        asm volatile("{\n\t.reg .pred complete;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, complete;\n\t}"
                     : "=r"(done) : "r"(address), "r"(parity) : "memory");
    } while (!done);
}
#endif
// named barriers (ids 1-15; 0 is __syncthreads'): count threads, in whole warps, wait (sync) or only arrive (arrive);
// both order this thread's earlier shared-memory accesses before the barrier's completion
__device__ __forceinline__ void named_sync(const int id, const int count)
{
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_arrive(const int id, const int count)
{
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}
// 16 bytes read or written once (the update's weights and momentum, and the weights' bfloat16 copy): cache-streaming
// (ld.global.cs / st.global.cs), evicted first, so that they leave L2 to the operand tiles that other blocks read again
__device__ __forceinline__ float4 load_once(const float* address) { return __ldcs((const float4*)address); }
__device__ __forceinline__ void store_once(float* address, const float4 value) { __stcs((float4*)address, value); }
__device__ __forceinline__ void store_pair_once(unsigned short* address, const unsigned low, const unsigned high)
{
    __stcs((uint2*)address, make_uint2(low, high));
}
// four 8 x 8 bfloat16 matrices from shared memory, transposed: lanes 8q .. 8q + 7 give the addresses of matrix q's
// rows (16 bytes each), and lane (g, t) = (lane / 4, lane % 4) receives in r[q] its column g's rows 2t and 2t + 1
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const unsigned short* row_address)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(row_address);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}
// four 8 x 8 bfloat16 matrices from shared memory: lanes 8q .. 8q + 7 give the addresses of matrix q's rows (16 bytes
// each), and lane (g, t) receives in r[q] its row g's columns 2t and 2t + 1
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const unsigned short* row_address)
{
    const unsigned address = (unsigned)__cvta_generic_to_shared(row_address);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}
#endif
// a warp's A fragments of a k-step of 16 from a shared tile of rows `row` elements apart: its two 16-row products'
// rows g and g + 8 (from `first`, the warp's first row), inner terms 2t, 2t+1 and 8 on (PTX ISA layout); with
// A_LDMATRIX (mma_forward's, DASKSAE_MMA_LDMATRIX=1) one ldmatrix.x4 a product instead of 4 loads of 32 bits (rows in
// whole 16 bytes)
__device__ __forceinline__ void a_fragments(unsigned (*a)[4], const unsigned short* tile, const int first, const int row,
                                            const int kk, const int g, const int t)
{
#if A_LDMATRIX
    const int lane = 4 * g + t;  // matrix q = lane / 8: rows 8 (q % 2) .. and inner terms 8 (q / 2) ..
    for (int i = 0; i < 2; ++i)
        ldmatrix_x4(a[i], tile + (first + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * row + kk + (lane >> 4) * 8);
#else
    for (int i = 0; i < 2; ++i) {
        const unsigned short* top = tile + (first + i * 16 + g) * row + kk + 2 * t;
        a[i][0] = *(const unsigned*)top;
        a[i][1] = *(const unsigned*)(top + 8 * row);
        a[i][2] = *(const unsigned*)(top + 8);
        a[i][3] = *(const unsigned*)(top + 8 * row + 8);
    }
#endif
}
// a warp's B fragments of a k-step of 16 for its 48 columns (6 products of 8, from column `first`) from a k-major
// shared tile of rows `row` elements apart: ldmatrix.trans, columns j and j + 1 (their inner terms 0-7 and 8-15) a call
__device__ __forceinline__ void b_fragments_transposed(unsigned (*b)[2], const unsigned short* tile, const int row,
                                                       const int kk, const int first, const int lane)
{
    for (int j = 0; j < 6; j += 2) {
        unsigned r[4];
        ldmatrix_x4_trans(r, tile + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * row + first + (j + (lane >> 4)) * 8);
        b[j][0] = r[0];
        b[j][1] = r[1];
        b[j + 1][0] = r[2];
        b[j + 1][1] = r[3];
    }
}
"""

# float32 products on TF32 tensor cores with split operands (kernels/mma_float32.py: "3xTF32"), for the forward's, the
# transpose's and the update's SPLIT_TF32 sources: a value is big + small, both TF32 (10 bits of mantissa), and a b is
# taken as a_small b_big + a_big b_small + a_big b_big with float32 sums (TERMS 3; 1: a_big b_big alone, plain TF32,
# what --dtype tf32 takes, and the tests' check that the split is what makes it float32's accuracy)
SPLIT_TF32_HELPERS = r"""
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// d (+)= a b over one 16 x 8 x 8 product: a 4 and b 2 registers of one TF32 value each, d 4 floats (PTX ISA layouts)
__device__ __forceinline__ void mma_1688(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
// value = big + small, both TF32: big = tf32(value), small = tf32(value - big) (the difference is exact in float32),
// each rounded to nearest, ties away from zero, by adding half a TF32 unit in the last place to the bits and leaving
// the low 13 for the tensor cores to ignore (CUTLASS's round_half_ulp_truncate): cvt.rna.tf32.f32's values for finite
// ones, in one integer add instead of cvt.rna's two instructions (an infinity check and the add); big masked, since
// value - big must be exact.  One term (plain TF32): big alone
__device__ __forceinline__ void split_tf32(const float value, unsigned& big, unsigned& small)
{
#if TERMS == 1
    big = __float_as_uint(value) + 0x1000u;
    small = 0u;
#else
    big = (__float_as_uint(value) + 0x1000u) & 0xffffe000u;
    small = __float_as_uint(value - __uint_as_float(big)) + 0x1000u;
#endif
}
// a float4 of values split (split_tf32) into their big and small terms, stored at `at` of each tile (the small ones
// only where TERMS is 3)
__device__ __forceinline__ void store_split_tf32(float* big, float* small, const int at, const float4 value)
{
    unsigned b[4], s[4];
    split_tf32(value.x, b[0], s[0]);
    split_tf32(value.y, b[1], s[1]);
    split_tf32(value.z, b[2], s[2]);
    split_tf32(value.w, b[3], s[3]);
    *(float4*)(big + at) = make_float4(__uint_as_float(b[0]), __uint_as_float(b[1]), __uint_as_float(b[2]),
                                       __uint_as_float(b[3]));
#if TERMS == 3
    *(float4*)(small + at) = make_float4(__uint_as_float(s[0]), __uint_as_float(s[1]), __uint_as_float(s[2]),
                                         __uint_as_float(s[3]));
#endif
}
// acc += a b in TERMS TF32 products.  3: the small terms first, so that they are not lost against the big one, summed
// from zero and added to acc by a float32 add rounded to nearest: the tensor cores' own sums truncate, and fed the
// running acc a fan-in of 3200 took 1,200 truncations of it (session 38, H100: 14x the SIMT kernel's error).  1 (plain
// TF32, --dtype tf32): the one product into acc, as cuBLAS's TF32 GEMM sums, without the partial sums' four adds an
// mma (about as many instructions as the rest of the k-step)
__device__ __forceinline__ void split_mma(float* acc, const unsigned* a_big, const unsigned* a_small,
                                          const unsigned* b_big, const unsigned* b_small)
{
#if TERMS == 3
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_1688(part, a_small, b_big);
    mma_1688(part, a_big, b_small);
    mma_1688(part, a_big, b_big);
    for (int r = 0; r < 4; ++r) acc[r] += part[r];
#else
    mma_1688(acc, a_big, b_big);
#endif
}
// a warp's 32 x 48 outputs (acc: two 16-row products by six 8-column ones) += A B over a k-step of 8 inner terms, A's
// (m, k) at a[m * a_m + k * a_k] from the warp's first row, B's (k, n) at b[k * b_k + n * b_n] from its first column:
// the fragments (A: rows g, g + 8, inner terms t, t + 4; B: inner terms t, t + 4 of column g) loaded as floats and
// split, one column's B fragments at a time (68 registers of fragments and sums instead of 88 with the whole B: with
// split_mma's partial sums the whole B spilled 4-36 bytes in the three kernels, this none in the forward and the
// transpose and 4 bytes in the update's rows-wide)
__device__ __forceinline__ void split_tf32_k_step(float (*acc)[6][4], const float* a, const int a_m, const int a_k,
                                                  const float* b, const int b_k, const int b_n, const int g,
                                                  const int t)
{
    unsigned a_big[2][4], a_small[2][4];
    for (int i = 0; i < 2; ++i)  // register r: row g + 8 (r % 2), inner term t + 4 (r / 2)
        for (int r = 0; r < 4; ++r)
            split_tf32(a[(i * 16 + g + 8 * (r % 2)) * a_m + (t + 4 * (r / 2)) * a_k], a_big[i][r], a_small[i][r]);
    for (int j = 0; j < 6; ++j) {
        unsigned b_big[2], b_small[2];
        for (int r = 0; r < 2; ++r)  // register r: inner term t + 4 r, column g
            split_tf32(b[(t + 4 * r) * b_k + (j * 8 + g) * b_n], b_big[r], b_small[r]);
        for (int i = 0; i < 2; ++i) split_mma(acc[i][j], a_big[i], a_small[i], b_big, b_small);
    }
}
// split_tf32_k_step where A's and B's inner terms are both contiguous (A's (m, k) at a[m * row + k], B's (k, n) at
// b[n * row + k]): the k-step's 8 inner terms taken in another order, the same for A and B (a sum's order), so that
// each thread's two terms t and t + 4 are the adjacent 2t and 2t + 1, one 8-byte load instead of two
__device__ __forceinline__ void split_tf32_k_step_paired(float (*acc)[6][4], const float* a, const float* b,
                                                         const int row, const int g, const int t)
{
    unsigned a_big[2][4], a_small[2][4];
    for (int i = 0; i < 2; ++i)  // register r: row g + 8 (r % 2), inner term t + 4 (r / 2)
        for (int h = 0; h < 2; ++h) {
            const float2 pair = *(const float2*)&a[(i * 16 + g + 8 * h) * row + 2 * t];
            split_tf32(pair.x, a_big[i][h], a_small[i][h]);
            split_tf32(pair.y, a_big[i][h + 2], a_small[i][h + 2]);
        }
    for (int j = 0; j < 6; ++j) {  // register r: inner term t + 4 r, column g
        unsigned b_big[2], b_small[2];
        const float2 pair = *(const float2*)&b[(j * 8 + g) * row + 2 * t];
        split_tf32(pair.x, b_big[0], b_small[0]);
        split_tf32(pair.y, b_big[1], b_small[1]);
        for (int i = 0; i < 2; ++i) split_mma(acc[i][j], a_big[i], a_small[i], b_big, b_small);
    }
}
"""


# (after WGMMA_HELPERS and SPLIT_TF32_HELPERS) the split's products on wgmma, the update's (rows-wide-wgmma with
# split_tf32) and mma_forward's and mma_transpose's (w32-split-2 and the others)
SPLIT_WGMMA_HELPERS = r"""
// a warpgroup's products of one k-tile of 32 inner terms from its split terms into its 48 sums, in one commit group
// (the caller waits): TERMS 3 small x big, big x small, big x big a k-step of 8, the k-tile's first product keeping the
// sums where keep_first and starting them from zero where not; TERMS 1 big x big, keeping them.  B's terms each a
// K-major tile of 128-byte swizzled rows: 8-row atoms 1024 bytes apart, a k-step 32 bytes along the rows (2 of the
// descriptor's 16-byte units); A's terms as PRODUCT takes them (OperandA), k-step k's at big_a + A_STEP k
template <typename OperandA, int A_STEP, void (*PRODUCT)(float*, OperandA, unsigned long long, int)>
__device__ __forceinline__ void split_k_tile_products(float* sums, const OperandA big_a, const OperandA small_a,
                                                      const float* b_big, const float* b_small, const int keep_first)
{
    const unsigned long long big_b = descriptor(b_big, 16, 1024, 1), small_b = descriptor(b_small, 16, 1024, 1);
    sums_fenced<48>(sums);
    WGMMA_FENCE();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#if TERMS == 3
        PRODUCT(sums, small_a + A_STEP * k, big_b + 2 * k, k > 0 || keep_first);
        PRODUCT(sums, big_a + A_STEP * k, small_b + 2 * k, 1);
#endif
        PRODUCT(sums, big_a + A_STEP * k, big_b + 2 * k, 1);
    }
    WGMMA_COMMIT();
}

// split_k_tile_products with A's terms K-major tiles too (a_big and a_small at the warpgroup's 64 rows, as B's)
template <void (*PRODUCT)(float*, unsigned long long, unsigned long long, int)>
__device__ __forceinline__ void split_k_tile(float* sums, const float* a_big, const float* a_small, const float* b_big,
                                             const float* b_small, const int keep_first)
{
    split_k_tile_products<unsigned long long, 2, PRODUCT>(sums, descriptor(a_big, 16, 1024, 1),
                                                          descriptor(a_small, 16, 1024, 1), b_big, b_small, keep_first);
}

// where split_k_tile_registers' k-steps take a k-tile's inner term k (0 .. 31): k-step s takes 8 t + 2 s as its
// column t and 8 t + 2 s + 1 as its column t + 4, so that a thread's fragments of a row are its 8 values 8 t .. 8 t + 7
// (whole loads); B's inner term k is staged at 8 (k % 8 / 2) + k / 8 + 4 (k % 2) of its 32
__device__ __forceinline__ int registers_k_position(const int k) { return 8 * ((k % 8) / 2) + k / 8 + 4 * (k % 2); }

// split_k_tile_products with A from registers (w32-a-registers-hoisted): this thread's fragments of the k-tile's four
// k-steps, a_big[4 k .. 4 k + 3] and a_small[...] (wgmma.wgmma_registers_function's layout)
template <void (*PRODUCT)(float*, const unsigned*, unsigned long long, int)>
__device__ __forceinline__ void split_k_tile_registers(float* sums, const unsigned* a_big, const unsigned* a_small,
                                                       const float* b_big, const float* b_small, const int keep_first)
{
    split_k_tile_products<const unsigned*, 4, PRODUCT>(sums, a_big, a_small, b_big, b_small, keep_first);
}

// after split_k_tile's commit group into sums: waits for it, and where sums are a k-tile's partial sums (TERMS 3: the
// forward's and transpose's, started from zero) adds them to acc in float32 adds rounded to nearest (the tensor cores'
// own sums truncate); TERMS 1 took the products into acc itself
__device__ __forceinline__ void split_k_tile_done(float* acc, float* sums)
{
    wgmma_wait<0>();
    sums_fenced<48>(sums);
#if TERMS == 3
    for (int e = 0; e < 48; ++e) acc[e] += sums[e];
#endif
}

// a float4 of rows n .. n + 3 at inner term kk (MN-major in memory: the four rows' values side by side), split into
// its TF32 terms, into K-major tiles of 128-byte swizzled rows as split_k_tile reads them (big; small where TERMS 3):
// a warp whose lanes take the 32 inner terms of one quad of rows fills one 128-byte row a store, no bank conflicts
__device__ __forceinline__ void store_split_transposed(float* big, float* small, const int n, const int kk,
                                                       const float4 quad)
{
    const float values[4] = {quad.x, quad.y, quad.z, quad.w};
    for (int e = 0; e < 4; ++e) {
        const int row = n + e, at = 32 * row + 4 * ((kk / 4) ^ (row % 8)) + kk % 4;
        unsigned big_term, small_term;
        split_tf32(values[e], big_term, small_term);
        big[at] = __uint_as_float(big_term);
#if TERMS == 3
        small[at] = __uint_as_float(small_term);
#endif
    }
}

// a product's k-tiles in two stages of shared memory: k-tile s + 1 staged (stage(tile, buffer): its fetched values
// split into that buffer's tiles and fenced for the tensor cores) while k-tile s's products run (product(buffer): one
// commit group), the next k-tile's loads in flight after it (fetch(tile): into registers; nothing past the last);
// finish() waits for the products and takes their sums.  A barrier after each k-tile: the next one staged, and every
// warpgroup's products of this one done, so that its buffer is free to stage into.  (Session 49's w32-async-3 and -4,
// which fetched 2 or 3 k-tiles ahead by cp.async into raw stages of shared memory, and session 50's w32-regs-2, two
// register sets of loads, lost or tied and are gone)
template <typename Fetch, typename Stage, typename Product, typename Finish>
__device__ __forceinline__ void split_k_tiles_in_two_stages(const int tiles, Fetch fetch, Stage stage, Product product,
                                                            Finish finish)
{
    fetch(0);
    stage(0, 0);
    fetch(1);
    __syncthreads();  // k-tile 0 is staged
    for (int s = 0; s < tiles; ++s) {
        product(s % 2);
        if (s + 1 < tiles) stage(s + 1, (s + 1) % 2);  // (the other buffer's products, k-tile s - 1's,
        fetch(s + 2);                                 // were done before the last barrier)
        finish();
        __syncthreads();
    }
}

// split_k_tiles_in_two_stages taken two k-tiles an iteration, so that each stage's buffer is named by a constant
// (stage(tile, buffer), product(buffer)): w32-a-registers-hoisted keeps a set of A's fragments a buffer, in registers
template <typename Fetch, typename Stage, typename Product, typename Finish>
__device__ __forceinline__ void split_k_tiles_in_two_stages_by_pairs(const int tiles, Fetch fetch, Stage stage,
                                                                     Product product, Finish finish)
{
    fetch(0);
    stage(0, 0);
    fetch(1);
    __syncthreads();  // k-tile 0 is staged
    for (int s = 0; s < tiles; s += 2) {
        product(0);  // k-tile s (even: buffer 0)
        if (s + 1 < tiles) stage(s + 1, 1);
        fetch(s + 2);
        finish();
        __syncthreads();
        if (s + 1 >= tiles) break;
        product(1);  // k-tile s + 1
        if (s + 2 < tiles) stage(s + 2, 0);
        fetch(s + 3);
        finish();
        __syncthreads();
    }
}
"""


def split_terms(terms: int) -> int:
    """``terms`` (TF32 products a k-step of the split kernels: 3, or 1 for plain TF32), refused otherwise."""
    if terms not in (1, 3):
        raise ValueError(f"terms must be 1 or 3, not {terms!r}.")
    return terms


_SOURCE = r"""
#ifndef TILE_M
#define TILE_M 128  // simt_gemm's (64: a variant's, below)
#endif
#ifndef WARPS_N  // (a variant's) the warps across a block's columns, 48 columns each: 96 columns, or 144 with 3
#define WARPS_N 2
#endif
#ifndef SPECIALIZED  // (OVERLAP variants) warps of two kinds: producers' products, consumers' steps (below)
#define SPECIALIZED 0
#endif
#define PRODUCERS (TILE_M * WARPS_N)  // the threads whose warps take the products: 32 x 48 each, TILE_M / 32 x WARPS_N
#define BLOCK_THREADS (PRODUCERS * (SPECIALIZED ? 2 : 1))
#define TILE_N (48 * WARPS_N)
#define ROW_VECTORS (TILE_N / 4)  // the rows epilogue's float4s a row
#ifndef WGMMA  // (a variant's) bfloat16 products on Hopper's wgmma (kernels/wgmma.py), below
#define WGMMA 0
#endif
#if WGMMA && SPLIT_TF32
#define TILE_K 32  // a k-tile: the codes' and fields' rows of 128 bytes (32 float32 values), swizzled
#elif WGMMA
#define TILE_K 64  // a k-tile: the codes' and fields' rows of 128 bytes, swizzled
// where the staged rows start (STAGE_BULK): after two stages of A and B and the products' tile over them
#define WGMMA_OPERAND_BYTES (2 * (TILE_M + 48 * WARPS_N) * TILE_K * 2 > TILE_M * OUT_ROW * 4 ? \
                             2 * (TILE_M + 48 * WARPS_N) * TILE_K * 2 : TILE_M * OUT_ROW * 4)
#else
#define TILE_K 32
#endif
// SPLIT_TF32 (kernels/mma_float32.py's): float32 codes and maps, each value split into two TF32 terms, in
// dasksae_tf32x3_filter_weight_grad_update (the rows epilogues only); else bfloat16 ones
#if SPLIT_TF32 && WGMMA  // the split on wgmma: both operands' terms K-major from shared memory, m64n96k8
#define OPERAND float
#define UPDATE_KERNEL dasksae_wgmma_tf32x3_filter_weight_grad_update
#define K_STEP 8
#define ROW TILE_K  // a shared row: 128 bytes, no padding
#elif SPLIT_TF32
#define OPERAND float
#define UPDATE_KERNEL dasksae_tf32x3_filter_weight_grad_update
#define K_STEP 8  // inner terms a tensor-core product
#define ROW 40  // a shared row: TILE_K floats and 8 of padding (split_tf32_k_step_paired's 8-byte loads: banks 8g + 2t)
#elif WGMMA  // each warpgroup 64 rows by the 96 columns, m64n96k16, both operands K-major from shared memory
#define OPERAND unsigned short
#define UPDATE_KERNEL dasksae_wgmma_filter_weight_grad_update
#define K_STEP 16
#define ROW TILE_K  // a shared row: 128 bytes, no padding (the swizzle keeps the tensor cores' reads apart)
#else
#define OPERAND unsigned short
#define UPDATE_KERNEL dasksae_mma_filter_weight_grad_update
#define K_STEP 16
#define ROW 40  // a shared row: TILE_K bfloat16 values and 8 of padding (80 bytes: 16-byte aligned, no bank conflicts)
#endif
#define PER_COPY (16 / (int)sizeof(OPERAND))  // operands a 16-byte copy
// OUT_ROW (from mma_update_source): EPILOGUE_ROWS's row of the products' tile in shared memory, TILE_N floats and 8
// of padding; SHARED_BYTES: the block's shared memory (dynamic), the operand tiles, then the products
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
extern __shared__ __align__(1024) unsigned char mma_shared[];  // (wgmma's swizzled atoms: 1024-byte aligned)
#else  // the CPU tests' g++: the block's threads share a static array
static unsigned char mma_shared[SHARED_BYTES] __attribute__((aligned(1024)));
#endif
// (benchmarks' variants, from mma_update_source) MIN_BLOCKS: the blocks an SM the registers are sized for;
// LOADS_A_ROUND: the float4s of raw and of velocity a thread of the rows epilogue has in flight at once (12 in all);
// STAGE_U: the rows epilogue's raw values copied into shared memory after the products tile (cp.async, each thread the
// ones it reads), so that the epilogue reads only velocity from global memory (48 KiB: two blocks an SM);
// STAGE_FRAGMENTS: the fragments epilogue's raw and velocity values copied into shared memory after the operand tiles
// (8 bytes a copy, each thread its own 24 pairs of each, BLOCK_THREADS pairs apart), so that it reads neither from
// global memory; with TILE_M 64 (128 threads), 73 KiB a block: three an SM.  STAGE_FIRST: the copies issued behind the
// second tile's loads (waited for before the second tile is multiplied), else behind the last tile's (waited for in
// the epilogue).
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 3
#endif
#ifndef LOADS_A_ROUND
#define LOADS_A_ROUND 4
#endif
#ifndef STAGE_U
#define STAGE_U 0
#endif
#ifndef STAGE_FRAGMENTS
#define STAGE_FRAGMENTS 0
#endif
#ifndef STAGE_FIRST
#define STAGE_FIRST 0
#endif
#ifndef COLUMN_TILES  // (RESIDENT variants) the column tiles a block takes in turn, its codes resident; 0: one tile
#define COLUMN_TILES 0
#endif
#ifndef STREAMING  // the rows epilogue's raw, velocity and operand read and written cache-streaming (load_once)
#define STREAMING 0
#endif
#ifndef STAGE_BULK  // (wgmma variants) 1: the tile's raw values brought into shared memory by bulk copies (the copy
// engine's, cp.async.bulk) at the block's start, landing while the products are taken; 2: its velocity too
#define STAGE_BULK 0
#endif
#ifndef SPLIT_MASTER  // 1: the float32 weights kept as two 16-bit halves (dasksae.master_weights): `raw` points to the
// low halves (unsigned short) and `operand` holds the high halves, the bfloat16 rounding the products read (ties away
// from zero); the rows epilogue reads and writes both, 4 bytes a weight, and writes no other copy
#define SPLIT_MASTER 0
#endif
#ifndef STEP_ONLY  // (wgmma variants, for benchmarks) 1: the rows epilogue alone, on a zero gradient: no operand tiles
// read and no products taken, the block's tile of weights and momentum read, stepped and written as the update does
#define STEP_ONLY 0
#endif
#if STEP_ONLY && (!WGMMA || !EPILOGUE_ROWS || COLUMN_TILES || STAGE_BULK)
#error "the step alone takes the wgmma rows epilogue, one column tile a block, nothing staged"
#endif
#ifndef TILE_ORDER  // (for benchmarks) 1: raw and velocity in tile order (tile_order), a block's tile of each together
#define TILE_ORDER 0
#endif
#if TILE_ORDER && (!EPILOGUE_ROWS || COLUMN_TILES || STAGE_U || STAGE_BULK || SPECIALIZED)
#error "tile order takes the rows epilogue, one column tile a block, nothing staged"
#endif
#define STAGED_RAW (STAGE_U || STAGE_BULK)  // the rows epilogue reads raw from staged_u, not from global memory
#define STAGED_VELOCITY (STAGE_BULK == 2)  // ... and velocity from the TILE_M x TILE_N floats after them
#define STAGING (STAGE_U || STAGE_FRAGMENTS)
#define OPERAND_BYTES (2 * (TILE_M + TILE_N) * ROW * (int)sizeof(OPERAND))  // the two stages of the A and B tiles
#if SPLIT_TF32 && (COLUMN_TILES || STAGING || !EPILOGUE_ROWS || TILE_M != 128 || WARPS_N != 2)
#error "split TF32 takes the rows epilogues of 128 x 96 tiles, nothing staged, one column tile a block"
#endif
#if SPLIT_MASTER && (!EPILOGUE_ROWS || STAGED_RAW || STREAMING || SPLIT_TF32 || SPECIALIZED)
#error "split master weights take the rows epilogue, nothing staged or streamed, bfloat16 products, no specialized warps"
#endif
#if EPILOGUE_ROWS && TILE_M != 128 && !WGMMA_WIDE
#error "the rows epilogue takes 128 rows a block (64 in wide wgmma blocks)"
#endif
#if WARPS_N != 2 && (STAGE_U || STAGE_FRAGMENTS || COLUMN_TILES || !(EPILOGUE_ROWS || GEMM_ONLY))
#error "blocks of other than 96 columns take the rows epilogue (or none), nothing staged, one column tile a block"
#endif
#if STAGE_BULK && (!WGMMA || !EPILOGUE_ROWS || COLUMN_TILES || STAGING)
#error "bulk copies take the wgmma rows epilogue of one column tile a block, nothing else staged"
#endif
#ifndef WGMMA_WIDE  // (wgmma variants) 1: blocks of 64 rows by 192 columns, each warpgroup 96 of the columns (a tile's
// rows of weights are 384 contiguous bytes of bfloat16, 768 of float32, where 128 x 96 tiles' are 192 and 384)
#define WGMMA_WIDE 0
#endif
#if WGMMA_WIDE && (!WGMMA || TILE_M != 64 || WARPS_N != 4 || SPECIALIZED || STAGE_BULK || COLUMN_TILES)
#error "wide wgmma blocks are 64 x 192, one column tile a block, nothing staged"
#endif
#if WGMMA && SPLIT_TF32 && (WGMMA_WIDE || STEP_ONLY || TILE_ORDER || SPECIALIZED || COLUMN_TILES || STAGE_BULK)
#error "split TF32 on wgmma takes rows-wide-wgmma's blocks"
#endif
#if WGMMA && !WGMMA_WIDE && (STAGING || TILE_M != 128 || WARPS_N != 2 || (COLUMN_TILES && !SPECIALIZED) \
              || !(EPILOGUE_ROWS || GEMM_ONLY || SPECIALIZED))
#error "wgmma takes 128 x 96 tiles, the rows epilogue (or none, or the specialized warps'), nothing staged"
#endif
#if WGMMA
typedef float Sums[1][12][4];  // a thread's share of its warpgroup's 64 x 96 sums
#else
typedef float Sums[2][6][4];  // a warp's 32 x 48 sums
#endif
#if SPECIALIZED && (WARPS_N != 2 || TILE_M != 128 || !COLUMN_TILES || STAGING)
#error "the specialized warps take 128 x 96 tiles, the codes resident"
#endif
#ifndef CONSUMER_LOADS  // (SPECIALIZED) the float4s of raw and of velocity a consumer thread has in flight at once
#define CONSUMER_LOADS 6
#endif


// the unit-norm SGD step of one weight: g = s (dw - u radial), v = momentum v - lr g, u += v
__device__ __forceinline__ void sgd_step(float& u, float& v, const float dw, const float s, const float radial,
                                         const float lr, const float momentum)
{
    v = momentum * v - lr * (dw - u * radial) * s;
    u += v;
}

#if SPLIT_MASTER
// a float32 weight from its high half (bfloat16 bits) and low half (the offset of its bits, a signed 16-bit number)
__device__ __forceinline__ float joined(const unsigned high, const unsigned low)
{
    return __uint_as_float((high << 16) + (unsigned)(int)(short)(unsigned short)low);
}
// four weights from their halves (8 bytes of each)
__device__ __forceinline__ float4 load_joined(const unsigned short* high, const unsigned short* low)
{
    const uint2 h = *(const uint2*)high, l = *(const uint2*)low;
    return make_float4(joined(h.x & 0xffffu, l.x & 0xffffu), joined(h.x >> 16, l.x >> 16),
                       joined(h.y & 0xffffu, l.y & 0xffffu), joined(h.y >> 16, l.y >> 16));
}
// a weight's halves: high its bits rounded to 16, to nearest with ties away from zero, in the high 16 bits of the
// result; low the offset of its bits from high's (in [-2^15, 2^15): exact) in the low 16 bits
__device__ __forceinline__ unsigned split_halves(const float value)
{
    const unsigned bits = __float_as_uint(value), rounded = (bits + 0x8000u) & 0xffff0000u;
    return rounded | ((bits - rounded) & 0xffffu);
}
// four weights' halves stored (8 bytes of each)
__device__ __forceinline__ void store_split(unsigned short* high, unsigned short* low, const float4 u)
{
    const unsigned a = split_halves(u.x), b = split_halves(u.y), c = split_halves(u.z), d = split_halves(u.w);
    *(uint2*)high = make_uint2((a >> 16) | (b & 0xffff0000u), (c >> 16) | (d & 0xffff0000u));
    *(uint2*)low = make_uint2((a & 0xffffu) | (b << 16), (c & 0xffffu) | (d << 16));
}
#endif

// the step of a float4 of weights u and momentum v (raw and velocity at state, the operand at offset: the same but with
// TILE_ORDER) from the gradient dw, stored (raw, velocity and, where there is one, the bfloat16 copy; cache-streaming
// with STREAMING; with SPLIT_MASTER the halves, raw the low ones); the new weights' sum of squares
__device__ __forceinline__ float step_float4(float* raw, float* velocity, unsigned short* operand,
                                            const long long offset, const long long state, float4 u, float4 v,
                                            const float4 dw, const float s, const float radial, const float lr,
                                            const float momentum)
{
    sgd_step(u.x, v.x, dw.x, s, radial, lr, momentum);
    sgd_step(u.y, v.y, dw.y, s, radial, lr, momentum);
    sgd_step(u.z, v.z, dw.z, s, radial, lr, momentum);
    sgd_step(u.w, v.w, dw.w, s, radial, lr, momentum);
#if SPLIT_MASTER
    store_split(operand + offset, (unsigned short*)raw + state, u);
    *(float4*)(velocity + state) = v;
#else
    const unsigned low = (unsigned)round_to_bfloat16(u.x) | ((unsigned)round_to_bfloat16(u.y) << 16);
    const unsigned high = (unsigned)round_to_bfloat16(u.z) | ((unsigned)round_to_bfloat16(u.w) << 16);
#if STREAMING
    store_once(raw + state, u);
    store_once(velocity + state, v);
    if (operand) store_pair_once(operand + offset, low, high);
#else
    *(float4*)(raw + state) = u;
    *(float4*)(velocity + state) = v;
    if (operand) {
        unsigned* pair = (unsigned*)(operand + offset);
        pair[0] = low;
        pair[1] = high;
    }
#endif
#endif  // SPLIT_MASTER
    return u.x * u.x + u.y * u.y + u.z * u.z + u.w * u.w;
}

// a warp's products (acc) into the products' TILE_M x TILE_N tile in shared memory (tile, OUT_ROW floats a row)
__device__ __forceinline__ void store_products(float* tile, const float (&acc)[2][6][4], const int warp_m,
                                               const int warp_n, const int g, const int t)
{
    for (int i = 0; i < 2; ++i)
        for (int h = 0; h < 2; ++h)
            for (int j = 0; j < 6; ++j)  // a half-warp's float2s fall in 32 banks (OUT_ROW % 32 == 8)
                *(float2*)(tile + (warp_m * 32 + i * 16 + g + 8 * h) * OUT_ROW + warp_n * 48 + j * 8 + 2 * t) =
                    make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
}

// wgmma's sums (acc) into the products' tile: warp warp_m of warpgroup warp_n (warp 4 warp_n + warp_m) holds rows
// 64 warp_n + 16 warp_m + g (+ 8) and columns 8 j + 2 t (+ 1) of the block's 96
__device__ __forceinline__ void store_products(float* tile, const float (&acc)[1][12][4], const int warp_m,
                                               const int warp_n, const int g, const int t)
{
    for (int h = 0; h < 2; ++h)
        for (int j = 0; j < 12; ++j)
            *(float2*)(tile + ((WGMMA_WIDE ? 0 : warp_n * 64) + warp_m * 16 + g + 8 * h) * OUT_ROW
                       + (WGMMA_WIDE ? warp_n * 96 : 0) + j * 8 + 2 * t) =
                make_float2(acc[0][j][2 * h], acc[0][j][2 * h + 1]);
}

// the step of the products' tile (tile, the gradient of columns n0 .. of rows m0 ..) by THREADS threads from `thread`:
// whole rows, 24 threads a row of 96 columns (36 of 144), a float4 of raw, of velocity and of the gradient each (a
// warp's loads 512 contiguous bytes in 2 or 3 runs instead of 8 rows' 32 bytes), LOADS float4s of raw and of velocity
// in flight a thread at once; each float4's new sum of squares written in its place (raw from staged_u with STAGE_U or
// STAGE_BULK, velocity from after it with STAGE_BULK 2: both TILE_M x TILE_N floats, as the rows lie in the tile)
template <int THREADS, int LOADS>
__device__ __forceinline__ void step_tile(float* tile, const float* staged_u, const int thread, const int m0,
    const int n0, const long long block, const int rows, const int fan_in, float* raw, float* velocity,
    unsigned short* operand, const float* inverse_norms, const float* row_dots, const float lr, const float momentum)
{
    static_assert(TILE_M * ROW_VECTORS % (THREADS * LOADS) == 0, "whole rounds of loads");
#if TILE_ORDER  // raw and velocity: this tile's TILE_M x TILE_N values, contiguous (tile_order)
    const long long tile_at = ((block * ((rows + TILE_M - 1) / TILE_M) + m0 / TILE_M) * ((fan_in + TILE_N - 1) / TILE_N)
                               + n0 / TILE_N) * (long long)(TILE_M * TILE_N);
#endif
    for (int first = thread; first < TILE_M * ROW_VECTORS; first += LOADS * THREADS) {  // 12 a thread
        float4 u[LOADS], v[LOADS];
        for (int q = 0; q < LOADS; ++q) {  // the loads of raw and of velocity in flight together
            const int c = first + q * THREADS, m = m0 + c / ROW_VECTORS, n = n0 + (c % ROW_VECTORS) * 4;
            if (m < rows && n < fan_in) {  // fan_in % 4 == 0: whole float4s
                const long long offset = (block * rows + m) * fan_in + n;
#if TILE_ORDER
                const long long state = tile_at + 4 * c;
#else
                const long long state = offset;
#endif
#if SPLIT_MASTER
                u[q] = load_joined(operand + offset, (const unsigned short*)raw + state);
#elif STAGED_RAW
                u[q] = *(const float4*)(staged_u + 4 * c);
#elif STREAMING
                u[q] = load_once(raw + state);
#else
                u[q] = *(const float4*)(raw + state);
#endif
#if STAGED_VELOCITY
                v[q] = *(const float4*)(staged_u + TILE_M * TILE_N + 4 * c);
#elif STREAMING
                v[q] = load_once(velocity + state);
#else
                v[q] = *(const float4*)(velocity + state);
#endif
            }
        }
        for (int q = 0; q < LOADS; ++q) {
            const int c = first + q * THREADS, r = c / ROW_VECTORS, column = (c % ROW_VECTORS) * 4, m = m0 + r,
                      n = n0 + column;
            float square = 0.f;
            if (m < rows && n < fan_in) {
                const long long at = block * rows + m, offset = at * fan_in + n;
#if TILE_ORDER
                const long long state = tile_at + 4 * c;
#else
                const long long state = offset;
#endif
                const float s = inverse_norms[at], radial = row_dots[at] * s;
                square = step_float4(raw, velocity, operand, offset, state, u[q], v[q],
                                     *(const float4*)(tile + r * OUT_ROW + column), s, radial, lr, momentum);
            }
            tile[r * OUT_ROW + column] = square;  // in place of what this thread alone read
        }
    }
}

// each row's sums of the stepped tile's squares over each 48 columns, in order (as EPILOGUE_FRAGMENTS's warps), by
// threads TILE_M * WARPS_N from `thread`, into partial_squares from squares_column
__device__ __forceinline__ void row_sums(const float* tile, const int thread, const int m0, const long long block,
                                         const int rows, float* partial_squares, const long long tiles_n,
                                         const long long squares_column)
{
    if (thread < TILE_M * WARPS_N) {
        const int r = thread / WARPS_N, part = thread % WARPS_N, m = m0 + r;
        float squares = 0.f;
        for (int q = 0; q < 12; ++q) squares += tile[r * OUT_ROW + (part * 12 + q) * 4];
        if (m < rows) partial_squares[(block * rows + m) * tiles_n + squares_column + part] = squares;
    }
}

#if !SPECIALIZED  // (whose consumers step with their own threads and loads: step_tile's whole rounds hold for those)
// the rows epilogue: the products (acc) through shared memory (tile; the operand tiles are no longer read), stepped
// whole rows at a time (step_tile), each row's sums of squares over each 48 columns into partial_squares from
// squares_column (row_sums)
template <typename Sums>  // (mma.sync's float[2][6][4] or wgmma's float[1][12][4]: store_products)
__device__ __forceinline__ void rows_epilogue(float* tile, const Sums& acc, const float* staged_u,
    const int tid, const int warp_m, const int warp_n, const int g, const int t, const int m0, const int n0,
    const long long block, const int rows, const int fan_in, float* raw, float* velocity, unsigned short* operand,
    const float* inverse_norms, const float* row_dots, float* partial_squares, const long long tiles_n,
    const long long squares_column, const float lr, const float momentum)
{
    store_products(tile, acc, warp_m, warp_n, g, t);
#if STAGE_U
    copies_wait<0>();  // this thread's staged raw values are there (it reads only its own)
#elif STAGE_BULK
    bulk_wait((unsigned long long*)(staged_u + STAGE_BULK * TILE_M * TILE_N), 0);  // every staged row has landed
#endif
    __syncthreads();
    step_tile<BLOCK_THREADS, LOADS_A_ROUND>(tile, staged_u, tid, m0, n0, block, rows, fan_in, raw, velocity, operand,
                                            inverse_norms, row_dots, lr, momentum);
    __syncthreads();
    row_sums(tile, tid, m0, block, rows, partial_squares, tiles_n, squares_column);
}
#endif

// a warp's products of one k-step of 16 (kk in the B tile, a_k in the A tile of rows a_row elements apart) added to acc
__device__ __forceinline__ void multiply_k_step(float (&acc)[2][6][4], const unsigned short* a_tile, const int a_row,
                                                const int a_k, const unsigned short* b_tile, const int kk,
                                                const int warp_m, const int warp_n, const int g, const int t)
{
    unsigned a[2][4], b[6][2];
    a_fragments(a, a_tile, warp_m * 32, a_row, a_k, g, t);
    for (int j = 0; j < 6; ++j) {  // column g of each 8, inner terms 2t, 2t+1 and 8 on
        const unsigned short* column = b_tile + (warp_n * 48 + j * 8 + g) * ROW + kk + 2 * t;
        b[j][0] = *(const unsigned*)column;
        b[j][1] = *(const unsigned*)(column + 8);
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 6; ++j) mma_16816(acc[i][j], a[i], b[j]);
}

// a column tile's products (acc) with the codes resident in shared memory (As, rows row_a apart: the RESIDENT and
// SPECIALIZED variants): B's k-tiles (the fields of columns n0 ..) through two stages of shared memory (Bs), loaded by
// `threads` threads from `thread`, which sync at BARRIER (0: the block's __syncthreads; else that named barrier)
template <int BARRIER>
__device__ __forceinline__ void resident_products(float (&acc)[2][6][4], const unsigned short* As, const int row_a,
    unsigned short (*Bs)[TILE_N * ROW], const unsigned short* x, const unsigned short* error, const int n0,
    const int width, const int half, const int fan_in, const int field_rows, const long long in_row,
    const int thread, const int threads, const int warp_m, const int warp_n, const int g, const int t)
{
    auto load = [&](const int buffer, const int k0) {  // B's k-tile at k0 into buffer
        const unsigned short* map = k0 < half ? x + k0 : error + (k0 - half);
        for (int c = thread; c < TILE_N * 4; c += threads) {
            const int r = c / 4, part = c % 4, n = n0 + r, safe = n < fan_in ? n : 0;
            copy_16(&Bs[buffer][r * ROW + part * 8],
                    map + (safe / field_rows) * in_row + (long long)(safe % field_rows) * half + part * 8, n < fan_in);
        }
        copies_commit();
    };
    auto sync = [&]() {
        if (BARRIER)
            named_sync(BARRIER, threads);
        else
            __syncthreads();
    };
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 6; ++j)
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
    const int tiles = width / TILE_K;
    load(0, 0);
    for (int s = 0; s < tiles; ++s) {
        const int buffer = s & 1;
        if (s + 1 < tiles) {
            load(buffer ^ 1, (s + 1) * TILE_K);
            copies_wait<1>();
        } else {
            copies_wait<0>();
        }
        sync();  // every loading thread's copies of this k-tile are there
        for (int kk = 0; kk < TILE_K; kk += 16)
            multiply_k_step(acc, As, row_a, s * TILE_K + kk, Bs[buffer], kk, warp_m, warp_n, g, t);
        sync();  // this buffer is no longer read: the next load (or the epilogue's tile) may fill it
    }
}

#if WGMMA
// the fields' k-tile at k0 of columns n0 .. (96 field rows, 64 inner terms) into Bs, K-major in 128-byte swizzled
// rows, by `threads` threads from `thread`, a 16-byte chunk (8 terms) a copy: a k-tile may take the input map's last
// terms and the error map's first, so each chunk (half in whole 8s) from its own map
__device__ __forceinline__ void load_fields(unsigned short* Bs, const unsigned short* x, const unsigned short* error,
    const int n0, const int k0, const int half, const int fan_in, const int field_rows, const long long in_row,
    const int thread, const int threads)
{
    for (int c = thread; c < TILE_N * 8; c += threads) {
        const int r = c / 8, part = c % 8, n = n0 + r, safe = n < fan_in ? n : 0, k = k0 + part * 8;
        const unsigned short* map = k < half ? x + k : error + (k - half);
        copy_16(Bs + k_major_128_at(r, part),
                map + (safe / field_rows) * in_row + (long long)(safe % field_rows) * half, n < fan_in);
    }
    copies_commit();
}

// resident_products on wgmma (rows-overlap-wgmma): the codes resident in shared memory as the swizzled K-major k-tiles
// of the non-resident loop (k-tile s's TILE_M rows at As + s TILE_M TILE_K), B's k-tiles of 64 through two stages in
// the same layout, loaded by `threads` threads from `thread`, which sync at BARRIER; warpgroup `group` takes rows
// 64 group .. of the 96 columns
template <int BARRIER>
__device__ __forceinline__ void resident_products(Sums& acc, const unsigned short* As,
    unsigned short (*Bs)[TILE_N * ROW], const unsigned short* x, const unsigned short* error, const int n0,
    const int width, const int half, const int fan_in, const int field_rows, const long long in_row,
    const int thread, const int threads, const int group)
{
    auto load = [&](const int buffer, const int k0) {  // B's k-tile at k0 into buffer
        load_fields(Bs[buffer], x, error, n0, k0, half, fan_in, field_rows, in_row, thread, threads);
    };
    for (int j = 0; j < 12; ++j)
        for (int e = 0; e < 4; ++e) acc[0][j][e] = 0.f;
    const int tiles = width / TILE_K;
    load(0, 0);
    for (int s = 0; s < tiles; ++s) {
        if (s + 1 < tiles) {
            load((s + 1) & 1, (s + 1) * TILE_K);
            copies_wait<1>();
        } else {
            copies_wait<0>();
        }
        named_sync(BARRIER, threads);  // every loading thread's copies of this k-tile are there
        wgmma_k_tile<48, TILE_K / K_STEP, 2, 2, 0, wgmma_update>(
            &acc[0][0][0], descriptor(As + s * TILE_M * TILE_K + group * 64 * TILE_K, 16, 1024, 1),
            descriptor(Bs[s & 1], 16, 1024, 1));
        named_sync(BARRIER, threads);  // this buffer is no longer read: the next load may fill it
    }
}
#endif

// codes (count, rows, width) OPERAND (bfloat16, or float32 with SPLIT_TF32): [g | a z] (width = 2 half) or g (width =
// half); x and error: the input and error maps (H, W, C, half) OPERAND, block i = (p, q)'s field row n (n < fan_in = f*f*C) at (p*in_row + q*in_pixel)*step +
// (n / field_rows)*in_row + (n % field_rows)*half.  raw and velocity (count, rows, fan_in) float32, updated in place;
// operand: raw's bfloat16 copy, rewritten (or null); inverse_norms and row_dots a value a row; partial_squares
// (count * rows, gridDim.y * 2): each row's sum of the new squares over each 48 columns.  Takes width and half in
// whole 32s, fan_in a multiple of 4, 16-byte aligned rows; SHARED_BYTES of dynamic shared memory.  Three blocks an SM
// (80 registers; the rows epilogue spills 8 bytes: bench/kernel_registers.py --kernels mma): the kernel moves 18
// bytes a parameter for a few FLOPs a byte, so what matters is how many blocks' loads and stores are in flight.
extern "C" __global__ void __launch_bounds__(BLOCK_THREADS, MIN_BLOCKS) UPDATE_KERNEL(
    const OPERAND* __restrict__ codes, const OPERAND* __restrict__ x,
    const OPERAND* __restrict__ error, float* __restrict__ raw, float* __restrict__ velocity,
    unsigned short* __restrict__ operand, const float* __restrict__ inverse_norms,
    const float* __restrict__ row_dots, float* __restrict__ partial_squares, const float lr, const float momentum,
    const int rows, const int fan_in, const int width, const int half, const int blocks_w, const int step,
    const int field_rows, const long long in_row, const long long in_pixel)
{
#if COLUMN_TILES
    // RESIDENT (COLUMN_TILES > 0): the block takes COLUMN_TILES column tiles of 96 in turn (of one row tile), its
    // codes' TILE_M x width tile loaded into shared memory once for all of them; each tile's step through the products'
    // whole tile (the rows epilogue), in shared memory over the B stages (no longer read by then) and past them.
    // OVERLAP (SPECIALIZED as well): its first PRODUCERS threads (8 warps) take each tile's products as the rows kernel
    // does, into one of two products tiles in shared memory after the B stages, while its other 8 warps (the
    // consumers) take the previous tile's step from the other, as rows_epilogue does: the update's loads and stores no
    // longer wait for the products, nor the products for them.  Named barriers: 1 the producers', 2 the consumers',
    // 3 + b "tile b full" (producers arrive, consumers wait), 5 + b "tile b read" (consumers arrive, producers wait)
#if WGMMA  // the codes' k-tiles in the swizzled layout, unpadded (resident_products on wgmma)
    const int row_a = width;
#else
    const int row_a = width + 8;  // a resident row: the codes' values and 8 of padding (no bank conflicts)
#endif
    unsigned short* As = (unsigned short*)mma_shared;
    unsigned short(*Bs)[TILE_N * ROW] = (unsigned short(*)[TILE_N * ROW])(mma_shared + TILE_M * row_a * 2);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const int warp_m = warp % (TILE_M / 32), warp_n = warp / (TILE_M / 32);  // (the producers' or the block's warps)
    const int m0 = blockIdx.x * TILE_M;
    const int column_tiles = (fan_in + TILE_N - 1) / TILE_N, first_tile = blockIdx.y * COLUMN_TILES;
    const int end_tile = first_tile + COLUMN_TILES < column_tiles ? first_tile + COLUMN_TILES : column_tiles;
    const long long tiles_n = (long long)column_tiles * 2;
    const long long block = blockIdx.z;
    codes += block * rows * width;
    {
        const long long p = block / blocks_w, q = block % blocks_w, at = (p * in_row + q * in_pixel) * step;
        x += at;
        if (error) error += at;
    }
    for (int c = tid; c < TILE_M * (width / 8); c += BLOCK_THREADS) {  // the codes, by every thread
        const int r = c / (width / 8), part = c % (width / 8), m = m0 + r;
#if WGMMA  // chunk `part` in k-tile part / 8, at 16 (part % 8 ^ r % 8) of row r
        copy_16(As + (part / 8) * TILE_M * TILE_K + k_major_128_at(r, part % 8),
                codes + (long long)(m < rows ? m : 0) * width + part * 8, m < rows);
#else
        copy_16(As + r * row_a + part * 8, codes + (long long)(m < rows ? m : 0) * width + part * 8, m < rows);
#endif
    }
#if SPECIALIZED
    float* products = (float*)(mma_shared + TILE_M * row_a * 2 + 2 * TILE_N * ROW * 2);  // [2][TILE_M * OUT_ROW]
    copies_commit();
    copies_wait<0>();
    __syncthreads();
#if WGMMA
    SET_SHARED_ARENA(mma_shared);
#endif
    if (tid < PRODUCERS) {
        for (int column_tile = first_tile; column_tile < end_tile; ++column_tile) {
            const int n0 = column_tile * TILE_N, which = (column_tile - first_tile) & 1;
            Sums acc;
#if WGMMA  // (warp_n: the warpgroup)
            resident_products<1>(acc, As, Bs, x, error, n0, width, half, fan_in, field_rows, in_row, tid, PRODUCERS,
                                 warp_n);
#else
            resident_products<1>(acc, As, row_a, Bs, x, error, n0, width, half, fan_in, field_rows, in_row, tid,
                                 PRODUCERS, warp_m, warp_n, g, t);
#endif
            if (column_tile - first_tile >= 2) named_sync(5 + which, BLOCK_THREADS);  // its tile two back is stepped
            store_products(products + which * TILE_M * OUT_ROW, acc, warp_m, warp_n, g, t);
            named_arrive(3 + which, BLOCK_THREADS);  // this tile's products are there
        }
    } else {
        const int thread = tid - PRODUCERS;  // of the consumers
        for (int column_tile = first_tile; column_tile < end_tile; ++column_tile) {
            const int n0 = column_tile * TILE_N, which = (column_tile - first_tile) & 1;
            float* tile = products + which * TILE_M * OUT_ROW;
            named_sync(3 + which, BLOCK_THREADS);  // its products are there
            step_tile<PRODUCERS, CONSUMER_LOADS>(tile, nullptr, thread, m0, n0, block, rows, fan_in, raw, velocity,
                                                 operand, inverse_norms, row_dots, lr, momentum);
            named_sync(2, PRODUCERS);  // every consumer's squares are in the tile
            row_sums(tile, thread, m0, block, rows, partial_squares, tiles_n, column_tile * 2);
            if (column_tile + 2 < end_tile) named_arrive(5 + which, BLOCK_THREADS);  // read: producers may refill it
        }
    }
#else  // the codes committed with B's first stage
    for (int column_tile = first_tile; column_tile < end_tile; ++column_tile) {
        const int n0 = column_tile * TILE_N;
        float acc[2][6][4];
        resident_products<0>(acc, As, row_a, Bs, x, error, n0, width, half, fan_in, field_rows, in_row, tid,
                             BLOCK_THREADS, warp_m, warp_n, g, t);
        rows_epilogue((float*)Bs, acc, nullptr, tid, warp_m, warp_n, g, t, m0, n0, block, rows, fan_in, raw, velocity,
                      operand, inverse_norms, row_dots, partial_squares, tiles_n, column_tile * 2, lr, momentum);
        __syncthreads();  // every row's sums read: the tile (and the B stages under it) free again
    }
#endif
#else
    OPERAND(*As)[TILE_M * ROW] = (OPERAND(*)[TILE_M * ROW])mma_shared;  // [2]: two stages
    OPERAND(*Bs)[TILE_N * ROW] = (OPERAND(*)[TILE_N * ROW])(mma_shared + 2 * TILE_M * ROW * sizeof(OPERAND));
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    // (wgmma: warpgroup warp_n's warp warp_m)
    const int warp_m = warp % (WGMMA ? 4 : TILE_M / 32), warp_n = warp / (WGMMA ? 4 : TILE_M / 32);
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    const long long block = blockIdx.z;
    codes += block * rows * width;
    {
        const long long p = block / blocks_w, q = block % blocks_w, at = (p * in_row + q * in_pixel) * step;
        x += at;
        if (error) error += at;
    }
#if WGMMA && SPLIT_TF32
    // (the split's k-tiles are staged through registers, below)
#elif WGMMA
    // CUTLASS's K-major layout in 128-byte swizzled rows (kernels/wgmma.py's k_major_128_at), for both operands.  A
    // copy is one of a row's 8 chunks: a warp reads 4 whole rows of 128 bytes and writes each into one row of shared
    // memory
    auto load = [&](const int buffer, const int k0) {
        for (int c = tid; c < TILE_M * 8; c += BLOCK_THREADS) {  // A: TILE_M rows of the codes
            const int r = c / 8, part = c % 8, m = m0 + r;
            copy_16(&As[buffer][k_major_128_at(r, part)],
                    codes + (long long)(m < rows ? m : 0) * width + k0 + part * 8, m < rows);
        }
        load_fields(Bs[buffer], x, error, n0, k0, half, fan_in, field_rows, in_row, tid, BLOCK_THREADS);  // B
    };
#else
    auto load = [&](const int buffer, const int k0) {  // the k-tile at k0 into buffer: 16 bytes a copy
        constexpr int copies = TILE_K / PER_COPY;  // a row's
        for (int c = tid; c < TILE_M * copies; c += BLOCK_THREADS) {  // A: TILE_M rows of the codes
            const int r = c / copies, part = c % copies, m = m0 + r;
            copy_16((unsigned short*)&As[buffer][r * ROW + part * PER_COPY],
                    (const unsigned short*)(codes + (long long)(m < rows ? m : 0) * width + k0 + part * PER_COPY),
                    m < rows);
        }
        const OPERAND* map = k0 < half ? x + k0 : error + (k0 - half);
        for (int c = tid; c < TILE_N * copies; c += BLOCK_THREADS) {  // B: 96 field rows
            const int r = c / copies, part = c % copies, n = n0 + r, safe = n < fan_in ? n : 0;
            copy_16((unsigned short*)&Bs[buffer][r * ROW + part * PER_COPY],
                    (const unsigned short*)(map + (safe / field_rows) * in_row + (long long)(safe % field_rows) * half +
                                            part * PER_COPY), n < fan_in);
        }
        copies_commit();
    };
#endif

    Sums acc;
    for (int i = 0; i < (int)(sizeof(acc) / sizeof(acc[0])); ++i)
        for (int j = 0; j < (int)(sizeof(acc[0]) / sizeof(acc[0][0])); ++j)
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    const int tiles = width / TILE_K;
#if STAGE_U
    float* staged_u = (float*)(mma_shared + TILE_M * OUT_ROW * 4);  // float4 c of the rows epilogue at staged_u + 4 c
    auto stage = [&]() {  // this thread's float4s of raw, as the rows epilogue will read them (zeros past the tile)
        for (int c = tid; c < TILE_M * 24; c += 256) {
            const int m = m0 + c / 24, n = n0 + (c % 24) * 4;
            const bool in = m < rows && n < fan_in;
            copy_16((unsigned short*)(staged_u + 4 * c),
                    (const unsigned short*)(raw + (in ? (block * rows + m) * fan_in + n : 0)), in);
        }
        copies_commit();
    };
#elif STAGE_FRAGMENTS
    // this thread's pair e = (i*2 + h)*6 + j (rows g + 8h of product i, columns 2t, 2t + 1 of each 8 j) of raw at
    // staged_u + 2 (e BLOCK_THREADS + tid), of velocity at staged_v + the same: a warp's 32 pairs side by side
    float* staged_u = (float*)(mma_shared + OPERAND_BYTES);
    float* staged_v = staged_u + 2 * 24 * BLOCK_THREADS;
    auto stage = [&]() {  // (not unrolled: its 48 addresses, hoisted out of the products' loop, cost 100 registers)
#pragma unroll 1
        for (int i = 0; i < 2; ++i)
#pragma unroll 1
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + warp_m * 32 + i * 16 + g + 8 * h;
                const long long row = m < rows ? (block * rows + m) * fan_in : -1;  // (-1: past the rows)
                for (int j = 0; j < 6; ++j) {
                    const int e = (i * 2 + h) * 6 + j, n = n0 + warp_n * 48 + j * 8 + 2 * t;
                    const bool in = row >= 0 && n < fan_in;  // (fan_in is even: both columns or neither)
                    copy_8(staged_u + 2 * (e * BLOCK_THREADS + tid), raw + (in ? row + n : 0), in);
                    copy_8(staged_v + 2 * (e * BLOCK_THREADS + tid), velocity + (in ? row + n : 0), in);
                }
            }
        copies_commit();
    };
#endif
#if STAGING  // the k-tile whose iteration issues the copies, behind its next tile's loads (or the only one's)
    const int staged_at = STAGE_FIRST || tiles < 2 ? 0 : tiles - 2;
#endif
#if PREFETCH_L2  // (a benchmark's variant of the rows epilogue: the block's raw and velocity asked of L2 first, so that
    // their reads overlap the products; each thread asks for 3 of the 768 lines of 128 bytes)
    for (int line = tid; line < TILE_M * 6; line += 256) {
        const int r = line / 6, which = line % 6, m = m0 + r, n = n0 + (which % 3) * 32;
        if (m < rows && n < fan_in) prefetch_l2((which < 3 ? raw : velocity) + (block * rows + m) * fan_in + n);
    }
#endif
#if STAGE_BULK
    // the tile's rows of raw (and velocity) into shared memory after the operand stages, one bulk copy a row of 96
    // floats (384 contiguous bytes; fewer in a part-empty last column tile), issued now by one thread a row and landing
    // while the products are taken; the barrier after them counts the bytes (rows_epilogue waits for them)
    float* staged_u = (float*)(mma_shared + WGMMA_OPERAND_BYTES);
    unsigned long long* staged_landed = (unsigned long long*)(staged_u + STAGE_BULK * TILE_M * TILE_N);
    if (tid == 0) bulk_barrier_init(staged_landed);
    __syncthreads();  // the barrier is made before any copy names it
    {
        const int staged_rows = rows - m0 < TILE_M ? rows - m0 : TILE_M;
        const unsigned row_bytes = 4u * (fan_in - n0 < TILE_N ? fan_in - n0 : TILE_N);
        if (tid == 0) bulk_expect(staged_landed, STAGE_BULK * staged_rows * row_bytes);
        for (int c = tid; c < STAGE_BULK * staged_rows; c += BLOCK_THREADS) {
            const int which = c / staged_rows, r = c % staged_rows;
            bulk_copy(staged_u + which * TILE_M * TILE_N + r * TILE_N,
                      (which ? velocity : raw) + (block * rows + m0 + r) * fan_in + n0, row_bytes, staged_landed);
        }
    }
#endif
#if WGMMA && SPLIT_TF32
    // float32 codes (A) and fields (B) on wgmma in TF32: each k-tile of 32 values loaded into registers (a float4 a
    // load: A's 4 a thread, B's 3), then split as it is staged into its big and small TF32 terms (split_tf32), each in
    // a K-major tile of 128-byte swizzled rows: one stage of A big, A small, B big, B small (56 KiB, the products' tile
    // over it after the last).  The next k-tile's loads are in flight while this one's products run.  A k-step of 8
    // takes small x big, big x small, then big x big into the sums (TERMS 1: big x big alone), which the tensor cores
    // keep (their float32 sums truncate: 72 products a sum at a minibatch of 96 with the error map)
    static_assert(TILE_K == 32, "the split's tiles take rows of 32 float32 values, 128 bytes (split_k_tile)");
    float* const a_big = (float*)mma_shared;
    float* const a_small = a_big + TILE_M * TILE_K;
    float* const b_big = a_small + TILE_M * TILE_K;
    float* const b_small = b_big + TILE_N * TILE_K;
    constexpr int A_LOADS = TILE_M * 8 / BLOCK_THREADS, B_LOADS = TILE_N * 8 / BLOCK_THREADS;
    static_assert(A_LOADS * BLOCK_THREADS == TILE_M * 8 && B_LOADS * BLOCK_THREADS == TILE_N * 8, "whole loads");
    float4 a_next[A_LOADS], b_next[B_LOADS];
    auto fetch = [&](const int k0) {  // k-tile k0's float4s of this thread into registers (zeros past the rows)
        for (int i = 0; i < A_LOADS; ++i) {
            const int c = tid + i * BLOCK_THREADS, r = c / 8, part = c % 8, m = m0 + r;
            a_next[i] = m < rows ? *(const float4*)(codes + (long long)m * width + k0 + part * 4)
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        for (int i = 0; i < B_LOADS; ++i) {  // (half in whole 32s: a float4 from one map)
            const int c = tid + i * BLOCK_THREADS, r = c / 8, part = c % 8, n = n0 + r, k = k0 + part * 4;
            const float* map = k < half ? x + k : error + (k - half);
            b_next[i] = n < fan_in  // (as measured in session 48: its machine code kept)
                            ? *(const float4*)(map + (n / field_rows) * in_row + (long long)(n % field_rows) * half)
                            : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    SET_SHARED_ARENA(mma_shared);
    fetch(0);
    for (int s = 0; s < tiles; ++s) {
        __syncthreads();  // both warpgroups' products of k-tile s - 1 are done: the stage is free
        for (int i = 0; i < A_LOADS; ++i) {  // chunk c % 8 of row c / 8 (k_major_128_at counts 2-byte values)
            const int c = tid + i * BLOCK_THREADS;
            store_split_tf32(a_big, a_small, k_major_128_at(c / 8, c % 8) / 2, a_next[i]);
        }
        for (int i = 0; i < B_LOADS; ++i) {
            const int c = tid + i * BLOCK_THREADS;
            store_split_tf32(b_big, b_small, k_major_128_at(c / 8, c % 8) / 2, b_next[i]);
        }
        ASYNC_PROXY_FENCE();  // these stores seen by the tensor cores' reads
        __syncthreads();  // every thread's terms are staged
        split_k_tile<wgmma_update>(&acc[0][0][0], a_big + warp_n * 64 * TILE_K, a_small + warp_n * 64 * TILE_K, b_big,
                                   b_small, 1);
        if (s + 1 < tiles) fetch((s + 1) * TILE_K);  // in flight while the products run
        wgmma_wait<0>();
        sums_fenced<48>(&acc[0][0][0]);
    }
    __syncthreads();  // every warpgroup's products are taken: the epilogue's tile may fill the stage
#elif WGMMA && STEP_ONLY  // (a benchmark's variant) no operands read, no products: the step of a zero gradient
    SET_SHARED_ARENA(mma_shared);
#elif WGMMA  // two stages, one k-tile of copies in flight while the other is multiplied, as mma.sync's loop below
    SET_SHARED_ARENA(mma_shared);
    load(0, 0);
    for (int s = 0; s < tiles; ++s) {
        copies_wait<0>();  // tile s is there (this thread's copies) ...
        __syncthreads();  // ... every thread's, and both warpgroups' products of tile s - 1 are done
        if (s + 1 < tiles) load((s + 1) & 1, (s + 1) * TILE_K);  // into the buffer tile s - 1 left
        // A and B: 8-row atoms 1024 bytes apart, a k-step 32 bytes along the rows (the descriptors count 16 bytes)
        wgmma_k_tile<48, TILE_K / K_STEP, 2, 2, 0, wgmma_update>(
            &acc[0][0][0], descriptor(As[s & 1] + (WGMMA_WIDE ? 0 : warp_n * 64 * TILE_K), 16, 1024, 1),
            descriptor(Bs[s & 1] + (WGMMA_WIDE ? warp_n * 96 * TILE_K : 0), 16, 1024, 1));
    }
    __syncthreads();  // every warpgroup's products are taken: the epilogue's tile may fill the stages
#else
    load(0, 0);
    for (int s = 0; s < tiles; ++s) {
        const int buffer = s & 1;
        if (s + 1 < tiles) {
            load(buffer ^ 1, (s + 1) * TILE_K);  // in flight while this one is multiplied
#if STAGING
            if (s == staged_at) {  // the copies' group and the next tile's may be pending, not this tile's
                stage();
                copies_wait<2>();
            } else
#endif
            copies_wait<1>();  // (with STAGE_FIRST, at s = 1 the copies' group is waited for here too)
        } else {
#if STAGING
            if (s == staged_at) stage();  // (a single tile)
            if (staged_at >= tiles - 2) {
                copies_wait<1>();  // the copies' group is the most recent: it may still be on its way
            } else
#endif
            copies_wait<0>();
        }
        __syncthreads();  // every thread's copies of this tile are there
#if SPLIT_TF32  // A (m, k) at As[m * ROW + k], B (k, n) at Bs[n * ROW + k]; the split's not unrolled (fragments of
        // several k-steps hoisted spill: 52-56 bytes in rows-wide unrolled by 2 or 4, more at rows's 80 registers);
        // one term unrolled, its fragment addresses constant offsets from one base a tile instead of a k-step's 35
        // address instructions
#if TERMS == 1
#pragma unroll
#else
#pragma unroll 1
#endif
        for (int kk = 0; kk < TILE_K; kk += K_STEP)
            split_tf32_k_step_paired(acc, As[buffer] + warp_m * 32 * ROW + kk, Bs[buffer] + warp_n * 48 * ROW + kk,
                                     ROW, g, t);
#else
        for (int kk = 0; kk < TILE_K; kk += K_STEP)
            multiply_k_step(acc, As[buffer], ROW, kk, Bs[buffer], kk, warp_m, warp_n, g, t);
#endif
        __syncthreads();  // this buffer is no longer read: the next load (or the epilogue's tile) may fill it
    }
#endif
    const long long tiles_n = (long long)gridDim.y * WARPS_N;

#if GEMM_ONLY  // (a benchmark's variant: the products alone, their sum written so that they are kept; no update)
    float sum = 0.f;
    for (int e = 0; e < 48; ++e) sum += (&acc[0][0][0])[e];
    if (m0 + tid < rows) partial_squares[(block * rows + m0 + tid) * tiles_n + blockIdx.y * WARPS_N] = sum;
#elif EPILOGUE_ROWS
#if !STAGED_RAW
    const float* staged_u = nullptr;  // (nothing staged)
#endif
    rows_epilogue((float*)mma_shared, acc, staged_u, tid, warp_m, warp_n, g, t, m0, n0, block, rows, fan_in, raw,
                  velocity, operand, inverse_norms, row_dots, partial_squares, tiles_n, blockIdx.y * WARPS_N, lr,
                  momentum);
#else
    // EPILOGUE_FRAGMENTS: the step taken where the products are: this thread's rows (2 a product: g and g + 8) and
    // column pairs (2t, 2t + 1 of each 8), a float2 of raw and of velocity loaded, stepped and stored at a time
#if STAGE_FRAGMENTS
    copies_wait<0>();  // this thread's staged pairs are there (it reads only its own)
#endif
    for (int i = 0; i < 2; ++i)
        for (int h = 0; h < 2; ++h) {
            const int m = m0 + warp_m * 32 + i * 16 + g + 8 * h;
            const bool row_in = m < rows;
            const long long at = block * rows + (row_in ? m : 0);
            const float s = row_in ? inverse_norms[at] : 0.f, radial = row_in ? row_dots[at] * s : 0.f;
            float squares = 0.f;
            for (int j = 0; j < 6; ++j) {
                const int n = n0 + warp_n * 48 + j * 8 + 2 * t;
                if (!row_in || n >= fan_in) continue;  // fan_in is even: both columns or neither
                const long long offset = at * fan_in + n;
#if STAGE_FRAGMENTS
                const int e = (i * 2 + h) * 6 + j;
                float2 u = *(const float2*)(staged_u + 2 * (e * BLOCK_THREADS + tid));
                float2 v = *(const float2*)(staged_v + 2 * (e * BLOCK_THREADS + tid));
#else
                float2 u = *(const float2*)(raw + offset), v = *(const float2*)(velocity + offset);
#endif
                sgd_step(u.x, v.x, acc[i][j][2 * h], s, radial, lr, momentum);
                sgd_step(u.y, v.y, acc[i][j][2 * h + 1], s, radial, lr, momentum);
                squares += u.x * u.x + u.y * u.y;
                *(float2*)(raw + offset) = u;
                *(float2*)(velocity + offset) = v;
                if (operand)
                    *(unsigned*)(operand + offset) =
                        (unsigned)round_to_bfloat16(u.x) | ((unsigned)round_to_bfloat16(u.y) << 16);
            }
            // the row's 4 lanes (t) hold its 48 columns of this warp: every lane takes part in the shuffles
            squares += __shfl_xor_sync(0xffffffffu, squares, 1);
            squares += __shfl_xor_sync(0xffffffffu, squares, 2);
            if (t == 0 && row_in) partial_squares[at * tiles_n + blockIdx.y * WARPS_N + warp_n] = squares;
        }
#endif
#endif  // COLUMN_TILES
}
"""


# the epilogue's variants (compile-time switches of the source).  On the H200 (session 22, coates200's stage 1, M=96:
# cuBLAS's gradient 0.72 ms, the update after it 1.98 ms) "fragments" took 4.23 ms; the products alone 0.71 ms
# ("gemm-only"); asking L2 for the block's raw and velocity at its start 4.47 ms, loading a row's 6 pairs before
# stepping them 4.17 ms (both since removed): its 8 rows' 32 bytes a warp's load, not latency, were what cost.
EPILOGUE_VARIANTS = {
    "rows": {"EPILOGUE_ROWS": 1},  # the products through shared memory: whole rows, a float4 a thread
    "fragments": {},  # session 21's: the step where mma.sync leaves the products, a float2 a thread
    "gemm-only": {"GEMM_ONLY": 1},  # for benchmarks: the products alone, no update (the weights are left as they were)
    # for benchmarks (session 23, not yet run on a GPU): rows, with the block's raw and velocity asked of L2 before its
    # products, so that the epilogue's reads (the kernel's products and traffic add up: 3.35 + 6.1 ms) overlap them
    "rows-l2": {"EPILOGUE_ROWS": 1, "PREFETCH_L2": 1},
    # for benchmarks (session 24, not yet run on a GPU; on the H200 the kernel's products and traffic add up: 3.3 +
    # 6.6 ms against 9.3): rows with registers for two blocks an SM (is it the blocks or the registers?); with 6
    # float4s of raw and of velocity in flight a thread instead of 4 (is the epilogue waiting on latency?); and with
    # the block's raw values staged in shared memory while its last products run (the float32 kernel's
    # DASKSAE_UPDATE_STAGING, 2 ms of its 55 there)
    "rows-2": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2},
    "rows-wide": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6},
    "rows-staged": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "STAGE_U": 1},
    # for benchmarks (session 24, not yet run on a GPU): blocks of 64 rows (128 threads), the step taken where the
    # products are with the block's raw and velocity staged in shared memory by then (no products tile: 73 KiB a
    # block, three an SM), the copies issued behind the last tile's loads, or behind the second's
    "frag64-staged": {"TILE_M": 64, "STAGE_FRAGMENTS": 1},
    "frag64-staged-first": {"TILE_M": 64, "STAGE_FRAGMENTS": 1, "STAGE_FIRST": 1},
    # session 28 (DASKSAE_UPDATE_CACHE_HINTS=1): rows and rows-wide with the weights, momentum and bfloat16 copy read
    # and written cache-streaming, once each, so that their 18 bytes a parameter do not push the operand tiles (read
    # again by the blocks of other column tiles) out of L2
    "rows-cs": {"EPILOGUE_ROWS": 1, "STREAMING": 1},
    "rows-wide-cs": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "STREAMING": 1},
    # session 35 (Nsight Compute on the H200, bench/results/session35/first: the rows kernel moves 19 bytes a parameter
    # through DRAM at 71% of its peak while L2 is 83% busy, its products alone 61%: it is bound by L2, which carries
    # the operand tiles, 7 bytes a parameter, beside the 18 of the update): each block takes COLUMN_TILES column tiles
    # of 96 in turn with its codes' whole tile (TILE_M x 2M) kept in shared memory, loaded once, so that the codes'
    # 4 bytes a parameter of L2 traffic become 4 / COLUMN_TILES; the step as in "rows", its products' tile after the
    # codes (104 KiB a block at M=96: two an SM).  Up to RESIDENT_WIDTH inner terms; wider codes take "rows"
    # (resident_or_rows).  For benchmarks only: on an H100 (session 35, bench/results/session35/resident, every stage
    # of coates200 at M=96) it took 14.4 ms against "auto"'s 11.8 (2 blocks an SM, 25% occupancy: L2 63% busy, DRAM
    # 65%, the warps waiting on their loads), and the in-process bfloat16 step 27.3-27.5 ms against 24.7.  Keeping
    # three blocks an SM left room only for each warp's products 8 rows at a time, whose 200-344 bytes of spills (80
    # registers) took the update to 33-36 ms (that variant, tried there, is no longer in the source).  Fewer bytes
    # through L2 did not pay for a third of the blocks: the codes would have to be shared between blocks (a cluster's
    # TMA multicast) at three blocks an SM
    "rows-resident-whole": {"COLUMN_TILES": 8, "MIN_BLOCKS": 2},
    "rows-resident-whole-1": {"COLUMN_TILES": 1, "MIN_BLOCKS": 2},  # (a block a column tile: the tests' grid)
    # For benchmarks (session 36, on an H100, every stage of coates200 at M=96, bench/results/session36/first and
    # overlap): rows with blocks of 128 x 144 (12 warps, two blocks an SM: the same 24 warps an SM as rows' three
    # blocks of 8, 80 registers), so that the codes' tile is read once for 144 columns instead of 96, the operand
    # tiles' L2 traffic 5.7 bytes a parameter instead of 7.  Its partial_squares are rows' (a column for each 48
    # columns, in order) with trailing zeros, so the new norms are the same to the bit.  It took 13.6 ms against
    # auto's 11.7, the in-process bfloat16 step 26.4-26.5 ms against 24.5-24.6: fewer L2 bytes do not pay for a third
    # of the blocks, as with rows-resident-whole
    "rows-144": {"EPILOGUE_ROWS": 1, "WARPS_N": 3, "MIN_BLOCKS": 2},
    # For benchmarks (session 36, as rows-144): a block of 16 warps, one an SM, takes COLUMN_TILES column tiles in
    # turn, its codes resident; 8 producer warps take tile j + 1's products while 8 consumer warps take tile j's step
    # (the rows epilogue's, 6 float4s of raw and of velocity in flight a thread), through two products tiles in
    # shared memory (175 KiB a block at most).  It took 13.9-14.0 ms against auto's 11.4-11.7 (Nsight Compute on
    # stage 2: DRAM 65% of its peak, L2 63%: 8 streaming warps an SM keep too few bytes in flight), the step 26.2-26.6
    # ms against 23.9-24.1; asking L2 for the next tile's raw and velocity ahead of the consumers made it 16.3 ms
    # (the lines were evicted before use: 10.4 GB read from DRAM on stage 2 against 6.1)
    "rows-overlap": {"SPECIALIZED": 1, "COLUMN_TILES": 17, "MIN_BLOCKS": 1},
    # Tried in session 43 (H100, bench/results/session43/stages/, the variants at e82b394): the operand tiles in 3 or
    # 4 stages of shared memory instead of 2 (2 or 3 k-tiles of copies in flight; no fewer blocks an SM).  The
    # products alone took 3.62-3.68 ms against 3.42, the update 12.9-13.1 against 11.75-12.0: their loads were not
    # what they waited on.
    # Session 43: the products on Hopper's wgmma (sm_90 only, kernels/wgmma.py), as mma_forward's W x: each of the
    # block's two warpgroups takes 64 rows by the 96 columns (m64n96k16), both operands K-major in 128-byte swizzled
    # rows read by descriptor, k-tiles of 64 in two stages (57 KB).  mma.sync's k-step loads 20 fragments from shared
    # memory for its 12 products.  On an H100 (bench/results/session43/update/, carveout/, carveout-least/: coates200,
    # M=96) the products alone ("gemm-only-wgmma") took 2.48 ms over the stages against mma.sync's 3.23, and the update
    # with rows-wide's epilogue (two blocks an SM, 128 registers) 11.43-11.62 ms against 11.51-11.79 for the training's
    # mma.sync variants: the default on sm_90 (DASKSAE_WGMMA_UPDATE).  Three blocks an SM (rows' epilogue, 80
    # registers, 28 bytes spilled) took 12.35; asking for all of the SM's shared memory (carveout 100, as the variants
    # above that stage or keep tiles resident do) left the epilogue's loads 28 KiB of L1 and took 12.4-13.1; the least
    # carveout the blocks need changed nothing (those variants, taken out, are at 6ac3207 and a1f9b9e).  Codes whose
    # width is not in whole 64s take rows-wide (wgmma_or_rows)
    "rows-wide-wgmma": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1},
    # For benchmarks (session 47): rows-wide-wgmma with 4 or 3 float4s of weights and of momentum in flight a thread
    # (on split master weights their halves: 8 bytes of each).  On an H100 (bench/results/session47/last/, coates200,
    # M=96) 4 took the stages in 11.60 ms on the whole weights and 11.77 on the halves, against rows-wide-wgmma's 11.44
    # and 12.05 (3 was not run)
    "rows-wgmma-loads-4": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 4, "WGMMA": 1},
    "rows-wgmma-loads-3": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 3, "WGMMA": 1},
    # For benchmarks (session 47): blocks of 64 rows by 192 columns, each warpgroup 64 x 96 of them (m64n96k16 on the
    # codes' 64 rows and its half of the fields), rows-wide's epilogue over the 64 x 192 tile: a tile's rows of weights
    # twice as long (384 bytes of bfloat16), the codes' tile read by both warpgroups.  On an H100
    # (bench/results/session47/last/) 12.11 ms over the stages on the whole weights and 11.69 on the halves, against
    # rows-wide-wgmma's 11.44 and 12.05; the in-process bfloat16 step 22.9 and 22.4 ms
    "rows-wide-wgmma-192": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "WGMMA_WIDE": 1,
                            "TILE_M": 64, "WARPS_N": 4},
    # For benchmarks (session 48): rows-wide-wgmma and rows-wide-wgmma-192 with no operands read and no products (a zero
    # gradient): the epilogue's bytes in the update's blocks, tiles and occupancy, against the plain streaming step
    # (bench/update_floor.py's "stream" rows), on the whole weights and on their halves.  On an H200
    # (bench/results/session48/first/, coates200, M=96, the three stages) step-only-wgmma took 7.79 ms (6.90 with no
    # copy, 8.35 on the halves) against the streamed step's 6.70 (halves 5.90) and the update's 9.08: 1.09 ms of the
    # update's 2.38 above its bytes is its blocks, not its products
    "step-only-wgmma": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "STEP_ONLY": 1},
    "step-only-wgmma-192": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "WGMMA_WIDE": 1,
                            "TILE_M": 64, "WARPS_N": 4, "STEP_ONLY": 1},
    # For benchmarks (session 48): the same three with the weights and momentum in tile order (tile_order: a block's
    # tile of each contiguous, 48 KiB, instead of a run of 384 bytes in each of 128 rows; the bfloat16 copy, or the
    # high halves, the products' operand, in rows as before): whether the update's blocks lose to DRAM what a
    # streaming kernel over whole arrays does not.  Little (H200, session48/first/): rows-wide-wgmma-tiled 8.84 ms
    # against 9.08, step-only-wgmma-tiled 7.61 against 7.79, rows-wide-wgmma-192-tiled 9.60 against 9.83
    "rows-wide-wgmma-tiled": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "TILE_ORDER": 1},
    "rows-wide-wgmma-192-tiled": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1,
                                  "WGMMA_WIDE": 1, "TILE_M": 64, "WARPS_N": 4, "TILE_ORDER": 1},
    "step-only-wgmma-tiled": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "STEP_ONLY": 1,
                              "TILE_ORDER": 1},
    # For benchmarks (session 45, lost): rows-wide-wgmma with the tile's raw values ("-raw": 104 KiB a block, two an
    # SM) or its raw and velocity (152 KiB, one an SM) brought into shared memory by bulk copies (cp.async.bulk, a row
    # of 96 floats a copy) issued at the block's start, landing while the products are taken; the epilogue then loads
    # only what is not staged.  On an H100 (bench/results/session45/bulk/: coates200, M=96) 11.57 and 15.16 ms over
    # the stages against rows-wide-wgmma's 11.37; the in-process bfloat16 step with -raw 22.5 / 22.7 ms against
    # 22.3 / 22.2
    "rows-bulk-raw-wgmma": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 2, "LOADS_A_ROUND": 6, "WGMMA": 1, "STAGE_BULK": 1},
    "rows-bulk-wgmma": {"EPILOGUE_ROWS": 1, "MIN_BLOCKS": 1, "LOADS_A_ROUND": 6, "WGMMA": 1, "STAGE_BULK": 2},
    "gemm-only-wgmma": {"GEMM_ONLY": 1, "WGMMA": 1},
    # For benchmarks (session 43; run in session 44: 13.83 ms over the stages against rows-wide-wgmma's 11.43, H100,
    # bench/results/session44/overlap/): rows-overlap with its
    # 8 producer warps on wgmma (the codes resident in the swizzled k-tiles, 48 KiB at M=96; B's two stages 24; two
    # products tiles 106.5: 178.5 KiB, one block an SM).  Session 36's rows-overlap lost with mma.sync products from 8
    # warps an SM (a third of rows' 24), whose products wgmma takes at 1.3x mma.sync's speed from 24 warps
    "rows-overlap-wgmma": {"SPECIALIZED": 1, "COLUMN_TILES": 17, "MIN_BLOCKS": 1, "WGMMA": 1},
    # Tried in session 44 (H100, bench/results/session44/pipelined/; the variants, taken out, are at 503830d):
    # rows-wide-wgmma's products and step pipelined in one block, a block taking 2 or 8 column tiles in turn and a
    # tile's step (rounds of its raw and velocity loads and stores) taken after each k-tile of the next tile's products,
    # through one stage of operand tiles and a products tile (80 KiB a block, two an SM).  The three stages took
    # 11.91-14.87 ms against rows-wide-wgmma's 11.36, and the in-process bfloat16 step 22.7-23.3 ms against 22.2-22.8.
}
WGMMA_TILE_K = 64  # the wgmma variants' k-tile: the codes' width in whole 64s
# "1" (the default since session 43): under DASKSAE_MMA_EPILOGUE=auto, the update takes WGMMA_VARIANT where the GPU runs
# wgmma and the codes' width is in whole 64s; "0": mma.sync's epilogue_for.  On an H100 (session 43, coates200, M=96,
# bench/results/session43/carveout/ and carveout-least/) rows-wide-wgmma took the three stages in 11.43 and 11.62 ms
# against the training's mma.sync variants' 11.51 and 11.79 (its products alone 2.48 ms against 3.23); rows-wgmma, three
# blocks an SM at 80 registers with 28 bytes spilled, 12.35 (taken out)
WGMMA_UPDATE = switch("DASKSAE_WGMMA_UPDATE")
WGMMA_VARIANT = "rows-wide-wgmma"
RESIDENT_WIDTH = 224  # the widest codes (2M, or M without the error map) the resident variants keep: 2 blocks an SM
OUT_ROW = 104  # a row of the products' tile in shared memory: 96 floats and 8 of padding (OUT_ROW % 32 == 8)
ROW = TILE_K + 8  # a row of the operand tiles in shared memory: TILE_K bfloat16 values and 8 of padding
STAGED_U_BYTES = TILE_M * TILE_N * 4  # a block's raw values, staged (STAGE_U)
WARP_COLUMNS = 48  # the columns of a warp's products


def warps_across(variant: str) -> int:
    """The warps across a block's columns in ``variant``: :data:`WARP_COLUMN_TILES`, or its ``WARPS_N``."""
    return EPILOGUE_VARIANTS[variant].get("WARPS_N", WARP_COLUMN_TILES)


def tile_columns(variant: str) -> int:
    """The columns of ``dL/dW`` a block of ``variant`` takes: 96, or 144 with 3 warps across."""
    return WARP_COLUMNS * warps_across(variant)


def out_row(variant: str) -> int:
    """A row of ``variant``'s products tile in shared memory: its columns and at least 8 of padding, ``% 32 == 8``
    (a half-warp's float2s in 32 banks): 104 floats for 96 columns, 168 for 144."""
    return -(-tile_columns(variant) // 32) * 32 + 8


def column_tiles_a_block(variant: str) -> int:
    """The 96-column tiles a block of ``variant`` takes in turn (1 but for the resident variants)."""
    return EPILOGUE_VARIANTS[variant].get("COLUMN_TILES", 0) or 1


def resident_bytes(width: int, variant: str = "rows-resident-whole") -> int:
    """Dynamic shared memory a block of a resident variant takes for codes ``width`` wide: the codes' tile (each row
    padded by 8), then the products' whole tile (over the two B stages); or (the specialized warps of ``rows-overlap``)
    the codes, the two B stages and two products tiles."""
    if EPILOGUE_VARIANTS[variant].get("SPECIALIZED") and EPILOGUE_VARIANTS[variant].get("WGMMA"):  # unpadded rows
        return TILE_M * width * 2 + 2 * TILE_N * WGMMA_TILE_K * 2 + 2 * TILE_M * OUT_ROW * 4
    if EPILOGUE_VARIANTS[variant].get("SPECIALIZED"):
        return TILE_M * (width + 8) * 2 + 2 * TILE_N * ROW * 2 + 2 * TILE_M * OUT_ROW * 4
    return TILE_M * (width + 8) * 2 + TILE_M * OUT_ROW * 4


def resident_or_rows(variant: str, width: int) -> str:
    """``variant``, or ``rows`` where ``variant`` keeps the codes resident and ``width`` is past
    :data:`RESIDENT_WIDTH`."""
    return "rows" if EPILOGUE_VARIANTS[variant].get("COLUMN_TILES") and width > RESIDENT_WIDTH else variant


def default_variant(channels: int, width: int) -> str:
    """The variant the training takes for maps of ``channels`` channels and codes ``width`` wide: under
    ``DASKSAE_MMA_EPILOGUE=auto`` and ``DASKSAE_WGMMA_UPDATE=1`` (and without ``DASKSAE_UPDATE_CACHE_HINTS=1``, whose
    cache-streaming variants are ``mma.sync``'s), :data:`WGMMA_VARIANT` where the GPU runs ``wgmma`` and ``width`` is
    in whole :data:`WGMMA_TILE_K` (the variant ``DASKSAE_WGMMA_UPDATE`` names, where it names one); else
    :func:`epilogue_for`'s."""
    if (EPILOGUE == "auto" and WGMMA_UPDATE != "0" and not CACHE_HINTS and width % WGMMA_TILE_K == 0
            and wgmma.supported()):
        return WGMMA_VARIANT if WGMMA_UPDATE == "1" else WGMMA_UPDATE
    return epilogue_for(EPILOGUE, channels)


def wgmma_or_rows(variant: str, width: int) -> str:
    """``variant``, or (a ``wgmma`` variant, for codes ``width`` wide not in whole :data:`WGMMA_TILE_K`) its
    ``mma.sync`` twin without ``-wgmma``."""
    if EPILOGUE_VARIANTS[variant].get("WGMMA") and width % WGMMA_TILE_K:
        twin = variant.removesuffix("-wgmma")
        # (the bulk and wide variants' epilogue is rows-wide's)
        return twin if twin != variant and twin in EPILOGUE_VARIANTS else "rows-wide"
    return variant


def tile_rows(variant: str = "rows") -> int:
    """The rows of ``dL/dW`` a block of ``variant`` takes (its threads: twice as many)."""
    return EPILOGUE_VARIANTS[variant].get("TILE_M", TILE_M)


SPLIT_ROW = 40  # with split TF32 (float32 operands): TILE_K floats and 8 of padding, for the paired 8-byte loads
# the epilogues split TF32 takes; rows-wide-wgmma (session 48): its k-tiles split as they are staged, the products on
# wgmma (sm_90)
SPLIT_VARIANTS = ("rows", "rows-wide", "rows-cs", "rows-wide-cs", "rows-wide-wgmma")
# what it takes by default: rows-wide (two blocks an SM, 128 registers, no spills since session 40's paired loads);
# rows's three blocks an SM at 80 registers spill 68 bytes a thread (bench/kernel_registers.py --kernels
# mma-float32-update --mma-epilogue rows)
SPLIT_VARIANT = "rows-wide"


def shared_bytes(variant: str = "rows", split_tf32: bool = False) -> int:
    """Dynamic shared memory a block of ``variant``: the products' tile (over the operand tiles), and the staged raw
    values after it where the variant stages them; or the operand tiles and the staged raw and velocity pairs.  With
    ``split_tf32`` (float32 operands, :data:`SPLIT_VARIANTS`): the operand tiles, or the products' tile over them
    where that is larger."""
    defines = EPILOGUE_VARIANTS[variant]
    if split_tf32 and defines.get("WGMMA"):  # one stage of each operand's two terms in 128-byte rows, the products over
        return max(2 * (TILE_M + tile_columns(variant)) * WGMMA_TILE_K * 2, TILE_M * out_row(variant) * 4)
    if split_tf32:
        return max(2 * (TILE_M + tile_columns(variant)) * SPLIT_ROW * 4, TILE_M * out_row(variant) * 4)
    if defines.get("COLUMN_TILES"):  # the most (the launch asks for its codes' width: resident_bytes)
        return resident_bytes(RESIDENT_WIDTH, variant)
    if defines.get("STAGE_FRAGMENTS"):
        rows = tile_rows(variant)
        return 2 * (rows + TILE_N) * ROW * 2 + 2 * rows * TILE_N * 4
    if defines.get("WGMMA"):  # the products' tile over two stages of unpadded 128-byte rows; the staged rows and
        # their barrier after them (STAGE_BULK)
        staged = defines.get("STAGE_BULK", 0) * STAGED_U_BYTES
        return (max(TILE_M * out_row(variant) * 4, 2 * (TILE_M + TILE_N) * WGMMA_TILE_K * 2)
                + (staged + 8 if staged else 0))
    return TILE_M * out_row(variant) * 4 + (STAGED_U_BYTES if defines.get("STAGE_U") else 0)
EPILOGUE = switch("DASKSAE_MMA_EPILOGUE")  # the variant the training takes: a variant, or "auto" (epilogue_for)
FEW_CHANNELS = 8  # maps with fewer channels than this (an image's 3) take "rows-wide" under "auto"
# "1": the rows epilogues read and write the weights and momentum cache-streaming (their "-cs" variants)
CACHE_HINTS = switch("DASKSAE_UPDATE_CACHE_HINTS") == "1"


def epilogue_for(setting: str, channels: int) -> str:
    """The epilogue variant a layer whose input maps have ``channels`` channels takes under ``setting``
    (``DASKSAE_MMA_EPILOGUE``): itself, or for ``auto`` (the default) ``rows-wide`` below :data:`FEW_CHANNELS`
    channels and ``rows`` otherwise.  On an H200 (session 25, coates200, M=96, ``bench/results/session25/next``)
    ``rows-wide`` took stage 1 (3 channels) in 2.18 ms against ``rows``'s 2.41, and stages 2 and 3 (8 channels) in
    4.17 and 3.25 ms against 3.94 and 3.05.  With ``DASKSAE_UPDATE_CACHE_HINTS=1`` a rows variant takes its
    cache-streaming twin (``-cs``)."""
    variant = setting if setting != "auto" else "rows-wide" if channels < FEW_CHANNELS else "rows"
    return variant + "-cs" if CACHE_HINTS and variant + "-cs" in EPILOGUE_VARIANTS else variant


def mma_update_source(variant: str = "rows", split_tf32: bool = False, terms: int = 3,
                      split_master: bool = False) -> str:
    """The kernel's CUDA source (with the bfloat16 rounding its operand copy uses), with a variant's defines; with
    ``split_tf32``, the float32 kernel on TF32 tensor cores (:mod:`.mma_float32`; a variant of
    :data:`SPLIT_VARIANTS`), ``terms`` TF32 products a k-step; with ``split_master``, the weights read and written as
    their two halves (:mod:`dasksae.master_weights`; a variant of :data:`SPLIT_MASTER_VARIANTS`)."""
    if split_tf32 and variant not in SPLIT_VARIANTS:
        raise ValueError(f"split TF32 takes the epilogues {', '.join(SPLIT_VARIANTS)}, not {variant!r}.")
    if split_master and variant not in SPLIT_MASTER_VARIANTS:
        raise ValueError(f"split master weights take the epilogues {', '.join(SPLIT_MASTER_VARIANTS)}, not {variant!r}.")
    defines = ({"OUT_ROW": out_row(variant), "SHARED_BYTES": shared_bytes(variant, split_tf32)}
               | EPILOGUE_VARIANTS[variant] | ({"SPLIT_MASTER": 1} if split_master else {}))
    helpers = MMA_HELPERS
    if split_tf32:
        defines |= {"SPLIT_TF32": 1, "TERMS": split_terms(terms)}
        helpers += SPLIT_TF32_HELPERS
    if defines.get("WGMMA"):
        product = wgmma.wgmma_function("wgmma_update", TILE_N, "tf32" if split_tf32 else "bfloat16")
        helpers += wgmma.WGMMA_HELPERS + product + (SPLIT_WGMMA_HELPERS if split_tf32 else "")
    defines = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return defines + BFLOAT16_ROUNDING + helpers + _SOURCE


# the epilogues that take split master weights (mma_update_source's split_master): the rows epilogues that read raw
# from global memory with plain loads
SPLIT_MASTER_VARIANTS = ("rows", "rows-2", "rows-wide", "rows-wide-wgmma", "rows-wgmma-loads-4", "rows-wgmma-loads-3",
                         "rows-wide-wgmma-192", "step-only-wgmma", "step-only-wgmma-192", "rows-wide-wgmma-tiled",
                         "rows-wide-wgmma-192-tiled", "step-only-wgmma-tiled")


@functools.lru_cache(maxsize=None)
def _kernel(variant: str, split_tf32: bool = False, terms: int = 3, split_master: bool = False):
    import cupy

    name = "dasksae_tf32x3_filter_weight_grad_update" if split_tf32 else "dasksae_mma_filter_weight_grad_update"
    if EPILOGUE_VARIANTS[variant].get("WGMMA"):  # NVRTC for compute_90a
        kernel = wgmma.compiled_module(mma_update_source(variant, split_tf32, terms, split_master), "mma_update")
        kernel = kernel.get_function("dasksae_wgmma_tf32x3_filter_weight_grad_update" if split_tf32
                                     else "dasksae_wgmma_filter_weight_grad_update")
    else:
        kernel = cupy.RawKernel(mma_update_source(variant, split_tf32, terms, split_master), name,
                                options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = shared_bytes(variant, split_tf32)
    if any(EPILOGUE_VARIANTS[variant].get(name) for name in ("STAGE_U", "STAGE_FRAGMENTS", "COLUMN_TILES", "STAGE_BULK")):
        # two blocks of 100-110 KiB or three of 73: as much shared memory as an SM has
        kernel.preferred_shared_memory_carveout = 100
    return kernel


def aligned(array, vector_bytes: int = 16) -> bool:
    """Whether ``array`` (CuPy, or NumPy for the CPU tests) is C-contiguous at an address in whole ``vector_bytes``:
    what the tensor-core kernels' 16-byte copies take."""
    pointer = array.data.ptr if hasattr(array.data, "ptr") else array.ctypes.data
    return array.flags.c_contiguous and pointer % vector_bytes == 0


def update_fits(codes, x, error, raw, velocity, operand, inverse_norms, row_dots, field: int, blocks_w: int,
                operands: str = "uint16", split_master: bool = False) -> bool:
    """Whether the kernel takes these: bfloat16 (``uint16``; ``operands``: ``float32`` for the split-TF32 kernel)
    codes ``(count, rows, width)`` and maps ``(H, W, C, half)``
    with ``width`` ``2 half`` (with the error map) or ``half`` and ``half`` in whole 32s; float32 ``raw`` and
    ``velocity`` ``(count, rows, fan_in)`` with ``fan_in = field^2 C`` a multiple of 4; ``operand`` (or ``None``)
    ``uint16`` like ``raw``; ``inverse_norms`` and ``row_dots`` float32, a value a row; everything C-contiguous,
    16-byte aligned.  With ``split_master``, ``raw`` is the weights' low halves (``uint16``) and ``operand`` (not
    ``None``) their high halves."""
    if split_master and operand is None:
        return False
    if codes.ndim != 3 or x.ndim != 4 or raw.ndim != 3:
        return False
    count, rows, width = codes.shape
    height, map_width, channels, half = x.shape
    fan_in = field * field * channels
    if half % TILE_K or width != half * (2 if error is not None else 1) or fan_in % 4:
        return False
    if raw.shape != (count, rows, fan_in) or velocity.shape != raw.shape or count % blocks_w:
        return False
    if any(a.dtype.name != operands or not aligned(a) for a in (codes, x) + ((error,) if error is not None else ())):
        return False
    if error is not None and error.shape != x.shape:
        return False
    if any(a.dtype.name != "float32" or not aligned(a) for a in ((velocity,) if split_master else (raw, velocity))):
        return False
    if split_master and (raw.dtype.name != "uint16" or not aligned(raw)):
        return False
    if operand is not None and (operand.dtype.name != "uint16" or operand.shape != raw.shape or not aligned(operand)):
        return False
    return all(a.dtype.name == "float32" and a.flags.c_contiguous and a.size == count * rows
               for a in (inverse_norms, row_dots))


def maps_fit(x, error, fan_in: int, count: int, blocks_w: int) -> bool:
    """Whether the kernel reads a chunk's fields from these maps: bfloat16 (``uint16``) ``(H, W, C, half)`` maps of one
    shape with ``half`` in whole 32s, C-contiguous and 16-byte aligned, a fan-in in whole 4s and whole rows of blocks
    (what :func:`update_fits` asks of the maps, known before the chunk's codes are made)."""
    return (error is not None and x.shape == error.shape and x.ndim == 4 and x.shape[-1] % TILE_K == 0
            and fan_in % 4 == 0 and count % blocks_w == 0 and count <= 65535
            and all(a.dtype.name == "uint16" and aligned(a) for a in (x, error)))


def filter_weight_grad_update_bfloat16(codes, x, error, raw, velocity, operand, inverse_norms, row_dots, lr: float,
                                       momentum: float, field: int, step: int, blocks_w: int,
                                       variant: str | None = None, split_master: bool = False) -> None:
    """The unit-norm SGD step of ``raw`` in place (``velocity`` too; ``operand``, ``raw``'s bfloat16 copy, rewritten;
    ``inverse_norms`` then the new rows'), with the weight gradient ``codes [fields(x) | fields(error)]^T`` on tensor
    cores, given the rows' ``W . dL/dW`` (``row_dots``): :func:`~dasksae.kernels.normalize.unit_rows_sgd` with
    ``refresh_norms`` and the gradient never written.  With ``split_master`` the weights are their two halves
    (:mod:`dasksae.master_weights`): ``raw`` the low ones, ``operand`` the high ones, both rewritten (where
    :func:`takes_split_master`).  The arrays must :func:`update_fits`."""
    filter_weight_grad_update(codes, x, error, raw, velocity, operand, inverse_norms, row_dots, lr, momentum, field,
                              step, blocks_w, variant, split_master=split_master)


def training_variant(channels: int, width: int) -> str:
    """The epilogue variant the training's bfloat16 update takes for maps of ``channels`` channels and codes of
    ``width`` inner terms (``DASKSAE_MMA_EPILOGUE`` and ``DASKSAE_WGMMA_UPDATE`` as set)."""
    return wgmma_or_rows(resident_or_rows(default_variant(channels, width), width), width)


def takes_split_master(channels: int, width: int) -> bool:
    """Whether the training's variant for these maps and codes (:func:`training_variant`) reads and writes split
    master weights (:data:`SPLIT_MASTER_VARIANTS`)."""
    return training_variant(channels, width) in SPLIT_MASTER_VARIANTS


def filter_weight_grad_update(codes, x, error, raw, velocity, operand, inverse_norms, row_dots, lr: float,
                              momentum: float, field: int, step: int, blocks_w: int, variant: str | None = None,
                              split_tf32: bool = False, terms: int = 3, split_master: bool = False) -> None:
    """:func:`filter_weight_grad_update_bfloat16`, or with ``split_tf32`` its float32 form (float32 codes and maps,
    no ``operand``; by default the :data:`SPLIT_VARIANT` epilogue; ``terms`` TF32 products a k-step)."""
    import cupy

    from .simt_gemm import inverse_norms_from_squares

    if split_tf32:
        variant = variant or SPLIT_VARIANT
    else:
        variant = (wgmma_or_rows(resident_or_rows(variant, codes.shape[2]), codes.shape[2]) if variant
                   else training_variant(x.shape[2], codes.shape[2]))
    grid, block, arguments, shared = _update_launch(variant, codes.shape, x.shape, field, step, blocks_w, split_tf32)
    column_tiles = -(-field * field * x.shape[2] // tile_columns(variant))  # (not raw's: it may be in tile order)
    partial_squares = cupy.empty((codes.shape[0] * codes.shape[1], column_tiles * warps_across(variant)),
                                 dtype=cupy.float32)
    null = numpy.uint64(0)  # a null pointer argument
    _kernel(variant, split_tf32, terms, split_master)(grid, block, (
        codes, x, null if error is None else error, raw, velocity, null if operand is None else operand, inverse_norms,
        row_dots, partial_squares, numpy.float32(lr), numpy.float32(momentum), *arguments), shared_mem=shared)
    inverse_norms_from_squares(partial_squares, inverse_norms)


@functools.lru_cache(maxsize=256)
def _update_launch(variant: str, codes_shape, x_shape, field: int, step: int, blocks_w: int, split_tf32: bool = False):
    """``(grid, block, scalar arguments, shared memory)`` of ``variant``'s launch, made once for these shapes: the
    float32 weight gradient's grid and arguments (a 128 x 96 tile, the maps' geometry), the rows along the grid's x
    in the variant's blocks (twice as many blocks of 64 rows), two threads a row (three in blocks of 144 columns,
    fewer of them along y); a resident variant's column tiles in groups of its ``COLUMN_TILES`` along y, and its
    shared memory for these codes' width."""
    from .simt_gemm import typed_launch, weight_grad_launch

    grid, arguments = typed_launch(weight_grad_launch, 2, codes_shape, x_shape, field, step, blocks_w)
    rows_a_block = tile_rows(variant)
    shared = (resident_bytes(codes_shape[2], variant) if EPILOGUE_VARIANTS[variant].get("COLUMN_TILES")
              else shared_bytes(variant, split_tf32))
    column_tiles = -(-field * field * x_shape[2] // tile_columns(variant))
    return ((-(-codes_shape[1] // rows_a_block), -(-column_tiles // column_tiles_a_block(variant)), grid[2]),
            (block_threads(variant),), arguments, shared)


def _tiles(rows: int, fan_in: int, variant: str) -> tuple[int, int, int, int]:
    """``(row tiles, tile rows, column tiles, tile columns)`` of ``variant``'s blocks over ``rows x fan_in``."""
    tile_m, tile_n = tile_rows(variant), tile_columns(variant)
    return -(-rows // tile_m), tile_m, -(-fan_in // tile_n), tile_n


def tile_order(array, variant: str):
    """``(count, rows, fan_in)`` weights or momentum in the tile order of ``variant`` (its ``TILE_ORDER``: each block's
    tile of its rows and columns contiguous, ``(count, row tiles, column tiles, tile rows, tile columns)``, the last
    tiles padded with zeros), as an array ``(count, row tiles x column tiles, tile rows x tile columns)``."""
    from .backend import array_module

    xp = array_module(array)
    count, rows, fan_in = array.shape
    row_tiles, tile_m, column_tiles, tile_n = shape = _tiles(rows, fan_in, variant)
    padded = xp.zeros((count, row_tiles * tile_m, column_tiles * tile_n), dtype=array.dtype)
    padded[:, :rows, :fan_in] = array
    tiles = padded.reshape(count, *shape).transpose(0, 1, 3, 2, 4)
    return xp.ascontiguousarray(tiles).reshape(count, row_tiles * column_tiles, tile_m * tile_n)


def row_order(tiled, rows: int, fan_in: int, variant: str):
    """What :func:`tile_order` made of ``(count, rows, fan_in)`` values, in rows again."""
    from .backend import array_module

    row_tiles, tile_m, column_tiles, tile_n = _tiles(rows, fan_in, variant)
    count = tiled.shape[0]
    tiles = tiled.reshape(count, row_tiles, column_tiles, tile_m, tile_n).transpose(0, 1, 3, 2, 4)
    in_rows = tiles.reshape(count, row_tiles * tile_m, column_tiles * tile_n)[:, :rows, :fan_in]
    return array_module(tiled).ascontiguousarray(in_rows)


def block_threads(variant: str) -> int:
    """The threads of a block of ``variant``: two a row of its tile (three in blocks of 144 columns), twice as many
    with specialized warps (``rows-overlap``: producers and consumers)."""
    specialized = 2 if EPILOGUE_VARIANTS[variant].get("SPECIALIZED") else 1
    return warps_across(variant) * tile_rows(variant) * specialized
