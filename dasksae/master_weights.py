"""Float32 master weights kept as two 16-bit halves: the bfloat16 operand the products read, and the rest.

In bfloat16 a tile's state held the float32 weights ``U`` and, beside them,
their bfloat16 copy for the next step's products, which the update wrote
(18 bytes a parameter of update traffic: ``U`` and its momentum read and
written, the copy written).  The copy is ``U``'s top 16 bits, rounded.  So
the state may keep ``U`` as that copy (``high``) and a 16-bit ``low`` half
from which ``U`` is exactly ``high``'s bits shifted up plus ``low`` as a
signed number: the update then reads and writes ``high`` and ``low``
(4 bytes a weight) in place of ``U`` and writes no copy, 16 bytes a
parameter, and the state holds 8 bytes a parameter where it held 10.  The
master weights are still float32: every bit of ``U`` is kept, and the step
is the same arithmetic on the same float32 values.

``high`` is ``U`` rounded to bfloat16 to nearest with ties away from zero.
Round to nearest even would leave ``low`` one value short: with ties to
even, each even bfloat16 value is the rounding of 65,537 float32 values and
each odd one of 65,535, and 16 bits tell apart 65,536.  With ties away from
zero each bfloat16 value is the rounding of exactly ``2^16`` float32 values,
those whose bits lie in ``[high - 2^15, high + 2^15)``: ``low`` is that
offset as a 16-bit two's-complement number.  The two roundings differ only
on exact ties (``U``'s low 16 bits ``0x8000``), by one bfloat16 step in
magnitude; the error bound (half a step) is the same.

On CuPy ``high`` is ``uint16`` bits (the storage the tensor-core kernels
read, :func:`~dasksae.kernels.gemm.storage_dtype`); on NumPy, whose
bfloat16 operands are float32 values of bfloat16 precision, it is those
float32 values, so that one code path serves both.  ``low`` is ``uint16``
on both.

In a tile's state (``DASKSAE_SPLIT_MASTER=1``; off by default, see :data:`SPLIT_MASTER`; in bfloat16,
RICA's tied weights) the halves ``encoder_high`` and ``encoder_low`` replace
``encoder`` and its derived bfloat16 copy ``_encoder_operand_bfloat16``; the
forward pass reads ``encoder_high`` as the products' operand.
:func:`split_state` makes that form, :func:`master` reads ``U``
from either form, :func:`master_rows` lends rows of ``U`` as float32 to
code that steps them in place, and :func:`exported` gives the state with
``encoder`` whole, for whatever leaves the step (checkpoints, gathers,
:meth:`~dasksae.tiled_network.TiledNetwork.weights`).
"""

from __future__ import annotations

import contextlib

import numpy

from .kernels.backend import array_module
from .switches import switch

# "1": in bfloat16 a tile's float32 weights kept as their bfloat16 operand and a low half (this module); "0" (the
# default): as a float32 array beside a bfloat16 copy.  On an H100 (session 47, bench/results/session47/split/) the
# update's kernel on the halves took coates200's stages in 11.96 ms against 11.43 on the whole weights, though it moves
# 16 bytes a parameter to their 18, and the in-process bfloat16 step 22.6 ms against 21.9-22.3
SPLIT_MASTER = switch("DASKSAE_SPLIT_MASTER") == "1"

LOW = "encoder_low"
HIGH = "encoder_high"  # the products' bfloat16 operand (tile_ops reads it in place of the derived copy)
DERIVED_COPY = "_encoder_operand_bfloat16"  # the copy an unsplit state keeps beside encoder


CHUNK_VALUES = 1 << 22  # values a pass of split and join: their temporaries stay within 16 MB a pass


def split(raw, high=None, low=None):
    """``(high, low)`` of float32 ``raw`` (any array module), written into ``high`` and ``low`` where given
    (C-contiguous arrays of ``raw``'s shape).

    ``high``: ``raw`` rounded to bfloat16, ties away from zero (``uint16``
    bits on CuPy, float32 values on NumPy); ``low``: ``uint16``, the offset of
    ``raw``'s bits from ``high``'s as a signed 16-bit number.  :func:`join`
    gives back ``raw`` bit for bit (every float32 value but NaNs whose
    rounding would carry past the sign bit).  A pass takes
    :data:`CHUNK_VALUES` values, so that splitting a stage's weights does not
    hold several times their bytes in temporaries."""
    xp = array_module(raw)
    if raw.dtype != numpy.float32:
        raise TypeError(f"split takes float32 weights, not {raw.dtype}")
    high = _output(xp, high, raw.shape, numpy.float32 if xp is numpy else numpy.uint16)
    low = _output(xp, low, raw.shape, numpy.uint16)
    bits_all, high_all, low_all = xp.ascontiguousarray(raw).reshape(-1).view(xp.uint32), high.reshape(-1), low.reshape(-1)
    for start in range(0, bits_all.size, CHUNK_VALUES):
        part = slice(start, start + CHUNK_VALUES)
        bits = bits_all[part]
        rounded = (bits + xp.uint32(0x8000)) & xp.uint32(0xFFFF0000)
        low_all[part] = (bits - rounded).view(xp.int32).astype(xp.int16).view(xp.uint16)  # in [-2^15, 2^15): exact
        high_all[part] = rounded.view(xp.float32) if xp is numpy else (rounded >> 16).astype(xp.uint16)
    return high, low


