"""How long a tile's read of a minibatch from a data store takes, by the store's spatial chunking.

    python bench/read_frames.py --config tiny --tiles 2x2 --minibatch 32 --json bench/results/read-frames-cpu.json

Builds the bundled store (chunks from :func:`dasksae.data.frame_chunk`),
then a copy of its ``train/frames`` whose inner chunks follow every tile
boundary (:func:`dasksae.tiling.aligned_chunk`, what stores used before),
and times :func:`dasksae.data.read_frames` of each tile's window from both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def time_reads(path, windows, minibatch, runs):
    from dasksae.data import read_frames

    rows = []
    for tile, window in windows.items():
        times = []
        for run in range(runs):
            started = time.perf_counter()
            read_frames(str(path), window, run * minibatch, minibatch)
            times.append(time.perf_counter() - started)
        rows.append({"tile": list(tile), "window": [list(w) for w in window], "seconds": statistics.median(times)})
    return rows


def main(argv=None):
    import zarr

    from dasksae.data import build_bundled_store
    from dasksae.network import load_config
    from dasksae.tiling import TileGrid, aligned_chunk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--tiles", default="2x2")
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    grid = TileGrid.parse(config, args.tiles)
    windows = grid.windows(0, "input_owned")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        build_bundled_store(store, config, frames=args.frames, face_fraction=0.3, tiles=args.tiles)
        source = zarr.open_group(str(store), mode="r")["train/frames"]
        aligned = Path(folder) / "aligned"
        chunks = (aligned_chunk(list(windows.values()), 0), aligned_chunk(list(windows.values()), 1)) + source.chunks[2:]
        copy = zarr.open_group(str(aligned), mode="w")
        copy.create_array("train/frames", data=source[:], chunks=chunks, shards=source.shards)
        for label, path, used in (("frame_chunk", store, source.chunks), ("tile-aligned", aligned, chunks)):
            rows = time_reads(path, windows, args.minibatch, args.runs)
            results.append({"chunking": label, "chunks": list(used), "reads": rows})
            times = [r["seconds"] * 1e3 for r in rows]
            print(f"{label:<14} chunks {'x'.join(map(str, used)):<14} a tile's read of {args.minibatch} frames: "
                  f"{min(times):.1f}-{max(times):.1f} ms (median of {args.runs})")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "tiles": args.tiles, "minibatch": args.minibatch,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
