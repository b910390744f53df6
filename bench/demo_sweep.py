"""How the face fraction, learning rate and length of training change the demo's best neuron (single process, fast).

    python bench/demo_sweep.py 0.3 1e-3 3000 0      # face fraction, lr, joint steps, greedy steps per stage

Builds (once per face fraction) the bundled store for ``tiny`` in /tmp, trains
the single-process reference on it (the same updates the tiled network makes),
and prints the held-out best accuracy and AUC and Le 2012's accuracy of its top
layer. Results of the runs quoted in README are in ``bench/results/demo-sweep.txt``.
"""

import os
import sys
import time

import numpy
import zarr

from dasksae import named_config
from dasksae.data import build_bundled_store
from dasksae.neurons import evaluate, network_responses
from dasksae.optim import init_velocity
from dasksae.reference import init_params, train_step

if __name__ == "__main__":
    config = named_config("tiny")
    face_fraction, lr, steps, greedy = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    path = f"/tmp/dasksae-sweep-store-{face_fraction}"
    if not os.path.exists(path):
        build_bundled_store(path, config, frames=4096, face_fraction=face_fraction, tiles="2x2")
    group = zarr.open_group(path, mode="r")
    train = group["train/frames"][:]
    test, labels = group["test/frames"][:].astype("float64"), group["test/labels"][:].astype(bool)
    params = init_params(config, seed=0, dtype="float32")
    velocity = init_velocity(params)
    started, position, batch = time.time(), 0, 32
    for stage in [k for k in range(3) for _ in range(greedy)] + [None] * steps:
        result = train_step(params, velocity, train[..., position : position + batch], config, lr, 0.9, stage=stage)
        position = (position + batch) % (train.shape[-1] - batch)
    weights = [{k: numpy.asarray(v, "float64") for k, v in p.items()} for p in params]
    found = evaluate("trained", network_responses(weights, test, config), labels)
    print(f"face fraction {face_fraction} lr {lr} steps {steps} greedy {greedy}: loss {result.loss:.0f} "
          f"held-out accuracy {found.held_out['best_accuracy']:.3f} AUC {found.held_out['auc']:.3f} "
          f"Le 2012 {found.le2012['best_accuracy']:.3f} ({time.time() - started:.0f} s)")
