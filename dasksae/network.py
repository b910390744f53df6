"""Stages, the 9-layer network and its named configurations.

A network is ``len(stages)`` stages (three for the Le et al. 2012 network,
hence nine layers); each stage is local filtering -> L2 pooling -> local
contrast normalisation.  This module holds the configuration, its validation
and the shapes every layer has; the math is in :mod:`dasksae.kernels` and the
single-process step in :mod:`dasksae.reference`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import ConfigError
from .kernels.local_filter import block_counts
from .kernels.pooling import pooled_size

OBJECTIVES = ("rica", "le2012")


def _check_positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}: {name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class StageConfig:
    """One stage: local filter (field, step, filter block, maps), L2 pooling, LCN."""

    field: int
    step: int
    block: tuple[int, int, int]
    maps: int
    pool_size: int
    pool_stride: int = 1
    lcn_size: int = 5

    def validate(self, owner: str) -> None:
        for name in ("field", "step", "maps", "pool_size", "pool_stride", "lcn_size"):
            _check_positive_int(owner, name, getattr(self, name))
        if not isinstance(self.block, (tuple, list)) or len(self.block) != 3:
            raise ConfigError(f"{owner}: block must be three positive integers (bh, bw, bd), got {self.block!r}.")
        for name, value in zip(("block height", "block width", "block depth"), self.block):
            _check_positive_int(owner, name, value)
        if self.maps % self.block[2]:
            raise ConfigError(
                f"{owner}: block depth {self.block[2]} must divide maps {self.maps}; use a divisor of {self.maps}."
            )
        if self.lcn_size % 2 == 0:
            raise ConfigError(f"{owner}: lcn_size must be an odd positive integer, got {self.lcn_size}.")


@dataclass(frozen=True)
class StageGeometry:
    """The shapes of one stage for a given input ``(H, W, C)``."""

    input_shape: tuple[int, int, int]
    blocks: tuple[int, int]
    filter_shape: tuple[int, int, int]
    pooled_shape: tuple[int, int, int]
    rows_per_block: int
    fan_in: int

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.blocks[0], self.blocks[1], self.rows_per_block, self.fan_in)

    @property
    def parameters(self) -> int:
        return self.blocks[0] * self.blocks[1] * self.rows_per_block * self.fan_in

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """LCN keeps the pooled shape; this is the next stage's input."""
        return self.pooled_shape


@dataclass(frozen=True)
class NetworkConfig:
    """A whole network: input shape, stages and the training objective's constants."""

    name: str
    input_shape: tuple[int, int, int]
    stages: tuple[StageConfig, ...]
    objective: str = "rica"
    sparsity: float = 0.1
    epsilon: float = 1e-4
    lcn_c: float = 0.01
    note: str = ""
    headline_parameters: int | None = None

    def validate(self) -> "NetworkConfig":
        if not isinstance(self.input_shape, (tuple, list)) or len(self.input_shape) != 3:
            raise ConfigError(
                f"config {self.name!r}: input_shape must be three positive integers (H, W, C), got {self.input_shape!r}."
            )
        for name, value in zip(("input height", "input width", "input channels"), self.input_shape):
            _check_positive_int(f"config {self.name!r}", name, value)
        if not self.stages:
            raise ConfigError(f"config {self.name!r}: stages must hold at least one stage.")
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"config {self.name!r}: objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}."
            )
        for name in ("sparsity", "epsilon", "lcn_c"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"config {self.name!r}: {name} must be a number >= 0, got {value!r}.")
        shape = tuple(self.input_shape)
        for index, stage in enumerate(self.stages):
            owner = f"config {self.name!r} stage {index + 1}"
            stage.validate(owner)
            height, width, _ = shape
            if stage.field > min(height, width):
                raise ConfigError(
                    f"{owner}: field {stage.field} is larger than its {height}x{width} input; "
                    f"use a field of at most {min(height, width)}."
                )
            geometry = _stage_geometry(stage, shape)
            ph, pw, _ = geometry.pooled_shape
            if ph < 1 or pw < 1:
                fh, fw, _ = geometry.filter_shape
                raise ConfigError(
                    f"{owner}: pool_size {stage.pool_size} is larger than its {fh}x{fw} filter output; "
                    f"use a pool_size of at most {min(fh, fw)}."
                )
            shape = geometry.output_shape
        return self

    def geometry(self) -> list[StageGeometry]:
        self.validate()
        shapes, shape = [], tuple(self.input_shape)
        for stage in self.stages:
            geometry = _stage_geometry(stage, shape)
            shapes.append(geometry)
            shape = geometry.output_shape
        return shapes

    @property
    def encoder_parameters(self) -> int:
        """Connections in the encoders (the headline count of the papers)."""
        return sum(g.parameters for g in self.geometry())

    @property
    def trainable_parameters(self) -> int:
        """Everything the optimiser updates: encoders, untied decoders (le2012), scalars ``a`` (rica)."""
        encoders = self.encoder_parameters
        if self.objective == "le2012":
            return 2 * encoders
        return encoders + len(self.stages)

    def replace(self, **changes) -> "NetworkConfig":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        """Build and validate a config from plain data (a JSON file's contents)."""
        if not isinstance(data, dict):
            raise ConfigError("a config must be a JSON object with keys name, input_shape and stages.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; allowed keys are {', '.join(sorted(known))}.")
        for key in ("name", "input_shape", "stages"):
            if key not in data:
                raise ConfigError(f"the config has no {key!r}; a config needs name, input_shape and stages.")
        data = dict(data)
        if not isinstance(data["stages"], (list, tuple)):
            raise ConfigError("config stages must be a list of stage objects.")
        stage_keys = {f.name for f in dataclasses.fields(StageConfig)}
        stages = []
        for index, stage in enumerate(data["stages"]):
            if not isinstance(stage, dict):
                raise ConfigError(f"config stage {index + 1} must be an object with keys {', '.join(sorted(stage_keys))}.")
            unknown = sorted(set(stage) - stage_keys)
            if unknown:
                raise ConfigError(
                    f"config stage {index + 1}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(stage_keys))}."
                )
            try:
                stage = dict(stage)
                if isinstance(stage.get("block"), list):
                    stage["block"] = tuple(stage["block"])
                stages.append(StageConfig(**stage))
            except TypeError as error:
                raise ConfigError(f"config stage {index + 1}: {error}.") from None
        data["stages"] = tuple(stages)
        if isinstance(data["input_shape"], list):
            data["input_shape"] = tuple(data["input_shape"])
        return cls(**data).validate()


