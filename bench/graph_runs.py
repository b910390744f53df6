"""How a tile's recorded SPMD step is cut into CUDA-graph runs, per tile: graph runs, sends and host-side calls.

    python bench/graph_runs.py --config tiny --tiles 2x2

Runs one step on a CPU cluster of worker threads (one per tile), then plans
each tile's recorded program as :mod:`dasksae.cuda_graphs` would on a GPU.
Each graph run is one launch a step; each send copies its values out of the
graphs' memory and records an event; each graph run that starts with a
receipt copies the received values into its staged buffers first.  The
columns after the first five are for ``DASKSAE_GRAPH_CUTS=receipts`` (the
default): its graph runs, the arrays a tile step sends and receives, and
the launches that copy them since session 12 (the sends after one run go
together, and so does each receipt, :mod:`dasksae.kernels.copies`).
"""

from __future__ import annotations

import argparse
import collections

import numpy


def run_levels(programs) -> dict:
    """How deep each tile's graph run lies in the step's chain of waits: ``{(program number, run number): level}``.

    ``programs``: the tiles' recorded programs (:class:`~dasksae.tile_program.TileProgram`), cut into graph runs at
    receipts (the default, ``DASKSAE_GRAPH_CUTS=receipts``).  A run waits for its tile's run before it and for the
    runs whose sends it receives (a run's sends are made at its end); its level is one more than the deepest of
    those.  Runs of one level can run side by side on one GPU; the deepest level is the step's longest chain."""
    from dasksae import cuda_graphs
    from dasksae.tile_program import CALL

    sent_by, waits = {}, {}
    for number, program in enumerate(programs):
        run = -1
        for kind, indices in cuda_graphs.plan(program.operations, cut_at_sends=False):
            operation = program.operations[indices[0]]
            if kind == cuda_graphs.MESSAGE:
                sent_by[operation[2]] = (number, run)
                continue
            run += 1
            waits[(number, run)] = [suffix for suffix, _ in operation[3]] if operation[0] == CALL else []
    levels: dict = {}

    def level(key):
        if key[1] < 0:  # sends made before the program's first graph run
            return 0
        if key not in levels:
            number, run = key
            before = [level((number, run - 1))] if run else [0]
            levels[key] = 1 + max(before + [level(sent_by[suffix]) for suffix in waits[key] if suffix in sent_by])
        return levels[key]

    for key in waits:
        level(key)
    return levels


def main():
    import distributed

    from dasksae import TiledNetwork, cuda_graphs, named_config, tile_program
    from dasksae.kernels import copies

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--tiles", default="2x2")
    args = parser.parse_args()
    config = named_config(args.config)
    rows, cols = (int(n) for n in args.tiles.split("x"))
    tile_program.forget_all()
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (1,)).astype("float32")
    with distributed.LocalCluster(n_workers=rows * cols, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            TiledNetwork(config, args.tiles, client, seed=0, dtype="float32").step(x, 1e-3, 0.9)
    print(f"{'tile program':>12} {'operations':>10} {'graph runs':>10} {'sends':>6} {'host-side':>9} {'runs with receipts':>18}"
          f" {'graph runs, cut at receipts':>27} {'arrays sent':>11} {'received':>8} {'copy launches':>13}")
    for number, program in enumerate(tile_program._programs.values()):
        runs = cuda_graphs.plan(program.operations)
        kinds = collections.Counter(kind for kind, _ in runs)
        received = sum(1 for kind, indices in runs if kind == cuda_graphs.GRAPH and program.operations[indices[0]][3])
        cut = cuda_graphs.plan(program.operations, cut_at_sends=False)
        merged = sum(kind == cuda_graphs.GRAPH for kind, _ in cut)
        sent = sum(len(program.operations[indices[0]][3]) for kind, indices in cut if kind == cuda_graphs.MESSAGE)
        taken = [sum(len(arguments) for _, arguments in program.operations[indices[0]][3])
                 for kind, indices in cut if kind == cuda_graphs.GRAPH and program.operations[indices[0]][3]]
        per_launch = copies.SEGMENTS_A_LAUNCH  # (values of tiny's messages are single arrays)
        batches = [sum(len(program.operations[i][3]) for i in indices)
                   for indices in cuda_graphs.send_batches(program.operations, cut).values()]
        launches = sum(-(-n // per_launch) for n in batches + taken)
        print(f"{number:>12} {len(program.operations):>10} {kinds[cuda_graphs.GRAPH]:>10} {kinds[cuda_graphs.MESSAGE]:>6} "
              f"{kinds[cuda_graphs.EAGER]:>9} {received:>18} {merged:>27} {sent:>11} {sum(taken):>8} {launches:>13}")

    levels = run_levels(list(tile_program._programs.values()))
    print(f"longest chain of graph runs a step: {max(levels.values())} (a tile's longest program: "
          f"{max(run for _, run in levels) + 1} runs; runs of one level can run side by side)")


if __name__ == "__main__":
    main()
