"""What moved between workers: read from the workers' own transfer logs."""

from __future__ import annotations


def _clear(dask_worker):
    dask_worker.transfer_incoming_log.clear()


def _incoming(dask_worker):
    return [(entry["who"], int(entry["total"]), list(entry["keys"])) for entry in dask_worker.transfer_incoming_log]


def clear_transfer_logs(client) -> None:
    """Forget the transfers every worker has logged so far."""
    client.run(_clear)


def transfers(client) -> list[dict]:
    """Every worker-to-worker transfer logged since the last clear: receiver, sender, bytes, keys."""
    result = []
    for receiver, entries in client.run(_incoming).items():
        for sender, total, keys in entries:
            result.append({"to": receiver, "from": sender, "bytes": total, "keys": keys})
    return result
