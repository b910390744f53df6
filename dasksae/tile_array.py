"""The distributed array: maps spread over tiles, halo exchange and sums back, as tasks.

A :class:`TileArray` is a map (rows, columns, ...) of which tile ``t`` holds
the window ``windows[t]`` (in whole-map coordinates).  The part of a tile is a
*handle*: a value, or a Dask future living on the tile's worker.  A part may
be one entry (``field``) of a dict that a tile task returned, so one task can
produce several maps without extra tasks to split them.

:func:`tile_map` runs one function per tile, on the tile's worker.  Its
arguments say how each input is obtained, and the halo exchange stays
hidden in here:

* a :class:`TileArray`: the tile's own part (it is already on the worker);
* ``array.halo(windows)``: the window ``windows[t]`` of the map, assembled in
  the tile's task from strips cut, by one small task each, on the worker of
  every neighbour that owns a piece of it; only those contiguous strips
  cross the network (:class:`Halo`);
* ``array.sum_back(windows)``: the sum over ``windows[t]`` of every tile's
  overlapping contribution (the adjoint of a halo: how the backward pass
  returns gradients to their owners) (:class:`SumBack`);
* :class:`Shared`: one handle every tile reads (a stage's scalar ``a``);
* :class:`PerTile`: a plain per-tile value (a window, a block range);
* anything else: passed as is.

An :class:`Executor` decides where a function runs: :class:`LocalExecutor`
calls it at once in this process (the serial tiled computation that tests
check against the single-process reference); :class:`DaskExecutor` submits
it to the tile's worker with ``workers=[w], allow_other_workers=False``,
which graph optimisation cannot drop (DESIGN.md, placement).  Layer code is
the same for both.  Executors count tasks, the longest chain of task
dependencies (the critical path), and the bytes that halo strips move
between tiles, so a step can report them.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field as dataclass_field

from .tile_program import _CONSTANT, _RECEIVED, _SLOT, TileProgram, _constant, is_array
from .halo import Window, assemble, cut, cut_many, overlap, part_view, sum_into

Tile = tuple[int, int]


# ---------------------------------------------------------------- executors


@dataclass
class TaskStatistics:
    """What building one step's graph cost: tasks, the critical path, halo bytes between tiles."""

    tasks: int = 0
    halo_tasks: int = 0
    critical_path: int = 0
    halo_bytes: int = 0
    by_name: dict = dataclass_field(default_factory=dict)
    keys: list = dataclass_field(default_factory=list)  # Dask keys of the tasks submitted (DaskExecutor)
    halo_bytes_to: dict = dataclass_field(default_factory=dict)  # tile -> bytes it receives
    halo_messages_to: dict = dataclass_field(default_factory=dict)  # tile -> messages it receives (a neighbour's
    # strips for one tile function travel together, as the SPMD executor sends them)

    def as_dict(self) -> dict:
        return {
            "tasks": self.tasks,
            "halo_tasks": self.halo_tasks,
            "critical_path": self.critical_path,
            "halo_bytes": self.halo_bytes,
        }


