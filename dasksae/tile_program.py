"""A tile's share of an SPMD step, recorded once and replayed without building the step's graph again.

Each tile's task runs :func:`~dasksae.tiled_network.build_step` with a
:class:`~dasksae.spmd.SpmdExecutor`: the layer code walks the whole graph
(every tile's calls, halo windows, strips, counts) to find the few calls
that are its tile's own and the messages it sends and takes.  For ``tiny``
on 2x2 tiles that is about 19,000 Python calls a tile and step, where the
tile's own layer functions make about 6,000 (``bench/spmd_calls.py``).
Worker threads that share one GPU take turns at the GIL, so that
bookkeeping is paid four times a step.

The program is the same for every step of a run (same config, tiles,
placement, minibatch shape, learning rate and precision), so the first step
records what this tile did, in order:

* ``call``: a function of this tile, its arguments as constants, as results
  of earlier calls or inputs (registers), or as values taken from the
  mailbox by tag;
* ``send``: values of registers sent to another tile with a tag.

Later steps replay that list: the same functions on the same kinds of
arguments, the same messages under the same tags (with the new step's
prefix), in the same order, so the exchange cannot deadlock where the
recorded one did not.  A register is dropped after its last reader, as the
graph's handles were.  Anything that would make a replay differ (an array
passed as a constant, a handle of this tile that is neither an input nor a
result) marks the program as not replayable, and every step then builds
the graph as before.
"""

from __future__ import annotations

import threading

import numpy

from . import collector
from .switches import switch

SEND, CALL = 0, 1
_SLOT, _CONSTANT, _RECEIVED = 0, 1, 2

REPLAY = switch("DASKSAE_SPMD_REPLAY") == "1"  # 0: build the step's graph every step
# "1" (the default since session 29): consecutive calls of a function with a batched form (a tile's halo cuts for its
# neighbours) are replayed as one call of that form (TileProgram.fuse): one launch of the strip copies instead of one
# a strip; "0": one call a cut
FUSED_CUTS = switch("DASKSAE_FUSED_CUTS") == "1"

_programs: dict = {}
_programs_lock = threading.Lock()
MAX_PROGRAMS = 32  # per process: a few runs' worth of (tile, shape, learning rate) combinations


