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
:func:`local_filter_weight_grad` (``delta x^T``).  No Dask in here.
"""

from __future__ import annotations

from .backend import array_module, as_strided


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


def gather_patches(x, field: int, step: int, blocks_h: int, blocks_w: int):
    """Receptive fields of ``x (H, W, C, M)`` as one contiguous ``(nbh*nbw, f*f*C, M)``.

    One strided gather straight into the batched GEMM's layout: the batch stays
    the fastest axis, so each field row is a contiguous run of ``C*M`` values.
    """
    xp = array_module(x)
    height, width, channels, batch = x.shape
    if (blocks_h - 1) * step + field > height or (blocks_w - 1) * step + field > width:
        raise ValueError(
            f"input {height}x{width} is too small for {blocks_h}x{blocks_w} fields of size {field} at step {step}"
        )
    x = xp.ascontiguousarray(x)
    s_h, s_w, s_c, s_m = x.strides
    view = as_strided(
        x,
        shape=(blocks_h, blocks_w, field, field, channels, batch),
        strides=(step * s_h, step * s_w, s_h, s_w, s_c, s_m),
    )
    return xp.ascontiguousarray(view).reshape(blocks_h * blocks_w, field * field * channels, batch)


def fold_patches(patches, input_shape, field: int, step: int, blocks_h: int, blocks_w: int):
    """Overlap-add ``patches (nbh*nbw, f*f*C, M)`` back into an ``(H, W, C, M)`` map.

    The adjoint of :func:`gather_patches`.  Field offsets are grouped in
    ``ceil(f/step)^2`` groups of ``step x step``; within a group no two blocks
    touch the same input pixel, so each group is one strided add.
    """
    xp = array_module(patches)
    height, width, channels, batch = input_shape
    out = xp.zeros((height, width, channels, batch), dtype=patches.dtype)
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
    return out


def blocks_to_map(blocks, blocks_h: int, blocks_w: int, block_h: int, block_w: int):
    """``(nbh*nbw, bh*bw*K, M)`` block outputs -> ``(nbh*bh, nbw*bw, K, M)`` map."""
    xp = array_module(blocks)
    count, rows, batch = blocks.shape
    maps = rows // (block_h * block_w)
    grid = blocks.reshape(blocks_h, blocks_w, block_h, block_w, maps, batch).transpose(0, 2, 1, 3, 4, 5)
    return xp.ascontiguousarray(grid).reshape(blocks_h * block_h, blocks_w * block_w, maps, batch)


def map_to_blocks(output_map, block_h: int, block_w: int):
    """``(nbh*bh, nbw*bw, K, M)`` map -> ``(nbh*nbw, bh*bw*K, M)`` block rows (the inverse)."""
    xp = array_module(output_map)
    height, width, maps, batch = output_map.shape
    blocks_h, blocks_w = height // block_h, width // block_w
    grid = output_map.reshape(blocks_h, block_h, blocks_w, block_w, maps, batch).transpose(0, 2, 1, 3, 4, 5)
    return xp.ascontiguousarray(grid).reshape(blocks_h * blocks_w, block_h * block_w * maps, batch)


def _flat_weights(weights):
    blocks_h, blocks_w, rows, fan_in = weights.shape
    return weights.reshape(blocks_h * blocks_w, rows, fan_in)


def local_filter_forward(x, weights, field: int, step: int, block_h: int, block_w: int):
    """``y = W x``: ``x (H, W, C, M)``, ``weights (nbh, nbw, bh*bw*K, f*f*C)`` -> ``(nbh*bh, nbw*bw, K, M)``."""
    xp = array_module(x, weights)
    blocks_h, blocks_w = weights.shape[:2]
    patches = gather_patches(x, field, step, blocks_h, blocks_w)
    outputs = xp.matmul(_flat_weights(weights), patches)
    return blocks_to_map(outputs, blocks_h, blocks_w, block_h, block_w)


def local_filter_transpose(y, weights, input_shape, field: int, step: int, block_h: int, block_w: int):
    """``x = W^T y``: the adjoint of :func:`local_filter_forward`, fields overlap-added into ``input_shape``."""
    xp = array_module(y, weights)
    blocks_h, blocks_w = weights.shape[:2]
    rows = map_to_blocks(y, block_h, block_w)
    patches = xp.matmul(_flat_weights(weights).transpose(0, 2, 1), rows)
    return fold_patches(patches, input_shape, field, step, blocks_h, blocks_w)


def local_filter_weight_grad(delta, x, field: int, step: int, block_h: int, block_w: int):
    """``dW = delta x^T`` per block: ``delta (Ho, Wo, K, M)``, ``x (H, W, C, M)`` -> ``(nbh, nbw, R, F)``."""
    xp = array_module(delta, x)
    blocks_h, blocks_w = delta.shape[0] // block_h, delta.shape[1] // block_w
    patches = gather_patches(x, field, step, blocks_h, blocks_w)
    rows = map_to_blocks(delta, block_h, block_w)
    grad = xp.matmul(rows, patches.transpose(0, 2, 1))
    return grad.reshape(blocks_h, blocks_w, grad.shape[1], grad.shape[2])
