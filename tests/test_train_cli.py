"""`dasksae train` over tiles on a local cluster, checkpoints and resume, and refusals of bad input."""

import json
import shutil
import time

import pytest

pytest.importorskip("distributed")

from dasksae.checkpoint import checkpoints_in, describe, latest  # noqa: E402
from dasksae.cli import main  # noqa: E402

TRAIN = ["train", "--config", "tiny", "--tiles", "2x2", "--workers", "4", "--minibatch", "8"]


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory):
    """50 steps straight, and 25 steps then --resume to 50, from the same seed."""
    root = tmp_path_factory.mktemp("runs")
    straight, resumed = root / "straight", root / "resumed"
    assert main(TRAIN + ["--steps", "50", "--out", str(straight), "--checkpoint-every", "20"]) == 0
    assert main(TRAIN + ["--steps", "25", "--out", str(resumed)]) == 0
    assert main(TRAIN + ["--steps", "50", "--out", str(resumed), "--resume"]) == 0
    return straight, resumed


def test_training_finishes_and_the_loss_falls(straight_and_resumed):
    straight, _ = straight_and_resumed
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 51))
    assert all({"step", "loss", "seconds", "tasks", "critical_path"} <= set(r) for r in records)
    first = sum(r["loss"] for r in records[:10]) / 10
    last = sum(r["loss"] for r in records[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    assert [p.name for p in checkpoints_in(straight / "checkpoints")] == ["step-000020", "step-000040", "step-000050"]


def test_resume_gives_the_same_digest_as_training_straight(straight_and_resumed, capsys):
    straight, resumed = straight_and_resumed
    a, b = describe(straight / "checkpoints"), describe(resumed / "checkpoints")
    assert a["step"] == b["step"] == 50
    assert a["digest"] == b["digest"]
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 51))
    code, out, _ = run(capsys, "inspect", str(resumed / "checkpoints"), "--json")
    assert code == 0 and json.loads(out)["digest"] == a["digest"]
    assert len(json.loads(out)["layers"]) == 3


def one_line_error(capsys, *args, match):
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    return lines[0]


def test_bad_tilings_are_refused(capsys, tmp_path):
    one_line_error(capsys, *TRAIN[:4], "15x1", "--out", str(tmp_path / "a"), match="do not fit stage 1")
    one_line_error(capsys, *TRAIN[:4], "2x2", "--workers", "3",
                   match="2x2 tiles need 4 workers but --workers is 3; use at most 3 tiles or more workers.")
    one_line_error(capsys, *TRAIN[:4], "2x2", "--workers", "1",
                   match="2x2 tiles need 4 workers but --workers is 1; use --tiles 1x1 or more workers.")
    one_line_error(capsys, *TRAIN[:4], "2x2", "--workers-per-gpu", "2",
                   match="2x2 tiles need 4 workers but --workers-per-gpu is 2; give --workers-per-gpu 4 or use at most 2 tiles")


@pytest.mark.parametrize("single_process", [False, True])
def test_a_learning_rate_or_momentum_that_cannot_train_is_refused_before_anything_starts(capsys, tmp_path,
                                                                                           single_process):
    extra = ["--single-process"] if single_process else []
    for option, value, match in (("--lr", "-1e-3", "the learning rate (--lr) must be a positive number, got -0.001"),
                                 ("--lr", "nan", "the learning rate (--lr) must be a positive number, got nan"),
                                 ("--momentum", "1", "the momentum (--momentum) must be at least 0 and below 1, got 1.0")):
        out = tmp_path / f"{option}{value}"
        started = time.perf_counter()
        one_line_error(capsys, *TRAIN, *extra, "--steps", "1", f"{option}={value}", "--out", str(out), match=match)
        assert not out.exists()  # refused before the output folder was made (and before any cluster started)
        assert time.perf_counter() - started < 5


@pytest.mark.parametrize("single_process", [False, True])
def test_a_diverging_run_stops_at_its_first_nan_loss_and_keeps_its_last_checkpoint(capsys, tmp_path, single_process):
    out = tmp_path / "run"
    where = ["--single-process"] if single_process else ["--tiles", "2x1", "--workers", "2", "--worker-threads",
                                                           "--checkpoint-every", "1"]
    code, _, err = run(capsys, "train", "--config", "tiny", "--minibatch", "4", "--lr", "1e6", "--steps", "30",
                       "--out", str(out), *where)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert "the loss was nan at step" in last and "so training stopped there" in last, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] != records[-1]["loss"] and len(records) < 30  # stopped at the first NaN
    assert all(r["loss"] == r["loss"] for r in records[:-1])
    if single_process:
        assert "no checkpoint was written" in last
    else:  # every finite step was checkpointed, the NaN one not, and the message names the one to resume from
        kept = latest(out / "checkpoints")
        assert kept.name == f"step-{len(records) - 1:06d}" and f"the last checkpoint, {kept}, is untouched" in last
        assert describe(out / "checkpoints")["step"] == len(records) - 1


