"""A network spread over tiles: its parameters live on the tiles' workers, and a step is a graph of tile tasks.

:class:`TiledNetwork` is the distributed counterpart of :mod:`dasksae.reference`:
``step`` runs one SGD update (the joint one, or greedy for one stage) and
``loss_and_grads`` the same pass without updating, which is how the tests
check it against the single-process network.

Where things live.  Tile ``t`` is assigned once to a worker.  Its filter
blocks and their momentum are a dict of arrays made *on that worker* (by
:func:`~dasksae.reference.initial_blocks`, or read from a checkpoint), and
every task that reads or updates them runs there; the update happens in
place inside the tile's filter-backward task, which returns the same arrays
as the tile's new state (no copy, and under a new key, so a task of the
previous step can never see half-updated weights).  A stage's scalar ``a``
and its momentum live on the worker of tile (0, 0), in the small task that
sums the tiles' loss and ``a``-gradient parts.  Only halo strips, those
small reports and the scalar cross between workers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy

from . import collector, tile_ops
from .errors import ConfigError
from .layers import (
    contrast,
    contrast_backward,
    error_in_filter,
    l2_pool,
    l2_pool_backward,
    local_filter,
    local_filter_backward,
    output,
    reconstruction_error,
)
from .network import NetworkConfig, load_config
from .optim import check_hyperparameters
from .reference import StepResult, initial_blocks, initial_scale, learning_rate_scales, split_dtype
from .kernels.backend import device_wait, kept_apart, to_numpy
from . import streams
from .streams import (StepFence, device_event, failures_of_queued_steps, queue_losses, read_losses, tile_task_stream,
                      wait_for_event)
from .master_weights import exported, pick_entry
from .tile_array import DaskExecutor, Executor, LocalExecutor, Shared, TileArray, pick, tile_map, tile_reduce
from .tile_ops import scale_states_on
from .tiling import TileGrid, at_most_tiles


DEVICES = ("cpu", "cuda")
EXECUTIONS = ("spmd", "graph")


def on_device(state: dict, device: str) -> dict:
    """``state``'s arrays in host memory (``cpu``, NumPy) or on the worker's GPU (``cuda``, CuPy)."""
    if device == "cuda":
        import cupy

        return {name: cupy.asarray(value) for name, value in state.items()}
    return state


def on_device_array(array):
    """``array`` on this process's GPU (CuPy)."""
    import cupy

    return cupy.asarray(array)


def init_tile_state(config: NetworkConfig, stage: int, seed: int, rows, cols, dtype, device: str = "cpu") -> dict:
    """A tile's filter blocks of one stage and zero momentum (runs on the tile's worker)."""
    state = {}
    for name, value in initial_blocks(config, stage, seed, rows, cols, dtype).items():
        state[name] = value
        state[f"{name}_velocity"] = numpy.zeros_like(value)
    return on_device(state, device)


def tile_state_from(params: dict, rows, cols) -> dict:
    """A tile's state cut from whole-network arrays (``encoder``, ``encoder_velocity``, ...; the scalar ``scale`` is not)."""
    return {
        name: numpy.array(value[rows[0] : rows[1], cols[0] : cols[1]]) for name, value in params.items() if name != "scale"
    }


@dataclass(frozen=True)
class PlacedBatch:
    """A minibatch already on the workers: per-tile parts (``array``) or, for one tile, one ``handle``."""

    shape: tuple
    dtype: object
    array: TileArray | None
    handle: object


class PendingSteps:
    """Steps submitted to the tiles' workers whose reports have not been read (:meth:`TiledNetwork.submit_steps`)."""

    def __init__(self, read, futures=()):
        self._read, self._reports, self._futures = read, None, list(futures)

    def done(self) -> bool:
        """Whether the steps have ended (their reports can be read without waiting)."""
        return self._reports is not None or all(getattr(future, "done", lambda: True)() for future in self._futures)

    def result(self) -> list["StepReport"]:
        """The steps' reports, waiting for them (once); a failed step raises here."""
        if self._reports is None:
            self._reports = self._read()
        return self._reports


@dataclass
class StepReport:
    """One step: total and per-stage loss, and what its graph cost."""

    loss: float
    stage_losses: list
    statistics: dict


