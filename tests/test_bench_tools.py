"""The benchmark helpers that turn raw samples and JSON rows into the README's figures."""

import json
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

import cuda_call_costs  # noqa: E402
import exchange_host  # noqa: E402
import graphed_host  # noqa: E402
import four_rows  # noqa: E402
import gil_sampler  # noqa: E402
import kernel_registers  # noqa: E402
import kernel_table  # noqa: E402
import step_timing  # noqa: E402
import tensor_core_probe  # noqa: E402
import trace_timeline  # noqa: E402
import profiler_cost  # noqa: E402


def test_gil_summary_counts_only_the_worker_threads_stacks_and_shares_of_wall_time():
    lines = [
        "thread (11): Dask-Default-Threads-1-0;_worker (threadpoolexecutor.py:60);_launch (/x/dasksae/kernels/copies.py:107) 30\n",
        "thread (12): Dask-Default-Threads-1-1;_worker (threadpoolexecutor.py:60);clone (/x/dasksae/cuda_graphs.py:180) 10\n",
        "thread (13): IO loop;run (asyncio/base_events.py:600) 10\n",
        "not a sample line\n",
    ]
    result = gil_sampler.summarize(lines, seconds=0.1, rate=1000)
    assert result["samples_expected"] == 100 and result["samples_held"] == 50
    assert result["gil_busy_share"] == pytest.approx(0.5)
    assert result["worker_threads_share"] == pytest.approx(0.4)
    assert result["by_thread"] == {"Dask-Default-Threads": pytest.approx(0.4), "IO loop": pytest.approx(0.1)}
    assert result["innermost"] == {"_launch (copies.py:107)": pytest.approx(0.3), "clone (cuda_graphs.py:180)": pytest.approx(0.1)}
    assert result["inclusive"]["_worker (threadpoolexecutor.py)"] == pytest.approx(0.4)
    assert "run (base_events.py)" not in result["inclusive"]  # the event loop's stacks are not the workers'


def test_gil_sampler_without_py_spy_runs_the_block_and_says_why(monkeypatch):
    monkeypatch.delenv("PY_SPY", raising=False)
    monkeypatch.setattr(gil_sampler.shutil, "which", lambda name: None)
    ran = []
    with gil_sampler.GilSampler() as sampler:
        ran.append(True)
    assert ran and sampler.result is None and "py-spy not found" in sampler.error
    assert sampler.print_table() == {"error": sampler.error}


def test_four_rows_puts_each_threads_row_against_its_own_processes_in_process_step(tmp_path, capsys):
    def write(folder, label, in_process, threads):
        path = tmp_path / folder / f"gpu-step-4w-{label}.json"
        path.parent.mkdir(exist_ok=True)
        rows = [{"mode": "in-process", "precision": "bfloat16", "step_seconds": in_process},
                {"mode": "dasksae-4w-threads-2x2-k10", "precision": "bfloat16", "step_seconds": threads,
                 "in_task_seconds": threads - 0.001}]
        if label == "slow":  # a row with session 15's figures for the slow mode
            rows[1].update(host_waits={"messages_seconds": 0.031, "context_switches_a_step": {"involuntary": 2.5}},
                           host_cpu={"busy": 0.3, "steal": 0.0123})
        path.write_text(json.dumps({"meta": {}, "rows": rows}))
        return str(path)

    paths = [write("a", "slow", 0.031, 0.0465), write("a", "fast", 0.030, 0.0372), write("b", "x", 0.032, 0.040)]
    rows = four_rows.main(paths)
    assert [row["label"] for row in rows] == ["a/fast", "b/x", "a/slow"]
    assert [round(row["ratio"], 3) for row in rows] == [1.24, 1.25, 1.5]
    out = capsys.readouterr().out
    assert "3 rows: median 1.25x, 1.24-1.50x; 2 within 1.25x" in out
    slow = next(line for line in out.splitlines() if line.startswith("a/slow"))
    assert slow.split()[-3:] == ["31.0", "2.5", "1.23%"]  # waited for messages, preempted, stolen
    assert next(line for line in out.splitlines() if line.startswith("b/x")).rstrip().endswith("x     39.0")


