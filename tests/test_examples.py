"""The examples README points to run as they are, and print what they say they do."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_train_on_a_cluster_trains_saves_and_reloads_on_another_tiling(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "train_on_a_cluster.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in lines if line.startswith("step ")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any(line.startswith("stage 1 filters (14, 14, 16, 36) in (2, 2) tile chunks") for line in lines)
    assert lines[-1] == "reloaded on 1x2 tiles from step-000020; top-stage output (14, 14, 4, 16)"
