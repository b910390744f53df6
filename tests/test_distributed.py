"""The tile array on a real LocalCluster of worker processes equals the single-process reference,
keeps every parameter on its tile's worker, and moves only halos."""

import collections
import time

import numpy
import pytest

distributed = pytest.importorskip("distributed")

from dasksae import ConfigError, named_config  # noqa: E402
from dasksae.diagnostics import clear_transfer_logs, transfers  # noqa: E402
from dasksae.kernels.backend import device_wait_seconds  # noqa: E402
from dasksae.tile_array import DaskExecutor  # noqa: E402
from dasksae.tiled_network import TiledNetwork  # noqa: E402
from dasksae.tiling import TileGrid  # noqa: E402
from test_tiling import UNEVEN  # noqa: E402
from tiled_checks import (  # noqa: E402
    check_each_layer_alone,
    check_network_gradients,
    check_steps_in_one_task,
    check_training_steps,
)

WORKERS = 6


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="2GiB"
    ) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def on_cluster(client, execution="spmd"):
    def factory(config, tiles, **kwargs):
        return TiledNetwork(config, tiles, client, execution=execution, **kwargs)

    return factory


# tilings 1x1, 2x2, 3x2, and uneven ones (UNEVEN's maps split into unequal rows and columns)
CASES = [("tiny", 1, 1), ("tiny", 2, 2), ("tiny", 3, 2), ("uneven", 2, 3), ("uneven", 3, 1)]


def _config(name):
    return UNEVEN if name == "uneven" else named_config(name)


@pytest.mark.parametrize("name,rows,cols", CASES)
def test_full_network_objective_and_gradients(client, rng, name, rows, cols):
    check_network_gradients(on_cluster(client), _config(name), rows, cols, rng)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 2), (2, 3)])
def test_each_layer_alone(client, rng, rows, cols):
    grid = TileGrid(UNEVEN, rows, cols)
    workers = sorted(client.scheduler_info()["workers"])
    executor = DaskExecutor(client, {tile: workers[n] for n, tile in enumerate(grid.tiles())})
    check_each_layer_alone(executor, UNEVEN, rows, cols, rng)


def test_greedy_gradients_le2012(client, rng):
    config = UNEVEN.replace(objective="le2012", name="uneven-le2012")
    check_network_gradients(on_cluster(client), config, 2, 2, rng, stage=1)


@pytest.mark.parametrize("execution", ["spmd", "graph"])
@pytest.mark.parametrize("name,rows,cols", CASES)
def test_three_steps_give_the_reference_losses(client, name, rows, cols, execution):
    """Both ways of running a step (one task per tile exchanging halos directly, or a task per layer and
    halo strip) train exactly as the single-process network."""
    network, reports = check_training_steps(on_cluster(client, execution), _config(name), rows, cols)
    if execution == "spmd" and rows * cols > 1:
        assert reports[-1].statistics["tasks"] == rows * cols + 1


def test_parameters_stay_and_only_halos_move(client):
    """After training steps: every weight and momentum chunk is on its tile's worker (who_has), every
    tile task ran there (task stream), and the bytes moved between workers are the halo strips the tile
    geometry predicts, far below the weights' size."""
    config = named_config("tiny")
    network = TiledNetwork(config, "2x2", client, seed=0, dtype="float64", execution="graph")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (8,))
    network.step(x, 1e-3, 0.9)
    clear_transfer_logs(client)
    with distributed.get_task_stream(client):  # registers the scheduler's task-stream plugin
        report = network.step(x, 1e-3, 0.9)
        step_keys = set(network.executor.statistics.keys)
        distributed.wait(network.state_handles())  # the new state picks may finish after the losses arrive
    moved = transfers(client)
    tile_tasks = []
    for _ in range(100):  # the stream records a task a moment after its result is available: wait for all of them
        tile_tasks = [t for t in client.get_task_stream(start="10 minutes") if t["key"] in step_keys]
        if len(tile_tasks) >= report.statistics["tasks"]:
            break
        time.sleep(0.1)
    for stage_state in network.state:
        for tile, handle in stage_state.parts.items():
            assert client.who_has([handle])[handle.key] == (network.placement[tile],)
    # keys are "<layer>-<tile row>-<tile col>-<n>", named after the tile whose worker must run them
    worker_of = {f"{i}-{j}": w for (i, j), w in network.placement.items()}
    assert len(tile_tasks) == report.statistics["tasks"]
    for task in tile_tasks:
        parts = task["key"].split("-")
        assert task["worker"] == worker_of[f"{parts[-3]}-{parts[-2]}"], task["key"]
    moved_bytes = sum(t["bytes"] for t in moved)
    predicted = report.statistics["halo_bytes"]
    weight_bytes = sum(p["encoder"].nbytes for p in network.parameters())
    # halos plus small reports and the scalars a: within 10% of the prediction
    assert predicted <= moved_bytes <= 1.1 * predicted, (moved_bytes, predicted)
    assert not any(key.startswith(("stage1-state", "stage1-init")) for t in moved for key in t["keys"])
    assert moved_bytes < weight_bytes


