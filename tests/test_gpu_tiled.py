"""The tiled network with CuPy chunks on GPU workers equals the CPU network (losses over 5 steps).

Marked ``gpu``: skipped where there is no CUDA device; run on the GPU machine
(``bash bench/gpu_check.sh``), where several plain worker processes share the
one GPU.
"""

import gc

import numpy
import pytest

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")
distributed = pytest.importorskip("distributed")

from dasksae import TiledNetwork, named_config  # noqa: E402
from dasksae.tile_array import LocalExecutor  # noqa: E402

FLOAT32 = 1e-4  # relative, losses after a few float32 SGD steps


def _is_cupy_state(state):
    import cupy

    return all(isinstance(value, cupy.ndarray) for value in state.values())


@pytest.mark.parametrize("workers,tiles,processes,per_task,events,run_ahead,batch", [
    (1, "1x1", True, 1, False, 2, 16), (1, "1x1", True, 5, False, 2, 16), (4, "2x2", True, 1, False, 2, 16),
    (4, "2x2", False, 1, False, 2, 16), (4, "2x2", False, 5, False, 2, 16), (4, "2x2", False, 5, True, 2, 16),
    (4, "2x2", False, 5, True, 0, 16), (1, "1x1", True, 5, False, 2, 96), (4, "2x2", False, 5, True, 2, 96)])
def test_gpu_training_equals_cpu(monkeypatch, workers, tiles, processes, per_task, events, run_ahead, batch):
    """Worker processes, and worker threads of one process, each on its own CUDA stream (dasksae.streams), with
    one step a task and five, and (``events``) halos between threads ordered by CUDA events instead of host
    waits: the same losses and weights as the CPU (a halo read before its stream finished writing it would
    not be).  ``run_ahead``: tile steps the host may queue before the device has run them (DASKSAE_RUN_AHEAD;
    received halos are kept until their reader's stream has passed them); 0 waits for each step.  A minibatch of
    96 runs the default float32 kernels of ours (stages 2 and 3: ``W x`` and the backward's products from the maps,
    ``W^T y``); one of 16 runs none of them (cuBLAS and the gathers)."""
    from dasksae import spmd, streams

    monkeypatch.setattr(spmd, "HALO_EVENTS", events)
    monkeypatch.setattr(streams, "RUN_AHEAD", run_ahead)
    config = named_config("tiny")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (batch,)).astype("float32") for _ in range(5)]
    cpu = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype="float32")
    expected = [cpu.step(x, 1e-3, 0.9).loss for x in batches]
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                                  processes=processes) as cluster:
        with distributed.Client(cluster) as client:
            gpu = TiledNetwork(config, tiles, client, seed=1, dtype="float32", device="cuda")
            got = [r.loss for start in range(0, len(batches), per_task)
                   for r in gpu.steps(batches[start:start + per_task], 1e-3, 0.9)]
            on_gpu = client.gather([client.submit(_is_cupy_state, h, workers=[w])
                                    for h, w in zip(gpu.state[0].parts.values(), gpu.placement.values())])
            assert all(on_gpu)
            params = gpu.parameters()
    for mine, theirs in zip(got, expected):
        assert abs(mine - theirs) <= FLOAT32 * abs(theirs), (got, expected)
    for mine, theirs in zip(params, cpu.parameters()):
        error = numpy.linalg.norm(mine["encoder"] - theirs["encoder"]) / numpy.linalg.norm(theirs["encoder"])
        assert error < FLOAT32


@pytest.mark.parametrize("precision,tolerance", [("tf32", 1e-3), ("bfloat16", 1e-3)])
def test_gpu_reduced_precision_training_follows_float32(precision, tolerance):
    """tf32 and bfloat16 products on the GPU (cuBLAS compute types) over float32 master weights: the losses
    of five joint steps within the stated relative tolerance of float32 on the CPU."""
    config = named_config("tiny")
    data = numpy.random.default_rng(3)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(5)]
    cpu = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="float32")
    expected = numpy.array([cpu.step(x, 1e-3, 0.9).loss for x in batches])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            gpu = TiledNetwork(config, "1x1", client, seed=1, dtype=precision, device="cuda")
            got = numpy.array([gpu.step(x, 1e-3, 0.9).loss for x in batches])
    relative = numpy.abs(got - expected) / numpy.abs(expected)
    assert relative.max() < tolerance, relative


@pytest.mark.parametrize("tiles,precision,cuts,in_place", [
    ("1x1", "float32", "receipts", False), ("1x1", "bfloat16", "receipts", False), ("2x2", "float32", "receipts", False),
    ("2x2", "bfloat16", "receipts", False), ("2x2", "bfloat16", "messages", False), ("2x2", "float32", "receipts", True),
    ("2x2", "bfloat16", "receipts", True)])
