"""Local filtering with untied weights, computed over filter blocks.

Layout (as Coates et al. 2013): activations are ``(H, W, C, M)`` with the
minibatch ``M`` as the fastest axis, so that a receptive field ``f x f x C``
of every example is one ``(f*f*C, M)`` matrix.

Neurons form a grid ``(Ho, Wo, K)``.  A *filter block* is ``bh x bw`` spatial
positions of the output grid; all its ``bh*bw*K`` neurons see the same
``f x f x C`` field, placed at input position ``(p*step, q*step)`` for block
``(p, q)``.  (Blocks of depth ``bd < K`` at one spatial position share that
field too, so they are one GEMM here.)  One block is one dense GEMM::

    Y_b (bh*bw*K, M) = W_b (bh*bw*K, f*f*C) @ X_b (f*f*C, M)

and all blocks run as one batched GEMM.  Weights are ``(nbh, nbw, R, F)`` with
``R = bh*bw*K`` ordered ``(bh, bw, K)`` and ``F = f*f*C`` ordered ``(f, f, C)``.

The three products: :func:`local_filter_forward` (``W x``),
:func:`local_filter_transpose` (``W^T y`` with overlap-add of the fields) and
:func:`local_filter_weight_grad` (``delta x^T``).  Each runs over chunks of
block rows (``chunk_bytes``) and calls :func:`~.gemm.batched_matmul` in a
chosen precision, reading transposed operands in place.

Unit-norm filters ``W = diag(s) U`` (``s = 1/||U_r||`` per row) are never
formed: ``W x = s * (U x)`` scales the product's rows and ``W^T y = U^T (s*y)``
the operand's rows, in the same pass that lays them out for the GEMM
(``row_scale``).  No Dask in here.
"""

from __future__ import annotations

import numpy

from . import mma_float32, mma_forward, mma_transpose, mma_update, simt_gemm
from .backend import array_module, as_strided
from .elementwise import difference_and_squares
from ..switches import switch
from .gemm import batched_matmul, native_precision, operand, result_dtype, storage_dtype

#: Largest transient of one chunk of block rows (patches, block outputs,
#: weight gradients): the products run over as many block rows at a time as
#: fit, so a step's peak memory does not grow with the network's width.
CHUNK_BYTES = 2**30
# "1": a W x or W^T y whose kernel writes no transients (it reads the fields from the map: the float32 SIMT W x, the
# tensor-core W x and W^T y with the fold) runs as one launch over the whole layer instead of chunks of block rows sized
# for patches that it does not write (coates200's stage 2 W x: 2 launches, its W^T y 3, the last of one block row);
# "0" (the default until a device run measures it): chunks as before
WHOLE_PRODUCTS = switch("DASKSAE_WHOLE_PRODUCTS") == "1"
# "1" (the default since session 56, new in session 55: on an H100, coates200, M=96, the pipelined 1-worker bfloat16
# step 20.3 ms, 51.7% of the limit, and the in-process one 20.8-20.9 ms against 22.0 with "0",
# bench/results/session56/): a map that one fold writes whole (W^T y's, the input gradient's, the LCN
# backward's window where tiles share it) comes from empty, with no zeroing pass first (fields_cover), and a
# W^T y whose kernel folds in the product runs as one launch (as with WHOLE_PRODUCTS), so that it writes its map
# whole; where one tile owns the whole LCN window, no window is made: the LCN backward's first pass takes
# g - 2/M e as it reads (tile_ops.contrast_backward); where one tile's input window is the map it owns, the filter's
# task makes the reconstruction error, the bfloat16 fold writing W^T y - x and its squares' sums (layers.error_in_filter,
# session 56); "0": zeroed maps and windows, W^T y in chunks unless WHOLE_PRODUCTS, the error a task of its own
WRITE_ONCE = switch("DASKSAE_WRITE_ONCE") == "1"


def block_counts(input_size: int, field: int, step: int) -> int:
    """How many field positions of size ``field`` and ``step`` fit in ``input_size``.

    >>> block_counts(200, 20, 4)
    46
    >>> block_counts(21, 20, 4)
    1
    """
    if input_size < field:
        return 0
    return (input_size - field) // step + 1


