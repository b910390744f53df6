"""One Dask task per tile per step: the layer graph run by every tile's worker at once, halos sent worker to worker.

The graph mode (:class:`~dasksae.tile_array.DaskExecutor`) submits every
layer, cut and report of a step as its own task: ~29 tasks per tile and
stage (350 for ``tiny`` on 2x2 tiles), each a scheduler round trip of a few
milliseconds, so a step on a GPU is bound by the scheduler, not the card
(``bench/gpu_step.py``: 1.07 s for 2x2 tiles of a 1.5B net against 0.24 s for
one tile).  This is the other way, as Coates et al. ran it with MPI: the
client submits **one task per tile**; each runs :func:`~dasksae.tiled_network.build_step`
(the same layer code) with a :class:`SpmdExecutor` that executes only its own
tile's functions, in program order, and exchanges with the neighbours
directly:

* every tile's program makes the same calls in the same order, so the n-th
  value that crosses from tile j to tile i has the same tag on both sides;
* when a function of tile i takes a value made on tile j, worker j sends it
  (``worker.rpc(address_i).dasksae_put``, over the cluster's transport, UCX
  where configured) and worker i waits for it in its mailbox.  A send only
  ever waits on earlier receives, so the programs cannot deadlock;
* the stage reductions (losses, the gradient of ``a``) are the same
  functions run on tile (0, 0), which sends the new ``a`` to the tiles that
  read it.

After its first step, a tile's task replays what it recorded of that step
(:mod:`dasksae.tile_program`) instead of building the graph again: the same
calls, messages and tags, without the bookkeeping.

Weights stay in the tiles' tasks' results, on their workers.  The mailbox is
a worker plugin (:func:`install`); it counts the bytes it receives, which is
how tests compare the halos moved with the tile geometry.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from . import collector, launcher, tile_program
from . import streams
from .streams import (StepFence, current_stream, device_event, failures_of_queued_steps, queue_losses, read_losses,
                      ready_to_leave, tile_task_stream, wait_for_event)
from .switches import switch
from .tile_array import Executor

MAILBOX = "_dasksae_mailbox"
# Halos between worker threads of one process carry a CUDA event instead of waiting for the sender's stream
# (DASKSAE_HALO_EVENTS=0 waits).  With the tile steps replayed as CUDA graphs (dasksae.cuda_graphs, on by default
# for such threads), a wait at each message drains the thread's graphs: four worker threads on coates200, 2x2 tiles,
# M=96, took 125.2 ms a float32 step with waits against 87.8 ms with events (H200, bench/results/session9/second).
HALO_EVENTS = switch("DASKSAE_HALO_EVENTS") == "1"


class Mailbox:
    """Values sent to this worker, by tag, and how many bytes arrived."""

    def __init__(self):
        self._items: dict = {}
        self._arrived = threading.Condition()
        self.received_bytes = 0
        self.received = 0
        self.waited_seconds = 0.0  # the worker's thread, waiting for messages that had not arrived
        self.cpu_seconds = 0.0  # the CPU time of the worker's thread in its tile tasks (time.thread_time)
        # the worker's thread in its tile tasks: context switches it asked for (waits) and ones it suffered
        # (preempted by another thread or, in a virtual machine, its CPU taken away), where the OS counts them
        self.context_switches = {"voluntary": 0, "involuntary": 0}

    def put(self, tag=None, data=None, nbytes=None):
        """Deliver ``data`` under ``tag`` (``nbytes``: its bytes, where the sender counted them already)."""
        if nbytes is None:
            nbytes = _nbytes(data.value if isinstance(data, _InFlight) else data)
        with self._arrived:
            self._items[tag] = data
            self.received_bytes += nbytes
            self.received += 1
            self._arrived.notify_all()
        return "OK"

    def take(self, tag: str, timeout: float, abort: str | None = None):
        """The value sent with ``tag``; raises at once if ``abort`` (a tag) arrives first: a neighbour failed."""
        with self._arrived:
            started = time.perf_counter()
            arrived = self._arrived.wait_for(lambda: tag in self._items or (abort is not None and abort in self._items), timeout=timeout)
            self.waited_seconds += time.perf_counter() - started
            if not arrived:
                raise TimeoutError(f"no message {tag} arrived within {timeout:g} s (a neighbour's task failed or died)")
            if tag not in self._items:
                raise NeighbourFailed(self._items[abort])
            return self._items.pop(tag)

    def has(self, tags, abort: str | None = None) -> bool:
        """Whether every one of ``tags`` has arrived (or ``abort``: then :meth:`take` raises at once)."""
        with self._arrived:
            return (abort is not None and abort in self._items) or all(tag in self._items for tag in tags)

    def forget(self, prefix: str):
        with self._arrived:
            for tag in [t for t in self._items if t.startswith(prefix)]:
                del self._items[tag]


def _mailbox_in_this_process(address: str):
    """The mailbox of the worker at ``address`` if that worker runs in this process, else ``None``.

    Workers started as threads of one process (``LocalCluster(processes=False)``,
    several sharing one GPU) would otherwise hand each halo to the event loop,
    which sends it to itself; each hand-off waits for the GIL, so a step of
    four such workers paid one GIL switch interval (5 ms) per message.
    """
    from distributed import Worker

    for worker in list(Worker._instances):
        if worker.address == address:
            return getattr(worker, MAILBOX, None)
    return None


class _InFlight:
    """A value handed to a worker thread of this process while the sender's stream may still be writing it."""

    __slots__ = ("value", "event")

    def __init__(self, value, event):
        self.value, self.event = value, event


