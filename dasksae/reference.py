"""The single-process reference network: forward, objective, backward.

This is the ground truth every distributed result is checked against, and the
single-device step the benchmarks compare with.  Plain array code on NumPy or
CuPy (whichever the parameters and input are), any float dtype.

Parameters are a list with one dict per stage:

* ``"encoder"``: ``U``, shape ``(nbh, nbw, bh*bw*K, f*f*C)``; the filters
  used are ``W = U / ||U||`` row by row;
* ``"scale"``: the learned scalar ``a`` (0-d array), RICA only;
* ``"decoder"``: the untied ``W2``, same shape as ``U``, Le 2012 only.

Two kinds of update, as in the papers:

* **joint** (the benchmark update): forward through all stages computing each
  stage's objective, then one backward pass giving gradients of the *sum* of
  the objectives for every parameter (a stage's objective reaches the stages
  below it through pooling and LCN);
* **greedy** layer-wise: only stage ``k``'s objective, only its parameters;
  the stages below run forward only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from .errors import ConfigError
from .kernels.backend import array_module
from .kernels.contrast import lcn_backward, lcn_forward
from .kernels.local_filter import local_filter_forward, local_filter_transpose, local_filter_weight_grad
from .kernels.normalize import unit_rows, unit_rows_backward
from .kernels.pooling import l2_pool_backward, window_sum
from .network import NetworkConfig, StageGeometry
from .objective import stage_objective, stage_objective_backward
from .optim import apply_updates

SUPPORTED_DTYPES = ("float32", "float64")


def check_dtype(dtype) -> numpy.dtype:
    """The numpy dtype for ``dtype``; anything but float32/float64 is refused."""
    name = numpy.dtype(dtype).name if _is_dtype_like(dtype) else str(dtype)
    if name not in SUPPORTED_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}.")
    return numpy.dtype(name)


#: ``--dtype`` values of the tiled network: the storage dtypes, and reduced-precision
#: products over float32 master weights and optimiser state (:mod:`dasksae.kernels.gemm`).
COMPUTE_DTYPES = SUPPORTED_DTYPES + ("tf32", "bfloat16")


def split_dtype(dtype) -> tuple[numpy.dtype, str]:
    """``(storage dtype, product precision)`` for a ``--dtype`` value: ``bfloat16`` -> ``(float32, "bfloat16")``."""
    name = str(dtype) if not _is_dtype_like(dtype) else numpy.dtype(dtype).name
    if name in ("tf32", "bfloat16"):
        return numpy.dtype("float32"), name
    if name not in SUPPORTED_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {', '.join(COMPUTE_DTYPES)}.")
    storage = check_dtype(name)
    return storage, storage.name


def _is_dtype_like(dtype) -> bool:
    try:
        numpy.dtype(dtype)
        return True
    except TypeError:
        return False


def initial_scale(stage, geometry: StageGeometry) -> float:
    """Start ``a`` near the value that undoes the overlap of the tied decoder.

    ``W^T W x`` of random unit filters grows with how many neurons see each
    input value: ``rows_per_block * ceil(f/step)^2`` neurons over ``fan_in``
    inputs.  ``a`` starts at the inverse of that (at most 1).
    """
    overlap = (-(-stage.field // stage.step)) ** 2
    return min(1.0, geometry.fan_in / (geometry.rows_per_block * overlap))


def initial_blocks(config: NetworkConfig, stage: int, seed: int, rows, cols, dtype="float32") -> dict:
    """Stage ``stage``'s initial parameters for filter blocks ``rows x cols`` (half-open ranges), as NumPy.

    Every block draws from its own generator seeded by ``(seed, stage, row,
    column)``, so a tile can initialise its own blocks on its worker and get
    exactly what :func:`init_params` gives the whole network.
    """
    dtype = check_dtype(dtype)
    geometry = config.geometry()[stage]
    _, _, block_rows, fan_in = geometry.weight_shape
    raw = numpy.empty((rows[1] - rows[0], cols[1] - cols[0], block_rows, fan_in), dtype=dtype)
    for i in range(rows[0], rows[1]):
        for j in range(cols[0], cols[1]):
            generator = numpy.random.default_rng((seed, stage, i, j))
            raw[i - rows[0], j - cols[0]] = generator.standard_normal((block_rows, fan_in))
    entry = {"encoder": raw}
    if config.objective == "le2012":
        unit, _ = unit_rows(raw)
        entry["decoder"] = (initial_scale(config.stages[stage], geometry) * unit).astype(dtype)
    return entry


def init_params(config: NetworkConfig, seed: int = 0, dtype="float32", xp=numpy) -> list[dict]:
    """Random parameters for ``config``: Gaussian filters (:func:`initial_blocks`), ``a`` from :func:`initial_scale`."""
    dtype = check_dtype(dtype)
    params = []
    for k, (stage, geometry) in enumerate(zip(config.stages, config.geometry())):
        blocks_h, blocks_w = geometry.weight_shape[:2]
        entry = {name: xp.asarray(value) for name, value in initial_blocks(config, k, seed, (0, blocks_h), (0, blocks_w), dtype).items()}
        if config.objective == "rica":
            entry["scale"] = xp.asarray(numpy.array(initial_scale(stage, geometry), dtype=dtype))
        params.append(entry)
    return params


@dataclass
class StepResult:
    """What one forward/backward pass gives: the total loss, each stage's loss, gradients."""

    loss: float
    stage_losses: list[float]
    grads: list[dict]


