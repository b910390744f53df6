"""The host's Python time of a halo exchange between CUDA-graphed tile steps, on a CPU, NumPy arrays standing in.

    python bench/exchange_host.py --json bench/results/session30/exchange-host.json

Four worker threads sharing a GPU take turns at the GIL, and between two halo exchanges what each does in Python
adds up (README, "Why the missed targets are missed").  This times that Python alone, without a GPU: a sender's
batch of sends out of its graphs' memory (``GraphedStep._send_batch``, in launch mode, the sends going in place into
the outboxes their receivers' graphs read) and each receiver taking its send (``_staged_received``) and ending its
step (``_step_launched``), with ``DASKSAE_SEND_PLANS`` off and on.  NumPy arrays stand in for device arrays in the
staging functions, as the CPU tests do (``tests/test_cuda_graphs.py``); the copies are NumPy's (small arrays, so
the time is Python's), where the GPU makes them in one kernel launch, and no CUDA event is recorded or waited for,
which a GPU adds (a few microseconds each).  So the figures are the Python part of each exchange, for comparing
one way with another, not a GPU step's host time.

A batch here is ``--sends`` sends (each to its own receiver, ``--arrays`` arrays a send), the shape of a ``tiny`` or
``coates200`` 2x2 tile's batches: 53-57 sends a tile step in 19-20 batches, 60-93 arrays
(``python bench/graph_runs.py --config tiny --tiles 2x2``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy


class _Sends:
    """A program of consecutive sends, operation ``i`` to tile ``i`` of registers ``i``."""

    def __init__(self, sends: int):
        self.operations = [("send", index, f"halo{index}", [index]) for index in range(sends)]


class _OneReceipt:
    """A program whose operation 0 takes one message: what ``receive`` hands over next."""

    def __init__(self):
        self.next = None

    def receive(self, executor, prefix, index):
        return [self.next]


class _Postbox:
    def __init__(self):
        self.sent = []

    def _send(self, tile, tag, value, event=None):
        self.sent.append(value)


def _bare_step(cuda_graphs, program):
    """A GraphedStep with no graphs: enough for its sends and receipts."""
    step = object.__new__(cuda_graphs.GraphedStep)
    step.program, step._retired = program, []
    step.outboxes, step.sent, step.received, step.adopted, step.adopted_read = {}, {}, {}, {}, {}
    step.send_plans = {}
    return step


def time_exchanges(send_plans: bool, sends: int, arrays: int, steps: int, shape=(8, 4)) -> dict:
    """Microseconds of Python a launched step, median over ``steps``: the sender's batch, and all receipts."""
    from dasksae import cuda_graphs

    saved = {name: getattr(cuda_graphs, name) for name in ("on_device", "OUTBOXES", "IN_PLACE", "SEND_PLANS")}
    cuda_graphs.on_device = lambda value: isinstance(value, numpy.ndarray)
    cuda_graphs.OUTBOXES, cuda_graphs.IN_PLACE, cuda_graphs.SEND_PLANS = True, True, send_plans
    try:
        sender = _bare_step(cuda_graphs, _Sends(sends))
        receivers = [_bare_step(cuda_graphs, _OneReceipt()) for _ in range(sends)]
        registers = [[numpy.zeros(shape, "float32") for _ in range(arrays)] for _ in range(sends)]
        postbox = _Postbox()
        indices = list(range(sends))
        send_times, receive_times = [], []
        for number in range(steps + 3):
            mode = ("staged", "capture")[number] if number < 2 else "launch"
            for values in registers:
                for array in values:
                    array.fill(number)
            postbox.sent.clear()
            started = time.perf_counter_ns()
            sender._send_batch(postbox, "s.", registers, indices, mode)
            sent = time.perf_counter_ns()
            for receiver, lent in zip(receivers, postbox.sent):
                receiver.program.next = lent
                staged = receiver._staged_received(None, "", 0, mode)
                if mode != "staged":
                    receiver._step_launched()
                assert staged[0][0][0][0, 0] == number, (number, staged[0][0][0][0, 0])  # each received value read this step's
            received = time.perf_counter_ns()
            if number >= 3:  # the staged step, the capture and the first launch (which makes the plans) left out
                send_times.append((sent - started) / 1e3)
                receive_times.append((received - sent) / 1e3)
        planned = sum(plan is not None for plan in sender.send_plans.values())
        in_place = sum(outbox.adopted for outboxes in sender.outboxes.values() for outbox in outboxes)
        return {"send_plans": send_plans, "sends": sends, "arrays_a_send": arrays, "steps": steps,
                "batch_us": statistics.median(send_times), "receipts_us": statistics.median(receive_times),
                "plans_kept": planned, "adopted_outboxes": in_place}
    finally:
        for name, value in saved.items():
            setattr(cuda_graphs, name, value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", default="1,3,8", help="sends a batch, comma-separated (default 1,3,8)")
    parser.add_argument("--arrays", type=int, default=1, help="arrays a send (default 1)")
    parser.add_argument("--steps", type=int, default=2000, help="launched steps timed (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="each row this many times, in turn (default 2)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'sends':>5} {'arrays':>6} {'send plans':>10} {'batch us':>9} {'receipts us':>11} {'a send us':>9}")
    for sends in [int(s) for s in args.sends.split(",")]:
        for _ in range(args.rounds):
            for plans in (False, True):
                row = time_exchanges(plans, sends, args.arrays, args.steps)
                row["a_send_us"] = (row["batch_us"] + row["receipts_us"]) / sends
                rows.append(row)
                print(f"{sends:>5} {args.arrays:>6} {'on' if plans else 'off':>10} {row['batch_us']:>9.1f} "
                      f"{row['receipts_us']:>11.1f} {row['a_send_us']:>9.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"rows": rows, "python": platform.python_version(), "numpy": numpy.__version__,
                       "machine": platform.processor() or platform.machine()}, file, indent=1)


if __name__ == "__main__":
    main()
