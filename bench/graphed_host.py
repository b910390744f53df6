"""The host's work of worker threads' CUDA-graphed tile steps, on a CPU: every graph launch a no-op, NumPy standing in.

    python bench/graphed_host.py --config tiny --tiles 2x2 --json out.json

Four worker threads sharing a GPU run their tiles' steps as CUDA graphs (``dasksae/cuda_graphs.py``); what a tile
thread does on the host between its launches, and how long it waits for its neighbours' messages, decides how far
the four threads' step is from one tile's (README, "Why the missed targets are missed").  This runs that path with
no GPU: the same SPMD tasks, programs, graph-run plan, staging, outboxes (in place), send batches, mailboxes and
hand-offs between the threads, with NumPy arrays standing in for device arrays (as the CPU tests do), a
string for each send batch's CUDA event, and each graph's launch doing nothing, so the calls inside graph runs do not run and what is timed is the host's work alone.
The first replay is the staged one (the calls run on NumPy), the second stands in for the capture (the calls run,
no graph is made), and later ones launch.  No CUDA call is made at all: not the launches, not the events, not the
copies' kernels (the copies are NumPy's), so on a GPU's host each exchange costs more than here
(``bench/cuda_call_costs.py`` times those calls).

It prints the step's wall time, the CPU time of all tile threads a step (with one launcher, ``DASKSAE_ONE_LAUNCHER``,
nearly all of it is the launcher's thread), and a tile thread's (the median): its CPU, its wait for messages and its
context switches a step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import types

import numpy


_EVENT_STAND_IN = "a CUDA event"


class _PoolStandIn:
    """What a capture asks of CuPy's memory pools, with nothing to hold."""

    def malloc(self, size):  # pragma: no cover - nothing allocates through it here
        raise RuntimeError("no device memory in this benchmark")

    def free_all_blocks(self):
        pass

    def total_bytes(self):
        return 0


@contextlib.contextmanager
def graph_launches_as_no_ops(send_plans: bool, launches_run_calls: bool = False):
    """Patch :mod:`dasksae.cuda_graphs` so that worker threads' tile steps take its path on NumPy, launching nothing.

    ``launches_run_calls``: a launch runs the graph run's calls instead (on the staged buffers and the receipts, as
    the graph would read them), so that the launched steps compute, and their sends, outboxes and receipts can be
    checked against plain training (``tests/test_launcher.py``)."""
    from dasksae import cuda_graphs, spmd

    saved = {name: getattr(cuda_graphs, name) for name in
             ("GRAPHS", "OUTBOXES", "IN_PLACE", "SEND_PLANS", "on_device", "has_device_arrays", "launch_graph",
              "_identities", "device_event", "wait_for_event")}
    saved_spmd_wait = spmd.wait_for_event
    saved_graph_run = cuda_graphs.GraphedStep._graph_run
    had_cupy = sys.modules.get("cupy")

    def graph_run(self, executor, prefix, registers, position, indices, mode):
        if mode == "launch" and launches_run_calls:
            self._calls(registers, indices, self._staged_received(executor, prefix, indices[0], mode))
            cuda_graphs.launches += 1
            return
        if mode != "capture":  # staged: the calls run; launch: launch_graph, a no-op here
            return saved_graph_run(self, executor, prefix, registers, position, indices, mode)
        received = self._staged_received(executor, prefix, indices[0], mode)
        self._calls(registers, indices, received)
        for index in indices:
            out = self.program.operations[index][4]
            if out in self.kept_registers:
                self.kept[out] = registers[out]
        self.graphs[position] = "a graph run"

    cuda_graphs.GRAPHS, cuda_graphs.OUTBOXES, cuda_graphs.IN_PLACE = True, True, True
    cuda_graphs.SEND_PLANS = send_plans
    cuda_graphs.on_device = lambda value: isinstance(value, (numpy.ndarray, numpy.generic))  # (0-d on a GPU)
    cuda_graphs.has_device_arrays = lambda value: True
    cuda_graphs.launch_graph = lambda graph: None
    # one event a send batch, which the receivers' streams wait for, as on a GPU (here nothing to record or wait for)
    cuda_graphs.device_event = lambda value: _EVENT_STAND_IN
    cuda_graphs.wait_for_event = spmd.wait_for_event = lambda event: None
    cuda_graphs._identities = lambda state: {key: (id(value), value.ctypes.data) for key, value in state.items()
                                             if isinstance(value, numpy.ndarray)}
    cuda_graphs.GraphedStep._graph_run = graph_run
    if had_cupy is None:  # a capture's pool and the default pool's release, the only CuPy it touches
        sys.modules["cupy"] = types.SimpleNamespace(cuda=types.SimpleNamespace(MemoryPool=_PoolStandIn),
                                                    get_default_memory_pool=_PoolStandIn)
    try:
        yield
    finally:
        cuda_graphs.release_all()
        for name, value in saved.items():
            setattr(cuda_graphs, name, value)
        spmd.wait_for_event = saved_spmd_wait
        cuda_graphs.GraphedStep._graph_run = saved_graph_run
        if had_cupy is None:
            del sys.modules["cupy"]