class Executor:
    """Runs tile functions somewhere and keeps :class:`TaskStatistics`."""

    #: set by an executor that runs one tile's share of a step (SPMD): :func:`tile_map` then builds other
    #: tiles' calls only as far as this tile sends them something, and its statistics count only that.
    only_tile = None

    def __init__(self):
        self.statistics = TaskStatistics()
        self._depth: dict = {}
        self.program = None  # a TileProgram being recorded (dasksae.tile_program), or None
        self._registers: dict = {}  # id(handle) -> register, while recording
        self._alive: list = []  # the recorded handles, so that their ids stay unique

    # ---- recording this executor's own calls as a TileProgram (dasksae.tile_program)

    def start_recording(self):
        self.program, self._registers, self._alive = TileProgram(), {}, []

    def record_input(self, handle, name: str):
        """Make ``handle`` (of the recorded tile) the recorded program's input ``name``."""
        register = self.program.register()
        self.program.inputs[name] = register
        self._registers[id(handle)] = register
        self._alive.append(handle)

    def record_output(self, handle, name: str):
        """Make ``handle``'s value (a result of the recorded tile) the recorded program's output ``name``."""
        register = self._registers.get(id(handle))
        if register is None:
            self.program.refuse(f"output {name} is no result of the recorded tile")
        else:
            self.program.outputs[name] = register

    def _register_of(self, handle):
        register = self._registers.get(id(handle))
        if register is None:
            self.program.refuse("a handle of the recorded tile is neither an input nor a recorded result")
        return register

    def _record_put(self, handle, value):
        if is_array(value):
            self.program.refuse("an array was put as a constant")
        register = self.program.register()
        self.program.call(_constant, [(_CONSTANT, value)], [], register)
        self._registers[id(handle)] = register
        self._alive.append(handle)

    def _record_call(self, function, args, handle, name: str, receipts=()):
        """Record ``handle = function(*args)``; ``receipts``: ``(tag suffix, argument indices)`` taken from the mailbox."""
        received = {i for _, indices in receipts for i in indices}
        sources = []
        for index, arg in enumerate(args):
            if index in received:
                sources.append((_RECEIVED, None))
            elif self.is_handle(arg):
                sources.append((_SLOT, self._register_of(arg)))
            else:
                if is_array(arg):
                    self.program.refuse(f"an array is a constant argument of {name}")
                sources.append((_CONSTANT, arg))
        register = self.program.register()
        self.program.call(function, sources, list(receipts), register)
        self._registers[id(handle)] = register
        self._alive.append(handle)

    def made_on(self, handle):
        """The tile whose task made ``handle``, where the executor knows it (else ``None``)."""
        return None

    def reset_statistics(self) -> TaskStatistics:
        """Start counting afresh (handles made before count as depth 0); returns the old counts."""
        old, self.statistics, self._depth = self.statistics, TaskStatistics(), {}
        return old

    def _record(self, handle, args, name: str, halo: bool):
        depth = 1 + max((self._depth.get(self._identity(a), 0) for a in args if self.is_handle(a)), default=0)
        self._depth[self._identity(handle)] = depth
        stats = self.statistics
        stats.tasks += 1
        stats.halo_tasks += int(halo)
        stats.critical_path = max(stats.critical_path, depth)
        stats.by_name[name] = stats.by_name.get(name, 0) + 1

    def run(self, tile: Tile, function, *args, name: str, halo: bool = False, priority: int = 0):
        """``function(*args)`` on ``tile``'s worker as a task named ``name``; ``priority``: Dask's (higher first,
        among the worker's ready tasks)."""
        raise NotImplementedError

    def worker(self, tile: Tile):
        raise NotImplementedError


class LocalExecutor(Executor):
    """Every tile in this process, one after another: handles are the values themselves."""

    @staticmethod
    def is_handle(value) -> bool:
        return isinstance(value, _LocalHandle)

    @staticmethod
    def _identity(handle):
        return id(handle)

    def run(self, tile, function, *args, name, halo=False, priority=0):
        values = [a.value if isinstance(a, _LocalHandle) else a for a in args]
        handle = _LocalHandle(function(*values))
        if self.program is not None:
            self._record_call(function, args, handle, name)
        self._record(handle, args, name, halo)
        return handle

    def put(self, tile, value):
        handle = _LocalHandle(value)
        if self.program is not None:
            self._record_put(handle, value)
        return handle

    def gather(self, handles: list) -> list:
        return [h.value for h in handles]

    def worker(self, tile):
        return tile


class DryExecutor(LocalExecutor):
    """Builds a step's graph without computing it: for counting tasks, critical path and halo bytes of any size."""

    def run(self, tile, function, *args, name, halo=False, priority=0):
        handle = _LocalHandle(None)
        self._record(handle, args, name, halo)
        return handle

    def put(self, tile, value):
        return _LocalHandle(None)


class _LocalHandle:
    """A value computed by the :class:`LocalExecutor` (a stand-in for a future)."""

    __slots__ = ("value", "__weakref__")

    def __init__(self, value):
        self.value = value


