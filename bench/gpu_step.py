"""One GPU benchmark: dasksae (1 worker, and 4 workers sharing the GPU) against a single-process PyTorch peer and the limit.

In the style of dask-cuda's benchmarks::

    python bench/gpu_step.py --configs coates96,coates200 --minibatch 96 --runs 20 --warmup-runs 3 --json out.json
    python bench/gpu_step.py --scheduler-address tcp://host:8786 ...   # dasksae rows on an existing cluster
    python bench/gpu_step.py --profile report ...   # a Dask performance report of each dasksae row (bokeh)

Rows, per config and minibatch:

* ``limit``: max(12 P M / measured GEMM ceiling of the dtype, 5 passes over
  the float32 weights / measured copy bandwidth) (DESIGN.md);
* ``dasksae-1w``: ``TiledNetwork`` on one worker, 1x1 tiles, CuPy chunks
  (the whole step is one task), the minibatch placed on the worker ahead of
  the step as the training loop's prefetch does (``dasksae-1w-send``: sent
  from the client inside each timed step); its Dask overhead is its step
  time minus the same step run in this process without Dask;
* ``dasksae-4w``: four plain workers sharing the GPU, 2x2 tiles, one task per
  tile and step exchanging halos worker to worker (``dasksae.spmd``);
  ``dasksae-4w-graph``: the same as a task per layer and halo strip;
  ``dasksae-4w-threads``: the four workers as threads of one process (one
  CUDA context, no time-slicing between contexts; halos pass in memory);
* ``torch-<precision>``: ``bench/torch_peer.py`` in float32, tf32 and
  bfloat16 (``--compile`` adds ``torch.compile`` rows).

Configs ``coatesN`` are the coates1.8b network (20x20 fields, 4x4x8 blocks,
step 4) on an N x N x 3 input: coates96 has 0.195B parameters, coates200
1.544B, coates212 1.785B.  dasksae rows run in each of ``--dtypes``
(``tf32``/``bfloat16``: products in that precision over float32 master
weights and optimiser state).  ``B/param`` is the GPU memory the worker's
CuPy pool holds after the runs (its peak), per parameter.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import time

import numpy

from dasksae.accounting import update_flops
from dasksae.network import load_config, named_config
from dasksae.switches import SWITCHES, switch
from scaling_model import grid_for  # the squarest r x c grid of K tiles, as the scaling model tiles K GPUs


def coates(name: str):
    if name.startswith("coates") and name[6:].isdigit():
        size = int(name[6:])
        return named_config("coates1.8b").replace(input_shape=(size, size, 3), name=name)
    return load_config(name)


def measure_ceilings():
    """GEMM TFLOP/s per precision (8192^3 torch.matmul) and device copy bandwidth (bytes read + written per s)."""
    import torch

    ceilings = {}
    n = 8192
    for precision, dtype, tf32 in (("float32", torch.float32, False), ("tf32", torch.float32, True), ("bfloat16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        ceilings[precision] = 2 * n**3 / statistics.median(times)
    torch.backends.cuda.matmul.allow_tf32 = False
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    for _ in range(3):  # warmed up as the GEMMs are
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    ceilings["copy_bytes_per_second"] = 2 * src.numel() * 4 / statistics.median(times)
    del a, b, src, dst
    torch.cuda.empty_cache()
    return ceilings


def limit_seconds(config, minibatch, precision, ceilings):
    flops = update_flops(config, minibatch)
    return max(flops / ceilings[precision], 5 * 4 * config.encoder_parameters / ceilings["copy_bytes_per_second"])


def time_in_process(config, batch, runs, warmup, dtype="float32"):
    """The same step without Dask: the one-tile step run in this process on CuPy arrays (the kernel time of dasksae-1w)."""
    import cupy

    from dasksae.tile_array import LocalExecutor
    from dasksae.tiled_network import TiledNetwork

    network = TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=0, dtype=dtype, device="cuda")
    x = cupy.asarray(batch)
    times = []
    for index in range(warmup + runs):
        cupy.cuda.runtime.deviceSynchronize()
        started = time.perf_counter()
        network.step(x, 1e-3, 0.9)  # returns the losses as floats: synchronised
        cupy.cuda.runtime.deviceSynchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    _print_graph_state([_graph_state()])
    held = _pool_bytes()
    del network, x
    _free_pool()
    return statistics.median(times), held


def _pool_bytes():
    import cupy

    from dasksae import cuda_graphs

    pool = cupy.get_default_memory_pool()
    return int(pool.total_bytes()) + cuda_graphs.private_pool_bytes()  # with the CUDA graphs' own pools


def _outbox_sends() -> tuple:
    """Sends copied into reused outboxes, into adopted ones in place, and of those made from send plans; and tile
    steps launched by another tile's thread (DASKSAE_ONE_LAUNCHER), in this process so far."""
    from dasksae import cuda_graphs, launcher

    return cuda_graphs.reused_outboxes, cuda_graphs.filled_in_place, cuda_graphs.planned_sends, launcher.launched


