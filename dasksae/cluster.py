"""Connect to a Dask cluster, or start a local one (the CPU default)."""

from __future__ import annotations

import contextlib
import logging

from .errors import DasksaeError


def worker_environment() -> dict:
    """The environment that the workers dasksae starts get before they spawn (``distributed.nanny.pre-spawn-environ``).

    Distributed's default sets ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    turns off glibc's sliding mmap threshold: every array over 128 KiB is then
    mapped afresh and page-faulted on each allocation.  On the 2-core CPU
    machine that made a ``tiny`` step (M=64, 10 steps a task) run at 114-120
    ms in a worker against 43-48 ms without it.  The thread-count variables stay.
    """
    import dask
    import distributed  # noqa: F401 - its config defaults, the ones kept here

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ["MALLOC_TRIM_THRESHOLD_"] = None  # the nanny leaves a variable whose value is None unset
    return environ


@contextlib.contextmanager
def local_worker_environment():
    """Workers started inside this context get :func:`worker_environment`.

    A nanny writes its pre-spawn environment into this process's
    ``os.environ`` and leaves it there, so after any cluster started with
    distributed's defaults, ``MALLOC_TRIM_THRESHOLD_`` would reach every later
    worker process by inheritance.  If it holds distributed's default value,
    it is taken out of ``os.environ`` while workers start here (this process's
    own allocator read it at start-up and is unaffected) and put back after.
    A value of the user's own stays.
    """
    import os

    import dask

    name = "MALLOC_TRIM_THRESHOLD_"
    default = dask.config.get("distributed.nanny.pre-spawn-environ", {}).get(name)
    left = os.environ.get(name)
    drop = left is not None and default is not None and left == str(default)
    if drop:
        del os.environ[name]
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environment()}):
            yield
    finally:
        if drop:
            os.environ[name] = left


@contextlib.contextmanager
def connect(scheduler: str | None = None, scheduler_file: str | None = None, workers: int = 1,
            timeout: float = 10.0, dashboard: bool = False, gpu: bool = False, workers_per_gpu: int | None = None,
            threads: bool = False):
    """Yield a :class:`distributed.Client`.

    ``scheduler`` (an address) or ``scheduler_file`` joins an existing cluster;
    otherwise a :class:`~distributed.LocalCluster` of ``workers`` single-threaded
    processes is started for the duration.  With ``gpu``: dask-cuda's
    ``LocalCUDACluster`` (one worker per GPU, UCX when distributed-ucxx is
    installed), or, with ``workers_per_gpu = K``, K plain workers that share
    GPU 0 as threads of one process (for tests and overhead figures on a one-GPU machine).
    ``threads``: the local CPU workers too are threads of one process (halos
    handed over by reference instead of through TCP).  A scheduler that does not answer
    within ``timeout`` seconds is one clear error.
    """
    from distributed import Client, LocalCluster

    if scheduler or scheduler_file:
        where = scheduler or f"the scheduler file {scheduler_file}"
        try:
            client = Client(scheduler, scheduler_file=scheduler_file, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DasksaeError(
                f"could not reach a Dask scheduler at {where} within {timeout:g} s ({reason}); "
                "check the address, or leave out --scheduler to start a local cluster."
            ) from None
        with client:
            yield client
        return
    if workers < 1:
        raise DasksaeError(f"--workers must be a positive integer, got {workers}.")
    if gpu and not workers_per_gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise DasksaeError(
                "--gpu needs dask-cuda (pip install 'dasksae[gpu]'), or --workers-per-gpu K for plain workers sharing a GPU."
            ) from None
        protocol = "tcp"
        try:
            import distributed_ucxx  # noqa: F401

            protocol = "ucx"
        except ImportError:
            pass
        with local_worker_environment():
            cluster = LocalCUDACluster(protocol=protocol, threads_per_worker=1, dashboard_address=":8787" if dashboard else None)
            with cluster, Client(cluster) as client:
                yield client
        return
    if gpu:
        # K workers sharing one GPU run as threads of one process: one CUDA context, each on its own stream
        # (dasksae.streams), halos handed over by reference.  As K processes the GPU time-slices between their
        # contexts: coates200, M=96, 2x2 tiles on an H100 took 374 ms a float32 step against 276 ms as threads
        # (one run, README's run C).
        workers = workers_per_gpu
    processes = not (gpu or threads)
    # Workers in this process log through this process's handlers, which LocalCluster quiets only while it
    # starts: without this, closing the cluster could print a batched comm's INFO traceback after a run.
    quiet = contextlib.nullcontext() if processes else _quiet_distributed_logs()
    with quiet, local_worker_environment():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":8787" if dashboard else None,
            silence_logs=logging.CRITICAL,
        )
        with cluster, Client(cluster) as client:
            yield client


def _quiet_distributed_logs():
    """Distributed's stream handlers at CRITICAL for the duration, as worker processes get them."""
    from distributed.utils import silence_logging_cmgr

    return silence_logging_cmgr(logging.CRITICAL)
