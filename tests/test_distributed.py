"""The tiled network on a real LocalCluster of worker processes equals the single-process reference."""

import numpy
import pytest

distributed = pytest.importorskip("distributed")

from dasksae import ConfigError  # noqa: E402
from dasksae.distributed import TiledNetwork  # noqa: E402
from dasksae.reference import features, init_params  # noqa: E402
from dasksae.tiling import TileGrid  # noqa: E402
from test_tiling import UNEVEN  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 1)])
def test_distributed_forward_equals_reference_and_weights_stay(client, rng, rows, cols):
    grid = TileGrid(UNEVEN, rows, cols)
    params = init_params(UNEVEN, seed=4, dtype="float64")
    x = rng.standard_normal(UNEVEN.input_shape + (3,))
    network = TiledNetwork(client, grid, params)
    where_before = client.who_has(list(network.weights.values()))
    with distributed.get_task_stream(client) as stream:
        result = network.gather(network.forward(x))
    numpy.testing.assert_allclose(result, features(params, x, UNEVEN), rtol=1e-12, atol=1e-12)
    assert client.who_has(list(network.weights.values())) == where_before
    for (k, tile), future in network.weights.items():
        assert client.who_has([future])[future.key] == (network.placement[tile],)
    # every task is keyed "<what>-<tile row>-<tile col>-<n>" by the tile whose worker it was placed on
    # (halo cuts by the tile that owns the strip): all of them, compute and cuts, ran there
    tile_tasks = [t for t in stream.data if t["key"].startswith("stage")]
    assert any("filter-" in t["key"] for t in tile_tasks) and any("pool-lcn" in t["key"] for t in tile_tasks)
    worker_of = {f"{i}-{j}": w for (i, j), w in network.placement.items()}
    for task in tile_tasks:
        parts = task["key"].split("-")
        tile = f"{parts[-3]}-{parts[-2]}"
        assert task["worker"] == worker_of[tile], task["key"]


def test_more_tiles_than_workers_is_refused(client):
    grid = TileGrid(UNEVEN, 2, 3)
    with pytest.raises(ConfigError, match="2x3 tiles need 6 workers but the cluster has 4"):
        TiledNetwork(client, grid, init_params(UNEVEN, seed=0, dtype="float64"))
