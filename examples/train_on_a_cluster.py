"""Build the tiny network, tile it 2x2 over a local Dask cluster, train it, save it, load it back.

    python examples/train_on_a_cluster.py

With an existing cluster, replace the LocalCluster by Client("tcp://scheduler:8786").
"""

import tempfile

from distributed import Client, LocalCluster

from dasksae import TiledNetwork, named_config
from dasksae.data import NaturalImageBatches

if __name__ == "__main__":
    config = named_config("tiny")
    with LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster):
        network = TiledNetwork(config, tiles="2x2", seed=0)  # the current client; each tile makes its weights on its worker
        batches = NaturalImageBatches(config.input_shape, batch_size=16, seed=1)
        for step in range(1, 21):
            # place(): each tile's worker cuts its own part of the batch (batches.next() would make it here)
            report = network.step(batches.place(network), lr=1e-3, momentum=0.9)  # joint update; stage=k for greedy
            if step % 5 == 0:
                print(f"step {step}: loss {report.loss:.1f}, {report.statistics['tasks']} tasks per step")
        encoder = network.weights(stage=0)  # a Dask array chunked by tile; the chunks stay on their workers
        print(f"stage 1 filters {encoder.shape} in {encoder.numblocks[:2]} tile chunks, norm {float((encoder ** 2).sum() ** 0.5):.1f}")
        with tempfile.TemporaryDirectory() as folder:
            path = network.save(folder, step=20)  # tile-chunked Zarr, written by each tile's worker
            again = TiledNetwork.load(path, tiles="1x2")  # any tiling can read it back
            top = again.features(batches.next())
            print(f"reloaded on 1x2 tiles from {path.name}; top-stage output {top.shape}")
