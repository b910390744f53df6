"""The local cluster dasksae starts: its workers' environment."""

import os

import pytest

from dasksae.cluster import connect


def _environment():
    return {name: os.environ.get(name) for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}


@pytest.mark.skipif("MALLOC_TRIM_THRESHOLD_" in os.environ, reason="the test process itself sets MALLOC_TRIM_THRESHOLD_")
def test_workers_keep_glibc_mmap_threshold_but_one_blas_thread():
    """Distributed's MALLOC_TRIM_THRESHOLD_ (which made NumPy steps 2.5x slower in workers) is not set in the
    workers dasksae starts; the one-thread BLAS settings of distributed's default still are."""
    import dask
    import distributed  # noqa: F401 - its config defaults

    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")  # distributed's default
    with connect(workers=1) as client:
        (seen,) = client.run(_environment).values()
    assert seen == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}
    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")  # the user's config is back


def test_workers_sharing_a_gpu_are_threads_of_one_process():
    """``--workers-per-gpu K``: K workers in one process (one CUDA context, a stream each), not K processes
    whose contexts the GPU would time-slice."""
    with connect(gpu=True, workers_per_gpu=3) as client:
        pids = client.run(os.getpid)
    assert len(pids) == 3 and set(pids.values()) == {os.getpid()}


def test_local_cpu_workers_as_threads_of_one_process():
    with connect(workers=2, threads=True) as client:
        pids = client.run(os.getpid)
    assert len(pids) == 2 and set(pids.values()) == {os.getpid()}


def test_workers_in_this_process_do_not_print_distributed_info_logs(monkeypatch):
    """What in-process workers log at INFO as their cluster closes (such as a closed batched comm's traceback)
    stays quiet, as worker processes' logs do; afterwards distributed's stream handler is as it was.  Outside
    pytest, distributed installs such a handler on its logger; pytest's logging plugin stops it, so the test
    installs one."""
    import io
    import logging

    import distributed

    closing = distributed.LocalCluster.close

    def close_then_log(self, *args, **kwargs):
        result = closing(self, *args, **kwargs)
        logging.getLogger("distributed.batched").info("Batched Comm Closed (test)")
        return result

    monkeypatch.setattr(distributed.LocalCluster, "close", close_then_log)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # distributed's default level
    try:
        with connect(workers=2, threads=True):
            pass
        assert handler.level == logging.NOTSET
        logging.getLogger("distributed.batched").warning("after the cluster (test)")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert "Batched Comm Closed (test)" not in stream.getvalue()
    assert "after the cluster (test)" in stream.getvalue()