class TiledNetwork:
    """``config``'s parameters spread over ``tiles`` (``"RxC"``) on the workers of a Dask cluster.

    ``config``: a :class:`~dasksae.network.NetworkConfig`, a named config (``"tiny"``) or a JSON file, as
    ``dasksae train --config`` takes.

    ``client``: a :class:`distributed.Client` (default: the current one).
    ``executor``: instead of a cluster, e.g. :class:`~dasksae.tile_array.LocalExecutor`
    to run every tile in this process.  ``params``: whole-network parameters
    to start from (as :func:`~dasksae.reference.init_params` gives); by
    default each tile initialises its own blocks on its worker from ``seed``.
    ``dtype``: ``float32`` or ``float64`` (weights, optimiser state and
    products), or ``tf32`` / ``bfloat16``: float32 weights and optimiser
    state, filter products in that precision with float32 accumulation.
    """

    def __init__(self, config: NetworkConfig | str, tiles="1x1", client=None, *, seed: int = 0, dtype="float32",
                 params=None, executor: Executor | None = None, workers=None, checkpoint=None, device: str = "cpu",
                 execution: str = "spmd"):
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
        self.device = device
        if isinstance(config, (str, os.PathLike)):  # a named config or a JSON file, as the CLI's --config
            config = load_config(config)
        elif not isinstance(config, NetworkConfig):
            raise ConfigError(f"config must be a NetworkConfig, a config's name or a JSON file, got {type(config).__name__}.")
        self.config = config
        self.grid = tiles if isinstance(tiles, TileGrid) else TileGrid.parse(config, tiles)
        self.dtype, self.precision = split_dtype(dtype)
        self.executor = executor or _dask_executor(self.grid, client, workers)
        self._state: list[TileArray] = []
        self._scale: list = []
        self._bundle = None  # after a fused single-tile step: one handle holding every stage's state
        self._spmd = None  # after an SPMD step: {tile: handle of its bundle}
        if execution not in EXECUTIONS:
            raise ConfigError(f"execution must be one of {', '.join(EXECUTIONS)}, got {execution!r}.")
        self.execution = execution if isinstance(self.executor, DaskExecutor) else "graph"
        if self.execution == "spmd" and self.grid.count > 1:
            from .spmd import install

            install(self.executor.client)
        if checkpoint is not None:
            import zarr

            from .checkpoint import read_tile_state

            saved = zarr.open_group(str(checkpoint), mode="r")
            names = ["encoder", "encoder_velocity"] + (["decoder", "decoder_velocity"] if config.objective == "le2012" else [])
        for k, (stage, geometry) in enumerate(zip(config.stages, config.geometry())):
            windows = self.grid.windows(k, "blocks")
            parts = {}
            for tile, (rows, cols) in windows.items():
                if checkpoint is not None:
                    parts[tile] = self.executor.run(
                        tile, read_tile_state, str(checkpoint), k, (rows, cols), names, device == "cuda",
                        name=f"stage{k + 1}-load",
                    )
                elif params is None:
                    parts[tile] = self.executor.run(
                        tile, init_tile_state, config, k, seed, rows, cols, self.dtype, device, name=f"stage{k + 1}-init"
                    )
                else:
                    full = dict(params[k])
                    full.pop("scale", None)
                    for name in list(full):
                        full[f"{name}_velocity"] = numpy.zeros_like(full[name])
                    parts[tile] = self.executor.put(tile, tile_state_from(full, rows, cols))
                    if device != "cpu":
                        parts[tile] = self.executor.run(tile, on_device, parts[tile], device, name=f"stage{k + 1}-to-device")
            self._state.append(TileArray(self.executor, windows, parts))
            if config.objective == "rica":
                if checkpoint is not None:
                    value = saved[f"stage{k + 1}/scale"][...]
                    velocity = saved[f"stage{k + 1}/scale_velocity"][...]
                else:
                    value = initial_scale(stage, geometry) if params is None else params[k]["scale"]
                    velocity = 0
                self._scale.append(
                    self._put_scale(numpy.array(value, dtype=self.dtype), numpy.array(velocity, dtype=self.dtype))
                )
            else:
                self._scale.append(None)

    @classmethod
    def load(cls, path, tiles=None, client=None, *, executor: Executor | None = None, workers=None, verify: bool = True,
             device: str = "cpu", execution: str = "spmd", precision: str | None = None):
        """The network saved at ``path`` (a checkpoint, or a folder of them: its latest), tiled anew.

        ``tiles`` defaults to the tiling that saved it; any tiling can read it.
        Each tile reads its own blocks on its worker.  ``precision``: ``tf32``
        or ``bfloat16`` to go on with reduced-precision products over the
        saved float32 weights.
        """
        from .checkpoint import open_checkpoint

        group, attrs = open_checkpoint(path, verify=verify)
        config = NetworkConfig.from_dict(attrs["config"])
        network = cls(
            config, tiles or attrs["tiles"], client, dtype=attrs["dtype"], executor=executor, workers=workers,
            checkpoint=_group_path(group, path), device=device, execution=execution,
        )
        if precision is not None:
            storage, network.precision = split_dtype(precision)
            if storage != network.dtype:
                raise ConfigError(f"checkpoint {path} holds {network.dtype.name} weights; {precision} needs float32 weights.")
        network.checkpoint_attributes = attrs
        return network

    def save(self, folder, step: int = 0, extra: dict | None = None):
        """Write a checkpoint ``folder/step-N`` (atomically; each tile writes its blocks from its worker)."""
        from .checkpoint import save

        return save(self, folder, step, extra)

    def weights(self, stage: int, name: str = "encoder"):
        """Stage ``stage``'s ``name`` (``encoder``, ``encoder_velocity``, ...) as a Dask array chunked by tile.

        Its chunks are the futures on the tiles' workers; computing it gathers
        them, so use it for small networks or reductions (``.sum()``, norms).
        With a :class:`~dasksae.tile_array.LocalExecutor` the chunks are the
        arrays themselves.
        """
        import dask
        import dask.array

        from .tile_array import _LocalHandle

        geometry = self.config.geometry()[stage]
        rows = []
        for i in range(self.grid.rows):
            row = []
            for j in range(self.grid.cols):
                (b0, b1), (d0, d1) = self.state[stage].windows[(i, j)]
                handle = self.state[stage].parts[(i, j)]
                # (encoder joined where the state keeps it split: master_weights)
                if isinstance(handle, _LocalHandle):  # in this process: the array, as one chunk (not hashed)
                    chunk = pick_entry(handle.value, name)
                    row.append(dask.array.from_array(chunk, chunks=chunk.shape, name=False))
                    continue
                row.append(dask.array.from_delayed(dask.delayed(pick_entry)(handle, name),
                                                   (b1 - b0, d1 - d0) + tuple(geometry.weight_shape[2:]), self.dtype))
            rows.append(row)
        return dask.array.block([[[[block]] for block in row] for row in rows])

    # -------------------------------------------------------------- placement and parameters

    @property
    def state(self) -> list[TileArray]:
        """Per stage, the tiles' states (filter blocks and momentum) as a :class:`TileArray` of handles."""
        self._unbundle()
        return self._state

    @property
    def scale(self) -> list:
        """Per stage, the handle of the scale state (``a`` and its momentum), or ``None`` (Le 2012)."""
        self._unbundle()
        return self._scale

    def _unbundle(self):
        """Split the fused or SPMD step's results into per-stage handles (picks on the same workers)."""
        if self._spmd is not None:
            bundles, self._spmd = self._spmd, None
            first = self.grid.tiles()[0]
            for k in range(len(self.config.stages)):
                parts = {
                    t: self.executor.run(t, pick_stage, handle, "states", k, name=f"stage{k + 1}-state")
                    for t, handle in bundles.items()
                }
                self._state[k] = TileArray(self.executor, self._state[k].windows, parts)
                if self._scale[k] is not None:
                    self._scale[k] = self.executor.run(first, pick_stage, bundles[first], "scales", k, name=f"stage{k + 1}-scale")
            return
        if self._bundle is None:
            return
        bundle, self._bundle = self._bundle, None
        tile = self.grid.tiles()[0]
        for k in range(len(self.config.stages)):
            handle = self.executor.run(tile, pick_stage, bundle, "states", k, name=f"stage{k + 1}-state")
            self._state[k] = TileArray(self.executor, self._state[k].windows, {tile: handle})
            if self._scale[k] is not None:
                self._scale[k] = self.executor.run(tile, pick_stage, bundle, "scales", k, name=f"stage{k + 1}-scale")

    @property
    def placement(self) -> dict:
        """``{tile: worker}``."""
        return {tile: self.executor.worker(tile) for tile in self.grid.tiles()}

    def _put_scale(self, scale, velocity):
        return self.executor.put(self.grid.tiles()[0], {"scale": scale, "velocity": velocity})

    def state_handles(self) -> list:
        """Every handle (future) that holds parameters or optimiser state, for placement checks."""
        handles = [handle for stage in self.state for handle in stage.parts.values()]
        return handles + [handle for handle in self.scale if handle is not None]

    def _gather_state(self, names_suffix: str = "") -> list[dict]:
        result = []
        for k, stage_state in enumerate(self.state):
            entry = {}
            names = ["encoder"] + (["decoder"] if self.config.objective == "le2012" else [])
            if not names_suffix:  # the weights whole on each worker, where a state keeps them split (master_weights)
                stage_state = TileArray(self.executor, stage_state.windows, {
                    t: self.executor.run(t, exported, h, name=f"stage{k + 1}-export")
                    for t, h in stage_state.parts.items()})
            for name in names:
                entry[name] = stage_state.entry(name + names_suffix).to_array()
            if self.scale[k] is not None:
                scale_state = self.executor.gather([self.scale[k]])[0]
                entry["scale"] = to_numpy(scale_state["velocity" if names_suffix else "scale"]).copy()
            result.append(entry)
        return result

    def parameters(self) -> list[dict]:
        """Whole-network parameters on the client, in :func:`~dasksae.reference.init_params`'s layout."""
        return self._gather_state()

    def velocity(self) -> list[dict]:
        """The momentum buffers on the client, in the same layout."""
        return self._gather_state("_velocity")

    # -------------------------------------------------------------- the pass

    def place(self, x, _whole: bool | None = None) -> "PlacedBatch":
        """Send a minibatch ``(H, W, C, M)`` to the workers now: each tile's owned part to its worker.

        ``step`` takes the result as well as an array, so the next batch can be
        placed (e.g. from a thread) while the current step runs.
        """
        grid, executor = self.grid, self.executor
        whole = (grid.count == 1 and self.fuse_single_tile) if _whole is None else _whole
        if isinstance(x, PlacedBatch):
            if (x.handle is not None) != whole:
                raise ConfigError("this placed batch was made for the other kind of step; pass the array instead.")
            return x
        self._check_batch(x, None)
        if whole:
            return PlacedBatch(tuple(x.shape), x.dtype, None, self._to_device(grid.tiles()[0], executor.put(grid.tiles()[0], x)))
        per_map = x.shape[-1] * x.dtype.itemsize
        array = TileArray.from_array(executor, x, grid.windows(0, "input_owned"), self.config.input_shape[2] * per_map)
        if self.device == "cuda":
            array = TileArray(executor, array.windows, {t: self._to_device(t, h) for t, h in array.parts.items()}, None,
                              array.position_bytes)
        return PlacedBatch(tuple(x.shape), x.dtype, array, None)

    def _to_device(self, tile, handle):
        """On a GPU network, the placed part moved onto its worker's GPU there (ahead of the step, not inside it)."""
        if self.device != "cuda":
            return handle
        return self.executor.run(tile, on_device_array, handle, name="batch-to-device")

    def place_from_store(self, path: str, start: int, count: int) -> "PlacedBatch":
        """Minibatch ``start .. start+count`` of a data store (:mod:`dasksae.data`), each tile reading its own
        input window on its worker."""
        from .data import read_frames

        grid, executor = self.grid, self.executor
        shape = tuple(self.config.input_shape) + (count,)
        if grid.count == 1 and self.fuse_single_tile:
            whole = ((0, shape[0]), (0, shape[1]))
            handle = executor.run(grid.tiles()[0], read_frames, path, whole, start, count, self.dtype.name, name="read-batch")
            return PlacedBatch(shape, self.dtype, None, handle)
        windows = grid.windows(0, "input_owned")
        parts = {t: executor.run(t, read_frames, path, w, start, count, self.dtype.name, name="read-batch") for t, w in windows.items()}
        per_map = count * self.dtype.itemsize
        return PlacedBatch(shape, self.dtype, TileArray(executor, windows, parts, None, shape[2] * per_map), None)

    def place_generated(self, make, shape, positions, dtype) -> "PlacedBatch":
        """A minibatch that each tile's worker makes itself: ``make(shape, positions, window, dtype)`` returns
        the batch-last part over ``window`` of ``len(positions)`` examples of ``shape`` (``(H, W, C)``), e.g.
        :func:`dasksae.data.natural_crops`.  Only ``positions`` travel, not the batch."""
        grid, executor = self.grid, self.executor
        full = tuple(shape) + (len(positions),)
        if grid.count == 1 and self.fuse_single_tile:
            tile = grid.tiles()[0]
            handle = executor.run(tile, make, tuple(shape), positions, ((0, full[0]), (0, full[1])), dtype, name="make-batch")
            return PlacedBatch(full, numpy.dtype(dtype), None, self._to_device(tile, handle))
        windows = grid.windows(0, "input_owned")
        parts = {t: self._to_device(t, executor.run(t, make, tuple(shape), positions, w, dtype, name="make-batch"))
                 for t, w in windows.items()}
        per_map = len(positions) * numpy.dtype(dtype).itemsize
        return PlacedBatch(full, numpy.dtype(dtype), TileArray(executor, windows, parts, None, full[2] * per_map), None)

    def _check_batch(self, x, stage):
        count = len(self.config.stages)
        if stage is not None and not (0 <= stage < count):
            raise ConfigError(f"stage must be between 0 and {count - 1}, got {stage}.")
        expected = tuple(self.config.input_shape)
        if isinstance(x, PlacedBatch):
            return
        if x.ndim != 4 or tuple(x.shape[:3]) != expected:
            raise ConfigError(
                f"a minibatch must have shape {expected + ('M',)} (rows, columns, channels, examples), got {tuple(x.shape)}."
            )

    def _run(self, x, stage: int | None, update):
        self._check_batch(x, stage)
        self.executor.reset_statistics()
        placed = self.place(x, _whole=False)
        return build_step(self.config, self.grid, self.state, self.scale, placed.array, placed.shape[-1], stage, update,
                          self.precision)

    def step(self, x, lr: float, momentum: float, stage: int | None = None) -> StepReport:
        """One SGD-with-momentum update (joint, or greedy for ``stage``); waits for the losses.

        With a single tile there is no halo to exchange, and the whole step is
        one task on the tile's worker (:func:`fused_single_tile_step`, the
        reference step on the tile's arrays) instead of a graph of layer tasks.
        """
        check_hyperparameters(lr, momentum)
        if self.grid.count == 1 and self.fuse_single_tile:
            return self._fused_steps([x], lr, momentum, stage).result()[0]
        if self.execution == "spmd":
            return self._spmd_steps([x], lr, momentum, stage).result()[0]
        first, last, results = self._run(x, stage, (lr, momentum))
        executor = self.executor
        for k, (filter_back, reduced) in results.items():
            self.state[k] = TileArray(
                executor,
                self.state[k].windows,
                {t: executor.run(t, pick, h, "state", name=f"stage{k + 1}-state") for t, h in filter_back.parts.items()},
            )
            if self.scale[k] is not None:
                self.scale[k] = reduced
        summaries = [executor.run(self.grid.tiles()[0], tile_ops.stage_summary, results[k][1], name=f"stage{k + 1}-summary")
                     for k in range(first, last + 1)]
        statistics = executor.statistics.as_dict()
        stage_losses = [summary["loss"] for summary in executor.gather(summaries)]
        return StepReport(loss=float(sum(stage_losses)), stage_losses=stage_losses, statistics=statistics)

    fuse_single_tile = True

    def _fused_steps(self, xs, lr, momentum, stage) -> "PendingSteps":
        for x in xs:
            self._check_batch(x, stage)
        executor, tile = self.executor, self.grid.tiles()[0]
        batches = [self.place(x).handle for x in xs]
        executor.reset_statistics()
        if self._bundle is not None:
            sources = [self._bundle]
        else:
            sources = [None] + [s.parts[tile] for s in self._state] + [h for h in self._scale]
        bundle, rest = sources[0], sources[1:]
        result = executor.run(
            tile, fused_single_tile_step, self.config, lr, momentum, stage, len(batches), self.precision, bundle, *batches, *rest,
            name="fused-step",
        )
        self._bundle = result
        # with the steps queued, after the tile's next task of steps if that is ready: its work is then queued
        # behind these steps when this waits for their losses, and the device does not drain (dasksae.streams)
        losses = executor.run(tile, fused_losses, result, name="fused-losses",
                              priority=-1 if streams.TASK_END == "queue" else 0)
        statistics = executor.statistics.as_dict()
        return PendingSteps(lambda: [
            StepReport(loss=float(sum(step)), stage_losses=[float(v) for v in step], statistics=statistics)
            for step in executor.gather([losses])[0]
        ], futures=[losses])

    def _spmd_steps(self, xs, lr, momentum, stage) -> "PendingSteps":
        from .spmd import new_step_id, spmd_step, step_summary

        for x in xs:
            self._check_batch(x, stage)
        executor, grid = self.executor, self.grid
        placed = [self.place(x, _whole=False) for x in xs]
        executor.reset_statistics()
        first = grid.tiles()[0]
        step_id = new_step_id()
        bundles = {}
        for tile in grid.tiles():
            if self._spmd is not None:
                bundle, initial = self._spmd[tile], []
            else:
                bundle = None
                initial = [self._state[k].parts[tile] for k in range(len(self.config.stages))]
                if tile == first:
                    initial += list(self._scale)
            parts = [batch.array.parts[tile] for batch in placed]
            bundles[tile] = executor.run(
                tile, spmd_step, tile, grid, self.placement, step_id, bundle, lr, momentum, stage, self.precision, len(parts),
                *parts, *initial, name="spmd-step",
            )
        self._spmd, self._bundle = bundles, None
        # with the steps queued, after the first tile's next task if that is ready (as in _fused_steps)
        summary = executor.run(first, step_summary, bundles[first], name="spmd-summary",
                               priority=-1 if streams.TASK_END == "queue" else 0)
        tasks = executor.statistics.as_dict()
        graph = graph_statistics(self.config, grid, placed[0].shape[-1], stage, placed[0].dtype.itemsize)
        statistics = dict(graph, graph_tasks=graph["tasks"], tasks=tasks["tasks"],
                          critical_path=tasks["critical_path"], graph_critical_path=graph["critical_path"])
        return PendingSteps(lambda: [
            StepReport(loss=float(sum(step)), stage_losses=[float(v) for v in step], statistics=statistics)
            for step in executor.gather([summary])[0]["losses"]
        ], futures=[summary])

    def steps(self, xs: list, lr: float, momentum: float, stage: int | None = None) -> list[StepReport]:
        """``len(xs)`` SGD steps; with one tile or SPMD execution, all of them inside each tile's one task.

        The same updates as calling :meth:`step` on each minibatch in turn,
        with the scheduler's per-step cost paid once.  Waits for their
        reports; :meth:`submit_steps` does not.
        """
        return self.submit_steps(xs, lr, momentum, stage).result()

    def submit_steps(self, xs: list, lr: float, momentum: float, stage: int | None = None) -> "PendingSteps":
        """The same steps as :meth:`steps`, submitted without waiting for them: read their reports with
        ``.result()``.

        The network's state is that after these steps as soon as this
        returns, so steps submitted next chain on it: on a cluster, a tile's
        next task is queued behind this one and starts when it ends, instead
        of after a round trip through the client (``dasksae train`` reads a
        group's losses after submitting the next group).  With graph
        execution each step still waits for its losses.
        """
        check_hyperparameters(lr, momentum)
        if self.grid.count == 1 and self.fuse_single_tile:
            return self._fused_steps(list(xs), lr, momentum, stage)
        if self.execution == "spmd":
            return self._spmd_steps(list(xs), lr, momentum, stage)
        reports = [self.step(x, lr, momentum, stage) for x in xs]
        return PendingSteps(lambda: reports)

    def loss_and_grads(self, x, stage: int | None = None) -> StepResult:
        """The objective and every gradient, gathered whole on the client (for checks; nothing is updated)."""
        first, last, results = self._run(x, stage, None)
        grads = [dict() for _ in self.config.stages]
        stage_losses = []
        for k in range(first, last + 1):
            filter_back, reduced = results[k]
            grads_map = filter_back.entry("grads", self.state[k].windows)
            tiles = grads_map.values()
            for name in tiles[next(iter(tiles))]:
                from .halo import assemble

                grads[k][name] = assemble(
                    self.grid.whole(k, "blocks"), [(self.state[k].windows[t], value[name]) for t, value in tiles.items()]
                )
            summary = self.executor.gather([self.executor.run(self.grid.tiles()[0], tile_ops.stage_summary, reduced,
                                                              name=f"stage{k + 1}-summary")])[0]
            if "scale_grad" in summary:
                grads[k]["scale"] = summary["scale_grad"]
            stage_losses.append(summary["loss"])
        return StepResult(loss=float(sum(stage_losses)), stage_losses=stage_losses, grads=grads)

    def features(self, x):
        """The top stage's output for ``x``, assembled on the client."""
        config, grid = self.config, self.grid
        per_map = x.shape[-1] * x.dtype.itemsize
        current = TileArray.from_array(self.executor, x, grid.windows(0, "input_owned"), config.input_shape[2] * per_map)
        for k, geometry in enumerate(config.geometry()):
            maps = geometry.filter_shape[2]
            scale = None if self.scale[k] is None else Shared(self.scale[k])
            filtered = local_filter(current, self.state[k], scale, grid, k, False, self.precision)
            z = output(filtered, "z", grid, k, "filter_owned", maps, per_map)
            pooled = output(l2_pool(z, scale, grid, k, False), "pooled", grid, k, "pooled_owned", maps, per_map)
            current = output(contrast(pooled, grid, k), "output", grid, k, "pooled_owned", maps, per_map)
        return current.to_array()