def test_a_tile_that_runs_out_of_memory_is_told_in_one_line_with_the_plan(capsys, tmp_path, monkeypatch):
    """A real cluster of worker threads; the first tile to pool fails as CuPy's allocator does when the GPU is full."""
    import threading

    from dasksae import tile_ops

    pool_forward, lock, failed = tile_ops.pool_forward, threading.Lock(), []

    def runs_out(*args, **kwargs):
        with lock:
            if not failed:
                failed.append(threading.current_thread().name)
                raise MemoryError("Out of memory allocating 1,073,741,824 bytes (allocated so far: 0 bytes).")
        return pool_forward(*args, **kwargs)

    monkeypatch.setattr(tile_ops, "pool_forward", runs_out)
    code, _, err = run(capsys, "train", "--config", "tiny", "--tiles", "2x1", "--workers", "2", "--worker-threads",
                       "--minibatch", "4", "--steps", "3", "--out", str(tmp_path / "run"))
    assert code == 2 and failed
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err, err
    assert last.startswith("dasksae: error: training tiny on 2x1 tiles at minibatch 4 (float32) ran out of memory (")
    assert "Out of memory allocating 1,073,741,824 bytes" in last
    assert "a step plans about" in last and "dasksae info tiny --minibatch 4 --dtype float32 --tiles 2x1" in last


def test_what_counts_as_running_out_of_memory():
    from dasksae.spmd import NeighbourFailed
    from dasksae.train import OutOfMemory, is_out_of_memory

    assert is_out_of_memory(MemoryError("x")) and issubclass(OutOfMemory, MemoryError)
    assert is_out_of_memory(NeighbourFailed("tile (0, 1) on tcp://a:1 failed: OutOfMemoryError: Out of memory"))
    assert not is_out_of_memory(NeighbourFailed("tile (0, 1) on tcp://a:1 failed: ValueError: shapes"))
    assert not is_out_of_memory(RuntimeError("MemoryError: not from a tile"))


def test_the_network_refuses_a_learning_rate_that_cannot_train_and_keeps_its_state():
    import numpy

    from dasksae import TiledNetwork, named_config
    from dasksae.errors import ConfigError
    from dasksae.tile_array import LocalExecutor

    config = named_config("tiny")
    network = TiledNetwork(config, "2x1", executor=LocalExecutor(), seed=0, dtype="float64")
    x = numpy.random.default_rng(0).standard_normal((*config.input_shape, 2))
    before = network.parameters()
    for lr, momentum in ((-1e-3, 0.9), (1e-3, 1.5), (float("inf"), 0.9)):
        with pytest.raises(ConfigError, match="must be"):
            network.step(x, lr, momentum)
        with pytest.raises(ConfigError, match="must be"):
            network.submit_steps([x], lr, momentum)
    after = network.parameters()
    assert all(numpy.array_equal(before[k][name], after[k][name]) for k in range(len(before)) for name in before[k])
    network.step(x, 1e-3, 0.9)  # and still trains


def test_the_network_takes_a_config_by_name_or_file_and_refuses_anything_else(tmp_path):
    from dasksae import TiledNetwork, named_config
    from dasksae.errors import ConfigError
    from dasksae.tile_array import LocalExecutor

    config = named_config("tiny")
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config.to_dict()))
    for given in ("tiny", str(path), path):
        assert TiledNetwork(given, "2x1", executor=LocalExecutor(), seed=0).config == config
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        TiledNetwork("nope", executor=LocalExecutor())
    with pytest.raises(ConfigError, match="config must be a NetworkConfig, a config's name or a JSON file, got dict"):
        TiledNetwork(config.to_dict(), executor=LocalExecutor())


def test_a_scheduler_that_does_not_answer_is_refused_within_the_timeout(capsys):
    started = time.perf_counter()
    one_line_error(
        capsys, "train", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2", "--steps", "1",
        match="could not reach a Dask scheduler at tcp://127.0.0.1:9 within 2 s",
    )
    assert time.perf_counter() - started < 30


