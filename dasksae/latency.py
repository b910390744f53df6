"""Optional: send scheduler<->worker<->client messages at once instead of batching them.

Distributed batches its small control messages (scheduler to worker every
5 ms, worker to scheduler every 2 ms, client to scheduler every 10 ms).  A
training step is a chain of dependent tasks, and every link of the chain
waits for those batches, so on a step with a critical path of ~30 tasks the
intervals alone add ~0.2 s.  Setting them to 0 (the ``BatchedSend.interval``
attributes, on a running cluster) trades more, smaller messages for shorter
links; DESIGN.md measured a 200-link chain going from 5.7 to 1.8 ms a link on
2 CPU cores.  It is an option (``--eager-messages``), measured in
``bench/tiled_step.py``, because it changes how distributed is tuned.
"""

from __future__ import annotations


def _scheduler(dask_scheduler, interval):
    for comm in list(dask_scheduler.stream_comms.values()) + list(dask_scheduler.client_comms.values()):
        comm.interval = interval
    return len(dask_scheduler.stream_comms)


def _worker(dask_worker, interval):
    dask_worker.batched_stream.interval = interval
    return True


def eager_messages(client, interval: float = 0.0) -> None:
    """Set every batched stream of ``client``'s cluster (scheduler, workers, this client) to ``interval`` seconds."""
    client.run_on_scheduler(_scheduler, interval=interval)
    client.run(_worker, interval=interval)
    if getattr(client, "scheduler_comm", None) is not None and hasattr(client.scheduler_comm, "interval"):
        client.scheduler_comm.interval = interval
