"""What one tile computes in one task: plain array functions on NumPy or CuPy, no Dask.

Each function is one layer's work for one tile, given the windows its
inputs were assembled over (see :mod:`dasksae.tiling`).  Forward functions
return a dict: the layer's output and what its backward pass reuses; the
graph code in :mod:`dasksae.layers` runs them as tasks.  The math is that of
:mod:`dasksae.reference` and :mod:`dasksae.objective`, restricted to what the
tile owns, so that summing the tiles' pieces gives the single-process result.
"""

from __future__ import annotations

import numpy

from .kernels.backend import array_module, host_floats, kept_apart, on_device, to_numpy
from .kernels.code_gradient import tied_code_gradient
from .kernels.contrast import lcn_backward, lcn_forward
from .kernels.copies import contiguous, copy_views
from .kernels.elementwise import difference_and_squares, subtract_scaled_into
from .kernels.gemm import native_precision, operand, result_dtype, storage_dtype
from .kernels.local_filter import (
    CHUNK_BYTES,
    MapBlocks,
    add_transpose_into,
    backward_reads_maps,
    block_rows,
    chunks,
    error_product_on_tensor_cores,
    field_rows,
    gather_patches,
    local_filter_forward,
    local_filter_transpose,
    times_fields,
    times_fields_transposed,
    tensor_core_update_takes,
    transpose_on_tensor_cores,
    update_fuses,
    update_with_tensor_cores,
    update_with_weight_grad,
    writes_whole_map,
)
from .kernels.normalize import inverse_row_norms, radial_dots, unit_rows_backward, unit_rows_sgd
from .kernels.simt_gemm import wave_slots
from . import master_weights
from .kernels import code_gradient, local_filter, mma_update
from .master_weights import is_split, master, master_rows, weights_module
from .kernels.pooling import pool_squares, pool_unit_weights, pool_units_and_sums, window_sum_transpose
from .optim import sgd_momentum_update
from .streams import join_side_work, side_stream_work


def scale_of(scale_state):
    """``a`` from a stage's scale state (``None`` for Le 2012, where ``a = 1``).

    On the host (NumPy tiles) a Python float, which multiplies arrays without
    changing their dtype.  On a GPU the state lives on the device
    (:func:`scale_states_on`), and ``a`` is returned as the device scalar it
    is, of the weights' dtype: kernels read it from the device, so nothing
    waits for the stage's reduction on the host, and a step captured as CUDA
    graphs reads each step's ``a``.
    """
    if scale_state is None:
        return 1.0
    scale = scale_state["scale"]
    return scale if on_device(scale) else float(scale)


def _local(window, owned):
    """Slices of ``owned`` inside an array that covers ``window``."""
    (r0, _), (c0, _) = window
    (p0, p1), (q0, q1) = owned
    return slice(p0 - r0, p1 - r0), slice(q0 - c0, q1 - c0)


# ---------------------------------------------------------------- local filter


def filter_forward(x_window, state, scale_state, stage, with_objective: bool, precision: str | None = None,
                   error_here: bool = False):
    """``z = W x`` for the tile's filter blocks; with the objective, the tile's share of ``W_dec^T (a z)``.

    ``error_here`` (one tile, whose input window is the map it owns: no
    other tile adds to its reconstruction): the result holds the error
    ``e = W_dec^T (a z) - x`` and its loss part, as :func:`reconstruction_error`
    gives them, instead of the reconstruction; where the fold writes the
    whole map, its kernel subtracts as it writes
    (:func:`~dasksae.kernels.local_filter.local_filter_transpose`).

    ``W = U/||U||`` is never formed: the products read ``U`` (or its
    :func:`~dasksae.kernels.gemm.operand` in the compute precision, kept for
    the backward pass) and scale rows by ``1/||U||``.  The input window is
    moved to the weights' device first (the minibatch may arrive from the
    client in host memory).  In bfloat16 the state's float32 weights are
    kept as their operand and a low half from here on
    (:mod:`dasksae.master_weights`, ``DASKSAE_SPLIT_MASTER``).
    """
    xp = weights_module(state)
    join_side_work(state.pop("_side_work", None))  # the last step's update, where it ran on a side stream
    precision = precision or ("float32" if is_split(state) else native_precision(state["encoder"]))
    if master_weights.splits(state, precision) and not is_split(state):
        master_weights.split_state(state)
    x_input = xp.asarray(x_window)
    x_window = operand(x_input, precision)
    inverse_norms, weights = _encoder_operands(state, precision)
    geometry = (stage.field, stage.step, stage.block[0], stage.block[1])
    z = local_filter_forward(x_window, weights, *geometry, row_scale=inverse_norms, precision=precision)
    out = {"z": z, "x": x_window, "weights": weights, "inverse_norms": inverse_norms, "precision": precision}
    if with_objective:
        subtract = x_input if error_here else None
        if "decoder" in state:
            out["decoder"] = operand(state["decoder"], precision)
            reconstruction = local_filter_transpose(z, out["decoder"], x_window.shape, *geometry, precision=precision,
                                                    subtract=subtract)
        else:
            reconstruction = local_filter_transpose(
                z, weights, x_window.shape, *geometry, row_scale=inverse_norms * scale_of(scale_state),
                precision=precision, subtract=subtract,
            )
        if error_here:
            out |= _error_and_loss(*reconstruction, x_input.shape[-1])
        else:
            out["reconstruction"] = reconstruction
    return out


