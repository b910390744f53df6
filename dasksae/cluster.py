"""Connect to a Dask cluster, or start a local one (the CPU default)."""

from __future__ import annotations

import contextlib
import logging

from .errors import DasksaeError


@contextlib.contextmanager
def connect(scheduler: str | None = None, scheduler_file: str | None = None, workers: int = 1,
            timeout: float = 10.0, dashboard: bool = False):
    """Yield a :class:`distributed.Client`.

    ``scheduler`` (an address) or ``scheduler_file`` joins an existing cluster;
    otherwise a :class:`~distributed.LocalCluster` of ``workers`` single-threaded
    processes is started for the duration.  A scheduler that does not answer
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
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":8787" if dashboard else None,
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        yield client
