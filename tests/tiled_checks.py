"""Checks of the tile array against the single-process reference, for any executor (serial or a cluster)."""

import numpy

from dasksae import layers
from dasksae.kernels.contrast import lcn_backward, lcn_forward
from dasksae.kernels.local_filter import local_filter_forward, local_filter_transpose, local_filter_weight_grad
from dasksae.kernels.normalize import unit_rows, unit_rows_backward
from dasksae.kernels.pooling import l2_pool_backward, window_sum
from dasksae.optim import init_velocity
from dasksae.reference import init_params, loss_and_grads, train_step
from dasksae.tile_array import TileArray, tile_map
from dasksae.tiled_network import TiledNetwork, tile_state_from
from dasksae.tiling import TileGrid

TOLERANCE = 1e-10


def relative_error(got, expected):
    got, expected = numpy.asarray(got, dtype=numpy.float64), numpy.asarray(expected, dtype=numpy.float64)
    return float(numpy.abs(got - expected).max() / max(numpy.abs(expected).max(), 1e-300))


def _identity(value):
    return value


def summed_to_owners(contributions: TileArray, owned: dict):
    """Sum per-tile contributions back to the owners of ``owned`` and assemble the whole map on the client."""
    summed = tile_map(_identity, contributions.sum_back(owned), name="test-sum", tiles=list(owned))
    return TileArray(summed.executor, owned, summed.parts).to_array()


def check_each_layer_alone(executor, config, rows, cols, rng):
    """Local filter, L2 pooling and LCN of every stage, forward and backward, each on its own over tiles."""
    grid = TileGrid(config, rows, cols)
    params = init_params(config, seed=7, dtype="float64")
    batch = 3
    for k, (stage, geometry) in enumerate(zip(config.stages, config.geometry())):
        windows = grid.windows
        # local filter: z = W x, dL/dW = (W-norm chain) delta x^T, dL/dx = W^T delta
        x = rng.standard_normal(geometry.input_shape + (batch,))
        state = TileArray(
            executor,
            windows(k, "blocks"),
            {t: executor.put(t, tile_state_from(params[k], *w)) for t, w in windows(k, "blocks").items()},
        )
        filtered = layers.local_filter(TileArray.from_array(executor, x, windows(k, "input_owned")), state, None, grid, k, False)
        weights, norms = unit_rows(params[k]["encoder"])
        args = (stage.field, stage.step, stage.block[0], stage.block[1])
        z = filtered.entry("z", windows(k, "filter_owned")).to_array()
        assert relative_error(z, local_filter_forward(x, weights, *args)) < TOLERANCE
        delta = rng.standard_normal(z.shape)
        back = layers.local_filter_backward(
            TileArray.from_array(executor, delta, windows(k, "filter_owned")), None, filtered, state, None, grid, k, True, None
        )
        grads = back.entry("grads", windows(k, "blocks")).values()
        grad_encoder = numpy.zeros_like(params[k]["encoder"])
        for tile, value in grads.items():
            (b0, b1), (d0, d1) = windows(k, "blocks")[tile]
            grad_encoder[b0:b1, d0:d1] = value["encoder"]
        expected = unit_rows_backward(local_filter_weight_grad(delta, x, *args), weights, norms)
        assert relative_error(grad_encoder, expected) < TOLERANCE
        grad_x = summed_to_owners(back.entry("grad_x", windows(k, "input_needed")), windows(k, "input_owned"))
        assert relative_error(grad_x, local_filter_transpose(delta, weights, x.shape, *args)) < TOLERANCE

        # L2 pooling: sqrt(eps + V z^2) and its adjoint
        pooled = layers.l2_pool(TileArray.from_array(executor, z, windows(k, "filter_owned")), None, grid, k, False)
        expected_pooled = numpy.sqrt(config.epsilon + window_sum(z * z, stage.pool_size, stage.pool_stride))
        got_pooled = pooled.entry("pooled", windows(k, "pooled_owned")).to_array()
        assert relative_error(got_pooled, expected_pooled) < TOLERANCE
        g = rng.standard_normal(got_pooled.shape)
        pool_back = layers.l2_pool_backward(TileArray.from_array(executor, g, windows(k, "pooled_owned")), pooled, None, grid, k)
        grad_z = summed_to_owners(pool_back.entry("grad_z", windows(k, "pool_needed")), windows(k, "filter_owned"))
        expected = l2_pool_backward(g, z, expected_pooled, stage.pool_size, stage.pool_stride)
        assert relative_error(grad_z, expected) < TOLERANCE

        # LCN over the whole map's borders, and its adjoint summed back over the LCN windows
        normalised = layers.contrast(TileArray.from_array(executor, expected_pooled, windows(k, "pooled_owned")), grid, k)
        expected_out, cache = lcn_forward(expected_pooled, stage.lcn_size, config.lcn_c)
        assert relative_error(normalised.entry("output", windows(k, "pooled_owned")).to_array(), expected_out) < TOLERANCE
        g = rng.standard_normal(expected_out.shape)
        lcn_back = layers.contrast_backward(
            TileArray.from_array(executor, g, windows(k, "pooled_owned")), None, normalised, grid, k, batch
        )
        grad_pooled = summed_to_owners(lcn_back.entry("grad_pooled", windows(k, "lcn_needed")), windows(k, "pooled_owned"))
        assert relative_error(grad_pooled, lcn_backward(g, cache)) < TOLERANCE


