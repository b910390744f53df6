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