def _graph_state():
    from dasksae import cuda_graphs

    return {"launches": cuda_graphs.launches, "failures": list(cuda_graphs.failures)}


def _print_graph_state(states):
    """Unless DASKSAE_CUDA_GRAPHS=0: how many graphs were launched (in the process, so far), and why any tile's step
    gave them up."""
    if os.environ.get("DASKSAE_CUDA_GRAPHS") == "0":
        return
    states = list(states)
    failures = sorted({reason for state in states for reason in state["failures"]})
    print(f"  cuda graphs: {sum(state['launches'] for state in states)} launches; "
          + ("given up: " + " | ".join(failures)[:600] if failures else "none given up"))


def _free_pool():
    import cupy

    from dasksae import tile_program

    tile_program.forget_all()  # the kept programs' CUDA graphs hold their steps' temporaries
    cupy.get_default_memory_pool().free_all_blocks()
    return True


def time_dasksae(config, batch, workers, tiles, runs, warmup, scheduler_address=None, send_each_step=False, eager=False,
                 execution="spmd", dtype="float32", steps_per_task=1, protocol="tcp", processes=True, profile=None,
                 sample_host=False, pipelined=False, gil_samples=False):
    import distributed

    from dasksae.tiled_network import TiledNetwork
    from step_timing import row_seconds, time_groups

    if scheduler_address:
        cluster = None
        client = distributed.Client(scheduler_address)
    else:
        from dasksae.cluster import local_worker_environment

        with local_worker_environment():  # the workers dasksae train starts get the same environment
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=40,
                                               **({"protocol": protocol} if processes else {"processes": False}))
        client = distributed.Client(cluster)
    try:
        if eager:
            from dasksae.latency import eager_messages

            eager_messages(client)
        network = TiledNetwork(config, tiles, client, seed=0, dtype=dtype, device="cuda", execution=execution)
        # as the training loop does (it places the next batch while a step runs), unless asked to send it each step
        data = batch if send_each_step else network.place(batch)
        for _ in range(warmup):
            network.steps([data] * steps_per_task, 1e-3, 0.9)
        report_context = contextlib.nullcontext() if profile is None else distributed.performance_report(filename=profile)
        waits_before = client.run(_host_waits)
        sampler = contextlib.nullcontext()
        if sample_host and not processes:  # the workers are threads of this process: sample their stacks
            from thread_sampler import ThreadSampler

            sampler = ThreadSampler()
        if gil_samples and not processes:  # who holds the GIL (py-spy from outside the process)
            from gil_sampler import GilSampler

            sampler = GilSampler(gil=gil_samples in (True, "gil"), native=gil_samples == "cpu-native")
        collections = GarbageCollections() if not processes else contextlib.nullcontext()
        sends_before, host_before = _outbox_sends(), host_cpu_times()
        with report_context, sampler, collections, distributed.get_task_stream(client) as stream:
            times, report = time_groups(network, [data] * steps_per_task, 1e-3, 0.9, runs, pipelined)
        report.statistics["group_seconds"] = times
        report.statistics["host_cpu"] = host_shares(host_before, host_cpu_times())
        if not processes:  # the workers are threads of this process: its counters are theirs
            sends = [(after - before) / (runs * steps_per_task) for before, after in zip(sends_before, _outbox_sends())]
            report.statistics["outbox_sends"] = {"reused_a_step": sends[0], "in_place_a_step": sends[1],
                                                 "planned_a_step": sends[2]}
            report.statistics["launched_by_another_thread_a_step"] = sends[3]
            print(f"  sends out of the graphs' memory a step, all tiles: {sends[0]:.1f} into reused outboxes, "
                  f"{sends[1]:.1f} straight into their receivers' (DASKSAE_OUTBOX_IN_PLACE), {sends[2]:.1f} of them "
                  f"from send plans (DASKSAE_SEND_PLANS); tile steps launched by another tile's thread a step: "
                  f"{sends[3]:.1f} (DASKSAE_ONE_LAUNCHER)", flush=True)
        if not processes:  # the workers are threads of this process: its collections pause them all
            report.statistics["garbage_collection"] = collections.a_step(runs * steps_per_task)
        report.statistics["in_task_seconds"] = in_task_seconds(stream.data, steps_per_task)
        report.statistics["host_waits"] = _waits_a_step(waits_before, client.run(_host_waits), runs * steps_per_task, processes)
        if sampler is not None and hasattr(sampler, "print_table"):
            report.statistics["host_samples"] = sampler.print_table(top=30)
        _print_graph_state(client.run(_graph_state).values())
        pools = client.run(_pool_bytes).values()
        held = sum(pools) if processes else max(pools)  # threads of one process share its memory pool
        del network
        client.run(_free_pool)
        return row_seconds(times, pipelined), report, held
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class GarbageCollections:
    """Python's garbage collections in this process while the block runs: how many of each generation, and the
    seconds they took (``gc.callbacks``); a collection holds the GIL, so it pauses every worker thread."""

    def __init__(self):
        self.counts = [0, 0, 0]
        self.seconds = 0.0
        self._started = None

    def _callback(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.counts[info["generation"]] += 1
            self._started = None

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)
        return False

    def a_step(self, steps: int) -> dict:
        return {"seconds_a_step": self.seconds / steps, "collections_a_step": [round(c / steps, 2) for c in self.counts]}


