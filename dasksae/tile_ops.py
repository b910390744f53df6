"""What one tile computes in one task: plain array functions, no Dask.

The Dask layer (next) runs each of these as one task on the tile's worker,
with halo strips from neighbours as inputs; :func:`tile_stage_forward` runs
them one after another in this process, which is how the tile decomposition
is checked against the single-process reference.
"""

from __future__ import annotations

from .halo import assemble, cut, overlap
from .kernels.backend import array_module
from .kernels.contrast import lcn_forward
from .kernels.local_filter import local_filter_forward
from .kernels.normalize import unit_rows
from .kernels.pooling import window_sum
from .tiling import TileGrid


def gather_window(window, pieces):
    """Assemble ``window`` from ``{tile: (owned window, array)}`` (the halo exchange, serially)."""
    strips = []
    for owned, array in pieces.values():
        part = overlap(owned, window)
        if part:
            strips.append((part, cut(array, owned, part)))
    return assemble(window, strips)


def tile_filter_forward(input_window, encoder_blocks, stage):
    """``z`` of the tile's own filter blocks from its input window (receptive fields and halo)."""
    weights, _ = unit_rows(encoder_blocks)
    return local_filter_forward(input_window, weights, stage.field, stage.step, stage.block[0], stage.block[1])


def tile_pool_normalise(filter_window, extended, owned, pooled_map_shape, stage, epsilon, lcn_c):
    """Pool the tile's extended window of ``z``, normalise it, and keep the owned rows and columns."""
    xp = array_module(filter_window)
    pooled = xp.sqrt(epsilon + window_sum(filter_window * filter_window, stage.pool_size, stage.pool_stride))
    origin = (extended[0][0], extended[1][0])
    normalised, _ = lcn_forward(pooled, stage.lcn_size, lcn_c, origin=origin, map_shape=pooled_map_shape)
    (r0, r1), (c0, c1) = owned
    return xp.ascontiguousarray(normalised[r0 - origin[0] : r1 - origin[0], c0 - origin[1] : c1 - origin[1]])


def tile_stage_forward(grid: TileGrid, stage_index: int, inputs: dict, stage_params: dict, stage, config):
    """One stage over every tile, serially: ``inputs`` and the result map tile -> (owned window, array)."""
    geometry = config.geometry()[stage_index]
    filtered = {}
    for tile in grid.tiles():
        (b0, b1), (d0, d1) = grid.window(stage_index, "blocks", tile)
        window = gather_window(grid.window(stage_index, "input_needed", tile), inputs)
        z = tile_filter_forward(window, stage_params["encoder"][b0:b1, d0:d1], stage)
        filtered[tile] = (grid.window(stage_index, "filter_owned", tile), z)
    outputs = {}
    for tile in grid.tiles():
        window = gather_window(grid.window(stage_index, "filter_needed", tile), filtered)
        owned = grid.window(stage_index, "pooled_owned", tile)
        extended = grid.window(stage_index, "pooled_extended", tile)
        outputs[tile] = (
            owned,
            tile_pool_normalise(window, extended, owned, geometry.pooled_shape[:2], stage, config.epsilon, config.lcn_c),
        )
    return outputs


def tile_reconstruction(z, input_shape, encoder_blocks, decoder, scale, stage):
    """This tile's blocks' share of ``W^T (a z)`` over its input window (summed with neighbours' by the owner).

    ``z`` is the tile's filter output (from :func:`tile_filter_forward`, not
    recomputed here).  ``decoder`` is ``None`` for tied RICA (then ``W``
    itself decodes) or the tile's untied ``W2`` blocks (Le 2012, then ``a = 1``).
    """
    from .kernels.local_filter import local_filter_transpose

    weights = unit_rows(encoder_blocks)[0] if decoder is None else decoder
    code = z * (1.0 if scale is None else scale)
    return local_filter_transpose(code, weights, input_shape, stage.field, stage.step, stage.block[0], stage.block[1])


def tile_reconstruction_loss(reconstruction, owned_input):
    """``sum ||r - x||^2 / M`` over the input positions this tile owns."""
    xp = array_module(reconstruction)
    error = reconstruction - owned_input
    return (error * error).sum(dtype=xp.float64) / owned_input.shape[-1]


def tile_sparsity_loss(filter_window, extended, owned, scale, stage, sparsity, epsilon):
    """``lambda * sum_j sqrt(eps + a^2 V_j z^2) / M`` over the pooling units this tile owns."""
    xp = array_module(filter_window)
    squares = window_sum(filter_window * filter_window, stage.pool_size, stage.pool_stride)
    (r0, r1), (c0, c1) = owned
    origin = (extended[0][0], extended[1][0])
    squares = squares[r0 - origin[0] : r1 - origin[0], c0 - origin[1] : c1 - origin[1]]
    a = 1.0 if scale is None else scale
    return sparsity * xp.sqrt(epsilon + (a * a) * squares).sum(dtype=xp.float64) / filter_window.shape[-1]