def test_workers_do_not_inherit_the_malloc_setting_an_earlier_cluster_left(monkeypatch):
    """Distributed's nannies leave their pre-spawn environment in this process's os.environ; a cluster started
    with distributed's defaults earlier in the same process must not hand MALLOC_TRIM_THRESHOLD_ to the workers
    dasksae starts later.  The variable is back afterwards."""
    import dask
    import distributed  # noqa: F401 - its config defaults

    left = str(dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"])
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", left)
    with connect(workers=1) as client:
        (seen,) = client.run(_environment).values()
    assert seen["MALLOC_TRIM_THRESHOLD_"] is None
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == left


GiB = 2**30


def test_the_gpu_cluster_takes_ucx_and_an_rmm_pool_that_cupy_allocates_from_where_installed():
    from dasksae.cluster import describe_gpu_cluster, gpu_cluster_options

    free = lambda: [80 * GiB + 12345, 79 * GiB + 300 * 2**20, 81 * GiB]  # noqa: E731 - three GPUs' free bytes
    both = gpu_cluster_options(ucx=True, rmm=True, free_memory=free)
    # 90% of the smallest GPU's free memory, in whole 256 MiB: no worker's pool asks more than its GPU has
    assert both == {"protocol": "ucx", "rmm_pool_size": 285 * 256 * 2**20, "rmm_allocator_external_lib_list": ["cupy"]}
    assert both["rmm_pool_size"] % (256 * 2**20) == 0 and both["rmm_pool_size"] <= 0.9 * min(free())
    assert describe_gpu_cluster(both, 3) == ("GPU cluster: 3 worker(s), one a GPU, over UCX, an RMM pool of 71.2 GiB "
                                             "a worker that CuPy allocates from")
    neither = gpu_cluster_options(ucx=False, rmm=False, free_memory=free)
    assert neither == {"protocol": "tcp"}  # CuPy's own pool: no RMM pool would be left unused beside it
    assert "CuPy's own memory pool" in describe_gpu_cluster(neither, 1)
    assert gpu_cluster_options("tcp", "off", ucx=True, rmm=True, free_memory=free) == {"protocol": "tcp"}
    assert gpu_cluster_options("ucx", "on", ucx=True, rmm=True, free_memory=free) == both


@pytest.mark.parametrize("protocol, rmm_pool, match", [
    ("ucx", "auto", r"--protocol ucx needs distributed-ucxx \(pip install 'dasksae\[ucx\]'\)"),
    ("auto", "on", r"--rmm-pool on needs RMM"),
    ("udp", "auto", r"--protocol must be auto, tcp or ucx, got 'udp'"),
    ("auto", "big", r"--rmm-pool must be auto, on or off, got 'big'"),
])
def test_a_transport_or_pool_asked_for_and_not_installed_is_refused(protocol, rmm_pool, match):
    from dasksae.cluster import gpu_cluster_options
    from dasksae.errors import DasksaeError

    looked_up = []
    with pytest.raises(DasksaeError, match=match):
        gpu_cluster_options(protocol, rmm_pool, ucx=False, rmm=False, free_memory=lambda: looked_up.append(1) or [GiB])
    assert not looked_up


@pytest.mark.parametrize("where", [["--scheduler", "tcp://127.0.0.1:9"], ["--workers-per-gpu", "4"], []])
def test_protocol_and_rmm_pool_are_refused_where_dasksae_does_not_start_the_gpu_cluster(capsys, where):
    from dasksae.cli import main

    assert main(["train", "--config", "tiny", "--tiles", "2x2", "--steps", "1", "--protocol", "tcp", *where]) == 2
    err = capsys.readouterr().err
    assert "--protocol and --rmm-pool set up the cluster that --gpu starts" in err and "Traceback" not in err


@pytest.mark.parametrize("pool, expected", [
    (None, "cuda worker --scheduler-file {file} --rmm-pool-size 0.9 --set-rmm-allocator-for-libs cupy --nthreads 1"),
    ("off", "cuda worker --scheduler-file {file} --nthreads 1"),
])
def test_the_cluster_script_gives_cupy_the_workers_rmm_pool(tmp_path, pool, expected):
    """``cluster/local-gpus.sh`` with a stand-in ``dask`` on the PATH that records how it is called: a worker's
    RMM pool is one CuPy allocates from (a pool CuPy did not draw from would leave it a tenth of the GPU)."""
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("setsid") is None:
        pytest.skip("setsid is needed to keep the script's `kill 0` inside its own process group")
    script = Path(__file__).resolve().parent.parent / "cluster" / "local-gpus.sh"
    calls = tmp_path / "calls"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dask").write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\n')
    (tmp_path / "bin" / "dask").chmod(0o755)
    environment = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HOST": "127.0.0.1",
                   "SCHEDULER_FILE": str(tmp_path / "scheduler.json")}
    if pool is not None:
        environment["RMM_POOL_SIZE"] = pool
    done = subprocess.run(["setsid", "bash", str(script)], env=environment, capture_output=True, text=True, timeout=60)
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("scheduler --protocol ucx --host 127.0.0.1"), (lines, done.stderr)
    assert lines[1] == expected.format(file=tmp_path / "scheduler.json"), lines
    assert "dasksae train --scheduler ucx://127.0.0.1:8786 --gpu" in done.stdout


