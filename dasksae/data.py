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


def random_crops(images, shape, count: int, rng: numpy.random.Generator, dtype="float32") -> numpy.ndarray:
    """``count`` random ``(H, W, C)`` crops of ``images``, as a batch-last ``(H, W, C, count)`` array."""
    height, width, channels = shape
    usable = [im for im in images if im.shape[0] >= height and im.shape[1] >= width]
    if not usable:
        raise ConfigError(f"no bundled image is at least {height}x{width}; choose a smaller input shape.")
    out = numpy.empty((height, width, channels, count), dtype=dtype)
    picks = rng.integers(len(usable), size=count)
    for m, pick in enumerate(picks):
        image = usable[pick]
        top = rng.integers(image.shape[0] - height + 1)
        left = rng.integers(image.shape[1] - width + 1)
        out[:, :, :, m] = image[top : top + height, left : left + width]
    return out


class NaturalImageBatches:
    """An endless, seeded stream of whitened crops for a network's input shape."""

    def __init__(self, input_shape, batch_size: int, seed: int = 0, dtype="float32"):
        self.input_shape = tuple(input_shape)
        self.batch_size = batch_size
        self.dtype = dtype
        self.rng = numpy.random.default_rng(seed)
        self.images = natural_images(self.input_shape[2])

    def next(self) -> numpy.ndarray:
        return random_crops(self.images, self.input_shape, self.batch_size, self.rng, self.dtype)
