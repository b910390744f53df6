"""Checkpoints: a network's weights and optimiser state as tile-chunked Zarr, written atomically.

Layout of a checkpoint (a Zarr v3 group, one folder)::

    step-000050/
      zarr.json               attributes: format, config, step, tiles, dtype, seed, RNG state,
                              training options, digest (sha256 of the weights), complete
      stage1/encoder          (nbh, nbw, rows per block, fan-in), chunked along the filter-block grid
      stage1/encoder_velocity
      stage1/decoder ...      (Le 2012 only)
      stage1/scale, stage1/scale_velocity   0-d (RICA only)

Chunks split the filter-block grid at every tile boundary of the tiling that
wrote it, so each tile writes its own chunks *from its worker* (no weights
pass through the client), and any tiling can read them back.

Atomic: a checkpoint is written into a hidden ``.step-N.partial-*`` folder,
its digest computed from what was written, then the folder is renamed to
``step-N`` and ``LATEST`` is replaced (write to a temporary file, then
``os.replace``).  A run killed midway leaves the previous checkpoint as the
latest; a corrupt one is refused on load by its digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy

from .errors import ConfigError, DasksaeError
from .tiling import aligned_chunk

FORMAT = "dasksae-checkpoint/1"
LATEST = "LATEST"


def write_tile_state(path: str, stage: int, window, state: dict) -> int:
    """Write one tile's arrays into the checkpoint at ``path`` (runs on the tile's worker); returns bytes."""
    import zarr

    from .master_weights import exported

    group = zarr.open_group(path, mode="r+")
    (b0, b1), (d0, d1) = window
    written = 0
    for name, value in exported(state).items():  # the weights whole where the state keeps them split
        if name.startswith("_"):  # derived from the weights (the filter step's operands): rebuilt, not stored
            continue
        group[f"stage{stage + 1}/{name}"][b0:b1, d0:d1] = numpy.asarray(_to_host(value))
        written += value.nbytes
    return written


def read_tile_state(path: str, stage: int, window, names: list, to_device: bool = False) -> dict:
    """One tile's arrays from the checkpoint at ``path`` (runs on the tile's worker)."""
    import zarr

    group = zarr.open_group(path, mode="r")
    (b0, b1), (d0, d1) = window
    state = {name: numpy.ascontiguousarray(group[f"stage{stage + 1}/{name}"][b0:b1, d0:d1]) for name in names}
    if to_device:
        import cupy

        state = {name: cupy.asarray(value) for name, value in state.items()}
    return state


def _to_host(value):
    return value.get() if hasattr(value, "get") and not isinstance(value, numpy.ndarray) else value


def weight_names(objective: str) -> list[str]:
    """The trained arrays of a stage, in the digest's canonical order."""
    return ["encoder", "scale"] if objective == "rica" else ["encoder", "decoder"]


def digest(group, stages: int, objective: str) -> str:
    """sha256 over every weight (not optimiser state) in canonical order: stage, name, then C order.

    Read a block row at a time, so a large network is never whole in memory.
    """
    hasher = hashlib.sha256()
    for k in range(stages):
        for name in weight_names(objective):
            array = group[f"stage{k + 1}/{name}"]
            hasher.update(f"stage{k + 1}/{name}:{array.dtype}:{tuple(array.shape)}".encode())
            if array.ndim == 0:
                hasher.update(numpy.ascontiguousarray(array[...]).tobytes())
            else:
                for row in range(array.shape[0]):
                    hasher.update(numpy.ascontiguousarray(array[row]).tobytes())
    return hasher.hexdigest()


