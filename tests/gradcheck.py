"""Central finite differences along random directions, in float64."""

from __future__ import annotations

import numpy


def directional_check(loss, x, grad, rng, directions: int = 3, h: float = 1e-3) -> float:
    """Largest relative error between ``<grad, d>`` and a central difference of ``loss`` along ``d``.

    ``loss`` maps an array shaped like ``x`` to a float; ``grad`` is the
    analytic gradient at ``x``.  Each direction is a fresh random unit vector.
    The difference is the fourth-order central one (Richardson over ``h`` and
    ``2h``): truncation error ``O(h^4)`` lets ``h`` stay large enough that
    rounding in a large loss does not swamp a small derivative.
    """
    worst = 0.0
    for _ in range(directions):
        direction = rng.standard_normal(x.shape)
        direction /= numpy.linalg.norm(direction)
        near = loss(x + h * direction) - loss(x - h * direction)
        far = loss(x + 2 * h * direction) - loss(x - 2 * h * direction)
        numeric = (8 * near - far) / (12 * h)
        analytic = float((grad * direction).sum())
        scale = max(abs(numeric), abs(analytic), 1e-300)
        worst = max(worst, abs(numeric - analytic) / scale)
    return worst
