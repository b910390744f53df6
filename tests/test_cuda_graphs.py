"""How a recorded tile step is cut into CUDA-graph runs (dasksae.cuda_graphs); the graphs themselves run on a GPU
(tests/test_gpu_tiled.py)."""

import collections
import os
import subprocess
import sys

import distributed
import numpy
import pytest

from dasksae import TiledNetwork, cuda_graphs, named_config, tile_ops, tile_program
from dasksae.cuda_graphs import EAGER, GRAPH, MESSAGE, Mismatch, host_side
from dasksae.tile_array import LocalExecutor
from dasksae.tile_program import _CONSTANT, _RECEIVED, _SLOT, CALL, SEND, TileProgram


@host_side
def _report(value):
    return float(value)


def test_runs_break_at_messages_received_values_and_host_side_calls():
    """Sends and host-side calls are runs of their own; a call that takes received values starts a run; what
    graph runs read from outside them is staged; what leaves them (sends, host-side calls, outputs) is kept."""
    program = TileProgram()
    x, state = program.register(), program.register()
    program.inputs.update(x=x, state0=state)
    made, summed, product, report = (program.register() for _ in range(4))
    program.call(numpy.add, [(_SLOT, x), (_SLOT, state)], [], made)
    program.call(numpy.negative, [(_SLOT, made)], [], summed)
    program.send((0, 1), "halo", [summed])
    program.call(numpy.multiply, [(_SLOT, summed), (_RECEIVED, None)], [("halo-back", [1])], product)
    program.call(_report, [(_SLOT, product)], [], report)
    program.outputs.update(report0=report, state0=state)
    program.finish()
    runs = cuda_graphs.plan(program.operations)
    assert runs == [(GRAPH, [0, 1]), (MESSAGE, [2]), (GRAPH, [3]), (EAGER, [4])]
    assert cuda_graphs.staged_registers(program.operations, runs) == {x, state}
    assert cuda_graphs.kept_registers(program.operations, runs, program.outputs.values()) == {summed, product}


def _programs():
    with tile_program._programs_lock:
        return list(tile_program._programs.values())


def _spmd_programs():
    """The four tile programs that one step of ``tiny`` on 2x2 worker threads records."""
    tile_program.forget_all()
    config = named_config("tiny")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (1,)).astype("float32")
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            TiledNetwork(config, "2x2", client, seed=0, dtype="float32").step(x, 1e-3, 0.9)
    return _programs()


def _check_runs(program):
    runs = cuda_graphs.plan(program.operations)
    assert [i for _, indices in runs for i in indices] == list(range(len(program.operations)))
    assert not any(op[0] == CALL and cuda_graphs._host_side(op) for op in program.operations)  # all on the device
    for kind, indices in runs:
        operations = [program.operations[i] for i in indices]
        if kind == MESSAGE:
            assert len(operations) == 1 and operations[0][0] == SEND
        elif kind == EAGER:
            assert len(operations) == 1 and cuda_graphs._host_side(operations[0])
        else:
            assert all(op[0] == CALL and not cuda_graphs._host_side(op) for op in operations)
            assert all(not op[3] for op in operations[1:])  # received values only at a run's start
    eager_made = {program.operations[i][4] for kind, indices in runs if kind == EAGER for i in indices}
    assert cuda_graphs.staged_registers(program.operations, runs) <= set(program.inputs.values()) | eager_made
    return runs


def test_the_fused_one_tile_step_is_one_graph_run_reports_included():
    tile_program.forget_all()
    config = named_config("tiny")
    x = numpy.random.default_rng(0).standard_normal(config.input_shape + (2,)).astype("float32")
    TiledNetwork(config, "1x1", executor=LocalExecutor(), seed=0, dtype="float32").step(x, 1e-3, 0.9)
    (program,) = _programs()
    runs = _check_runs(program)
    assert [kind for kind, _ in runs] == [GRAPH]  # the stages' reports and reductions stay on the device
    assert not hasattr(tile_ops.tile_report, "host_side") and not hasattr(tile_ops.reduce_stage, "host_side")