def _geometry_args(stage):
    return (stage.field, stage.step, stage.block[0], stage.block[1], stage.pool_size, stage.pool_stride)


def encode_stage(x, stage_params, stage, config: NetworkConfig):
    """Filter, pool and normalise: ``(output, (weights, norms, z, pooled_squares, pooled, lcn_cache))``."""
    xp = array_module(x)
    field, step, block_h, block_w, pool_size, pool_stride = _geometry_args(stage)
    weights, norms = unit_rows(stage_params["encoder"])
    z = local_filter_forward(x, weights, field, step, block_h, block_w)
    pooled_squares = window_sum(z * z, pool_size, pool_stride)
    pooled = xp.sqrt(config.epsilon + pooled_squares)
    output, lcn_cache = lcn_forward(pooled, stage.lcn_size, config.lcn_c)
    return output, (weights, norms, z, pooled_squares, pooled, lcn_cache)


def forward_stage(x, stage_params, stage, config: NetworkConfig):
    """One stage forward with its objective: ``(loss, output, cache)``."""
    output, (weights, norms, z, pooled_squares, pooled, lcn_cache) = encode_stage(x, stage_params, stage, config)
    if config.objective == "rica":
        decoder, scale = weights, stage_params["scale"]
    else:
        decoder, scale = stage_params["decoder"], None
    loss, objective_cache = stage_objective(
        x, z, pooled_squares, decoder, scale, _geometry_args(stage), config.sparsity, config.epsilon
    )
    cache = (x, weights, norms, z, pooled, lcn_cache, objective_cache)
    return loss, output, cache


def backward_stage(cache, grad_output, stage, config: NetworkConfig, need_input_grad: bool):
    """Gradients of (this stage's objective + whatever reached its output) for one stage.

    Returns ``(grads, grad_input)``; ``grad_input`` is ``None`` unless asked for.
    """
    x, weights, norms, z, pooled, lcn_cache, objective_cache = cache
    field, step, block_h, block_w, pool_size, pool_stride = _geometry_args(stage)
    grad_z, grad_x, grad_decoder, grad_scale = stage_objective_backward(objective_cache)
    if grad_output is not None:
        grad_pooled = lcn_backward(grad_output, lcn_cache)
        grad_z = grad_z + l2_pool_backward(grad_pooled, z, pooled, pool_size, pool_stride)
    grad_weights = local_filter_weight_grad(grad_z, x, field, step, block_h, block_w)
    grads = {}
    if config.objective == "rica":
        grad_weights = grad_weights + grad_decoder
        grads["scale"] = grad_scale
    else:
        grads["decoder"] = grad_decoder
    grads["encoder"] = unit_rows_backward(grad_weights, weights, norms)
    grad_input = None
    if need_input_grad:
        grad_input = grad_x + local_filter_transpose(grad_z, weights, x.shape, field, step, block_h, block_w)
    return grads, grad_input


def loss_and_grads(params, x, config: NetworkConfig, stage: int | None = None, input_grad: bool = False):
    """Forward and backward through the network.

    ``stage=None``: the joint update (sum of every stage's objective, gradients
    for every parameter).  ``stage=k``: greedy training of stage ``k`` (its
    objective only; lower stages forward only, with no gradients).  With
    ``input_grad`` the gradient with respect to ``x`` is returned too.
    """
    stages = config.stages
    if stage is not None and not (0 <= stage < len(stages)):
        raise ConfigError(f"stage must be between 0 and {len(stages) - 1}, got {stage}.")
    first, last = (0, len(stages) - 1) if stage is None else (stage, stage)
    for k in range(first):
        x, _ = encode_stage(x, params[k], stages[k], config)
    caches, stage_losses = [], []
    for k in range(first, last + 1):
        loss, x, cache = forward_stage(x, params[k], stages[k], config)
        caches.append(cache)
        stage_losses.append(loss)
    grads = [dict() for _ in stages]
    grad_output = None
    for k in range(last, first - 1, -1):
        need = input_grad or k > first
        grads[k], grad_output = backward_stage(caches[k - first], grad_output, stages[k], config, need)
    result = StepResult(
        loss=float(sum(stage_losses)), stage_losses=[float(v) for v in stage_losses], grads=grads
    )
    if input_grad:
        return result, grad_output
    return result


def features(params, x, config: NetworkConfig):
    """The top stage's output for ``x``: the neurons that are searched for object selectivity."""
    for stage_params, stage in zip(params, config.stages):
        x, _ = encode_stage(x, stage_params, stage, config)
    return x


def learning_rate_scales(config: NetworkConfig) -> list[dict]:
    """Per-parameter learning-rate multipliers.

    The scalar ``a`` of a RICA stage is shared by every neuron of the layer, so
    its gradient is a sum over all of them and grows with the layer's size
    while each filter's gradient does not.  Its step is divided by the number
    of neurons (a diagonal preconditioner); without this one learning rate
    cannot suit both, and SGD diverges through ``a``.
    """
    scales = []
    for geometry in config.geometry():
        height, width, maps = geometry.filter_shape
        scales.append({"scale": 1.0 / (height * width * maps)} if config.objective == "rica" else {})
    return scales


def train_step(params, velocity, x, config: NetworkConfig, lr: float, momentum: float, stage: int | None = None):
    """One SGD-with-momentum step of the joint update (``stage=None``) or of greedy stage ``stage``."""
    result = loss_and_grads(params, x, config, stage=stage)
    apply_updates(params, velocity, result.grads, lr, momentum, learning_rate_scales(config))
    return result