def test_gil_sampler_asks_py_spy_for_the_gil_holder_or_every_thread_on_a_cpu():
    GilSampler = gil_sampler.GilSampler
    holder = GilSampler(executable="py-spy").command(42, "out.txt")
    assert holder[:4] == ["py-spy", "record", "--pid", "42"] and "--gil" in holder and "--nonblocking" in holder
    on_cpu = GilSampler(executable="py-spy", gil=False).command(42, "out.txt")
    assert "--gil" not in on_cpu and "--nonblocking" in on_cpu and "--native" not in on_cpu
    native = GilSampler(executable="py-spy", gil=False, native=True).command(42, "out.txt")
    assert "--native" in native and "--nonblocking" not in native  # py-spy stops the process to read C frames



def test_the_hosts_busy_and_stolen_shares_come_from_proc_stat_deltas():
    import gpu_step

    before = [100, 0, 50, 800, 10, 0, 0, 40]
    after = [160, 0, 70, 900, 10, 0, 0, 60]  # 200 ticks: 80 busy, 100 idle, 20 stolen
    shares = gpu_step.host_shares(before, after)
    assert shares["busy"] == pytest.approx(0.5) and shares["steal"] == pytest.approx(0.1)
    assert gpu_step.host_shares([], after) == {}  # no /proc/stat: no figure
    now = gpu_step.host_cpu_times()
    assert now == [] or (len(now) == 8 and all(isinstance(value, int) for value in now))


def test_the_profiler_cost_samples_the_working_threads_stack_only_where_asked():
    """Sampled runs take samples of the working thread's stack (Dask's profiler over its frames); plain runs none."""
    import distributed.profile  # noqa: F401 - imported before the timed runs, as main does

    plain = profiler_cost.run(depth=10, seconds=0.3, samplers=0, interval=0.01)
    sampled = profiler_cost.run(depth=10, seconds=0.3, samplers=2, interval=0.01)
    assert plain["samples"] == 0 and plain["median_sample_seconds"] is None and plain["calls_per_second"] > 0
    assert sampled["samples"] >= 2 * 10 and 0 < sampled["median_sample_seconds"] < 0.01


@pytest.mark.parametrize("send_plans", [False, True])
def test_the_exchange_benchmark_times_sends_that_went_in_place(send_plans, tmp_path):
    """Its batches go in place into the outboxes the receivers' graphs read (else it would time another path), and
    with the send plans on, the batch keeps its plan; the package's switches are as they were afterwards."""
    from dasksae import cuda_graphs

    before = (cuda_graphs.on_device, cuda_graphs.SEND_PLANS)
    row = exchange_host.time_exchanges(send_plans, sends=3, arrays=2, steps=5)
    assert row["adopted_outboxes"] == 3 and row["plans_kept"] == (1 if send_plans else 0)
    assert row["batch_us"] > 0 and row["receipts_us"] > 0
    assert (cuda_graphs.on_device, cuda_graphs.SEND_PLANS) == before
    exchange_host.main(["--sends", "2", "--steps", "3", "--rounds", "1", "--json", str(tmp_path / "rows.json")])
    assert [row["send_plans"] for row in json.loads((tmp_path / "rows.json").read_text())["rows"]] == [False, True]


@pytest.mark.timeout(120)
def test_the_graphed_host_benchmark_keeps_every_tile_on_the_graphed_path():
    """Four worker threads' tile steps go the CUDA-graph path on NumPy with the launches as no-ops: every tile step
    launches its graph runs (about 20 a tile step of tiny 2x2), none leaves the path, the send plans are used where
    on; and the package is as it was afterwards (no CuPy stand-in left behind)."""
    from dasksae import cuda_graphs

    before = (cuda_graphs.GRAPHS, cuda_graphs.on_device, cuda_graphs.launch_graph, cuda_graphs.GraphedStep._graph_run)
    row = graphed_host.measure("tiny", "2x2", minibatch=1, steps_per_task=2, runs=2, send_plans=True)
    assert row["failures"] == [] and 15 < row["graph_launches_a_tile_step"] < 25, row
    assert row["planned_sends_a_step"] > 100 and row["thread_cpu_ms"] > 0, row
    assert (cuda_graphs.GRAPHS, cuda_graphs.on_device, cuda_graphs.launch_graph,
            cuda_graphs.GraphedStep._graph_run) == before
    assert "cupy" not in sys.modules or hasattr(sys.modules["cupy"], "ndarray")


