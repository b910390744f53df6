"""The batched filter-block kernel equals a loop over every neuron."""

import numpy
import pytest

from dasksae.kernels import block_counts, local_filter_forward, local_filter_transpose


def naive_local_filter(x, weights, field, step, bh, bw):
    """One neuron at a time: output (i, j, k) of block (p, q) sees x[p*step:+field, q*step:+field, :]."""
    height, width, channels, batch = x.shape
    nbh, nbw, rows, _ = weights.shape
    maps = rows // (bh * bw)
    out = numpy.zeros((nbh * bh, nbw * bw, maps, batch))
    for p in range(nbh):
        for q in range(nbw):
            for a in range(bh):
                for b in range(bw):
                    for k in range(maps):
                        row = (a * bw + b) * maps + k
                        for m in range(batch):
                            total = 0.0
                            for u in range(field):
                                for v in range(field):
                                    for c in range(channels):
                                        column = (u * field + v) * channels + c
                                        total += weights[p, q, row, column] * x[p * step + u, q * step + v, c, m]
                            out[p * bh + a, q * bw + b, k, m] = total
    return out


def naive_transpose(y, weights, input_shape, field, step, bh, bw):
    out = numpy.zeros(input_shape)
    nbh, nbw, rows, _ = weights.shape
    maps = rows // (bh * bw)
    channels = input_shape[2]
    for p in range(nbh):
        for q in range(nbw):
            for a in range(bh):
                for b in range(bw):
                    for k in range(maps):
                        row = (a * bw + b) * maps + k
                        for u in range(field):
                            for v in range(field):
                                for c in range(channels):
                                    column = (u * field + v) * channels + c
                                    out[p * step + u, q * step + v, c, :] += (
                                        weights[p, q, row, column] * y[p * bh + a, q * bw + b, k, :]
                                    )
    return out


@pytest.mark.parametrize(
    "height,width,channels,batch,field,step,bh,bw,maps",
    [(7, 8, 2, 2, 3, 2, 2, 2, 2), (9, 6, 1, 3, 4, 3, 1, 2, 3), (6, 6, 3, 1, 2, 3, 3, 3, 1)],
)
def test_kernel_equals_loop_over_neurons(rng, height, width, channels, batch, field, step, bh, bw, maps):
    nbh, nbw = block_counts(height, field, step), block_counts(width, field, step)
    x = rng.standard_normal((height, width, channels, batch))
    weights = rng.standard_normal((nbh, nbw, bh * bw * maps, field * field * channels))
    fast = local_filter_forward(x, weights, field, step, bh, bw)
    slow = naive_local_filter(x, weights, field, step, bh, bw)
    numpy.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    y = rng.standard_normal(fast.shape)
    numpy.testing.assert_allclose(
        local_filter_transpose(y, weights, x.shape, field, step, bh, bw),
        naive_transpose(y, weights, x.shape, field, step, bh, bw),
        rtol=1e-12,
        atol=1e-12,
    )