def test_an_unwritable_output_folder_is_refused(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line_error(capsys, *TRAIN, "--steps", "1", "--out", str(blocker / "run"), match="cannot write to output folder")


def test_resume_refuses_another_config_and_a_run_is_never_overwritten(straight_and_resumed, capsys):
    straight, _ = straight_and_resumed
    before = latest(straight / "checkpoints")
    one_line_error(capsys, "train", "--config", "small", "--tiles", "1x1", "--steps", "60", "--out", str(straight), "--resume",
                   match="was written for config 'tiny', not 'small'")
    one_line_error(capsys, *TRAIN, "--steps", "5", "--out", str(straight), match="already holds a run")
    assert latest(straight / "checkpoints") == before
    assert describe(before)["step"] == 50


def test_corrupt_and_half_written_checkpoints(straight_and_resumed, capsys, tmp_path):
    straight, _ = straight_and_resumed
    run_folder = tmp_path / "copy"
    shutil.copytree(straight, run_folder)
    checkpoints = run_folder / "checkpoints"
    # a half-written checkpoint (a run killed while saving) is invisible: LATEST still names step 50
    (checkpoints / ".step-000060.partial-deadbeef" / "stage1").mkdir(parents=True)
    assert latest(checkpoints).name == "step-000050"
    assert describe(checkpoints)["step"] == 50
    # damage one weight chunk of the latest: resuming is refused, naming the previous checkpoint ...
    chunk = next(p for p in sorted((checkpoints / "step-000050" / "stage2" / "encoder").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:-7] + b"garbage")
    message = one_line_error(capsys, *TRAIN, "--steps", "60", "--out", str(run_folder), "--resume", match="is corrupt")
    assert "step-000040" in message
    # ... which still loads, and training resumes from it
    assert main(TRAIN + ["--steps", "42", "--out", str(run_folder), "--resume", str(checkpoints / "step-000040")]) == 0
    assert describe(checkpoints)["step"] == 42


def test_joins_a_running_cluster_and_trains_greedy_then_joint(tmp_path, capsys):
    import distributed

    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, dashboard_address=None) as cluster:
        code = main(["train", "--scheduler", cluster.scheduler_address, "--config", "tiny", "--tiles", "3x1",
                     "--greedy-steps", "2", "--steps", "2", "--minibatch", "4", "--out", str(tmp_path / "run")])
        assert code == 0
        phases = [json.loads(line)["phase"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert phases == ["greedy1", "greedy1", "greedy2", "greedy2", "greedy3", "greedy3", "joint", "joint"]
        capsys.readouterr()
        one_line_error(capsys, "train", "--scheduler", cluster.scheduler_address, "--tiles", "2x2", "--steps", "1",
                       match="2x2 tiles need 4 workers but the cluster has 3")


def test_the_workers_switches_are_checked_recorded_and_shown(tmp_path, capsys, monkeypatch):
    """The switches the workers run with go into every checkpoint and, where not at their defaults, into the first
    lines of the run; workers that disagree on one (their SPMD programs would differ) are refused in one line
    before any step."""
    import os

    import distributed

    from dasksae.checkpoint import open_checkpoint

    monkeypatch.setenv("DASKSAE_GC_FREEZE", "1")  # the workers' processes start with it
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        train = ["train", "--scheduler", cluster.scheduler_address, "--config", "tiny", "--tiles", "2x1", "--steps", "2",
                 "--minibatch", "4"]
        code, out, err = run(capsys, *train, "--out", str(tmp_path / "run"))
        assert code == 0, err
        assert "switches not at their defaults" in out + err and "DASKSAE_GC_FREEZE=1" in out + err
        _, attrs = open_checkpoint(latest(tmp_path / "run" / "checkpoints"))
        assert attrs["switches"]["DASKSAE_GC_FREEZE"] == "1" and attrs["switches"]["DASKSAE_OUTBOX_IN_PLACE"] == "1"
        with distributed.Client(cluster) as client:
            second = sorted(client.scheduler_info()["workers"])[1]
            client.run(lambda: os.environ.update({"DASKSAE_GC_FREEZE": "0"}), workers=[second])
        one_line_error(capsys, *train, "--out", str(tmp_path / "other"),
                       match="the workers disagree on DASKSAE_GC_FREEZE (1 on ")
        assert not any((tmp_path / "other").iterdir())  # no metrics, no checkpoint (the CLI checks the folder first)


def test_training_on_a_data_store_reads_on_workers_and_resumes_exactly(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["data", "build", str(store), "--config", "tiny", "--frames", "2048", "--tiles", "2x2"]) == 0
    one_line_error(capsys, "data", "build", str(tmp_path / "small"), "--frames", "100", match="needs at least 2048 training frames")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(TRAIN + ["--steps", "8", "--data", str(store), "--out", str(straight)]) == 0
    assert main(TRAIN + ["--steps", "5", "--data", str(store), "--out", str(resumed)]) == 0
    assert main(TRAIN + ["--steps", "8", "--data", str(store), "--out", str(resumed), "--resume"]) == 0
    assert describe(straight / "checkpoints")["digest"] == describe(resumed / "checkpoints")["digest"]
    capsys.readouterr()
    one_line_error(capsys, *TRAIN, "--steps", "9", "--out", str(resumed), "--resume", match="resume with --data")
    one_line_error(capsys, "train", "--config", "small", "--tiles", "1x1", "--steps", "1", "--data", str(store),
                   "--out", str(tmp_path / "other"), match="holds 32x32x1 frames but config 'small' takes 40x40x3")


def test_steps_per_task_give_the_same_run(straight_and_resumed, tmp_path):
    """Eight steps a task (and a checkpoint in the middle) train exactly as one step a task."""
    straight, _ = straight_and_resumed
    grouped = tmp_path / "grouped"
    assert main(TRAIN + ["--steps", "50", "--out", str(grouped), "--steps-per-task", "8", "--checkpoint-every", "20"]) == 0
    assert describe(grouped / "checkpoints")["digest"] == describe(straight / "checkpoints")["digest"]
    assert [p.name for p in checkpoints_in(grouped / "checkpoints")] == ["step-000020", "step-000040", "step-000050"]
    steps = [json.loads(line)["step"] for line in (grouped / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 51))


def test_bfloat16_products_train_and_resume_from_float32_weights(straight_and_resumed, tmp_path, capsys):
    """`--dtype bfloat16` trains (the loss falls as in float32, within a few percent), keeps float32 weights,
    records its precision, and resumes a float32 run; the reference path refuses it in one line."""
    straight, _ = straight_and_resumed
    run_dir = tmp_path / "bf16"
    assert main(TRAIN + ["--steps", "50", "--out", str(run_dir), "--dtype", "bfloat16"]) == 0
    reduced = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert abs(reduced[-1] - full[-1]) < 0.03 * full[-1], (reduced[-1], full[-1])
    info = describe(run_dir / "checkpoints")
    assert info["dtype"] == "float32"
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    assert main(TRAIN + ["--steps", "52", "--out", str(resumed), "--resume", "--dtype", "bfloat16"]) == 0
    capsys.readouterr()  # the training runs' progress bars
    one_line_error(capsys, "train", "--single-process", "--config", "tiny", "--steps", "1", "--dtype", "bfloat16",
                   "--out", str(tmp_path / "single"), match="--single-process runs the float32/float64 reference")
    one_line_error(capsys, *TRAIN, "--steps", "1", "--dtype", "float16", "--out", str(tmp_path / "f16"),
                   match="use one of float32, float64, tf32, bfloat16")


def test_ten_steps_a_task_by_default_on_any_device(tmp_path, capsys):
    from dasksae.cli import STEPS_PER_TASK_SHOWN
    from dasksae.train import STEPS_PER_TASK

    assert STEPS_PER_TASK_SHOWN == STEPS_PER_TASK == 10
    code, out, err = run(capsys, "train", "--config", "tiny", "--tiles", "2x1", "--workers", "2", "--worker-threads",
                         "--minibatch", "4", "--steps", "20", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "tasks per 10 joint step(s)" in out + err  # the first group's line: one task a tile ran ten steps



def test_a_gpu_run_on_workers_without_cupy_is_one_line(capsys, tmp_path):
    """``--workers-per-gpu`` where the workers (here threads of this process) cannot import CuPy: refused before
    any tile is made, naming a worker and why."""
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: the refusal needs a machine without it")
    one_line_error(capsys, "train", "--workers-per-gpu", "4", "--config", "tiny", "--tiles", "2x2", "--steps", "1",
                   "--out", str(tmp_path / "run"),
                   match="a GPU run needs CuPy and a GPU on every worker, and 4 worker(s) lack them (")
    assert not (tmp_path / "run" / "checkpoints").exists()
