"""The bundled data set: whitening, chunks for tile reads, worker-side reading, and no test image in training."""

import numpy
import pytest

from dasksae import ConfigError, TiledNetwork, named_config
from dasksae.data import build_bundled_store, lfw_split, open_store, read_frames, source_hash
from dasksae.tile_array import LocalExecutor
from dasksae.tiling import TileGrid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "store"
    # ZCA fitted on the first half of the frames only: the second half checks it
    build_bundled_store(path, named_config("tiny"), frames=6144, face_fraction=0.2, tiles="2x2", zca_sample=4096)
    return path


def test_whitened_frames_have_near_identity_covariance(store):
    import zarr

    frames = zarr.open_group(str(store), mode="r")["train/frames"][:].reshape(32 * 32, -1).T
    fitted, held_out = frames[:4096], frames[4096:]
    # on the frames it was fitted on: identity, but for the regularised (noisiest) directions
    covariance = numpy.cov(fitted, rowvar=False)
    diagonal = numpy.diag(covariance)
    assert 0.75 < diagonal.mean() <= 1.0 and numpy.sqrt(((covariance - numpy.diag(diagonal)) ** 2).mean()) < 0.02
    # on frames it never saw: still near identity
    covariance = numpy.cov(held_out, rowvar=False)
    diagonal = numpy.diag(covariance)
    assert 0.8 < diagonal.mean() < 1.6, diagonal.mean()
    assert numpy.sqrt(((covariance - numpy.diag(diagonal)) ** 2).mean()) < 0.06
    # before whitening, neighbouring pixels of natural images are strongly correlated; after, hardly
    assert abs(numpy.corrcoef(held_out[:, 16 * 32 + 5], held_out[:, 16 * 32 + 6])[0, 1]) < 0.2


def test_test_frames_get_the_same_transform_and_about_35_percent_faces(store):
    import zarr

    group = zarr.open_group(str(store), mode="r")
    labels = group["test/labels"][:]
    assert labels.sum() == 50 and 0.3 < labels.mean() < 0.4
    test = group["test/frames"][:]
    # contrast normalised then whitened: no frame's brightness or contrast stands out by label
    means = test.reshape(-1, test.shape[-1]).mean(axis=0)
    assert abs(means[labels == 1].mean() - means[labels == 0].mean()) < 0.1


def test_chunks_line_up_with_the_tile_grid_unless_that_makes_them_tiny(store):
    """Chunks follow every tile boundary where that leaves them at least 16 pixels a side (each tile then reads
    only its own chunks); tiny's 2x2 boundaries (0, 14, 32) share only a factor of 2, and 2-pixel chunks made
    each read hundreds of decodes, so its chunks are 32 pixels: a tile's read touches at most one chunk beyond
    its window on each side.  Reads equal slicing the whole array either way."""
    import math

    import zarr

    from dasksae.data import MIN_READ_CHUNK, READ_CHUNK, frame_chunk

    aligned = [((0, 32), (0, 48)), ((32, 64), (0, 48)), ((0, 32), (48, 96)), ((32, 64), (48, 96))]
    assert (frame_chunk(aligned, 0, 64), frame_chunk(aligned, 1, 96)) == (32, 48)
    frames = zarr.open_group(str(store), mode="r")["train/frames"]
    grid = TileGrid.parse(named_config("tiny"), "2x2")
    for (r0, r1), (c0, c1) in grid.windows(0, "input_owned").values():
        for (start, stop), chunk in (((r0, r1), frames.chunks[0]), ((c0, c1), frames.chunks[1])):
            assert chunk >= min(MIN_READ_CHUNK, 32)
            assert (stop - 1) // chunk - start // chunk + 1 <= math.ceil((stop - start) / READ_CHUNK) + 1
    window = grid.window(0, "input_owned", (1, 0))
    (r0, r1), (c0, c1) = window
    numpy.testing.assert_array_equal(read_frames(str(store), window, 6140, 12), numpy.concatenate(
        [frames[r0:r1, c0:c1, :, 6140:], frames[r0:r1, c0:c1, :, :8]], axis=3))


def test_each_tile_reads_its_own_window_and_the_network_sees_the_same_batch(store):
    config = named_config("tiny")
    network = TiledNetwork(config, "2x2", executor=LocalExecutor(), dtype="float64")
    placed = network.place_from_store(str(store), 100, 8)
    whole = read_frames(str(store), ((0, 32), (0, 32)), 100, 8, "float64")
    numpy.testing.assert_array_equal(placed.array.to_array(), whole)
    assert network.step(placed, 1e-3, 0.9).loss == pytest.approx(
        TiledNetwork(config, "2x2", executor=LocalExecutor(), dtype="float64").step(whole, 1e-3, 0.9).loss, rel=1e-12)


def test_no_test_image_appears_in_training(store):
    import zarr

    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    assert not set(attrs["source_hashes"]["train"]) & set(attrs["source_hashes"]["test"])
    (train_faces, train_index), (test_faces, test_index), _ = lfw_split(attrs["seed"])
    assert not set(train_index) & set(test_index)
    assert {source_hash(face) for face in test_faces[:50]} <= set(attrs["source_hashes"]["test"])
    assert not {source_hash(face) for face in test_faces} & {source_hash(face) for face in train_faces}
    assert attrs["sources"]["training_faces"]["indices"] == train_index.tolist()
    assert abs(attrs["face_fraction"] - 0.2) < 1e-3


def test_a_store_for_another_input_shape_is_refused(store):
    with pytest.raises(ConfigError, match="holds 32x32x1 frames but config 'small' takes 40x40x3"):
        open_store(store, named_config("small"))
