"""Tile geometry: owned ranges partition every map, needed windows cover what the kernels read."""

import numpy
import pytest

from dasksae import ConfigError, named_config
from dasksae.halo import assemble, cut, overlap, sum_into
from dasksae.network import NetworkConfig, StageConfig
from dasksae.reference import encode_stage, init_params
from dasksae.tiling import TileGrid

UNEVEN = NetworkConfig(
    name="uneven",
    input_shape=(29, 26, 2),
    stages=(
        StageConfig(field=5, step=2, block=(2, 2, 2), maps=2, pool_size=3),
        StageConfig(field=4, step=3, block=(3, 3, 2), maps=2, pool_size=2, pool_stride=2, lcn_size=3),
        StageConfig(field=3, step=1, block=(1, 1, 2), maps=2, pool_size=1, lcn_size=3),
    ),
).validate()

TILINGS = [(1, 1), (2, 2), (3, 2), (2, 3), (1, 3)]


def _partitions(ranges, length):
    assert ranges[0][0] == 0 and ranges[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start < stop for start, stop in ranges)


@pytest.mark.parametrize("config", [named_config("tiny"), UNEVEN])
@pytest.mark.parametrize("rows,cols", TILINGS)
def test_owned_ranges_partition_every_map(config, rows, cols):
    grid = TileGrid(config, rows, cols)
    for axis, tiles in ((0, rows), (1, cols)):
        for stage, geometry in zip(grid._axes[axis], config.geometry()):
            _partitions(stage.blocks, geometry.blocks[axis])
            _partitions(stage.pooled_owned, geometry.pooled_shape[axis])
            _partitions(stage.input_owned, geometry.input_shape[axis])
            for start, stop in stage.input_needed:
                assert 0 <= start < stop <= geometry.input_shape[axis]
            for start, stop in stage.filter_needed:
                assert 0 <= start < stop <= geometry.filter_shape[axis]


def test_tiling_that_does_not_fit_is_refused():
    with pytest.raises(ConfigError, match="do not fit stage 1.*use at most 14 tile rows"):
        TileGrid(named_config("tiny"), 15, 1)
    with pytest.raises(ConfigError, match="tiles must be written RxC"):
        TileGrid.parse(named_config("tiny"), "2by2")
    with pytest.raises(ConfigError, match="tile columns must be a positive integer"):
        TileGrid(named_config("tiny"), 2, 0)


def test_halo_cut_assemble_and_sum_are_consistent(rng):
    whole = rng.standard_normal((10, 9, 2))
    owned = [((0, 5), (0, 9)), ((5, 10), (0, 4)), ((5, 10), (4, 9))]
    pieces = [(w, whole[w[0][0] : w[0][1], w[1][0] : w[1][1]]) for w in owned]
    wanted = ((3, 8), (2, 7))
    strips = [(overlap(w, wanted), cut(p, w, overlap(w, wanted))) for w, p in pieces if overlap(w, wanted)]
    numpy.testing.assert_array_equal(assemble(wanted, strips), whole[3:8, 2:7])
    contributions = [(((0, 6), (0, 9)), numpy.ones((6, 9, 2))), (((4, 10), (0, 9)), numpy.ones((6, 9, 2)))]
    total = sum_into(((0, 10), (0, 9)), contributions)
    assert total[4:6].min() == 2 and total[:4].max() == 1


def owned_input(grid, x):
    """Each tile's owned part of the network input: ``{tile: (window, array)}``."""
    pieces = {}
    for tile in grid.tiles():
        rows, cols = window = grid.window(0, "input_owned", tile)
        pieces[tile] = (window, x[slice(*rows), slice(*cols)])
    return pieces


@pytest.mark.parametrize("rows,cols", TILINGS)
def test_tiled_forward_equals_the_reference(rng, rows, cols):
    """Each tile filters its own blocks from its input window, pools and normalises its window: the
    assembled stage outputs equal the single-process network's."""
    from dasksae.tile_ops import tile_stage_forward

    config = UNEVEN
    grid = TileGrid(config, rows, cols)
    params = init_params(config, seed=2, dtype="float64")
    x = rng.standard_normal(config.input_shape + (3,))
    owned = owned_input(grid, x)
    reference = x
    for k, stage in enumerate(config.stages):
        reference, _ = encode_stage(reference, params[k], stage, config)
        owned = tile_stage_forward(grid, k, owned, params[k], stage, config)
        whole = assemble(((0, reference.shape[0]), (0, reference.shape[1])), list(owned.values()))
        numpy.testing.assert_allclose(whole, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("objective", ["rica", "le2012"])
@pytest.mark.parametrize("rows,cols", [(2, 2), (3, 2)])
def test_tiled_objective_equals_the_reference(rng, objective, rows, cols):
    """Reconstructions summed back to their owners (the reverse halo) and sparsity over owned pooling
    units give each stage's objective exactly."""
    from dasksae.halo import sum_into
    from dasksae.reference import forward_stage
    from dasksae.tile_ops import (
        gather_window,
        tile_filter_forward,
        tile_reconstruction,
        tile_reconstruction_loss,
        tile_sparsity_loss,
        tile_stage_forward,
    )

    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    grid = TileGrid(config, rows, cols)
    params = init_params(config, seed=5, dtype="float64")
    x = rng.standard_normal(config.input_shape + (2,))
    owned = owned_input(grid, x)
    reference_input = x
    for k, stage in enumerate(config.stages):
        expected, reference_output, _ = forward_stage(reference_input, params[k], stage, config)
        scale = params[k].get("scale")
        contributions, filtered = {}, {}
        for tile in grid.tiles():
            (b0, b1), (d0, d1) = grid.window(k, "blocks", tile)
            window = grid.window(k, "input_needed", tile)
            x_window = gather_window(window, owned)
            encoder = params[k]["encoder"][b0:b1, d0:d1]
            decoder = params[k]["decoder"][b0:b1, d0:d1] if "decoder" in params[k] else None
            z = tile_filter_forward(x_window, encoder, stage)
            contributions[tile] = (window, tile_reconstruction(z, x_window.shape, encoder, decoder, scale, stage))
            filtered[tile] = (grid.window(k, "filter_owned", tile), z)
        total = 0.0
        for tile in grid.tiles():
            mine, x_owned = owned[tile]
            parts = [(overlap(w, mine), cut(c, w, overlap(w, mine))) for w, c in contributions.values() if overlap(w, mine)]
            total += tile_reconstruction_loss(sum_into(mine, parts), x_owned)
            z_window = gather_window(grid.window(k, "filter_needed", tile), filtered)
            total += tile_sparsity_loss(
                z_window, grid.window(k, "pooled_extended", tile), grid.window(k, "pooled_owned", tile),
                scale, stage, config.sparsity, config.epsilon,
            )
        assert abs(total - expected) <= 1e-12 * abs(expected)
        owned = tile_stage_forward(grid, k, owned, params[k], stage, config)
        reference_input = reference_output