def build_step(config: NetworkConfig, grid: TileGrid, states: list, scales: list, current: TileArray, batch: int,
               stage: int | None, update, precision: str | None = None):
    """The graph of one step over tiles: forward with each stage's objective, backward, and (``update``) SGD.

    ``states``/``scales``: per stage, the tiles' states and the scale-state
    handle; ``current``: the minibatch's owned parts.  Whatever executor
    ``current`` belongs to runs it (a Dask cluster, this process, or each
    worker's share of it in :mod:`dasksae.spmd`).  ``precision``: of the
    filter products (:mod:`dasksae.kernels.gemm`; default: the weights'
    dtype).  Returns ``(first, last, {stage: (filter-backward results,
    reduced stage summary)})``.
    """
    count = len(config.stages)
    first, last = (0, count - 1) if stage is None else (stage, stage)
    per_map = current.position_bytes // config.input_shape[2]
    geometries = config.geometry()
    forward = []
    for k in range(last + 1):
        geometry = geometries[k]
        maps = geometry.filter_shape[2]
        objective = k >= first
        scale = None if scales[k] is None else Shared(scales[k])
        error_here = objective and error_in_filter(grid, k)
        filtered = local_filter(current, states[k], scale, grid, k, objective, precision, error_here)
        error = filtered if error_here else None
        if objective and not error_here:
            contributions = output(filtered, "reconstruction", grid, k, "input_needed", geometry.input_shape[2], per_map)
            error = reconstruction_error(contributions, current, k)
        z = output(filtered, "z", grid, k, "filter_owned", maps, per_map)
        pooled = l2_pool(z, scale, grid, k, objective)
        normalised = None
        if k < last:  # the last stage's normalised output feeds nothing in a training step: not computed
            normalised = contrast(output(pooled, "pooled", grid, k, "pooled_owned", maps, per_map), grid, k)
            current = output(normalised, "output", grid, k, "pooled_owned", maps, per_map)
        forward.append((filtered, error, pooled, normalised))

    grad_input, error_above, results, reports = None, None, {}, []
    for k in range(last, first - 1, -1):
        geometry = geometries[k]
        maps, channels = geometry.filter_shape[2], geometry.input_shape[2]
        filtered, error, pooled, normalised = forward[k]
        scale = None if scales[k] is None else Shared(scales[k])
        grad_pooled = None
        if k < last:
            contributions = contrast_backward(grad_input, error_above, normalised, grid, k, batch)
            grad_pooled = output(contributions, "grad_pooled", grid, k, "lcn_needed", maps, per_map)
        pool_back = l2_pool_backward(grad_pooled, pooled, scale, grid, k)
        grad_z = output(pool_back, "grad_z", grid, k, "pool_needed", maps, per_map)
        error_map = output(error, "error", grid, k, "input_owned", channels, per_map)
        stage_update = None if update is None else (update[0], update[1])
        filter_back = local_filter_backward(grad_z, error_map, filtered, states[k], scale, grid, k, k > first, stage_update)
        reports.append((k, error, pooled, filter_back, pool_back))
        grad_input = output(filter_back, "grad_x", grid, k, "input_needed", channels, per_map)
        error_above = error_map
    # The stages' reports come last: each waits for the device (it fetches the tile's losses), and nothing in the
    # backward pass needs them, so the step waits once, at its end, instead of once a stage.
    for k, error, pooled, filter_back, pool_back in reports:
        report = tile_map(tile_ops.tile_report, error, pooled, filter_back, pool_back, name=f"stage{k + 1}-report")
        scale_update = None
        if update is not None and scales[k] is not None:
            scale_update = (update[0] * learning_rate_scales(config)[k]["scale"], update[1])
        reduced = tile_reduce(
            tile_ops.reduce_stage, report, scales[k], scale_update, tile=grid.tiles()[0], name=f"stage{k + 1}-reduce"
        )
        results[k] = (filter_back, reduced)
    return first, last, results


