"""Single-process SGD on natural image crops lowers the objective."""

import numpy
import pytest

from dasksae.data import NaturalImageBatches
from dasksae.network import named_config
from dasksae.optim import init_velocity
from dasksae.reference import init_params, loss_and_grads, train_step


@pytest.fixture(scope="module")
def tiny():
    return named_config("tiny")


def test_initial_scale_reconstructs_better_than_nothing(tiny):
    params = init_params(tiny, seed=0, dtype="float64")
    x = NaturalImageBatches(tiny.input_shape, 32, seed=5, dtype="float64").next()
    loss = loss_and_grads(params, x, tiny, stage=0).loss
    assert float(params[0]["scale"]) > 0
    assert loss < 0.8 * (x**2).sum() / x.shape[-1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_joint_sgd_lowers_the_objective(tiny, dtype):
    params = init_params(tiny, seed=0, dtype=dtype)
    velocity = init_velocity(params)
    batches = NaturalImageBatches(tiny.input_shape, 32, seed=0, dtype=dtype)
    held_out = NaturalImageBatches(tiny.input_shape, 128, seed=123, dtype=dtype).next()
    before = loss_and_grads(params, held_out, tiny)
    for _ in range(300):
        result = train_step(params, velocity, batches.next(), tiny, lr=1e-3, momentum=0.9)
        assert numpy.isfinite(result.loss)
    after = loss_and_grads(params, held_out, tiny)
    assert after.loss < 0.6 * before.loss, (before.stage_losses, after.stage_losses)
    for k in range(3):
        assert after.stage_losses[k] < 0.9 * before.stage_losses[k]


def test_greedy_training_changes_only_its_stage(tiny):
    params = init_params(tiny, seed=0, dtype="float64")
    start = [{n: v.copy() for n, v in p.items()} for p in params]
    velocity = init_velocity(params)
    batches = NaturalImageBatches(tiny.input_shape, 16, seed=1, dtype="float64")
    held_out = NaturalImageBatches(tiny.input_shape, 64, seed=7, dtype="float64").next()
    before = loss_and_grads(params, held_out, tiny, stage=1).loss
    for _ in range(100):
        train_step(params, velocity, batches.next(), tiny, lr=1e-3, momentum=0.9, stage=1)
    for k in (0, 2):
        for name in params[k]:
            assert numpy.array_equal(params[k][name], start[k][name])
    assert not numpy.array_equal(params[1]["encoder"], start[1]["encoder"])
    assert loss_and_grads(params, held_out, tiny, stage=1).loss < 0.9 * before


def test_momentum_accumulates_for_every_parameter_in_place(tiny):
    from dasksae.optim import apply_updates

    params = init_params(tiny, seed=0, dtype="float64")
    start = [{n: numpy.array(v, copy=True) for n, v in p.items()} for p in params]
    velocity = init_velocity(params)
    grads = [{n: numpy.ones_like(v) for n, v in p.items()} for p in params]
    for _ in range(2):
        apply_updates(params, velocity, grads, lr=0.1, momentum=0.5)
    for k, stage in enumerate(params):
        for name, value in stage.items():
            # v1 = -0.1, v2 = 0.5 * v1 - 0.1 = -0.15; the parameter moved by v1 + v2
            assert numpy.allclose(velocity[k][name], -0.15), name
            assert numpy.allclose(value, start[k][name] - 0.25), name