def check_network_gradients(network_factory, config, rows, cols, rng, stage=None):
    """The whole network's objective and every gradient equal the reference's (joint, or greedy ``stage``)."""
    params = init_params(config, seed=3, dtype="float64")
    x = rng.standard_normal(config.input_shape + (3,))
    network = network_factory(config, f"{rows}x{cols}", seed=3, dtype="float64")
    expected = loss_and_grads(params, x, config, stage=stage)
    got = network.loss_and_grads(x, stage=stage)
    assert abs(got.loss - expected.loss) <= TOLERANCE * abs(expected.loss)
    for mine, theirs in zip(got.stage_losses, expected.stage_losses):
        assert abs(mine - theirs) <= TOLERANCE * abs(theirs)
    for k, stage_grads in enumerate(expected.grads):
        assert sorted(got.grads[k]) == sorted(stage_grads), k
        for name, value in stage_grads.items():
            assert relative_error(got.grads[k][name], value) < TOLERANCE, (k, name)
    return network


def check_training_steps(network_factory, config, rows, cols, steps=3, lr=1e-3, momentum=0.9):
    """``steps`` SGD steps from the same seed give the reference's losses and parameters."""
    params = init_params(config, seed=11, dtype="float64")
    velocity = init_velocity(params)
    network = network_factory(config, f"{rows}x{cols}", seed=11, dtype="float64")
    data = numpy.random.default_rng(5)
    reports = []
    for _ in range(steps):
        x = data.standard_normal(config.input_shape + (4,))
        expected = train_step(params, velocity, x, config, lr, momentum)
        report = network.step(x, lr, momentum)
        assert abs(report.loss - expected.loss) <= TOLERANCE * abs(expected.loss)
        reports.append(report)
    for got, want in zip(network.parameters(), params):
        for name, value in want.items():
            assert relative_error(got[name], value) < TOLERANCE, name
    for got, want in zip(network.velocity(), velocity):
        for name, value in want.items():
            assert relative_error(got[name], value) < TOLERANCE, name
    return network, reports


def serial_network(config, tiles, **kwargs):
    from dasksae.tile_array import LocalExecutor

    return TiledNetwork(config, tiles, executor=LocalExecutor(), **kwargs)


def check_steps_in_one_task(network_factory, config, rows, cols, steps=3, lr=1e-3, momentum=0.9):
    """``network.steps([x1, x2, ...])`` (several steps in each tile's one task) trains as the reference does."""
    params = init_params(config, seed=11, dtype="float64")
    velocity = init_velocity(params)
    network = network_factory(config, f"{rows}x{cols}", seed=11, dtype="float64")
    data = numpy.random.default_rng(5)
    batches = [data.standard_normal(config.input_shape + (4,)) for _ in range(steps)]
    expected = [train_step(params, velocity, x, config, lr, momentum).loss for x in batches]
    reports = network.steps(batches, lr, momentum)
    assert len(reports) == steps
    for report, loss in zip(reports, expected):
        assert abs(report.loss - loss) <= TOLERANCE * abs(loss)
    for got, want in zip(network.parameters(), params):
        for name, value in want.items():
            assert relative_error(got[name], value) < TOLERANCE, name
    return reports
