"""Central finite differences along random directions, in float64."""

from __future__ import annotations

import numpy


def directional_check(loss, x, grad, rng, directions: int = 3, h: float = 1e-5) -> float:
    """Largest relative error between ``<grad, d>`` and a central difference of ``loss`` along ``d``.

    ``loss`` maps an array shaped like ``x`` to a float; ``grad`` is the
    analytic gradient at ``x``.  Each direction is a fresh random unit vector.
    """
    worst = 0.0
    for _ in range(directions):
        direction = rng.standard_normal(x.shape)
        direction /= numpy.linalg.norm(direction)
        numeric = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
        analytic = float((grad * direction).sum())
        scale = max(abs(numeric), abs(analytic), 1e-300)
        worst = max(worst, abs(numeric - analytic) / scale)
    return worst