def test_the_cuda_call_benchmark_times_each_call_on_each_threads_streams(monkeypatch, tmp_path, capsys):
    """Its loop without a GPU (a CuPy stand-in, calls that record which stream is current): every thread makes
    every call on its own streams, taking them in turn a few calls at a time where it has several, and the table
    has a row for each call and a column for each thread layout."""
    import types

    current = threading.local()

    class Stream:
        def __init__(self, non_blocking=False):
            self.calls = 0

        def __enter__(self):
            self.outer, current.stream = getattr(current, "stream", None), self
            return self

        def __exit__(self, *exc):
            current.stream = self.outer

        def synchronize(self):
            pass

    made = []

    def cases(cupy):
        stream = current.stream
        made.append(stream)

        def call():
            assert current.stream is stream  # each call on the stream its cases were made on
            stream.calls += 1
        return {"event": call, "graph_launch": call}

    fake = types.SimpleNamespace(__version__="stand-in", cuda=types.SimpleNamespace(
        Stream=Stream, runtime=types.SimpleNamespace(getDeviceProperties=lambda device: {"name": b"a stand-in"})))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cuda_call_costs, "_cases", cases)
    rows = cuda_call_costs.measure(threads=2, calls=12, rounds=2, streams=3)
    assert set(rows) == {"event", "graph_launch"} and len(rows["event"]["per_thread_us"]) == 2
    # 12 calls a round, 5 on a stream before the next: 5, 5 and 2 on a thread's three streams, for 2 calls, 2 rounds
    assert sorted(stream.calls for stream in made) == [8, 8, 20, 20, 20, 20]
    cuda_call_costs.main(["--threads", "1,2,1x4", "--calls", "10", "--rounds", "1", "--json", str(tmp_path / "calls.json")])
    table = json.loads((tmp_path / "calls.json").read_text())["table"]
    assert list(table) == ["1", "2", "1x4"] and "1x4 threads" in capsys.readouterr().out


def test_the_gpu_tables_rows_have_the_issues_columns_and_the_same_fields():
    """bench/gpu_step.py's table: config, P, M, dtype, mode, step, images/s, TFLOP/s, of the limit, Dask overhead,
    bytes a parameter; a field each (the device scripts' ``awk`` reads the step as the sixth), even for a mode of 28
    characters and a row without an overhead or a memory figure."""
    import gpu_step

    def row(mode, precision, seconds, overhead=None, memory=None):
        return {"config": "coates200", "parameters": 1_544_000_000, "minibatch": 96, "mode": mode, "precision": precision,
                "step_seconds": seconds, "images_per_second": 96 / seconds, "tflops": 1.7e12 / seconds / 1e12,
                "fraction_of_limit": 0.0073 / seconds, "dask_overhead_share": overhead, "bytes_per_parameter": memory}

    rows = [row("limit-bfloat16", "bfloat16", 0.0073), row("in-process", "bfloat16", 0.0203, memory=12.4),
            row("dasksae-4w-threads-2x2-k10-p", "bfloat16", 0.0274, overhead=0.263, memory=13.7),
            row("torch-float32-compile", "float32", 0.1594, memory=20.0)]
    lines = [gpu_step.table_line(r) for r in rows]
    assert [len(line.split()) for line in lines] == [11] * 4
    assert [line.split()[5] for line in lines] == ["7.3", "20.3", "27.4", "159.4"]
    assert [line.split()[3] for line in lines] == ["bfloat16", "bfloat16", "bfloat16", "float32"]
    assert lines[2].split()[-2:] == ["26.3%", "13.7"] and lines[0].split()[-2:] == ["-", "-"]
    header = gpu_step.table_header()
    assert header.split()[:5] == ["config", "P", "M", "dtype", "mode"] and len({len(line) for line in lines}) == 1
    assert len(header) == len(lines[0])


