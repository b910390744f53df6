"""Float32 products on tensor cores, as accurate as float32 FMAs: each operand split into two TF32 terms (``3xTF32``),
in the three tensor-core kernels of the bfloat16 path (``W x`` and ``U g_r`` from the maps, ``W^T y`` with the fold,
the weight gradient with the update in its epilogue), their sources compiled with ``SPLIT_TF32`` (CuPy).

Why: a float32 step is bound by the card's float32 FMA rate (about 51 TFLOP/s on
the H100; our SIMT kernel, :mod:`.simt_gemm`, runs ``W x`` at 40-42), so no
float32 implementation of the network can run 5x faster than a ``torch.compile``
peer at 21% of that rate.  Tensor cores take float32 operands only as TF32 (10
bits of mantissa), too coarse for the float32 the issue asks for.  Split
instead: ``a = a_big + a_small`` with ``a_big = tf32(a)`` and ``a_small =
tf32(a - a_big)`` (22 bits of ``a``'s 24), and take ``a b`` as ``a_small b_big
+ a_big b_small + a_big b_big`` on TF32 tensor cores with float32 sums (the
smallest term, ``a_small b_small``, is below float32's rounding and left out;
the small products first so that they are not lost against the big one).  That
is CUTLASS's "3xTF32" fast accurate float32 GEMM: three TF32 products cost
less than one float32 FMA product on Ampere and Hopper (the H100's TF32 rate is
about 7.5x its float32 rate).  ``tests/test_mma_float32_on_cpu.py`` checks that
its error against float64 is that of a float32 product, and that one term
(plain TF32) is not.

``W x`` is :mod:`.mma_forward`'s source with ``SPLIT_TF32`` (the same grid,
arguments and output layout as ``dasksae_simt_filter_forward``, 8 warps of 32 x
48 outputs over a 128 x 96 tile, ``STAGES`` buffers of shared memory filled by
``cp.async``): float32 tiles and ``mma.sync.m16n8k8`` in TF32, a k-step of 8,
A's fragments ``(g, t)``, ``(g + 8, t)``, ``(g, t + 4)``, ``(g + 8, t + 4)`` and
B's ``(t, g)``, ``(t + 4, g)`` loaded as single floats (the shared rows padded
so that a warp's loads fall in 32 distinct banks) and split in registers
(:data:`.mma_update.SPLIT_TF32_HELPERS`).

``DASKSAE_FLOAT32_TENSOR_CORES=1`` (the default since session 41) takes float32 ``W x``, the
backward's ``U g_r``, ``W^T y`` with the fold (:mod:`.mma_transpose`'s source;
at cells of :data:`TRANSPOSE_CELL_VALUES`) and the weight gradient with the
update in its epilogue (:mod:`.mma_update`'s, the rows epilogues) here where the
arrays fit; ``0`` keeps :mod:`.simt_gemm`'s kernels.  Measured in
session 38 (H100, ``bench/results/session38/float32/``), the counting above did
not hold: the split products ran at 41-45 TFLOP/s of float32 work, the SIMT
kernels' rate (bound by issuing the splits and three ``mma.sync`` a k-step), the
step 2-3% faster; and the tensor cores' truncating sums made the error 8-14x the
SIMT kernels' until a k-step's products were summed from zero (session 39,
``bench/results/session39/accuracy/``: the accuracy tests pass, and the split
kernels run at the SIMT kernels' speed).  ``DASKSAE_TF32_TENSOR_CORES=1`` (the
default since session 39) takes ``--dtype tf32``'s products to the same kernels
with one term (:func:`terms_for`), whose k-step session 40 cut from 13.3-13.8
instructions an ``mma`` to 4.1-5.1: each product summed into the running sums,
operands rounded by one integer add, a tile's k-steps unrolled, and the
update's fragments loaded in pairs (on the H100 the tf32 step went from 36.5
to 31.1 ms, ``bench/results/session40/first/``).  After that call the split's
operands are split by integer adds and a mask (``cvt.rna``'s values) and its
update's fragments loaded in pairs too: 8.0-8.4 instructions an ``mma`` to
5.8-6.8.  Measured in session 41 (H100, ``bench/results/session41/split/``): over
every stage ``W x`` 6.71 ms against the SIMT kernel's 7.08, ``W^T y`` at cells of
128 values 3.40 and 2.65 ms against 3.91 and 2.96, the update 16.07 against
18.19, the in-process float32 step 50.2 ms against 53.9; its GPU tests passed.  Their sources also run on the CPU
under g++ (the shim of ``tests/test_mma_float32_on_cpu.py`` emulates
``mma.sync.m16n8k8`` from the PTX ISA), checked
against NumPy in float64.
"""

