"""The 4 worker threads' rows of bench/gpu_step.py JSONs side by side, each against the in-process step of its
own process, with the spread: the row varies between processes more than most levers move it.

    python bench/four_rows.py bench/results/session14/*/gpu-step-4w-*.json

Prints one line a file (folder/label, the 4-thread step, the in-process step, their ratio, the step inside a
tile's task) sorted by ratio, then the median, the range, and how many rows are within 1.25x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics


def rows_of(path: str) -> list[dict]:
    with open(path) as file:
        rows = json.load(file)["rows"]
    label = os.path.basename(os.path.dirname(path)) + "/" + os.path.basename(path).split("-4w-", 1)[-1].removesuffix(".json")
    in_process = {row["precision"]: row["step_seconds"] for row in rows if row["mode"] == "in-process"}
    found = []
    for row in rows:
        if "threads" in row["mode"] and row["precision"] in in_process:
            found.append({"label": label, "dtype": row["precision"], "step": row["step_seconds"],
                          "in_process": in_process[row["precision"]], "in_task": row.get("in_task_seconds"),
                          "ratio": row["step_seconds"] / in_process[row["precision"]]})
    return found


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--target", type=float, default=1.25)
    args = parser.parse_args(argv)
    rows = sorted((row for path in args.paths for row in rows_of(path)), key=lambda row: row["ratio"])
    print(f"{'row':34s} {'dtype':9s} {'4 threads':>10s} {'in-process':>11s} {'ratio':>6s} {'in task':>8s}")
    for row in rows:
        in_task = f"{1e3 * row['in_task']:.1f}" if row["in_task"] else ""
        print(f"{row['label']:34s} {row['dtype']:9s} {1e3 * row['step']:8.1f}ms {1e3 * row['in_process']:9.1f}ms "
              f"{row['ratio']:5.2f}x {in_task:>8s}")
    if rows:
        ratios = [row["ratio"] for row in rows]
        within = sum(ratio <= args.target for ratio in ratios)
        print(f"{len(rows)} rows: median {statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f}x; "
              f"{within} within {args.target:.2f}x")
    return rows


if __name__ == "__main__":
    main()
