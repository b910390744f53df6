"""On the GPU machine: the demo's GPU branch without its pictures (no matplotlib or scikit-image there).

Carries a data store built here (``dasksae data build bench/device-data/tiny --config tiny --frames 2048 --tiles 2x2``),
trains on 4 plain workers sharing the GPU (as ``dasksae demo`` does when CuPy finds a GPU), reading each tile's
window on its worker, then runs the neuron search (both protocols and baselines) on the test set.
"""

import json
import os
import sys

from dasksae.cluster import connect
from dasksae.neurons import evaluate, guessing, network_responses
from dasksae.network import named_config
from dasksae.train import train_tiled

if __name__ == "__main__":
    store, out = sys.argv[1], os.environ.get("OUT", "/tmp")
    config = named_config("tiny")
    with connect(workers=4, gpu=True, workers_per_gpu=4) as client:
        network, records = train_tiled(client, "tiny", tiles="2x2", steps=60, minibatch=32, data=store,
                                       out=f"{out}/run", device="cuda", progress=False)
        placement = network.placement
        kinds = client.run(lambda: __import__("cupy").cuda.runtime.getDeviceCount())
        params = network.parameters()
    import numpy
    import zarr

    group = zarr.open_group(store, mode="r")
    test, labels = group["test/frames"][:].astype("float64"), group["test/labels"][:].astype(bool)
    result = evaluate("trained", network_responses([{k: numpy.asarray(v, "float64") for k, v in p.items()} for p in params], test, config), labels)
    summary = {"first_loss": records[0]["loss"], "last_loss": records[-1]["loss"], "median_step_s": sorted(r["seconds"] for r in records)[30],
               "tasks": records[-1]["tasks"], "workers_see_gpus": kinds, "held_out": result.held_out["best_accuracy"],
               "le2012": result.le2012["best_accuracy"], "guess": guessing(labels)}
    print(json.dumps(summary))
