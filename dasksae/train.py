"""Training loops: the single-process reference loop, and model-parallel training over tiles on a Dask cluster."""

from __future__ import annotations

import collections
import functools
import inspect
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .data import NaturalImageBatches
from .errors import DasksaeError
from .network import load_config
from .optim import check_hyperparameters, init_velocity
from .reference import check_dtype, init_params, split_dtype, train_step
from .switches import agreed, current, not_at_default


def _open_metrics(out):
    if out is None:
        return None
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / "metrics.jsonl", "w")
    except OSError as error:
        raise DasksaeError(f"cannot write to output folder {folder} ({error.strerror}); choose a writable --out.") from None


class OutOfMemory(DasksaeError, MemoryError):
    """A training step ran out of host or GPU memory on a worker or the client: what it planned, and what to change."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed: NumPy's, CuPy's and RMM's are :class:`MemoryError`; on a cluster
    the client may see instead another tile's :class:`~dasksae.spmd.NeighbourFailed` naming it."""
    from .spmd import NeighbourFailed

    return isinstance(error, MemoryError) or (isinstance(error, NeighbourFailed) and "MemoryError:" in str(error))


def out_of_memory_advice(config_name, tiles, minibatch, dtype, error: BaseException) -> str:
    """One sentence: what ran out, the plan of a step for the largest tile (``dasksae info``), and what to change."""
    from .accounting import format_bytes, largest_tile_bytes
    from .spmd import NeighbourFailed
    from .tiled_network import step_plan
    from .tiling import TileGrid

    config = load_config(config_name)
    plan = step_plan(config, TileGrid.parse(config, tiles), minibatch, 4)  # its parameter counts; the 4 is halo bytes'
    planned = largest_tile_bytes(config, minibatch, dtype, plan)
    reason = str(error) if isinstance(error, NeighbourFailed) else f"{type(error).__name__}: {error}"
    return (f"training {config.name} on {tiles} tiles at minibatch {minibatch} ({dtype}) ran out of memory ({reason}); "
            f"a step plans about {format_bytes(planned)} for its largest tile (dasksae info {config_name} "
            f"--minibatch {minibatch} --dtype {dtype} --tiles {tiles}): spread it over more tiles and workers or GPUs, "
            f"or lower --minibatch.")


def _explains_out_of_memory(train):
    """``train`` (a function taking ``config_name``, ``minibatch``, ``dtype`` and maybe ``tiles``), raising
    :class:`OutOfMemory` in one sentence where it ran out of memory, instead of a worker's traceback."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def explained(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        except Exception as error:
            if isinstance(error, DasksaeError) or not is_out_of_memory(error):
                raise
            given = signature.bind(*args, **kwargs)
            given.apply_defaults()
            a = given.arguments
            try:
                advice = out_of_memory_advice(a["config_name"], a.get("tiles", "1x1"), a["minibatch"], a["dtype"], error)
            except Exception:  # the plan could not be made: the error as it came
                raise error from None
            raise OutOfMemory(advice) from error

    return explained


def _gpu_missing_here():
    """Why this process cannot put arrays on a GPU (CuPy missing, or no device), or ``None`` where it can."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy finds no GPU"
    except Exception as error:  # noqa: BLE001 - an import error, or the CUDA runtime's (no driver, no device)
        return f"{type(error).__name__}: {error}"
    return None


def check_workers_have_a_gpu(client) -> None:
    """Refuse a GPU run in one sentence, before any tile is made, where a worker cannot import CuPy or finds no GPU."""
    missing = {address: reason for address, reason in client.run(_gpu_missing_here).items() if reason}
    if missing:
        address, reason = next(iter(missing.items()))
        raise DasksaeError(f"a GPU run needs CuPy and a GPU on every worker, and {len(missing)} worker(s) lack them "
                           f"({address}: {reason}); install 'dasksae[gpu]' there, or leave out --gpu and --workers-per-gpu.")