def _encoder_operands(state, precision):
    """``1/||U||`` per row and ``U`` as the products' operand: what the last update left in the state, else new.

    The update writes both as it writes ``U`` (:func:`filter_backward`), so
    a step reads the weights once for them instead of twice more.  They are
    state entries whose names start with ``_``: derived from ``U``, kept on
    the tile's worker between steps, never checkpointed.  Split master
    weights' bfloat16 operand is their high half (``encoder_high``:
    :mod:`dasksae.master_weights`).
    """
    shape = master_weights.weights_shape(state)
    inverse_norms = state.get("_encoder_inverse_norms")
    if inverse_norms is None or inverse_norms.shape != shape[:-1]:
        inverse_norms = inverse_row_norms(master(state))
    weights = master_weights.operand_of(state, precision)
    if weights is None or weights.shape != shape:
        weights = operand(master(state), precision)
    return inverse_norms, weights


def reconstruction_error(reconstruction, x_owned):
    """``e = r - x`` over the tile's owned input and its part of ``sum ||e||^2 / M``."""
    xp = array_module(reconstruction, x_owned)
    x_owned = xp.asarray(x_owned)
    if reconstruction is None:
        error = -x_owned
        squares = (error * error).sum(dtype=xp.float64)
    else:  # one pass on CuPy
        error, squares = difference_and_squares(reconstruction, x_owned)
    return _error_and_loss(error, squares, x_owned.shape[-1])


def _error_and_loss(error, squares, batch: int) -> dict:
    """The error entry and its loss part ``sum ||e||^2 / M`` (on the device: no wait)."""
    return {"error": error, "loss": squares / batch}