def test_an_spmd_tile_step_is_cut_at_every_message():
    programs = _spmd_programs()
    assert len(programs) == 4
    for program in programs:
        runs = _check_runs(program)
        sends = sum(op[0] == SEND for op in program.operations)
        assert sum(kind == MESSAGE for kind, _ in runs) == sends > 0
        assert sum(kind == GRAPH for kind, _ in runs) >= sum(bool(op[3]) for op in program.operations if op[0] == CALL
                                                             and not cuda_graphs._host_side(op))


def test_staged_values_take_new_arrays_of_the_same_kind_and_refuse_anything_else():
    buffer = cuda_graphs.clone({"h": (1.5, None, "strip"), "n": 3})
    cuda_graphs.copy_into(buffer, {"h": (1.5, None, "strip"), "n": 3})  # equal constants: nothing to copy
    for changed in ({"h": (2.5, None, "strip"), "n": 3}, {"h": (1.5, None), "n": 3}, {"h": (1.5, None, "strip")}):
        with pytest.raises(Mismatch):
            cuda_graphs.copy_into(buffer, changed)
    with pytest.raises(Mismatch, match="host array"):  # a graph would have baked it in
        cuda_graphs.copy_into(cuda_graphs.clone([numpy.zeros(2)]), [numpy.ones(2)])


def test_without_a_gpu_a_replay_is_the_plain_one(monkeypatch):
    """Graphs on, NumPy inputs: the program replays as calls and no graph state is made."""
    monkeypatch.setattr(cuda_graphs, "GRAPHS", True)
    program = TileProgram()
    x = program.register()
    program.inputs["x"] = x
    doubled = program.register()
    program.call(numpy.multiply, [(_SLOT, x), (_CONSTANT, 2)], [], doubled)
    program.outputs["y"] = doubled
    program.finish()
    assert cuda_graphs.replay(program, None, {"x": numpy.arange(3)})["y"].tolist() == [0, 2, 4]
    assert not hasattr(program, "graphed")


class _Step:
    """What the graphs' LRU sees of a graphed program: it can be released."""

    def __init__(self):
        self.released = 0

    def release(self):
        self.released += 1


def test_only_the_programs_replayed_last_keep_their_graphs(monkeypatch):
    """Graphs hold a step's temporaries: beyond MAX_GRAPHED_STEPS the least recently replayed program loses them,
    and release_all (tile_program.forget_all) drops them all."""

    monkeypatch.setattr(cuda_graphs, "MAX_GRAPHED_STEPS", 2)
    monkeypatch.setattr(cuda_graphs, "_recent", collections.OrderedDict())
    first, second, third = _Step(), _Step(), _Step()
    for step in (first, second, first, third):
        cuda_graphs._touch(step)
    assert [s.released for s in (first, second, third)] == [0, 1, 0]
    tile_program.forget_all()
    assert [s.released for s in (first, second, third)] == [1, 1, 1]


def test_a_step_mid_replay_keeps_its_graphs_until_its_replay_ends(monkeypatch):
    """With more tiles stepping at once in a process than MAX_GRAPHED_STEPS, another thread's replay must not
    release the graphs and staged buffers of a step whose replay is under way (its next run would launch
    nothing); nor may release_all. Both happen when that replay ends."""

    monkeypatch.setattr(cuda_graphs, "MAX_GRAPHED_STEPS", 1)
    monkeypatch.setattr(cuda_graphs, "_recent", collections.OrderedDict())
    busy, other, third = _Step(), _Step(), _Step()
    with cuda_graphs._replaying(busy):
        cuda_graphs._touch(other)  # another thread's replay, over the cap
        assert busy.released == 0
        cuda_graphs._touch(third)  # the idle one goes; the busy one stays
        assert (busy.released, other.released) == (0, 1)
    cuda_graphs._touch(other)  # now the busy step is idle, and least recent
    assert (busy.released, third.released) == (1, 1)
    with cuda_graphs._replaying(busy):
        tile_program.forget_all()
        assert (busy.released, other.released) == (1, 2)
    assert busy.released == 2  # released as its replay ended
    with cuda_graphs._replaying(busy):
        pass
    assert busy.released == 2  # once