def _host_waits(dask_worker):
    """Seconds this worker's thread waited for messages, and this process's threads for the device, so far."""
    from dasksae.kernels.backend import device_wait_seconds
    from dasksae.spmd import MAILBOX

    mailbox = getattr(dask_worker, MAILBOX, None)
    switches = getattr(mailbox, "context_switches", {})
    return {"messages": 0.0 if mailbox is None else mailbox.waited_seconds, "device": device_wait_seconds(),
            "cpu": 0.0 if mailbox is None else mailbox.cpu_seconds,
            "voluntary": switches.get("voluntary", 0), "involuntary": switches.get("involuntary", 0)}


def _waits_a_step(before: dict, after: dict, steps: int, processes: bool) -> dict:
    """Per tile and step: the median over workers of the time waiting for messages, and the mean time waiting for
    the device (in threads the device figure is the process's, shared by all workers)."""
    messages = [(after[w]["messages"] - before[w]["messages"]) / steps for w in after]
    devices = [(after[w]["device"] - before[w]["device"]) / steps for w in after]
    device = statistics.mean(devices) if processes else max(devices) / len(devices)
    cpu = [(after[w].get("cpu", 0.0) - before[w].get("cpu", 0.0)) / steps for w in after]
    switches = {kind: statistics.median((after[w].get(kind, 0) - before[w].get(kind, 0)) / steps for w in after)
                for kind in ("voluntary", "involuntary")}
    return {"messages_seconds": statistics.median(messages), "device_seconds": device, "cpu_seconds": statistics.median(cpu),
            "context_switches_a_step": switches}


def host_cpu_times() -> list:
    """The host's CPU time so far, in clock ticks, from ``/proc/stat``'s first line: user, nice, system, idle,
    iowait, irq, softirq, steal (the time a virtual machine's CPUs were ready but the hypervisor ran something
    else); empty where there is no such file."""
    try:
        with open("/proc/stat") as file:
            fields = file.readline().split()
    except OSError:
        return []
    return [int(value) for value in fields[1:9]] if fields and fields[0] == "cpu" else []


