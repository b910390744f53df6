"""The layers of a stage as block-wise graphs over tiles.

Each function takes and returns :class:`~dasksae.tile_array.TileArray` maps
and runs one task per tile (:func:`~dasksae.tile_array.tile_map`) calling the
per-tile kernels of :mod:`dasksae.tile_ops`.  Which window of its input a
tile reads comes from the :class:`~dasksae.tiling.TileGrid`; the halo
exchange that brings it, and the sums that return gradients to their
owners, happen inside the tile array.  Nothing here deals with neighbours,
keys or workers.

Forward functions return the tile results (dicts); :func:`output` views an
entry of them as a map.  A stage's scale state (``a`` and its velocity) is a
:class:`~dasksae.tile_array.Shared` handle, or ``None`` for Le 2012.
"""

from __future__ import annotations

from . import tile_ops
from .kernels import local_filter as local_filter_module
from .tile_array import PerTile, TileArray, tile_map
from .tiling import TileGrid


def output(result: TileArray, field: str, grid: TileGrid, stage: int, windows: str, maps: int, per_map: int) -> TileArray:
    """Entry ``field`` of per-tile results, owned over ``windows`` of stage ``stage`` (``maps`` channels)."""
    return result.entry(field, grid.windows(stage, windows), position_bytes=maps * per_map)


def local_filter(x: TileArray, state: TileArray, scale, grid: TileGrid, stage: int, with_objective: bool,
                 precision: str | None = None, error_here: bool = False) -> TileArray:
    """``z = W x`` per tile from its input window; with the objective, also ``W_dec^T (a z)`` over that window.

    ``precision``: the GEMMs' (:mod:`dasksae.kernels.gemm`); by default the weights' dtype.  ``error_here``
    (:func:`error_in_filter`): the tiles' results hold the reconstruction error and its loss part instead.
    """
    return tile_map(
        tile_ops.filter_forward,
        x.halo(grid.windows(stage, "input_needed")),
        state,
        scale,
        grid.config.stages[stage],
        with_objective,
        precision,
        error_here,
        name=f"stage{stage + 1}-filter",
    )


def error_in_filter(grid: TileGrid, stage: int) -> bool:
    """Whether the filter's task makes the reconstruction error (``DASKSAE_WRITE_ONCE``): one tile, whose input
    window is the map it owns, so that no other tile's reconstruction is added to its own (one task less a stage,
    and on the GPU the fold's kernel subtracts as it writes)."""
    if not (local_filter_module.WRITE_ONCE and grid.count == 1):
        return False
    return grid.windows(stage, "input_needed") == grid.windows(stage, "input_owned")


def reconstruction_error(reconstruction: TileArray, x: TileArray, stage: int) -> TileArray:
    """``e = sum of the tiles' reconstructions - x`` over each tile's owned input, and its loss part."""
    return tile_map(
        tile_ops.reconstruction_error, reconstruction.sum_back(x.windows), x, name=f"stage{stage + 1}-error"
    )


def l2_pool(z: TileArray, scale, grid: TileGrid, stage: int, with_objective: bool) -> TileArray:
    """``sqrt(eps + V z^2)`` of each tile's owned pooling units; with the objective, the sparsity term."""
    config = grid.config
    return tile_map(
        tile_ops.pool_forward,
        z.halo(grid.windows(stage, "pool_needed")),
        scale,
        config.stages[stage],
        config.epsilon,
        config.sparsity,
        with_objective,
        name=f"stage{stage + 1}-pool",
    )


def contrast(pooled: TileArray, grid: TileGrid, stage: int) -> TileArray:
    """Local contrast normalisation of each tile's owned units, reading two LCN radii of halo."""
    config = grid.config
    windows = grid.windows(stage, "lcn_needed")
    return tile_map(
        tile_ops.contrast_forward,
        pooled.halo(windows),
        PerTile(windows),
        PerTile(grid.windows(stage, "pooled_owned")),
        config.geometry()[stage].pooled_shape[:2],
        config.stages[stage],
        config.lcn_c,
        name=f"stage{stage + 1}-lcn",
    )


def contrast_backward(grad_output: TileArray | None, error_above: TileArray | None, forward: TileArray, grid: TileGrid, stage: int, batch: int) -> TileArray:
    """Each tile's contribution to ``dL/dpooled`` (over its LCN window) from the gradient at its outputs.

    ``grad_output`` holds the stage above's input-gradient contributions
    (summed back here to the owners), ``error_above`` the stage above's
    reconstruction error (its ``-2/M e`` reaches this output too).
    """
    owned = grid.windows(stage, "pooled_owned")
    windows = grid.windows(stage, "lcn_needed")
    return tile_map(
        tile_ops.contrast_backward,
        None if grad_output is None else grad_output.sum_back(owned),
        error_above,
        forward,
        PerTile(windows),
        PerTile(owned),
        batch,
        name=f"stage{stage + 1}-lcn-backward",
        tiles=list(forward.parts),
    )


def l2_pool_backward(grad_pooled: TileArray | None, forward: TileArray, scale, grid: TileGrid, stage: int) -> TileArray:
    """Each tile's contribution to ``dL/dz`` over its pooling window (pooling and sparsity term)."""
    return tile_map(
        tile_ops.pool_backward,
        None if grad_pooled is None else grad_pooled.sum_back(grid.windows(stage, "pooled_owned")),
        forward,
        scale,
        grid.config.stages[stage],
        name=f"stage{stage + 1}-pool-backward",
        tiles=list(forward.parts),
    )


def local_filter_backward(grad_z: TileArray, error: TileArray | None, forward: TileArray, state: TileArray, scale, grid: TileGrid, stage: int, need_input_grad: bool, update) -> TileArray:
    """Filter-block gradients (and, with ``update = (lr, momentum)``, the SGD step) and the input gradient.

    ``grad_z`` holds the pooling layer's contributions, summed back here to
    the owners of ``z``; ``error`` the reconstruction error, read over each
    tile's input window.
    """
    return tile_map(
        tile_ops.filter_backward,
        grad_z.sum_back(grid.windows(stage, "filter_owned")),
        None if error is None else error.halo(grid.windows(stage, "input_needed")),
        forward,
        state,
        scale,
        grid.config.stages[stage],
        need_input_grad,
        update,
        name=f"stage{stage + 1}-filter-backward",
    )
