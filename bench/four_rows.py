"""The 4 worker threads' rows of bench/gpu_step.py JSONs side by side, each against the in-process step of its
own process, with the spread: the row varies between processes more than most levers move it.

    python bench/four_rows.py bench/results/session14/*/gpu-step-4w-*.json

Prints one line a file (folder/label, the 4-thread step, the in-process step, their ratio, the step inside a
tile's task; and where the row has them, a thread's wait for messages a step, its involuntary context switches a
step, and the share of the host's CPU time the hypervisor stole) sorted by ratio, then the median, the range, and
how many rows are within 1.25x.
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
            waits = row.get("host_waits") or {}
            found.append({"label": label, "dtype": row["precision"], "step": row["step_seconds"],
                          "in_process": in_process[row["precision"]], "in_task": row.get("in_task_seconds"),
                          "ratio": row["step_seconds"] / in_process[row["precision"]],
                          "messages": waits.get("messages_seconds"),
                          "involuntary": (waits.get("context_switches_a_step") or {}).get("involuntary"),
                          "steal": (row.get("host_cpu") or {}).get("steal")})
    return found


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--target", type=float, default=1.25)
    args = parser.parse_args(argv)
    rows = sorted((row for path in args.paths for row in rows_of(path)), key=lambda row: row["ratio"])
    print(f"{'row':34s} {'dtype':9s} {'4 threads':>10s} {'in-process':>11s} {'ratio':>6s} {'in task':>8s} "
          f"{'msg wait':>8s} {'preempted':>9s} {'stolen':>7s}")

    def shown(value, scale, form, unit=""):
        return "" if value is None else format(scale * value, form) + unit

    for row in rows:
        print(f"{row['label']:34s} {row['dtype']:9s} {1e3 * row['step']:8.1f}ms {1e3 * row['in_process']:9.1f}ms "
              f"{row['ratio']:5.2f}x {shown(row['in_task'], 1e3, '.1f'):>8s} {shown(row['messages'], 1e3, '.1f'):>8s} "
              f"{shown(row['involuntary'], 1, '.1f'):>9s} {shown(row['steal'], 100, '.2f', '%'):>7s}")
    if rows:
        ratios = [row["ratio"] for row in rows]
        within = sum(ratio <= args.target for ratio in ratios)
        print(f"{len(rows)} rows: median {statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f}x; "
              f"{within} within {args.target:.2f}x")
    return rows


if __name__ == "__main__":
    main()