def filter_backward(grad_z, error_window, forward, state, scale_state, stage, need_input_grad: bool, update):
    """Gradients of the tile's filter blocks, its share of the input gradient, and (``update``) the SGD step.

    ``grad_z``: the summed gradient reaching the tile's ``z`` through pooling
    (and the sparsity term); ``error_window``: the reconstruction error over
    the tile's input window (``None`` without the objective).  ``update`` is
    ``None`` (return the gradients) or ``(lr, momentum)``: then the state's
    arrays are updated in place and returned as the new state.

    One pass over chunks of block rows does everything for those blocks (all
    of it is local to them): the fields of ``x`` and of ``g_r = 2/M e`` are
    gathered once, side by side, into one buffer ``[X | G]``;
    ``g_code = W g_r`` reads its half; ``g_z = a g_code + grad_z`` is formed
    in block layout next to ``a z`` in a second buffer; the weight gradient is
    then *one* GEMM with ``2M`` inner terms, ``[g_z | a z] [X | G]^T``
    (``g_z x^T`` plus the tied decoder's ``(a z) g_r^T``); the input gradient
    ``W^T g_z`` is folded in (before the update, which then runs on the chunk
    through the unit norm).  The whole gradient never exists.  On a GPU in
    float32 (``DASKSAE_IMPLICIT_BACKWARD=1``, the default) there is no
    ``[X | G]`` buffer: ``g_code`` and the weight gradient read the fields
    straight from the input and error maps in our kernel
    (:func:`~dasksae.kernels.local_filter.backward_reads_maps`).
    """
    xp = array_module(forward["z"])
    field, step, block_h, block_w = stage.field, stage.step, stage.block[0], stage.block[1]
    x_window, weights, inverse_norms, z = forward["x"], forward["weights"], forward["inverse_norms"], forward["z"]
    precision = forward["precision"]
    raw = state.get("encoder")  # None where the weights are split (master_weights): then never the operand
    blocks_h, blocks_w, rows, fan_in = weights.shape
    batch = x_window.shape[-1]
    tied = "decoder" not in state
    a = scale_of(scale_state)
    has_error = error_window is not None
    error = operand(xp.asarray(error_window), precision, 2.0 / batch) if has_error else None
    width = 2 * batch if (has_error and tied) else batch  # inner terms of the weight-gradient GEMM
    dtype, storage = result_dtype(precision), storage_dtype(precision) if xp is not numpy else result_dtype(precision)
    grads = None if update is not None else {"encoder": xp.empty(weights.shape, dtype=dtype)}
    if grads is not None and not tied:
        grads["decoder"] = xp.empty(weights.shape, dtype=dtype)
    scale_grad = 0.0
    # what the chunks will hold: no [X | G] buffer where the fields are read from the maps, no weight gradient where
    # the update is taken in its kernel (but Le 2012's decoder's): larger chunks, fewer and fuller launches
    reads_maps = backward_reads_maps(xp, precision, x_window, error, blocks_w, fan_in, blocks_w)
    fused = update is not None and weights is raw and update_fuses(precision, reads_maps)
    # bfloat16's tensor-core update (decided a chunk below; a chunk of whole block rows takes it where the whole
    # window does) gathers no X and writes no gradient, and gathers no G where U g_r reads the error map: counting
    # them made coates200's backward 17 chunks at M=96 (17 launches of each backward kernel a step) for one a stage
    tensor_core_window = (update is not None and tied and weights is not raw
                          and tensor_core_update_takes(xp, precision, x_window, error, fan_in, blocks_h * blocks_w,
                                                       blocks_w))
    gathers_error = not (tensor_core_window and error_product_on_tensor_cores(
        xp, precision, error, weights.reshape(blocks_h * blocks_w, rows, fan_in), field, blocks_w))
    # the input gradient's patches, where it is wanted and not folded in the tensor-core product
    input_fields = need_input_grad and not transpose_on_tensor_cores(xp, precision, x_window.shape[2], rows, batch,
                                                                      field, step)
    per_row = blocks_w * backward_bytes_per_block(rows, fan_in, batch, width, storage.itemsize, dtype.itemsize,
                                                  fields=not reads_maps and gathers_error,
                                                  gradients=(0 if fused or tensor_core_window else 1)
                                                  + (has_error and not tied), input_fields=input_fields,
                                                  field_columns=batch if tensor_core_window else None)
    slots = wave_slots() if reads_maps else 0  # DASKSAE_WAVE_CHUNKS: chunks for the fewest waves of our kernels
    spans = chunks(blocks_h, per_row, CHUNK_BYTES, blocks_w, slots)
    written_once = writes_whole_map(spans, x_window.shape, field, step, blocks_h, blocks_w)  # (the input gradient)
    grad_x = (xp.empty if written_once else xp.zeros)(x_window.shape, dtype=dtype) if need_input_grad else None
    for p0, p1 in spans:
        count = (p1 - p0) * blocks_w
        inputs = field_rows(p0, p1, field, step)
        x_map, error_map = x_window[inputs], error[inputs] if has_error else None
        from_maps = backward_reads_maps(xp, precision, x_map, error_map, count, fan_in, blocks_w)  # no fields buffer
        # bfloat16, DASKSAE_TENSOR_CORE_UPDATE=1 (the default): the update with the weight gradient on tensor cores,
        # which reads the maps; G is gathered for U g_r only where that product does not read the error map itself
        # (DASKSAE_TENSOR_CORE_FORWARD)
        tensor_core = (update is not None and tied and weights is not raw
                       and tensor_core_update_takes(xp, precision, x_map, error_map, fan_in, count, blocks_w))
        fields = None if from_maps or tensor_core else xp.empty((count, fan_in, width), dtype=storage)  # [X | G]
        if fields is not None:
            gather_patches(x_map, field, step, p1 - p0, blocks_w, out=fields[:, :, :batch])
        codes = xp.empty((count, rows, width), dtype=storage)  # [g_z | a z]
        # W . dL/dW a row from the codes (exact precisions): the update then need not sum it over the gradient
        # (and from the bfloat16 codes for the tensor-core update: the identity holds to their rounding)
        wants_dots = update is not None and (precision in ("float32", "float64") or tensor_core or from_maps)
        # (from_maps in tf32: its products on TF32 tensor cores, the identity to their rounding)
        # DASKSAE_CODES_FROM_MAPS: where only the tied code gradient reads z's and grad_z's block rows, from the maps
        from_z_maps = (code_gradient.CODES_FROM_MAPS and has_error and tied
                       and (not wants_dots or code_gradient.FUSED_ROW_DOTS))
        blocks_of = MapBlocks if from_z_maps else block_rows
        z_rows = blocks_of(z[p0 * block_h : p1 * block_h], block_h, block_w)
        grad_rows = None if grad_z is None else blocks_of(grad_z[p0 * block_h : p1 * block_h], block_h, block_w)
        if grad_rows is None and not (has_error and tied):
            grad_rows = xp.zeros((count, rows, batch), dtype=dtype)
        chunk_scale = inverse_norms[p0:p1].reshape(count, rows, 1)
        weight_rows = weights[p0:p1].reshape(count, rows, fan_in)
        grad_operand = None  # s g_z, the input gradient's operand, where the tied code gradient made it
        error_fields = None  # G, gathered where fields are (not where U g_r reads the error map on tensor cores)
        if has_error and (fields is not None or tensor_core) and not (
                tensor_core and error_product_on_tensor_cores(xp, precision, error_map, weight_rows, field, blocks_w)):
            error_fields = fields[:, :, batch:] if fields is not None and tied else xp.empty((count, fan_in, batch),
                                                                                            dtype=storage)
            gather_patches(error_map, field, step, p1 - p0, blocks_w, out=error_fields)
        decoded = None  # U g_r, the tied decoder's product
        row_dots = None
        if has_error and tied:  # [g_z | a z] (and s g_z) from U g_r in one pass (one kernel on CuPy)
            decoded = times_fields(weight_rows, error_map, error_fields, field, step, blocks_w, precision)
            if wants_dots and code_gradient.FUSED_ROW_DOTS:  # the dots from the same pass (DASKSAE_FUSED_ROW_DOTS)
                row_dots = xp.empty((count, rows), dtype=z.dtype)
            part, grad_operand = tied_code_gradient(decoded, chunk_scale, z_rows, grad_rows, a, codes, precision,
                                                    need_input_grad, row_dots)
            scale_grad = scale_grad + part  # stays on the device: no sync a chunk
        else:
            if has_error:
                grad_code = times_fields(forward["decoder"][p0:p1].reshape(count, rows, fan_in), error_map, error_fields,
                                         field, step, blocks_w, precision)
                scale_grad = scale_grad + (z_rows * grad_code).sum(dtype=xp.float64)
                grad_code *= a
                grad_rows += grad_code
            operand(grad_rows, precision, out=codes[:, :, :batch])
        if need_input_grad:  # before the update: it reads the weights in place
            if grad_operand is None:
                grad_operand = operand(grad_rows, precision, chunk_scale)
            add_transpose_into(grad_x[inputs], weight_rows, grad_operand, field, step, p1 - p0, blocks_w, precision,
                               accumulate=not written_once)
        gradient_maps = (x_map, error_map if tied else None)
        if wants_dots and row_dots is None:
            row_dots = radial_dots(codes, z_rows, decoded, chunk_scale, a)
        if tensor_core:  # on a side stream where DASKSAE_UPDATE_STREAM asks (joined by the step's next reader)
            with side_stream_work(xp, state.setdefault("_side_work", []), keep=(codes, x_map, error_map, row_dots)):
                if is_split(state) and xp is not numpy and mma_update.takes_split_master(x_map.shape[2], codes.shape[2]):
                    # the kernel reads and writes the halves (the operand is the high one)
                    update_with_tensor_cores(codes, (x_map, error_map), field, step, blocks_w,
                                             state[master_weights.LOW][p0:p1], state["encoder_velocity"][p0:p1],
                                             weights[p0:p1], inverse_norms[p0:p1], row_dots, *update, split_master=True)
                else:
                    with master_rows(state, p0, p1) as raw_rows:
                        update_with_tensor_cores(codes, (x_map, error_map), field, step, blocks_w, raw_rows,
                                                 state["encoder_velocity"][p0:p1], weights[p0:p1],
                                                 inverse_norms[p0:p1], row_dots, *update)
            grad_unit = None  # and the new norms and operand copy
        elif (update is not None and fields is None and weights is raw
                and update_with_weight_grad(codes, gradient_maps, field, step, blocks_w, weight_rows,
                                            state["encoder_velocity"][p0:p1].reshape(count, rows, fan_in),
                                            inverse_norms[p0:p1], row_dots, *update, precision)):
            grad_unit = None  # the weight gradient took the step in its kernel (DASKSAE_FUSED_UPDATE) and the norms
        else:
            grad_unit = times_fields_transposed(codes, gradient_maps, fields, field, step, blocks_w,  # [g_z | a z] [X | G]^T
                                                precision,
                                                None if grads is None else grads["encoder"][p0:p1].reshape(count, rows, fan_in))
        grad_decoder = None
        if has_error and not tied:
            grad_decoder = times_fields_transposed(operand(z_rows, precision), (error_map, None), error_fields, field, step,
                                                   blocks_w, precision,
                                                   None if grads is None else grads["decoder"][p0:p1].reshape(count, rows, fan_in))
        if update is not None:
            lr, momentum = update
            shape = (p1 - p0, blocks_w, rows, fan_in)
            if grad_unit is not None:
                with master_rows(state, p0, p1) as raw_rows:
                    unit_rows_sgd(raw_rows, state["encoder_velocity"][p0:p1], grad_unit.reshape(shape),
                                  inverse_norms[p0:p1], lr, momentum, refresh_norms=True,
                                  raw_operand=None if weights is raw else weights[p0:p1], precision=precision,
                                  row_dots=row_dots)
            if grad_decoder is not None:
                sgd_momentum_update(state["decoder"][p0:p1], state["decoder_velocity"][p0:p1], grad_decoder.reshape(shape), lr, momentum)
    if not state.get("_side_work", True):
        del state["_side_work"]  # nothing went to a side stream
    if update is not None:  # the next forward pass reads these instead of the weights twice more
        state["_encoder_inverse_norms"] = inverse_norms
        if weights is not raw and weights is not state.get(master_weights.HIGH):
            state[f"_encoder_operand_{precision}"] = weights
    out = {"scale_grad": scale_grad}  # on the device: the tile's report fetches it with the losses
    if need_input_grad:
        out["grad_x"] = grad_x
    if grads is None:
        out["state"] = state
    else:
        grads["encoder"] = _unit_gradient(grads["encoder"], master(state), inverse_norms)
        if not has_error and not tied:
            del grads["decoder"]
        out["grads"] = grads
    return out