class NeighbourFailed(RuntimeError):
    """Another tile's task of the same step failed, so this one stops instead of waiting for its messages."""


def _nbytes(value) -> int:
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


class MailboxPlugin:
    """Worker plugin: a :class:`Mailbox` per worker and the ``dasksae_put`` handler that fills it."""

    name = "dasksae-mailbox"
    idempotent = True

    def setup(self, worker):
        mailbox = getattr(worker, MAILBOX, None) or Mailbox()
        setattr(worker, MAILBOX, mailbox)
        worker.handlers["dasksae_put"] = mailbox.put


def install(client) -> None:
    """Give every worker of ``client``'s cluster (and any that joins later) a mailbox."""
    from distributed.diagnostics.plugin import WorkerPlugin

    plugin = type("DasksaeMailbox", (MailboxPlugin, WorkerPlugin), {})()
    client.register_plugin(plugin, name=MailboxPlugin.name)


def received_bytes(client) -> dict:
    """Bytes each worker's mailbox has received so far."""
    return client.run(lambda dask_worker: getattr(dask_worker, MAILBOX).received_bytes)


class SpmdHandle:
    """A value made on tile ``tile``; ``value`` is set only on that tile's worker (or once received)."""

    __slots__ = ("tile", "value")

    def __init__(self, tile, value):
        self.tile = tile
        self.value = value


