"""Training loops.  For now the single-process reference loop (NumPy, or CuPy when asked)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .data import NaturalImageBatches
from .errors import DasksaeError
from .network import load_config
from .optim import init_velocity
from .reference import check_dtype, init_params, train_step


def _open_metrics(out):
    if out is None:
        return None
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / "metrics.jsonl", "w")
    except OSError as error:
        raise DasksaeError(f"cannot write to output folder {folder} ({error.strerror}); choose a writable --out.") from None


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

    for name, value in (("--steps", steps), ("--minibatch", minibatch)):
        if not isinstance(value, int) or value < 1:
            raise DasksaeError(f"{name} must be a positive integer, got {value!r}.")
    if greedy_steps < 0:
        raise DasksaeError(f"--greedy-steps must be 0 or more, got {greedy_steps}.")
    config = load_config(config_name)
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
    if metrics:
        metrics.close()
    if progress and losses:
        window = max(1, min(20, len(losses) // 5))
        first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
        print(f"{config.name}: {step} steps, mean loss of the first {window} {first:.4g} -> last {window} {last:.4g}")
    return params, losses
