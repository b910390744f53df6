"""Time groups of training steps as a benchmark row does: one group at a time, or pipelined as ``dasksae train`` runs them.

    times, report = time_groups(network, [batch] * 10, lr=1e-3, momentum=0.9, runs=20, pipelined=True)

``pipelined=False``: each group is submitted, then its reports are read
(:meth:`~dasksae.tiled_network.TiledNetwork.steps`), so each group pays a
round trip through the client.  ``pipelined=True``: each group is submitted
before the previous group's reports are read
(:meth:`~dasksae.tiled_network.TiledNetwork.submit_steps`), so a tile's next
task waits on its worker, not on the client.  A time is a group's, per
step: from the previous group's reports to this group's.

Pipelined, the reports come two groups at a time where a task leaves its
steps queued (``DASKSAE_TASK_END=queue``): a group's losses are read by a
task that runs after its tile's next task where that is ready, and the
client submits a group only once it has the reports of the one before
the last (a session 32 row: 46.7, 4.0, 45.0, 4.2, 24.7 ms a step).  So a
pipelined row is the mean of its groups (:func:`row_seconds`), which counts
the pipeline's fill against it, not the median.
"""

from __future__ import annotations

import statistics
import time


def time_groups(network, group: list, lr: float, momentum: float, runs: int, pipelined: bool = False):
    """``runs`` times the steps of ``group`` (placed batches); returns the seconds a step of each, and the last
    group's last report."""
    times, report = [], None
    if not pipelined:
        for _ in range(runs):
            started = time.perf_counter()
            report = network.steps(group, lr, momentum)[-1]
            times.append((time.perf_counter() - started) / len(group))
        return times, report
    in_flight, last = network.submit_steps(group, lr, momentum), time.perf_counter()
    for index in range(runs):
        following = network.submit_steps(group, lr, momentum) if index + 1 < runs else None
        report = in_flight.result()[-1]
        now = time.perf_counter()
        times.append((now - last) / len(group))
        in_flight, last = following, now
    return times, report


def row_seconds(times: list, pipelined: bool) -> float:
    """A row's seconds a step from :func:`time_groups`' times: their median, or pipelined their mean (see above)."""
    return statistics.fmean(times) if pipelined else statistics.median(times)