def host_shares(before: list, after: list) -> dict:
    """Shares of the host's CPU time between two :func:`host_cpu_times`: busy (neither idle nor waiting for I/O)
    and stolen by the hypervisor."""
    if len(before) < 8 or len(after) < 8:
        return {}
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta) or 1
    return {"busy": (total - delta[3] - delta[4]) / total, "steal": delta[7] / total}


def in_task_seconds(task_stream, steps_per_task: int) -> float:
    """Median time a step spends inside its worker's task (the fused or SPMD step; the busiest tile), from
    distributed's task stream: the step time minus this is what scheduling and messages cost."""
    per_step = []
    for task in task_stream:
        if any(name in str(task.get("key")) for name in ("fused-step", "spmd-step")):
            spans = [s["stop"] - s["start"] for s in task.get("startstops", ()) if s["action"] == "compute"]
            if spans:
                per_step.append(sum(spans) / steps_per_task)
    return statistics.median(per_step) if per_step else float("nan")


def _workers_of(mode: str):
    """K of a mode ``dasksae-Kw...`` (workers sharing the GPU), else ``None``."""
    import re

    match = re.match(r"dasksae-(\d+)w", mode)
    return int(match.group(1)) if match else None


_INITIAL = {}


def initial_params(config):
    """init_params on the host once per config (billions of draws take seconds)."""
    from dasksae.reference import init_params

    if config.name not in _INITIAL:
        _INITIAL.clear()
        _INITIAL[config.name] = init_params(config, seed=0, dtype="float32")
    return _INITIAL[config.name]


def time_torch(config, batch, precision, runs, warmup, compile=False):
    import torch

    from torch_peer import TorchNetwork, make_step, to_torch_batch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    network = TorchNetwork(config, initial_params(config), "cuda")
    step = make_step(network, 1e-3, 0.9, precision, compile)
    x = to_torch_batch(batch)
    times, loss = [], None
    for index in range(warmup + runs):
        torch.cuda.synchronize()
        started = time.perf_counter()
        loss = step(x)
        torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated()
    first_loss = float(loss)
    del network, step, x
    torch.cuda.empty_cache()
    return statistics.median(times), peak, first_loss


def print_gemm_tuning(seen):
    """Print (and return) the GEMM algorithm choices made since the last call (:mod:`dasksae.kernels.tuned_gemm`)."""
    from dasksae.kernels import tuned_gemm

    rows = [row for row in tuned_gemm.tuning_table() if repr(row) not in seen]
    seen.update(repr(row) for row in rows)
    for row in rows:
        timed = "" if row["plain_ms"] is None else (
            f"cublas {row['plain_ms']:.3f} ms ({row['tflops_plain']:.1f} T/s), chosen {row['best_ms']:.3f} ms "
            f"({row['tflops_best']:.1f} T/s) ")
        print(f"  gemm {row['ops']} m={row['m']} n={row['n']} k={row['k']} x{row['batch']} compute {row['compute']}: "
              f"{timed}{row['chosen']}")
    return rows


def table_header() -> str:
    """The results table's header: the issue's columns, a field each (whitespace-separated, so ``awk`` reads them)."""
    return (f"{'config':<10} {'P':>7} {'M':>4} {'dtype':<8} {'mode':<28} {'step ms':>8} {'img/s':>7} {'TFLOP/s':>8} "
            f"{'of limit':>8} {'dask ovh':>8} {'B/param':>7}")