def test_the_kernel_tables_idle_gaps_are_the_stretches_no_stream_runs_a_kernel():
    """Kernels of two streams overlap: a gap is only where neither runs, named by the kernel whose end reached
    furthest before it and the one after it; the gaps are binned by length, and a step's share divides by the runs."""
    kernels = [("void a<float>(int)", 0.0, 10e-6), ("cupy_b", 5e-6, 20e-6),  # b outlasts a: no gap after a
               ("c", 30e-6, 1e-6),  # 5 us after b's end
               ("d", 131e-6, 1e-6),  # 100 us after c
               ("e", 2.132e-3, 1e-6)]  # 2 ms after d
    gaps = kernel_table.idle_gaps(list(reversed(kernels)))  # in any order
    assert [(round(gap * 1e6), before, after) for gap, before, after in gaps] == [
        (5, "cupy_b", "c"), (100, "c", "d"), (2000, "d", "e")]
    summary = kernel_table.gap_summary(gaps, runs=2)
    seconds = [row["seconds"] for row in summary["by_size"]]
    assert seconds == pytest.approx([2.5e-6, 0.0, 50e-6, 0.0, 1e-3])
    assert [row["gaps"] for row in summary["by_size"]] == [0.5, 0.0, 0.5, 0.0, 0.5]
    assert summary["by_pair"][0] == {"after": "d", "before": "e", "seconds": pytest.approx(1e-3), "gaps": 0.5}
    assert ("b", "c") in [(row["after"], row["before"]) for row in summary["by_pair"]]  # families: prefixes cut


def test_the_kernel_tables_concurrency_counts_how_many_kernels_run_at_each_moment():
    """Kernels of several streams: each stretch of time counted under how many run in it (four or more as 4), idle
    stretches under none, in any order of the intervals."""
    intervals = [(5.0, 6.0), (1.5, 3.0), (0.0, 4.0), (1.0, 2.0), (7.0, 8.0), (7.0, 8.0), (7.0, 8.0), (7.0, 8.0),
                 (7.5, 8.0)]
    assert kernel_table.concurrent_seconds(intervals) == pytest.approx({1: 3.0, 2: 1.5, 3: 0.5, 4: 1.0})
    assert sum(kernel_table.concurrent_seconds(intervals).values()) == pytest.approx(
        kernel_table.union_seconds(intervals))


def test_a_pipelined_row_is_the_mean_of_its_groups_and_a_plain_one_their_median():
    paired = [46.7e-3, 4.0e-3, 45.0e-3, 4.2e-3, 24.7e-3]  # session 32: reports two groups at a time
    assert step_timing.row_seconds(paired, pipelined=True) == pytest.approx(24.92e-3)
    assert step_timing.row_seconds(paired, pipelined=False) == pytest.approx(24.7e-3)


def test_the_transpose_geometry_option_takes_four_positive_numbers_and_compiles_them_in(capsys):
    """``--transpose-geometry ROWS,CHANNELS,FIELD,STEP`` is parsed into the layer's geometry that
    ``mma_transpose_source`` compiles in; anything but four positive whole numbers is refused in one line."""
    from dasksae.kernels import mma_transpose

    assert kernel_registers._geometry("128,8,20,4") == (128, 8, 20, 4)
    assert "#define LAYER_CHANNELS 8" in mma_transpose.mma_transpose_source("w64x3-swizzled", (128, 8, 20, 4))
    for bad in ("128,8,20", "128,8,20,x", "128,0,20,4"):
        with pytest.raises(SystemExit):
            kernel_registers.main(["--kernels", "mma-transpose", "--transpose-geometry", bad])
        assert "is not ROWS,CHANNELS,FIELD,STEP" in capsys.readouterr().err


def test_the_tile_loop_count_takes_the_instructions_between_the_barriers_round_the_products():
    """``kernel_registers.tile_loop_counts`` counts from the last barrier before the first HMMA to the first barrier or
    branch after the last (predicated instructions by their opcode), and nothing outside that span."""
    sass = "\n".join(f"        /*{address:04x}*/                   {text} ;  /* 0x000000000000 */"
                     for address, text in enumerate([
        "LDG.E R2, [R4.64]", "BAR.SYNC.DEFER_BLOCKING 0x0", "LDS R8, [R3]", "@!P2 IMAD.IADD R8, R8, 0x1, R9",
        "HMMA.1688.F32.TF32 R20, R8, R10, R20", "LDS R9, [R3+0x10]", "HMMA.1688.F32.TF32 R24, R8, R10, R24",
        "@!P0 BRA 0x40", "STG.E [R6.64], R20", "EXIT"]))
    line = kernel_registers.tile_loop_counts(sass)
    assert "7 instructions, 2 HMMA, 3.5 an HMMA" in line, line
    assert "LDS 2" in line and "IMAD.IADD 1" in line and "BRA 1" in line and "LDG" not in line and "STG" not in line
    without_products = kernel_registers.tile_loop_counts("/*0000*/ EXIT ;")
    assert without_products == "  no tensor-core products (HMMA, HGMMA) in the machine code"


