"""What an update costs: GEMM FLOPs and the memory the training step needs.

FLOPs follow the single-process reference step (:mod:`dasksae.reference`);
memory that of the tiled step (:mod:`dasksae.tile_ops`), which training runs.
Per stage of ``P`` encoder weights and minibatch ``M`` the joint update runs
six products of ``2 P M`` FLOPs each: ``W x``, ``W^T (a z)``, ``W g_r``,
``(a z) g_r^T``, ``g_z x^T`` and ``W^T g_z`` (the last is skipped for the
first stage, whose input needs no gradient): ``12 P M`` (``10 P M`` for stage
1).  Pooling, LCN and the update are bandwidth-bound and not counted as FLOPs.
"""

from __future__ import annotations

import numpy

from .network import NetworkConfig


def format_bytes(count: float) -> str:
    """``count`` bytes in B, KiB, MiB, GiB or TiB, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def stage_flops(config: NetworkConfig, minibatch: int) -> list[int]:
    """GEMM FLOPs of one joint update, stage by stage."""
    flops = []
    for index, geometry in enumerate(config.geometry()):
        products = 5 if index == 0 else 6
        flops.append(products * 2 * geometry.parameters * minibatch)
    return flops


def update_flops(config: NetworkConfig, minibatch: int) -> int:
    return int(sum(stage_flops(config, minibatch)))


def _size(shape, minibatch=1) -> int:
    return int(numpy.prod(shape)) * minibatch


def memory_plan(config: NetworkConfig, minibatch: int, dtype="float32", chunk_bytes: int | None = None) -> dict[str, int]:
    """Bytes one training step of the tiled network holds at its peak (one tile holding everything), by kind.

    This is the step that ``dasksae train`` runs (:mod:`dasksae.tile_ops`):

    * ``weights``: every trainable parameter (``U``, ``a``, untied decoders),
      in the storage dtype (float32 for ``tf32``/``bfloat16``);
    * ``optimizer_state``: one momentum buffer per parameter;
    * ``operand_copies``: ``bfloat16`` only: the weights as bfloat16 GEMM
      operands, written by each update for the next step and kept between
      steps (with ``1/||U||`` per filter, too small to count);
    * ``activations``: what the forward pass keeps for the backward pass,
      every stage (input operand, ``z``, reconstruction and error, pooling
      and LCN caches), plus the largest stage's backward maps;
    * ``workspace``: one chunk of block rows of the largest stage's backward
      pass (``[X | G]`` fields, ``[g_z | a z]`` rows, the chunk's weight
      gradient, the input-gradient fields): at most about ``chunk_bytes``
      unless one block row is larger.

    There is no whole-network gradient (each chunk's gradient is applied as
    it is computed) and no copy of ``W = U/||U||``.
    """
    from .kernels.local_filter import CHUNK_BYTES, chunks
    from .reference import split_dtype
    from .tile_ops import backward_bytes_per_block

    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    storage, precision = split_dtype(dtype)
    itemsize = storage.itemsize
    operand_size = 2 if precision == "bfloat16" else itemsize
    trainable = config.trainable_parameters
    kept = 0
    backward_maps = 0
    workspace = 0
    for geometry in config.geometry():
        stage_input = _size(geometry.input_shape, minibatch)
        filter_out = _size(geometry.filter_shape, minibatch)
        pooled = _size(geometry.pooled_shape, minibatch)
        planes = 2 * pooled // geometry.pooled_shape[2]
        # x operand; z, reconstruction, error; squares, pooled, sparsity units; LCN centred, output, sigma, divisor
        kept += stage_input * operand_size + (filter_out + 2 * stage_input + 5 * pooled + planes) * itemsize
        backward_maps = max(backward_maps, (filter_out + stage_input + pooled) * itemsize)
        blocks_h, blocks_w = geometry.blocks
        rows, fan_in = geometry.rows_per_block, geometry.fan_in
        per_block = backward_bytes_per_block(rows, fan_in, minibatch, 2 * minibatch, operand_size, itemsize)
        per_row = blocks_w * per_block
        first, last = chunks(blocks_h, per_row, chunk_bytes)[0]  # the largest chunk is the first
        workspace = max(workspace, (last - first) * per_row)
    operand_copies = trainable * 2 if precision == "bfloat16" else 0
    plan = {
        "weights": trainable * itemsize,
        "optimizer_state": trainable * itemsize,
        "operand_copies": operand_copies,
        "activations": kept + backward_maps,
        "workspace": workspace,
    }
    plan["total"] = sum(plan.values())
    return plan


def describe(config: NetworkConfig, minibatch: int, dtype="float32") -> dict:
    """Everything ``dasksae info`` prints, as one JSON-ready dict."""
    layers = []
    for index, (stage, geometry, flops) in enumerate(zip(config.stages, config.geometry(), stage_flops(config, minibatch))):
        name = f"stage{index + 1}"
        layers.append(
            {
                "name": f"{name}.filter",
                "input": list(geometry.input_shape),
                "output": list(geometry.filter_shape),
                "field": [stage.field, stage.field, geometry.input_shape[2]],
                "step": stage.step,
                "block": list(stage.block),
                "blocks": list(geometry.blocks),
                "gemm": [geometry.blocks[0] * geometry.blocks[1], geometry.rows_per_block, geometry.fan_in, minibatch],
                "parameters": geometry.parameters,
                "flops_per_update": flops,
            }
        )
        layers.append(
            {
                "name": f"{name}.pool",
                "input": list(geometry.filter_shape),
                "output": list(geometry.pooled_shape),
                "size": stage.pool_size,
                "stride": stage.pool_stride,
                "parameters": 0,
            }
        )
        layers.append(
            {
                "name": f"{name}.lcn",
                "input": list(geometry.pooled_shape),
                "output": list(geometry.output_shape),
                "size": stage.lcn_size,
                "parameters": 0,
            }
        )
    plan = memory_plan(config, minibatch, dtype)
    from .reference import split_dtype

    storage, precision = split_dtype(dtype)
    return {
        "config": config.name,
        "objective": config.objective,
        "input_shape": list(config.input_shape),
        "minibatch": minibatch,
        "dtype": storage.name if precision == storage.name else f"{precision} (products) over {storage.name}",
        "parameters": config.encoder_parameters,
        "trainable_parameters": config.trainable_parameters,
        "headline_parameters": config.headline_parameters,
        "flops_per_update": update_flops(config, minibatch),
        "bytes": plan,
        "bytes_per_parameter": plan["total"] / config.trainable_parameters,
        "layers": layers,
        "note": config.note,
    }


def largest_tile_bytes(config: NetworkConfig, minibatch: int, dtype, plan: dict) -> int:
    """About what a training step holds on the worker of the largest tile of a tiling (``plan``: its
    :func:`~dasksae.tiled_network.step_plan`): the whole step's plan in the share of the encoders that tile holds."""
    total = describe(config, minibatch, dtype)["bytes"]["total"]
    return int(total * plan["parameters_largest_tile"] / config.encoder_parameters)
