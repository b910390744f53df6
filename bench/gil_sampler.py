"""Who holds the GIL, and doing what: py-spy attached to this process, sampling only the thread that holds it.

    with GilSampler(rate=1000) as sampler:
        ...                      # worker threads of this process run their tasks
    sampler.print_table(top=25)

Worker threads that share a GPU in one process take turns at the GIL; when
their step is host-bound, the question is whether the GIL is busy all the
time (then only less Python per step helps) and with what.
:mod:`thread_sampler` cannot say: it needs the GIL itself, so it samples at
most once a switch interval, and a thread that waits for the GIL looks the
same as one that runs. ``py-spy record --gil`` reads the interpreter's memory
from another process and keeps, at each sample, only the thread that holds
the GIL; ``--nonblocking`` leaves the process running while it reads. So

* the share of samples that found the GIL held is how busy the GIL was
  (samples taken are counted from the rate and the block's wall time);
* the stacks of those samples say where the holding time goes.

py-spy (``pip install py-spy``; ``PY_SPY`` names the executable) must be
allowed to read this process's memory (ptrace); where it is not, the sampler
says so and the block runs unsampled.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import tempfile
import time


def _frame_name(frame: str) -> tuple[str, str]:
    """``("function (file:line)", "function (file)")`` of a py-spy raw frame ``function (path:line)``."""
    function, _, where = frame.rpartition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    base = os.path.basename(path) or where
    return f"{function} ({base}:{line})", f"{function} ({base})"


def summarize(lines, seconds: float, rate: float, thread_prefix: str = "Dask-Default-Threads") -> dict:
    """Shares of wall time from py-spy ``--threads --gil`` raw lines (``thread (id): name;frame;... count``)."""
    expected = max(1.0, seconds * rate)
    by_group = collections.Counter()
    innermost = collections.Counter()
    inclusive = collections.Counter()
    workers = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        group = thread_prefix if thread_prefix in thread else thread.rstrip("0123456789-_ ") or "?"
        by_group[group] += count
        if group != thread_prefix:
            continue
        workers += count
        names = [_frame_name(f) for f in frames[1:]]
        if names:
            innermost[names[-1][0]] += count
        for function in {name for _, name in names}:
            inclusive[function] += count
    total = sum(by_group.values())
    return {
        "seconds": seconds, "rate": rate, "samples_expected": expected, "samples_held": total,
        "gil_busy_share": total / expected, "worker_threads_share": workers / expected,
        "by_thread": {group: count / expected for group, count in by_group.most_common()},
        "innermost": {k: v / expected for k, v in innermost.most_common()},
        "inclusive": {k: v / expected for k, v in inclusive.most_common()},
    }


class GilSampler:
    """``py-spy record --gil`` on this process while the block runs; :meth:`print_table` says what it found."""

    def __init__(self, rate: int = 1000, executable: str | None = None, thread_prefix: str = "Dask-Default-Threads",
                 gil: bool = True, native: bool = False):
        """``gil=False``: sample every thread that runs on a CPU (py-spy leaves out idle ones), not only the
        GIL's holder: then shares are of CPU time, and sum over threads to more than 100%.  ``native``: with
        the C frames (``--native``; where py-spy cannot unwind them it samples nothing, and says so)."""
        self.rate = rate
        self.gil, self.native = gil, native
        self.thread_prefix = thread_prefix
        self.executable = executable or os.environ.get("PY_SPY") or shutil.which("py-spy")
        self.result: dict | None = None
        self.error = ""

    def command(self, pid: int, path: str) -> list:
        """py-spy's command line: the GIL's holder only (``--gil``) or every thread on a CPU; without stopping
        the process, except with C frames (``--native`` cannot read them from a running process)."""
        return [self.executable, "record", "--pid", str(pid), *(["--gil"] if self.gil else []),
                *(["--native"] if self.native else []), "--threads", *([] if self.native else ["--nonblocking"]),
                "--rate", str(self.rate), "--format", "raw", "--output", path]

    def __enter__(self):
        self._process = None
        if not self.executable:
            self.error = "py-spy not found (pip install py-spy, or set PY_SPY)"
            return self
        self._path = tempfile.mktemp(suffix=".txt", prefix="gil-")
        self._process = subprocess.Popen(self.command(os.getpid(), self._path), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)  # attached before the block starts
        if self._process.poll() is not None:
            self.error = f"py-spy could not sample this process: {self._process.stdout.read().strip()[-300:]}"
            self._process = None
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self._process is None:
            return False
        seconds = time.perf_counter() - self._started
        self._process.send_signal(signal.SIGINT)
        try:
            output, _ = self._process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            output, _ = self._process.communicate()
        if not os.path.exists(self._path):
            self.error = f"py-spy wrote nothing: {output.strip()[-300:]}"
            return False
        with open(self._path) as file:
            self.result = summarize(file, seconds, self.rate, self.thread_prefix)
        os.unlink(self._path)
        return False

    def print_table(self, top: int = 25) -> dict:
        if self.result is None:
            print(f"  GIL samples: none ({self.error})")
            return {"error": self.error}
        r = self.result
        held = "with the GIL held" if self.gil else "on a CPU"
        print(f"  {'GIL held' if self.gil else 'threads on a CPU'} {100 * r['gil_busy_share']:.1f}% of {r['seconds']:.1f} s "
              f"({r['samples_held']} of about {r['samples_expected']:.0f} samples at {r['rate']} Hz"
              f"{'' if self.gil else ', summed over threads'}); by the worker threads {100 * r['worker_threads_share']:.1f}%")
        for title, table in (("by thread", r["by_thread"]), ("worker threads, innermost frame", r["innermost"]),
                             ("worker threads, functions on the stack", r["inclusive"])):
            print(f"  {title} (share of wall time {held}):")
            for name, share in list(table.items())[:top]:
                print(f"    {100 * share:6.2f}%  {name}")
        return r