class SpmdExecutor(Executor):
    """Runs tile ``me``'s share of a step graph in this task; values cross tiles as messages."""

    def __init__(self, me, placement: dict, step_id: str, timeout: float = 600.0):
        super().__init__()
        from distributed import get_worker

        self.me = me
        self.placement = placement
        self.step_id = step_id
        self.timeout = timeout
        self.dask_worker = get_worker()
        self.mailbox: Mailbox = getattr(self.dask_worker, MAILBOX)
        self.only_tile = me
        self._tag_counts: dict = {}
        self._mailboxes: dict = {}  # address -> the mailbox of a worker in this process, or None
        self._sends: list = []
        self.sent_bytes = 0
        self.abort_tag = f"{step_id.split('.')[0]}:abort"
        self._received: list = []  # what this step took from the mailbox (see receive)

    def abort(self, reason: str):
        """Tell every other tile of this step to stop waiting (best effort: sends are not awaited)."""
        for tile in self.placement:
            if tile != self.me:
                try:
                    self._send(tile, self.abort_tag, reason)
                except Exception:  # noqa: BLE001 - a dead neighbour cannot be told
                    pass

    @staticmethod
    def is_handle(value) -> bool:
        return isinstance(value, SpmdHandle)

    @staticmethod
    def _identity(handle):
        return id(handle)

    def worker(self, tile):
        return self.placement[tile]

    def made_on(self, handle):
        return handle.tile if isinstance(handle, SpmdHandle) else None

    def put(self, tile, value):
        handle = SpmdHandle(tile, value if tile == self.me else None)
        if self.program is not None and tile == self.me:
            self._record_put(handle, value)
        return handle

    def shares_process(self) -> bool:
        """Whether another tile's worker runs in this process (worker threads sharing a GPU)."""
        own = self.placement[self.me]
        return any(self._mailbox_of(address) is not None for address in set(self.placement.values()) - {own})

    def _mailbox_of(self, address):
        """The mailbox of the worker at ``address`` if it runs in this process, else ``None`` (looked up once)."""
        if address not in self._mailboxes:
            self._mailboxes[address] = _mailbox_in_this_process(address)
        return self._mailboxes[address]

    def _send(self, tile, tag, value, event=None):
        """Send ``value`` to ``tile`` under ``tag``.  ``event``: a CUDA event recorded after ``value`` was made
        (one for a batch of sends, :mod:`dasksae.cuda_graphs`); else one is recorded here where needed."""
        address = self.placement[tile]
        nbytes = _nbytes(value)
        self.sent_bytes += nbytes
        neighbour = self._mailbox_of(address)
        if neighbour is not None:  # a worker of this process (threads sharing a GPU): by reference, no event loop
            if not HALO_EVENTS:
                event = None
            elif event is None:
                event = device_event(value)
            if event is None:
                ready_to_leave(value)  # the receiver reads it on its own CUDA stream
                neighbour.put(tag, value, nbytes)
            else:  # the receiver's stream will wait for this event, not this thread for the device
                neighbour.put(tag, _InFlight(value, event), nbytes)
            return
        ready_to_leave(value)  # complete before the worker's communication thread sends it
        if isinstance(value, list) and type(value) is not list:  # (cuda_graphs.Lent: its outbox stays here)
            value = list(value)
        from distributed.protocol import to_serialize

        worker = self.dask_worker

        async def send():
            await worker.rpc(address).dasksae_put(tag=tag, data=to_serialize(value))

        self._sends.append(asyncio.run_coroutine_threadsafe(send(), worker.loop.asyncio_loop))

    def run(self, tile, function, *args, name, halo=False, priority=0):
        """Run ``function`` if ``tile`` is this task's; values made on other tiles arrive as messages, one
        message per producing tile and call (a neighbour's strips for one layer travel together).

        A call of another tile that reads nothing made here is passed over
        at once: this task neither computes nor counts it (the client counts
        the whole graph from a dry run, :func:`~dasksae.tiled_network.graph_statistics`).
        A message's tag names the call, the two tiles and how many such
        messages went before, so sender and receiver agree on it without
        either looking at calls that are none of its business.
        """
        if tile != self.me and not any(isinstance(a, SpmdHandle) and a.tile == self.me for a in args):
            return SpmdHandle(tile, None)
        program = self.program
        values = [None] * len(args)
        remote: dict = {}
        for index, arg in enumerate(args):
            if isinstance(arg, SpmdHandle) and arg.tile != tile:
                remote.setdefault(arg.tile, []).append(index)
            else:
                values[index] = arg.value if isinstance(arg, SpmdHandle) else arg
        receipts = []
        for producer in sorted(remote):
            indices = remote[producer]
            key = (name, producer, tile)
            count = self._tag_counts.get(key, 0)
            self._tag_counts[key] = count + 1
            suffix = f"{name}:{producer}>{tile}:{count}"
            tag = f"{self.step_id}:{suffix}"
            if self.me == producer:
                self._send(tile, tag, [args[i].value for i in indices])
                if program is not None:
                    program.send(tile, suffix, [self._register_of(args[i]) for i in indices])
            if self.me == tile:
                for index, value in zip(indices, self.receive(tag)):
                    values[index] = value
                receipts.append((suffix, indices))
        handle = SpmdHandle(tile, function(*values) if tile == self.me else None)
        if program is not None and tile == self.me:
            self._record_call(function, args, handle, name, receipts)
        self._record(handle, args, name, halo)
        return handle

    def gather(self, handles):
        return [h.value for h in handles]

    def receive(self, tag: str):
        """The value sent with ``tag``, once it may be read on this thread's stream.

        A value that came by reference with a CUDA event (:data:`HALO_EVENTS`)
        makes this thread's stream wait for the sender's work on the device,
        not the host.  Received values are kept until the step ends
        (:meth:`finish`, after the step's one wait for the device): dropped
        earlier, their memory could go back to the sender's stream and be
        written there while this stream's kernels still read it.
        """
        value = self.mailbox.take(tag, self.timeout, self.abort_tag)
        if isinstance(value, _InFlight):
            wait_for_event(value.event)
            value = value.value
        self._received.append(value)
        return value

    def finish(self) -> list:
        """Wait until every message this tile sent has been delivered (and surface send errors); returns what
        this step received, which the caller keeps until its stream has read it (:class:`~dasksae.streams.StepFence`)."""
        for future in self._sends:
            future.result(timeout=self.timeout)
        self._sends.clear()
        received, self._received = self._received, []
        return received


