"""What an update costs: GEMM FLOPs and the memory the reference step needs.

Counts follow the single-process reference step (:mod:`dasksae.reference`).
Per stage of ``P`` encoder weights and minibatch ``M`` the joint update runs
six products of ``2 P M`` FLOPs each: ``W x``, ``W^T (a z)``, ``W g_r``,
``(a z) g_r^T``, ``g_z x^T`` and ``W^T g_z`` (the last is skipped for the
first stage, whose input needs no gradient): ``12 P M`` (``10 P M`` for stage
1).  Pooling, LCN and the update are bandwidth-bound and not counted as FLOPs.
"""

from __future__ import annotations

import numpy

from .network import NetworkConfig


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


def memory_plan(config: NetworkConfig, minibatch: int, dtype="float32") -> dict[str, int]:
    """Bytes one reference update holds at its peak, by kind.

    * ``weights``: every trainable parameter (``U``, ``a``, untied decoders);
    * ``optimizer_state``: one momentum buffer per parameter;
    * ``gradients``: the reference step holds every gradient before updating;
    * ``activations``: what the forward pass keeps for the backward pass
      (stage input, filter output, pooled maps, LCN and objective caches) plus
      the unit-norm filters ``W = U/||U||`` of every stage;
    * ``workspace``: the largest transient of one stage (patch matrix, block
      rows and GEMM output of the widest product, the reconstruction).
    """
    itemsize = numpy.dtype(dtype).itemsize
    trainable = config.trainable_parameters
    activations = 0
    workspace = 0
    for geometry in config.geometry():
        stage_input = _size(geometry.input_shape, minibatch)
        filter_out = _size(geometry.filter_shape, minibatch)
        pooled = _size(geometry.pooled_shape, minibatch)
        # input, z, code (a z), error; pooled, V z^2, sparse units, LCN centred/output; sigma maps
        activations += 2 * stage_input + 2 * filter_out + 5 * pooled + 2 * pooled // geometry.pooled_shape[2]
        activations += geometry.parameters  # unit-norm filters kept for the backward pass
        blocks = geometry.blocks[0] * geometry.blocks[1]
        patches = blocks * geometry.fan_in * minibatch
        rows = blocks * geometry.rows_per_block * minibatch
        workspace = max(workspace, 2 * patches + 2 * rows + geometry.parameters + stage_input)
    return {
        "weights": trainable * itemsize,
        "optimizer_state": trainable * itemsize,
        "gradients": trainable * itemsize,
        "activations": activations * itemsize,
        "workspace": workspace * itemsize,
        "total": (3 * trainable + activations + workspace) * itemsize,
    }


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
    return {
        "config": config.name,
        "objective": config.objective,
        "input_shape": list(config.input_shape),
        "minibatch": minibatch,
        "dtype": str(numpy.dtype(dtype)),
        "parameters": config.encoder_parameters,
        "trainable_parameters": config.trainable_parameters,
        "headline_parameters": config.headline_parameters,
        "flops_per_update": update_flops(config, minibatch),
        "bytes": plan,
        "bytes_per_parameter": plan["total"] / config.trainable_parameters,
        "layers": layers,
        "note": config.note,
    }