class TileProgram:
    """What one tile's task did in one step, as a list of operations on numbered registers."""

    def __init__(self):
        self.operations: list = []
        self.registers = 0
        self.inputs: dict = {}  # name -> register
        self.outputs: dict = {}  # name -> register
        self.stages = None  # (first, last) stage of the step
        self.replayable = True
        self.reason = ""
        self._frees: list = []

    def register(self) -> int:
        self.registers += 1
        return self.registers - 1

    def refuse(self, reason: str):
        if self.replayable:
            self.replayable, self.reason = False, reason

    def send(self, tile, suffix: str, registers: list):
        self.operations.append((SEND, tile, suffix, registers))

    def call(self, function, sources: list, receipts: list, out: int):
        """``sources[i]``: ``(_SLOT, register)``, ``(_CONSTANT, value)`` or ``(_RECEIVED, None)`` (set from ``receipts``,
        a list of ``(tag suffix, argument indices)``)."""
        self.operations.append((CALL, function, sources, receipts, out))

    def fuse(self):
        """Replace each run of two or more calls of one function that has a batched form (``function.batched``,
        taking their arguments one after another and returning their results in a list) by one call of that
        form, then a pick of each result into the register its call wrote.  A run may have sends between its
        calls (they are made after the batched call, in their order) but no receipts, and its calls read none of
        each other's results; anything else ends it."""
        operations, fused = self.operations, []
        index = 0
        while index < len(operations):
            first = operations[index]
            batched = getattr(first[1], "batched", None) if first[0] == CALL and not first[3] else None
            if batched is None:
                fused.append(first)
                index += 1
                continue
            calls, sends, made = [first], [], {first[4]}
            index += 1
            while index < len(operations):
                operation = operations[index]
                if operation[0] == SEND:
                    sends.append(operation)
                elif (operation[1] is first[1] and not operation[3]
                      and not any(kind == _SLOT and value in made for kind, value in operation[2])):
                    calls.append(operation)
                    made.add(operation[4])
                else:
                    break
                index += 1
            if len(calls) == 1:
                fused.append(first)
                fused.extend(sends)
                continue
            results = self.register()
            fused.append((CALL, batched, [source for call in calls for source in call[2]], [], results))
            fused.extend((CALL, _pick, [(_SLOT, results), (_CONSTANT, number)], [], call[4])
                         for number, call in enumerate(calls))
            fused.extend(sends)
        self.operations = fused

    def finish(self):
        """Work out after which operation each register is read for the last time (outputs are kept; a result
        that nothing reads is dropped after the operation that made it); with :data:`FUSED_CUTS`, :meth:`fuse`
        first."""
        if FUSED_CUTS:
            self.fuse()
        last = {}
        for index, operation in enumerate(self.operations):
            if operation[0] == SEND:
                for register in operation[3]:
                    last[register] = index
            else:
                for kind, value in operation[2]:
                    if kind == _SLOT:
                        last[value] = index
        for index, operation in enumerate(self.operations):  # a result nobody reads goes as soon as it is made
            if operation[0] == CALL and operation[4] not in last:
                last[operation[4]] = index
        kept = set(self.outputs.values())
        self._frees = [[] for _ in self.operations]
        for register, index in last.items():
            if register not in kept:
                self._frees[index].append(register)

    def replay(self, executor, inputs: dict) -> dict:
        """Run the recorded operations with ``executor`` (its step id, mailbox and sends); returns the outputs."""
        return finished(self.replay_steps(executor, inputs))

    def replay_steps(self, executor, inputs: dict):
        """:meth:`replay` as a generator of its receipts (see :func:`finished`); returns the outputs."""
        registers = [None] * self.registers
        for name, register in self.inputs.items():
            registers[register] = inputs[name]
        yield from self.run_steps(executor, registers)
        return {name: registers[register] for name, register in self.outputs.items()}

    def run(self, executor, registers: list, start: int = 0, taken=(None, None)):
        """Operations ``start`` on, on ``registers`` (as :meth:`replay` does).  ``taken``: ``(index, values)``,
        the received values of operation ``index``, already taken from the mailbox."""
        finished(self.run_steps(executor, registers, start, taken))

    def run_steps(self, executor, registers: list, start: int = 0, taken=(None, None)):
        """:meth:`run` as a generator of its receipts (see :func:`finished`)."""
        prefix = prefix_of(executor)
        for index in range(start, len(self.operations)):
            operation = self.operations[index]
            if operation[0] == SEND:
                _, tile, suffix, sources = operation
                executor._send(tile, prefix + suffix, [registers[r] for r in sources])
            else:
                if taken[0] == index:
                    received = taken[1]
                else:
                    if operation[3]:
                        yield self.receipt_tags(prefix, index)
                    received = self.receive(executor, prefix, index)
                function, values = self.arguments(index, registers, received)
                registers[operation[4]] = function(*values)
            for register in self._frees[index]:
                registers[register] = None

    def receive(self, executor, prefix: str, index: int) -> list:
        """The values operation ``index`` takes from the mailbox, one list a receipt."""
        return [executor.receive(prefix + suffix) for suffix, _ in self.operations[index][3]]

    def receipt_tags(self, prefix: str, index: int) -> list:
        """The tags of the messages operation ``index`` takes (what :meth:`receive` waits for)."""
        return [prefix + suffix for suffix, _ in self.operations[index][3]]

    def arguments(self, index: int, registers: list, received: list):
        """``(function, arguments)`` of call ``index``: registers, constants and the ``received`` values."""
        _, function, sources, receipts, _ = self.operations[index]
        values = [registers[value] if kind == _SLOT else value for kind, value in sources]
        for (_, indices), taken in zip(receipts, received):
            for argument, value in zip(indices, taken):
                values[argument] = value
        return function, values


def _pick(values: list, number: int):
    """Result ``number`` of a batched call (:meth:`TileProgram.fuse`)."""
    return values[number]


def prefix_of(executor) -> str:
    """The tags' prefix of ``executor``'s step (``""`` for a program without messages: one tile)."""
    return "" if executor is None else executor.step_id + ":"


def _constant(value):
    """A value put into the program as a constant (a recorded ``put``)."""
    return value


