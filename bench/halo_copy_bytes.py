"""Bytes a tiled step copies to assemble its windows and sum its overlaps, by kind, on the CPU.

    python bench/halo_copy_bytes.py --config coates200 --tiles 2x2 --minibatch 2 --json out.json

Runs one step of the network on a tile grid in this process (NumPy, no Dask) and counts what
:func:`dasksae.halo.assemble` and :func:`dasksae.halo.sum_into` are handed: a window's own part (a
strip over more than half of its window), its halo strips from the neighbours, and the contributions
summed back.  The counts scale with the minibatch (``--scale-to M`` prints them at M) and with the
itemsize of the maps; on a GPU these copies are the strip kernels of ``bench/kernel_table.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy


def main(argv=None):
    from dasksae import halo, tile_array
    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork
    from gpu_step import coates

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates200")
    parser.add_argument("--tiles", default="2x2")
    parser.add_argument("--minibatch", type=int, default=2)
    parser.add_argument("--scale-to", type=int, default=96, help="print the bytes at this minibatch too")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    counted = collections.defaultdict(lambda: [0, 0])  # kind -> [bytes, strips]
    assemble, sum_into = halo.assemble, halo.sum_into

    def counting_assemble(window, strips):
        (r0, r1), (c0, c1) = window
        for ((a, b), (c, d)), strip in strips:
            kind = "window's own part" if 2 * (b - a) * (d - c) > (r1 - r0) * (c1 - c0) else "halo strips"
            counted[kind][0] += strip.nbytes
            counted[kind][1] += 1
        return assemble(window, strips)

    def counting_sum_into(window, contributions):
        for _, part in contributions:
            counted["contributions summed"][0] += part.nbytes
            counted["contributions summed"][1] += 1
        return sum_into(window, contributions)

    tile_array.assemble, tile_array.sum_into = counting_assemble, counting_sum_into
    config = coates(args.config)
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (args.minibatch,)).astype("float32")
    network = TiledNetwork(config, args.tiles, executor=LocalExecutor(), seed=0, dtype="float32")
    network.step(x, 1e-3, 0.9)  # the first step records the tile programs
    counted.clear()
    started = time.perf_counter()
    network.step(x, 1e-3, 0.9)
    seconds = time.perf_counter() - started
    scale = args.scale_to / args.minibatch
    print(f"{args.config} {args.tiles} M={args.minibatch} float32, one step ({seconds:.1f} s on this CPU):")
    print(f"  {'kind':<24}{'strips':>8}{'MB':>10}{f'MB at M={args.scale_to}':>14}")
    for kind, (nbytes, strips) in counted.items():
        print(f"  {kind:<24}{strips:>8}{nbytes / 1e6:>10.2f}{nbytes * scale / 1e6:>14.1f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": args.config, "tiles": args.tiles, "minibatch": args.minibatch,
                       "bytes": {kind: value[0] for kind, value in counted.items()},
                       "strips": {kind: value[1] for kind, value in counted.items()}}, handle, indent=1)


if __name__ == "__main__":
    main()