class DaskExecutor(Executor):
    """Tile ``t``'s tasks run on ``placement[t]``, a worker address of ``client``'s cluster."""

    def __init__(self, client, placement: dict):
        super().__init__()
        self.client = client
        self.placement = dict(placement)
        self._counter = itertools.count()
        # keys are given explicitly (so the dashboard reads as the network); a token per executor keeps two
        # networks on one cluster from sharing keys, which the scheduler would take for the same task
        self._token = uuid.uuid4().hex[:8]

    @staticmethod
    def is_handle(value) -> bool:
        from distributed import Future

        return isinstance(value, Future)

    @staticmethod
    def _identity(handle):
        return handle.key

    def worker(self, tile):
        return self.placement[tile]

    def run(self, tile, function, *args, name, halo=False, priority=0):
        future = self.client.submit(
            function,
            *args,
            key=f"{name}-{tile[0]}-{tile[1]}-{self._token}{next(self._counter)}",
            workers=[self.placement[tile]],
            allow_other_workers=False,
            pure=False,
            priority=priority,
        )
        self._record(future, args, name, halo)
        self.statistics.keys.append(future.key)
        return future

    def put(self, tile, value):
        """Place ``value`` on the tile's worker (data from the client: inputs, initial state).

        Wrapped in a list so that a dict is placed as one value (``scatter``
        would otherwise place each of its entries apart).
        """
        return self.client.scatter([value], workers=[self.placement[tile]], hash=False)[0]

    def gather(self, handles: list) -> list:
        return self.client.gather(handles)


# ---------------------------------------------------------------- the tile array


def pick(value, field):
    """``value[field]`` where ``field`` is given, else ``value``."""
    return value if field is None else value[field]


def pick_to_host(value, field):
    """``value[field]`` as a NumPy array (run on the worker, so the client never needs CuPy)."""
    from .kernels.backend import to_numpy

    picked = pick(value, field)
    if isinstance(picked, dict):
        return {name: to_numpy(entry) for name, entry in picked.items()}
    return to_numpy(picked)


def cut_part(value, field, owned: Window, part: Window):
    """The contiguous strip ``part`` of a tile's piece (run on the piece's worker)."""
    return cut(pick(value, field), owned, part)


def cut_parts(*arguments) -> list:
    """:func:`cut_part` of each four of ``arguments`` in turn, the copies in one call (:func:`~dasksae.halo.cut_many`):
    what a replayed program runs for consecutive cuts (:meth:`~dasksae.tile_program.TileProgram.fuse`)."""
    return cut_many([(pick(value, field), owned, part) for value, field, owned, part in zip(*[iter(arguments)] * 4)])


cut_part.batched = cut_parts


@dataclass(frozen=True)
class TileArray:
    """A map spread over tiles: tile ``t`` holds window ``windows[t]`` as handle ``parts[t]`` (entry ``field``).

    ``position_bytes`` (bytes per map position: channels x minibatch x item
    size) is only used to count the bytes halo strips move.
    """

    executor: Executor
    windows: dict
    parts: dict
    field: str | None = None
    position_bytes: int = 0

    def halo(self, windows: dict) -> "Halo":
        return Halo(self, windows)

    def sum_back(self, windows: dict) -> "SumBack":
        return SumBack(self, windows)

    def entry(self, field: str, windows: dict | None = None, position_bytes: int | None = None) -> "TileArray":
        """The map stored as entry ``field`` of this array's dict-valued parts."""
        return TileArray(
            self.executor,
            self.windows if windows is None else windows,
            self.parts,
            field,
            self.position_bytes if position_bytes is None else position_bytes,
        )

    @classmethod
    def from_array(cls, executor: Executor, array, windows: dict, position_bytes: int | None = None) -> "TileArray":
        """Cut a whole map (on the client) into the tiles' owned windows and place each on its worker."""
        parts = {}
        for tile, window in windows.items():
            (r0, r1), (c0, c1) = window
            parts[tile] = executor.put(tile, array[r0:r1, c0:c1].copy())
        if position_bytes is None:
            position_bytes = int(array[:1, :1].nbytes)
        return cls(executor, dict(windows), parts, None, position_bytes)

    def values(self) -> dict:
        """``{tile: array}`` on the client, as NumPy (picked and moved to host on the tile's worker first)."""
        tiles = list(self.parts)
        handles = [self.executor.run(t, pick_to_host, self.parts[t], self.field, name="pick") for t in tiles]
        return dict(zip(tiles, self.executor.gather(handles)))

    def to_array(self):
        """The whole map on the client (for checks and small maps); windows must partition it."""
        values = self.values()
        windows = [self.windows[t] for t in values]
        whole = (
            (min(w[0][0] for w in windows), max(w[0][1] for w in windows)),
            (min(w[1][0] for w in windows), max(w[1][1] for w in windows)),
        )
        return assemble(whole, [(self.windows[t], v) for t, v in values.items()])


