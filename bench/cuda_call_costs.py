"""The host's time of each CUDA call a graphed tile step makes at a halo exchange, from 1 and 4 threads at once.

    python bench/cuda_call_costs.py --threads 1,4,1x4 --json out.json

A tile thread of the four that share a GPU runs 7-9 ms a step on a CPU (session 29's rows), while the Python of its
sends and receipts alone is about 0.4 ms a step (``bench/exchange_host.py`` on a CPU).  What is left is the calls
into CUDA at each exchange and the threads' hand-offs.  This times those calls on the GPU's host: each thread its own
stream, every thread making the same call in a loop at the same time, the host's time a call (what the thread
spends before it can go on; the device's work is not waited for, except between rounds):

* ``event`` makes a CUDA event (``cupy.cuda.Event``, as :func:`dasksae.streams.device_event` does for each batch
  of sends) and ``device_event`` makes and records one;
* ``wait_for_event``: the current stream waits on the device for a recorded event (each receipt of a batch);
* ``graph_launch``: a captured graph of one small kernel (each of the ~20 graph runs of a tile step);
* ``copy_plan``: a kept :class:`~dasksae.kernels.copies.CopyPlan` of three small arrays (one batched launch), and
  ``copy_arrays`` the same copies worked out anew (what each send batch does without ``DASKSAE_SEND_PLANS``);
* ``elementwise``: one small CuPy elementwise kernel, for scale.

``1x4`` is one thread making the calls for four streams in turn, five on one before the next, as one launcher does
for four tiles (``DASKSAE_ONE_LAUNCHER``): set beside ``4`` (four threads, a stream each, calling at once), it tells
whether the calls cost more when four threads make them at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time


def _cases(cupy):
    """Per thread: ``{name: call}``, each made on this thread's stream (the current one when called)."""
    from dasksae.kernels import copies
    from dasksae.kernels.driver_launch import launch_graph
    from dasksae.streams import device_event, wait_for_event

    values = cupy.zeros(4096, "float32")
    pairs = [(cupy.ones(4096, "float32"), cupy.zeros(4096, "float32")) for _ in range(3)]
    plan = copies.CopyPlan(pairs)
    plan.run()  # kernels compiled and loaded before the capture, as a staged tile step does
    values += 1
    stream = cupy.cuda.get_current_stream()
    stream.synchronize()
    stream.begin_capture()
    values += 1
    graph = stream.end_capture()
    recorded = device_event([values])
    return {
        "event": lambda: cupy.cuda.Event(block=False, disable_timing=True),
        "device_event": lambda: device_event([values]),
        "wait_for_event": lambda: wait_for_event(recorded),
        "graph_launch": lambda: launch_graph(graph),
        "copy_plan": plan.run,
        "copy_arrays": lambda: copies.copy_arrays(pairs),
        "elementwise": lambda: values.__iadd__(1),
    }


SWITCH_EVERY = 5  # calls a thread of several streams makes on one before the next (a launcher's resume: a few)


def measure(threads: int, calls: int, rounds: int, streams: int = 1) -> dict:
    """``{case: {"median_us": ..., "per_thread_us": [...]}}``: the host's microseconds a call, each thread's median
    over ``rounds`` rounds of ``calls`` calls (all threads calling at once).  ``streams`` > 1: each thread makes its
    calls on that many streams in turn, :data:`SWITCH_EVERY` on one before it goes to the next (what one launcher
    does for the tiles of several threads, ``DASKSAE_ONE_LAUNCHER``)."""
    import cupy

    barrier = threading.Barrier(threads)
    timings: dict = {}
    lock, setup = threading.Lock(), threading.Lock()
    failures = []

    def run(number):
        try:
            own = [cupy.cuda.Stream(non_blocking=True) for _ in range(streams)]
            cases = []
            for stream in own:
                with stream, setup:  # one capture at a time, with no other thread allocating (as cuda_graphs does)
                    cases.append(_cases(cupy))
                    stream.synchronize()
            turns = [(own[s], cases[s]) for s in range(streams)]
            for name in cases[0]:
                samples = []
                for _ in range(rounds):
                    barrier.wait()
                    started = time.perf_counter()
                    if streams == 1:
                        call = cases[0][name]
                        with own[0]:
                            for _ in range(calls):
                                call()
                    else:
                        for first in range(0, calls, SWITCH_EVERY):
                            stream, calls_on_it = turns[(first // SWITCH_EVERY) % streams]
                            with stream:
                                for _ in range(min(SWITCH_EVERY, calls - first)):
                                    calls_on_it[name]()
                    samples.append((time.perf_counter() - started) / calls * 1e6)
                    for stream in own:  # (not timed) the device's queue does not fill up
                        stream.synchronize()
                with lock:
                    timings.setdefault(name, {})[number] = statistics.median(samples)
        except Exception as error:  # noqa: BLE001 - said in the table, the other threads stop at the barrier
            failures.append(f"{type(error).__name__}: {error}")
            barrier.abort()

    workers = [threading.Thread(target=run, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(failures[0])
    return {name: {"median_us": statistics.median(per.values()), "per_thread_us": [per[n] for n in sorted(per)]}
            for name, per in timings.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,4,1x4",
                        help="thread counts, comma-separated; TxS: T threads each on S streams in turn (default 1,4,1x4: "
                             "one thread, four threads, one thread launching for four streams)")
    parser.add_argument("--calls", type=int, default=200, help="calls a round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)
    import cupy

    table = {}
    for row in args.threads.split(","):
        threads, _, streams = row.partition("x")
        table[row] = measure(int(threads), args.calls, args.rounds, int(streams or 1))
    names = list(next(iter(table.values())))
    print(f"host microseconds a call (median over threads of each thread's median round; TxS: T threads, each on S "
          f"streams in turn), {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    print(f"{'call':>16} " + " ".join(f"{row + ' threads':>12}" for row in table))
    for name in names:
        print(f"{name:>16} " + " ".join(f"{table[row][name]['median_us']:>12.1f}" for row in table))
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"calls": args.calls, "rounds": args.rounds, "cupy": cupy.__version__,
                       "table": {str(t): rows for t, rows in table.items()}}, file, indent=1)


if __name__ == "__main__":
    main()
