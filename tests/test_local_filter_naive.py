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


@pytest.mark.parametrize(
    "height,width,field,step",
    [(7, 7, 3, 2), (7, 8, 3, 2), (6, 6, 2, 3)],
    ids=["fields-cover-the-map", "a-column-past-the-last-field", "gaps-between-fields"],
)
def test_the_transpose_into_an_unzeroed_map_equals_the_loop(rng, monkeypatch, height, width, field, step):
    """DASKSAE_WRITE_ONCE=1: where one span of blocks covers the whole map, ``local_filter_transpose`` takes its map
    from ``empty`` and the fold writes every value (``accumulate=False``); elsewhere the map is zeroed.  With
    ``empty`` handing out maps of NaNs, both kinds of map still equal the loop over neurons: no value is left
    unwritten or added to garbage."""
    from dasksae.kernels import local_filter

    channels, batch, bh, bw, maps = 2, 3, 2, 1, 2
    nbh, nbw = block_counts(height, field, step), block_counts(width, field, step)
    weights = rng.standard_normal((nbh, nbw, bh * bw * maps, field * field * channels))
    y = rng.standard_normal((nbh * bh, nbw * bw, maps, batch))
    monkeypatch.setattr(local_filter, "WRITE_ONCE", True)  # (DASKSAE_WRITE_ONCE=1)
    empty = numpy.empty
    monkeypatch.setattr(numpy, "empty", lambda *args, **kwargs: numpy.full_like(empty(*args, **kwargs), numpy.nan))
    covered = local_filter.fields_cover((height, width), field, step, nbh, nbw)
    assert covered == ((height, width) == (7, 7))
    numpy.testing.assert_allclose(
        local_filter_transpose(y, weights, (height, width, channels, batch), field, step, bh, bw),
        naive_transpose(y, weights, (height, width, channels, batch), field, step, bh, bw), rtol=1e-12, atol=1e-12)
    out = numpy.full((height, width, channels, batch), numpy.nan)
    local_filter.add_transpose_into(out, weights.reshape(nbh * nbw, bh * bw * maps, -1), local_filter.block_rows(
        y, bh, bw), field, step, nbh, nbw, "float64", accumulate=False)
    numpy.testing.assert_allclose(out, naive_transpose(y, weights, out.shape, field, step, bh, bw), rtol=1e-12,
                                  atol=1e-12)
