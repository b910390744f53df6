"""``dasksae train``'s step time at several ``--steps-per-task``, each run a process of its own, in turn.

    python bench/steps_per_task.py --values 1,10 --rounds 2 --json out.json
    python bench/steps_per_task.py -- --gpu --config coates200 --tiles 1x1 --minibatch 96 --dtype bfloat16

Runs ``dasksae train`` (default: ``tiny`` on 2x2 tiles over 4 worker threads, M=32, 300 steps) once per value and
round, and prints the median and mean step (from the run's ``metrics.jsonl``, where groups are queued back to back)
and the last step's loss, which must not depend on the value.  Arguments after ``--`` replace the default ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = ["--config", "tiny", "--tiles", "2x2", "--workers", "4", "--worker-threads", "--minibatch", "32",
           "--steps", "300"]


def one_run(value: int, extra: list, folder: Path) -> dict:
    out = folder / f"k{value}"
    subprocess.run([sys.executable, "-m", "dasksae.cli", "train", *extra, "--steps-per-task", str(value),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records]
    return {"steps_per_task": value, "steps": len(records), "median_ms": 1e3 * statistics.median(seconds),
            "mean_ms": 1e3 * statistics.fmean(seconds), "last_loss": records[-1]["loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--values", default="1,10", help="--steps-per-task values, comma-separated (default 1,10)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("train", nargs=argparse.REMAINDER, help="after --: dasksae train's arguments")
    args = parser.parse_args()
    extra = [a for a in args.train if a != "--"] or DEFAULT
    print(f"dasksae train {' '.join(extra)}")
    print(f"{'steps/task':>10} {'median ms':>10} {'mean ms':>8} {'last loss':>12}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for value in (int(v) for v in args.values.split(",")):
                row = one_run(value, extra, Path(folder) / f"round{round_}")
                rows.append(row)
                print(f"{value:>10} {row['median_ms']:>10.1f} {row['mean_ms']:>8.1f} {row['last_loss']:>12.6g}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"train": extra, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