def test_the_tile_loop_count_on_wgmma_takes_the_loop_round_the_products():
    """On ``wgmma`` (HGMMA) ``kernel_registers.tile_loop_counts`` counts the innermost loop round the products, from
    its branch's target to the branch (the staging of the next k-tile is in it), not the code before or after it,
    nor an outer loop's; products with no loop round them are reported."""
    texts = ["LDG.E R2, [R4.64]", "BAR.SYNC.DEFER_BLOCKING 0x0",  # 0x00, 0x10: before the loop
             "WARPGROUP.ARRIVE", "HGMMA.64x96x8.F32.TF32 R24, gdesc[UR20], R24", "STS [R3], R8",  # 0x20: the loop
             "HGMMA.64x96x8.F32.TF32 R24, gdesc[UR24], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x0",
             "BAR.SYNC.DEFER_BLOCKING 0x0", "@!P0 BRA 0x20",  # 0x80: back to the loop's top
             "@!P1 BRA 0x10", "STG.E [R6.64], R24", "EXIT"]  # an outer loop, then after the loops
    sass = "\n".join(f"        /*{16 * index:04x}*/                   {text} ;  /* 0x000000000000 */"
                     for index, text in enumerate(texts))
    line = kernel_registers.tile_loop_counts(sass)
    assert "7 instructions, 2 HGMMA, 3.5 an HGMMA" in line, line
    assert "STS 1" in line and "BRA 1" in line and "LDG" not in line and "STG" not in line
    no_loop = "\n".join(f"/*{16 * index:04x}*/ {text} ;" for index, text in enumerate(texts[2:4] + ["EXIT"]))
    assert kernel_registers.tile_loop_counts(no_loop) == (
        "  no loop around the tensor-core products (HGMMA) in the machine code")