def is_array(value) -> bool:
    """Whether ``value`` holds an array anywhere (NumPy or a device array), which a replay must not reuse."""
    if isinstance(value, (list, tuple)):
        return any(is_array(v) for v in value)
    if isinstance(value, dict):
        return any(is_array(v) for v in value.values())
    if isinstance(value, numpy.generic):  # a NumPy scalar is a value, like a Python float
        return False
    return hasattr(value, "__array_interface__") or hasattr(value, "__cuda_array_interface__")


def step_inputs(x, states, scales) -> dict:
    """A tile step's inputs by the names its program records them under (``None`` entries are left out)."""
    named = {"x": x, **{f"state{k}": state for k, state in enumerate(states)},
             **{f"scale{k}": scale for k, scale in enumerate(scales)}}
    return {name: value for name, value in named.items() if value is not None}


HAND_OVER = "hand over"  # yielded by a replayed step that may go on on another thread (dasksae.launcher)


def finished(steps):
    """What generator ``steps`` returns, run to its end here.

    A replayed step is a generator that yields, before each operation that takes messages, the tags it is about
    to take (its *receipts*), and returns the step's result.  Run here, each take simply waits for its message;
    one thread that runs several tiles' steps in turn (:mod:`dasksae.launcher`) resumes a step only once its
    messages are there.  A step that only launches CUDA graphs from there on yields :data:`HAND_OVER` first.
    """
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def replayed(key, executor, inputs: dict):
    """The step replayed from the program kept for ``key``, or ``None`` if there is none to replay.

    ``executor``: what the program's messages go through (``None`` for one tile).  Returns ``(first,
    last, {stage: (filter-backward result, reduced summary or None)})``.
    """
    return finished(replayed_steps(key, executor, inputs))


def replayed_steps(key, executor, inputs: dict):
    """:func:`replayed` as a generator of its receipts (see :func:`finished`)."""
    program = lookup(key) if REPLAY else None
    if program is None or not program.replayable:
        return None
    from . import cuda_graphs

    # as CUDA graphs where they are on (a GPU only)
    outputs = yield from cuda_graphs.replay_steps(program, executor, inputs)
    first, last = program.stages
    return first, last, {k: (outputs[f"state{k}"], outputs.get(f"reduced{k}")) for k in range(first, last + 1)}


def built(key, executor, input_handles: dict, build):
    """The step built by ``build()`` with ``executor``, recorded as ``key``'s program unless one is kept already.

    ``input_handles``: the handles of the tile's inputs, by name (:func:`step_inputs`); ``build()``
    returns ``(first, last, {stage: (filter-backward handle, reduced handle or None)})``.  Returns the
    same with values, as :func:`replayed` does.
    """
    record = REPLAY and lookup(key) is None
    if record:
        collector.thaw()  # the new program may replace another (dasksae.collector)
        executor.start_recording()
        for name, handle in input_handles.items():
            executor.record_input(handle, name)
    first, last, handles = build()
    if record:
        for k, (state, reduced) in handles.items():
            executor.record_output(state, f"state{k}")
            if reduced is not None:
                executor.record_output(reduced, f"reduced{k}")
        executor.program.stages = (first, last)
        keep(key, executor.program)  # kept even if not replayable: then it is not recorded again
        executor.program = None
        collector.programs_changed()
    return first, last, {k: (state.value, None if reduced is None else reduced.value) for k, (state, reduced) in handles.items()}


def lookup(key):
    with _programs_lock:
        return _programs.get(key)


def keep(key, program: TileProgram):
    """Keep ``program`` for ``key``: finished if replayable, else emptied (it may hold arrays) as a marker."""
    if program.replayable:
        program.finish()
    else:
        program.operations, program.inputs, program.outputs = [], {}, {}
    with _programs_lock:
        if len(_programs) >= MAX_PROGRAMS:
            _programs.pop(next(iter(_programs)))
        _programs[key] = program


def forget_all():
    """Forget every kept program, and free the memory of their CUDA graphs (:mod:`dasksae.cuda_graphs`)."""
    from . import cuda_graphs

    with _programs_lock:
        _programs.clear()
    cuda_graphs.release_all()
