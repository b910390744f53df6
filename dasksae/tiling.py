"""The tile grid: which tile owns which rectangle of every layer, and which window it needs.

Strictly model-parallel, as Coates et al. 2013: every tile works on the same
minibatch and neurons are split *spatially* over a ``rows x cols`` grid of
tiles.  Rows and columns are independent, so all geometry here is 1-D
(:class:`AxisTiling`) and a tile's rectangle is the product of its row and
column ranges.  Ranges are half-open ``(start, stop)`` in the coordinates of
the whole map.

Per stage, along one axis, with field ``f``, step ``s``, filter-block size
``b``, pooling ``p`` with stride ``ps`` and an LCN window of radius ``r``:

* **filter blocks**: stage 1 splits its ``nb`` block positions as evenly as
  possible; a later stage gives block ``k`` to the tile that owns the centre
  ``k*s + f//2`` of its field in the stage input, so fields mostly lie on
  their own tile;
* **filter output** ``z``: the tile owns rows ``[k0*b, k1*b)`` of its blocks
  ``[k0, k1)`` and *needs* input rows ``[k0*s, (k1-1)*s + f)`` (the halo);
* **pooled map** (and the LCN output, the next stage's input): pooled row
  ``i`` belongs to the owner of ``z`` row ``i*ps + p//2``; pooling owned rows
  ``[q0, q1)`` reads ``z`` rows ``[q0*ps, (q1-1)*ps + p)`` (``pool_needed``);
* **LCN** of owned rows ``[q0, q1)`` reads pooled rows ``[q0-2r, q1+2r)``
  (mean, then variance), clipped to the map (``lcn_needed``).

Each layer reads a halo of its input from the neighbours' owned ranges, and
its backward pass writes contributions over the same window, which are summed
back to the owners.

Every range a tile owns is non-empty, or the tiling is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .network import NetworkConfig

Range = tuple[int, int]


def at_most_tiles(workers: int) -> str:
    """How a refusal names the tilings that ``workers`` workers can run: ``--tiles 1x1`` for one.

    >>> at_most_tiles(1), at_most_tiles(3)
    ('--tiles 1x1', 'at most 3 tiles')
    """
    return "--tiles 1x1" if workers == 1 else f"at most {workers} tiles"


def split_range(length: int, parts: int) -> list[Range]:
    """Split ``[0, length)`` into ``parts`` contiguous ranges whose sizes differ by at most one.

    >>> split_range(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    >>> split_range(4, 4)
    [(0, 1), (1, 2), (2, 3), (3, 4)]
    """
    base, extra = divmod(length, parts)
    ranges, start = [], 0
    for index in range(parts):
        stop = start + base + (1 if index < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def owners_by_centre(count: int, centre, owned: list[Range]) -> list[Range]:
    """Give item ``k`` of ``count`` to the range of ``owned`` that contains ``centre(k)``.

    ``centre`` is monotone, so each range gets a contiguous run (possibly empty).

    >>> owners_by_centre(5, lambda k: 2 * k + 1, [(0, 4), (4, 10)])
    [(0, 2), (2, 5)]
    """
    result, start = [], 0
    for index, (_, stop) in enumerate(owned):
        end = start
        last = index == len(owned) - 1
        while end < count and (last or centre(end) < stop):
            end += 1
        result.append((start, end))
        start = end
    return result


def intersect(a: Range, b: Range) -> Range | None:
    """The overlap of two half-open ranges, or ``None``.

    >>> intersect((0, 5), (3, 9))
    (3, 5)
    >>> intersect((0, 3), (3, 9)) is None
    True
    """
    start, stop = max(a[0], b[0]), min(a[1], b[1])
    return (start, stop) if start < stop else None


@dataclass(frozen=True)
class AxisStage:
    """One stage's ranges along one axis, one entry per tile."""

    blocks: list[Range]  # filter-block indices owned
    input_needed: list[Range]  # stage-input rows each tile's blocks read
    filter_owned: list[Range]  # filter-output rows owned
    pooled_owned: list[Range]  # pooled / LCN-output rows owned (the next stage's input)
    pool_needed: list[Range]  # filter-output rows the owned pooling units read
    lcn_needed: list[Range]  # pooled rows LCN of the owned rows reads (owned + 2 LCN radii)
    input_owned: list[Range]  # stage-input rows owned (previous stage's pooled_owned)


def axis_stages(config: NetworkConfig, axis: int, tiles: int) -> list[AxisStage]:
    """The ranges of every stage along ``axis`` (0 rows, 1 columns) for ``tiles`` tiles."""
    stages = []
    input_owned = None
    for index, (stage, geometry) in enumerate(zip(config.stages, config.geometry())):
        name = "rows" if axis == 0 else "columns"
        block_count = geometry.blocks[axis]
        block_size = stage.block[axis]
        input_length = geometry.input_shape[axis]
        if input_owned is None:
            if tiles > block_count:
                raise ConfigError(
                    f"{tiles} tile {name} do not fit stage {index + 1}, which has {block_count} filter-block {name}; "
                    f"use at most {block_count} tile {name}."
                )
            blocks = split_range(block_count, tiles)
            input_owned = [(k0 * stage.step, k1 * stage.step if k1 < block_count else input_length) for k0, k1 in blocks]
            input_owned[0] = (0, input_owned[0][1])
        else:
            blocks = owners_by_centre(block_count, lambda k: k * stage.step + stage.field // 2, input_owned)
        input_needed = [(k0 * stage.step, (k1 - 1) * stage.step + stage.field) for k0, k1 in blocks]
        filter_owned = [(k0 * block_size, k1 * block_size) for k0, k1 in blocks]
        pooled_length = geometry.pooled_shape[axis]
        pooled_owned = owners_by_centre(
            pooled_length, lambda i: i * stage.pool_stride + stage.pool_size // 2, filter_owned
        )
        radius = stage.lcn_size // 2
        pool_needed = [(q0 * stage.pool_stride, (q1 - 1) * stage.pool_stride + stage.pool_size) for q0, q1 in pooled_owned]
        lcn_needed = [(max(0, q0 - 2 * radius), min(pooled_length, q1 + 2 * radius)) for q0, q1 in pooled_owned]
        for tile, (owned_blocks, owned_pooled) in enumerate(zip(blocks, pooled_owned)):
            if owned_blocks[0] >= owned_blocks[1] or owned_pooled[0] >= owned_pooled[1]:
                raise ConfigError(
                    f"{tiles} tile {name} do not fit stage {index + 1} of config {config.name!r}: tile {tile} "
                    f"would own no {'filter blocks' if owned_blocks[0] >= owned_blocks[1] else 'pooled units'}; "
                    f"use fewer tile {name}."
                )
        stages.append(
            AxisStage(blocks, input_needed, filter_owned, pooled_owned, pool_needed, lcn_needed, input_owned)
        )
        input_owned = pooled_owned
    return stages


def aligned_chunk(windows, axis: int) -> int:
    """The largest chunk length along ``axis`` that every boundary of ``windows`` is a multiple of.

    Zarr chunks of that length never straddle a tile, so each tile reads and
    writes only its own chunks (checkpoints, data stores).

    >>> aligned_chunk([((0, 6), (0, 4)), ((6, 10), (0, 4))], 0)
    2
    """
    import math

    edges = {w[axis][0] for w in windows} | {w[axis][1] for w in windows}
    return max(1, math.gcd(*edges))


@dataclass(frozen=True)
class TileGrid:
    """A ``rows x cols`` grid of tiles over a network; tile ``(i, j)`` is numbered ``i * cols + j``."""

    config: NetworkConfig
    rows: int
    cols: int

    def __post_init__(self):
        for name, value in (("tile rows", self.rows), ("tile columns", self.cols)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        object.__setattr__(self, "_axes", (axis_stages(self.config, 0, self.rows), axis_stages(self.config, 1, self.cols)))

    @classmethod
    def parse(cls, config: NetworkConfig, text: str) -> "TileGrid":
        """``"2x3"`` -> a grid of 2 tile rows and 3 tile columns."""
        try:
            rows, cols = (int(part) for part in str(text).lower().split("x"))
        except ValueError:
            raise ConfigError(f"tiles must be written RxC with positive integers, e.g. 2x2, got {text!r}.") from None
        return cls(config, rows, cols)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def tiles(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.rows) for j in range(self.cols)]

    def window(self, stage: int, field: str, tile: tuple[int, int]) -> tuple[Range, Range]:
        """The ``(rows, cols)`` ranges of ``field`` (an :class:`AxisStage` attribute) for one tile."""
        i, j = tile
        rows, cols = self._axes
        return getattr(rows[stage], field)[i], getattr(cols[stage], field)[j]

    def windows(self, stage: int, field: str) -> dict:
        """``{tile: window}`` of ``field`` for every tile."""
        return {tile: self.window(stage, field, tile) for tile in self.tiles()}

    def whole(self, stage: int, field: str) -> tuple[Range, Range]:
        """The window of the whole map that ``field``'s owned ranges partition."""
        rows, cols = self._axes
        return (getattr(rows[stage], field)[0][0], getattr(rows[stage], field)[-1][1]), (
            getattr(cols[stage], field)[0][0],
            getattr(cols[stage], field)[-1][1],
        )