def backward_bytes_per_block(rows: int, fan_in: int, batch: int, width: int, operand_itemsize: int, itemsize: int,
                             fields: bool = True, gradients: int = 1, input_fields: bool = True,
                             field_columns: int | None = None) -> int:
    """Transient bytes one filter block takes in :func:`filter_backward`'s chunk loop.

    The ``[X | G]`` fields (where ``fields``: not where they are read from the
    maps; ``field_columns`` of them, by default ``width``: the tensor-core
    update gathers ``G`` alone) and ``[g_z | a z]`` rows (``width`` inner
    terms, as GEMM operands),
    the ``z``, ``g_z`` and ``g_code`` rows, the block's weight ``gradients``
    (none where the update is taken in the weight gradient's kernel; Le 2012's
    decoder's apart) and (``input_fields``: not where no input gradient is
    wanted or the tensor-core transpose folds it in its product) its
    input-gradient fields.  :mod:`dasksae.accounting` plans memory with the
    defaults, the most a chunk holds.
    """
    return (fields * fan_in * (width if field_columns is None else field_columns) * operand_itemsize
            + rows * width * operand_itemsize
            + 3 * rows * batch * itemsize + gradients * rows * fan_in * itemsize
            + input_fields * fan_in * batch * itemsize)


def _unit_gradient(grad_unit, raw, inverse_norms):
    """``dL/dU`` from ``dL/dW`` for ``W = U/||U||`` (:func:`~dasksae.kernels.normalize.unit_rows_backward`)."""
    scale = inverse_norms[..., None]
    return unit_rows_backward(grad_unit, raw * scale, 1.0 / scale)


