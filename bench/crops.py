"""Time a synthetic minibatch of bundled-photo crops: cut whole and transposed in blocks (dasksae.data.cut_crops)
against writing each crop straight into the batch-last array (the code before session 6), and one tile's window.

    python bench/crops.py --config coates1.8b --minibatch 96 --runs 5 --json bench/results/crops-cpu.json

Prints a table (median ms a batch) and writes JSON.  Both ways give the same values (checked here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy

from dasksae.data import crop_positions, cut_crops, natural_images
from dasksae.network import load_config


def scattered_crops(images, shape, positions, dtype):
    """Each crop written into ``out[..., m]`` (a stride of ``count`` values): the way before session 6."""
    height, width, channels = shape
    out = numpy.empty((height, width, channels, len(positions)), dtype=dtype)
    for m, (index, top, left) in enumerate(positions):
        out[:, :, :, m] = images[index][top : top + height, left : left + width]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="coates1.8b")
    parser.add_argument("--minibatch", type=int, default=96)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    shape = tuple(load_config(args.config).input_shape)
    images = natural_images(shape[2])
    positions = crop_positions(images, shape, args.minibatch, numpy.random.default_rng(0))
    half = ((0, shape[0] // 2), (0, shape[1] // 2))
    ways = {
        "scattered (before)": lambda: scattered_crops(images, shape, positions, "float32"),
        "cut_crops": lambda: cut_crops(images, shape, positions, dtype="float32"),
        "cut_crops, one 2x2 tile's window": lambda: cut_crops(images, shape, positions, half, "float32"),
    }
    assert numpy.array_equal(ways["scattered (before)"](), ways["cut_crops"]())
    rows = []
    print(f"{args.config} {shape} x {args.minibatch}")
    for name, way in ways.items():
        way()
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            way()
            times.append(time.perf_counter() - started)
        rows.append({"way": name, "median_ms": statistics.median(times) * 1e3, "runs_ms": [t * 1e3 for t in times]})
        print(f"  {name:<36}{rows[-1]['median_ms']:>8.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "shape": shape, "minibatch": args.minibatch, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