def test_cuda_graphs_equal_steps_replayed_as_calls(monkeypatch, tiles, precision, cuts, in_place):
    """Steps replayed as CUDA graphs (staged at the second step, captured at the third, launched from the fourth)
    give the losses and weights of steps replayed as calls.  RICA's ``a`` changes every step and the minibatch
    is new every step: a graph that froze either would differ.  2x2: four worker threads, halos with events;
    ``receipts`` (the default): graph runs cut only where a tile waits for a message; ``messages``: at every
    message as well (DASKSAE_GRAPH_CUTS).  ``in_place``: receivers' graphs read their senders' outboxes, refilled
    in place (DASKSAE_OUTBOX_IN_PLACE), from their batches' plans where DASKSAE_SEND_PLANS is on."""
    from dasksae import cuda_graphs, spmd, tile_program

    monkeypatch.setattr(spmd, "HALO_EVENTS", True)
    monkeypatch.setattr(cuda_graphs, "CUTS", cuts)
    monkeypatch.setattr(cuda_graphs, "IN_PLACE", in_place)
    config = named_config("tiny")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(7)]

    def train(graphs):
        monkeypatch.setattr(cuda_graphs, "GRAPHS", graphs)
        tile_program.forget_all()
        if tiles == "1x1":  # four steps in one task, then three: each loss read at the task's end
            network = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype=precision, device="cuda")
            losses = [r.loss for part in (batches[:4], batches[4:]) for r in network.steps(part, 1e-3, 0.9)]
            return losses, network.parameters()
        return _trained_on_four_worker_threads(config, batches, precision)

    cuda_graphs.failures.clear()
    expected = train(False)
    launched, reused, in_place_before = cuda_graphs.launches, cuda_graphs.reused_outboxes, cuda_graphs.filled_in_place
    planned = cuda_graphs.planned_sends
    got = train(True)
    assert cuda_graphs.launches > launched
    # sends out of the graphs' memory went into outboxes that their receivers had dropped (DASKSAE_OUTBOXES), or
    # straight into those their receivers' graphs read
    assert (cuda_graphs.reused_outboxes > reused or cuda_graphs.filled_in_place > in_place_before) == (tiles != "1x1")
    assert (cuda_graphs.filled_in_place > in_place_before) == in_place, (cuda_graphs.filled_in_place, in_place_before)
    # batches sent in place were sent again from their plans where DASKSAE_SEND_PLANS is on
    assert (cuda_graphs.planned_sends > planned) == (in_place and cuda_graphs.SEND_PLANS), cuda_graphs.planned_sends
    _assert_trained_alike(got, expected)


def _trained_on_four_worker_threads(config, batches, precision):
    """Losses and parameters of ``config`` on 2x2 tiles over four worker threads of this process sharing the GPU:
    the first four ``batches`` in one task, then the rest in another (each loss read at its task's end)."""
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=None, processes=False) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, "2x2", client, seed=1, dtype=precision, device="cuda")
            losses = [r.loss for part in (batches[:4], batches[4:]) for r in network.steps(part, 1e-3, 0.9)]
            return losses, network.parameters()


def _four_thread_graph_trainer(monkeypatch, seed):
    """A function ``train(module, name, value)``: set ``module.name`` to ``value`` and train ``tiny`` in bfloat16
    on 2x2 tiles over four worker threads (CUDA graphs, halos with events, sends in place) from fresh programs."""
    from dasksae import cuda_graphs, spmd, tile_program

    monkeypatch.setattr(spmd, "HALO_EVENTS", True)
    monkeypatch.setattr(cuda_graphs, "GRAPHS", True)
    config = named_config("tiny")
    data = numpy.random.default_rng(seed)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(7)]
    cuda_graphs.failures.clear()

    def train(module, name, value):
        monkeypatch.setattr(module, name, value)
        tile_program.forget_all()
        return _trained_on_four_worker_threads(config, batches, "bfloat16")

    return train


def _assert_trained_alike(got, expected):
    from dasksae import cuda_graphs

    assert cuda_graphs.failures == []
    numpy.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    for mine, theirs in zip(got[1], expected[1]):
        numpy.testing.assert_allclose(mine["encoder"], theirs["encoder"], rtol=1e-5, atol=1e-7)