@dataclass(frozen=True)
class Halo:
    """``array`` over ``windows[t]`` for each tile ``t``, assembled from its neighbours' pieces."""

    array: TileArray
    windows: dict


@dataclass(frozen=True)
class SumBack:
    """The sum over ``windows[t]`` of every tile's overlapping contribution in ``array``."""

    array: TileArray
    windows: dict


@dataclass(frozen=True)
class Shared:
    """One handle that every tile's task reads (moved to each worker once)."""

    handle: object
    field: str | None = None


@dataclass(frozen=True)
class PerTile:
    """A plain value per tile: ``values[t]``."""

    values: dict


def _strips(executor: Executor, source: TileArray, tile: Tile, window: Window, handles: list, name: str, senders: set):
    """Specs of the pieces of ``source`` over ``window`` for ``tile``'s task; cut tasks for neighbours' pieces."""
    specs = []
    for other, owned in source.windows.items():
        part = overlap(owned, window)
        if part is None:
            continue
        if other == tile or executor.worker(other) == executor.worker(tile):
            specs.append((part, owned, source.field, len(handles)))
            handles.append(source.parts[other])
        else:
            strip = executor.run(other, cut_part, source.parts[other], source.field, owned, part, name=f"{name}-halo", halo=True)
            (p0, p1), (q0, q1) = part
            moved = (p1 - p0) * (q1 - q0) * source.position_bytes
            stats = executor.statistics
            stats.halo_bytes += moved
            stats.halo_bytes_to[tile] = stats.halo_bytes_to.get(tile, 0) + moved
            senders.add(other)
            specs.append((part, part, None, len(handles)))
            handles.append(strip)
    return specs


def _call_tile(function, specs, *values):
    """Rebuild a tile task's arguments from ``specs`` and the handles' values, then call ``function``."""
    args = []
    for spec in specs:
        kind = spec[0]
        if kind == "value":
            args.append(pick(values[spec[1]], spec[2]))
        elif kind == "constant":
            args.append(spec[1])
        else:
            window, strips = spec[1], spec[2]
            # views, not copies: assemble and sum_into copy each piece once, into the result (session 13: on 2x2
            # tiles a tile's own pieces were cut into contiguous copies first, as many bytes again)
            pieces = [(part, part_view(pick(values[index], entry), owned, part)) for part, owned, entry, index in strips]
            if not pieces:
                args.append(None)
            elif kind == "halo":
                args.append(assemble(window, pieces))
            else:
                args.append(sum_into(window, pieces))
    return function(*args)