def test_spmd_steps_keep_parameters_in_place_and_send_only_halos(client):
    """One task per tile and step, each on its tile's worker; afterwards every state chunk is still there, and the
    bytes the workers' mailboxes received are the halo bytes the tile geometry predicts (plus small reports)."""
    from dasksae.spmd import received_bytes

    config = named_config("tiny")
    network = TiledNetwork(config, "2x2", client, seed=0, dtype="float64")
    assert network.execution == "spmd"
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (8,))
    network.step(x, 1e-3, 0.9)
    before = received_bytes(client)
    clear_transfer_logs(client)
    with distributed.get_task_stream(client) as stream:
        report = network.step(x, 1e-3, 0.9)
    after = received_bytes(client)
    moved = sum(after.values()) - sum(before.values())
    predicted = report.statistics["halo_bytes"]
    assert predicted <= moved <= 1.1 * predicted, (moved, predicted)
    steps = [t for t in stream.data if t["key"].startswith("spmd-step")]
    assert len(steps) == 4
    worker_of = {f"{i}-{j}": w for (i, j), w in network.placement.items()}
    for task in steps:
        parts = task["key"].split("-")
        assert task["worker"] == worker_of[f"{parts[-3]}-{parts[-2]}"], task["key"]
    # the scheduler moved nothing but the client's minibatch and the small summary: no weights
    assert sum(t["bytes"] for t in transfers(client)) < 0.01 * sum(p["encoder"].nbytes for p in network.parameters())
    for stage_state in network.state:
        for tile, handle in stage_state.parts.items():
            assert client.who_has([handle])[handle.key] == (network.placement[tile],)


def test_more_tiles_than_workers_is_refused(client):
    """At once, in one sentence, where the client's own cluster is not set to have enough workers: no wait for
    workers that will not come."""
    with pytest.raises(ConfigError, match=f"3x3 tiles need 9 workers but the cluster has {WORKERS} and is set to have "
                                          f"{WORKERS}; use at most {WORKERS} tiles"):
        TiledNetwork(named_config("tiny"), "3x3", client)


def test_more_tiles_than_workers_of_a_scheduler_is_refused_after_a_wait(monkeypatch):
    """A client that only connects to a scheduler cannot know what workers will come: the network waits
    (``WORKERS_WAIT_SECONDS``, 1 s here) before it refuses, in one sentence."""
    from dasksae import tiled_network

    monkeypatch.setattr(tiled_network, "WORKERS_WAIT_SECONDS", 1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster.scheduler_address) as client:
            with pytest.raises(ConfigError, match="2x1 tiles need 2 workers but the cluster has 1 after waiting 1 s"):
                TiledNetwork(named_config("tiny"), "2x1", client)


def test_the_workers_a_cluster_is_set_to_have_count_each_of_a_jobs_workers():
    """A cluster whose specs are jobs of several workers each (dask-jobqueue's ``processes=``) plans all of them:
    two jobs of two workers are four workers, not two specs; a client that holds no cluster knows none."""
    from types import SimpleNamespace

    from dasksae.tiled_network import _workers_to_come

    jobs = SimpleNamespace(plan={"job-0-a", "job-0-b", "job-1-a", "job-1-b"}, worker_spec={"job-0": {}, "job-1": {}})
    assert _workers_to_come(SimpleNamespace(cluster=jobs)) == 4
    assert _workers_to_come(SimpleNamespace(cluster=None)) is None
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert _workers_to_come(client) == 2


@pytest.mark.parametrize("connected_by_address", [False, True], ids=["own-cluster", "scheduler-address"])
def test_a_network_waits_for_workers_still_connecting(connected_by_address):
    """Built while its cluster has one worker of the two its tiles need, a network waits for the second to connect
    and places a tile on each: a cluster of the client's scaled to two just before (set to have two, one still
    starting), or a scheduler that a worker joins a second later."""
    import threading

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster.scheduler_address if connected_by_address else cluster) as client:
            if connected_by_address:
                threading.Timer(1.0, cluster.scale, args=(2,)).start()
            else:
                cluster.scale(2)
            network = TiledNetwork(named_config("tiny"), "2x1", client, seed=0)
            assert len(set(network.placement.values())) == 2