def test_driver_calls_that_hold_the_gil_train_as_those_that_release_it(monkeypatch):
    """``DASKSAE_DRIVER_GIL=hold``: four worker threads on 2x2 tiles (bfloat16, CUDA graphs, halos with events, sends
    in place) launch their graphs and batched copies, wait for events and record them through the driver with the
    GIL kept (``kernels/driver_launch.py``), and train to the losses and weights of CuPy's calls, which release it."""
    from dasksae.kernels import driver_launch

    train = _four_thread_graph_trainer(monkeypatch, seed=6)
    expected = train(driver_launch, "HOLD", False)
    before = dict(driver_launch.calls)
    got = train(driver_launch, "HOLD", True)
    made = {name: driver_launch.calls[name] - before.get(name, 0) for name in driver_launch.ARGUMENT_TYPES}
    for name in ("cuGraphLaunch", "cuStreamWaitEvent", "cuEventRecord", "cuLaunchKernel"):
        assert made[name] > 0, made  # the held path ran
    _assert_trained_alike(got, expected)


@pytest.mark.parametrize("name", ["FUSED_CUTS", "SEND_PLANS", "ONE_LAUNCHER"])
def test_switches_that_only_batch_copies_train_bit_for_bit_alike(monkeypatch, name):
    """Four worker threads on 2x2 tiles replayed as CUDA graphs train to the same losses and weights, bit for bit
    (the strips and messages are copies, the kernels and their streams the same), with and without
    ``DASKSAE_FUSED_CUTS`` (a tile's strips for its neighbours cut in one ``cut_parts`` call, one strip-kernel
    launch captured in the graphs), ``DASKSAE_SEND_PLANS`` (a send batch made in place again from its plan;
    opt-in) and ``DASKSAE_ONE_LAUNCHER`` (one thread launches the four tiles' graph runs, each on its tile's
    stream; opt-in)."""
    from dasksae import cuda_graphs, launcher, tile_program
    from dasksae.tile_array import cut_parts

    module = {"FUSED_CUTS": tile_program, "SEND_PLANS": cuda_graphs, "ONE_LAUNCHER": launcher}[name]
    train = _four_thread_graph_trainer(monkeypatch, seed=7)
    outcomes = {}
    for on in (False, True):
        planned, launched = cuda_graphs.planned_sends, launcher.launched
        outcomes[on] = train(module, name, on)
        if name == "FUSED_CUTS":
            made = sum(op[0] == 1 and op[1] is cut_parts for p in tile_program._programs.values() for op in p.operations)
        elif name == "SEND_PLANS":
            made = cuda_graphs.planned_sends - planned
        else:
            made = launcher.launched - launched
        assert (made > 0) == on, made
    assert cuda_graphs.failures == []
    numpy.testing.assert_array_equal(outcomes[True][0], outcomes[False][0])
    for mine, theirs in zip(outcomes[True][1], outcomes[False][1]):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])


def test_cuda_graphs_by_default_for_one_tile_and_worker_threads_and_their_memory_is_freed(monkeypatch):
    """``auto``: one tile in-process (no messages) and four worker threads on the GPU replay as graphs, the
    one tile with the losses of its steps as calls; the graphs' private pools hold memory until
    ``forget_all`` frees it.  Tasks on a GPU freeze the process's objects once their programs are built
    (DASKSAE_GC_FREEZE=auto)."""
    from dasksae import collector, cuda_graphs, tile_program

    monkeypatch.setattr(collector, "GC_FREEZE", "auto")
    config = named_config("tiny")
    data = numpy.random.default_rng(6)
    batches = [data.standard_normal(config.input_shape + (8,)).astype("float32") for _ in range(5)]
    losses = {}
    for graphs in (False, "auto"):
        monkeypatch.setattr(cuda_graphs, "GRAPHS", graphs)
        tile_program.forget_all()
        launched = cuda_graphs.launches
        network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="float32", device="cuda")
        losses[graphs] = [network.step(x, 1e-3, 0.9).loss for x in batches]
        assert (cuda_graphs.launches > launched) == (graphs == "auto"), (graphs, cuda_graphs.launches - launched)
    assert cuda_graphs.failures == []
    numpy.testing.assert_allclose(losses["auto"], losses[False], rtol=1e-6)  # as in _assert_trained_alike
    assert cuda_graphs.private_pool_bytes() > 0
    tile_program.forget_all()
    assert cuda_graphs.private_pool_bytes() == 0
    launched = cuda_graphs.launches
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=None, processes=False) as cluster:
        with distributed.Client(cluster) as client:
            network = TiledNetwork(config, "2x2", client, seed=1, dtype="float32", device="cuda")
            network.steps(batches, 1e-3, 0.9)
    assert cuda_graphs.launches > launched
    assert cuda_graphs.private_pool_bytes() > 0
    tile_program.forget_all()
    assert cuda_graphs.private_pool_bytes() == 0
    # DASKSAE_GC_FREEZE=auto: tasks on a GPU froze the process's objects once their programs were built and captured
    assert gc.get_freeze_count() > 0
    collector.thaw()
    assert gc.get_freeze_count() == 0



