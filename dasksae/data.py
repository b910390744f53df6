"""Training frames for now: whitened natural images that ship with scikit-image.

Each photo is converted to the network's channel count, whitened in the
Fourier domain (the ``|f| exp(-(f/f0)^4)`` filter of Olshausen & Field 1996,
which flattens the 1/f spectrum of natural images and cuts the noisiest
frequencies), scaled to unit variance, and cut into random crops laid out
batch-last ``(H, W, C, M)`` as the network expects.
"""

from __future__ import annotations

import functools

import numpy

from .errors import ConfigError

# Photographs of natural scenes and objects bundled inside scikit-image (no download).
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "clock", "coins", "moon", "grass", "gravel", "brick")


def whiten_image(image: numpy.ndarray, cutoff: float = 0.4) -> numpy.ndarray:
    """Fourier-whiten each channel of ``image (H, W, C)``; returns float64 with unit variance."""
    height, width = image.shape[:2]
    fy = numpy.fft.fftfreq(height)[:, None]
    fx = numpy.fft.fftfreq(width)[None, :]
    radius = numpy.sqrt(fx * fx + fy * fy)
    f0 = cutoff * 0.5
    gain = radius * numpy.exp(-((radius / f0) ** 4))
    out = numpy.empty(image.shape, dtype=numpy.float64)
    for c in range(image.shape[2]):
        plane = image[:, :, c].astype(numpy.float64)
        plane = plane - plane.mean()
        out[:, :, c] = numpy.real(numpy.fft.ifft2(numpy.fft.fft2(plane) * gain))
    return out / out.std()


@functools.lru_cache(maxsize=4)
def natural_images(channels: int) -> tuple[numpy.ndarray, ...]:
    """The bundled photographs as whitened ``(H, W, channels)`` arrays (1 = grey, 3 = colour)."""
    import skimage.color
    import skimage.data

    if channels not in (1, 3):
        raise ConfigError(f"bundled images have 1 (grey) or 3 (colour) channels, not {channels}.")
    images = []
    for name in SKIMAGE_PHOTOS:
        image = numpy.asarray(getattr(skimage.data, name)(), dtype=numpy.float64)
        if image.ndim == 2:
            image = numpy.repeat(image[:, :, None], 3, axis=2) if channels == 3 else image[:, :, None]
        elif channels == 1:
            image = skimage.color.rgb2gray(image[:, :, :3] / 255.0)[:, :, None]
        images.append(whiten_image(image))
    return tuple(images)


def crop_positions(images, shape, count: int, rng: numpy.random.Generator) -> numpy.ndarray:
    """Where ``count`` random ``(H, W)`` crops of ``images`` lie: rows ``(image index, top, left)``.

    The random draws, in order, are those :func:`random_crops` has always
    made, so a seeded stream gives the same batches wherever they are cut.
    """
    height, width = shape[:2]
    usable = [i for i, im in enumerate(images) if im.shape[0] >= height and im.shape[1] >= width]
    if not usable:
        raise ConfigError(f"no bundled image is at least {height}x{width}; choose a smaller input shape.")
    positions = numpy.empty((count, 3), dtype=numpy.int64)
    picks = rng.integers(len(usable), size=count)
    for m, pick in enumerate(picks):
        image = images[usable[pick]]
        positions[m] = (usable[pick], rng.integers(image.shape[0] - height + 1), rng.integers(image.shape[1] - width + 1))
    return positions


def cut_crops(images, shape, positions, window=None, dtype="float32") -> numpy.ndarray:
    """The crops at ``positions`` (:func:`crop_positions`) as a batch-last ``(h, w, C, count)`` array.

    ``window``: ``((r0, r1), (c0, c1))``, only that part of each crop (a
    tile's share of the batch); default the whole crop.  Each crop is copied
    whole into a row of a ``(count, h*w*C)`` buffer, and the buffer is
    transposed in column blocks that fit the cache.  (Writing each crop
    straight into ``out[..., m]`` scatters it at a stride of ``count``
    values: a 96-frame batch of 212x212x3 took 136-155 ms on 2 cores against
    67-73 ms this way, the same values; ``bench/crops.py``.)
    """
    (r0, r1), (c0, c1) = window or ((0, shape[0]), (0, shape[1]))
    channels, count = shape[2], len(positions)
    crops = numpy.empty((count, (r1 - r0) * (c1 - c0) * channels), dtype=dtype)
    for m, (index, top, left) in enumerate(positions):
        crops[m].reshape(r1 - r0, c1 - c0, channels)[...] = images[index][top + r0 : top + r1, left + c0 : left + c1]
    out = numpy.empty((crops.shape[1], count), dtype=dtype)
    for start in range(0, out.shape[0], _TRANSPOSE_BLOCK):
        out[start : start + _TRANSPOSE_BLOCK] = crops[:, start : start + _TRANSPOSE_BLOCK].T
    return out.reshape(r1 - r0, c1 - c0, channels, count)


