"""Per-block math on NumPy or CuPy arrays.  No Dask in here."""

from .backend import array_module, to_numpy
from .contrast import lcn_backward, lcn_forward, lcn_halo
from .local_filter import (
    block_counts,
    fold_patches,
    gather_patches,
    local_filter_forward,
    local_filter_transpose,
    local_filter_weight_grad,
)
from .normalize import unit_rows, unit_rows_backward
from .pooling import l2_pool_backward, l2_pool_forward, pooled_size, window_sum, window_sum_transpose

__all__ = [
    "array_module",
    "to_numpy",
    "block_counts",
    "gather_patches",
    "fold_patches",
    "local_filter_forward",
    "local_filter_transpose",
    "local_filter_weight_grad",
    "pooled_size",
    "window_sum",
    "window_sum_transpose",
    "l2_pool_forward",
    "l2_pool_backward",
    "lcn_forward",
    "lcn_backward",
    "lcn_halo",
    "unit_rows",
    "unit_rows_backward",
]