def test_weights_are_dask_arrays_chunked_by_tile_and_checkpoints_load_into_any_tiling(client, tmp_path):
    from dasksae.reference import features

    config = named_config("tiny")
    network = TiledNetwork(config, "3x2", client, seed=2, dtype="float64")
    x = numpy.random.default_rng(1).standard_normal(config.input_shape + (4,))
    network.step(x, 1e-3, 0.9)
    encoder = network.weights(1)
    assert encoder.numblocks[:2] == (3, 2)
    assert encoder.chunks[0] == tuple(b1 - b0 for (b0, b1), _ in (network.grid.window(1, "blocks", (i, 0)) for i in range(3)))
    params = network.parameters()
    numpy.testing.assert_array_equal(encoder.compute(), params[1]["encoder"])
    path = network.save(tmp_path, step=1)
    again = TiledNetwork.load(path, "2x1", client)
    for got, want in zip(again.parameters(), params):
        for name in want:
            numpy.testing.assert_array_equal(got[name], want[name])
    for got, want in zip(again.velocity(), network.velocity()):
        for name in want:
            numpy.testing.assert_array_equal(got[name], want[name])
    numpy.testing.assert_allclose(again.features(x), features(params, x, config), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tiles", ["1x1", "2x2", "3x1"])
def test_several_steps_in_each_tiles_task(client, tiles):
    rows, cols = (int(v) for v in tiles.split("x"))
    reports = check_steps_in_one_task(on_cluster(client), UNEVEN if tiles == "3x1" else named_config("tiny"), rows, cols)
    assert reports[0].statistics["tasks"] == (2 if tiles == "1x1" else rows * cols + 1)


@pytest.mark.parametrize("tiles,task_end", [("1x1", "wait"), ("1x1", "queue"), ("2x2", "wait"), ("2x2", "queue")])
def test_submitted_steps_queue_behind_each_other_and_equal_steps_read_in_turn(client, monkeypatch, tiles, task_end):
    """submit_steps returns before its steps end (the second group is submitted while the first still runs, and
    queues behind it on the workers), and two groups read afterwards give the losses and weights of the same
    groups run with steps() one after the other.  ``queue`` (DASKSAE_TASK_END, as the client sees it): the losses'
    tasks go at a lower priority than the steps' (on a GPU, so that a tile's next task queues its work before the
    losses are waited for; on the CPU the tasks are as they were)."""
    from dasksae import streams

    monkeypatch.setattr(streams, "TASK_END", task_end)
    config = named_config("tiny")
    data = numpy.random.default_rng(7)
    batches = [data.standard_normal(config.input_shape + (4,)) for _ in range(8)]
    ahead = TiledNetwork(config, tiles, client, seed=3, dtype="float64")
    placed = [ahead.place(batch) for batch in batches]  # on the workers first: submitting is then only tasks
    first = ahead.submit_steps(placed[:4], 1e-3, 0.9)
    second = ahead.submit_steps(placed[4:], 1e-3, 0.9)
    assert not first.done() and not second.done()
    got = [r.loss for r in first.result() + second.result()]
    assert first.done() and second.done()
    in_turn = TiledNetwork(config, tiles, client, seed=3, dtype="float64")
    expected = [r.loss for group in (batches[:4], batches[4:]) for r in in_turn.steps(group, 1e-3, 0.9)]
    assert got == expected
    for mine, theirs in zip(ahead.parameters(), in_turn.parameters()):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])


def test_a_failing_tile_fails_the_whole_spmd_step_at_once(client):
    """One tile's task raising makes its neighbours stop waiting for its messages: the step fails within seconds,
    naming the tile, instead of hanging until a timeout."""
    import time

    from dasksae.spmd import new_step_id, spmd_step

    config = named_config("tiny")
    network = TiledNetwork(config, "2x2", client, seed=0, dtype="float64")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (4,))
    placed = network.place(x)
    step_id = new_step_id()
    futures = []
    for tile in network.grid.tiles():
        initial = [network.state[k].parts[tile] for k in range(3)] + (list(network.scale) if tile == (0, 0) else [])
        bundle = {"states": None, "scales": None} if tile == (1, 1) else None  # a broken bundle: this tile fails
        futures.append(client.submit(spmd_step, tile, network.grid, network.placement, step_id, bundle, 1e-3, 0.9, None, None, 1,
                                     placed.array.parts[tile], *([] if bundle else initial),
                                     workers=[network.placement[tile]], allow_other_workers=False, pure=False))
    started = time.perf_counter()
    distributed.wait(futures, timeout=60)
    assert time.perf_counter() - started < 30
    errors = [str(f.exception()) for f in futures]
    assert all(f.status == "error" for f in futures)
    assert sum("tile (1, 1)" in e for e in errors) >= 3, errors