def spmd_step(me, grid, placement, step_id, bundle, lr, momentum, stage, precision, batches, *sources):
    """Tile ``me``'s task of ``batches`` SPMD steps, one after another.

    ``sources``: this tile's part of each minibatch, then, without a previous
    result (``bundle``), every stage's state of this tile followed, on tile
    (0, 0), by every stage's scale state.  Returns this tile's new bundle: its
    states, and on tile (0, 0) the scale states and each step's stage losses.
    On a GPU with ``DASKSAE_TASK_END=queue`` (the default) the task returns
    with its last steps still queued: the bundle then carries the event after
    them (``done``), what its step fence still keeps (``pending``, handed to
    the next task's fence) and the losses on their way to the host
    (:func:`~dasksae.streams.queue_losses`), so the device does not drain
    between one task of steps and the next.
    If this tile fails, it tells the others (:class:`NeighbourFailed`) so that
    the whole step fails at once, naming the tile.
    """
    count = len(grid.config.stages)
    first_tile = grid.tiles()[0]
    try:
        x_parts, initial = sources[:batches], sources[batches:]
        queued = (None, None)  # the previous task's steps left queued: the event after them, what its fence keeps
        if bundle is not None:
            my_states, my_scales = list(bundle["states"]), list(bundle["scales"])
            queued = bundle.get("done"), bundle.get("pending")
        else:
            my_states = list(initial[:count])
            my_scales = list(initial[count:]) if me == first_tile else [None] * count
        return _run_steps(me, grid, placement, step_id, lr, momentum, stage, precision, x_parts, my_states, my_scales,
                          queued)
    except NeighbourFailed:
        raise
    except BaseException as error:  # tell the other tiles at once rather than let them wait for messages
        from distributed import get_worker

        SpmdExecutor(me, placement, f"{step_id}.abort").abort(f"tile {me} on {get_worker().address} failed: {type(error).__name__}: {error}")
        raise


def _run_steps(me, grid, placement, step_id, lr, momentum, stage, precision, x_parts, my_states, my_scales, queued):
    from .kernels.backend import kept_apart
    from .master_weights import weights_module
    from .tile_ops import losses_on_host, next_scale_state, scale_states_on

    config = grid.config
    first_tile = grid.tiles()[0]
    objective_has_scale = config.objective == "rica"
    losses, sent = [], 0
    mailbox = None
    cpu_started, switches_started = time.thread_time(), _thread_context_switches()
    xp = weights_module(my_states[0])
    queue = xp.__name__ == "cupy" and streams.TASK_END == "queue"  # return with the steps queued (dasksae.streams)
    done, pending = queued
    with tile_task_stream(xp, wait=not queue):  # this worker thread's own CUDA stream (dasksae.streams)
        if done is not None:
            wait_for_event(done)  # the previous task's queued steps, on the device (a no-op on the same thread)
        # onto the weights' device once, before the first step (halo strips then travel as device arrays, and no
        # copy from host memory waits for the stream mid-task)
        x_parts = [xp.asarray(x_part) for x_part in x_parts]
        my_scales = scale_states_on(xp, my_scales)
        fence = StepFence(xp, pending)
        together = _tiles_in_this_process(placement) if launcher.ONE_LAUNCHER else 1
        stream = current_stream(xp)
        device = xp.cuda.runtime.getDevice() if xp.__name__ == "cupy" else None  # a launcher runs on one device
        for index, x_part in enumerate(x_parts):
            executor = SpmdExecutor(me, placement, f"{step_id}.{index}")
            mailbox = executor.mailbox
            key = (me, tuple(sorted(placement.items())), repr(config), grid.rows, grid.cols, stage, float(lr), float(momentum),
                   precision, tuple(x_part.shape), str(x_part.dtype), xp.__name__)
            steps = tile_program.replayed_steps(key, executor, tile_program.step_inputs(x_part, my_states, my_scales))
            if together > 1:  # one thread of this process launches its tiles' graphed steps (dasksae.launcher)
                step = launcher.run(f"{executor.step_id}@{device}", steps, stream, mailbox, executor.abort_tag,
                                    _abort_for(executor), executor.timeout)
            else:
                step = tile_program.finished(steps)
            if step is None:
                step = _built(executor, key, grid, me, x_part, my_states, my_scales, stage, lr, momentum, precision)
            first, last, stage_results = step
            for k, (back, reduced) in stage_results.items():
                my_states[k] = back["state"]
                if me == first_tile and objective_has_scale:
                    my_scales[k] = next_scale_state(reduced)
            if me == first_tile:
                losses.append([kept_apart(stage_results[k][1]["loss"]) for k in range(first, last + 1)])  # read once, below
            fence.step_done(keep=executor.finish())
            sent += executor.sent_bytes
        if queue:  # nothing waits: the losses follow the last step to the host, the next task takes the fence's keep
            losses = queue_losses(losses) if me == first_tile else losses
            done, pending = device_event(my_states), fence.handed_on()
        else:
            losses = losses_on_host(losses)
            fence.finish()
            done = pending = None
    collector.settle(xp)  # out of the next steps' way: a full collection pauses every worker thread
    if mailbox is not None:
        mailbox.forget(step_id)
        mailbox.cpu_seconds += time.thread_time() - cpu_started
        for kind, count in _thread_context_switches().items():
            mailbox.context_switches[kind] += count - switches_started[kind]
    return {
        "states": my_states,
        "scales": my_scales,
        "losses": losses if me == first_tile else None,
        "sent_bytes": sent,
        "done": done,
        "pending": pending,
    }