def _dry_step(config: NetworkConfig, grid: TileGrid, minibatch: int, stage, itemsize: int):
    """The statistics of a step's graph built with nothing computed (:class:`~dasksae.tile_array.DryExecutor`)."""
    from .tile_array import DryExecutor, _LocalHandle

    executor = DryExecutor()
    states = [
        TileArray(executor, grid.windows(k, "blocks"), {t: _LocalHandle(None) for t in grid.tiles()})
        for k in range(len(config.stages))
    ]
    scales = [_LocalHandle(None) if config.objective == "rica" else None for _ in config.stages]
    x = TileArray(executor, grid.windows(0, "input_owned"), {t: _LocalHandle(None) for t in grid.tiles()}, None,
                  config.input_shape[2] * minibatch * itemsize)
    build_step(config, grid, states, scales, x, minibatch, stage, (1e-3, 0.9))
    return executor.statistics


def graph_statistics(config: NetworkConfig, grid: TileGrid, minibatch: int, stage=None, itemsize: int = 4) -> dict:
    """Tile functions, halo cuts, critical path and halo bytes of one step's graph over ``grid`` (a dry run).

    An SPMD step's tasks each count only their own tile's share, so the
    client reports these for the whole graph instead.  The dry run is made
    once per network, grid, minibatch, stage and item size.
    """
    return dict(_cached_graph_statistics(config, grid, minibatch, stage, itemsize))


