"""How the face fraction, learning rate, length of training and the net's shape change the demo's best neuron.

    python bench/demo_sweep.py 0.3 1e-3 3000 0      # face fraction, lr, joint steps, greedy steps per stage
    python bench/demo_sweep.py 0.3 1e-3 3000 0 --maps 8 --sparsity 0.3 --objective le2012 --frames 8192

Single process, fast: builds (once per face fraction and frame count) the bundled store for ``tiny`` in /tmp,
trains the single-process reference on it (the same updates the tiled network makes), and prints the held-out
best accuracy and AUC and Le 2012's accuracy of its top layer, with the same network's at its random
initial weights for comparison.  ``--maps``, ``--top-maps`` (the top stage's alone), ``--field``, ``--step``, ``--pool-size``, ``--sparsity`` and
``--objective`` change ``tiny``'s stages (all three alike) and objective.  Results of the runs quoted in README
are in ``bench/results/demo-sweep.txt``; ``--json`` appends one line of JSON per run to a file.
"""

import argparse
import dataclasses
import json
import os
import time

import numpy
import zarr

from dasksae import named_config
from dasksae.data import build_bundled_store
from dasksae.neurons import evaluate, network_responses
from dasksae.optim import init_velocity
from dasksae.reference import init_params, train_step


def sweep_config(maps=None, field=None, step=None, pool_size=None, sparsity=None, objective=None, top_maps=None):
    """``tiny`` with its three stages' maps, field, step and pooling, the top stage's maps, and its objective,
    changed where given."""
    config = named_config("tiny")
    changes = {k: v for k, v in dict(maps=maps, field=field, step=step, pool_size=pool_size).items() if v is not None}
    if "maps" in changes:
        changes["block"] = (2, 2, min(changes["maps"], 4))
    stages = [dataclasses.replace(stage, **changes) for stage in config.stages]
    if top_maps is not None:
        stages[-1] = dataclasses.replace(stages[-1], maps=top_maps, block=(2, 2, min(top_maps, 4)))
    stages = tuple(stages)
    top = {k: v for k, v in dict(sparsity=sparsity, objective=objective).items() if v is not None}
    return dataclasses.replace(config, stages=stages, **top).validate()


def top_layer_scores(params, test, labels, config) -> dict:
    weights = [{k: numpy.asarray(v, "float64") for k, v in p.items()} for p in params]
    found = evaluate("net", network_responses(weights, test, config), labels)
    return {"held_out": found.held_out["best_accuracy"], "auc": found.held_out["auc"],
            "le2012": found.le2012["best_accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("face_fraction", type=float)
    parser.add_argument("lr", type=float)
    parser.add_argument("steps", type=int)
    parser.add_argument("greedy", type=int)
    for name in ("maps", "top-maps", "field", "step", "pool-size"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--sparsity", type=float)
    parser.add_argument("--objective", choices=("rica", "le2012"))
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="append one JSON line per run to this file")
    args = parser.parse_args()
    config = sweep_config(args.maps, args.field, args.step, args.pool_size, args.sparsity, args.objective, args.top_maps)
    path = f"/tmp/dasksae-sweep-store-{args.face_fraction}" + ("" if args.frames == 4096 else f"-{args.frames}")
    if not os.path.exists(path):
        build_bundled_store(path, named_config("tiny"), frames=args.frames, face_fraction=args.face_fraction,
                            tiles="2x2")
    group = zarr.open_group(path, mode="r")
    train = group["train/frames"][:]
    test, labels = group["test/frames"][:].astype("float64"), group["test/labels"][:].astype(bool)
    params = init_params(config, seed=args.seed, dtype="float32")
    initial = top_layer_scores(params, test, labels, config)
    velocity = init_velocity(params)
    started, position, batch = time.time(), 0, args.minibatch
    for stage in [k for k in range(3) for _ in range(args.greedy)] + [None] * args.steps:
        result = train_step(params, velocity, train[..., position : position + batch], config, args.lr, 0.9,
                            stage=stage)
        position = (position + batch) % (train.shape[-1] - batch)
    trained = top_layer_scores(params, test, labels, config)
    shape = {k: getattr(args, k) for k in ("maps", "top_maps", "field", "step", "pool_size", "sparsity", "objective")
             if getattr(args, k) is not None}
    print(f"face fraction {args.face_fraction} lr {args.lr} steps {args.steps} greedy {args.greedy} {shape} "
          f"frames {args.frames} M {batch} seed {args.seed}: loss {result.loss:.0f} held-out accuracy "
          f"{trained['held_out']:.3f} AUC {trained['auc']:.3f} Le 2012 {trained['le2012']:.3f} "
          f"(random weights: {initial['held_out']:.3f}, AUC {initial['auc']:.3f}) ({time.time() - started:.0f} s)",
          flush=True)
    if args.json:
        with open(args.json, "a") as out:
            out.write(json.dumps({**vars(args), "loss": float(result.loss), "trained": trained,
                                  "random": initial, "seconds": time.time() - started}) + "\n")


if __name__ == "__main__":
    main()