@pytest.mark.parametrize("name,value,message", [
    ("DASKSAE_CUDA_GRAPHS", "yes", "DASKSAE_CUDA_GRAPHS must be auto, 1 or 0, got 'yes'; unset it for the default (auto)."),
    ("DASKSAE_GEMM", "simd", "DASKSAE_GEMM must be simt, cublas, tuned or search, got 'simd'; unset it for the default (simt)."),
    ("DASKSAE_SPMD_REPLAY", "false", "DASKSAE_SPMD_REPLAY must be 1 or 0, got 'false'; unset it for the default (1)."),
    ("DASKSAE_RUN_AHEAD", "3", "DASKSAE_RUN_AHEAD must be 2, 1 or 0, got '3'; unset it for the default (2)."),
    ("DASKSAE_DRIVER_GIL", "keep", "DASKSAE_DRIVER_GIL must be release or hold, got 'keep'; unset it for the default "
                                   "(release)."),
])
def test_a_bad_switch_is_refused_with_its_values(name, value, message):
    """The CLI says so in one line (exit 2, no traceback) before doing anything; a library import of the module
    that reads the switch raises SwitchError with the same sentence."""
    environment = {**os.environ, name: value}
    run = subprocess.run([sys.executable, "-m", "dasksae.cli", "info", "tiny"], env=environment, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == f"dasksae: error: {message}"
    assert run.stdout == ""
    run = subprocess.run([sys.executable, "-c", "import dasksae.tiled_network, dasksae.spmd, dasksae.cuda_graphs"], env=environment,
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"dasksae.switches.SwitchError: {message}" in run.stderr


def _two_sends_then_a_receipt(second_call):
    """0: made = -x; 1: send made; 2: negated = second_call(made); 3: send negated; 4: negated * (received
    "back"); 5: its report (host-side)."""
    program = TileProgram()
    x = program.register()
    program.inputs.update(x=x)
    made, negated, product, report = (program.register() for _ in range(4))
    program.call(numpy.negative, [(_SLOT, x)], [], made)
    program.send((0, 1), "first", [made])
    program.call(second_call, [(_SLOT, made)], [], negated)
    program.send((1, 0), "second", [negated])
    program.call(numpy.multiply, [(_SLOT, negated), (_RECEIVED, None)], [("back", [1])], product)
    program.call(_report, [(_SLOT, product)], [], report)
    program.outputs.update(report0=report)
    program.finish()
    return program


def test_cut_at_receipts_only_a_send_follows_the_run_that_makes_its_values():
    """DASKSAE_GRAPH_CUTS=receipts: sends no longer end a graph run; each is made after its run, before anything
    that waits for a message or runs on the host."""
    program = _two_sends_then_a_receipt(numpy.negative)
    assert cuda_graphs.plan(program.operations) == [(GRAPH, [0]), (MESSAGE, [1]), (GRAPH, [2]), (MESSAGE, [3]),
                                                    (GRAPH, [4]), (EAGER, [5])]
    assert cuda_graphs.plan(program.operations, cut_at_sends=False) == [(GRAPH, [0, 2]), (MESSAGE, [1]), (MESSAGE, [3]),
                                                                        (GRAPH, [4]), (EAGER, [5])]


def test_cut_at_receipts_keeps_each_spmd_tile_step_in_message_order():
    for program in _spmd_programs():
        operations = program.operations
        cut = cuda_graphs.plan(operations)
        merged = cuda_graphs.plan(operations, cut_at_sends=False)
        order = [i for _, indices in merged for i in indices]
        assert sorted(order) == list(range(len(operations)))
        sends = [indices[0] for kind, indices in merged if kind == MESSAGE]
        assert sends == sorted(sends)  # messages leave in the recorded order
        position = {index: p for p, (_, indices) in enumerate(merged) for index in indices}
        for kind, indices in merged:
            if kind == GRAPH:
                assert all(not operations[i][3] for i in indices[1:])
            waits = kind == EAGER or (kind == GRAPH and operations[indices[0]][3])
            if waits:  # every send recorded before a wait is made before it
                assert all(position[s] < position[indices[0]] for s in sends if s < indices[0])
        made_by = {operations[i][4]: position[i] for i in range(len(operations)) if operations[i][0] == CALL}
        for send in sends:  # a send's values are made by runs before it
            assert all(made_by.get(r, -1) < position[send] for r in operations[send][3])
        graph_runs = lambda runs: sum(kind == GRAPH for kind, _ in runs)  # noqa: E731
        assert graph_runs(merged) < graph_runs(cut)
        assert cuda_graphs.staged_registers(operations, merged) <= set(program.inputs.values()) | {
            operations[i][4] for kind, indices in merged if kind == EAGER for i in indices}


class _Mailboxes:
    """An executor for one tile's program: what it sends, in order, and what it is sent."""

    step_id = "step"

    def __init__(self, incoming: dict):
        self.sent, self.incoming = [], incoming

    def _send(self, tile, tag, values, event=None):
        self.sent.append(tag)

    def receive(self, tag):
        return self.incoming[tag]


@pytest.mark.parametrize("cuts", ["messages", "receipts"])
def test_a_staged_step_that_fails_midway_goes_on_as_calls_and_loses_no_message(monkeypatch, cuts):
    """A call that fails in the staged replay ends the graphs; the step goes on as calls from that call, and every
    message goes out once, in the recorded order (with ``receipts``, the run held back a send the failed call
    comes after)."""
    monkeypatch.setattr(cuda_graphs, "CUTS", cuts)
    failures = []

    def fails_once(value):
        if not failures:
            failures.append("the first call of negated")
            raise RuntimeError("cannot be captured")
        return -value

    program = _two_sends_then_a_receipt(fails_once)
    graphed = cuda_graphs.GraphedStep(program)
    executor = _Mailboxes({"step:back": [numpy.array(3.0)]})
    outputs = graphed.replay(executor, {"x": numpy.array(2.0)})
    assert executor.sent == ["step:first", "step:second"]
    assert outputs["report0"] == 6.0  # -(-2) * 3
    assert failures and graphed.failure == "RuntimeError: cannot be captured"
    cuda_graphs.release_all()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cuts", ["messages", "receipts"])
def test_spmd_steps_run_as_graph_runs_train_as_plain_replays(monkeypatch, cuts):
    """Four worker threads run their tiles' steps as the staged replay runs them on a GPU (graph runs, sends and
    host-side calls in the planned order, received values through staged buffers), on NumPy: no tile waits for a
    message that is never sent, and the losses and weights are those of plain replays."""
    config = named_config("tiny")
    data = numpy.random.default_rng(4)
    batches = [data.standard_normal(config.input_shape + (2,)).astype("float32") for _ in range(3)]

    def train():
        tile_program.forget_all()
        with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                network = TiledNetwork(config, "2x2", client, seed=2, dtype="float32")
                return [r.loss for r in network.steps(batches, 1e-3, 0.9)], network.parameters()

    expected, expected_parameters = train()
    cuda_graphs.failures.clear()
    staged = []
    monkeypatch.setattr(cuda_graphs, "CUTS", cuts)
    monkeypatch.setattr(cuda_graphs, "GRAPHS", True)
    monkeypatch.setattr(cuda_graphs, "has_device_arrays", lambda inputs: True)

    def staged_replay(self, executor, inputs):
        staged.append(1)
        return (yield from self._execute_steps(executor, inputs, "staged"))

    monkeypatch.setattr(cuda_graphs.GraphedStep, "replay_steps", staged_replay)
    got, parameters = train()
    assert len(staged) == 4 * (len(batches) - 1)  # every tile's every replayed step
    assert cuda_graphs.failures == []
    numpy.testing.assert_array_equal(got, expected)
    for mine, theirs in zip(parameters, expected_parameters):
        numpy.testing.assert_array_equal(mine["encoder"], theirs["encoder"])


def test_the_sends_after_a_graph_run_go_in_one_batch_each_once_in_order():
    """Consecutive sends are batched (copied out of the graphs' memory together): every send is in exactly one
    batch, a batch is a run of consecutive sends, and batches keep the recorded order."""
    for program in _spmd_programs():
        for cut_at_sends in (False, True):
            runs = cuda_graphs.plan(program.operations, cut_at_sends=cut_at_sends)
            batches = cuda_graphs.send_batches(program.operations, runs)
            sends = [indices[0] for kind, indices in runs if kind == MESSAGE]
            assert [i for position in sorted(batches) for i in batches[position]] == sends
            for position, indices in batches.items():
                assert [runs[p] for p in range(position, position + len(indices))] == [(MESSAGE, [i]) for i in indices]
                assert position == 0 or runs[position - 1][0] != MESSAGE
            if not cut_at_sends:
                assert len(batches) < len(sends)  # sends to several neighbours follow one run


def test_copy_arrays_copies_each_pair_and_refuses_a_mismatch():
    from dasksae.kernels.copies import copy_arrays

    sources = [numpy.arange(n, dtype=dtype) for n, dtype in [(7, "float32"), (0, "float64"), (5, "uint16")]]
    destinations = [numpy.zeros_like(s) for s in sources]
    copy_arrays(list(zip(sources, destinations)))
    for source, destination in zip(sources, destinations):
        numpy.testing.assert_array_equal(destination, source)
    with pytest.raises(ValueError, match="cannot copy an array of shape \\(7,\\)"):
        copy_arrays([(sources[0], numpy.zeros(6, "float32"))])


class _DeviceArrayStandIn:
    """What :class:`~dasksae.kernels.copies.CopyPlan` reads of a CuPy array (its module name makes it one)."""

    __module__ = "cupy.stand_in"

    def __init__(self, pointer, nbytes, contiguous=True, device=0):
        self.shape, self.dtype, self.nbytes = (nbytes,), numpy.dtype("uint8"), nbytes
        self.flags = type("Flags", (), {"c_contiguous": contiguous})()
        self.data = type("Memory", (), {"ptr": pointer, "device_id": device})()


def test_a_copy_plan_batches_device_pairs_as_copy_arrays_did_and_launches_on_the_stream_of_each_run(monkeypatch):
    """CopyPlan (copy_arrays, DASKSAE_SEND_PLANS) on CuPy arrays, stood in for: contiguous pairs on the current device
    go SEGMENTS_A_LAUNCH to a kernel launch in order, a last one alone to the runtime's copy, empty ones nowhere;
    a strided pair or one on another device is copied on its own; each run launches on that run's current stream;
    a mismatched pair is refused before anything is copied."""
    import types

    from dasksae.kernels import copies

    stream = types.SimpleNamespace(ptr=7000)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                                            get_current_stream=lambda: stream))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    made = []
    monkeypatch.setattr(copies, "copy_array", lambda source, out: made.append(("alone", source, out)))
    monkeypatch.setattr(copies, "copy_async", lambda *arguments: made.append(("runtime", *arguments)))
    monkeypatch.setattr(copies, "_launch_through_driver_or_cupy",
                        lambda kernel, grid, device, at, arguments: made.append(("kernel", grid, device, at, arguments)))
    per_launch = copies.SEGMENTS_A_LAUNCH
    contiguous = [(_DeviceArrayStandIn(100 + i, 32 * (i + 1)), _DeviceArrayStandIn(500 + i, 32 * (i + 1)))
                  for i in range(per_launch + 1)]
    empty = (_DeviceArrayStandIn(90, 0), _DeviceArrayStandIn(91, 0))
    strided = (_DeviceArrayStandIn(80, 64, contiguous=False), _DeviceArrayStandIn(81, 64))
    elsewhere = (_DeviceArrayStandIn(70, 64, device=1), _DeviceArrayStandIn(71, 64, device=1))
    plan = copies.CopyPlan(contiguous[:3] + [empty, strided] + contiguous[3:] + [elsewhere])
    assert made == []  # planned, nothing copied
    for at in (7000, 7100):
        stream.ptr = at
        made.clear()
        plan.run()
        segments = [(source.data.ptr, destination.data.ptr, source.nbytes) for source, destination in contiguous]
        grid = (copies._blocks_for(32 * per_launch), per_launch, 1)
        assert made == [("alone", *strided), ("alone", *elsewhere),
                        ("kernel", grid, 0, at, copies.segment_arguments(segments[:per_launch])),
                        ("runtime", 500 + per_launch, 100 + per_launch, 32 * (per_launch + 1), at)]
    made.clear()
    with pytest.raises(ValueError, match="cannot copy an array of shape"):
        copies.copy_arrays(contiguous[:2] + [(_DeviceArrayStandIn(1, 8), _DeviceArrayStandIn(2, 16))])
    assert made == []