def test_gpu_on_a_machine_where_nvml_finds_no_gpu_is_one_line(monkeypatch, capsys, tmp_path):
    """dask-cuda installed (here a stand-in module: CI has none), but no driver: one line, not a traceback from
    every worker that dask-cuda would start."""
    import sys
    import types

    from dasksae.cli import main

    class NVMLError_LibraryNotFound(Exception):  # noqa: N801 - pynvml's name
        def __str__(self):
            return "NVML Shared Library Not Found"

    def get_gpu_count():
        raise NVMLError_LibraryNotFound()

    started = []
    package = types.ModuleType("dask_cuda")
    package.LocalCUDACluster = lambda *args, **kwargs: started.append(kwargs)
    utils = types.ModuleType("dask_cuda.utils")
    utils.get_gpu_count = get_gpu_count
    utils.get_n_gpus = get_gpu_count
    package.utils = utils
    monkeypatch.setitem(sys.modules, "dask_cuda", package)
    monkeypatch.setitem(sys.modules, "dask_cuda.utils", utils)
    assert main(["train", "--gpu", "--config", "tiny", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("dasksae: error: --gpu found no GPU (NVML Shared Library Not Found); leave out --gpu on a "
                           "machine without one, or check the NVIDIA driver.")
    assert not started
    utils.get_gpu_count = lambda: 0
    assert main(["train", "--gpu", "--config", "tiny", "--steps", "1"]) == 2
    assert "--gpu found no GPU (NVML counts none)" in capsys.readouterr().err and not started


def test_gpu_with_more_tiles_than_gpus_is_refused_before_a_cluster_starts(monkeypatch, capsys):
    """``--gpu`` starts one worker a GPU (as many as dask-cuda's ``get_n_gpus``, which counts ``CUDA_VISIBLE_DEVICES``
    where it is set): 2x2 tiles (the default) on one GPU are refused in one line naming ``--tiles 1x1`` and
    ``--workers-per-gpu``, instead of a cluster that waits for workers that will not come; as many tiles as GPUs
    start it."""
    import sys
    import types

    from dasksae.cli import main

    started = []
    package = types.ModuleType("dask_cuda")  # a stand-in: CI has no dask-cuda and no GPU

    def local_cuda_cluster(*args, **kwargs):
        started.append(kwargs)
        raise RuntimeError("the stand-in starts no cluster")

    package.LocalCUDACluster = local_cuda_cluster
    utils = types.ModuleType("dask_cuda.utils")
    utils.get_gpu_count = lambda: 8  # NVML's count of the machine's GPUs
    utils.get_n_gpus = lambda: 1  # the visible ones: CUDA_VISIBLE_DEVICES=3, say
    package.utils = utils
    monkeypatch.setitem(sys.modules, "dask_cuda", package)
    monkeypatch.setitem(sys.modules, "dask_cuda.utils", utils)
    assert main(["train", "--gpu", "--config", "tiny", "--steps", "1", "--protocol", "tcp", "--rmm-pool", "off"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("dasksae: error: the tiles need 4 workers but --gpu starts one a GPU and there is 1 GPU; "
                           "use --tiles 1x1, or --workers-per-gpu 4 for 4 workers sharing GPU 0.")
    assert not started
    utils.get_n_gpus = lambda: 2
    assert main(["train", "--gpu", "--config", "tiny", "--tiles", "2x2", "--steps", "1", "--protocol", "tcp",
                 "--rmm-pool", "off"]) == 2
    assert "there are 2 GPUs; use at most 2 tiles, or --workers-per-gpu 4" in capsys.readouterr().err and not started
    utils.get_n_gpus = lambda: 8  # all 8 visible: the cluster starts (the stand-in then fails)
    with pytest.raises(RuntimeError, match="the stand-in starts no cluster"):
        main(["train", "--gpu", "--config", "tiny", "--steps", "1", "--protocol", "tcp", "--rmm-pool", "off"])
    assert started == [{"threads_per_worker": 1, "dashboard_address": None, "protocol": "tcp"}]