def gather_patches(x, field: int, step: int, blocks_h: int, blocks_w: int, out=None):
    """Receptive fields of ``x (H, W, C, M)`` as one ``(nbh*nbw, f*f*C, M)`` array (new and contiguous, or ``out``).

    One strided gather straight into the batched GEMM's layout: the batch stays
    the fastest axis, so each field row is a contiguous run of ``C*M`` values.
    ``out`` may be a view with strided rows (e.g. half of a wider buffer).
    """
    xp = array_module(x)
    height, width, channels, batch = x.shape
    if (blocks_h - 1) * step + field > height or (blocks_w - 1) * step + field > width:
        raise ValueError(
            f"input {height}x{width} is too small for {blocks_h}x{blocks_w} fields of size {field} at step {step}"
        )
    if xp.__name__ == "cupy":  # one kernel with cheap index arithmetic (:mod:`.cuda_kernels`)
        from . import cuda_kernels

        gathered = cuda_kernels.gather_patches(x, field, step, blocks_h, blocks_w, out)
        if gathered is not None:
            return gathered
    x = xp.ascontiguousarray(x)
    s_h, s_w, s_c, s_m = x.strides
    view = as_strided(
        x,
        shape=(blocks_h, blocks_w, field, field, channels, batch),
        strides=(step * s_h, step * s_w, s_h, s_w, s_c, s_m),
    )
    if out is None:
        return xp.ascontiguousarray(view).reshape(blocks_h * blocks_w, field * field * channels, batch)
    out.reshape(blocks_h, blocks_w, field, field, channels, batch)[...] = view
    return out


def fold_patches(patches, input_shape, field: int, step: int, blocks_h: int, blocks_w: int):
    """Overlap-add ``patches (nbh*nbw, f*f*C, M)`` back into a new ``(H, W, C, M)`` map.

    The adjoint of :func:`gather_patches` (see :func:`fold_patches_into`).
    """
    xp = array_module(patches)
    out = xp.zeros(tuple(input_shape), dtype=patches.dtype)
    fold_patches_into(out, patches, field, step, blocks_h, blocks_w)
    return out


