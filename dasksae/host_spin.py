"""One busy CPU beside worker threads that share a GPU: their step is a chain of thread wake-ups, and a host
whose CPUs idle wakes threads slowly.

Four worker threads sharing one GPU (``--workers-per-gpu 4``, 2x2 tiles)
hand each other halos about twenty times a tile step: a thread puts a
message and notifies its neighbour, which wakes, takes the GIL, and
launches its next CUDA graph. Sampled from outside the process by py-spy,
the GIL was held only 62% of such a step (H200, coates200 bfloat16, M=96,
``bench/results/session14/gil/``), so the step waits for threads to be
woken, not for Python to run. On that machine (a virtual machine whose
guest has no cpuidle driver) the same row took 41.5-45.6 ms in four of five
plain runs, and 38.4-39.8 ms in each of three runs beside a process that kept
one CPU busy (a spinning process, or py-spy sampling); ``bench/results/session14/wake/``.
A spinning CPU keeps the host's processor out of its deep idle states, so
wake-ups are quick; MPI libraries busy-poll for the same reason.

So where tile tasks on a GPU share their process with other tiles' workers,
:func:`keep_host_awake` starts one child process that spins (one CPU, no
GIL of ours) for as long as tile tasks keep coming: each task renews it,
and it exits :data:`LINGER_SECONDS` after the last renewal, or at once when
this process ends (its stdin, our pipe, closes). ``DASKSAE_HOST_SPIN``:
``auto`` (the default) as just said, ``0`` never, ``1`` for any tile task
of a worker that shares its process, CPU included (for experiments: on a
2-core machine it takes one of the two).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from .switches import switch

SPIN = switch("DASKSAE_HOST_SPIN")
LINGER_SECONDS = 10.0  # the spinner exits this long after the last tile task renewed it

# the child: spins in slices of about a millisecond; between slices, reads its stdin without waiting (each byte
# renews it; end of file means this process closed the pipe or ended) and exits once it was not renewed for linger
_CHILD = r"""
import os, select, sys, time
linger = float(sys.argv[1])
fd = sys.stdin.fileno()
renewed = time.monotonic()
while time.monotonic() - renewed < linger:
    for _ in range(20000):
        pass
    if select.select([fd], [], [], 0)[0]:
        if not os.read(fd, 4096):
            break
        renewed = time.monotonic()
"""


class HostSpinner:
    """A child process that keeps one CPU busy while :meth:`renew` is called at least every ``linger`` seconds."""

    def __init__(self, linger: float = LINGER_SECONDS):
        self.linger = linger
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    def renew(self) -> None:
        """Keep the spinner going (starting it if it is not running)."""
        with self._lock:
            if self.running:
                try:
                    os.write(self._process.stdin.fileno(), b".")
                    return
                except OSError:  # it exited since the check: start another
                    pass
            self._close()
            self._process = subprocess.Popen([sys.executable, "-c", _CHILD, repr(self.linger)], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
            self.starts += 1

    def stop(self, timeout: float = 5.0) -> None:
        """End the spinner now (closing its stdin) and wait for it."""
        with self._lock:
            self._close(timeout)

    def _close(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_spinner = HostSpinner()


def keep_host_awake(shares_gpu: bool, shares_process: bool) -> bool:
    """Start or renew this process's spinner as ``DASKSAE_HOST_SPIN`` says, for a tile task whose worker
    ``shares_process`` with other tiles' workers, ``shares_gpu`` (on a GPU) too; returns whether it runs."""
    if SPIN == "0" or not shares_process or (SPIN == "auto" and not shares_gpu):
        return False
    _spinner.renew()
    return True


def spinner() -> HostSpinner:
    """This process's spinner (for tests and benchmarks)."""
    return _spinner
