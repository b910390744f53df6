"""Whole-network objective gradients against central finite differences in float64."""

import numpy
import pytest
from gradcheck import directional_check

from dasksae.network import NetworkConfig, StageConfig
from dasksae.reference import init_params, loss_and_grads

TOLERANCE = 1e-6


def uneven_config(objective):
    """Three stages where fields, steps and pooling windows do not divide the maps evenly."""
    return NetworkConfig(
        name=f"uneven-{objective}",
        input_shape=(15, 14, 2),
        stages=(
            StageConfig(field=4, step=2, block=(2, 2, 2), maps=2, pool_size=3, pool_stride=1, lcn_size=5),
            StageConfig(field=3, step=1, block=(1, 1, 3), maps=3, pool_size=2, pool_stride=2, lcn_size=3),
            StageConfig(field=3, step=2, block=(2, 1, 1), maps=2, pool_size=1, pool_stride=1, lcn_size=3),
        ),
        objective=objective,
    ).validate()


def _loss_with(params, x, config, stage, k, name, value):
    changed = [dict(p) for p in params]
    changed[k][name] = value
    return loss_and_grads(changed, x, config, stage=stage).loss


@pytest.mark.parametrize("objective", ["rica", "le2012"])
@pytest.mark.parametrize("stage", [None, 0, 1, 2])
def test_network_gradients(rng, objective, stage):
    config = uneven_config(objective)
    params = init_params(config, seed=int(rng.integers(1 << 30)), dtype="float64")
    height, width, channels = config.input_shape
    x = rng.standard_normal((height, width, channels, 3))
    result, grad_x = loss_and_grads(params, x, config, stage=stage, input_grad=True)
    trained = range(len(config.stages)) if stage is None else [stage]
    for k in range(len(config.stages)):
        if k not in trained:
            assert result.grads[k] == {}
            continue
        assert set(result.grads[k]) == set(params[k])
        for name, value in params[k].items():
            error = directional_check(
                lambda v: _loss_with(params, x, config, stage, k, name, v), value, result.grads[k][name], rng
            )
            assert error < TOLERANCE, (k, name, error)
    if stage in (None, 0):
        error = directional_check(lambda v: loss_and_grads(params, v, config, stage=stage).loss, x, grad_x, rng)
        assert error < TOLERANCE


def test_joint_loss_is_the_sum_of_stage_losses(rng):
    config = uneven_config("rica")
    params = init_params(config, seed=1, dtype="float64")
    x = rng.standard_normal(config.input_shape + (2,))
    joint = loss_and_grads(params, x, config)
    for k in range(3):
        assert numpy.isclose(loss_and_grads(params, x, config, stage=k).loss, joint.stage_losses[k])
    assert numpy.isclose(joint.loss, sum(joint.stage_losses))