# ---------------------------------------------------------------- L2 pooling and the sparsity penalty


def pool_forward(z_window, scale_state, stage, epsilon: float, sparsity: float, with_objective: bool):
    """The tile's owned pooling units ``sqrt(eps + V z^2)``; with the objective, its part of the sparsity term.

    One pass over ``z`` (:func:`~dasksae.kernels.pooling.pool_squares`)
    gives the pooled units; with the objective
    (:func:`~dasksae.kernels.pooling.pool_units_and_sums`) also the sparsity
    term's units ``sqrt(eps + a^2 V z^2)``, their sum and the sum of
    ``V z^2 / units`` that the term's ``d/da`` takes (``V z^2`` is not kept).
    """
    a = scale_of(scale_state)
    if not with_objective:
        _, pooled, _ = pool_squares(z_window, stage.pool_size, stage.pool_stride, epsilon, None)
        return {"pooled": pooled, "z": z_window}
    pooled, units, units_sum, ratio_sum = pool_units_and_sums(z_window, stage.pool_size, stage.pool_stride, epsilon,
                                                              a * a)
    unit_scale = sparsity / z_window.shape[-1]  # lambda / M
    return {"pooled": pooled, "z": z_window, "loss": units_sum * unit_scale, "units": units, "unit_scale": unit_scale,
            "ratio_sum": ratio_sum}