def _thread_counters(dask_worker):
    from dasksae.spmd import MAILBOX

    mailbox = getattr(dask_worker, MAILBOX)
    return {"messages": mailbox.waited_seconds, "cpu": mailbox.cpu_seconds, **mailbox.context_switches}


def measure(config_name: str, tiles: str, minibatch: int, steps_per_task: int, runs: int, send_plans: bool,
            one_launcher: bool = False) -> dict:
    import distributed

    from dasksae import cuda_graphs, launcher, tile_program
    from dasksae.network import load_config
    from dasksae.tiled_network import TiledNetwork

    config = load_config(config_name)
    rows, cols = (int(n) for n in tiles.split("x"))
    batch = numpy.random.default_rng(0).standard_normal(config.input_shape + (minibatch,)).astype("float32")
    tile_program.forget_all()
    saved_launcher, launcher.ONE_LAUNCHER = launcher.ONE_LAUNCHER, one_launcher
    with contextlib.ExitStack() as restore, graph_launches_as_no_ops(send_plans):
        restore.callback(setattr, launcher, "ONE_LAUNCHER", saved_launcher)
        launches_before, planned_before = cuda_graphs.launches, cuda_graphs.planned_sends
        idle_before = launcher.idle_seconds
        failures_before = len(cuda_graphs.failures)
        with distributed.LocalCluster(n_workers=rows * cols, threads_per_worker=1, processes=False,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            network = TiledNetwork(config, tiles, client, seed=0, dtype="float32", device="cpu")
            data = network.place(batch)
            network.steps([data] * 3, 1e-3, 0.9)  # staged, capture, first launch (recorded first: one more step)
            before = client.run(_thread_counters)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                network.steps([data] * steps_per_task, 1e-3, 0.9)
                times.append((time.perf_counter() - started) / steps_per_task)
            after = client.run(_thread_counters)
        steps = runs * steps_per_task
        launches = (cuda_graphs.launches - launches_before) / (steps + 1) / (rows * cols)  # the first launch too
        planned = (cuda_graphs.planned_sends - planned_before) / steps
        idle = (launcher.idle_seconds - idle_before) / (steps + 1)  # (the first launched step too)
        failures = cuda_graphs.failures[failures_before:]  # tile steps that left the graphed path (none expected)
    per_thread = {key: statistics.median((after[w][key] - before[w][key]) / steps for w in after)
                  for key in ("messages", "cpu", "voluntary", "involuntary")}
    all_threads_cpu = sum((after[w]["cpu"] - before[w]["cpu"]) / steps for w in after)  # (one launcher: its thread)
    return {"config": config_name, "tiles": tiles, "minibatch": minibatch, "send_plans": send_plans,
            "one_launcher": one_launcher,
            "steps_per_task": steps_per_task, "runs": runs, "step_ms": statistics.median(times) * 1e3,
            "group_step_ms": [t * 1e3 for t in times], "thread_cpu_ms": per_thread["cpu"] * 1e3,
            "all_threads_cpu_ms": all_threads_cpu * 1e3,
            "thread_waited_ms": per_thread["messages"] * 1e3, "voluntary_switches": per_thread["voluntary"],
            "involuntary_switches": per_thread["involuntary"], "graph_launches_a_tile_step": launches,
            "planned_sends_a_step": planned, "launcher_idle_ms": idle * 1e3, "failures": failures}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--tiles", default="2x2")
    parser.add_argument("--minibatch", type=int, default=1)
    parser.add_argument("--steps-per-task", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10, help="groups of steps timed (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="each row this many times, in turn (default 2)")
    parser.add_argument("--rows", default="threads,plans,launcher",
                        help="rows, in turn: threads (each its own tile), plans (DASKSAE_SEND_PLANS=1), launcher "
                             "(DASKSAE_ONE_LAUNCHER=1), launcher+plans (default threads,plans,launcher)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    kinds = {"threads": (False, False), "plans": (True, False), "launcher": (False, True), "launcher+plans": (True, True)}
    chosen = args.rows.split(",")
    if not set(chosen) <= set(kinds):
        parser.error(f"--rows takes {', '.join(kinds)}; got {args.rows!r}")
    print(f"{'row':>14} {'step ms':>8} {'cpu ms, all':>11} {'a thread':>8} {'waited ms':>9} {'switches':>8} "
          f"{'launches':>8} {'planned':>7} {'launcher idle ms':>16}")
    for _ in range(args.rounds):
        for kind in chosen:
            plans, together = kinds[kind]
            row = measure(args.config, args.tiles, args.minibatch, args.steps_per_task, args.runs, plans, together)
            rows.append(row)
            for failure in row["failures"]:
                print(f"  a tile step left the graphed path: {failure}", flush=True)
            print(f"{kind:>14} {row['step_ms']:>8.2f} {row['all_threads_cpu_ms']:>11.2f} {row['thread_cpu_ms']:>8.2f} "
                  f"{row['thread_waited_ms']:>9.2f} {row['voluntary_switches']:>8.0f} "
                  f"{row['graph_launches_a_tile_step']:>8.1f} {row['planned_sends_a_step']:>7.1f} "
                  f"{row['launcher_idle_ms']:>16.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"rows": rows, "python": sys.version.split()[0], "numpy": numpy.__version__}, file, indent=1)


if __name__ == "__main__":
    main()