def test_copy_array_copies_into_a_buffer_and_makes_new_ones():
    from dasksae.kernels.backend import copy_array

    value = numpy.arange(12.0).reshape(3, 4)
    made = copy_array(value)
    assert made is not value and numpy.array_equal(made, value)
    buffer = numpy.zeros((4, 3)).T  # not C-contiguous: copied element by element
    assert copy_array(value, out=buffer) is buffer
    assert numpy.array_equal(buffer, value)
    value[0, 0] = -1.0
    assert made[0, 0] == 0.0 and buffer[0, 0] == 0.0


def test_batched_copy_arguments_match_the_kernels_parameters():
    """The packed arguments of the batched copy (launched through the driver, kernels/driver_launch.py) have the
    kernel's parameter list's layout: SEGMENTS_A_LAUNCH triples of unsigned long long, in order, then zeros."""
    import re
    import struct

    from dasksae.kernels import copies

    signature = re.search(r"dasksae_copy_segments\((.*?)\)", copies.copy_segments_source(), re.S).group(1)
    parameters = [p.strip() for p in signature.split(",")]
    assert len(parameters) == 3 * copies.SEGMENTS_A_LAUNCH
    assert all(p.startswith("unsigned long long ") for p in parameters)
    assert struct.calcsize(copies.ARGUMENT_LAYOUT) == 8 * len(parameters)
    segments = [(1000 + i, 2000 + i, 16 * i + 3) for i in range(3)]
    arguments = copies.segment_arguments(segments)
    assert arguments[:9] == [1000, 2000, 3, 1001, 2001, 19, 1002, 2002, 35]
    assert arguments[9:] == [0] * (3 * copies.SEGMENTS_A_LAUNCH - 9)
    unpacked = struct.unpack(copies.ARGUMENT_LAYOUT, struct.pack(copies.ARGUMENT_LAYOUT, *arguments))
    assert list(unpacked) == arguments
    with pytest.raises(ValueError, match="at most"):
        copies.segment_arguments([(1, 2, 3)] * (copies.SEGMENTS_A_LAUNCH + 1))