@functools.lru_cache(maxsize=64)
def _cached_graph_statistics(config, grid, minibatch, stage, itemsize) -> tuple:
    return tuple(_dry_step(config, grid, minibatch, stage, itemsize).as_dict().items())


def step_plan(config: NetworkConfig, grid: TileGrid, minibatch: int, itemsize: int = 4) -> dict:
    """What one joint step over ``grid`` costs, from a dry run of its graph (nothing is computed).

    Tile functions and the critical path of the graph; halo bytes and
    messages in all and for the busiest tile; the largest tile's parameters.
    """
    stats = _dry_step(config, grid, minibatch, None, itemsize)
    per_tile = {}
    for k, geometry in enumerate(config.geometry()):
        _, _, rows, fan_in = geometry.weight_shape
        for tile, ((b0, b1), (d0, d1)) in grid.windows(k, "blocks").items():
            per_tile[tile] = per_tile.get(tile, 0) + (b1 - b0) * (d1 - d0) * rows * fan_in
    return {
        "tiles": f"{grid.rows}x{grid.cols}",
        "graph_tasks": stats.tasks,
        "critical_path": stats.critical_path,
        "halo_bytes": stats.halo_bytes,
        "halo_bytes_busiest_tile": max(stats.halo_bytes_to.values(), default=0),
        "halo_messages_busiest_tile": max(stats.halo_messages_to.values(), default=0),
        "parameters_largest_tile": max(per_tile.values()),
        "parameters_smallest_tile": min(per_tile.values()),
    }