_TRANSPOSE_BLOCK = 2048  # values of a crop a block: 2048 x count values stay in the cache


def random_crops(images, shape, count: int, rng: numpy.random.Generator, dtype="float32") -> numpy.ndarray:
    """``count`` random ``(H, W, C)`` crops of ``images``, as a batch-last ``(H, W, C, count)`` array."""
    return cut_crops(images, shape, crop_positions(images, shape, count, rng), dtype=dtype)


def natural_crops(shape, positions, window, dtype) -> numpy.ndarray:
    """:func:`cut_crops` of the bundled photographs (whitened once per process), for a worker to run."""
    return cut_crops(natural_images(shape[2]), shape, positions, window, dtype)


class NaturalImageBatches:
    """An endless, seeded stream of whitened crops for a network's input shape.

    :meth:`next` cuts a batch here; :meth:`place` draws only the crops'
    positions here and has every tile cut its own window on its worker, so
    no batch passes through the client (the same values as :meth:`next`).
    """

    def __init__(self, input_shape, batch_size: int, seed: int = 0, dtype="float32"):
        self.input_shape = tuple(input_shape)
        self.batch_size = batch_size
        self.dtype = dtype
        self.rng = numpy.random.default_rng(seed)
        self.images = natural_images(self.input_shape[2])

    def next(self) -> numpy.ndarray:
        return random_crops(self.images, self.input_shape, self.batch_size, self.rng, self.dtype)

    def place(self, network):
        positions = crop_positions(self.images, self.input_shape, self.batch_size, self.rng)
        return network.place_generated(natural_crops, self.input_shape, positions, numpy.dtype(self.dtype).name)


# ------------------------------------------------------------------ the bundled data set: frames -> whitened, tile-chunked Zarr

LICENCES = {
    "astronaut": "public domain (NASA)",
    "camera": "CC0 (Lav Varshney)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "rocket": "public domain (SpaceX)",
    "clock": "public domain (Stefan van der Walt)",
    "coins": "no known copyright restrictions",
    "moon": "no licence stated in scikit-image",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "brick": "CC0 (CC0Textures)",
    "horse": "CC0 (Andreas Preuss)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions",
    "lfw_subset": "Labeled Faces in the Wild (University of Massachusetts): research data, no licence stated in scikit-image",
}
# stills that show no person, kept out of training: their crops are the test set's distractor photos
TEST_STILLS = ("horse", "hubble_deep_field", "immunohistochemistry")
TRAINING_STILLS = SKIMAGE_PHOTOS


def still(name: str, channels: int) -> numpy.ndarray:
    """A scikit-image photo as float ``(H, W, channels)`` in [0, 1]."""
    import skimage.color
    import skimage.data
    import skimage.util

    image = skimage.util.img_as_float(getattr(skimage.data, name)())
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if channels == 1:
        image = skimage.color.rgb2gray(image) if image.ndim == 3 else image
        return image[:, :, None]
    return image if image.ndim == 3 else numpy.repeat(image[:, :, None], 3, axis=2)


def lfw_split(seed: int = 0):
    """scikit-image's ``lfw_subset``: (faces of the training half, of the test half, the non-faces), indices too."""
    import skimage.data

    images = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces, 25x25 grey in [0, 1]
    order = numpy.random.default_rng(seed).permutation(100)
    train, test = numpy.sort(order[:50]), numpy.sort(order[50:])
    return (images[train], train), (images[test], test), (images[100:], numpy.arange(100, 200))


def source_hash(array: numpy.ndarray) -> str:
    """sha256 of an image's pixels: what 'the same source image' means in the leakage test."""
    import hashlib

    return hashlib.sha256(numpy.ascontiguousarray(array, dtype=numpy.float64).tobytes()).hexdigest()[:16]