def tile_map(function, *args, name: str, tiles=None) -> TileArray:
    """Run ``function`` once per tile on the tile's worker; returns the results as a :class:`TileArray`.

    The result's windows are unset (``{}``): use :meth:`TileArray.entry` to
    view an entry of dict results as a map over given windows.
    """
    executor = next(
        (a.executor if isinstance(a, TileArray) else a.array.executor)
        for a in args
        if isinstance(a, (TileArray, Halo, SumBack))
    )
    if tiles is None:
        tiles = next(
            list(a.parts if isinstance(a, TileArray) else a.windows) for a in args if isinstance(a, (TileArray, Halo, SumBack))
        )
    parts = {}
    only = executor.only_tile
    for tile in _own_tile_last(tiles, only):
        if only is not None and tile != only:  # another tile's task: only what this one sends it
            mine = _handles_made_on(executor, args, tile, only, name)
            parts[tile] = executor.run(tile, _call_tile, function, None, *mine, name=name) if mine else executor.put(tile, None)
            continue
        specs, handles, senders = [], [], set()
        for arg in args:
            if isinstance(arg, TileArray):
                specs.append(("value", len(handles), arg.field))
                handles.append(arg.parts[tile])
            elif isinstance(arg, (Halo, SumBack)):
                window = arg.windows[tile]
                kind = "halo" if isinstance(arg, Halo) else "sum"
                specs.append((kind, window, _strips(executor, arg.array, tile, window, handles, name, senders)))
            elif isinstance(arg, Shared):
                specs.append(("value", len(handles), arg.field))
                handles.append(arg.handle)
            elif isinstance(arg, PerTile):
                specs.append(("constant", arg.values[tile]))
            else:
                specs.append(("constant", arg))
        if senders:
            executor.statistics.halo_messages_to[tile] = executor.statistics.halo_messages_to.get(tile, 0) + len(senders)
        parts[tile] = executor.run(tile, _call_tile, function, specs, *handles, name=name)
    return TileArray(executor, {}, {tile: parts[tile] for tile in tiles})


def _own_tile_last(tiles, only) -> list:
    """``tiles`` in order, except that a one-tile task's own tile (``only``) comes last.

    A one-tile task (:class:`~dasksae.spmd.SpmdExecutor`) sends its neighbours' strips as it passes their tiles and
    waits for its own strips at its own tile.  In tile order, a tile sent the tiles after it their strips only once
    its own had arrived and its own call was queued (a CUDA graph run's sends are made at its end, after that call),
    so each tile's call of a layer waited for the tile before it: on one GPU the four tiles' kernels ran one after
    another.  With the own tile last, every tile sends before it waits, and the tiles' calls of a
    layer wait only for the layer before (session 46, ``bench/results/session46/``)."""
    if only is None or only not in tiles:
        return list(tiles)
    return [tile for tile in tiles if tile != only] + [only]


def _handles_made_on(executor: Executor, args, tile: Tile, maker: Tile, name: str) -> list:
    """The handles of ``tile``'s task (of a :func:`tile_map` over ``args``) that ``maker``'s task makes, in the
    order in which ``tile``'s task lists them: what ``maker`` sends ``tile``, cutting its halo strips as
    :func:`_strips` does, and nothing else of ``tile``'s bookkeeping."""
    handles = []
    for arg in args:
        if isinstance(arg, TileArray):
            if executor.made_on(arg.parts[tile]) == maker:
                handles.append(arg.parts[tile])
        elif isinstance(arg, (Halo, SumBack)):
            source = arg.array
            owned = source.windows.get(maker)
            part = None if owned is None else overlap(owned, arg.windows[tile])
            if part is None:
                continue
            if executor.worker(maker) == executor.worker(tile):
                handles.append(source.parts[maker])
            else:
                handles.append(executor.run(maker, cut_part, source.parts[maker], source.field, owned, part,
                                            name=f"{name}-halo", halo=True))
        elif isinstance(arg, Shared):
            if executor.made_on(arg.handle) == maker:
                handles.append(arg.handle)
    return handles


def tile_reduce(function, array: TileArray, *args, tile: Tile, name: str):
    """``function(values, *args)`` on ``tile``'s worker, ``values`` the list of ``array``'s parts (small things).

    ``args`` may hold handles (e.g. the previous scale state); an entry
    ``field`` is picked on each part's own worker so only it moves.
    """
    executor = array.executor
    handles = []
    for source, handle in array.parts.items():
        if array.field is not None:
            handle = executor.run(source, pick, handle, array.field, name=f"{name}-pick")
        handles.append(handle)
    return executor.run(tile, _call_reduce, function, len(handles), *handles, *args, name=name)


def _call_reduce(function, count, *values):
    return function(list(values[:count]), *values[count:])
