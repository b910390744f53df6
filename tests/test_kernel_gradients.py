"""Every kernel's gradient (or adjoint) against central finite differences in float64."""

import numpy
import pytest
from gradcheck import directional_check

from dasksae.kernels import (
    block_counts,
    fold_patches,
    gather_patches,
    l2_pool_backward,
    l2_pool_forward,
    lcn_backward,
    lcn_forward,
    local_filter_forward,
    local_filter_transpose,
    local_filter_weight_grad,
    pooled_size,
    unit_rows,
    unit_rows_backward,
    window_sum,
    window_sum_transpose,
)

TOLERANCE = 1e-6

# (H, W, C, M, field, step, bh, bw, K): even fits, uneven fits (trailing rows unused),
# step > field (gaps), step = 1, non-square maps.
FILTER_SHAPES = [
    (12, 12, 2, 3, 4, 2, 2, 2, 3),
    (13, 11, 1, 2, 5, 3, 3, 1, 2),
    (10, 9, 3, 2, 3, 4, 2, 3, 1),
    (7, 8, 2, 2, 3, 1, 1, 1, 4),
    (9, 14, 2, 1, 6, 4, 4, 4, 2),
]


def _filter_case(rng, shape):
    height, width, channels, batch, field, step, bh, bw, maps = shape
    nbh, nbw = block_counts(height, field, step), block_counts(width, field, step)
    x = rng.standard_normal((height, width, channels, batch))
    weights = rng.standard_normal((nbh, nbw, bh * bw * maps, field * field * channels))
    return x, weights, (field, step, bh, bw)


@pytest.mark.parametrize("shape", FILTER_SHAPES)
def test_local_filter_forward_and_weight_grad(rng, shape):
    x, weights, (field, step, bh, bw) = _filter_case(rng, shape)
    probe = rng.standard_normal(local_filter_forward(x, weights, field, step, bh, bw).shape)

    def loss_x(value):
        return float((local_filter_forward(value, weights, field, step, bh, bw) * probe).sum())

    def loss_w(value):
        return float((local_filter_forward(x, value, field, step, bh, bw) * probe).sum())

    grad_x = local_filter_transpose(probe, weights, x.shape, field, step, bh, bw)
    grad_w = local_filter_weight_grad(probe, x, field, step, bh, bw)
    assert directional_check(loss_x, x, grad_x, rng) < TOLERANCE
    assert directional_check(loss_w, weights, grad_w, rng) < TOLERANCE


@pytest.mark.parametrize("shape", FILTER_SHAPES)
def test_local_filter_transpose_is_the_adjoint(rng, shape):
    x, weights, (field, step, bh, bw) = _filter_case(rng, shape)
    y = rng.standard_normal(local_filter_forward(x, weights, field, step, bh, bw).shape)
    left = (local_filter_forward(x, weights, field, step, bh, bw) * y).sum()
    right = (x * local_filter_transpose(y, weights, x.shape, field, step, bh, bw)).sum()
    assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


@pytest.mark.parametrize("shape", FILTER_SHAPES)
def test_fold_is_the_adjoint_of_gather(rng, shape):
    height, width, channels, batch, field, step, *_ = shape
    nbh, nbw = block_counts(height, field, step), block_counts(width, field, step)
    x = rng.standard_normal((height, width, channels, batch))
    patches = rng.standard_normal((nbh * nbw, field * field * channels, batch))
    left = (gather_patches(x, field, step, nbh, nbw) * patches).sum()
    right = (x * fold_patches(patches, x.shape, field, step, nbh, nbw)).sum()
    assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


@pytest.mark.parametrize("size,stride,height,width", [(3, 1, 9, 8), (2, 2, 9, 7), (5, 3, 12, 13), (1, 1, 4, 4)])
def test_window_sum_transpose_is_the_adjoint(rng, size, stride, height, width):
    x = rng.standard_normal((height, width, 3, 2))
    g = rng.standard_normal((pooled_size(height, size, stride), pooled_size(width, size, stride), 3, 2))
    left = (window_sum(x, size, stride) * g).sum()
    right = (x * window_sum_transpose(g, x.shape, size, stride)).sum()
    assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