def pool_backward(grad_pooled, forward, scale_state, stage):
    """The tile's contribution to ``dL/dz`` over its pooling window (summed back to the owners of ``z``).

    ``dL/dz = z * V^T w`` with ``w`` from :func:`~dasksae.kernels.pooling.pool_unit_weights`
    (two kernels on CuPy), and the sparsity term's part of ``dL/da``.
    """
    a = scale_of(scale_state)
    units = forward.get("units")
    weight = pool_unit_weights(grad_pooled, forward["pooled"], units, a * a, forward.get("unit_scale", 0.0))
    out = {"scale_grad": 0.0}
    if units is not None:  # d/da of unit_scale * sum sqrt(eps + a^2 V z^2)
        out["scale_grad"] = forward["ratio_sum"] * (forward["unit_scale"] * a)
    z = forward["z"]
    out["grad_z"] = window_sum_transpose(weight, z.shape, stage.pool_size, stage.pool_stride, times=z)
    return out


# ---------------------------------------------------------------- local contrast normalisation


def contrast_forward(pooled_window, window, owned, map_shape, stage, lcn_c: float):
    """LCN of the tile's owned units from the pooled map over ``window`` (owned plus two LCN radii)."""
    normalised, cache = lcn_forward(
        pooled_window, stage.lcn_size, lcn_c, origin=(window[0][0], window[1][0]), map_shape=map_shape
    )
    rows, cols = _local(window, owned)
    return {"output": contiguous(normalised[rows, cols]), "cache": cache}


def _is_whole(array, rows: slice, cols: slice) -> bool:
    """Whether ``array[rows, cols]`` is all of ``array``."""
    height, width = array.shape[:2]
    return rows.indices(height) == (0, height, 1) and cols.indices(width) == (0, width, 1)


def _zero_outside(array, rows: slice, cols: slice) -> None:
    """Zero ``array`` outside ``array[rows, cols]`` (slices of whole steps within it): at most four strips, none where
    the window is the whole array."""
    height, width = array.shape[:2]
    top, bottom = rows.indices(height)[:2]
    left, right = cols.indices(width)[:2]
    for strip in (array[:top], array[bottom:], array[top:bottom, :left], array[top:bottom, right:]):
        if strip.size:
            strip[...] = 0


def contrast_backward(grad_output, error_owned, forward, window, owned, batch: int):
    """The tile's contribution to ``dL/dpooled`` over ``window`` from the gradient at its owned outputs.

    ``grad_output``: the summed gradient from the stage above; ``error_owned``:
    that stage's reconstruction error, whose ``-2/M e`` also reaches this
    output (``None`` without it).
    """
    centred = forward["cache"][0]
    xp = array_module(centred)
    rows, cols = _local(window, owned)
    if (local_filter.WRITE_ONCE and _is_whole(centred, rows, cols) and grad_output.shape == centred.shape
            and (error_owned is None or (error_owned.shape, error_owned.dtype) == (centred.shape, centred.dtype))):
        # one tile: the owned outputs are the whole window, so no window is made; the LCN backward reads the gradient
        # (on CuPy its first pass subtracts 2/M e as it reads, and writes the difference for the second)
        subtract = None if error_owned is None else (error_owned, 2.0 / batch)
        return {"grad_pooled": lcn_backward(grad_output, forward["cache"], subtract=subtract)}
    if local_filter.WRITE_ONCE:
        padded = xp.empty_like(centred)
        _zero_outside(padded, rows, cols)
    else:
        padded = xp.zeros_like(centred)
    if error_owned is None:
        copy_views([(grad_output, padded[rows, cols])])
    else:  # grad_output - 2/M e, written into the window in one pass on CuPy
        subtract_scaled_into(padded[rows, cols], grad_output, error_owned, 2.0 / batch)
    return {"grad_pooled": lcn_backward(padded, forward["cache"])}