def _numpy_as_device_arrays(monkeypatch):
    """Let NumPy arrays stand for device arrays in the staging functions (the outboxes' logic needs no GPU)."""
    monkeypatch.setattr(cuda_graphs, "on_device", lambda value: isinstance(value, numpy.ndarray))


def _bare_graphed_step():
    """A GraphedStep with no program: enough for its sends and receipts (``_copied_out``, ``_staged_received``)."""
    step = object.__new__(cuda_graphs.GraphedStep)
    step.outboxes, step.sent, step.received, step.adopted, step.adopted_read = {}, {}, {}, {}, {}
    step.send_plans = {}
    return step


def test_an_outbox_is_free_only_when_nothing_but_itself_refers_to_its_arrays(monkeypatch):
    _numpy_as_device_arrays(monkeypatch)
    sent = [numpy.arange(4.0), {"strip": numpy.ones((2, 3)), "count": 3}, None]
    outbox = cuda_graphs.Outbox(sent)
    lent = outbox.lend()
    assert lent is not outbox.value and lent[1] is not outbox.value[1]  # new containers: holding them counts
    assert lent[0] is outbox.value[0] and not numpy.shares_memory(lent[0], sent[0])  # its own copies
    numpy.testing.assert_array_equal(lent[1]["strip"], sent[1]["strip"])
    assert not outbox.free()
    del lent
    assert outbox.free()
    view = outbox.lend()[1]["strip"][:1]  # a view of a lent array, kept after the containers were dropped
    assert not outbox.free()
    del view
    assert outbox.free()