@pytest.mark.parametrize("size,stride,height,width", [(3, 1, 9, 8), (2, 2, 9, 7), (5, 3, 12, 13)])
def test_l2_pool_gradient(rng, size, stride, height, width):
    x = rng.standard_normal((height, width, 2, 3))
    eps = 1e-4
    pooled = l2_pool_forward(x, size, stride, eps)
    probe = rng.standard_normal(pooled.shape)
    grad = l2_pool_backward(probe, x, pooled, size, stride)
    assert directional_check(lambda v: float((l2_pool_forward(v, size, stride, eps) * probe).sum()), x, grad, rng) < TOLERANCE


def test_l2_pool_values(rng):
    x = rng.standard_normal((4, 5, 1, 1))
    pooled = l2_pool_forward(x, 2, 1)
    assert numpy.isclose(pooled[1, 2, 0, 0], numpy.sqrt((x[1:3, 2:4, 0, 0] ** 2).sum()))


@pytest.mark.parametrize("size,height,width,maps,quiet", [(5, 9, 11, 3, False), (3, 6, 5, 2, False), (5, 4, 4, 1, False), (5, 8, 12, 2, True)])
def test_lcn_gradient(rng, size, height, width, maps, quiet):
    x = rng.standard_normal((height, width, maps, 3))
    if quiet:  # a faint left half falls under the divisive floor c = 0.01, the right half does not
        x[:, : width // 2] *= 0.001
    y, cache = lcn_forward(x, size)
    sigma = cache[1]
    assert numpy.all(numpy.abs(sigma - 0.01) > 3e-5), "test point too near the max(c, sigma) kink"
    if quiet:
        assert (sigma < 0.01).any() and (sigma > 0.01).any()
    probe = rng.standard_normal(y.shape)
    grad = lcn_backward(probe, cache)
    # a small step (2h = 2e-5 moves sigma by at most about that) keeps the check off the kink
    loss = lambda v: float((lcn_forward(v, size)[0] * probe).sum())  # noqa: E731
    assert directional_check(loss, x, grad, rng, h=1e-5) < TOLERANCE


def test_lcn_output_is_normalised(rng):
    x = 3.0 + 5.0 * rng.standard_normal((20, 20, 4, 2))
    y, _ = lcn_forward(x, 5)
    # subtractive step removes the local mean; divisive step brings local energy to about 1
    assert abs(y[5:15, 5:15].mean()) < 0.1
    assert 0.5 < y[5:15, 5:15].std() < 1.5


def test_unit_rows_gradient(rng):
    raw = rng.standard_normal((2, 3, 4, 5))
    probe = rng.standard_normal(raw.shape)
    unit, norms = unit_rows(raw)
    assert numpy.allclose((unit**2).sum(-1), 1.0)
    grad = unit_rows_backward(probe, unit, norms)
    assert directional_check(lambda v: float((unit_rows(v)[0] * probe).sum()), raw, grad, rng) < TOLERANCE


def test_lcn_on_a_window_equals_lcn_of_the_whole_map_inside_its_margin(rng):
    from dasksae.kernels import lcn_halo

    x = rng.standard_normal((20, 17, 3, 2))
    full, _ = lcn_forward(x, 5)
    margin = lcn_halo(5)
    rows, cols = (3, 15), (0, 11)  # a window touching the map's left edge only
    window = x[rows[0] : rows[1], cols[0] : cols[1]]
    part, _ = lcn_forward(window, 5, origin=(rows[0], cols[0]), map_shape=x.shape[:2])
    inner = part[margin:-margin, : -margin]
    numpy.testing.assert_allclose(inner, full[rows[0] + margin : rows[1] - margin, cols[0] : cols[1] - margin], rtol=1e-12)