# ---------------------------------------------------------------- the scalar a and the losses


def reduce_stage(reports, scale_state, update):
    """Sum the tiles' loss and ``a``-gradient parts; with ``update = (lr, momentum)`` step ``a``.

    Runs on one tile; returns the stage's new scale state (``None`` for Le
    2012) together with its losses and the summed gradient of ``a``.  On a
    GPU all of these stay device scalars (the scale state is moved there with
    the tile's arrays, :func:`scale_states_on`): nothing waits for the
    device, so the host can run ahead of it (``DASKSAE_RUN_AHEAD``).
    """
    reconstruction = sum(r["reconstruction_loss"] for r in reports)
    sparsity = sum(r["sparsity_loss"] for r in reports)
    result = {"loss": reconstruction + sparsity, "reconstruction_loss": reconstruction, "sparsity_loss": sparsity}
    if scale_state is not None:
        scale, velocity = scale_state["scale"], scale_state["velocity"]
        xp = array_module(scale, *(r["scale_grad"] for r in reports))
        grad = xp.asarray(sum(r["scale_grad"] for r in reports)).astype(scale.dtype)
        result["scale_grad"] = grad
        new_scale, new_velocity = xp.asarray(scale).copy(), xp.asarray(velocity).copy()
        if update is not None:
            lr, momentum = update
            sgd_momentum_update(new_scale, new_velocity, grad, lr, momentum)
        result["scale"], result["velocity"] = new_scale, new_velocity
    return result


def tile_report(error, pool, filter_back, pool_back):
    """One tile's losses and ``a``-gradient part of a stage, left where the layers made them.

    On a GPU these are device scalars, and nothing here waits for the
    device: the losses are read on the host once a task
    (:func:`dasksae.kernels.backend.host_floats`), not once a step.
    """
    state = filter_back.get("state")
    if state is not None:  # the stage's update, where it ran on a side stream: the step's end waits for it
        join_side_work(state.pop("_side_work", None))
    return {"reconstruction_loss": error["loss"], "sparsity_loss": pool["loss"],
            "scale_grad": filter_back["scale_grad"] + pool_back["scale_grad"]}


def stage_summary(reduced: dict) -> dict:
    """A stage's loss (a float) and, where there is one, the gradient of ``a`` (NumPy) from its reduction, made
    on the worker that holds it: the client then gathers host values, and needs no CuPy to read them."""
    summary = {"loss": host_floats([reduced["loss"]])[0]}
    if "scale_grad" in reduced:
        summary["scale_grad"] = to_numpy(reduced["scale_grad"])
    return summary


def losses_on_host(per_step: list) -> list:
    """A task's stage losses, one list a step (device scalars on a GPU), as floats: the task's one wait for them."""
    flat = iter(host_floats(loss for step in per_step for loss in step))
    return [[next(flat) for _ in step] for step in per_step]


def next_scale_state(reduced: dict) -> dict:
    """The scale state a stage's reduction leaves for the next step, copied apart from where it was made.

    Replayed as CUDA graphs, the reduction writes ``a`` into the graphs'
    memory, which the next step's first graph run reuses for its
    temporaries; the next step also sends this state to the other tiles
    after that run (sends follow the run they come after).  Read there, it
    would be overwritten: copied here, it is the step's own array.
    """
    return {"scale": kept_apart(reduced["scale"]), "velocity": kept_apart(reduced["velocity"])}


def scale_states_on(xp, scale_states: list) -> list:
    """Each stage's scale state (``a`` and its momentum; ``None`` for Le 2012) as arrays of ``xp``: on a GPU,
    on the device beside the tile's weights, so that ``a`` is stepped and read there."""
    return [None if state is None else {name: xp.asarray(value) for name, value in state.items()} for state in scale_states]