def _resize(image, shape):
    import skimage.transform

    return skimage.transform.resize(image, shape, order=1, mode="edge", anti_aliasing=True)


def photo_crop(image: numpy.ndarray, shape, rng: numpy.random.Generator) -> numpy.ndarray:
    """A random square crop of ``image`` at a random scale, resized to ``shape (h, w, c)``."""
    height, width = image.shape[:2]
    smallest = min(shape[0], height, width)
    side = int(rng.integers(smallest, max(smallest, min(height, width) // 2) + 1))
    top = int(rng.integers(height - side + 1))
    left = int(rng.integers(width - side + 1))
    return _resize(image[top : top + side, left : left + side], shape)


def face_frame(face: numpy.ndarray, shape, rng: numpy.random.Generator | None = None) -> numpy.ndarray:
    """A 25x25 grey face filling a frame of ``shape``; with ``rng``, flipped, shifted and scaled a little."""
    height, width, channels = shape
    scale, shift, flip = 1.0, (0, 0), False
    if rng is not None:
        scale = float(rng.uniform(0.9, 1.1))
        shift = tuple(int(v) for v in rng.integers(-2, 3, size=2))
        flip = bool(rng.integers(2))
    if flip:
        face = face[:, ::-1]
    side = max(4, int(round(min(height, width) * scale)))
    resized = _resize(face, (side, side))
    pad = max(0, max(height, width) - side) + 4
    canvas = numpy.pad(resized, pad, mode="edge")
    centre = canvas.shape[0] // 2
    top = centre - height // 2 + shift[0]
    left = centre - width // 2 + shift[1]
    frame = canvas[top : top + height, left : left + width]
    return numpy.repeat(frame[:, :, None], channels, axis=2)


def _whiten_frames(frames, zca):
    """``frames (N, h, w, c)`` -> contrast normalised, then ZCA (or Fourier) whitened, as float32 ``(N, h, w, c)``."""
    from .whitening import contrast_normalise

    count = frames.shape[0]
    flat = contrast_normalise(frames.reshape(count, -1))
    if zca is None:
        out = numpy.stack([whiten_image(frame.reshape(frames.shape[1:])) for frame in flat])
        return out.astype(numpy.float32)
    return zca.whiten(flat).reshape(frames.shape).astype(numpy.float32)


#: The smallest spatial chunk, in pixels a side, of a data store's frames that :func:`frame_chunk` aligns with
#: the tile boundaries; below it a chunk of :data:`READ_CHUNK` pixels is used instead.
MIN_READ_CHUNK = 16
READ_CHUNK = 32


def frame_chunk(windows, axis: int, extent: int) -> int:
    """The spatial chunk length along ``axis`` of a data store's frames read by tiles over ``windows``.

    The length that every tile boundary is a multiple of, so that each tile
    reads only its own chunks, if that is at least :data:`MIN_READ_CHUNK`.
    Tile boundaries often share only a factor of 2 or 4: then a tile's read
    of a minibatch would decode hundreds of chunks of a few pixels each
    (23-31 ms a tile's read of 32 frames of ``tiny``'s 2x2 windows, against
    3.1-3.6 ms for 32-pixel chunks: ``bench/read_frames.py``), so chunks of :data:`READ_CHUNK` pixels are used instead, and a
    tile reads at most one chunk beyond its window on each side.  The store
    is only read during training, so chunks shared by tiles cost bytes, not
    correctness.
    """
    from .tiling import aligned_chunk

    aligned = aligned_chunk(windows, axis)
    return aligned if aligned >= MIN_READ_CHUNK else min(extent, READ_CHUNK)


def check_face_fraction(face_fraction) -> None:
    """Refuse a fraction of faces in the training pool outside ``[0, 1)`` in one sentence."""
    if not 0.0 <= face_fraction < 1.0:
        raise ConfigError(f"the face fraction (--face-fraction) must be at least 0 and below 1, got {face_fraction}.")


TEST_FACES, TEST_DISTRACTORS = 50, 93  # the bundled test set: the held-out half of lfw_subset's faces, and distractors


def build_bundled_store(path, config, frames: int = 4096, face_fraction: float = 0.1, test_faces: int = TEST_FACES,
                        test_distractors: int = TEST_DISTRACTORS, tiles=None, seed: int = 0, max_zca_dimension: int = 6000,
                        minibatch_chunk: int = 64, zca_sample: int | None = None):
    """Build the bundled data set for ``config``'s input shape into a Zarr store at ``path``.

    ``train/frames (H, W, C, N)``: crops of the scikit-image stills (random
    position and scale) with ``face_fraction`` of them faces of
    ``lfw_subset``'s training half (flipped, shifted by up to 2 pixels, scaled
    by 0.9-1.1), shuffled.  ``test/frames`` and ``test/labels``: the other 50
    faces, lfw's non-faces and crops of stills that show no person and are kept
    out of training, about 35% faces.  Both contrast normalised, then whitened
    by ZCA fitted on the training frames (saved in ``zca/``).  Chunks of the
    frames follow every boundary of ``tiles``' input windows where that
    leaves them at least :data:`MIN_READ_CHUNK` pixels a side, so each tile
    reads whole chunks (:func:`frame_chunk`).  Sources, licences, hashes and the preprocessing are
    in the attributes.  No labels are used in training.
    """
    import zarr

    from .tiling import TileGrid
    from .whitening import fit_zca

    check_face_fraction(face_fraction)
    shape = tuple(config.input_shape)
    rng = numpy.random.default_rng(seed)
    (train_faces, train_index), (held_faces, test_index), (non_faces, non_face_index) = lfw_split(seed)
    stills = {name: still(name, shape[2]) for name in TRAINING_STILLS}
    face_count = int(round(face_fraction * frames))
    crops, kinds = [], []
    for n in range(frames):
        if n < face_count:
            crops.append(face_frame(train_faces[rng.integers(len(train_faces))], shape, rng))
            kinds.append(1)
        else:
            crops.append(photo_crop(stills[TRAINING_STILLS[rng.integers(len(TRAINING_STILLS))]], shape, rng))
            kinds.append(0)
    order = rng.permutation(frames)
    train = numpy.stack(crops)[order]
    dimension = int(numpy.prod(shape))
    zca = None
    if dimension <= max_zca_dimension and (zca_sample or frames) < 2 * dimension:
        raise ConfigError(
            f"ZCA of {'x'.join(map(str, shape))} frames needs at least {2 * dimension} training frames; "
            f"use --frames {2 * dimension} or more."
        )
    if dimension <= max_zca_dimension:
        from .whitening import contrast_normalise

        sample = train[: zca_sample or min(frames, max(8 * dimension, 2048))]
        zca = fit_zca(contrast_normalise(sample.reshape(len(sample), -1)))
    whitened = _whiten_frames(train, zca)

    test_stills = {name: still(name, shape[2]) for name in TEST_STILLS}
    pick_faces = held_faces[:test_faces]
    pick_non_faces = non_faces[rng.permutation(len(non_faces))[: min(len(non_faces), max(0, test_distractors - test_distractors // 3))]]
    still_crops = [photo_crop(test_stills[TEST_STILLS[i % len(TEST_STILLS)]], shape, rng) for i in range(test_distractors - len(pick_non_faces))]
    test_frames = [face_frame(face, shape) for face in pick_faces] + [face_frame(face, shape) for face in pick_non_faces] + still_crops
    labels = numpy.array([1] * len(pick_faces) + [0] * (len(pick_non_faces) + len(still_crops)), dtype=numpy.int8)
    test_whitened = _whiten_frames(numpy.stack(test_frames), zca)
    # the upper reference baseline: the mean of the training-half faces, preprocessed as every frame
    mean_face = _whiten_frames(numpy.stack([face_frame(face, shape) for face in train_faces]), zca).mean(axis=0)

    grid = TileGrid.parse(config, tiles) if isinstance(tiles, str) else tiles
    windows = list(grid.windows(0, "input_owned").values()) if grid is not None else [((0, shape[0]), (0, shape[1]))]
    chunks = (frame_chunk(windows, 0, shape[0]), frame_chunk(windows, 1, shape[1]), shape[2], minibatch_chunk)
    try:
        group = zarr.open_group(str(path), mode="w")
    except OSError as error:
        raise ConfigError(f"cannot write the data store {path} ({error.strerror}); choose a writable path.") from None
    # inner chunks follow every tile boundary where that leaves them large enough; shards (one file per
    # shard_frames frames) keep the file count small
    shards = (shape[0], shape[1], shape[2], minibatch_chunk * 4)
    group.create_array("train/frames", data=numpy.ascontiguousarray(whitened.transpose(1, 2, 3, 0)), chunks=chunks,
                       shards=shards)
    group.create_array("test/frames", data=numpy.ascontiguousarray(test_whitened.transpose(1, 2, 3, 0)),
                       chunks=chunks[:3] + (len(labels),), shards=shape + (len(labels),))
    group.create_array("test/labels", data=labels)
    group.create_array("test/raw", data=numpy.ascontiguousarray(numpy.stack(test_frames).astype(numpy.float32).transpose(1, 2, 3, 0)))
    group.create_array("templates/mean_face", data=mean_face)
    if zca is not None:
        group.create_array("zca/mean", data=zca.mean)
        group.create_array("zca/matrix", data=zca.matrix)
    group.attrs.update({
        "format": "dasksae-data/1",
        "input_shape": list(shape),
        "train_frames": frames,
        "face_fraction": face_count / frames,
        "train_face_frames": face_count,
        "test_faces": int(labels.sum()),
        "test_distractors": int(len(labels) - labels.sum()),
        "tiles": None if grid is None else f"{grid.rows}x{grid.cols}",
        "chunks": list(chunks),
        "shards": list(shards),
        "preprocessing": {
            "contrast": "per frame: subtract the mean, divide by the standard deviation",
            "whitening": "ZCA over whole frames fitted on the training frames" if zca is not None
            else f"Fourier whitening per frame (frames of {dimension} values are too large for ZCA)",
            "zca_epsilon": None if zca is None else zca.epsilon,
            "zca_fitted_on_first_frames": None if zca is None else int(zca_sample or min(frames, max(8 * dimension, 2048))),
            "augmentation_of_training_faces": "horizontal flip, shift of up to 2 pixels, scale 0.9-1.1",
        },
        "sources": {
            "training_stills": [{"package": "scikit-image", "file": f"skimage.data.{n}", "licence": LICENCES.get(n, "see scikit-image")}
                                for n in TRAINING_STILLS],
            "training_faces": {"package": "scikit-image", "file": "skimage.data.lfw_subset (faces, training half)",
                               "licence": LICENCES["lfw_subset"], "indices": train_index.tolist()},
            "test_faces": {"package": "scikit-image", "file": "skimage.data.lfw_subset (faces, test half)",
                           "indices": test_index[:test_faces].tolist()},
            "test_distractors": [{"package": "scikit-image", "file": "skimage.data.lfw_subset (non-faces)"}]
            + [{"package": "scikit-image", "file": f"skimage.data.{n}", "licence": LICENCES[n]} for n in TEST_STILLS],
        },
        "source_hashes": {
            "train": sorted({source_hash(f) for f in train_faces} | {source_hash(stills[n]) for n in stills}),
            "test": sorted({source_hash(f) for f in pick_faces} | {source_hash(f) for f in pick_non_faces}
                           | {source_hash(test_stills[n]) for n in test_stills}),
        },
        "seed": seed,
    })
    return group


def read_frames(path: str, window, start: int, count: int, dtype="float32") -> numpy.ndarray:
    """Frames ``start .. start+count`` (wrapping around the end) of the training store, over ``window`` only.

    Runs on the worker that needs them: each tile reads its own input window.
    """
    import zarr

    frames = zarr.open_group(str(path), mode="r")["train/frames"]
    (r0, r1), (c0, c1) = window
    total = frames.shape[3]
    start %= total
    stop = start + count
    if stop <= total:
        return numpy.ascontiguousarray(frames[r0:r1, c0:c1, :, start:stop], dtype=dtype)
    first = frames[r0:r1, c0:c1, :, start:total]
    return numpy.ascontiguousarray(numpy.concatenate([first, frames[r0:r1, c0:c1, :, 0 : stop - total]], axis=3), dtype=dtype)


class StoreBatches:
    """Minibatches read from a data store in order, epoch after epoch (the store is shuffled when built).

    :meth:`place` has every tile read its own window on its worker; nothing
    passes through the client.  ``position`` is what a checkpoint saves.
    """

    def __init__(self, path, config, batch_size: int):
        self.path = str(path)
        self.attrs = open_store(path, config)
        self.batch_size = batch_size
        self.position = 0

    def place(self, network):
        batch = network.place_from_store(self.path, self.position, self.batch_size)
        self.position += self.batch_size
        return batch


def open_store(path, config) -> dict:
    """The attributes of the data store at ``path``, checked against ``config``'s input shape."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception:
        raise ConfigError(f"{path} is not a dasksae data store; build one with `dasksae data build`.") from None
    if attrs.get("format") != "dasksae-data/1":
        raise ConfigError(f"{path} is not a dasksae data store; build one with `dasksae data build`.")
    if tuple(attrs["input_shape"]) != tuple(config.input_shape):
        raise ConfigError(
            f"the data store {path} holds {'x'.join(map(str, attrs['input_shape']))} frames but config "
            f"{config.name!r} takes {'x'.join(map(str, config.input_shape))}; build a store for this config."
        )
    return attrs


# ------------------------------------------------------------------ real data sets: folders of images, video files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm")


def _as_channels(image: numpy.ndarray, channels: int) -> numpy.ndarray:
    import skimage.color
    import skimage.util

    image = skimage.util.img_as_float(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if channels == 1:
        return (skimage.color.rgb2gray(image) if image.ndim == 3 else image)[:, :, None]
    return image if image.ndim == 3 else numpy.repeat(image[:, :, None], 3, axis=2)


def centre_frame(image: numpy.ndarray, shape) -> numpy.ndarray:
    """The largest centred square of ``image``, resized to ``shape (h, w, c)``."""
    image = _as_channels(image, shape[2])
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return _resize(image[top : top + side, left : left + side], shape)


def frames_from_folder(folder, shape, limit: int | None = None) -> list:
    """Every image file in ``folder`` (recursively, sorted), as centred frames of ``shape``; any image size."""
    import skimage.io

    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of images.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ConfigError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    frames = []
    for path in files:
        try:
            frames.append(centre_frame(skimage.io.imread(path), shape))
        except Exception as error:  # a damaged file is named, not a traceback
            raise ConfigError(f"cannot read image {path} ({type(error).__name__}); remove or replace it.") from None
    return frames


def frames_from_video(path, shape, every: int = 10, limit: int | None = None) -> list:
    """Every ``every``-th frame of a video file (consecutive frames are nearly the same), centred to ``shape``."""
    try:
        import imageio.v3 as iio
    except ImportError:
        raise ConfigError("reading video files needs imageio with a video plugin: pip install imageio[pyav].") from None
    frames = []
    for index, frame in enumerate(iio.imiter(str(path))):
        if index % every == 0:
            frames.append(centre_frame(frame, shape))
            if limit and len(frames) >= limit:
                break
    if not frames:
        raise ConfigError(f"no frames could be read from {path}.")
    return frames


def add_test_set_from_folders(store, faces, distractors, limit: int | None = None):
    """Replace the store's labelled test set by a folder of faces and a folder of distractors (e.g. LFW and
    ImageNet crops), preprocessed exactly as the store's training frames (its ZCA)."""
    import zarr

    from .whitening import Zca

    group = zarr.open_group(str(store), mode="r+")
    shape = tuple(group.attrs["input_shape"])
    face_frames = frames_from_folder(faces, shape, limit)
    other_frames = frames_from_folder(distractors, shape, limit)
    zca = None
    if "zca" in group:
        zca = Zca(mean=group["zca/mean"][:], matrix=group["zca/matrix"][:], epsilon=group.attrs["preprocessing"]["zca_epsilon"])
    frames = numpy.stack(face_frames + other_frames)
    labels = numpy.array([1] * len(face_frames) + [0] * len(other_frames), dtype=numpy.int8)
    whitened = _whiten_frames(frames, zca)
    for name in ("test/frames", "test/labels", "test/raw"):
        if name in group:
            del group[name]
    group.create_array("test/frames", data=numpy.ascontiguousarray(whitened.transpose(1, 2, 3, 0)))
    group.create_array("test/labels", data=labels)
    group.create_array("test/raw", data=numpy.ascontiguousarray(frames.astype(numpy.float32).transpose(1, 2, 3, 0)))
    group.attrs.update({"test_faces": int(labels.sum()), "test_distractors": int(len(labels) - labels.sum()),
                        "test_sources": {"faces": str(faces), "distractors": str(distractors)}})
    return group
