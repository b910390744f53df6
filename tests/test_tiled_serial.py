"""The tile decomposition, run serially in this process, equals the single-process reference.

The same checks run on a cluster in ``test_distributed.py``; here they cover
more configs and tilings cheaply.
"""

import pytest

from dasksae import ConfigError, named_config
from dasksae.tile_array import LocalExecutor
from test_tiling import UNEVEN
from tiled_checks import (
    check_each_layer_alone,
    check_network_gradients,
    check_training_steps,
    serial_network,
)

TILINGS = [(1, 1), (2, 2), (3, 2), (2, 3), (1, 3)]


@pytest.mark.parametrize("rows,cols", TILINGS)
def test_each_layer_alone(rng, rows, cols):
    check_each_layer_alone(LocalExecutor(), UNEVEN, rows, cols, rng)


@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["one-chunk", "a-chunk-a-block-row"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 2)])
def test_each_layer_alone_with_unwritten_memory_as_nans(rng, monkeypatch, rows, cols, chunk_bytes):
    """DASKSAE_WRITE_ONCE=1: with ``numpy.empty`` handing out arrays of NaNs, each layer still equals the reference:
    the maps taken from ``empty`` and not zeroed (the input gradient and the fold's map where one span's fields cover
    them, the LCN backward's window where the tile owns all of it) have every value written, and the rest are
    zeroed; and where the backward takes a block row a chunk (overlapping fields), the input gradient is zeroed and
    added into."""
    import numpy

    from dasksae import tile_ops
    from dasksae.kernels import local_filter

    monkeypatch.setattr(local_filter, "WRITE_ONCE", True)  # (DASKSAE_WRITE_ONCE=1)
    if chunk_bytes is not None:
        monkeypatch.setattr(tile_ops, "CHUNK_BYTES", chunk_bytes)

    empty, empty_like = numpy.empty, numpy.empty_like
    monkeypatch.setattr(numpy, "empty", lambda *args, **kwargs: numpy.full_like(empty(*args, **kwargs), numpy.nan))
    monkeypatch.setattr(numpy, "empty_like",
                        lambda *args, **kwargs: numpy.full_like(empty_like(*args, **kwargs), numpy.nan))
    check_each_layer_alone(LocalExecutor(), UNEVEN, rows, cols, rng)


@pytest.mark.parametrize("objective", ["rica", "le2012"])
@pytest.mark.parametrize("rows,cols", TILINGS)
@pytest.mark.parametrize("stage", [None, 0, 1, 2])
def test_network_gradients(rng, objective, rows, cols, stage):
    config = UNEVEN.replace(objective=objective, name=f"uneven-{objective}")
    check_network_gradients(serial_network, config, rows, cols, rng, stage=stage)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2), (3, 2)])
def test_tiny_network_gradients(rng, rows, cols):
    check_network_gradients(serial_network, named_config("tiny"), rows, cols, rng)


@pytest.mark.parametrize("objective", ["rica", "le2012"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2)])
def test_three_training_steps(objective, rows, cols):
    check_training_steps(serial_network, UNEVEN.replace(objective=objective, name=f"uneven-{objective}"), rows, cols)


def test_steps_cost_tasks_linear_in_tiles_and_stages():
    """A step's task count grows with tiles x stages (a bounded number per tile per stage); its critical path
    does not grow with the tile count."""
    import numpy

    config = named_config("tiny")
    x = numpy.zeros(config.input_shape + (2,))
    counts = {}
    for rows, cols in [(1, 1), (2, 2), (3, 3)]:
        network = serial_network(config, f"{rows}x{cols}", dtype="float64")
        counts[rows * cols] = network.step(x, 1e-3, 0.9).statistics
    for tiles, statistics in counts.items():
        assert statistics["tasks"] <= tiles * len(config.stages) * 40
    assert counts[9]["critical_path"] <= counts[4]["critical_path"] + 3
    assert counts[1]["halo_bytes"] == 0 and counts[4]["halo_bytes"] > 0


def test_bad_minibatch_is_refused():
    import numpy

    network = serial_network(UNEVEN, "2x2", dtype="float64")
    with pytest.raises(ConfigError, match=r"minibatch must have shape \(29, 26, 2, 'M'\)"):
        network.step(numpy.zeros((28, 26, 2, 3)), 1e-3, 0.9)


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 2)])
def test_training_with_maps_written_once_is_bit_for_bit_that_of_zeroed_maps(monkeypatch, rows, cols):
    """DASKSAE_WRITE_ONCE=1 on NumPy (float32): three steps give the very losses and weights of zeroed maps (``=0``);
    one tile's LCN backward takes the stage above's gradient and error with no window made (the difference taken as
    it reads), tiles that share their windows' borders make the window and zero outside their own outputs; one
    tile's filter task makes the reconstruction error, with no error task."""
    import numpy

    from dasksae import tile_ops, tile_program
    from dasksae.kernels import local_filter

    lcn_backward, subtracted = tile_ops.lcn_backward, []
    monkeypatch.setattr(tile_ops, "lcn_backward", lambda grad, cache, subtract=None: subtracted.append(
        subtract is not None) or lcn_backward(grad, cache, subtract=subtract))
    error_tasks, tasks = [], {}
    reconstruction_error = tile_ops.reconstruction_error
    monkeypatch.setattr(tile_ops, "reconstruction_error", lambda *args: error_tasks.append(1) or reconstruction_error(
        *args))
    x = numpy.random.default_rng(2).standard_normal(UNEVEN.input_shape + (3,)).astype(numpy.float32)
    runs = {}
    for on in (False, True):
        monkeypatch.setattr(local_filter, "WRITE_ONCE", on)
        tile_program.forget_all()  # (a step's program is kept by its shapes: else the second run replays the first's)
        subtracted.clear()
        error_tasks.clear()
        network = serial_network(UNEVEN, f"{rows}x{cols}", seed=3, dtype="float32")
        runs[on] = [float(network.step(x, 1e-3, 0.9).loss) for _ in range(3)], network.parameters(), list(subtracted)
        tasks[on] = len(error_tasks)
    # one tile whose input window is the map it owns (stage 3's: the fields of stages 1 and 2 leave some of their
    # input unread): the filter's task makes the error (the GPU's fold subtracts as it writes), no task of its own
    assert tasks[False] - tasks[True] == (3 if (rows, cols) == (1, 1) else 0)
    assert runs[True][0] == runs[False][0]
    for mine, theirs in zip(runs[True][1], runs[False][1]):
        assert sorted(mine) == sorted(theirs)
        for name in mine:
            numpy.testing.assert_array_equal(mine[name], theirs[name])
    assert runs[False][2] and not any(runs[False][2])
    assert any(runs[True][2]) == ((rows, cols) == (1, 1))
