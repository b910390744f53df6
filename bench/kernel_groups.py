"""Kernel tables side by side, summed by what the kernels do (from ``bench/kernel_table.py``'s JSON; no GPU needed).

    python bench/kernel_groups.py bench/results/session12/diag/kernel-table-coates200-bfloat16-1w.json \
        bench/results/session13/table4w/kernel-table-coates200-bfloat16-4w.json

Each kernel name goes to the first group whose pattern it contains
(:data:`GROUPS`, in order); the GPU's busy time, kernel time and kernels a
step close the table.  Columns are the files, in the order given.
"""

from __future__ import annotations

import argparse
import json

# group -> substrings of kernel names (lower case); first match wins
GROUPS = [
    ("update", ("sgd",)),
    ("GEMMs", ("gemm", "nvjet", "xmma")),
    ("gathers + folds", ("gather_fields", "fold_patches")),
    ("LCN and pooling", ("lcn", "pool")),
    ("CuPy copies (copy__...)", ("copy__", "memcpy")),
    ("CuPy adds (add__...)", ("add__",)),
    ("message copies and memsets", ("copy_segments", "memset")),
]
OTHER = "other"


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, patterns in GROUPS:
        if any(pattern in lowered for pattern in patterns):
            return group
    return OTHER


def grouped(table: dict) -> dict:
    """``{group: (seconds a step, calls a step)}`` of one kernel table's JSON."""
    sums = {group: [0.0, 0] for group, _ in GROUPS + [(OTHER, ())]}
    for name, entry in table["kernels"].items():
        sums[group_of(name)][0] += entry["seconds"]
        sums[group_of(name)][1] += entry["calls"]
    return {group: tuple(value) for group, value in sums.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", help="JSON files written by bench/kernel_table.py --json")
    args = parser.parse_args(argv)
    tables = []
    for path in args.tables:
        with open(path) as f:
            tables.append(json.load(f))
    labels = [f"{t['config']} {t['dtype']} {t['tiles']}" + (f" {t['workers']}w" if t.get("workers") else "") for t in tables]
    groups = [grouped(t) for t in tables]
    width = max(len(label) for label in labels) + 2
    print(f"{'ms a step (calls)':30}" + "".join(f"{label:>{width}}" for label in labels))
    for group, _ in GROUPS + [(OTHER, ())]:
        cells = [f"{g[group][0] * 1e3:.2f} ({g[group][1]})" for g in groups]
        print(f"{group:30}" + "".join(f"{cell:>{width}}" for cell in cells))
    for key, label in (("kernel_seconds", "kernels"), ("busy_seconds", "GPU busy"), ("wall_seconds", "wall (profiled)")):
        print(f"{label:30}" + "".join(f"{t[key] * 1e3:>{width}.2f}" for t in tables))
    print(f"{'kernels a step':30}" + "".join(f"{sum(g[k][1] for k in g):>{width}}" for g in groups))


if __name__ == "__main__":
    main()