def pick_stage(bundle: dict, what: str, stage: int):
    """A stage's state (or scale) from a task's bundle; where that task returned with its steps queued
    (``DASKSAE_TASK_END=queue``), once they are done, so that any stream may read it."""
    done = bundle.get("done")
    if done is not None:
        with device_wait(), failures_of_queued_steps():
            done.synchronize()
    return bundle[what][stage]


def fused_single_tile_step(config: NetworkConfig, lr, momentum, stage, batches: int, precision, bundle, *sources):
    """SGD steps of a one-tile network in one task: :func:`build_step` run in place on the tile's arrays.

    ``sources`` starts with ``batches`` minibatches (one step each), then,
    without a previous result (``bundle``), every stage's state followed by
    every stage's scale state.  Updates the state arrays in place and returns
    ``{"states", "scales", "losses", "done"}`` (``losses``: one list of stage
    losses a step, or with ``DASKSAE_TASK_END=queue`` on a GPU their copy to
    the host in flight, read by :func:`fused_losses`; ``done``: then the CUDA
    event after the task's steps, else ``None``).
    """
    from .master_weights import weights_module

    count = len(config.stages)
    xs, sources = sources[:batches], sources[batches:]
    if bundle is not None:
        states, scales = list(bundle["states"]), list(bundle["scales"])
    else:
        states, scales = list(sources[:count]), list(sources[count:])
    xp = weights_module(states[0])
    grid = TileGrid.parse(config, "1x1")
    tile = grid.tiles()[0]
    losses = []
    queue = xp.__name__ == "cupy" and streams.TASK_END == "queue"  # return with the steps queued (dasksae.streams)
    with tile_task_stream(xp, wait=not queue):  # this worker thread's own CUDA stream (dasksae.streams)
        if bundle is not None and bundle.get("done") is not None:
            wait_for_event(bundle["done"])  # the previous task's queued steps, on the device (its thread's stream)
        xs = [xp.asarray(x) for x in xs]  # onto the device before the first step: no copy from the host mid-task
        scales = scale_states_on(xp, scales)
        fence = StepFence(xp)
        for x in xs:
            losses.append(_fused_step(config, grid, tile, count, lr, momentum, stage, precision, x, states, scales))
            fence.step_done()
        if queue:  # the losses copied to the host behind the last step, read by fused_losses; nothing waits here
            losses = queue_losses(losses)
            done = device_event(states)
        else:
            losses = tile_ops.losses_on_host(losses)
            fence.finish()
            done = None
    collector.settle(xp)  # out of the next steps' way (dasksae.collector)
    return {"states": states, "scales": scales, "losses": losses, "done": done}


