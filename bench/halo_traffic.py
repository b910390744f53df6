"""The halo traffic of one tiled step on the host: arrays copied and added, and their bytes, by where they happen.

    python bench/halo_traffic.py --config small --tiles 2x2 --minibatch 8

Runs one joint step of ``--config`` over ``--tiles`` in this process (NumPy,
:class:`~dasksae.tile_array.LocalExecutor`) with :mod:`dasksae.halo`'s
functions counted as :mod:`dasksae.tile_array` calls them.  On a GPU each
copy or add here is one CuPy kernel of the step (``copy__float32_float32``,
``add__float32_float32_float32`` in ``bench/kernel_table.py``), captured in the
tiles' CUDA graphs: so this counts, without a GPU, the halo kernels a change
adds or removes.  Rows:

* ``strip cut to send``: :func:`~dasksae.tile_array.cut_part`, a neighbour's strip made contiguous by its owner;
* ``own piece cut``: a tile's own piece made contiguous before assembling (the code before session 13);
* ``assemble``: a window filled from its pieces, one copy a piece; below the table, its bytes split into the
  windows' own parts (a piece over more than half of its window) and the halo strips from the neighbours;
* ``sum_into``: a window summed from its contributions (zeros, or a copy of the one that covers it, then adds).

``bytes written`` is each result's size once (a window's adds write into it again).
Before and after a change: ``PYTHONPATH=old/ python bench/halo_traffic.py`` with
the older package exported to ``old/dasksae``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy


def main(argv=None):
    from dasksae import TiledNetwork, halo, tile_array
    from dasksae.tile_array import LocalExecutor
    from gpu_step import coates  # coatesN: the coates1.8b network on an N x N x 3 input, as the GPU benchmark names it

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="a named config, a config file, or coatesN")
    parser.add_argument("--tiles", default="2x2")
    parser.add_argument("--minibatch", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--by-function", action="store_true",
                        help="also split the assembled and summed windows by the tile function that reads them")
    args = parser.parse_args(argv)

    counts = collections.Counter()
    cut, assemble, sum_into = halo.cut, halo.assemble, halo.sum_into

    def counted_cut(array, window, part):
        out = cut(array, window, part)
        if not numpy.shares_memory(out, array):
            row = "strip cut to send" if sys._getframe(1).f_code.co_name == "cut_part" else "own piece cut"
            counts[row, "copies"] += 1
            counts[row, "bytes written"] += out.nbytes
        return out

    by_function = collections.Counter()
    assembled_from = collections.Counter()  # assemble's bytes by the kind of piece they come from

    def reader():
        function = sys._getframe(2).f_locals.get("function")  # tile_array._call_tile's
        return getattr(function, "__name__", "?")

    def counted_assemble(window, strips):
        out = assemble(window, strips)
        if not any(numpy.shares_memory(out, strip) for _, strip in strips):
            counts["assemble", "copies"] += len(strips)
            counts["assemble", "bytes written"] += out.nbytes
            by_function["assemble", reader()] += out.nbytes
            (r0, r1), (c0, c1) = window
            for ((a, b), (c, d)), strip in strips:
                part = "own part" if 2 * (b - a) * (d - c) > (r1 - r0) * (c1 - c0) else "halo strips"
                assembled_from[part] += strip.nbytes
        return out

    def counted_sum_into(window, contributions):
        out = sum_into(window, contributions)
        if not any(numpy.shares_memory(out, part) for _, part in contributions):
            covering = any(halo._covers(part, window, value) for part, value in contributions)
            # the package before session 13 (no part_view) summed into zeros even where a contribution covered
            started_from_copy = covering and hasattr(halo, "part_view")
            counts["sum_into", "copies"] += 1 if started_from_copy else 0
            counts["sum_into", "zero fills"] += 0 if started_from_copy else 1
            counts["sum_into", "adds"] += len(contributions) - (1 if started_from_copy else 0)
            counts["sum_into", "bytes written"] += out.nbytes
            by_function["sum_into", reader()] += out.nbytes
        return out

    tile_array.cut, tile_array.assemble, tile_array.sum_into = counted_cut, counted_assemble, counted_sum_into
    config = coates(args.config)
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32")
    TiledNetwork(config, args.tiles, executor=LocalExecutor(), seed=0, dtype="float32").step(x, 1e-3, 0.9)

    rows = ["strip cut to send", "own piece cut", "assemble", "sum_into"]
    columns = ["copies", "zero fills", "adds", "bytes written"]
    print(f"{config.name}, {args.tiles} tiles, M={args.minibatch}: halo work of one step, all tiles ({halo.__file__})")
    print(f"{'':20}" + "".join(f"{c:>14}" for c in columns))
    table = {}
    for row in rows:
        table[row] = {c: counts[row, c] for c in columns}
        cells = [f"{table[row][c] / 1e6:>12.2f}MB" if c == "bytes written" else f"{table[row][c]:>14}" for c in columns]
        print(f"{row:20}" + "".join(cells))
    total = {c: sum(table[r][c] for r in rows) for c in columns}
    print(f"{'all':20}" + "".join(f"{total[c] / 1e6:>12.2f}MB" if c == "bytes written" else f"{total[c]:>14}" for c in columns))
    print("assemble's bytes: " + ", ".join(f"{kind} {assembled_from[kind] / 1e6:.2f}MB" for kind in ("own part", "halo strips")))
    if args.by_function:
        print("bytes written by the tile function that reads the window:")
        for (kind, function), written in sorted(by_function.items(), key=lambda item: -item[1]):
            print(f"  {kind:10} {function:32} {written / 1e6:10.2f}MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config.name, "tiles": args.tiles, "minibatch": args.minibatch, "rows": table, "all": total, "assembled_from": dict(assembled_from),
                       "by_function": {f"{kind} {function}": written for (kind, function), written in by_function.items()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
