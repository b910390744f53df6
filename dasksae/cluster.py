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


PROTOCOLS = ("auto", "tcp", "ucx")  # --protocol: of the cluster --gpu starts; auto is UCX where distributed-ucxx is installed
RMM_POOLS = ("auto", "on", "off")  # --rmm-pool: auto is on where RMM is installed
RMM_POOL_FRACTION = 0.9  # of the smallest free memory of the GPUs, taken by each worker's pool when it starts
_POOL_ALIGNMENT = 256 * 2**20


def rmm_pool_size(free_bytes) -> int:
    """The RMM pool each GPU worker starts with: :data:`RMM_POOL_FRACTION` of the smallest free memory of the GPUs
    (``free_bytes``, one for each), in whole 256 MiB."""
    return int(min(free_bytes) * RMM_POOL_FRACTION) // _POOL_ALIGNMENT * _POOL_ALIGNMENT


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_memory_of_gpus() -> list[int]:
    """Free bytes of each GPU a ``LocalCUDACluster`` started here would use (``CUDA_VISIBLE_DEVICES``, else all), by
    NVML, as dask-cuda finds them."""
    import pynvml
    from dask_cuda.utils import cuda_visible_devices, get_gpu_handle, get_n_gpus, nvml_device_index

    visible = cuda_visible_devices(0)
    return [pynvml.nvmlDeviceGetMemoryInfo(get_gpu_handle(nvml_device_index(i, visible))).free
            for i in range(get_n_gpus())]


def _check_gpus_found(workers: int) -> None:
    """Refuse ``--gpu`` in one sentence where NVML finds no GPU (no driver, or none visible), before dask-cuda
    starts workers that would fail with a traceback each; and where the tiles need more ``workers`` than the GPUs
    that ``LocalCUDACluster`` starts one worker for (``CUDA_VISIBLE_DEVICES``' where it is set), before a cluster
    starts and waits for workers that will not come."""
    try:
        from dask_cuda.utils import get_gpu_count, get_n_gpus

        found = get_gpu_count()
    except Exception as error:  # noqa: BLE001 - NVML's errors (no library, no driver) are many classes
        raise DasksaeError(f"--gpu found no GPU ({error}); leave out --gpu on a machine without one, or check the "
                           "NVIDIA driver.") from None
    if not found:
        raise DasksaeError("--gpu found no GPU (NVML counts none); leave out --gpu on a machine without one.")
    gpus = get_n_gpus()  # the workers LocalCUDACluster starts: CUDA_VISIBLE_DEVICES' entries where it is set
    if workers > gpus:
        from .tiling import at_most_tiles

        raise DasksaeError(f"the tiles need {workers} workers but --gpu starts one a GPU and there "
                           f"{'is 1 GPU' if gpus == 1 else f'are {gpus} GPUs'}; use {at_most_tiles(gpus)}, or "
                           f"--workers-per-gpu {workers} for {workers} workers sharing GPU 0.")


def gpu_cluster_options(protocol: str = "auto", rmm_pool: str = "auto", *, ucx=None, rmm=None, free_memory=None) -> dict:
    """``LocalCUDACluster``'s options for ``dasksae train --gpu``: the transport, and an RMM pool sized from the GPUs'
    free memory that CuPy allocates from (``rmm_allocator_external_lib_list``; a pool that CuPy did not draw from would
    only take memory from it).

    ``ucx``, ``rmm``: whether distributed-ucxx and RMM can be imported, and ``free_memory`` a function giving each
    GPU's free bytes (by default they are looked up).  A transport or pool asked for by name that is not installed is
    refused in one sentence; ``auto`` takes each where it is installed.
    """
    if protocol not in PROTOCOLS:
        raise DasksaeError(f"--protocol must be {', '.join(PROTOCOLS[:-1])} or {PROTOCOLS[-1]}, got {protocol!r}.")
    if rmm_pool not in RMM_POOLS:
        raise DasksaeError(f"--rmm-pool must be {', '.join(RMM_POOLS[:-1])} or {RMM_POOLS[-1]}, got {rmm_pool!r}.")
    ucx = _importable("distributed_ucxx") if ucx is None else ucx
    rmm = _importable("rmm") if rmm is None else rmm
    if protocol == "ucx" and not ucx:
        raise DasksaeError("--protocol ucx needs distributed-ucxx (pip install 'dasksae[ucx]'); "
                           "leave out --protocol to use TCP where it is missing.")
    if rmm_pool == "on" and not rmm:
        raise DasksaeError("--rmm-pool on needs RMM (pip install 'dasksae[ucx]' brings it, or rmm-cu13); "
                           "leave out --rmm-pool to use CuPy's own pool where it is missing.")
    options = {"protocol": "ucx" if protocol == "ucx" or (protocol == "auto" and ucx) else "tcp"}
    if rmm_pool == "on" or (rmm_pool == "auto" and rmm):
        options["rmm_pool_size"] = rmm_pool_size((free_memory or _free_memory_of_gpus)())
        options["rmm_allocator_external_lib_list"] = ["cupy"]
    return options


def describe_gpu_cluster(options: dict, workers: int) -> str:
    """One line on the cluster ``--gpu`` started: its workers, transport and memory pool."""
    from .accounting import format_bytes

    pool = (f"an RMM pool of {format_bytes(options['rmm_pool_size'])} a worker that CuPy allocates from"
            if "rmm_pool_size" in options else "CuPy's own memory pool (RMM is not installed, or --rmm-pool off)")
    return f"GPU cluster: {workers} worker(s), one a GPU, over {options['protocol'].upper()}, {pool}"


@contextlib.contextmanager
def connect(scheduler: str | None = None, scheduler_file: str | None = None, workers: int = 1,
            timeout: float = 10.0, dashboard: bool = False, gpu: bool = False, workers_per_gpu: int | None = None,
            threads: bool = False, protocol: str = "auto", rmm_pool: str = "auto", say=None):
    """Yield a :class:`distributed.Client`.

    ``scheduler`` (an address) or ``scheduler_file`` joins an existing cluster;
    otherwise a :class:`~distributed.LocalCluster` of ``workers`` single-threaded
    processes is started for the duration.  With ``gpu``: dask-cuda's
    ``LocalCUDACluster`` (one worker per GPU; ``protocol`` and ``rmm_pool``:
    :func:`gpu_cluster_options`; ``say``, if given, is told the cluster in one
    line), or, with ``workers_per_gpu = K``, K plain workers that share
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
        except ImportError as error:
            raise DasksaeError(
                f"--gpu needs dask-cuda (pip install 'dasksae[gpu]'; importing it failed: {error}), or --workers-per-gpu K "
                "for plain workers sharing a GPU."
            ) from None
        _check_gpus_found(workers)
        options = gpu_cluster_options(protocol, rmm_pool)
        with local_worker_environment():
            cluster = LocalCUDACluster(threads_per_worker=1, dashboard_address=":8787" if dashboard else None, **options)
            with cluster, Client(cluster) as client:
                if say is not None:
                    say(describe_gpu_cluster(options, len(cluster.workers)))
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