def fused_losses(result: dict) -> list:
    """The stage losses of a :func:`fused_single_tile_step` task, one list a step, as floats; with its steps
    queued (``DASKSAE_TASK_END=queue``) this waits for their copy to the host, not for the device's later work."""
    with failures_of_queued_steps():
        return read_losses(result["losses"])


def _fused_step(config, grid, tile, count, lr, momentum, stage, precision, x, states, scales):
    """One step of :func:`fused_single_tile_step` on minibatch ``x`` (on the weights' device); updates ``states``
    and ``scales`` in place and returns the stage losses (device scalars on a GPU: nothing waits for the device)."""
    from . import tile_program
    from .tile_array import _LocalHandle

    key = ("fused", repr(config), stage, float(lr), float(momentum), precision, tuple(x.shape), str(x.dtype),
           type(x).__module__.split(".")[0], tuple(scale is None for scale in scales))
    step = tile_program.replayed(key, None, tile_program.step_inputs(x, states, scales))
    if step is None:  # build the graph (and record it, the first time: dasksae.tile_program)
        executor = LocalExecutor()
        stage_states = [TileArray(executor, grid.windows(k, "blocks"), {tile: _LocalHandle(states[k])}) for k in range(count)]
        stage_scales = [None if scale is None else _LocalHandle(scale) for scale in scales]
        current = TileArray(executor, grid.windows(0, "input_owned"), {tile: _LocalHandle(x)}, None,
                            config.input_shape[2] * x.shape[-1] * x.dtype.itemsize)

        def build():
            first, last, results = build_step(config, grid, stage_states, stage_scales, current, x.shape[-1], stage,
                                              (lr, momentum), precision)
            return first, last, {k: (back.parts[tile], reduced) for k, (back, reduced) in results.items()}

        step = tile_program.built(key, executor, tile_program.step_inputs(
            current.parts[tile], [s.parts[tile] for s in stage_states], stage_scales), build)
    first, last, values = step
    for k, (back, reduced) in values.items():
        states[k] = back["state"]
        if scales[k] is not None:
            scales[k] = tile_ops.next_scale_state(reduced)
    return [kept_apart(values[k][1]["loss"]) for k in range(first, last + 1)]  # read once a task