def join(high, low, out=None):
    """The float32 weights whose :func:`split` is ``(high, low)`` (into ``out`` where given: a C-contiguous float32
    array of their shape), :data:`CHUNK_VALUES` values a pass."""
    xp = array_module(high, low)
    out = _output(xp, out, high.shape, numpy.float32)
    high_all = xp.ascontiguousarray(high).reshape(-1)
    low_all, out_all = xp.ascontiguousarray(low).reshape(-1), out.reshape(-1).view(xp.uint32)
    as_values = high.dtype == numpy.float32  # NumPy's operand: bfloat16 values as float32, the low bits zero
    for start in range(0, out_all.size, CHUNK_VALUES):
        part = slice(start, start + CHUNK_VALUES)
        top = high_all[part].view(xp.uint32) if as_values else high_all[part].astype(xp.uint32) << 16
        out_all[part] = top + low_all[part].view(xp.int16).astype(xp.int32).view(xp.uint32)  # adds the signed offset
    return out


def _output(xp, array, shape, dtype):
    """``array``, checked to be C-contiguous of ``shape`` and ``dtype`` (written through a flat view), or a new one."""
    if array is None:
        return xp.empty(shape, dtype=dtype)
    if tuple(array.shape) != tuple(shape) or array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(f"an output of split or join must be a C-contiguous {numpy.dtype(dtype).name} array of shape "
                         f"{tuple(shape)}, not {array.dtype} {tuple(array.shape)}")
    return array


def splits(state: dict, precision: str) -> bool:
    """Whether this tile state's weights are to be kept split: bfloat16, the switch on, a tied encoder (RICA)."""
    return SPLIT_MASTER and precision == "bfloat16" and "decoder" not in state


def is_split(state: dict) -> bool:
    """Whether ``state`` holds its weights as halves (:data:`LOW` and :data:`HIGH`) instead of ``encoder``."""
    return LOW in state


def split_state(state: dict) -> None:
    """Replace ``state``'s float32 ``encoder`` and its bfloat16 copy by the halves, in place (the copy's array, where
    the state has one of the right shape, rewritten as the high half)."""
    raw = state.pop("encoder")
    high = state.pop(DERIVED_COPY, None)
    if high is None or high.shape != raw.shape:
        high = None
    state[HIGH], state[LOW] = split(raw, high)


def operand_of(state: dict, precision: str):
    """The products' operand in ``precision`` that the state holds: the high half of split weights in bfloat16, else
    the derived copy an update left (``None`` where there is none)."""
    if is_split(state) and precision == "bfloat16":
        return state[HIGH]
    return state.get(f"_encoder_operand_{precision}")


def master(state: dict):
    """The state's float32 weights ``U``: ``encoder``, or joined from the halves (a new array)."""
    if is_split(state):
        return join(state[HIGH], state[LOW])
    return state["encoder"]


def weights_shape(state: dict) -> tuple:
    """The shape of the state's weights, in either form."""
    return tuple((state[LOW] if is_split(state) else state["encoder"]).shape)


def weights_module(state: dict):
    """The array module (NumPy or CuPy) of the state's weights."""
    return array_module(state[LOW] if is_split(state) else state["encoder"])


@contextlib.contextmanager
def master_rows(state: dict, start: int, stop: int):
    """Rows ``start:stop`` (of the first axis) of ``U`` as float32 to step in place: the state's own rows, or, where
    it is split, their join, split back into the halves on leaving (also when what stepped them wrote the operand:
    the halves' rounding then replaces its)."""
    if not is_split(state):
        yield state["encoder"][start:stop]
        return
    high, low = state[HIGH][start:stop], state[LOW][start:stop]
    rows = join(high, low)
    yield rows
    split(rows, high, low)


def exported(state: dict) -> dict:
    """``state`` as it leaves the step: ``encoder`` whole (joined, where it is split) and the halves left out; the
    same dict where it is not split."""
    if not is_split(state):
        return state
    out = {name: value for name, value in state.items() if name not in (LOW, HIGH)}
    out["encoder"] = master(state)
    return out


def pick_entry(state: dict, name: str):
    """``state[name]``, with ``encoder`` joined where the state is split."""
    return master(state) if name == "encoder" else state[name]
