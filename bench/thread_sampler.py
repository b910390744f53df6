"""Where the threads of this process are, by sampling their Python stacks (a wall-clock profile of worker threads).

    with ThreadSampler(prefix="Dask-Default-Threads") as sampler:
        ...                      # worker threads of this process run their tasks
    sampler.print_table(top=25)

cProfile sees one thread; the worker threads that share a GPU in one process
take turns at the GIL, so what matters is where each of them spends wall
time. A daemon thread looks at ``sys._current_frames()`` every
``interval`` seconds and counts, for each thread whose name contains
``prefix``: the innermost frame (the line a thread is at: in a C call that
released the GIL, waiting for it, or running), each dasksae function on the
stack once (inclusive time), and the innermost line of our package (where
our code called out). The sampler itself needs the GIL, so it samples
at most about once a switch interval (5 ms) while the workers compute; the
figures are shares of samples, not exact times.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time


def _where(frame) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{code.co_name}:{frame.f_lineno}"


def _function(frame) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{code.co_name}"


class ThreadSampler:
    def __init__(self, prefix: str = "Dask-Default-Threads", interval: float = 0.0005, package: str = f"{os.sep}dasksae{os.sep}"):
        self.prefix, self.interval, self.package = prefix, interval, package
        self.own_ours = collections.Counter()  # innermost line of our package
        self.own = collections.Counter()  # innermost line
        self.inclusive = collections.Counter()  # function anywhere on the stack
        self.samples = 0  # thread samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-sampler", daemon=True)

    def _run(self):
        names = {}
        while not self._stop.is_set():
            for thread in threading.enumerate():
                names[thread.ident] = thread.name
            for ident, frame in sys._current_frames().items():
                if self.prefix not in names.get(ident, ""):
                    continue
                self.samples += 1
                self.own[_where(frame)] += 1
                seen, ours = set(), None
                while frame is not None:
                    if self.package in frame.f_code.co_filename:
                        seen.add(_function(frame))
                        ours = ours or _where(frame)
                    frame = frame.f_back
                self.inclusive.update(seen)
                self.own_ours[ours] += 1
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def table(self, top: int = 25) -> dict:
        total = max(self.samples, 1)
        return {"samples": self.samples,
                "own": [(where, count / total) for where, count in self.own.most_common(top)],
                "own_ours": [(str(where), count / total) for where, count in self.own_ours.most_common(top)],
                "inclusive": [(name, count / total) for name, count in self.inclusive.most_common(top)]}

    def print_table(self, top: int = 25, label: str = ""):
        table = self.table(top)
        print(f"  {label}host samples of worker threads: {table['samples']}; innermost line (share of samples):")
        for where, share in table["own"]:
            print(f"    {share * 100:5.1f}%  {where}")
        print("  innermost line in dasksae (share of samples):")
        for where, share in table["own_ours"]:
            print(f"    {share * 100:5.1f}%  {where}")
        print("  dasksae functions on the stack (inclusive share):")
        for name, share in table["inclusive"]:
            print(f"    {share * 100:5.1f}%  {name}")
        return table
