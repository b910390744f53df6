"""Spread the tiny network over 4 worker processes and run a minibatch forward through it.

    python examples/distributed_forward.py
"""

import numpy
from distributed import Client, LocalCluster

from dasksae import named_config
from dasksae.distributed import TiledNetwork
from dasksae.reference import features, init_params
from dasksae.tiling import TileGrid

if __name__ == "__main__":
    config = named_config("tiny")
    params = init_params(config, seed=0)
    batch = numpy.random.default_rng(0).standard_normal(config.input_shape + (32,)).astype("float32")
    with LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        network = TiledNetwork(client, TileGrid(config, 2, 2), params)  # weights scattered to their tile's worker
        top = network.gather(network.forward(batch))  # only halo strips move between workers
        error = numpy.abs(top - features(params, batch, config)).max()
        print(f"top-stage output {top.shape}, max difference from the single-process network {error:.2e}")