WORKERS_WAIT_SECONDS = 10  # how long a network waits for a cluster's workers to connect before it refuses the tiling


def _workers_to_come(client) -> int | None:
    """How many workers the client's cluster is set to have, where the client holds the cluster object (a
    ``SpecCluster``: ``LocalCluster``, ``LocalCUDACluster``, dask-jobqueue's, whose ``plan`` names each worker of a
    job of several); ``None`` for a scheduler it only connects to, whose workers may yet come from anywhere."""
    plan = getattr(getattr(client, "cluster", None), "plan", None)
    return None if plan is None else len(plan)


def _dask_executor(grid: TileGrid, client, workers) -> DaskExecutor:
    if client is None:
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            raise ConfigError(
                "no Dask client is running; create one (distributed.Client()) or pass client= or executor=."
            ) from None
    given = bool(workers)
    workers = list(workers or sorted(client.scheduler_info(n_workers=-1)["workers"]))
    waited = ""
    if grid.count > len(workers) and not given:  # workers still connecting (a cluster just started, scaled, restarted)
        coming = _workers_to_come(client)
        if coming is not None and coming < grid.count:  # a cluster of ours that is not set to have enough: no wait
            waited = f" and is set to have {coming}"
        else:
            import logging

            # (a warning, so that the CLI, which configures no logging, shows it: the wait is 10 s of nothing)
            logging.getLogger("dasksae").warning("%dx%d tiles need %d workers and the cluster has %d: waiting up to "
                                                 "%g s for more to connect", grid.rows, grid.cols, grid.count,
                                                 len(workers), WORKERS_WAIT_SECONDS)
            try:
                client.wait_for_workers(grid.count, timeout=WORKERS_WAIT_SECONDS)
            except TimeoutError:
                waited = f" after waiting {WORKERS_WAIT_SECONDS:g} s for more"
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if grid.count > len(workers):
        raise ConfigError(
            f"{grid.rows}x{grid.cols} tiles need {grid.count} workers but the cluster has {len(workers)}{waited}; "
            f"use {at_most_tiles(len(workers))} or add workers."
        )
    return DaskExecutor(client, {tile: workers[index] for index, tile in enumerate(grid.tiles())})


def _group_path(group, fallback):
    from pathlib import Path

    from .checkpoint import latest

    path = Path(fallback)
    return latest(path) if (path / "LATEST").exists() else path