def save(network, folder, step: int, extra: dict | None = None) -> Path:
    """Write ``network``'s state as checkpoint ``folder/step-N`` atomically and point ``folder/LATEST`` at it."""
    import zarr

    from .tile_array import tile_map

    folder = Path(folder)
    config = network.config
    final = folder / f"step-{step:06d}"
    partial = folder / f".step-{step:06d}.partial-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(partial), mode="w")
    except OSError as error:
        raise DasksaeError(f"cannot write a checkpoint in {folder} ({error.strerror}); choose a writable --out.") from None
    names = ["encoder", "encoder_velocity"] + (["decoder", "decoder_velocity"] if config.objective == "le2012" else [])
    for k, (stage_state, geometry) in enumerate(zip(network.state, config.geometry())):
        windows = stage_state.windows
        chunks = (aligned_chunk(windows.values(), 0), aligned_chunk(windows.values(), 1)) + tuple(geometry.weight_shape[2:])
        for name in names:
            group.create_array(f"stage{k + 1}/{name}", shape=geometry.weight_shape, chunks=chunks, dtype=network.dtype)
        if network.scale[k] is not None:
            scale_state = network.executor.gather([network.scale[k]])[0]
            for name, key in (("scale", "scale"), ("scale_velocity", "velocity")):
                group.create_array(f"stage{k + 1}/{name}", shape=(), dtype=network.dtype)[...] = numpy.asarray(
                    _to_host(scale_state[key])
                )
    writes = []
    for k, stage_state in enumerate(network.state):
        written = tile_map(
            write_tile_state, str(partial.resolve()), k, _per_tile(stage_state.windows), stage_state,
            name=f"stage{k + 1}-checkpoint",
        )
        writes.extend(written.parts.values())
    network.executor.gather(writes)
    attrs = {
        "format": FORMAT,
        "config": config.to_dict(),
        "step": step,
        "tiles": f"{network.grid.rows}x{network.grid.cols}",
        "dtype": network.dtype.name,
        "digest": digest(group, len(config.stages), config.objective),
        "complete": True,
    }
    attrs.update(extra or {})
    group.attrs.update(attrs)
    if final.exists():
        retired = folder / f".retired-{uuid.uuid4().hex[:8]}"
        os.rename(final, retired)
        os.rename(partial, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(partial, final)
    pointer = folder / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    pointer.write_text(final.name + "\n")
    os.replace(pointer, folder / LATEST)
    return final


def _per_tile(windows):
    from .tile_array import PerTile

    return PerTile(windows)


def checkpoints_in(folder) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (hidden partial ones are never listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest(folder) -> Path | None:
    """The checkpoint ``folder/LATEST`` names, or ``None``."""
    pointer = Path(folder) / LATEST
    if not pointer.exists():
        return None
    return Path(folder) / pointer.read_text().strip()


def open_checkpoint(path, verify: bool = True):
    """The Zarr group of a checkpoint, its attributes checked and (``verify``) its digest recomputed.

    ``path`` is a checkpoint folder, or a folder of checkpoints (then its
    ``LATEST``).  Anything wrong is one :class:`ConfigError` sentence that
    names the previous checkpoint to fall back to, if there is one.
    """
    import zarr

    path = Path(path)
    if (path / LATEST).exists():
        path = latest(path)
    others = [p for p in checkpoints_in(path.parent) if p != path]
    fallback = f"; the previous one, {others[-1]}, can be resumed with --resume {others[-1]}" if others else ""
    if not (path / "zarr.json").exists():
        raise ConfigError(f"{path} is not a dasksae checkpoint (no zarr.json){fallback}.")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        if attrs.get("format") != FORMAT or not attrs.get("complete"):
            raise ConfigError(f"{path} is not a complete {FORMAT} checkpoint{fallback}.")
        if verify:
            found = digest(group, len(attrs["config"]["stages"]), attrs["config"].get("objective", "rica"))
            if found != attrs["digest"]:
                raise ConfigError(
                    f"checkpoint {path} is corrupt: its weights' digest is {found[:12]}..., not the "
                    f"{attrs['digest'][:12]}... it was written with{fallback}."
                )
    except ConfigError:
        raise
    except Exception as error:  # zarr/codec errors on damaged files
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error}){fallback}.") from None
    return group, attrs


def describe(path, verify: bool = True) -> dict:
    """What ``dasksae inspect`` prints: config, step, per-layer weight norms and the digest."""
    group, attrs = open_checkpoint(path, verify=verify)
    layers = []
    for k in range(len(attrs["config"]["stages"])):
        entry = {"stage": k + 1}
        for name in weight_names(attrs["config"].get("objective", "rica")):
            array = group[f"stage{k + 1}/{name}"]
            if array.ndim == 0:
                entry[name] = float(array[...])
            else:
                total = sum(float((numpy.asarray(array[row], dtype=numpy.float64) ** 2).sum()) for row in range(array.shape[0]))
                entry[f"{name}_norm"] = math.sqrt(total)
                entry[f"{name}_shape"] = list(array.shape)
        layers.append(entry)
    return {
        "checkpoint": str(Path(group.store.root) if hasattr(group.store, "root") else path),
        "config": attrs["config"],
        "step": attrs["step"],
        "tiles": attrs["tiles"],
        "dtype": attrs["dtype"],
        "digest": attrs["digest"],
        "layers": layers,
        "training": {key: attrs[key] for key in ("seed", "lr", "momentum", "minibatch", "greedy_steps", "steps") if key in attrs},
    }


def rng_state_to_json(generator: numpy.random.Generator) -> str:
    """A Generator's state as a JSON string (its 128-bit integers survive any JSON reader as text)."""
    return json.dumps(generator.bit_generator.state)


def rng_state_from_json(text: str) -> dict:
    return json.loads(text)