def table_line(row: dict) -> str:
    """One row of the table from a row of the JSON (``step ms`` is the sixth field); columns with no figure are
    ``-``, so that every line has the same fields."""
    overhead, memory = row["dask_overhead_share"], row["bytes_per_parameter"]
    return (f"{row['config']:<10} {row['parameters'] / 1e9:>6.3f}B {row['minibatch']:>4} {row['precision']:<8} "
            f"{row['mode']:<28} {row['step_seconds'] * 1e3:>8.1f} {row['images_per_second']:>7.0f} {row['tflops']:>8.2f} "
            f"{row['fraction_of_limit']:>8.1%} {'-' if overhead is None else format(overhead, '.1%'):>8} "
            f"{'-' if memory is None else format(memory, '.1f'):>7}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="coates96,coates200")
    parser.add_argument("--minibatch", default="96", help="comma-separated minibatch sizes")
    parser.add_argument("--precisions", default="float32,tf32,bfloat16", help="PyTorch peer precisions")
    parser.add_argument("--modes", default="limit,dasksae-1w,dasksae-4w,torch",
                        help="comma-separated: limit, in-process (the step in this process, which every dasksae-* "
                             "mode also times), dasksae-1w, dasksae-4w, dasksae-4w-threads, torch")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup-runs", type=int, default=3)
    parser.add_argument("--runs-4w", type=int, default=5, help="runs of the multi-worker rows (dasksae-Kw: K workers sharing the GPU)")
    parser.add_argument("--dtypes", default="float32,tf32,bfloat16", help="dasksae precisions (float32 master weights)")
    parser.add_argument("--steps-per-task", default="1", help="comma-separated: SGD steps inside each task (dasksae-1w rows)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval in seconds for this process (whose threads are the workers of the -threads rows)")
    parser.add_argument("--steps-per-task-4w", type=int, default=1, help="SGD steps inside each task of the multi-worker rows")
    parser.add_argument("--protocol", default="tcp", choices=["tcp", "ucx"], help="worker transport (ucx needs distributed-ucxx)")
    parser.add_argument("--scheduler-address", default=None)
    parser.add_argument("--compile", action="store_true", help="also torch.compile rows")
    parser.add_argument("--eager-messages", action="store_true", help="dasksae-1w with batched-stream intervals 0")
    parser.add_argument("--profile", default=None, metavar="PREFIX",
                        help="write a Dask performance report of each dasksae row's timed runs to PREFIX-<row>-<dtype>.html (needs bokeh)")
    parser.add_argument("--sample-host", action="store_true",
                        help="-threads rows: sample the worker threads' Python stacks during the timed runs (bench/thread_sampler.py)")
    parser.add_argument("--gil-samples", nargs="?", const="gil", default=None, choices=["gil", "cpu", "cpu-native"],
                        help="-threads rows: py-spy samples the thread holding the GIL during the timed runs "
                             "(bench/gil_sampler.py; needs py-spy, or PY_SPY naming it); 'cpu': every thread on a CPU "
                             "instead; 'cpu-native': that, with C frames (the CUDA driver's among them)")
    parser.add_argument("--pipelined", action="store_true",
                        help="dasksae rows: each group of steps submitted before the previous group's losses are read, as "
                             "dasksae train does (mode names end in -p)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.profile:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            parser.error("--profile writes Dask performance reports, which need bokeh: pip install bokeh.")

    def profile_file(row, dtype):
        return None if args.profile is None else f"{args.profile}-{row}-{dtype}.html"

    modes = args.modes.split(",")
    if args.switch_interval is not None:
        import sys

        sys.setswitchinterval(args.switch_interval)
    ceilings = measure_ceilings()
    print("ceilings: " + ", ".join(f"{k} {v / 1e12:.1f} T/s" for k, v in ceilings.items()))
    import cupy
    import torch

    card = torch.cuda.get_device_name(0)
    rows = []

    def write_json():
        """The rows so far, with the card, versions and command (rewritten after every row: a run cut short keeps them)."""
        if not args.json:
            return
        import dask
        import distributed

        meta = {
            "command": "python bench/gpu_step.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
            "card": card, "ceilings": ceilings, "python": platform.python_version(), "numpy": numpy.__version__,
            "cupy": cupy.__version__, "torch": torch.__version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "protocol": args.protocol, "switch_interval": __import__("sys").getswitchinterval(), "pipelined": args.pipelined,
            "environment": {name: os.environ[name] for name in SWITCHES if name in os.environ},
        }
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)

    seen_gemms = set()
    header = table_header()
    print(f"card: {card}")
    print(header)
    for name in args.configs.split(","):
        config = coates(name)
        parameters = config.encoder_parameters
        for minibatch in (int(m) for m in args.minibatch.split(",")):
            batch = numpy.random.default_rng(0).standard_normal(config.input_shape + (minibatch,)).astype("float32")
            flops = update_flops(config, minibatch)
            limits = {p: limit_seconds(config, minibatch, p, ceilings) for p in ("float32", "tf32", "bfloat16")}

            def emit(mode, precision, seconds, overhead=None, memory=None, **extra):
                row = {
                    "config": name, "parameters": parameters, "minibatch": minibatch, "mode": mode, "precision": precision,
                    "step_seconds": seconds, "images_per_second": minibatch / seconds, "tflops": flops / seconds / 1e12,
                    "fraction_of_limit": limits[precision] / seconds, "dask_overhead_share": overhead,
                    "bytes_per_parameter": None if memory is None else memory / parameters, **extra,
                }
                rows.append(row)
                write_json()
                print(table_line(row), flush=True)

            if "limit" in modes:
                for precision in ("float32", "tf32", "bfloat16"):
                    emit(f"limit-{precision}", precision, limits[precision])
            for dtype in args.dtypes.split(","):
                kernel = float("nan")
                if "in-process" in modes or any(m.startswith("dasksae") for m in modes):
                    try:
                        kernel, held = time_in_process(config, batch, args.runs, args.warmup_runs, dtype)
                        emit("in-process", dtype, kernel, memory=held, gemm=switch("DASKSAE_GEMM"),
                             gemm_tuning=print_gemm_tuning(seen_gemms))
                    except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
                        print(f"{name} in-process {dtype} failed: {type(error).__name__}: {str(error)[:200]}")
                if "dasksae-1w" in modes:
                    for per_task in (int(k) for k in args.steps_per_task.split(",")):
                        try:
                            seconds, report, held = time_dasksae(config, batch, 1, "1x1", args.runs, args.warmup_runs,
                                                                 args.scheduler_address, eager=args.eager_messages, dtype=dtype,
                                                                 steps_per_task=per_task, protocol=args.protocol,
                                                                 profile=profile_file(f"1w-k{per_task}", dtype), pipelined=args.pipelined)
                            emit("dasksae-1w" + (f"-k{per_task}" if per_task > 1 else "") + ("-eager" if args.eager_messages else "")
                                 + ("-p" if args.pipelined else ""),
                                 dtype, seconds, overhead=max(0.0, 1 - kernel / seconds), memory=held,
                                 tasks=report.statistics["tasks"], critical_path=report.statistics["critical_path"], steps_per_task=per_task,
                                 in_task_seconds=report.statistics["in_task_seconds"],
                                 group_seconds=report.statistics["group_seconds"])
                            print(f"  inside the worker's task: {report.statistics['in_task_seconds'] * 1e3:.1f} ms a step "
                                  f"(in-process {kernel * 1e3:.1f} ms); each group's step: "
                                  + ", ".join(f"{1e3 * t:.1f}" for t in report.statistics["group_seconds"]) + " ms", flush=True)
                        except Exception as error:  # noqa: BLE001
                            print(f"{name} dasksae-1w {dtype} failed: {type(error).__name__}: {error}")
                if "dasksae-1w-send" in modes:
                    try:
                        seconds, report, held = time_dasksae(config, batch, 1, "1x1", max(5, args.runs // 4), 2,
                                                             args.scheduler_address, send_each_step=True, dtype=dtype, protocol=args.protocol)
                        emit("dasksae-1w-send", dtype, seconds, overhead=max(0.0, 1 - kernel / seconds), memory=held)
                    except Exception as error:  # noqa: BLE001
                        print(f"{name} dasksae-1w-send {dtype} failed: {type(error).__name__}: {error}")
                shared = [(mode, "spmd", True) for mode in modes if _workers_of(mode) not in (None, 1, 4)]
                for mode, execution, processes in [("dasksae-4w", "spmd", True), ("dasksae-4w-threads", "spmd", False),
                                                   ("dasksae-4w-graph", "graph", True)] + shared:
                    if mode not in modes:
                        continue
                    count = _workers_of(mode)
                    rows_, cols_ = grid_for(count)
                    try:
                        per_task = args.steps_per_task_4w if execution == "spmd" else 1
                        seconds, report, held = time_dasksae(config, batch, count, f"{rows_}x{cols_}", args.runs_4w, 2,
                                                             args.scheduler_address, execution=execution, dtype=dtype,
                                                             protocol=args.protocol, processes=processes, steps_per_task=per_task,
                                                             profile=profile_file(mode, dtype), sample_host=args.sample_host,
                                                             pipelined=args.pipelined, gil_samples=args.gil_samples)
                        emit(f"{mode}-{rows_}x{cols_}" + (f"-k{per_task}" if per_task > 1 else "") + ("-p" if args.pipelined else ""),
                             dtype, seconds,
                             overhead=max(0.0, 1 - kernel / seconds), memory=held,
                             tasks=report.statistics["tasks"], critical_path=report.statistics["critical_path"],
                             halo_bytes=report.statistics["halo_bytes"], execution=execution, steps_per_task=per_task,
                             in_task_seconds=report.statistics["in_task_seconds"], host_waits=report.statistics["host_waits"],
                             host_samples=report.statistics.get("host_samples"), group_seconds=report.statistics["group_seconds"],
                             garbage_collection=report.statistics.get("garbage_collection"),
                             host_cpu=report.statistics.get("host_cpu"), outbox_sends=report.statistics.get("outbox_sends"))
                        print(f"  inside a tile's task (median over tiles and runs; where a task leaves its steps queued, the host's time "
                              f"to queue them): {report.statistics['in_task_seconds'] * 1e3:.1f} ms a step; "
                              f"{seconds / kernel:.2f}x the in-process step of this call (the 1.25x target)", flush=True)
                        waits = report.statistics["host_waits"]
                        print(f"  a tile's thread waited {waits['messages_seconds'] * 1e3:.1f} ms a step for messages and "
                              f"{waits['device_seconds'] * 1e3:.1f} ms for the device; the rest of its step is host work. "
                              f"Its thread ran on a CPU {waits['cpu_seconds'] * 1e3:.1f} ms a step", flush=True)
                        switches = waits.get("context_switches_a_step")
                        if switches:
                            print(f"  context switches of a tile's thread a step: {switches['voluntary']:.0f} voluntary (waits), "
                                  f"{switches['involuntary']:.1f} involuntary (preempted)", flush=True)
                        shares = report.statistics.get("host_cpu") or {}
                        if shares:
                            print(f"  the host's CPUs during the timed runs: {100 * shares['busy']:.1f}% busy, "
                                  f"{100 * shares['steal']:.2f}% stolen by the hypervisor", flush=True)
                        collected = report.statistics.get("garbage_collection")
                        if collected:
                            print(f"  garbage collection in this process: {collected['seconds_a_step'] * 1e3:.2f} ms a step "
                                  f"(collections a step by generation: {collected['collections_a_step']})", flush=True)
                        print("  each group's step: " + ", ".join(f"{1e3 * t:.1f}" for t in report.statistics["group_seconds"])
                              + " ms", flush=True)
                    except Exception as error:  # noqa: BLE001
                        print(f"{name} {mode} {dtype} failed: {type(error).__name__}: {error}")
            if "torch" in modes:
                for precision in args.precisions.split(","):
                    for compiled in ([False, True] if args.compile else [False]):
                        try:
                            seconds, peak, loss = time_torch(config, batch, precision, args.runs, args.warmup_runs, compiled)
                            emit(f"torch-{precision}{'-compile' if compiled else ''}", precision, seconds, memory=peak, loss=loss)
                        except Exception as error:  # noqa: BLE001
                            print(f"{name} torch {precision} compile={compiled} failed: {type(error).__name__}: {str(error)[:200]}")
    write_json()
    return rows


if __name__ == "__main__":
    main()