def test_sends_reuse_their_outboxes_once_the_receivers_dropped_them_and_allocate_past_the_cap(monkeypatch):
    _numpy_as_device_arrays(monkeypatch)
    monkeypatch.setattr(cuda_graphs, "OUTBOXES", True)
    step = _bare_graphed_step()
    value = [numpy.full(3, 1.0)]
    pairs = []
    first = step._copied_out(7, value, pairs)  # a new outbox: copied at once, nothing left to copy
    assert pairs == [] and len(step.outboxes[7]) == 1
    second = step._copied_out(7, [numpy.full(3, 2.0)], pairs)  # the first is still held: a second outbox
    assert len(step.outboxes[7]) == 2 and second[0] is not first[0] and first[0][0] == 1.0
    kept = first[0]
    del first, kept
    third = step._copied_out(7, [numpy.full(3, 3.0)], pairs)  # the first outbox again, its copy left to the caller
    assert len(step.outboxes[7]) == 2 and third[0] is step.outboxes[7][0].value[0]
    assert len(pairs) == 1 and pairs[0][1] is third[0] and pairs[0][0][0] == 3.0
    held = [third, second] + [step._copied_out(7, value, []) for _ in range(cuda_graphs.MAX_OUTBOXES - 2)]
    assert len(step.outboxes[7]) == cuda_graphs.MAX_OUTBOXES
    pairs = []
    extra = step._copied_out(7, value, pairs)  # every outbox held: a new array, not kept
    assert len(step.outboxes[7]) == cuda_graphs.MAX_OUTBOXES
    assert all(extra[0] is not outbox.value[0] for outbox in step.outboxes[7]) and pairs[0][1] is extra[0]
    monkeypatch.setattr(cuda_graphs, "OUTBOXES", False)
    del held
    pairs = []
    plain = step._copied_out(7, value, pairs)  # switched off: a clone each send
    assert all(plain[0] is not outbox.value[0] for outbox in step.outboxes[7]) and pairs[0][1] is plain[0]


