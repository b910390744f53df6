"""Contrast normalisation and ZCA whitening of frames (plain NumPy, no Dask).

Every frame (a crop of the network's input shape) is first contrast
normalised: its mean removed and divided by its standard deviation, so that
brightness and contrast alone carry no information.  Then ZCA whitening,
fitted on a sample of normalised frames: with the sample covariance
``C = U diag(l) U^T``, ``W = U diag(1 / sqrt(l + eps)) U^T`` (symmetric, so a
whitened frame still looks like an image), ``eps`` a fraction of the mean
eigenvalue to keep the noisiest directions from blowing up.  The matrix and
the mean are saved with the data, and test images get exactly the same
transform.  ZCA over whole frames needs a ``d x d`` matrix, ``d = H*W*C``;
above ``max_dimension`` the Fourier whitening of :mod:`dasksae.data` is used
instead (recorded in the store's attributes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy


def contrast_normalise(frames: numpy.ndarray, epsilon: float = 1e-8) -> numpy.ndarray:
    """Each frame of ``frames (N, d)`` with zero mean and unit standard deviation."""
    frames = numpy.asarray(frames, dtype=numpy.float64)
    centred = frames - frames.mean(axis=1, keepdims=True)
    return centred / numpy.sqrt((centred * centred).mean(axis=1, keepdims=True) + epsilon)


@dataclass(frozen=True)
class Zca:
    """A fitted ZCA transform: ``whiten(x) = (x - mean) @ matrix``."""

    mean: numpy.ndarray  # (d,)
    matrix: numpy.ndarray  # (d, d), symmetric
    epsilon: float

    def whiten(self, frames: numpy.ndarray) -> numpy.ndarray:
        return (numpy.asarray(frames, dtype=numpy.float64) - self.mean) @ self.matrix


def fit_zca(frames: numpy.ndarray, relative_epsilon: float = 1e-2) -> Zca:
    """Fit ZCA on ``frames (N, d)`` (contrast-normalised); ``eps = relative_epsilon * mean eigenvalue``."""
    frames = numpy.asarray(frames, dtype=numpy.float64)
    count, dimension = frames.shape
    if count < 2 * dimension:
        raise ValueError(f"ZCA of {dimension}-dimensional frames needs at least {2 * dimension} samples, got {count}")
    mean = frames.mean(axis=0)
    centred = frames - mean
    covariance = centred.T @ centred / (count - 1)
    eigenvalues, vectors = numpy.linalg.eigh(covariance)
    eigenvalues = numpy.clip(eigenvalues, 0.0, None)
    epsilon = relative_epsilon * float(eigenvalues.mean())
    matrix = (vectors / numpy.sqrt(eigenvalues + epsilon)) @ vectors.T
    return Zca(mean=mean, matrix=matrix, epsilon=epsilon)
