"""Tiles on a Dask cluster: weights pinned to their tile's worker, halo strips as tasks.

First piece of the distributed array (issue 4): the forward pass.  Each tile
is assigned to one worker once; its filter blocks are scattered there and
never move.  A stage is, per tile, one filter task and one pool+LCN task on
the tile's worker, plus one ``cut`` task per neighbour on the *neighbour's*
worker, so only contiguous halo strips cross the network.  Tasks are placed
with ``workers=[address], allow_other_workers=False`` per submit, which graph
optimisation cannot drop (DESIGN.md, placement).
"""

from __future__ import annotations

import itertools

from .errors import ConfigError
from .halo import assemble, cut, overlap
from .tile_ops import tile_filter_forward, tile_pool_normalise
from .tiling import TileGrid


class TiledNetwork:
    """A network's encoder weights spread over the workers of ``client`` by a :class:`TileGrid`."""

    def __init__(self, client, grid: TileGrid, params: list[dict], workers: list[str] | None = None):
        workers = list(workers or sorted(client.scheduler_info()["workers"]))
        if grid.count > len(workers):
            raise ConfigError(
                f"{grid.rows}x{grid.cols} tiles need {grid.count} workers but the cluster has {len(workers)}; "
                f"use at most {len(workers)} tiles or add workers."
            )
        self.client = client
        self._keys = itertools.count()
        self.grid = grid
        self.config = grid.config
        self.placement = {tile: workers[index] for index, tile in enumerate(grid.tiles())}
        self.weights = {}
        for k, stage_params in enumerate(params):
            for tile in grid.tiles():
                (b0, b1), (d0, d1) = grid.window(k, "blocks", tile)
                block = stage_params["encoder"][b0:b1, d0:d1].copy()
                self.weights[k, tile] = client.scatter(block, workers=[self.placement[tile]], hash=False)

    def _submit(self, tile, function, *args, name: str):
        return self.client.submit(
            function, *args, workers=[self.placement[tile]], allow_other_workers=False, pure=False, key=f"{name}-{tile[0]}-{tile[1]}-{next(self._keys)}"
        )

    def _halo(self, window, pieces: dict, name: str):
        """Futures of the strips of ``window``, each cut on the worker that owns it."""
        strips = []
        for source, (owned, future) in pieces.items():
            part = overlap(owned, window)
            if part:
                strips.append((part, self._submit(source, cut, future, owned, part, name=name)))
        return strips

    def scatter_input(self, x):
        """Each tile's owned part of a batch ``(H, W, C, M)``, placed on its worker."""
        pieces = {}
        for tile in self.grid.tiles():
            (r0, r1), (c0, c1) = window = self.grid.window(0, "input_owned", tile)
            future = self.client.scatter(x[r0:r1, c0:c1].copy(), workers=[self.placement[tile]], hash=False)
            pieces[tile] = (window, future)
        return pieces

    def forward(self, x):
        """Futures of every tile's top-stage output: ``{tile: (owned window, future)}``."""
        pieces = self.scatter_input(x)
        for k, stage in enumerate(self.config.stages):
            geometry = self.config.geometry()[k]
            filtered = {}
            for tile in self.grid.tiles():
                window = self.grid.window(k, "input_needed", tile)
                strips = self._halo(window, pieces, f"stage{k + 1}-input-halo")
                assembled = self._submit(tile, _assemble_from, window, [w for w, _ in strips], *[f for _, f in strips], name=f"stage{k + 1}-input")
                z = self._submit(tile, tile_filter_forward, assembled, self.weights[k, tile], stage, name=f"stage{k + 1}-filter")
                filtered[tile] = (self.grid.window(k, "filter_owned", tile), z)
            outputs = {}
            for tile in self.grid.tiles():
                window = self.grid.window(k, "filter_needed", tile)
                strips = self._halo(window, filtered, f"stage{k + 1}-filter-halo")
                owned = self.grid.window(k, "pooled_owned", tile)
                extended = self.grid.window(k, "pooled_extended", tile)
                assembled = self._submit(tile, _assemble_from, window, [w for w, _ in strips], *[f for _, f in strips], name=f"stage{k + 1}-filter-window")
                out = self._submit(
                    tile, tile_pool_normalise, assembled, extended, owned, geometry.pooled_shape[:2], stage,
                    self.config.epsilon, self.config.lcn_c, name=f"stage{k + 1}-pool-lcn",
                )
                outputs[tile] = (owned, out)
            pieces = outputs
        return pieces

    def gather(self, pieces):
        """Assemble ``{tile: (window, future)}`` into one array on the client (for checks and small maps)."""
        windows = [window for window, _ in pieces.values()]
        arrays = self.client.gather([future for _, future in pieces.values()])
        rows = (min(w[0][0] for w in windows), max(w[0][1] for w in windows))
        cols = (min(w[1][0] for w in windows), max(w[1][1] for w in windows))
        return assemble((rows, cols), list(zip(windows, arrays)))


def _assemble_from(window, parts, *strips):
    return assemble(window, list(zip(parts, strips)))