@pytest.mark.parametrize("dtype, inner", [("uint16", 16), ("uint32", 8)])
def test_the_probes_tiles_put_each_value_where_the_wgmma_descriptor_addresses_it(dtype, inner):
    """bench/tensor_core_probe.py: value (r, k) of a tile in core-matrix order lies at byte (r // 8) stride + (k // v)
    leading + (r % 8) 16 + (k % v) size, v values to 16 bytes (the descriptors' addressing without swizzling), every
    value once; a tile that does not fill whole core matrices is refused."""
    import numpy

    rows = 64
    tile = numpy.arange(rows * inner).astype(dtype).reshape(rows, inner)
    ordered = tensor_core_probe.core_matrix_order(tile)
    size, per_core = tile.itemsize, 16 // tile.itemsize
    for r in range(rows):
        for k in range(inner):
            byte = ((r // 8) * tensor_core_probe.STRIDE_BYTES + (k // per_core) * tensor_core_probe.LEADING_BYTES
                    + (r % 8) * 16 + (k % per_core) * size)
            assert ordered[byte // size] == tile[r, k]
    assert sorted(ordered.tolist()) == sorted(tile.reshape(-1).tolist())
    with pytest.raises(ValueError, match="whole core matrices"):
        tensor_core_probe.core_matrix_order(tile[:60])


def test_the_probes_mn_major_tiles_put_each_value_where_a_transposed_b_is_addressed():
    """bench/tensor_core_probe.py: value (k, n) of a K x N bfloat16 tile (N contiguous, as the maps' minibatch) in
    MN-major core-matrix order lies at byte (n // 8) stride + (k // 8) leading + (k % 8) 16 + (n % 8) 2: 16 bytes
    along N a core-matrix row, 8 inner terms a core matrix; every value once."""
    import numpy

    inner, columns = 16, 128
    tile = numpy.arange(inner * columns).astype("uint16").reshape(inner, columns)
    ordered = tensor_core_probe.mn_major_order(tile)
    for k in range(inner):
        for n in range(columns):
            byte = ((n // 8) * tensor_core_probe.STRIDE_BYTES + (k // 8) * tensor_core_probe.LEADING_BYTES
                    + (k % 8) * 16 + (n % 8) * 2)
            assert ordered[byte // 2] == tile[k, n]
    assert sorted(ordered.tolist()) == sorted(tile.reshape(-1).tolist())
    with pytest.raises(ValueError, match="whole core matrices"):
        tensor_core_probe.mn_major_order(tile[:12])


def test_the_kernel_tables_trace_lists_each_kernel_with_its_stream_in_start_order(tmp_path):
    kernels = [("void cupy_b<float>(int)", 5.0, 1.0), ("void cupy_a(float)", 4.0, 0.5)]
    kernel_table.write_trace(tmp_path / "trace.json", kernels, [7, 13])
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace == [{"name": "a", "stream": 13, "start": 0.0, "seconds": 0.5},
                     {"name": "b", "stream": 7, "start": 1.0, "seconds": 1.0}]


def test_the_trace_timeline_puts_each_kernel_in_its_streams_lane_under_its_kind(tmp_path):
    kernels = [{"name": "dasksae_wgmma_filter_forward", "stream": 14, "start": 0.010, "seconds": 0.002},
               {"name": "dasksae_copy_strips", "stream": 13, "start": 0.011, "seconds": 0.001},
               {"name": "dasksae_lcn_smooth", "stream": 13, "start": 0.0125, "seconds": 0.001},
               {"name": "dasksae_wgmma_filter_weight_grad_update", "stream": 13, "start": 0.030, "seconds": 0.004}]
    assert [trace_timeline.kind_of(k["name"]) for k in kernels] == ["W x", "halo copies", "the rest", "update"]
    lanes = trace_timeline.lanes(kernels, start=0.010, length=0.005)  # the update starts after the window
    assert list(lanes) == [13, 14]
    assert lanes[13] == {"halo copies": [(pytest.approx(1.0), pytest.approx(1.0))],
                         "the rest": [(pytest.approx(2.5), pytest.approx(1.0))]}
    assert lanes[14] == {"W x": [(0.0, pytest.approx(2.0))]}
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(kernels))
    trace_timeline.main([str(path), "--start", "0.01", "--length", "0.005", "--out", str(tmp_path / "t.png")])
    assert (tmp_path / "t.png").stat().st_size > 1000
    # W x alone for 1 ms, then 1 ms beside the copy (half each), nothing for 0.5 ms, the rest and the update alone
    alone, shared = trace_timeline.alone_and_shared(kernels)
    assert alone == pytest.approx({"W x": 1e-3, "the rest": 1e-3, "update": 4e-3})
    assert shared == pytest.approx({"W x": 0.5e-3, "halo copies": 0.5e-3})
    with pytest.raises(SystemExit, match="no kernel starts between"):
        trace_timeline.main([str(path), "--start", "1", "--out", str(tmp_path / "none.png")])


def test_the_float32_product_floor_summarises_every_wgmma_variant():
    """``bench/product_floor.py``'s float32 summary lists, for ``W x`` and ``W^T y``, the SIMT row, then three terms
    and one on ``mma.sync`` and on each ``wgmma`` variant of its kernel (the names its rows carry), then the read."""
    import product_floor

    from dasksae.kernels import mma_forward, mma_transpose

    names = product_floor.float32_row_names()
    assert names[0] == "forward" and names[-1] == "read" and len(names) == len(set(names))
    for product, variants in (("forward", mma_forward.SPLIT_WGMMA_VARIANTS),
                              ("transpose", mma_transpose.SPLIT_WGMMA_VARIANTS)):
        for terms in ("3xtf32", "tf32"):
            assert {f"{product}-{terms}-{variant}" for variant in variants} <= set(names)
            assert f"{product}-{terms}" in names
    assert "forward-3xtf32-w32-a-registers-hoisted" in names and "transpose-tf32-w32-split-2" in names


def test_the_floors_rows_option_names_rows_with_spaces_and_parentheses():
    """``--rows`` (both floors' option, for one Nsight Compute launch a row) splits on commas only: the update's row
    names hold spaces and parentheses; without it every row is taken."""
    import argparse

    import update_floor

    parser = argparse.ArgumentParser()
    update_floor.stage_arguments(parser)
    args = parser.parse_args(["--rows", "fused (3xtf32 rows-wide-wgmma), fused (tf32 rows-wide-wgmma),"])
    assert update_floor.chosen_rows(args) == {"fused (3xtf32 rows-wide-wgmma)", "fused (tf32 rows-wide-wgmma)"}
    assert update_floor.chosen_rows(parser.parse_args([])) is None