def test_two_networks_on_one_cluster_never_share_tasks(client):
    """Task keys are explicit; two networks built the same way must still get keys of their own (a shared key is the
    same task to the scheduler, which would hand one network the other's results)."""
    config = named_config("tiny")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (4,))
    first = TiledNetwork(config, "2x2", client, seed=0, dtype="float64", execution="graph")
    second = TiledNetwork(config, "2x2", client, seed=1, dtype="float64", execution="graph")
    a, b = first.step(x, 1e-3, 0.9), second.step(x, 1e-3, 0.9)
    keys_first = {h.key for s in first.state for h in s.parts.values()}
    keys_second = {h.key for s in second.state for h in s.parts.values()}
    assert not keys_first & keys_second
    assert a.loss != b.loss


def test_worker_threads_of_one_process_hand_halos_over_by_reference():
    """Workers as threads of one process (as several share one GPU): SPMD steps train as the reference does, and
    every halo is put into the neighbour's mailbox by the sending task's own thread, not handed to the event
    loop (whose every hand-off waits for the GIL)."""
    import asyncio

    from dasksae import spmd

    puts = []
    put = spmd.Mailbox.put

    def recording_put(self, tag=None, data=None, nbytes=None):
        try:
            asyncio.get_running_loop()
            puts.append("event loop")
        except RuntimeError:
            puts.append("task thread")
        return put(self, tag, data, nbytes)

    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            spmd.Mailbox.put = recording_put
            try:
                check_training_steps(on_cluster(client), named_config("tiny"), 2, 2, steps=2)
                check_steps_in_one_task(on_cluster(client), named_config("tiny"), 2, 2, steps=2)
            finally:
                spmd.Mailbox.put = put
            waited = client.run(lambda dask_worker: getattr(dask_worker, spmd.MAILBOX).waited_seconds)
            cpu = client.run(lambda dask_worker: getattr(dask_worker, spmd.MAILBOX).cpu_seconds)
            switches = client.run(lambda dask_worker: getattr(dask_worker, spmd.MAILBOX).context_switches)
    assert puts and set(puts) == {"task thread"}, collections.Counter(puts)
    assert len(waited) == 4 and sum(waited.values()) > 0  # tiles wait for their neighbours' halos (bench/gpu_step.py)
    assert len(cpu) == 4 and all(seconds > 0 for seconds in cpu.values())  # each tile's thread ran its tasks on a CPU
    assert all(counts["voluntary"] > 0 for counts in switches.values())  # and slept while it waited for halos
    assert device_wait_seconds() == 0.0  # NumPy tiles never wait for a device


@pytest.mark.parametrize("tiles", ["1x1", "3x2"])
def test_workers_cut_their_own_parts_of_a_synthetic_batch(client, tiles):
    """NaturalImageBatches.place sends only the crops' positions: each tile's worker cuts its own window, and the
    parts are the client-made batch's, from the same seeded draws."""
    from dasksae.data import NaturalImageBatches

    config = named_config("tiny")
    network = TiledNetwork(config, tiles, client, seed=0)
    batches, twin = (NaturalImageBatches(config.input_shape, 8, seed=3) for _ in range(2))
    for _ in range(2):  # the second batch checks that both streams advanced alike
        placed, expected = batches.place(network), twin.next()
        assert placed.shape == expected.shape and placed.dtype == expected.dtype
        if placed.handle is not None:
            parts = {(0, 0): network.executor.gather([placed.handle])[0]}
            windows = {(0, 0): ((0, expected.shape[0]), (0, expected.shape[1]))}
        else:
            parts, windows = placed.array.values(), placed.array.windows
        assert len(parts) == network.grid.count
        for tile, ((r0, r1), (c0, c1)) in windows.items():
            assert numpy.array_equal(numpy.asarray(parts[tile]), expected[r0:r1, c0:c1]), tile