STEPS_PER_TASK = 10  # steps in each tile's task by default: a task's scheduling (~10 ms on a GPU's host) paid once for 10


def check_run_options(steps, minibatch, greedy_steps, lr, momentum) -> None:
    """Refuse, in one sentence, a run's length, minibatch, learning rate or momentum that cannot train."""
    for name, value in (("--steps", steps), ("--minibatch", minibatch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DasksaeError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(greedy_steps, bool) or not isinstance(greedy_steps, int) or greedy_steps < 0:
        raise DasksaeError(f"--greedy-steps must be 0 or more, got {greedy_steps!r}.")
    check_hyperparameters(lr, momentum)


@_explains_out_of_memory
def train_single_process(
    config_name="tiny",
    steps=300,
    minibatch=32,
    lr=1e-3,
    momentum=0.9,
    dtype="float32",
    seed=0,
    out=None,
    greedy_steps=0,
    progress=True,
):
    """Greedy layer-wise steps (``greedy_steps`` per stage), then ``steps`` joint updates; returns params and losses."""
    from tqdm import tqdm

    check_run_options(steps, minibatch, greedy_steps, lr, momentum)
    config = load_config(config_name)
    if str(dtype) in ("tf32", "bfloat16"):
        raise DasksaeError(f"--single-process runs the float32/float64 reference; --dtype {dtype} needs the tiled path (drop --single-process).")
    dtype = check_dtype(dtype)
    params = init_params(config, seed=seed, dtype=dtype)
    velocity = init_velocity(params)
    batches = NaturalImageBatches(config.input_shape, minibatch, seed=seed + 1, dtype=dtype)
    metrics = _open_metrics(out)
    schedule = [(k, greedy_steps) for k in range(len(config.stages)) if greedy_steps] + [(None, steps)]
    losses = []
    step = 0
    total = sum(count for _, count in schedule)
    with tqdm(total=total, disable=not progress, unit="step", mininterval=0.5) as bar:
        for stage, count in schedule:
            for _ in range(count):
                started = time.perf_counter()
                result = train_step(params, velocity, batches.next(), config, lr, momentum, stage=stage)
                seconds = time.perf_counter() - started
                step += 1
                losses.append(result.loss)
                phase = "joint" if stage is None else f"greedy{stage + 1}"
                bar.set_postfix(phase=phase, loss=f"{result.loss:.4g}", images_per_s=f"{minibatch / seconds:.0f}")
                bar.update()
                if metrics:
                    record = {"step": step, "phase": phase, "loss": result.loss, "stage_losses": result.stage_losses,
                              "seconds": seconds}
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                check_finite_loss(result.loss, step, phase, lr, None)
    if metrics:
        metrics.close()
    if progress and losses:
        window, first, last = loss_trend(losses)
        print(f"{config.name}: {step} steps, mean loss of the first {window} {first:.4g} -> last {window} {last:.4g}")
    return params, losses


class TrainingDiverged(DasksaeError):
    """The loss of a training step was not a finite number: the run stopped without writing a checkpoint of it."""


def check_finite_loss(loss, step: int, phase: str, lr: float, resume_from) -> None:
    """Stop the run at the first step whose loss is NaN or infinite, saying where it can go on from."""
    if math.isfinite(loss):
        return
    where = (f"the last checkpoint, {resume_from}, is untouched: lower --lr (now {lr:g}) and --resume from it"
             if resume_from is not None else f"no checkpoint was written: lower --lr (now {lr:g}) and start again")
    raise TrainingDiverged(f"the loss was {loss} at step {step} ({phase}), so training stopped there; {where}, or "
                           f"check the data for values that are not finite.")


class RecentRate:
    """Steps a second over the last ``steps`` steps read (at least the last read), for a progress bar whose steps come
    back in bursts: a group of steps read at once would otherwise show a rate of one group over the gap before it."""

    def __init__(self, started: float, steps: int = 20):
        self.steps = steps
        self._marks = collections.deque([(started, 0)])  # (time read, steps read so far)

    def add(self, now: float, count: int) -> float:
        """Record ``count`` steps read at ``now``; return the steps a second over the window."""
        self._marks.append((now, self._marks[-1][1] + count))
        while len(self._marks) > 2 and self._marks[-1][1] - self._marks[1][1] >= self.steps:
            self._marks.popleft()
        (first_time, first_steps), (last_time, last_steps) = self._marks[0], self._marks[-1]
        return (last_steps - first_steps) / max(last_time - first_time, 1e-9)


def loss_trend(losses) -> tuple:
    """``(window, first, last)``: the mean loss of the first ``window`` steps and of the last, ``window`` being 10
    steps, or a fifth of the run where that is fewer (at least 1).  Single steps' losses are noisy (4647 and 2318 at
    the demo's first and last, against means of 4495 and 2265); the training log and the demo's report both give
    these means."""
    losses = list(losses)
    if not losses:
        raise ValueError("no losses to summarise: the run took no steps")
    window = max(1, min(10, len(losses) // 5))
    return window, sum(losses[:window]) / window, sum(losses[-window:]) / window


# ------------------------------------------------------------------ model-parallel training on a Dask cluster


def schedule_phases(stages: int, greedy_steps: int, steps: int) -> list:
    """The phase of every step: greedy stage 1..n (``greedy_steps`` each), then ``steps`` joint updates."""
    phases = []
    for k in range(stages):
        phases.extend([k] * greedy_steps)
    return phases + [None] * steps


def _check_output_folder(out, resume: bool):
    """Make ``out``, prove it writable, and refuse to overwrite a run there unless resuming."""
    from .checkpoint import latest

    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{time.time_ns()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise DasksaeError(f"cannot write to output folder {folder} ({error.strerror}); choose a writable --out.") from None
    checkpoints = folder / "checkpoints"
    if not resume and latest(checkpoints) is not None:
        raise DasksaeError(
            f"{folder} already holds a run (checkpoints/LATEST); pass --resume to continue it, or choose another --out."
        )
    return folder


@_explains_out_of_memory
def train_tiled(
    client,
    config_name="tiny",
    tiles="2x2",
    steps=50,
    greedy_steps=0,
    minibatch=32,
    lr=1e-3,
    momentum=0.9,
    dtype="float32",
    seed=0,
    out=None,
    resume=None,
    checkpoint_every=0,
    progress=True,
    device="cpu",
    execution="spmd",
    data=None,
    steps_per_task=STEPS_PER_TASK,
):
    """Train on ``client``'s cluster: greedy steps per stage, then joint updates, with checkpoints in ``out``.

    ``steps`` and ``greedy_steps`` count the whole run, those before a resume
    included.  ``resume``: ``True`` (the latest checkpoint in ``out``) or a
    checkpoint path.  Returns ``(network, records)``, one record per step run.
    """
    from tqdm import tqdm

    from .checkpoint import latest, open_checkpoint, rng_state_from_json, rng_state_to_json
    from .tiled_network import TiledNetwork

    check_run_options(steps, minibatch, greedy_steps, lr, momentum)
    if checkpoint_every < 0:
        raise DasksaeError(f"--checkpoint-every must be 0 or more, got {checkpoint_every}.")
    if steps_per_task < 1:
        raise DasksaeError(f"--steps-per-task must be a positive integer, got {steps_per_task}.")
    config = load_config(config_name)
    compute_dtype = dtype
    dtype, precision = split_dtype(dtype)
    switches = agreed(client.run(current)) if client is not None else current()  # as the workers read them
    if device == "cuda" and client is not None:
        check_workers_have_a_gpu(client)
    folder = _check_output_folder(out, bool(resume)) if out is not None else None
    checkpoints = folder / "checkpoints" if folder is not None else None
    if data is not None:
        from .data import StoreBatches

        store = StoreBatches(data, config, minibatch)
        batches = None
    else:
        store = None
        batches = NaturalImageBatches(config.input_shape, minibatch, seed=seed + 1, dtype=dtype)
    start = 0
    if resume is True and checkpoints is None:
        raise DasksaeError("--resume continues the run in --out; give --out the run's folder.")
    if resume:
        path = latest(checkpoints) if resume is True and checkpoints is not None else (Path(resume) if resume is not True else None)
        if path is None:
            raise DasksaeError(f"there is no checkpoint in {checkpoints} to resume from; run once without --resume first.")
        _, attrs = open_checkpoint(path)
        if attrs["config"] != config.to_dict():
            raise DasksaeError(
                f"checkpoint {path} was written for config {attrs['config']['name']!r}, not {config.name!r}; "
                f"resume with --config {attrs['config']['name']} or choose another --out."
            )
        if attrs["dtype"] != dtype.name:
            raise DasksaeError(f"checkpoint {path} holds {attrs['dtype']} weights; resume with --dtype {attrs['dtype']}.")
        network = TiledNetwork.load(path, tiles, client, verify=False, device=device, execution=execution, precision=precision)
        if store is not None:
            if "data_position" not in attrs:
                raise DasksaeError(f"checkpoint {path} was trained on the built-in crops, not a data store; resume without --data.")
            store.position = int(attrs["data_position"])
        else:
            if "data_rng" not in attrs:
                raise DasksaeError(f"checkpoint {path} was trained on a data store; resume with --data.")
            batches.rng.bit_generator.state = rng_state_from_json(attrs["data_rng"])
        start = int(attrs["step"])
    else:
        network = TiledNetwork(config, tiles, client, seed=seed, dtype=compute_dtype, device=device, execution=execution)
    phases = schedule_phases(len(config.stages), greedy_steps, steps)
    metrics = open(folder / "metrics.jsonl", "a" if resume else "w") if folder is not None else None
    options = {"seed": seed, "lr": lr, "momentum": momentum, "minibatch": minibatch, "greedy_steps": greedy_steps, "steps": steps,
               "precision": precision, "switches": switches}
    changed = not_at_default(switches)
    if progress and changed:
        tqdm.write("switches not at their defaults (README, \"On the GPU\"): "
                   + ", ".join(f"{name}={value}" for name, value in changed.items()))

    def checkpoint(step, data_state):
        if checkpoints is not None:
            where = {"data_position": data_state, "data": str(data)} if store is not None else {"data_rng": data_state}
            if progress:  # weights and momentum of a billion-parameter net take minutes to write: say so first
                size = 2 * config.trainable_parameters * network.dtype.itemsize
                size = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
                tqdm.write(f"writing the step-{step} checkpoint ({size} of weights and momentum) to {checkpoints}")
            started = time.perf_counter()
            network.save(checkpoints, step, {**options, **where})
            if progress:
                tqdm.write(f"checkpoint written in {time.perf_counter() - started:.1f} s")

    def data_state():
        return store.position if store is not None else rng_state_to_json(batches.rng)

    records = []
    if start >= len(phases):
        print(f"{config.name}: the checkpoint is already at step {start} of {len(phases)}; raise --steps to train more.")

    def groups():
        """Runs of at most ``steps_per_task`` consecutive steps of one phase, never across a checkpoint."""
        step = start
        while step < len(phases):
            end = step + 1
            while (end < len(phases) and end - step < steps_per_task and phases[end] == phases[step]
                   and not (checkpoint_every and end % checkpoint_every == 0)):
                end += 1
            yield step, end
            step = end

    def draw(count):
        """The data state before these batches (what a checkpoint after the previous step stores), and the
        batches placed on the workers; run in a thread, so they travel while the current steps compute."""
        state = data_state()
        source = store if store is not None else batches  # each tile reads or cuts its own part on its worker
        placed = [source.place(network) for _ in range(count)]
        return state, placed

    plan = list(groups())
    prefetch = ThreadPoolExecutor(max_workers=1)
    pending = prefetch.submit(draw, plan[0][1] - plan[0][0]) if plan else None
    last_read = time.perf_counter()
    shown_rate = RecentRate(last_read)

    def read(bar, first_step, stage, submitted):
        """Wait for a submitted group's reports; record and show them."""
        nonlocal last_read
        reports = submitted.result()
        now = time.perf_counter()
        seconds = (now - last_read) / len(reports)  # groups are queued back to back: from the previous group's end
        last_read = now
        phase = "joint" if stage is None else f"greedy{stage + 1}"
        for offset, report in enumerate(reports):
            record = {
                "step": first_step + offset + 1, "phase": phase, "loss": report.loss, "stage_losses": report.stage_losses,
                "seconds": seconds, "images_per_second": minibatch / seconds, **report.statistics,
            }
            records.append(record)
            if metrics:
                metrics.write(json.dumps(record) + "\n")
        if metrics:
            metrics.flush()
        for record in records[-len(reports):]:
            check_finite_loss(record["loss"], record["step"], phase, lr,
                              latest(checkpoints) if checkpoints is not None else None)
        if first_step == start and progress:
            statistics = reports[0].statistics
            graph = ""
            if "graph_tasks" in statistics:
                graph = f" (running a graph of {statistics['graph_tasks']} tile functions, critical path {statistics['graph_critical_path']})"
            tqdm.write(
                f"{config.name} on {network.grid.rows}x{network.grid.cols} tiles, {network.execution} execution: "
                f"{statistics['tasks']} tasks per {len(reports)} {phase} step(s), critical path {statistics['critical_path']} "
                f"tasks{graph}, {statistics['halo_bytes'] / 1e6:.2f} MB of halos between workers a step"
            )
        # groups' losses come back in bursts (several steps a task, tasks queued ahead): the bar shows the rate over
        # the last steps read, not the last group's
        steps_per_second = shown_rate.add(now, len(reports))
        bar.set_postfix(phase=phase, loss=f"{reports[-1].loss:.4g}", images_per_s=f"{minibatch * steps_per_second:.0f}")
        bar.update(len(reports))

    if progress and network.device == "cuda":  # else a silent first group looks like a hang
        tqdm.write("the first steps compile dasksae's CUDA kernels on each worker, the first time on a machine: CuPy "
                   "keeps them for later runs (~/.cupy/kernel_cache, or CUPY_CACHE_DIR)")
    with prefetch, tqdm(total=len(phases), initial=start, disable=not progress, unit="step", mininterval=0.5) as bar:
        # each group is submitted before the previous group's losses are read, so the workers go from one group's
        # tasks to the next without waiting for the client (TiledNetwork.submit_steps)
        in_flight = None  # (first step, stage, PendingSteps): the group submitted last, not yet read
        for number, (first_step, end) in enumerate(plan):
            stage = phases[first_step]
            _, placed = pending.result()
            following = plan[number + 1] if number + 1 < len(plan) else None
            pending = prefetch.submit(draw, following[1] - following[0]) if following else None
            submitted = network.submit_steps(placed, lr, momentum, stage=stage)
            if in_flight is not None:
                read(bar, *in_flight)
            in_flight = (first_step, stage, submitted)
            if checkpoint_every and end % checkpoint_every == 0 and end < len(phases):
                read(bar, *in_flight)
                in_flight = None
                checkpoint(end, pending.result()[0])
                last_read = time.perf_counter()  # a step's time leaves out the checkpoint's
        if in_flight is not None:
            read(bar, *in_flight)
    if records:
        checkpoint(len(phases), data_state())
    if metrics:
        metrics.close()
    if progress and records:
        window, first, last = loss_trend([r["loss"] for r in records])
        seconds = sorted(r["seconds"] for r in records)[len(records) // 2]
        print(
            f"{config.name}: steps {start + 1}-{len(phases)}, mean loss of the first {window} {first:.4g} -> last {window} "
            f"{last:.4g}; median step {seconds * 1e3:.0f} ms ({minibatch / seconds:.0f} images/s)"
        )
        if checkpoints is not None:
            print(f"checkpoint: {latest(checkpoints)}")
    return network, records
