"""Unit-norm filters: ``W_k = U_k / ||U_k||`` over each neuron's fan-in (the last axis)."""

from __future__ import annotations

from .backend import array_module


def unit_rows(raw):
    """Return ``(W, norms)`` with each filter (last axis) of ``raw`` scaled to unit length."""
    xp = array_module(raw)
    norms = xp.sqrt((raw * raw).sum(axis=-1, keepdims=True))
    return raw / norms, norms


def unit_rows_backward(grad_unit, unit, norms):
    """Gradient with respect to ``U`` given the gradient with respect to ``W = U/||U||``."""
    radial = (grad_unit * unit).sum(axis=-1, keepdims=True)
    return (grad_unit - unit * radial) / norms