def fold_patches_into(out, patches, field: int, step: int, blocks_h: int, blocks_w: int):
    """Add ``patches (nbh*nbw, f*f*C, M)`` into ``out (H, W, C, M)``, block ``(p, q)`` at ``(p*step, q*step)``.

    Field offsets are grouped in ``ceil(f/step)^2`` groups of ``step x step``;
    within a group no two blocks touch the same input pixel, so each group is
    one strided add.  On CuPy one kernel does it all (:mod:`.cuda_kernels`).
    """
    if array_module(out).__name__ == "cupy":
        from . import cuda_kernels

        if cuda_kernels.fold_patches_into(out, patches, field, step, blocks_h, blocks_w):
            return
    channels, batch = out.shape[2:]
    blocks = patches.reshape(blocks_h, blocks_w, field, field, channels, batch)
    s_h, s_w, s_c, s_m = out.strides
    groups = -(-field // step)
    for u in range(groups):
        rows = min(step, field - u * step)
        for v in range(groups):
            cols = min(step, field - v * step)
            target = as_strided(
                out[u * step :, v * step :],
                shape=(blocks_h, rows, blocks_w, cols, channels, batch),
                strides=(step * s_h, s_h, step * s_w, s_w, s_c, s_m),
            )
            source = blocks[:, :, u * step : u * step + rows, v * step : v * step + cols]
            target += source.transpose(0, 2, 1, 3, 4, 5)


def block_view(output_map, block_h: int, block_w: int):
    """``(nbh*bh, nbw*bw, K, M)`` map viewed as ``(nbh, nbw, bh, bw, K, M)`` (strided, no copy)."""
    height, width, maps, batch = output_map.shape
    blocks_h, blocks_w = height // block_h, width // block_w
    return output_map.reshape(blocks_h, block_h, blocks_w, block_w, maps, batch).transpose(0, 2, 1, 3, 4, 5)


class MapBlocks:
    """The filter blocks of ``output_map (nbh*bh, nbw*bw, K, M)`` as rows ``(nbh*nbw, bh*bw*K, M)``, not yet made:
    a kernel that reads them straight from the map takes ``output_map`` and the block shape; anything else takes
    :meth:`rows` (:func:`block_rows`, a new array)."""

    def __init__(self, output_map, block_h: int, block_w: int):
        self.map, self.block_h, self.block_w = output_map, block_h, block_w
        height, width, maps, batch = output_map.shape
        self.blocks_w = width // block_w
        self.shape = ((height // block_h) * self.blocks_w, block_h * block_w * maps, batch)

    def rows(self):
        return block_rows(self.map, self.block_h, self.block_w)


def block_rows(output_map, block_h: int, block_w: int, row_scale=None, precision: str | None = None):
    """The blocks of ``output_map (nbh*bh, nbw*bw, K, M)`` as rows ``(nbh*nbw, bh*bw*K, M)``, a new array.

    Each row times its ``row_scale (nbh, nbw, bh*bw*K)`` (optional), stored as
    the GEMM operand of ``precision`` (default: the map's own type): one pass
    (on CuPy one kernel, 4 values a thread).
    """
    xp = array_module(output_map)
    precision = precision or native_precision(output_map)
    if xp.__name__ == "cupy":
        from . import cuda_kernels

        rows = cuda_kernels.block_rows(output_map, block_h, block_w, row_scale=row_scale, rows_dtype=storage_dtype(precision))
        if rows is not None:
            return rows
    blocks = block_view(output_map, block_h, block_w)
    count, batch = blocks.shape[0] * blocks.shape[1], output_map.shape[-1]
    if row_scale is None:
        return operand(xp.array(blocks, dtype=result_dtype(precision)), precision).reshape(count, -1, batch)
    return operand(blocks, precision, _row_scale_view(row_scale, block_h, block_w)).reshape(count, -1, batch)


def write_block_rows(output_map, rows, block_h: int, block_w: int, row_scale=None):
    """``output_map``'s blocks set to ``rows (nbh*nbw, bh*bw*K, M)``, each times its ``row_scale``: the inverse of :func:`block_rows`."""
    xp = array_module(output_map, rows)
    if xp.__name__ == "cupy":
        from . import cuda_kernels

        if cuda_kernels.block_rows(output_map, block_h, block_w, rows=rows, row_scale=row_scale, to_rows=False) is not None:
            return
    blocks = block_view(output_map, block_h, block_w)
    shaped = rows.reshape(blocks.shape)
    if row_scale is None:
        blocks[...] = shaped
    else:
        xp.multiply(shaped, _row_scale_view(row_scale, block_h, block_w), out=blocks)


def _row_scale_view(row_scale, block_h: int, block_w: int):
    """Per-neuron scales ``(nbh, nbw, bh*bw*K)`` viewed to broadcast against ``(nbh, nbw, bh, bw, K, M)``."""
    blocks_h, blocks_w, rows = row_scale.shape
    return row_scale.reshape(blocks_h, blocks_w, block_h, block_w, rows // (block_h * block_w), 1)


def chunks(blocks_h: int, bytes_per_block_row: int, chunk_bytes: int | None, blocks_w: int = 1, slots: int = 0):
    """``(p0, p1)`` ranges of block rows whose transients fit ``chunk_bytes`` (one range for ``None``).

    With ``slots`` (the CUDA blocks a GPU runs at once: SMs times blocks an SM), the rows a chunk takes are those,
    up to the most that fit, whose launches of ``blocks_w`` CUDA blocks a block row need the fewest waves in all
    (``ceil(blocks / slots)`` a launch), then the fewest launches: :func:`wave_rows`.
    """
    if chunk_bytes is None:
        return [(0, blocks_h)]
    rows = max(1, min(blocks_h, chunk_bytes // max(1, bytes_per_block_row)))
    if slots:
        rows = wave_rows(blocks_h, rows, blocks_w, slots)
    return [(p, min(p + rows, blocks_h)) for p in range(0, blocks_h, rows)]


def wave_rows(blocks_h: int, most: int, blocks_w: int, slots: int) -> int:
    """The block rows a chunk takes (at most ``most``) for the fewest waves over ``blocks_h`` rows of ``blocks_w``
    blocks, a launch a chunk running ``ceil(blocks / slots)`` waves; among those, the fewest launches.

    >>> wave_rows(41, 17, 41, 264)  # coates200's stage 2 on an H200: 8 waves in chunks of 17 rows, 7 in chunks of 12
    12
    """
    def cost(rows):
        counts = [min(rows, blocks_h - p) * blocks_w for p in range(0, blocks_h, rows)]
        return sum(-(-count // slots) for count in counts), len(counts)

    return min(range(most, 0, -1), key=cost)


def field_rows(p0: int, p1: int, field: int, step: int):
    """The input rows that the fields of block rows ``p0 .. p1`` read."""
    return slice(p0 * step, (p1 - 1) * step + field)


def local_filter_forward(x, weights, field: int, step: int, block_h: int, block_w: int, *, row_scale=None,
                         precision: str | None = None, chunk_bytes: int | None = CHUNK_BYTES):
    """``y = diag(row_scale) W x``: ``x (H, W, C, M)``, ``weights (nbh, nbw, bh*bw*K, f*f*C)`` -> ``(nbh*bh, nbw*bw, K, M)``.

    ``row_scale (nbh, nbw, bh*bw*K)`` (optional) multiplies each neuron's
    output; ``weights`` and ``x`` may already be :func:`~.gemm.operand` s of
    ``precision``.
    """
    xp = array_module(x, weights)
    precision = precision or native_precision(x, weights)
    blocks_h, blocks_w, rows, fan_in = weights.shape
    batch = x.shape[-1]
    out = xp.empty((blocks_h * block_h, blocks_w * block_w, rows // (block_h * block_w), batch), dtype=result_dtype(precision))
    x = operand(x, precision)
    weights = operand(weights, precision)
    per_row = blocks_w * (fan_in * x.itemsize + 2 * rows * out.itemsize) * batch
    if WHOLE_PRODUCTS and _forward_reads_the_map(xp, precision, x, weights.reshape(-1, rows, fan_in), out, row_scale,
                                                  field, step, block_h, block_w):
        chunk_bytes = None  # one launch: the kernel writes no transients
    terms = mma_float32.terms_for(xp, precision)  # float32 (split) or tf32 on TF32 tensor cores, where switched on
    for p0, p1 in chunks(blocks_h, per_row, chunk_bytes):
        x_rows, weight_rows = x[field_rows(p0, p1, field, step)], weights[p0:p1].reshape(-1, rows, fan_in)
        out_rows, scale_rows = out[p0 * block_h : p1 * block_h], None if row_scale is None else row_scale[p0:p1]
        if terms and mma_float32.forward_fits(x_rows, weight_rows, out_rows, scale_rows, field, step, block_h,
                                              block_w):
            mma_float32.filter_forward_float32(x_rows, weight_rows, out_rows, field, step, block_h, block_w, scale_rows,
                                               terms=terms)
            continue
        if _reads_fields(xp, precision, x_rows, weight_rows, out_rows, scale_rows, field, step, block_h, block_w):
            simt_gemm.filter_forward(x_rows, weight_rows, out_rows, field, step, block_h, block_w, scale_rows)
            continue
        if forward_on_tensor_cores(xp, precision, batch) and mma_forward.forward_fits(
                x_rows, weight_rows, out_rows, scale_rows, field, step, block_h, block_w):
            mma_forward.filter_forward_bfloat16(x_rows, weight_rows, out_rows, field, step, block_h, block_w,
                                                scale_rows)
            continue
        patches = gather_patches(x_rows, field, step, p1 - p0, blocks_w)
        products = batched_matmul(weight_rows, patches, precision=precision)
        write_block_rows(out_rows, products, block_h, block_w, scale_rows)
    return out


def _forward_reads_the_map(xp, precision, x, weight_rows, out, row_scale, field, step, block_h, block_w) -> bool:
    """Whether :func:`local_filter_forward` of these (whole) arrays runs in one of the kernels that read the fields
    from the map and write nothing else (split TF32, the float32 SIMT kernel, the bfloat16 tensor-core kernel)."""
    arrays = (x, weight_rows, out, row_scale, field, step, block_h, block_w)
    return ((mma_float32.on_tensor_cores(xp, precision) and mma_float32.forward_fits(*arrays))
            or _reads_fields(xp, precision, *arrays)
            or (forward_on_tensor_cores(xp, precision, x.shape[-1]) and mma_forward.forward_fits(*arrays)))


def _reads_fields(xp, precision, x, weights, out, row_scale, field, step, block_h, block_w) -> bool:
    """Whether ``W x`` runs in our float32 kernel reading the fields from ``x``'s map and writing ``out``'s
    (``DASKSAE_IMPLICIT_FIELDS=1``, the default, with ``DASKSAE_GEMM=simt``): no fields buffer, no products buffer, no
    block-rows pass, and the same results bit for bit."""
    return (xp.__name__ == "cupy" and precision == "float32" and simt_gemm.IMPLICIT_FIELDS and simt_gemm.enabled()
            and simt_gemm.fields_fit(x, weights, out, row_scale, field, step, block_h, block_w))


def forward_on_tensor_cores(xp, precision: str, batch: int) -> bool:
    """Whether bfloat16 ``W x`` (and the backward's ``U g_r``) over a minibatch of ``batch`` run in our tensor-core
    kernel reading the fields from the map (:mod:`.mma_forward`, ``DASKSAE_TENSOR_CORE_FORWARD``, by default at
    minibatches of whole 96s: :func:`.mma_forward.minibatch_on_tensor_cores`) where the arrays fit it: no fields
    buffer, no gather, no block-rows pass."""
    return (xp.__name__ == "cupy" and precision == "bfloat16"
            and mma_forward.minibatch_on_tensor_cores(mma_forward.TENSOR_CORE_FORWARD, batch))


def error_product_on_tensor_cores(xp, precision: str, error_map, weight_rows, field: int, blocks_w: int) -> bool:
    """Whether the backward's ``U g_r`` reads its fields from the bfloat16 error map in :mod:`.mma_forward`'s kernel
    (:func:`forward_on_tensor_cores` and the operands fit; :func:`times_fields` makes the output): then nothing
    gathers ``G``."""
    return (error_map is not None and forward_on_tensor_cores(xp, precision, error_map.shape[-1])
            and weight_rows.shape[0] % blocks_w == 0 and mma_forward.operands_fit(error_map, weight_rows, field))


def backward_reads_maps(xp, precision, x_rows, error_rows, count: int, fan_in: int, blocks_w: int) -> bool:
    """Whether a chunk of the backward pass reads its fields from the maps in our float32 kernel
    (``DASKSAE_IMPLICIT_BACKWARD=1``, the default, with ``DASKSAE_GEMM=simt``): ``U g_r`` by
    :func:`simt_gemm.fields_product` and the weight gradient by :func:`simt_gemm.filter_weight_grad`, with no
    ``[X | G]`` fields buffer and no gathers; in tf32 too where its products go to TF32 tensor cores
    (``DASKSAE_TF32_TENSOR_CORES=1``: ``U g_r`` and the update there, the SIMT kernels where they do not fit).
    The sums are those of the gathered products (``W x``'s kernel for ``U g_r``; the weight gradient's in the order of
    its inner terms, as cuBLAS's, which it replaces, may not be)."""
    return (xp.__name__ == "cupy" and (precision == "float32" or mma_float32.terms_for(xp, precision))
            and simt_gemm.IMPLICIT_BACKWARD and simt_gemm.enabled()
            and simt_gemm.maps_fit(x_rows, error_rows) and fan_in % simt_gemm.TILE_K == 0 and count % blocks_w == 0
            and count <= 65535)


def times_fields(left, x, fields, field: int, step: int, blocks_w: int, precision: str):
    """``left[b] fields_b(x)`` for ``left (blocks, rows, f*f*C)``: from the gathered ``fields``, or (``None``) read
    from the map ``x`` in our kernel (where :func:`backward_reads_maps`; in bfloat16 on tensor cores, where
    :func:`error_product_on_tensor_cores`; in float32 on split TF32 tensor cores where
    ``DASKSAE_FLOAT32_TENSOR_CORES=1``, and in tf32 on TF32 tensor cores where ``DASKSAE_TF32_TENSOR_CORES=1``, where
    the arrays fit)."""
    if fields is not None:
        return batched_matmul(left, fields, precision=precision)
    out = array_module(left).empty(left.shape[:2] + (x.shape[3],), dtype=result_dtype(precision))
    if precision == "bfloat16":
        if not mma_forward.fields_product_bfloat16(x, left, out, field, step, blocks_w):
            raise RuntimeError("the tensor-core fields product was chosen for arrays it does not take (a dasksae bug)")
        return out
    terms = mma_float32.terms_for(array_module(left), precision)
    if terms and mma_float32.fields_product_float32(x, left, out, field, step, blocks_w, terms):
        return out
    simt_gemm.fields_product(x, left, out, field, step, blocks_w)
    return out


def times_fields_transposed(left, maps, fields, field: int, step: int, blocks_w: int, precision: str, out=None):
    """``left[b] [fields_b(maps[0]) | fields_b(maps[1])]^T`` (``maps[1]`` ``None``: ``left[b] fields_b(maps[0])^T``)
    for ``left (blocks, rows, width)``, into ``out`` if given: from the gathered ``fields``, or (``None``) read from
    the maps in our kernel (where :func:`backward_reads_maps`)."""
    if fields is not None:
        return batched_matmul(left, fields, transpose_b=True, precision=precision, out=out)
    if out is None:
        out = array_module(left).empty(left.shape[:2] + (field * field * maps[0].shape[2],), dtype=left.dtype)
    simt_gemm.filter_weight_grad(left, *maps, out, field, step, blocks_w)
    return out


def update_fuses(precision: str, reads_maps: bool) -> bool:
    """Whether the backward pass's update is taken in the weight gradient's kernel (:func:`update_with_weight_grad`)
    for chunks that read their fields from the maps (:func:`backward_reads_maps`: float32, or tf32 on tensor cores)."""
    return reads_maps and precision in ("float32", "tf32") and simt_gemm.FUSED_UPDATE


def update_with_weight_grad(left, maps, field: int, step: int, blocks_w: int, raw_rows, velocity_rows, inverse_norms,
                            row_dots, lr: float, momentum: float, precision: str = "float32") -> bool:
    """Take the unit-norm SGD step of ``raw_rows (blocks, rows, f*f*C)`` in place with the weight gradient
    ``left[b] [fields_b(maps[0]) | fields_b(maps[1])]^T`` computed and used in one kernel, never written
    (:func:`simt_gemm.filter_weight_grad_update`, ``DASKSAE_FUSED_UPDATE=1``, the default; on split TF32 tensor cores
    with ``DASKSAE_FLOAT32_TENSOR_CORES=1``, on plain TF32 ones in ``precision`` tf32 with
    ``DASKSAE_TF32_TENSOR_CORES=1``: :func:`~.mma_float32.filter_weight_grad_update_float32`),
    ``inverse_norms`` then the new rows'; ``False`` (nothing done) where no kernel takes these: the caller multiplies
    (:func:`times_fields_transposed`) and updates (:func:`~.normalize.unit_rows_sgd`, given the same ``row_dots``).
    Only where the chunk reads its fields from the maps (:func:`backward_reads_maps`)."""
    if row_dots is None or array_module(left).__name__ != "cupy":
        return False
    x, error = maps
    terms = mma_float32.terms_for(array_module(left), precision)
    if terms and mma_float32.update_fits(left, x, error, raw_rows, velocity_rows, inverse_norms, row_dots, field,
                                         blocks_w):
        mma_float32.filter_weight_grad_update_float32(left, x, error, raw_rows, velocity_rows, inverse_norms, row_dots,
                                                      lr, momentum, field, step, blocks_w, terms)
        return True
    if not simt_gemm.FUSED_UPDATE:
        return False
    if not (simt_gemm.weight_grad_fits(left, x, error, raw_rows, field, blocks_w)
            and simt_gemm.update_fits(raw_rows, velocity_rows, inverse_norms, row_dots)):
        return False
    simt_gemm.filter_weight_grad_update(left, x, error, raw_rows, velocity_rows, inverse_norms, row_dots, lr, momentum,
                                        field, step, blocks_w)
    return True


def tensor_core_update_takes(xp, precision: str, x_rows, error_rows, fan_in: int, count: int, blocks_w: int) -> bool:
    """Whether a bfloat16 chunk of the backward pass takes its update with its weight gradient on tensor cores
    (:func:`update_with_tensor_cores`, ``DASKSAE_TENSOR_CORE_UPDATE``, on by default since session 22): the tied
    decoder's ``[g_z | a z] [X | G]^T`` with the error map there, and on CuPy maps the kernel reads
    (:func:`~.mma_update.maps_fit`).  Then the chunk gathers no ``X`` fields and writes no gradient."""
    if not (mma_update.TENSOR_CORE_UPDATE and precision == "bfloat16" and error_rows is not None):
        return False
    return xp.__name__ == "numpy" or mma_update.maps_fit(x_rows, error_rows, fan_in, count, blocks_w)


def update_with_tensor_cores(codes, maps, field: int, step: int, blocks_w: int, raw, velocity, raw_operand,
                             inverse_norms, row_dots, lr: float, momentum: float, split_master: bool = False) -> None:
    """The unit-norm SGD step of ``raw`` (a chunk's ``(blocks_h, blocks_w, rows, f*f*C)`` rows, in place, with
    ``velocity``, ``raw_operand`` its bfloat16 copy and ``inverse_norms`` then the new rows') given the weight
    gradient ``codes [fields(maps[0]) | fields(maps[1])]^T`` and the rows' ``W . dL/dW``: on CuPy in one kernel
    (:func:`~.mma_update.filter_weight_grad_update_bfloat16`, the gradient never written); on NumPy the same step in
    array code (the fields gathered, multiplied, :func:`~.normalize.unit_rows_sgd`), so that the backward pass's
    use of it runs on the CPU.  Where :func:`tensor_core_update_takes`.  With ``split_master`` (CuPy, where
    :func:`~.mma_update.takes_split_master`) ``raw`` holds the weights' low halves and ``raw_operand`` their high
    halves (:mod:`dasksae.master_weights`), both rewritten."""
    from .normalize import unit_rows_sgd

    count, rows, _ = codes.shape
    if array_module(codes).__name__ == "numpy":
        if split_master:
            raise ValueError("split master weights are stepped here on CuPy only; on NumPy step their join.")
        fields = [gather_patches(m, field, step, count // blocks_w, blocks_w) for m in maps]
        gradient = batched_matmul(codes, numpy.concatenate(fields, axis=2), transpose_b=True, precision="bfloat16")
        unit_rows_sgd(raw, velocity, gradient.reshape(raw.shape), inverse_norms, lr, momentum, refresh_norms=True,
                      raw_operand=raw_operand, precision="bfloat16", row_dots=row_dots)
        return
    shape = (count, rows, raw.shape[-1])
    arrays = (codes, *maps, raw.reshape(shape), velocity.reshape(shape), raw_operand.reshape(shape), inverse_norms,
              row_dots)
    if not mma_update.update_fits(*arrays, field, blocks_w, split_master=split_master):
        raise RuntimeError("the tensor-core update was chosen for arrays it does not take (a dasksae bug)")
    mma_update.filter_weight_grad_update_bfloat16(*arrays, lr, momentum, field, step, blocks_w,
                                                  split_master=split_master)


def local_filter_transpose(y, weights, input_shape, field: int, step: int, block_h: int, block_w: int, *,
                           row_scale=None, precision: str | None = None, chunk_bytes: int | None = CHUNK_BYTES,
                           subtract=None):
    """``x = W^T diag(row_scale) y``: the adjoint of :func:`local_filter_forward`, fields overlap-added into ``input_shape``.

    With ``subtract`` (a map of ``input_shape``): ``(e, sum(e^2))`` for ``e = x - subtract``, the sum in float64 (a
    device scalar on CuPy), as :func:`~.elementwise.difference_and_squares` gives them: one tile's reconstruction
    error.  Where the fold writes the whole map (:func:`writes_whole_map`) in the bfloat16 tensor-core kernel, the
    kernel subtracts as it writes and sums the squares (:func:`~.mma_transpose.add_transpose_bfloat16`): ``x`` is
    never written.
    """
    xp = array_module(y, weights)
    precision = precision or native_precision(y, weights)
    blocks_h, blocks_w, rows, fan_in = weights.shape
    batch = y.shape[-1]
    weights = operand(weights, precision)
    per_row = blocks_w * (fan_in * result_dtype(precision).itemsize + rows * 4) * batch
    if ((WHOLE_PRODUCTS or WRITE_ONCE)
            and _transpose_folds_in_the_product(xp, precision, input_shape[2], rows, batch, field, step)):
        # one launch: the kernel writes no patches (its operand y's block rows, 2-4 bytes a value); with WRITE_ONCE it
        # then writes the whole map, which needs no zeroing
        chunk_bytes = None
    spans = chunks(blocks_h, per_row, chunk_bytes)
    written_once = writes_whole_map(spans, input_shape, field, step, blocks_h, blocks_w)
    out = (xp.empty if written_once else xp.zeros)(tuple(input_shape), dtype=result_dtype(precision))
    squares = None
    for p0, p1 in spans:
        y_rows = block_rows(y[p0 * block_h : p1 * block_h], block_h, block_w,
                            None if row_scale is None else row_scale[p0:p1], precision)
        squares = add_transpose_into(out[field_rows(p0, p1, field, step)], weights[p0:p1].reshape(-1, rows, fan_in),
                                     y_rows, field, step, p1 - p0, blocks_w, precision, accumulate=not written_once,
                                     subtract=subtract if written_once else None)
    if subtract is None:
        return out
    if squares is None:  # the map was written: subtract in a pass of its own
        return difference_and_squares(out, xp.asarray(subtract))
    return out, squares


def writes_whole_map(spans, map_shape, field: int, step: int, blocks_h: int, blocks_w: int) -> bool:
    """DASKSAE_WRITE_ONCE: whether one fold (``add_transpose_into`` with ``accumulate=False``) over these chunks of
    block rows writes every value of the map, which then needs no zeroing: one chunk, whose fields cover the map."""
    return WRITE_ONCE and len(spans) == 1 and fields_cover(map_shape, field, step, blocks_h, blocks_w)


def fields_cover(map_shape, field: int, step: int, blocks_h: int, blocks_w: int) -> bool:
    """Whether ``blocks_h x blocks_w`` fields of ``field`` at ``step`` cover the whole map: its height and width are
    ``(blocks - 1) * step + field``, so that :func:`add_transpose_into` over all the blocks writes every value."""
    return tuple(map_shape[:2]) == ((blocks_h - 1) * step + field, (blocks_w - 1) * step + field)


def _transpose_folds_in_the_product(xp, precision: str, channels: int, rows: int, batch: int, field: int,
                                    step: int) -> bool:
    """Whether a layer of this shape takes ``W^T y`` in a kernel that folds in the product, writing no patches: the
    bfloat16 tensor-core one (:func:`transpose_on_tensor_cores`) or the split TF32 one."""
    return (transpose_on_tensor_cores(xp, precision, channels, rows, batch, field, step)
            or (mma_float32.transpose_on_tensor_cores(xp, precision, channels, step)
                and mma_transpose.layer_fits(channels, rows, batch, field, step)))


def transpose_on_tensor_cores(xp, precision: str, channels: int, rows: int, batch: int, field: int, step: int) -> bool:
    """Whether :func:`add_transpose_into` takes a layer of this shape to the tensor-core kernel, which writes no
    patches (given C-contiguous, aligned operands, as the backward's are)."""
    return (precision == "bfloat16" and xp.__name__ == "cupy"
            and mma_forward.minibatch_on_tensor_cores(mma_transpose.TENSOR_CORE_TRANSPOSE, batch)
            and mma_transpose.layer_fits(channels, rows, batch, field, step))


def add_transpose_into(out, weight_rows, y_rows, field: int, step: int, blocks_h: int, blocks_w: int, precision: str,
                       accumulate: bool = True, subtract=None):
    """``out += W^T y`` overlap-added into the map ``out (H, W, C, M)``: ``weight_rows (blocks, rows, f*f*C)`` and
    ``y_rows (blocks, rows, M)`` are operands of ``precision`` for ``blocks_h x blocks_w`` blocks, block ``(p, q)``'s
    field at ``(p*step, q*step)``: multiplies, then folds (adding each block's fields straight into the map in our
    float32 kernel was slower on an H200: ``kernels/simt_gemm.py``).  In bfloat16 with
    ``DASKSAE_TENSOR_CORE_TRANSPOSE`` (by default at minibatches of whole 96s), where the arrays fit, one tensor-core
    kernel sums each cell of the map over its blocks and adds it in, with no patches (:mod:`.mma_transpose`).
    ``accumulate`` False: ``out = W^T y`` (``out``'s values are never read, so it may come from ``empty``): the
    tensor-core kernels write each cell's sum; elsewhere ``out`` is zeroed first, the same values as a zeroed map.
    ``subtract`` (with ``accumulate`` False): where the bfloat16 tensor-core kernel takes the product and ``subtract``
    (:func:`~.mma_transpose.subtract_fits`), ``out = W^T y - subtract`` and the sum of its squares is returned (a
    device float64); elsewhere ``subtract`` is not read, ``out = W^T y`` and ``None`` is returned."""
    if (transpose_on_tensor_cores(array_module(out), precision, out.shape[2], weight_rows.shape[1], out.shape[-1],
                                  field, step)
            and mma_transpose.transpose_fits(out, weight_rows, y_rows, field, step, blocks_h, blocks_w)):
        if subtract is not None and not mma_transpose.subtract_fits(out, subtract):
            subtract = None
        return mma_transpose.add_transpose_bfloat16(out, weight_rows, y_rows, field, step, blocks_h, blocks_w,
                                                    accumulate=accumulate, subtract=subtract)
    if (mma_float32.transpose_on_tensor_cores(array_module(out), precision, out.shape[2], step)
            and mma_float32.transpose_fits(out, weight_rows, y_rows, field, step, blocks_h, blocks_w)):
        mma_float32.add_transpose_float32(out, weight_rows, y_rows, field, step, blocks_h, blocks_w,
                                          terms=mma_float32.terms_for(array_module(out), precision),
                                          accumulate=accumulate)
        return None
    if not accumulate:
        out[...] = 0
    patches = batched_matmul(weight_rows, y_rows, transpose_a=True, precision=precision)
    fold_patches_into(out, patches, field, step, blocks_h, blocks_w)
    return None


def local_filter_weight_grads(pairs, field: int, step: int, block_h: int, block_w: int, *, precision: str | None = None,
                              chunk_bytes: int | None = CHUNK_BYTES, consume=None):
    """``dW = sum over (delta, x, scale) in pairs of (scale * delta) x^T``, per filter block.

    ``delta (Ho, Wo, K, M)``, ``x (H, W, C, M)``, ``scale`` a number or
    ``None``.  Without ``consume`` the result ``(nbh, nbw, R, F)`` is
    returned; with it, ``consume(p0, p1, grad)`` receives each chunk of block
    rows ``p0 .. p1`` as it is computed (e.g. to apply the update there and
    then) and nothing is kept.
    """
    delta0, x0, _ = pairs[0]
    xp = array_module(delta0, x0)
    precision = precision or native_precision(*[a for d, x, _ in pairs for a in (d, x)])
    blocks_h, blocks_w = delta0.shape[0] // block_h, delta0.shape[1] // block_w
    rows = block_h * block_w * delta0.shape[2]
    fan_in = field * field * x0.shape[2]
    batch = x0.shape[-1]
    itemsize = result_dtype(precision).itemsize
    operands = [(block_view(delta, block_h, block_w), operand(x, precision), scale) for delta, x, scale in pairs]
    full = None if consume is not None else xp.empty((blocks_h, blocks_w, rows, fan_in), dtype=result_dtype(precision))
    per_row = blocks_w * (fan_in * (batch + rows) + rows * batch) * itemsize
    for p0, p1 in chunks(blocks_h, per_row, chunk_bytes):
        count = (p1 - p0) * blocks_w
        grad = xp.empty((count, rows, fan_in), dtype=result_dtype(precision)) if full is None else full[p0:p1].reshape(count, rows, fan_in)
        for index, (delta_blocks, x, scale) in enumerate(operands):
            block_rows = operand(delta_blocks[p0:p1], precision, scale)
            patches = gather_patches(x[field_rows(p0, p1, field, step)], field, step, p1 - p0, blocks_w)
            batched_matmul(
                block_rows.reshape(count, rows, batch), patches, transpose_b=True, precision=precision,
                out=grad, accumulate=index > 0,
            )
        if consume is not None:
            consume(p0, p1, grad.reshape(p1 - p0, blocks_w, rows, fan_in))
    return full


def local_filter_weight_grad(delta, x, field: int, step: int, block_h: int, block_w: int, **options):
    """``dW = delta x^T`` per block: ``delta (Ho, Wo, K, M)``, ``x (H, W, C, M)`` -> ``(nbh, nbw, R, F)``."""
    return local_filter_weight_grads([(delta, x, None)], field, step, block_h, block_w, **options)