from __future__ import annotations

import functools

import numpy

from ..switches import switch
from . import mma_forward, mma_transpose, mma_update
from .simt_gemm import THREADS, typed_launch

# float32 W x, U g_r, W^T y and the update on TF32 tensor cores with split operands (this module) where the arrays fit:
# "1" (the default since session 41: on the H100 the in-process float32 step took 50.2 ms against the SIMT kernels'
# 53.9, and every stage's product and update was faster but stage 1's W^T y, which keeps SIMT,
# bench/results/session41/split/), or "0" (the SIMT kernels)
FLOAT32_TENSOR_CORES = switch("DASKSAE_FLOAT32_TENSOR_CORES")
# tf32 W x, U g_r, W^T y and the update (--dtype tf32) on these kernels with one TF32 product a k-step (the operands
# rounded to TF32, as cuBLAS's TF32 GEMM takes them) where the arrays fit: "1" (the default since session 39: on the
# H100 the 1-worker tf32 step took 36.7 ms against 48.4, bench/results/session39/tf32/; 31.2 ms since session 40's
# shorter k-step, session40/ratio/), or "0" (cuBLAS's TF32 GEMM over gathered fields, the update apart)
TF32_TENSOR_CORES = switch("DASKSAE_TF32_TENSOR_CORES")
# "auto" (the default since session 48): the float32 update's products (three TF32 terms) on wgmma where the GPU runs
# it (mma_update's rows-wide-wgmma with split_tf32: each k-tile split into its TF32 terms as it is staged, both terms
# of both operands read by descriptor), tf32's (one term) on mma.sync; "1": both on wgmma; "0": both on mma.sync
# (rows-wide, each value split in registers at every use).  On an H200 (session 48, coates200, M=96,
# bench/results/session48/first/) the float32 update took the three stages in 11.68 ms against mma.sync's 15.81 and
# the in-process float32 step 44.4 ms against 48.9; the tf32 update 10.00 ms against 9.71
WGMMA_UPDATE = switch("DASKSAE_FLOAT32_WGMMA_UPDATE")
# "auto" (the default since session 49): float32's W x and U g_r (three terms) on wgmma where the GPU runs it
# (mma_forward's WGMMA_FORWARD_VARIANT: k-tiles split into their TF32 terms, and the fields transposed to K-major, as
# they are staged), tf32's (one term) on mma.sync's split (VARIANT); "1": both on wgmma; a variant of
# mma_forward.SPLIT_WGMMA_VARIANTS by name: both on it; "0": both on mma.sync.  On the H100 (session 49, coates200,
# M=96, bench/results/session49/) float32 W x over the stages took 5.27 ms in w32-split-2 against w32-split's 5.73 and
# mma.sync's 6.59, tf32's 3.83 against mma.sync's 3.03; the in-process float32 step 43.7 ms against 44.4 and 46.8.
# Since session 53, w32-a-registers-hoisted (A, the weights, in wgmma's register fragments, the fetch's addresses
# kept): on the H100 (bench/results/session53/next/) float32 W x over the stages took 3.74 ms against w32-split-2's
# 5.29, and with the transpose's the in-process float32 step 35.1 ms against 42.5
WGMMA_FORWARD = switch("DASKSAE_FLOAT32_WGMMA_FORWARD")
WGMMA_FORWARD_VARIANT = "w32-a-registers-hoisted"
# "auto" (the default since session 49): float32's W^T y with the fold (three terms) on wgmma where the GPU runs it
# (mma_transpose's w32-split-2: both operands split and transposed to K-major as they are staged, two stages) at cells
# of TRANSPOSE_CELL_VALUES, tf32's on mma.sync's split (VARIANT); "1": both; "all": both, and at smaller cells too (the
# first stage's 48 values, which otherwise keep the SIMT product and fold); "0": both on mma.sync.  On the H100
# (session 49) float32 W^T y took stages 2 and 3 in 3.27 and 2.54 ms against mma.sync's 3.52 and 2.79 (stage 1: 2.99
# against the SIMT product and fold's 1.94), tf32's 2.52 and 1.97 against 1.74 and 1.39; the in-process float32 step
# 42.8 ms against 43.7 (and 43.8 with "all"); or a variant of mma_transpose.SPLIT_WGMMA_VARIANTS by name: both on it.
# Since session 53, w32-a-registers-hoisted: on the H100 (bench/results/session53/next/) float32 W^T y over the
# stages took 5.56 ms against w32-split-2's 9.07
WGMMA_TRANSPOSE = switch("DASKSAE_FLOAT32_WGMMA_TRANSPOSE")
WGMMA_TRANSPOSE_VARIANT = "w32-a-registers-hoisted"
VARIANT = "k32x3"  # of mma_forward.SPLIT_VARIANTS (k32x3: 93 KiB of shared memory a block, two an SM)


