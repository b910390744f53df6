"""The ``DASKSAE_*`` environment switches: their values, defaults, and one check of them all.

Each module reads its switch when it is imported (:func:`switch`;
``DASKSAE_GEMM`` is read again at each product, so that tests can switch
it); a value that is not one of the switch's choices is refused with one sentence
naming the switch, its choices and its default.  ``dasksae`` (the CLI)
checks every switch before it does anything (:func:`check_environment`), so
a typo is one line and exit status 2, not a traceback from an import.
"""

from __future__ import annotations

import os

from .errors import DasksaeError

# name -> (choices, default); README.md "On the GPU" says what each does and what it measured
SWITCHES = {
    "DASKSAE_GEMM": (("simt", "cublas", "tuned", "search"), "simt"),
    "DASKSAE_SPMD_REPLAY": (("1", "0"), "1"),
    "DASKSAE_FUSED_CUTS": (("1", "0"), "1"),
    "DASKSAE_HALO_EVENTS": (("1", "0"), "1"),
    "DASKSAE_CUDA_GRAPHS": (("auto", "1", "0"), "auto"),
    "DASKSAE_GRAPH_CUTS": (("receipts", "messages"), "receipts"),
    "DASKSAE_RUN_AHEAD": (("2", "1", "0"), "2"),
    "DASKSAE_TASK_END": (("queue", "wait"), "queue"),
    "DASKSAE_UPDATE_STREAM": (("0", "1", "priority"), "0"),
    "DASKSAE_FUSED_ROW_DOTS": (("1", "0"), "1"),
    "DASKSAE_CODES_FROM_MAPS": (("1", "0"), "1"),
    "DASKSAE_WRITE_ONCE": (("1", "0"), "1"),
    "DASKSAE_DRIVER_LAUNCH": (("1", "0"), "1"),
    "DASKSAE_DRIVER_GIL": (("release", "hold"), "release"),
    "DASKSAE_OUTBOXES": (("1", "0"), "1"),
    "DASKSAE_OUTBOX_IN_PLACE": (("1", "0"), "1"),
    "DASKSAE_SEND_PLANS": (("0", "1"), "0"),
    "DASKSAE_ONE_LAUNCHER": (("1", "0"), "1"),
    "DASKSAE_GC_FREEZE": (("auto", "1", "0"), "auto"),
    "DASKSAE_IMPLICIT_FIELDS": (("1", "0"), "1"),
    "DASKSAE_IMPLICIT_BACKWARD": (("1", "0"), "1"),
    "DASKSAE_SMEM_SWIZZLE": (("1", "0"), "1"),
    "DASKSAE_FUSED_UPDATE": (("1", "0"), "1"),
    "DASKSAE_UPDATE_PREFETCH": (("0", "1"), "0"),
    "DASKSAE_WAVE_CHUNKS": (("0", "1"), "0"),
    "DASKSAE_UPDATE_STAGING": (("first-stage", "1", "after-loads", "0"), "first-stage"),
    "DASKSAE_TENSOR_CORE_UPDATE": (("1", "0"), "1"),
    "DASKSAE_SPLIT_MASTER": (("0", "1"), "0"),
    "DASKSAE_FLOAT32_WGMMA_UPDATE": (("auto", "1", "0"), "auto"),
    "DASKSAE_FLOAT32_WGMMA_FORWARD": (("auto", "1", "0", "w32-split-2", "w32-a-registers-hoisted"), "auto"),
    "DASKSAE_FLOAT32_WGMMA_TRANSPOSE": (("auto", "1", "all", "0", "w32-split-2", "w32-a-registers-hoisted"), "auto"),
    "DASKSAE_MMA_EPILOGUE": (("auto", "rows", "rows-wide", "fragments", "rows-144", "rows-overlap"), "auto"),
    "DASKSAE_UPDATE_CACHE_HINTS": (("0", "1"), "0"),
    "DASKSAE_TENSOR_CORE_FORWARD": (("auto", "1", "0"), "auto"),
    "DASKSAE_WGMMA_FORWARD": (("1", "0", "w64x3-swizzled", "w64x4-swizzled", "w64x3-half"), "1"),
    "DASKSAE_WGMMA_TARGET": (("ptx", "cubin"), "ptx"),
    "DASKSAE_WGMMA_TRANSPOSE": (("1", "0", "w64x3-swizzled", "w64x3-pairs"), "1"),
    "DASKSAE_WGMMA_UPDATE": (("1", "0", "rows-wide-wgmma", "rows-bulk-raw-wgmma", "rows-bulk-wgmma", "rows-wide-wgmma-192"),
                             "1"),
    "DASKSAE_TENSOR_CORE_TRANSPOSE": (("auto", "1", "0"), "auto"),
    "DASKSAE_TENSOR_CORE_TRANSPOSE_TILES": (("k64x3", "k32x4"), "k64x3"),
    "DASKSAE_MMA_GEOMETRY": (("1", "0"), "1"),
    "DASKSAE_MMA_LDMATRIX": (("0", "1"), "0"),
    "DASKSAE_FLOAT32_TENSOR_CORES": (("1", "0"), "1"),
    "DASKSAE_TF32_TENSOR_CORES": (("0", "1"), "1"),
    "DASKSAE_WHOLE_PRODUCTS": (("0", "1"), "0"),
}


class SwitchError(DasksaeError, ValueError):
    """An environment switch set to a value it does not take."""


def _listed(choices) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def switch(name: str) -> str:
    """The value of switch ``name`` in this process's environment (its default if unset)."""
    choices, default = SWITCHES[name]
    value = os.environ.get(name, default)
    if value not in choices:
        raise SwitchError(f"{name} must be {_listed(choices)}, got {value!r}; unset it for the default ({default}).")
    return value


def check_environment() -> None:
    """Refuse the first switch whose value is not one of its choices."""
    for name in SWITCHES:
        switch(name)


def current() -> dict:
    """Every switch's value in this process (its default where unset): what a worker reports to the client."""
    return {name: switch(name) for name in SWITCHES}


def not_at_default(values: dict) -> dict:
    """The switches of ``values`` that are not at their defaults."""
    return {name: value for name, value in values.items() if value != SWITCHES[name][1]}


def agreed(by_worker: dict) -> dict:
    """The switches every worker of ``by_worker`` (address -> :func:`current`) runs with; one sentence naming the
    first switch they disagree on, and where, if they do not (their SPMD programs would differ)."""
    reports = list(by_worker.items())
    first_address, first = reports[0]
    for address, values in reports[1:]:
        for name in SWITCHES:
            if values.get(name) != first.get(name):
                raise SwitchError(f"the workers disagree on {name} ({first.get(name)} on {first_address}, "
                                  f"{values.get(name)} on {address}); start them with the same environment.")
    return first
