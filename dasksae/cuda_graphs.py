"""A tile's recorded step replayed as CUDA graphs: one launch for each run of calls between messages.

:mod:`dasksae.tile_program` replays a tile's step as a list of Python calls;
each call still launches its kernels one by one, and four worker threads
sharing a GPU take turns at the GIL to do so.  On a GPU the program is cut
into runs:

* ``send``: a message; its values are copied out of the graphs' memory first
  (the next step's launch writes there again), into buffers kept for that
  send and reused once its receiver has dropped them (:class:`Outbox`,
  ``DASKSAE_OUTBOXES``; 4 worker threads on coates200 in bfloat16 took
  38.3-40.3 ms a step with them against 39.1-40.5 without, in turn, on an
  H200, ``bench/results/session15/outbox``).  With
  ``DASKSAE_OUTBOX_IN_PLACE=1`` (the default since session 17; on an H200 in
  session 16, 216 of 217 sends a step went in place, 37.5-37.7 ms against
  38.0-38.3 ms off, ``bench/results/session16/inplace``) a receiver's graphs
  read one outbox of each send directly, adopted at capture, and the sender
  copies a later send straight into it once the receiver has launched the
  step that read the one before (:meth:`Outbox.take_turn`; the sender's copy
  waits on the device for that step's end); otherwise the send goes to
  another outbox and the receiver copies it in, as every receipt does
  with ``DASKSAE_OUTBOX_IN_PLACE=0``.  By default
  (``DASKSAE_GRAPH_CUTS=receipts``) a send does not end a graph run: it is
  made right after the run that made its values, before anything that waits
  for a message, and the sends that follow one run are copied out together,
  in one launch, with one event for their receivers
  (:func:`~dasksae.kernels.copies.copy_arrays`); with ``messages`` each
  send ends the run;
* ``eager``: a call marked :func:`host_side` (it reads device values on the
  host), run as a Python call.  Since session 11 no call of a tile step is:
  the reports and the stage's reduction stay on the device;
* ``graph``: the calls between those.  A call that takes received values
  starts a new run, so that the thread waits for a message only where the
  recorded step did.

The first replay runs each graph run as Python calls on *staged* values:
copies of what the run reads from outside the graphs (the minibatch,
received halos, RICA's scale state, which lives on the device, and results
of host-side calls), so that the graphs read the new values every step.
The weights and momentum are not copied: they are updated in place, and a
launch checks that the state it is given is the same arrays the graphs were
captured with (else it replays without graphs and captures again).  The
second replay captures each graph run on a stream of its own, allocating
from a memory pool private to the program, as
PyTorch's graphs do: the run's temporaries are reused within the graphs
exactly as they were at capture, and nothing else allocates there.  Later
replays copy the new inputs into the staged buffers and launch the graphs.

Each replay is a generator (:func:`~dasksae.tile_program.finished` runs it):
it yields the tags of a run's receipts before it takes them, and a launching
replay first yields :data:`~dasksae.tile_program.HAND_OVER`, from where
another thread of the process may go on with it, on this tile's stream
(``DASKSAE_ONE_LAUNCHER``, :mod:`dasksae.launcher`).  Staging and capture
stay on the tile's own thread: their calls use its cuBLAS handle, whose
workspace serves one stream.

Anything that fails while staging or capturing (a call that waits for the
device without being marked, a received value of another shape) ends the
graphs for that program: the step goes on as Python calls from where it
failed, and so do later steps.  Once launched, the graphs cannot be left
mid-step (values passed between runs live only in their memory): a failure
then is an error that names the switch.

When (``DASKSAE_CUDA_GRAPHS``, :data:`GRAPHS`): ``auto`` (the default)
replays as graphs where a tile exchanges halos with workers of its own
process, which share its GPU (``--workers-per-gpu K``: four worker threads on coates200, 2x2
tiles, M=96, took 85.3 ms a float32 step with graphs against 103.7 without,
on an H200), and where the network is one tile (one worker, or in-process:
no messages; on an H100 in session 54, coates200, M=96, bfloat16, the
1-worker step pipelined took 21.4 ms twice against 21.7, the in-process
step 21.7-22.1 ms against 22.3-22.5, holding no more memory), and as calls
otherwise (tiles whose neighbours are in other processes, one worker a GPU:
not measured with graphs).  ``1`` and ``0`` force them on or off.  A
graphed program holds its step's temporaries in its own pool for as long
as it may launch again: the :data:`MAX_GRAPHED_STEPS`
programs replayed last in the process keep their graphs, and
:func:`release_all` (called by :func:`dasksae.tile_program.forget_all`)
frees them all; neither takes the graphs of a step whose replay is under
way in another thread (with more tiles stepping at once than the cap, the
cap is exceeded until their replays end).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import weakref

from . import collector
from .kernels.backend import copy_array, on_device
from .kernels.copies import CopyPlan, copy_arrays
from .kernels.driver_launch import launch_graph
from .streams import device_event, has_device_arrays, wait_for_event
from .switches import switch
from .tile_program import _CONSTANT, _SLOT, CALL, HAND_OVER, SEND, finished, is_array, prefix_of

_SWITCH = switch("DASKSAE_CUDA_GRAPHS")
# True: replay tile steps on a GPU as CUDA graphs; False: as calls; "auto": as graphs where a tile's neighbours
# are workers of this process (threads sharing a GPU) or where it has none (one tile), as calls otherwise
GRAPHS = True if _SWITCH == "1" else False if _SWITCH == "0" else "auto"
MAX_GRAPHED_STEPS = 16  # per process: the programs replayed last keep their graphs (and their memory)
# where a tile's step is cut into graph runs: only where it waits for a message (the default: sends follow the run
# that makes their values; a third of the launches, and 4 worker threads sharing an H200 stepped 49.2 against
# 53.2 ms in bfloat16, 83.7 against 86.8 in float32, bench/results/session10/next), or at every message
CUTS = switch("DASKSAE_GRAPH_CUTS")
# values sent out of the graphs' memory are copied into buffers kept for each send and reused once the receiver
# has dropped them (Outbox), instead of fresh allocations each step; "0": fresh allocations (clone) as before
OUTBOXES = switch("DASKSAE_OUTBOXES") == "1"
MAX_OUTBOXES = 6  # per send: with all of them still held by receivers, a send allocates afresh
# a receiver's graphs read one outbox of each send directly (adopted at capture), which the sender refills in place
# once the receiver's previous step has been launched (Outbox.take_turn), instead of the receiver copying each
# received value into its staged buffers; "0": the receiver copies (the default until session 16 ran it on a GPU)
IN_PLACE = switch("DASKSAE_OUTBOX_IN_PLACE") == "1"
# "1" (opt-in; on the H200 in session 31 bit for bit, but no faster: 26.9 against 26.7 ms): a send batch whose sends all
# went in place into their receivers' adopted outboxes keeps what it copied where as a CopyPlan, and later steps make
# the same copies from it (after the same turn-taking) instead of walking the values and checking each pair again; a
# receipt filled in place is taken as it is, without walking it.  "0": every send batch works its copies out afresh,
# and every receipt is walked (copy_into, which copies nothing for those filled in place)
SEND_PLANS = switch("DASKSAE_SEND_PLANS") == "1"
GRAPH, EAGER, MESSAGE = "graph", "eager", "send"


def host_side(function):
    """Mark ``function`` as reading device values on the host: it runs between graphs, never in one."""
    function.host_side = True
    return function


def plan(operations, cut_at_sends: bool = True) -> list:
    """The operations' runs, in order: ``(kind, [operation indices])`` with kind ``send``, ``eager`` or ``graph``.

    ``cut_at_sends=False`` (``DASKSAE_GRAPH_CUTS=receipts``): a send does not end its graph run; it is made
    right after the run (its values are final by then: nothing writes a sent value after it is made), before
    anything that waits for a message, so sends keep their order relative to every receipt.
    """
    runs, deferred = [], []
    for index, operation in enumerate(operations):
        graph_open = bool(runs) and runs[-1][0] == GRAPH
        if operation[0] == SEND:
            if graph_open and not cut_at_sends:
                deferred.append(index)
            else:
                runs.append((MESSAGE, [index]))
        elif graph_open and not _host_side(operation) and not operation[3]:
            runs[-1][1].append(index)
        else:
            runs.extend((MESSAGE, [i]) for i in deferred)
            deferred.clear()
            runs.append((EAGER if _host_side(operation) else GRAPH, [index]))
    runs.extend((MESSAGE, [i]) for i in deferred)
    return runs


def _host_side(operation) -> bool:
    """Whether a call is host-side: its function, or a function it is given (``tile_array._call_tile``'s)."""
    _, function, sources, _, _ = operation
    return getattr(function, "host_side", False) or any(
        source == _CONSTANT and getattr(value, "host_side", False) for source, value in sources)


def staged_registers(operations, runs) -> set:
    """Registers that graph runs read but no graph run made (inputs, host-side results): they are staged."""
    made, staged = set(), set()
    for kind, indices in runs:
        for index in indices:
            operation = operations[index]
            if kind == GRAPH:
                staged.update(value for source, value in operation[2] if source == _SLOT and value not in made)
            if operation[0] == CALL and kind == GRAPH:
                made.add(operation[4])
    return staged


def kept_registers(operations, runs, outputs) -> set:
    """Registers made in graph runs that sends, host-side calls or the step's outputs read: kept across replays."""
    made = {operations[i][4] for kind, indices in runs if kind == GRAPH for i in indices}
    read = set(outputs)
    for kind, indices in runs:
        if kind == MESSAGE:
            read.update(operations[indices[0]][3])
        elif kind == EAGER:
            read.update(value for source, value in operations[indices[0]][2] if source == _SLOT)
    return made & read


def send_batches(operations, runs) -> dict:
    """Consecutive sends of ``runs``, by the position of the first: ``{position: [operation indices]}``.

    With graph runs cut at receipts, the sends that follow a run (its values, to each neighbour) are
    consecutive; they are copied out of the graphs' memory together.
    """
    batches, first = {}, None
    for position, (kind, indices) in enumerate(runs):
        if kind != MESSAGE:
            first = None
            continue
        if first is None:
            first = position
            batches[first] = []
        batches[first].append(indices[0])
    return batches


class Mismatch(Exception):
    """A value does not fit the buffer the graphs read (another shape, dtype or constant)."""


def clone(value, pairs=None):
    """``value`` with its device arrays copied (containers rebuilt, everything else as it is).

    ``pairs``: a list to which each ``(array, its copy)`` is added instead of copying it; the caller copies
    them all at once (:func:`~dasksae.kernels.copies.copy_arrays`).
    """
    if isinstance(value, dict):
        return {k: clone(v, pairs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone(v, pairs) for v in value)
    if on_device(value):
        if pairs is None:
            return copy_array(value)
        pairs.append((value, type(value)(value.shape, value.dtype)))
        return pairs[-1][1]
    return value


def copy_into(buffer, value, pairs=None):
    """Copy ``value``'s device arrays into ``buffer`` (made by :func:`clone`); anything else must be equal.

    ``pairs``: a list to which each ``(array, buffer)`` is added instead of copying it (as in :func:`clone`).
    """
    if isinstance(buffer, dict):
        if not isinstance(value, dict) or buffer.keys() != value.keys():
            raise Mismatch("the keys of a staged value changed")
        for key in buffer:
            copy_into(buffer[key], value[key], pairs)
    elif isinstance(buffer, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(buffer) != len(value):
            raise Mismatch("the length of a staged value changed")
        for b, v in zip(buffer, value):
            copy_into(b, v, pairs)
    elif on_device(buffer):
        if not on_device(value) or value.shape != buffer.shape or value.dtype != buffer.dtype:
            raise Mismatch("a staged array changed shape or dtype")
        if value is not buffer:
            if pairs is None:
                copy_array(value, out=buffer)
            else:
                pairs.append((value, buffer))
    elif is_array(buffer) or is_array(value):
        raise Mismatch("a host array cannot be staged")
    elif not (buffer is value or buffer == value):
        raise Mismatch("a constant read by the graphs changed")


def rewrapped(value):
    """``value`` in new containers around the same arrays (and everything else as it is)."""
    if isinstance(value, dict):
        return {k: rewrapped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rewrapped(v) for v in value)
    return value


def _device_arrays(value) -> list:
    if isinstance(value, dict):
        return [a for v in value.values() for a in _device_arrays(v)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _device_arrays(v)]
    return [value] if on_device(value) else []


class Outbox:
    """Buffers that one send's values are copied into, out of the graphs' memory, and lent to the receiver.

    Made by :func:`clone` at the first send; later sends copy into the
    same buffers once they are free again.  They are free when nothing but
    the outbox refers to its arrays: the receiver keeps what it took until
    its stream has passed the step that read it
    (:class:`~dasksae.streams.StepFence`), then drops it, which is when a
    cloned value's memory went back to CuPy's pool before; a view of a lent
    array kept anywhere keeps the outbox busy.  Each send is lent in new
    containers (:func:`rewrapped`), so holding them counts.
    """

    __slots__ = ("value", "arrays", "idle", "adopted", "consumed", "consumed_event", "lock")

    def __init__(self, value):
        self.value = clone(value)
        self.arrays = _device_arrays(self.value)
        self.idle = self._references()
        self.lock = threading.Lock()
        self.adopted = False  # a receiver's graphs read these arrays (DASKSAE_OUTBOX_IN_PLACE)
        self.consumed = None  # the adopter's last launched step read the send of this number (Lent.sequence)
        self.consumed_event = None  # recorded on the adopter's stream at the end of that step

    def _references(self) -> list:
        return [sys.getrefcount(array) for array in self.arrays]

    def free(self) -> bool:
        return self._references() == self.idle

    def take_turn(self, sequence: int):
        """For an adopted outbox: ``(True, event)`` if its adopter has launched the step that read send
        ``sequence - 1`` (then send ``sequence`` may be copied in, once the device passes ``event``), else
        ``(False, None)``: the send goes elsewhere and the adopter copies it in."""
        with self.lock:
            if self.adopted and self.consumed == sequence - 1:
                return True, self.consumed_event
            return False, None

    def lend(self):
        return rewrapped(self.value)


class _SendPlan:
    """A send batch's copies out of the graphs' memory, kept (:data:`SEND_PLANS`): the arrays it was made for
    (``sources``), each send's adopted outbox (``outboxes``) and the copies between them (``copies``, a
    :class:`~dasksae.kernels.copies.CopyPlan`)."""

    __slots__ = ("sources", "outboxes", "copies")

    def __init__(self, sources, outboxes, copies):
        self.sources, self.outboxes, self.copies = sources, outboxes, copies

    @classmethod
    def of(cls, values, sent, copies):
        """The plan of a batch that sent ``values`` as ``sent`` with ``copies``, or ``None`` unless every send went
        into an outbox that its receiver's graphs read (they are the same outboxes every step)."""
        outboxes = [getattr(lent, "outbox", None) for lent in sent]
        if not all(outbox is not None and outbox.adopted for outbox in outboxes):
            return None
        return cls([list(value) for value in values], outboxes, copies)

    def reads(self, values) -> bool:
        """Whether ``values`` are the very values (the same objects) that the plan copies."""
        return len(values) == len(self.sources) and all(
            len(value) == len(source) and all(a is b for a, b in zip(value, source))
            for value, source in zip(values, self.sources))


def _numbered(value, outbox, sequence):
    """``value`` (a send's list of values) as a :class:`Lent` where receivers may adopt outboxes
    (:data:`IN_PLACE`); else, or anything but a list, as it is."""
    return Lent(value, outbox, sequence) if IN_PLACE and isinstance(value, list) else value


class Lent(list):
    """One send's values copied out of the graphs' memory, numbered (``sequence``: the send's first step is
    1), with the :class:`Outbox` they were lent from (``outbox``; ``None`` for new arrays)."""

    __slots__ = ("outbox", "sequence")

    def __init__(self, values, outbox=None, sequence=0):
        super().__init__(values)
        self.outbox, self.sequence = outbox, sequence


def _identities(state: dict) -> dict:
    return {key: (id(value), value.data.ptr) for key, value in state.items() if on_device(value)}


_graphed_steps = weakref.WeakSet()  # for the memory figures (CuPy's pools take no weak references)


def private_pool_bytes() -> int:
    """Bytes the graphs' private memory pools hold, in this process."""
    return sum(pool.total_bytes() for step in list(_graphed_steps) for pool in [step.pool, *step._retired]
               if pool is not None)


_capture_streams: dict = {}
_capture_lock = threading.Lock()  # one capture at a time in the process, and no capture while cached memory is freed
_recent: "collections.OrderedDict" = collections.OrderedDict()  # id -> weak reference, least recently replayed first
_recent_lock = threading.Lock()
_replaying_now: dict = {}  # id -> how many replays of that step are under way (their graphs are not released)
_release_when_done: set = set()  # ids of steps that release_all met mid-replay


def _capture_stream(cupy):
    """This thread's stream for captures (non-blocking: work that other threads put on the legacy stream
    cannot join a capture)."""
    key = (threading.get_ident(), cupy.cuda.runtime.getDevice())
    if key not in _capture_streams:
        _capture_streams[key] = cupy.cuda.Stream(non_blocking=True)
    return _capture_streams[key]


def _stage(store: dict, key, value, mode, pairs=None):
    """``store[key]``, the buffer a graph run reads for ``value``: made (:func:`clone`) in the staged replay,
    refilled later (``pairs``: as :func:`copy_into` takes it)."""
    if mode == "staged":
        store[key] = clone(value)
    else:
        copy_into(store[key], value, pairs)
    return store[key]


class GraphedStep:
    """A :class:`~dasksae.tile_program.TileProgram` replayed through CUDA graphs (the module text says how)."""

    def __init__(self, program):
        self.program = program
        self.runs = plan(program.operations, cut_at_sends=CUTS == "messages")
        self.staged = staged_registers(program.operations, self.runs)
        self.kept_registers = kept_registers(program.operations, self.runs, program.outputs.values())
        self.send_batches = send_batches(program.operations, self.runs)
        self.replays = 0
        self.failure = ""
        self._retired = []  # pools of abandoned graphs, kept while arrays made there may live
        self._reset()
        _graphed_steps.add(self)

    def _reset(self):
        pool = getattr(self, "pool", None)
        self.graphs = None  # run position -> cupy.cuda.Graph (None: not captured)
        self.buffers = {}  # register -> staged value the graph runs read
        self.received = {}  # (operation index, receipt number) -> staged received value
        self.kept = {}  # register -> value made in a graph run at capture, read outside the graphs
        self.states = {}  # input name -> identities of the state arrays the graphs were captured with
        self.outboxes = {}  # send operation index -> its Outboxes
        for outbox in getattr(self, "adopted", {}).values():  # the sender refills them only for this step's graphs
            with outbox.lock:
                outbox.adopted = False
        self.adopted = {}  # (operation index, receipt number) -> a sender's Outbox these graphs read
        self.adopted_read = {}  # the same key -> the number of the send this step read there
        self.sent = {}  # send operation index -> sends made (numbered from 1: Lent.sequence)
        self.send_plans = {}  # first send index of a batch -> _SendPlan, or None where the batch cannot have one
        self.pool = None
        if pool is not None:  # the graphs and the values above are gone: the pool's blocks can go
            self._retired.append(pool)
        self._free_retired()

    def _free_retired(self):
        """Free what the pools of dropped graphs no longer lend out; forget the pools that hold nothing."""
        with _capture_lock:  # freeing waits for the device, which a capture in another thread must not see
            for pool in self._retired:
                pool.free_all_blocks()  # blocks that arrays still hold (values a caller kept) stay
        self._retired = [pool for pool in self._retired if pool.total_bytes()]

    def release(self):
        """Drop the graphs and free their memory; the next replay stages and captures again."""
        self._reset()
        self.replays = 0

    def replay(self, executor, inputs: dict) -> dict:
        return finished(self.replay_steps(executor, inputs))

    def replay_steps(self, executor, inputs: dict):
        """:meth:`replay` as a generator of its receipts (:func:`~dasksae.tile_program.finished`)."""
        if self.failure:
            return (yield from self.program.replay_steps(executor, inputs))
        with _replaying(self):
            self.replays += 1
            if self.replays == 1:
                return (yield from self._execute_steps(executor, inputs, "staged"))
            if self.graphs is None:
                collector.thaw()  # the graphs may replace others (dasksae.collector)
                try:
                    return (yield from self._execute_steps(executor, inputs, "capture"))
                finally:
                    collector.programs_changed()
            for name, identities in self.states.items():
                if _identities(inputs[name]) != identities:  # other state arrays: replay as calls, capture again
                    self.release()
                    return (yield from self.program.replay_steps(executor, inputs))
            # from here on the step launches graphs made by its own thread (each with that thread's cuBLAS handle
            # and its workspace), makes its sends and takes its receipts: another thread may do that
            yield HAND_OVER
            return (yield from self._execute_steps(executor, inputs, "launch"))

    # ------------------------------------------------------------ staging

    def _input_buffer(self, register, name, value, mode):
        """What graph runs read for input ``name``: the state itself (updated in place) or a staged copy."""
        if name.startswith("state"):
            if mode == "capture":
                self.states[name] = _identities(value)
            return value
        return _stage(self.buffers, register, value, mode)

    def _staged_received(self, executor, prefix, index, mode):
        """The received values of a run's first call, copied into its staged buffers (all in one launch)."""
        taken = self.program.receive(executor, prefix, index)
        self._taken = (index, taken)  # for a step that goes on as calls after a failure here
        pairs, staged = [], []
        for number, value in enumerate(taken):
            key = (index, number)
            outbox = self.adopted.get(key)
            if SEND_PLANS and outbox is not None and getattr(value, "outbox", None) is outbox:  # filled in place
                staged.append(self.received[key])
            elif mode == "capture" and IN_PLACE and self._adopt(key, value):
                staged.append(self.received[key])
            else:  # (a send that went to another outbox or new arrays is copied in here)
                staged.append(_stage(self.received, key, value, mode, pairs))
            if key in self.adopted:
                self.adopted_read[key] = getattr(value, "sequence", None)
        copy_arrays(pairs)
        return staged

    def _adopt(self, key, value) -> bool:
        """Read the sender's outbox that ``value`` was lent from directly, from now on, instead of a staged copy
        (at capture; the outbox must fit the staged buffer)."""
        outbox = getattr(value, "outbox", None)
        if outbox is None or key not in self.received:
            return False
        try:
            copy_into(self.received[key], value, [])
        except Mismatch:
            return False
        with outbox.lock:
            if outbox.adopted:
                return False
            outbox.adopted, outbox.consumed = True, None  # until this step's end says what it read
        self.received[key], self.adopted[key] = value, outbox
        return True

    def _step_launched(self):
        """Every graph of this step is launched: the fills of adopted outboxes so far are read once the
        stream passes here (the event their senders' next fills wait for)."""
        if not self.adopted:
            return
        event = device_event([outbox.arrays for outbox in self.adopted.values()])
        for key, outbox in self.adopted.items():
            with outbox.lock:
                outbox.consumed, outbox.consumed_event = self.adopted_read.get(key), event

    # ------------------------------------------------------------ the step

    def _execute_steps(self, executor, inputs, mode):
        """The step in ``mode`` (``staged``, ``capture`` or ``launch``), yielding the tags of each run's receipts
        before it takes them (:func:`~dasksae.tile_program.finished`); returns the outputs."""
        program = self.program
        registers = [None] * program.registers
        for name, register in program.inputs.items():
            registers[register] = inputs[name]
            if register in self.staged:
                self.buffers[register] = self._input_buffer(register, name, inputs[name], mode)
        if mode == "launch":
            for register, value in self.kept.items():
                registers[register] = value
        if mode == "capture":
            import cupy

            self.graphs, self.pool = {}, cupy.cuda.MemoryPool()
        prefix = prefix_of(executor)
        self._taken, self._before = (None, None), None
        for position, (kind, indices) in enumerate(self.runs):
            if kind == MESSAGE:  # the sends that follow one graph run go together, from the batch's first
                if position in self.send_batches:
                    self._send_batch(executor, prefix, registers, self.send_batches[position], mode)
            elif kind == EAGER:
                index = indices[0]
                out = program.operations[index][4]
                if program.operations[index][3]:
                    yield program.receipt_tags(prefix, index)
                registers[out] = self._plain_call(executor, prefix, registers, index)
                if out in self.staged:
                    _stage(self.buffers, out, registers[out], mode)
                self._free(registers, program._frees[index])
            else:
                self._at = indices[0]
                if program.operations[indices[0]][3]:
                    yield program.receipt_tags(prefix, indices[0])
                try:
                    self._graph_run(executor, prefix, registers, position, indices, mode)
                except Exception as error:  # noqa: BLE001 - the step goes on as calls, without graphs
                    if mode == "launch":  # values passed between graph runs exist only in the graphs' memory
                        raise RuntimeError(f"a tile step replayed as CUDA graphs failed ({type(error).__name__}: "
                                           f"{error}); set DASKSAE_CUDA_GRAPHS=0 to train without them") from error
                    # nothing of a failed capture ran, so it goes on from the run's start; staged calls ran
                    start = indices[0] if mode == "capture" else self._at
                    if mode == "capture" and self._before is not None:
                        registers[:] = self._before
                    self._give_up(f"{type(error).__name__}: {error}")
                    # sends that this run held back until its end but that come before the failed call go first
                    for later_kind, later in self.runs[position + 1:]:
                        if later_kind != MESSAGE or later[0] > start:
                            break
                        self._send(executor, prefix, registers, later[0], copy=False)
                    # no graph is launched again, so what earlier runs made is not rewritten: plain sends do
                    yield from program.run_steps(executor, registers, start, self._taken)
                    break
        if mode != "staged" and not self.failure:
            self._step_launched()
        if mode == "capture" and not self.failure:
            import cupy

            # the calls' temporaries now live in the graphs' pool: what the recording and staged steps left cached
            # in the default pool would hold a second copy for as long as the process runs
            with _capture_lock:
                cupy.get_default_memory_pool().free_all_blocks()
        return {name: registers[r] for name, r in program.outputs.items()}

    def _send(self, executor, prefix, registers, index, copy: bool):
        """Send operation ``index``'s values; ``copy``: out of the graphs' memory (the next launch writes there)."""
        _, tile, suffix, sources = self.program.operations[index]
        values = [registers[r] for r in sources]
        executor._send(tile, prefix + suffix, [clone(v) for v in values] if copy else values)

    def _send_batch(self, executor, prefix, registers, indices, mode):
        """Send operations ``indices`` (consecutive sends); past the staged step, out of the graphs' memory, every
        array of the batch in one launch, and one event for them all (what the receivers' streams wait for).  At
        launches, from the batch's :class:`_SendPlan` where it has one and every receiver is ready for it."""
        operations = [self.program.operations[index] for index in indices]
        values = [[registers[r] for r in operation[3]] for operation in operations]
        event = None
        if mode != "staged":
            planned = self._planned_sends(indices, values) if mode == "launch" and SEND_PLANS else None
            if planned is None:
                pairs = []
                sent = [self._copied_out(index, value, pairs) for index, value in zip(indices, values)]
                copies = CopyPlan(pairs)
                copies.run()
                if mode == "launch" and SEND_PLANS and indices[0] not in self.send_plans:
                    plan = _SendPlan.of(values, sent, copies)
                    if plan is not None:  # (else a later step tries again)
                        self.send_plans[indices[0]] = plan
                values = sent
            else:
                values = planned
            event = device_event(values)
        for operation, value in zip(operations, values):
            executor._send(operation[1], prefix + operation[2], value, event=event)

    def _planned_sends(self, indices, values):
        """The batch's sends made from its :class:`_SendPlan`, or ``None`` (then :meth:`_copied_out` makes them):
        there is no plan, the values are not the arrays it was made for (the plan is dropped, and none made
        again), a receiver's graphs no longer read its outbox (the plan is dropped; a later step may make
        another), or a receiver has not launched the step that read the previous send (:meth:`Outbox.take_turn`)."""
        plan = self.send_plans.get(indices[0])
        if plan is None:
            return None
        if not plan.reads(values):
            self.send_plans[indices[0]] = None
            return None
        if not all(outbox.adopted for outbox in plan.outboxes):  # (its copies hold the outboxes' arrays)
            del self.send_plans[indices[0]]
            return None
        sequences = [self.sent.get(index, 0) + 1 for index in indices]
        turns = [outbox.take_turn(sequence) for outbox, sequence in zip(plan.outboxes, sequences)]
        if not all(ready for ready, _ in turns):
            return None
        global filled_in_place, planned_sends
        for index, sequence in zip(indices, sequences):
            self.sent[index] = sequence
        for _, event in turns:
            if event is not None:
                wait_for_event(event)
        plan.copies.run()
        filled_in_place += len(indices)
        planned_sends += len(indices)
        return [_numbered(outbox.lend(), outbox, sequence) for outbox, sequence in zip(plan.outboxes, sequences)]

    def _copied_out(self, index, value, pairs):
        """Send ``index``'s ``value`` copied out of the graphs' memory: into a free :class:`Outbox` of that send
        (``pairs`` gets the copies), else into a new one while there are fewer than :data:`MAX_OUTBOXES`, else
        into new arrays (:func:`clone`).  An outbox that the receiver's graphs read (adopted) is refilled in
        place when its receiver has launched its step that read the previous send (:meth:`Outbox.take_turn`);
        else this send goes elsewhere.  Sends are numbered, so that the receiver can say which one it read."""
        sequence = self.sent.get(index, 0) + 1
        self.sent[index] = sequence
        if not OUTBOXES:
            return _numbered(clone(value, pairs), None, sequence)
        global reused_outboxes, filled_in_place
        outboxes = self.outboxes.setdefault(index, [])
        for outbox in outboxes:
            adopted = outbox.adopted  # its receiver's graphs read it
            if not (adopted or outbox.free()):
                continue
            copies = []
            try:
                copy_into(outbox.value, value, copies)
            except Mismatch:  # (not in a replay of the same graphs) a value of another shape: a new array
                break
            if adopted:
                ready, event = outbox.take_turn(sequence)
                if not ready:  # the receiver copies this send in, after its previous step
                    continue
                if event is not None:
                    wait_for_event(event)
                filled_in_place += 1
            else:
                reused_outboxes += 1
            pairs.extend(copies)
            return _numbered(outbox.lend(), outbox, sequence)
        else:
            if len(outboxes) < MAX_OUTBOXES:
                outboxes.append(Outbox(value))  # cloned: copied at once, on this stream, before the event
                return _numbered(outboxes[-1].lend(), outboxes[-1], sequence)
        return _numbered(clone(value, pairs), None, sequence)

    def _give_up(self, reason):
        import logging

        self.failure = reason
        failures.append(reason)
        logging.getLogger("dasksae").warning("CUDA graphs off for a tile's step: %s", reason)
        self._reset()

    def _plain_call(self, executor, prefix, registers, index):
        function, values = self.program.arguments(index, registers, self.program.receive(executor, prefix, index))
        return function(*values)

    def _graph_run(self, executor, prefix, registers, position, indices, mode):
        received = self._staged_received(executor, prefix, indices[0], mode)
        global launches
        if mode == "launch":
            launch_graph(self.graphs[position])
            launches += 1
            return
        if mode == "staged":  # (no CuPy needed: a CPU test replays staged steps on NumPy)
            self._calls(registers, indices, received)
            return
        import cupy

        self._before = list(registers)  # a failed capture goes on from here (it may have dropped some)
        stream = _capture_stream(cupy)
        with _capture_lock, stream, cupy.cuda.using_allocator(self.pool.malloc):
            stream.begin_capture()
            try:
                self._calls(registers, indices, received)
            finally:
                graph = stream.end_capture()
        for index in indices:
            out = self.program.operations[index][4]
            if out in self.kept_registers:
                self.kept[out] = registers[out]
        self._before = None
        self.graphs[position] = graph
        graph.launch()

    def _calls(self, registers, indices, received):
        for number, index in enumerate(indices):
            self._at = index
            function, values = self.program.arguments(index, registers, received if number == 0 else [])
            for argument, (source, register) in enumerate(self.program.operations[index][2]):
                if source == _SLOT and register in self.buffers:  # what the graphs read: the staged buffers
                    values[argument] = self.buffers[register]
            registers[self.program.operations[index][4]] = function(*values)
            self._free(registers, self.program._frees[index])

    def _free(self, registers, frees):
        for register in frees:
            if register not in self.kept_registers:
                registers[register] = None


failures: list = []  # why graphs were given up, in this process (bench/gpu_step.py prints them)
launches = 0  # graph launches in this process (captures not counted)
reused_outboxes = 0  # sends copied into an outbox of an earlier step, in this process
filled_in_place = 0  # sends copied into an outbox that their receiver's graphs read (DASKSAE_OUTBOX_IN_PLACE)
planned_sends = 0  # of those, sends made from their batch's _SendPlan (DASKSAE_SEND_PLANS)


def replay(program, executor, inputs: dict) -> dict:
    """``program`` replayed with ``executor``: through CUDA graphs where they are on (:data:`GRAPHS`) and the
    inputs are on a GPU, else as Python calls (:meth:`~dasksae.tile_program.TileProgram.replay`)."""
    return finished(replay_steps(program, executor, inputs))


def replay_steps(program, executor, inputs: dict):
    """:func:`replay` as a generator of its receipts (:func:`~dasksae.tile_program.finished`)."""
    if not GRAPHS or not has_device_arrays(inputs) or (GRAPHS == "auto" and not _graphed_by_default(executor)):
        return (yield from program.replay_steps(executor, inputs))
    graphed = getattr(program, "graphed", None)
    if graphed is None:
        graphed = program.graphed = GraphedStep(program)
    return (yield from graphed.replay_steps(executor, inputs))


def _graphed_by_default(executor) -> bool:
    """Whether ``auto`` replays the tile's step as graphs: the network is one tile (``executor`` is ``None``: no
    messages), or the step exchanges halos with tiles whose workers run in this process (threads on one GPU)."""
    return executor is None or executor.shares_process()


def _touch(step):
    """``step`` is the most recently replayed; beyond :data:`MAX_GRAPHED_STEPS`, the least recent lose their
    graphs, except steps whose replay is under way in another thread (the cap is exceeded until they end)."""
    with _recent_lock:
        _recent.pop(id(step), None)
        _recent[id(step)] = weakref.ref(step)
        idle = [key for key in _recent if key != id(step) and key not in _replaying_now]
        released = [_recent.pop(key)() for key in idle[: max(0, len(_recent) - MAX_GRAPHED_STEPS)]]
    for old in released:
        if old is not None:
            old.release()


@contextlib.contextmanager
def _replaying(step):
    """A replay of ``step`` is under way: it is the most recently replayed, and nothing releases its graphs and
    staged buffers until it ends (a release asked for meanwhile happens then)."""
    with _recent_lock:
        _replaying_now[id(step)] = _replaying_now.get(id(step), 0) + 1
    try:
        _touch(step)
        yield
    finally:
        with _recent_lock:
            left = _replaying_now.pop(id(step)) - 1
            if left:
                _replaying_now[id(step)] = left
            release = not left and id(step) in _release_when_done
            if release:
                _release_when_done.discard(id(step))
        if release:
            step.release()


def release_all():
    """Drop every program's graphs in this process and free their memory (:func:`dasksae.tile_program.forget_all`
    calls this); a program whose replay is under way in another thread drops them when it ends."""
    with _recent_lock:
        steps = [ref() for ref in _recent.values()]
        _recent.clear()
        busy = [step for step in steps if step is not None and id(step) in _replaying_now]
        _release_when_done.update(id(step) for step in busy)
    for step in steps:
        if step is not None and step not in busy:
            step.release()
