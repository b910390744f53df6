"""Tile geometry: owned ranges partition every map, needed windows cover what the kernels read."""

import numpy
import pytest

from dasksae import ConfigError, named_config
from dasksae.halo import assemble, cut, overlap, part_view, sum_into
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


def test_assemble_and_sum_take_strided_views_and_leave_them_alone(rng):
    """A tile's own pieces go in as views: the result is contiguous, equal to what contiguous cuts give, and no input changes."""
    whole = rng.standard_normal((10, 9, 3))
    owned = [((0, 5), (0, 9)), ((5, 10), (0, 4)), ((5, 10), (4, 9))]
    pieces = [(w, whole[w[0][0] : w[0][1], w[1][0] : w[1][1]].copy()) for w in owned]
    wanted = ((3, 8), (2, 7))
    views = [(overlap(w, wanted), part_view(p, w, overlap(w, wanted))) for w, p in pieces if overlap(w, wanted)]
    assert any(not v.flags.c_contiguous for _, v in views)  # the case this test is for
    cuts = [(part, numpy.ascontiguousarray(v)) for part, v in views]
    before = [p.copy() for _, p in pieces]
    assembled = assemble(wanted, views)
    assert assembled.flags.c_contiguous
    numpy.testing.assert_array_equal(assembled, assemble(wanted, cuts))
    numpy.testing.assert_array_equal(assembled, whole[3:8, 2:7])
    assert not any(numpy.shares_memory(assembled, p) for _, p in pieces)
    for (_, piece), kept in zip(pieces, before):
        numpy.testing.assert_array_equal(piece, kept)
    single = assemble(((0, 3), (2, 5)), [(((0, 3), (2, 5)), whole[:3, 2:5])])  # one strided strip that is the window
    assert single.flags.c_contiguous and not numpy.shares_memory(single, whole)
    numpy.testing.assert_array_equal(single, whole[:3, 2:5])

    # sums: the middle tile's own contribution covers its window and comes last; neighbours overlap its edges
    window = ((3, 7), (2, 6))
    own = rng.standard_normal((6, 6, 3))  # over ((2, 8), (1, 7)): wider than the window, so its part is a view
    above = rng.standard_normal((2, 4, 3))  # over ((3, 5), (2, 6))
    left = rng.standard_normal((4, 1, 3))  # over ((3, 7), (2, 3))
    contributions = [
        (((3, 5), (2, 6)), above),
        (((3, 7), (2, 3)), left),
        (window, part_view(own, ((2, 8), (1, 7)), window)),
    ]
    saved = [own.copy(), above.copy(), left.copy()]
    total = sum_into(window, contributions)
    expected = own[1:5, 1:5].copy()
    expected[0:2] += above
    expected[:, 0:1] += left
    assert total.flags.c_contiguous and not numpy.shares_memory(total, own)
    numpy.testing.assert_allclose(total, expected, rtol=0, atol=1e-12)
    for original, kept in zip((own, above, left), saved):
        numpy.testing.assert_array_equal(original, kept)
    # no contribution covers the window: the sum starts from zeros
    partial = sum_into(window, contributions[:2])
    numpy.testing.assert_allclose(partial[0:2, 1:], above[:, 1:], rtol=0, atol=0)
    assert partial[2:, 1:].max() == 0 == partial[2:, 1:].min()