def _stage_geometry(stage: StageConfig, input_shape) -> StageGeometry:
    height, width, channels = input_shape
    blocks_h = block_counts(height, stage.field, stage.step)
    blocks_w = block_counts(width, stage.field, stage.step)
    bh, bw, _ = stage.block
    filter_shape = (blocks_h * bh, blocks_w * bw, stage.maps)
    pooled = (
        pooled_size(filter_shape[0], stage.pool_size, stage.pool_stride),
        pooled_size(filter_shape[1], stage.pool_size, stage.pool_stride),
        stage.maps,
    )
    return StageGeometry(
        input_shape=(height, width, channels),
        blocks=(blocks_h, blocks_w),
        filter_shape=filter_shape,
        pooled_shape=pooled,
        rows_per_block=bh * bw * stage.maps,
        fan_in=stage.field * stage.field * channels,
    )


def _three(stage: StageConfig, first: StageConfig | None = None) -> tuple[StageConfig, ...]:
    return (first or stage, stage, stage)


NAMED_CONFIGS: dict[str, NetworkConfig] = {}


def _register(config: NetworkConfig) -> None:
    NAMED_CONFIGS[config.name] = config.validate()


_register(
    NetworkConfig(
        name="tiny",
        input_shape=(32, 32, 1),
        stages=_three(StageConfig(field=6, step=2, block=(2, 2, 4), maps=4, pool_size=3)),
        note="A toy for tests and demos: trains in seconds on one CPU core.",
    )
)
_register(
    NetworkConfig(
        name="small",
        input_shape=(40, 40, 3),
        stages=_three(StageConfig(field=6, step=2, block=(2, 2, 8), maps=8, pool_size=3)),
        note="A few million parameters: the CPU benchmark size.",
    )
)
_register(
    NetworkConfig(
        name="le2012",
        input_shape=(184, 184, 3),
        stages=_three(StageConfig(field=18, step=2, block=(2, 2, 8), maps=8, pool_size=5, lcn_size=5)),
        objective="le2012",
        headline_parameters=1_000_000_000,
        note=(
            "Le et al. 2012: 18x18 fields, 8 maps, 5x5 L2 pooling (stride 1), 5x5 LCN, untied decoder. "
            "Field step 2 with 2x2x8 filter blocks (the paper's stride is not known; step 2 keeps GEMMs of 32 rows). "
            "Input 184x184x3 (Le's 200x200 frames centre-cropped) so the encoders hold 1.013e9 connections, "
            "the paper's 'about 1 billion' (200x200 would give 1.23e9)."
        ),
    )
)
_register(
    NetworkConfig(
        name="coates1.8b",
        input_shape=(212, 212, 3),
        stages=_three(
            StageConfig(field=20, step=4, block=(4, 4, 8), maps=8, pool_size=5),
            StageConfig(field=20, step=4, block=(4, 4, 8), maps=8, pool_size=5),
        ),
        headline_parameters=1_800_000_000,
        note=(
            "Coates et al. 2013, the 1.8B net of 3 servers / 12 GPUs: 20x20 fields, 4x4x8 filter blocks, step 4, "
            "5x5 L2 pooling, 5x5 LCN. Input 212x212x3 so the count is 1.785e9 (200x200 would give 1.54e9)."
        ),
    )
)
_register(
    NetworkConfig(
        name="coates11.2b",
        input_shape=(188, 188, 3),
        stages=_three(
            StageConfig(field=32, step=4, block=(4, 4, 18), maps=18, pool_size=5),
            StageConfig(field=20, step=4, block=(4, 4, 18), maps=18, pool_size=5),
        ),
        headline_parameters=11_200_000_000,
        note=(
            "Coates et al. 2013, the 11.2B net of 16 servers / 64 GPUs: stage 1 20x20x3 fields, stages 2-3 "
            "32x32x18 fields, 4x4x18 filter blocks, step 4, 5x5 L2 pooling, 5x5 LCN. Input 188x188x3 so the "
            "count is 11.01e9 (200x200 would give 13.2e9)."
        ),
    )
)


def named_config(name: str) -> NetworkConfig:
    """The named configuration ``name``; an unknown name is refused with the list of known ones."""
    try:
        return NAMED_CONFIGS[name]
    except KeyError:
        raise ConfigError(
            f"unknown config {name!r}; choose one of {', '.join(NAMED_CONFIGS)}."
        ) from None


def load_config(name_or_path: str) -> NetworkConfig:
    """A named config, or a config from a JSON file (a path ending in ``.json``)."""
    if str(name_or_path).endswith(".json"):
        from pathlib import Path

        path = Path(name_or_path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; give a named config or a JSON file.") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read ({error}).") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"config file {path} is not valid JSON ({error.msg} at line {error.lineno}).") from None
        return NetworkConfig.from_dict(data)
    return named_config(name_or_path)