def _tiles_in_this_process(placement: dict) -> int:
    """How many of the step's tiles have their workers in this process (threads sharing a GPU)."""
    return sum(_mailbox_in_this_process(address) is not None for address in placement.values())


def _abort_for(executor):
    """What the launcher calls if this tile's step fails: tell the other tiles, as :func:`spmd_step` does."""
    address = executor.dask_worker.address
    return lambda reason: executor.abort(f"tile {executor.me} on {address} failed: {reason}")


def _thread_context_switches() -> dict:
    """This thread's context switches so far, voluntary and involuntary (zeros where the OS does not say)."""
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_THREAD)
    except (ImportError, AttributeError, OSError):  # not Linux
        return {"voluntary": 0, "involuntary": 0}
    return {"voluntary": usage.ru_nvcsw, "involuntary": usage.ru_nivcsw}


def _built(executor, key, grid, me, x_part, my_states, my_scales, stage, lr, momentum, precision):
    """One step by building the graph (:func:`~dasksae.tiled_network.build_step`), recorded as ``key``'s
    program (:func:`dasksae.tile_program.built`)."""
    from .tile_array import TileArray
    from .tiled_network import build_step

    config, tiles = grid.config, grid.tiles()
    count, first_tile = len(config.stages), tiles[0]
    states = [TileArray(executor, grid.windows(k, "blocks"), {t: SpmdHandle(t, my_states[k] if t == me else None) for t in tiles})
              for k in range(count)]
    scales = [SpmdHandle(first_tile, my_scales[k]) if config.objective == "rica" else None for k in range(count)]
    current = TileArray(executor, grid.windows(0, "input_owned"), {t: SpmdHandle(t, x_part if t == me else None) for t in tiles},
                        None, config.input_shape[2] * x_part.shape[-1] * x_part.dtype.itemsize)
    inputs = tile_program.step_inputs(current.parts[me], [s.parts[me] for s in states], scales if me == first_tile else [])

    def build():
        first, last, results = build_step(config, grid, states, scales, current, x_part.shape[-1], stage, (lr, momentum),
                                          precision)
        return first, last, {k: (back.parts[me], reduced if me == first_tile else None) for k, (back, reduced) in results.items()}

    return tile_program.built(key, executor, inputs, build)


def step_summary(bundle: dict) -> dict:
    """The small part of tile (0, 0)'s bundle the client reads: each step's stage losses (where the task left its
    steps queued, once they are copied to the host)."""
    with failures_of_queued_steps():
        return {"losses": read_losses(bundle["losses"])}


def new_step_id() -> str:
    return uuid.uuid4().hex[:12]
