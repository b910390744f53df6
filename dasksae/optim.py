"""Minibatch SGD with momentum, in place, on NumPy or CuPy arrays."""

from __future__ import annotations

import math
import numbers


def check_hyperparameters(lr, momentum) -> None:
    """Refuse a learning rate that is not a positive finite number, or a momentum outside ``[0, 1)``, in one sentence
    (a negative rate climbs the objective, and a momentum of 1 or more never forgets a step: both diverge quietly)."""
    from .errors import ConfigError

    def number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

    if not number(lr) or lr <= 0:
        raise ConfigError(f"the learning rate (--lr) must be a positive number, got {lr!r}; the default is 1e-3.")
    if not number(momentum) or not 0 <= momentum < 1:
        raise ConfigError(f"the momentum (--momentum) must be at least 0 and below 1, got {momentum!r}; the default is 0.9.")


def init_velocity(params: list[dict]) -> list[dict]:
    """Zero momentum buffers shaped like ``params``.

    ``zeros_like`` keeps 0-d parameters (the scalars ``a``) as 0-d arrays;
    ``value * 0`` would give an immutable NumPy scalar that in-place updates
    silently rebind instead of changing.
    """
    from .kernels.backend import array_module

    return [{name: array_module(value).zeros_like(value) for name, value in stage.items()} for stage in params]


def sgd_momentum_update(param, velocity, grad, lr: float, momentum: float) -> None:
    """``v = momentum * v - lr * g``; ``param += v`` (both in place; one fused kernel for CuPy arrays)."""
    if type(param).__module__.startswith("cupy"):
        from .kernels import cuda_kernels

        if cuda_kernels.sgd_momentum_update(param, velocity, grad, lr, momentum):
            return
    velocity *= momentum
    velocity -= lr * grad
    param += velocity


def apply_updates(
    params: list[dict],
    velocity: list[dict],
    grads: list[dict],
    lr: float,
    momentum: float,
    lr_scales: list[dict] | None = None,
) -> None:
    """Update every parameter that has a gradient; the others (frozen stages) are left alone.

    ``lr_scales[k][name]``, where given, multiplies the learning rate of one
    parameter (a diagonal preconditioner).
    """
    lr_scales = lr_scales or [{} for _ in params]
    for stage_params, stage_velocity, stage_grads, scales in zip(params, velocity, grads, lr_scales):
        for name, grad in stage_grads.items():
            sgd_momentum_update(stage_params[name], stage_velocity[name], grad, lr * scales.get(name, 1.0), momentum)
