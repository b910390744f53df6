"""The fused elementwise passes' array code (NumPy), which the GPU kernels must equal (``tests/test_gpu.py``)."""

import numpy
import pytest

from dasksae.kernels.elementwise import difference_and_squares, subtract_scaled_into, sum_of_ratios


@pytest.fixture
def rng():
    return numpy.random.default_rng(0)


def test_difference_and_squares_is_the_error_and_its_float64_squared_norm(rng):
    a, b = rng.standard_normal((2, 5, 4, 3)).astype(numpy.float32)
    difference, squares = difference_and_squares(a, b)
    assert difference.dtype == numpy.float32
    numpy.testing.assert_array_equal(difference, a - b)
    assert squares.dtype == numpy.float64
    assert squares == pytest.approx(float(numpy.sum((a.astype(float) - b) ** 2)), rel=1e-6)


def test_sum_of_ratios_is_a_float64_sum(rng):
    a = rng.standard_normal(1000).astype(numpy.float32)
    b = rng.uniform(0.5, 2, 1000).astype(numpy.float32)
    total = sum_of_ratios(a, b)
    assert total.dtype == numpy.float64
    assert total == pytest.approx(float(numpy.sum(a.astype(float) / b)), rel=1e-6)


@pytest.mark.parametrize("with_grad", [True, False])
def test_subtract_scaled_into_writes_only_the_window(rng, with_grad):
    grad = rng.standard_normal((3, 4, 2)).astype(numpy.float32)
    error = rng.standard_normal((3, 4, 2)).astype(numpy.float32)
    out = numpy.zeros((6, 7, 2), numpy.float32)
    subtract_scaled_into(out[1:4, 2:6], grad if with_grad else None, error, 0.25)
    expected = numpy.zeros_like(out)
    expected[1:4, 2:6] = (grad if with_grad else 0) - 0.25 * error
    numpy.testing.assert_array_equal(out, expected)