class _OneReceipt:
    """A program whose operation 0 takes one message: what ``receive`` hands over next."""

    def __init__(self):
        self.next = None

    def receive(self, executor, prefix, index):
        return [self.next]


def test_an_adopted_outbox_is_refilled_in_place_only_after_its_reader_launched_the_step_before(monkeypatch):
    """DASKSAE_OUTBOX_IN_PLACE: the receiver's graphs adopt the sender's outbox at capture; a later send is
    copied straight into it once the receiver's step that read the previous send has been launched, else into
    another outbox, which the receiver copies in. Whichever way, each step reads that step's values."""
    _numpy_as_device_arrays(monkeypatch)
    monkeypatch.setattr(cuda_graphs, "OUTBOXES", True)
    monkeypatch.setattr(cuda_graphs, "IN_PLACE", True)
    sender, receiver = _bare_graphed_step(), _bare_graphed_step()
    receiver.program, receiver._retired = _OneReceipt(), []

    def send(step):
        pairs = []
        lent = sender._copied_out(5, [numpy.full(4, float(step))], pairs)
        cuda_graphs.copy_arrays(pairs)  # as _send_batch does, after the batch's sends
        return lent, pairs

    def receive(lent, mode):
        receiver.program.next = lent
        staged = receiver._staged_received(None, "", 0, mode)[0]
        if mode != "staged":
            receiver._step_launched()
        return staged

    assert receive([numpy.full(4, 1.0)], "staged")[0][0] == 1.0  # step 1: the sender's registers, cloned
    lent, _ = send(2)
    staged = receive(lent, "capture")  # step 2: adopted
    outbox = sender.outboxes[5][0]
    assert outbox.adopted and staged[0] is outbox.value[0] and staged[0][0] == 2.0
    lent, pairs = send(3)  # the receiver launched step 2: refilled in place
    assert lent.outbox is outbox and pairs and pairs[0][1] is outbox.value[0] and cuda_graphs.filled_in_place
    early, _ = send(4)  # before the receiver launched step 3: into another outbox
    assert early.outbox is not outbox and outbox.value[0][0] == 3.0
    staged = receive(lent, "launch")  # nothing to copy: the adopted outbox holds step 3's values
    assert staged[0] is outbox.value[0] and staged[0][0] == 3.0
    staged = receive(early, "launch")  # copied in by the receiver, after its step 3
    assert staged[0] is outbox.value[0] and staged[0][0] == 4.0
    lent, _ = send(5)
    assert lent.outbox is outbox  # in place again
    assert receive(lent, "launch")[0][0] == 5.0
    receiver._reset()  # its graphs dropped: the sender stops writing into what they read
    assert not outbox.adopted
    lent, _ = send(6)
    assert lent.outbox is not outbox or not outbox.adopted
    assert lent[0][0] == 6.0