def mma_float32_source(variant: str = VARIANT, terms: int = 3) -> str:
    """The forward's CUDA source (:func:`.mma_forward.mma_forward_source`) for float32 operands split into TF32
    terms: a variant of :data:`.mma_forward.SPLIT_VARIANTS`, ``terms`` TF32 products a k-step (3: float32's
    accuracy; 1: plain TF32, for the tests' check that the split is what gives it)."""
    return mma_forward.mma_forward_source(variant, split_tf32=True, terms=terms)


@functools.lru_cache(maxsize=None)
def _kernel(variant: str, terms: int = 3):
    import cupy

    from . import wgmma

    if variant in mma_forward.SPLIT_WGMMA_VARIANTS:  # NVRTC for compute_90a
        kernel = wgmma.compiled_module(mma_float32_source(variant, terms), "mma_float32").get_function(
            "dasksae_wgmma_tf32x3_filter_forward")
    else:
        kernel = cupy.RawKernel(mma_float32_source(variant, terms), "dasksae_tf32x3_filter_forward",
                                options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = mma_forward.shared_bytes(variant, split_tf32=True)
    return kernel


def forward_fits(x, weights, out, row_scale, field: int, step: int, block_h: int, block_w: int) -> bool:
    """Whether :func:`filter_forward_float32` takes this product: :func:`.mma_forward.forward_fits` with float32
    operands (the map's minibatch and the fan-in in whole 4s)."""
    return mma_forward.forward_fits(x, weights, out, row_scale, field, step, block_h, block_w, "float32")


def filter_forward_float32(x, weights, out, field: int, step: int, block_h: int, block_w: int, row_scale=None,
                           variant: str | None = None, terms: int = 3) -> None:
    """``out = diag(row_scale) W x`` for one chunk of block rows on TF32 tensor cores with split operands (``terms``
    1: plain TF32), the fields read from ``x``'s map and the outputs written into ``out``'s (the arrays must
    :func:`forward_fits`); on ``wgmma`` where ``DASKSAE_FLOAT32_WGMMA_FORWARD`` asks and the GPU runs it
    (:func:`forward_variant`)."""
    variant = variant or forward_variant(terms)
    grid, arguments = typed_launch(mma_forward.launch, 4, x.shape, out.shape, weights.shape, field, step, block_h,
                                   block_w)
    scale = numpy.uint64(0) if row_scale is None else row_scale
    _kernel(variant, terms)(grid, (THREADS,), (weights, x, out, *arguments, scale),
                     shared_mem=mma_forward.shared_bytes(variant, split_tf32=True))


def forward_variant(terms: int = 3) -> str:
    """The variant :func:`filter_forward_float32` takes with ``terms`` TF32 products a k-step: on a GPU that runs
    ``wgmma``, the one ``DASKSAE_FLOAT32_WGMMA_FORWARD`` names (``auto``: :data:`WGMMA_FORWARD_VARIANT` for three
    terms; ``1``: it for both), else :data:`VARIANT`."""
    return _variant_for(WGMMA_FORWARD, WGMMA_FORWARD_VARIANT, terms)


def _variant_for(setting: str, wgmma_variant: str, terms: int) -> str:
    """A ``DASKSAE_FLOAT32_WGMMA_*`` switch's variant for ``terms``: :data:`VARIANT` (``mma.sync``) where it is ``0``,
    or ``auto`` and not three terms, or the GPU does not run ``wgmma``; else ``wgmma_variant`` (``auto``, ``1``,
    ``all``) or the variant it names."""
    from . import wgmma

    if setting == "0" or setting == "auto" and terms != 3 or not wgmma.supported():
        return VARIANT
    return wgmma_variant if setting in ("auto", "1", "all") else setting


def fields_product_float32(x, weight_rows, out, field: int, step: int, blocks_w: int, terms: int = 3) -> bool:
    """:func:`.mma_forward.fields_product` (the backward's ``U g_r`` into block rows) from the float32 map ``x`` by
    :func:`filter_forward_float32` with ``terms``; ``False`` (nothing done) where the arrays do not fit."""
    return mma_forward.fields_product(x, weight_rows, out, field, step, blocks_w, forward_fits,
                                      functools.partial(filter_forward_float32, terms=terms))


def terms_for(xp, precision: str) -> int:
    """TF32 products a k-step that ``precision``'s ``W x``, ``U g_r``, ``W^T y`` and update take in these kernels (where
    the arrays fit: :func:`forward_fits`, :func:`transpose_fits`, :func:`update_fits`) on CuPy: 3 (the split) for
    float32 with ``DASKSAE_FLOAT32_TENSOR_CORES=1``, 1 (plain TF32) for tf32 with ``DASKSAE_TF32_TENSOR_CORES=1``, 0
    (none: the SIMT kernels, or cuBLAS) otherwise."""
    if xp.__name__ != "cupy":
        return 0
    if precision == "float32" and FLOAT32_TENSOR_CORES == "1":
        return 3
    return 1 if precision == "tf32" and TF32_TENSOR_CORES == "1" else 0


def on_tensor_cores(xp, precision: str) -> bool:
    """Whether ``precision``'s ``W x``, ``U g_r`` and ``W^T y`` go to these kernels where the arrays fit
    (:func:`terms_for`)."""
    return terms_for(xp, precision) > 0


# the fewest values in a cell of the map (step^2 C; at most 128, a block's tile) for which float32 W^T y takes the split
# kernel (transpose_on_tensor_cores); the tests lower it to take small's cells of 12 and 32
TRANSPOSE_CELL_VALUES = 128


def transpose_on_tensor_cores(xp, precision: str, channels: int, step: int) -> bool:
    """Whether float32 ``W^T y`` of a layer with these channels and step goes to :func:`add_transpose_float32` (where
    the arrays fit): with the switch on, where a cell of the map holds ``step^2 C`` values, at least
    :data:`TRANSPOSE_CELL_VALUES` (a block's whole tile).  On the H100 (session 38,
    ``bench/results/session38/float32/``) the split transpose took coates200's stage 1 (3 channels at step 4: cells
    of 48) in 3.91 ms against the SIMT product and fold's 1.95, and stages 2 and 3 (cells of 128) in 3.36 and 2.65 ms
    against 3.86 and 2.99.  ``DASKSAE_FLOAT32_WGMMA_TRANSPOSE=all`` takes every cell (the first stage's of 48 too) to
    the ``wgmma`` kernel, where it runs."""
    if not on_tensor_cores(xp, precision):
        return False
    from . import wgmma

    return step * step * channels >= TRANSPOSE_CELL_VALUES or WGMMA_TRANSPOSE == "all" and wgmma.supported()


def mma_float32_transpose_source(variant: str = VARIANT, terms: int = 3) -> str:
    """The transpose's CUDA source (:func:`.mma_transpose.mma_transpose_source`) for float32 operands split into TF32
    terms, in a variant of :data:`.mma_transpose.SPLIT_VARIANTS`."""
    return mma_transpose.mma_transpose_source(variant, split_tf32=True, terms=terms)


@functools.lru_cache(maxsize=None)
def _transpose_kernel(variant: str, terms: int = 3):
    import cupy

    from . import wgmma

    if variant in mma_transpose.SPLIT_WGMMA_VARIANTS:  # NVRTC for compute_90a
        kernel = wgmma.compiled_module(mma_float32_transpose_source(variant, terms), "mma_float32_transpose") \
            .get_function("dasksae_wgmma_tf32x3_filter_transpose_fold")
    else:
        kernel = cupy.RawKernel(mma_float32_transpose_source(variant, terms), "dasksae_tf32x3_filter_transpose_fold",
                                options=("-std=c++17",))
    kernel.max_dynamic_shared_size_bytes = mma_transpose.shared_bytes(variant, split_tf32=True)
    return kernel


def transpose_fits(out, weight_rows, y_rows, field: int, step: int, blocks_h: int, blocks_w: int) -> bool:
    """Whether :func:`add_transpose_float32` takes this product: :func:`.mma_transpose.transpose_fits` with float32
    ``weight_rows`` and ``y_rows``."""
    return mma_transpose.transpose_fits(out, weight_rows, y_rows, field, step, blocks_h, blocks_w, "float32")


def add_transpose_float32(out, weight_rows, y_rows, field: int, step: int, blocks_h: int, blocks_w: int,
                          variant: str | None = None, terms: int = 3, accumulate: bool = True) -> None:
    """``out +=`` the fold of ``W^T y`` on TF32 tensor cores with split operands (``terms`` 1: plain TF32), each
    cell of the map summed over the blocks that cover it and added in once (:mod:`.mma_transpose`'s kernel; the
    arrays must :func:`transpose_fits`); on ``wgmma`` where ``DASKSAE_FLOAT32_WGMMA_TRANSPOSE`` asks and the GPU runs
    it (:func:`transpose_variant`).  ``accumulate`` False: ``out =`` the fold (``out``'s values are not read)."""
    variant = variant or transpose_variant(terms)
    grid, arguments = mma_transpose.typed_launch(out.shape, weight_rows.shape, field, step, blocks_h, blocks_w, None,
                                                 accumulate)
    _transpose_kernel(variant, terms)(grid, (THREADS,), (weight_rows, y_rows, out, *arguments),
                               shared_mem=mma_transpose.shared_bytes(variant, split_tf32=True))


def transpose_variant(terms: int = 3) -> str:
    """The variant :func:`add_transpose_float32` takes with ``terms`` TF32 products a k-step: on a GPU that runs
    ``wgmma``, the one ``DASKSAE_FLOAT32_WGMMA_TRANSPOSE`` names (``auto``: :data:`WGMMA_TRANSPOSE_VARIANT` for three
    terms; ``1`` and ``all``: it for both), else :data:`VARIANT`."""
    return _variant_for(WGMMA_TRANSPOSE, WGMMA_TRANSPOSE_VARIANT, terms)


def mma_float32_update_source(variant: str = "rows", terms: int = 3) -> str:
    """The update's CUDA source (:func:`.mma_update.mma_update_source`) for float32 codes and maps split into TF32
    terms, in one of :data:`.mma_update.SPLIT_VARIANTS`."""
    return mma_update.mma_update_source(variant, split_tf32=True, terms=terms)


def update_fits(codes, x, error, raw, velocity, inverse_norms, row_dots, field: int, blocks_w: int) -> bool:
    """Whether :func:`filter_weight_grad_update_float32` takes these: :func:`.mma_update.update_fits` with float32
    codes and maps and no bfloat16 copy."""
    return mma_update.update_fits(codes, x, error, raw, velocity, None, inverse_norms, row_dots, field, blocks_w,
                                  "float32")


def filter_weight_grad_update_float32(codes, x, error, raw, velocity, inverse_norms, row_dots, lr: float,
                                      momentum: float, field: int, step: int, blocks_w: int, terms: int = 3) -> None:
    """The unit-norm SGD step of ``raw`` in place (``velocity`` too; ``inverse_norms`` then the new rows') with the
    weight gradient ``codes [fields(x) | fields(error)]^T`` on split TF32 tensor cores (``terms`` 1: plain TF32),
    never written (:func:`.mma_update.filter_weight_grad_update` with ``split_tf32``; the arrays must
    :func:`update_fits`)."""
    mma_update.filter_weight_grad_update(codes, x, error, raw, velocity, None, inverse_norms, row_dots, lr, momentum,
                                         field, step, blocks_w, update_variant(terms), split_tf32=True, terms=terms)


def update_variant(terms: int = 3) -> str:
    """The epilogue variant of :func:`filter_weight_grad_update_float32` with ``terms`` TF32 products a k-step:
    ``rows-wide-wgmma`` on a GPU that runs ``wgmma`` where ``DASKSAE_FLOAT32_WGMMA_UPDATE`` asks (``auto``: three
    terms, float32), else :data:`.mma_update.SPLIT_VARIANT`."""
    from . import wgmma

    on_wgmma = WGMMA_UPDATE == "1" or WGMMA_UPDATE == "auto" and terms == 3
    return "rows-wide-wgmma" if on_wgmma and wgmma.supported() else mma_update.SPLIT_VARIANT