@pytest.mark.parametrize("tiles, workers, threads", [("1x1", 0, 0), ("1x1", 1, 1), ("1x1", 1, 2), ("2x2", 4, 1)])
def test_steps_left_queued_at_a_task_end_equal_waited_ones(monkeypatch, tiles, workers, threads):
    """DASKSAE_TASK_END=queue: a task of steps returns with them queued on its stream; the next task's
    stream waits for them on the device (with two worker threads it may be the other thread's), its losses are
    read from host memory once their copy is done, and the state taken from the last bundle waits for its steps.
    On 2x2 tiles (four worker threads, SPMD steps) the halos a task received and its stream may still read are
    kept by its tile's next task.  Three groups in flight at once (``threads`` 0: in this process, no Dask) give
    the CPU's losses and weights."""
    from dasksae import streams

    monkeypatch.setattr(streams, "TASK_END", "queue")
    config = named_config("tiny")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (16,)).astype("float32") for _ in range(6)]
    cpu = TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype="float32")
    expected = [cpu.step(x, 1e-3, 0.9).loss for x in batches]

    def train(network):
        pending = [network.submit_steps(batches[start:start + 2], 1e-3, 0.9) for start in range(0, len(batches), 2)]
        return [report.loss for group in pending for report in group.result()], network.parameters()

    if threads == 0:
        got, params = train(TiledNetwork(config, tiles, executor=LocalExecutor(), seed=1, dtype="float32",
                                         device="cuda"))
    else:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads, dashboard_address=None,
                                      processes=False) as cluster:
            with distributed.Client(cluster) as client:
                got, params = train(TiledNetwork(config, tiles, client, seed=1, dtype="float32", device="cuda"))
    for mine, theirs in zip(got, expected):
        assert abs(mine - theirs) <= FLOAT32 * abs(theirs), (got, expected)
    for mine, theirs in zip(params, cpu.parameters()):
        error = numpy.linalg.norm(mine["encoder"] - theirs["encoder"]) / numpy.linalg.norm(theirs["encoder"])
        assert error < FLOAT32


def _allocator_module():
    import cupy

    return getattr(cupy.cuda.get_allocator(), "__module__", None)


@pytest.mark.parametrize("protocol, rmm_pool", [("tcp", "auto"), ("tcp", "off"), ("auto", "auto")])
def test_the_cluster_gpu_starts_trains_as_the_cpu_with_cupy_drawing_on_its_rmm_pool(protocol, rmm_pool):
    """``dasksae train --gpu``'s cluster (dask-cuda, one worker a GPU): with RMM installed, each worker's CuPy
    allocates from an RMM pool sized from the GPUs' free memory (``dasksae.cluster.gpu_cluster_options``); off, from
    CuPy's own pool.  Either way a tile trains as on the CPU.  ``--protocol auto`` (the default) is UCX where
    distributed-ucxx is installed."""
    pytest.importorskip("dask_cuda")
    from dasksae.cluster import _importable, connect

    if rmm_pool == "auto" and not _importable("rmm"):
        pytest.skip("RMM is not installed (it comes with the ucx extra)")
    if protocol == "auto" and not _importable("distributed_ucxx"):
        pytest.skip("distributed-ucxx is not installed (the ucx extra): auto is TCP, as the other cases")
    config = named_config("tiny")
    batches = [numpy.random.default_rng(3).standard_normal(config.input_shape + (16,)).astype("float32")
               for _ in range(3)]
    cpu = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=1, dtype="float32")
    expected = [cpu.step(x, 1e-3, 0.9).loss for x in batches]
    said = []
    with connect(workers=1, gpu=True, protocol=protocol, rmm_pool=rmm_pool, say=said.append) as client:
        assert client.scheduler.address.startswith("ucx://" if protocol == "auto" else "tcp://"), client.scheduler.address
        allocators = set(client.run(_allocator_module).values())
        gpu = TiledNetwork(config, "1x1", client, seed=1, dtype="float32", device="cuda")
        got = [r.loss for r in gpu.steps(batches, 1e-3, 0.9)]
    assert [str(module).startswith("rmm") for module in allocators] == [rmm_pool == "auto"], allocators
    assert ("an RMM pool of" in said[0]) == (rmm_pool == "auto") and said[0].startswith("GPU cluster:")
    for mine, theirs in zip(got, expected):
        assert abs(mine - theirs) <= FLOAT32 * abs(theirs), (got, expected)