class _Sends:
    """A program of two consecutive sends (operations 0 and 1, to tiles 0 and 1), of registers 0 and 1."""

    operations = [(SEND, 0, "a", [0]), (SEND, 1, "b", [1])]


class _Postbox:
    def __init__(self):
        self.sent = []

    def _send(self, tile, tag, value, event=None):
        self.sent.append((tile, tag, value))


def test_a_send_batch_made_in_place_is_made_again_from_its_plan_and_left_when_it_does_not_hold(monkeypatch):
    """DASKSAE_SEND_PLANS: a launched batch whose sends all went in place into their receivers' adopted outboxes keeps
    its copies; later launches make them from that plan (after the same turns), so each receiver reads each step's
    values.  A receiver not ready sends that step the long way (the plan stays); other arrays in the registers drop
    the plan for good; a receiver that stops reading its outbox drops it until another can be made."""
    _numpy_as_device_arrays(monkeypatch)
    for name in ("OUTBOXES", "IN_PLACE", "SEND_PLANS"):
        monkeypatch.setattr(cuda_graphs, name, True)
    sender = _bare_graphed_step()
    sender.program = _Sends()
    receivers = [_bare_graphed_step() for _ in range(2)]
    for receiver in receivers:
        receiver.program, receiver._retired = _OneReceipt(), []
    postbox = _Postbox()
    registers = [numpy.zeros(4), numpy.zeros((2, 3))]

    def step(number, mode, receiving="launch", ready=(True, True)):
        """The sender's batch of step ``number`` in ``mode``; each ready receiver then takes its value."""
        registers[0][:], registers[1][:] = number, -number
        postbox.sent.clear()
        before = cuda_graphs.planned_sends
        sender._send_batch(postbox, "s.", registers, [0, 1], mode)
        assert [(tile, tag) for tile, tag, _ in postbox.sent] == [(0, "s.a"), (1, "s.b")]
        for receiver, (_, _, lent), go in zip(receivers, postbox.sent, ready):
            if go:
                receive(receiver, lent, receiving, number)
        return cuda_graphs.planned_sends - before, [lent for _, _, lent in postbox.sent]

    def receive(receiver, lent, mode, number):
        receiver.program.next = lent
        staged = receiver._staged_received(None, "", 0, mode)[0]
        if mode != "staged":
            receiver._step_launched()
        assert numpy.abs(staged[0]).min() == numpy.abs(staged[0]).max() == number, (number, staged[0])

    assert step(1, "staged", "staged")[0] == 0  # the registers themselves
    assert step(2, "capture", "capture")[0] == 0  # into new outboxes, which the receivers adopt
    assert step(3, "launch")[0] == 0 and sender.send_plans[0] is not None  # in place: the plan is made
    outboxes = [sender.outboxes[index][0] for index in (0, 1)]
    planned, lent = step(4, "launch")
    assert planned == 2 and [value.outbox for value in lent] == outboxes and lent[0].sequence == 3  # (numbered from the capture)
    planned, early = step(5, "launch", ready=(True, False))  # receiver 1 has not taken step 5's send yet
    assert planned == 2
    planned, late = step(6, "launch", ready=(True, False))  # nor launched its step 5: the long way, plan kept
    assert planned == 0 and late[0].outbox is outboxes[0] and late[1].outbox is not outboxes[1]
    assert sender.send_plans[0] is not None
    receive(receivers[1], early[1], "launch", 5)  # in place
    receive(receivers[1], late[1], "launch", 6)  # copied in by the receiver
    assert step(7, "launch")[0] == 2
    registers[1] = numpy.zeros((2, 3))  # other arrays: no plan from now on
    assert step(8, "launch")[0] == 0 and sender.send_plans[0] is None
    assert step(9, "launch")[0] == 0
    sender.send_plans.clear()
    assert step(10, "launch")[0] == 0 and sender.send_plans[0] is not None
    assert step(11, "launch")[0] == 2
    receivers[0]._reset()  # its graphs dropped: it no longer reads the outbox
    assert step(12, "launch", receiving="staged")[0] == 0 and 0 not in sender.send_plans
