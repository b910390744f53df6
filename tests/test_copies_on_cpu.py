"""The strip kernels' CUDA source (``dasksae/kernels/copies.py``: halo windows assembled and summed on the GPU), run
on the CPU under g++: each CUDA thread of the grid in turn, the strips' fields taken from NumPy views by
:func:`~dasksae.kernels.copies.strip_layout` as the launch takes them from CuPy's.  Skipped without g++."""

import ctypes
import shutil
import subprocess

import numpy
import pytest

from dasksae.kernels import copies

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

SHIM = r"""
#include <cstddef>
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct Index { unsigned x, y, z; };
static Index threadIdx, blockIdx, gridDim, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
"""


@pytest.fixture(scope="module")
def strip_kernels(tmp_path_factory):
    """``run(add, arguments, grid_x, strips)``: the grid's threads one after another."""
    folder = tmp_path_factory.mktemp("strips")
    count = copies.STRIP_FIELDS * copies.STRIPS_A_LAUNCH
    arguments = ", ".join(f"a[{i}]" for i in range(count))
    runner = r"""
extern "C" void run(int add, const unsigned long long* a, unsigned grid_x, unsigned grid_y)
{
    gridDim = {grid_x, grid_y, 1};
    blockDim = {256, 1, 1};
    for (unsigned y = 0; y < grid_y; ++y)
        for (unsigned x = 0; x < grid_x; ++x)
            for (unsigned t = 0; t < 256; ++t) {
                blockIdx = {x, y, 0};
                threadIdx = {t, 0, 0};
                if (add) dasksae_add_strips_float32(""" + arguments + r""");
                else dasksae_copy_strips(""" + arguments + r""");
            }
}
"""
    source = folder / "strips.cpp"
    source.write_text(SHIM + copies.copy_strips_source() + runner)
    library = folder / "strips.so"
    subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    kernels = ctypes.CDLL(str(library))

    def run(add, pairs, grid_x):
        fields = []
        for source, destination in pairs:
            s, d = copies.strip_layout(source), copies.strip_layout(destination)
            assert s[1:3] == d[1:3]
            fields += [s[0], d[0], s[1], s[2], s[3], d[3]]
        fields += [0] * (count - len(fields))
        kernels.run(int(add), (ctypes.c_ulonglong * count)(*fields), grid_x, len(pairs))

    return run


def test_strips_of_halo_windows_are_copied_and_added_as_numpy_does(strip_kernels, rng=numpy.random.default_rng(5)):
    """Halo-like views (rows of contiguous (cols, C, M) values at a map's pitch, 16-byte aligned) copied into and
    added onto a window's views; a strip whose rows are not 16-byte multiples (one byte a thread, one float for the
    add); a grid smaller than the work (threads loop); nothing outside the destinations written."""
    source_map = rng.standard_normal((9, 11, 3, 8)).astype(numpy.float32)
    odd_map = rng.standard_normal((5, 7, 3)).astype(numpy.float32)  # rows of 12 bytes a position: not 16-multiples
    for add in (False, True):
        window = rng.standard_normal((6, 8, 3, 8)).astype(numpy.float32)
        odd_window = rng.standard_normal((4, 6, 3)).astype(numpy.float32)
        expected, odd_expected = window.copy(), odd_window.copy()
        pairs = [(source_map[2:6, 3:7], window[0:4, 0:4]), (source_map[0:2, 1:9], window[4:6, 0:8]),
                 (source_map[5:9, 0:4], window[0:4, 4:8]), (odd_map[1:4, 2:5], odd_window[0:3, 1:4])]
        for (source, _), target in zip(pairs, [expected[0:4, 0:4], expected[4:6, 0:8], expected[0:4, 4:8],
                                               odd_expected[0:3, 1:4]]):
            if add:
                target += source
            else:
                target[...] = source
        strip_kernels(add, pairs, grid_x=1)
        numpy.testing.assert_array_equal(window, expected)
        numpy.testing.assert_array_equal(odd_window, odd_expected)


def test_strips_of_rows_longer_than_a_blocks_chunk_are_copied_whole(strip_kernels, rng=numpy.random.default_rng(6)):
    """Rows of 20 KiB (a map's rows of 40 positions of 16 x 8 float32 values): each row in two chunks of a block's
    16 KiB (the second short), by a grid of 3 blocks over the 8 chunks of 4 rows; copied, then added."""
    source_map = rng.standard_normal((6, 50, 16, 8)).astype(numpy.float32)
    assert copies.strip_layout(source_map[1:5, 5:45])[2] == 20480 > copies.STRIP_CHUNK
    for add in (False, True):
        window = rng.standard_normal((4, 44, 16, 8)).astype(numpy.float32)
        expected = window.copy()
        if add:
            expected[:, 2:42] += source_map[1:5, 5:45]
        else:
            expected[:, 2:42] = source_map[1:5, 5:45]
        strip_kernels(add, [(source_map[1:5, 5:45], window[:, 2:42])], grid_x=3)
        numpy.testing.assert_array_equal(window, expected)


def test_strip_layout_takes_views_with_contiguous_rows_only():
    """Views with contiguous rows at one pitch are strips; a view strided inside its rows is not (the caller copies
    it by the array module); one row is its own pitch."""
    whole = numpy.zeros((6, 5, 3, 4), dtype=numpy.float32)
    assert copies.strip_layout(whole[1:4, 2:5])[1:] == (3, 3 * 3 * 4 * 4, 5 * 3 * 4 * 4)
    assert copies.strip_layout(whole[2:3, 1:4])[1:] == (1, 3 * 3 * 4 * 4, 3 * 3 * 4 * 4)
    assert copies.strip_layout(whole[:, :, 1:]) is None
    assert copies.strip_layout(whole[:, ::2]) is None
    assert copies.strip_layout(whole[:0]) is None
