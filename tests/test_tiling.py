"""Tile geometry: owned ranges partition every map, needed windows cover what the kernels read."""

import numpy
import pytest

from dasksae import ConfigError, named_config
from dasksae.halo import assemble, cut, overlap, sum_into
from dasksae.network import NetworkConfig, StageConfig
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
            for start, stop in stage.pool_needed:
                assert 0 <= start < stop <= geometry.filter_shape[axis]
            for start, stop in stage.lcn_needed:
                assert 0 <= start < stop <= geometry.pooled_shape[axis]


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
