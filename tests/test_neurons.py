"""Neuron search protocols, the optimal stimulus, and the demo's report."""

import json

import numpy
import pytest

from dasksae import named_config
from dasksae.neurons import (
    THRESHOLDS,
    held_out_protocol,
    input_gradient,
    le2012_protocol,
    optimal_stimulus,
    roc_auc,
    thresholds_of,
)
from dasksae.reference import init_params


def test_le2012_protocol_finds_a_perfect_neuron_among_noise(rng):
    labels = numpy.array([1] * 30 + [0] * 60, dtype=bool)
    responses = rng.standard_normal((50, 90))
    responses[17] = labels * 3.0 + rng.uniform(0, 1, 90)  # faces respond 3-4, others 0-1
    result = le2012_protocol(responses, labels)
    assert result["neuron"] == 17 and result["best_accuracy"] == 1.0 and result["auc"] == 1.0
    thresholds = thresholds_of(responses)
    assert thresholds.shape == (50, THRESHOLDS)
    numpy.testing.assert_allclose(thresholds[:, 0], responses.min(axis=1))
    numpy.testing.assert_allclose(thresholds[:, -1], responses.max(axis=1))


def test_choosing_among_many_neurons_flatters_and_holding_out_does_not(rng):
    labels = numpy.array([1] * 50 + [0] * 93, dtype=bool)
    noise = rng.standard_normal((2000, 143))  # no neuron knows anything
    optimistic = le2012_protocol(noise, labels)["best_accuracy"]
    honest = held_out_protocol(noise, labels)
    guess = 93 / 143
    assert optimistic > guess + 0.05
    assert honest["best_accuracy"] < guess + 0.03 and abs(honest["auc"] - 0.5) < 0.1


def test_roc_auc():
    labels = numpy.array([1, 1, 0, 0], dtype=bool)
    assert roc_auc(numpy.array([3.0, 2.0, 1.0, 0.0]), labels) == 1.0
    assert roc_auc(numpy.array([0.0, 1.0, 2.0, 3.0]), labels) == 0.0
    assert roc_auc(numpy.array([1.0, 1.0, 1.0, 1.0]), labels) == 0.5


def test_input_gradient_of_a_top_neuron_matches_finite_differences(rng):
    config = named_config("tiny")
    params = init_params(config, seed=1, dtype="float64")
    x = rng.standard_normal(config.input_shape + (1,))
    direction = rng.standard_normal(x.shape)
    grad, _ = input_gradient(params, x, config, 321)
    h = 1e-5
    numeric = (input_gradient(params, x + h * direction, config, 321)[1] - input_gradient(params, x - h * direction, config, 321)[1]) / (2 * h)
    assert abs(numeric - (grad * direction).sum()) <= 1e-6 * max(1.0, abs(numeric))


def test_optimal_stimulus_keeps_its_norm_and_beats_random_inputs(rng):
    config = named_config("tiny")
    params = init_params(config, seed=1, dtype="float64")
    stimulus, response = optimal_stimulus(params, config, 100, norm=30.0, steps=30)
    assert abs(numpy.linalg.norm(stimulus) - 30.0) < 1e-6
    randoms = []
    for _ in range(20):
        x = rng.standard_normal(config.input_shape + (1,))
        x *= 30.0 / numpy.linalg.norm(x)
        randoms.append(input_gradient(params, x, config, 100)[1])
    assert response > max(randoms)


def test_demo_writes_the_report(tmp_path):
    pytest.importorskip("distributed")
    pytest.importorskip("matplotlib")
    from dasksae.demo import run_demo

    report = run_demo(tmp_path / "demo", quick=True, steps=4, progress=False)
    written = json.loads((tmp_path / "demo" / "report.json").read_text())
    for key in ("best_accuracy", "random_net_accuracy", "guess_accuracy", "auc", "n_faces", "n_distractors", "face_fraction"):
        assert key in written and written[key] == report[key]
    assert set(written["le2012_protocol"]) >= {"best_accuracy", "random_net_accuracy", "guess_accuracy", "auc"}
    assert written["n_faces"] == 50 and 0.3 < written["n_faces"] / (written["n_faces"] + written["n_distractors"]) < 0.4
    assert written["le2012_protocol"]["best_accuracy"] >= written["best_accuracy"] - 0.2
    markdown = (tmp_path / "demo" / "report.md").read_text()
    assert "| trained network |" in markdown and "guessing" in markdown
    # the report gives the losses as the training log does: the mean of the first steps and of the last
    assert written["loss_window"] == 1 and written["first_mean_loss"] == written["first_loss"]
    assert f"mean loss of the first 1 steps {written['first_mean_loss']:.4g} -> of the last 1 " in markdown
    for picture in written["pictures"].values():
        assert (tmp_path / "demo" / picture).stat().st_size > 1000


def test_recent_rate_spreads_a_burst_over_the_steps_before_it():
    from dasksae.train import RecentRate

    rate = RecentRate(started=0.0, steps=4)
    assert rate.add(1.0, 1) == 1.0
    assert rate.add(1.001, 1) == pytest.approx(2 / 1.001)  # a step read right after another: not 1000 steps a second
    assert rate.add(2.0, 2) == pytest.approx(4 / 2.0)
    assert rate.add(3.0, 4) == pytest.approx(4 / 1.0)  # the shortest last stretch that covers 4 steps
    assert rate.add(3.5, 1) == pytest.approx(5 / 1.5)


def test_loss_trend_averages_the_first_and_last_steps():
    from dasksae.train import loss_trend

    assert loss_trend(range(100)) == (10, 4.5, 94.5)
    assert loss_trend([3.0, 1.0, 2.0]) == (1, 3.0, 2.0)
    with pytest.raises(ValueError, match="no losses"):
        loss_trend([])


def test_neurons_command_on_a_checkpoint_with_folders_of_real_images(tmp_path, capsys):
    pytest.importorskip("distributed")
    pytest.importorskip("matplotlib")
    import skimage.data
    import skimage.io

    from dasksae.cli import main
    from dasksae.demo import run_demo

    run_demo(tmp_path / "demo", quick=True, steps=2, progress=False)
    faces, others = tmp_path / "faces", tmp_path / "others"
    faces.mkdir()
    others.mkdir()
    images = skimage.data.lfw_subset()
    for i in range(0, 100, 10):
        skimage.io.imsave(faces / f"{i}.png", (images[i] * 255).astype("uint8"), check_contrast=False)
    for i in range(100, 200, 5):
        skimage.io.imsave(others / f"{i}.png", (images[i] * 255).astype("uint8"), check_contrast=False)
    code = main(["neurons", str(tmp_path / "demo" / "run" / "checkpoints"), "--data", str(tmp_path / "demo" / "data"),
                 "--faces", str(faces), "--distractors", str(others), "--out", str(tmp_path / "neurons")])
    assert code == 0
    report = json.loads((tmp_path / "neurons" / "report.json").read_text())
    assert report["n_faces"] == 10 and report["n_distractors"] == 20
    capsys.readouterr()
    assert main(["neurons", str(tmp_path / "demo" / "run" / "checkpoints"), "--data", str(tmp_path / "demo" / "data"),
                 "--faces", str(faces), "--out", str(tmp_path / "n2")]) == 2
    assert "give both --faces and --distractors" in capsys.readouterr().err


def test_the_demo_refuses_to_overwrite_a_previous_run(tmp_path, capsys):
    pytest.importorskip("distributed")
    from dasksae.cli import main

    (tmp_path / "demo" / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "demo" / "run" / "checkpoints" / "LATEST").write_text("step-000004\n")
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    assert "already holds a demo run" in capsys.readouterr().err


@pytest.mark.parametrize("options, match", [
    (["--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--face-fraction", "2"], "the face fraction (--face-fraction) must be at least 0 and below 1, got 2.0"),
    (["--workers", "3"], "2x2 tiles need 4 workers but --workers is 3"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--tiles", "15x1"], "do not fit stage 1"),
])
def test_the_demo_refuses_bad_options_before_it_makes_or_builds_anything(tmp_path, capsys, options, match):
    from dasksae.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *options]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in captured.err, captured.err
    assert captured.out == ""  # no "[1/4] building ..." before the refusal
    assert not out.exists()


def test_resume_without_an_output_folder_says_what_to_give(capsys):
    pytest.importorskip("distributed")
    from dasksae.cli import main

    assert main(["train", "--config", "tiny", "--tiles", "1x1", "--steps", "1", "--resume"]) == 2
    assert "--resume continues the run in --out; give --out the run's folder." in capsys.readouterr().err


def test_the_most_selective_neurons_are_ranked_by_auc(rng):
    from dasksae.neurons import most_selective, roc_auc

    labels = numpy.arange(60) < 20
    responses = rng.standard_normal((50, 60))
    responses[7] += 3.0 * labels  # a planted face neuron
    responses[3] -= 3.0 * labels  # one that prefers distractors: last, not first
    chosen, aucs = most_selective(responses, labels, 5)
    assert chosen[0] == 7 and 3 not in chosen and list(aucs) == sorted(aucs, reverse=True)
    assert aucs[0] == roc_auc(responses[7], labels) > 0.95


def test_an_evaluation_the_process_cannot_hold_is_refused_before_anything_loads():
    from dasksae.demo import check_evaluation_fits
    from dasksae.errors import DasksaeError

    GiB = 2**30
    with pytest.raises(DasksaeError, match=r"evaluating coates11.2b's neurons on 143 test images holds about 178.7 GiB "
                                           r"in this process .* and this machine has 24.0 GiB free; evaluate it on a cluster's workers "
                                           r"\(dasksae neurons CHECKPOINT --scheduler ADDRESS\)"):
        check_evaluation_fits(named_config("coates11.2b"), 143, available=24 * GiB)
    assert check_evaluation_fits(named_config("tiny"), 143, available=24 * GiB) < GiB


def test_neurons_computed_on_a_cluster_give_the_in_process_report(tmp_path, capsys):
    """``dasksae neurons --scheduler``: the tiles compute the responses on their workers (a real cluster of worker
    processes), the random baseline is made there too, and the report equals the in-process one."""
    pytest.importorskip("matplotlib")
    distributed = pytest.importorskip("distributed")
    from dasksae.cli import main
    from dasksae.demo import run_demo

    run_demo(tmp_path / "demo", quick=True, steps=4, progress=False)
    checkpoint, data = str(tmp_path / "demo" / "run" / "checkpoints"), str(tmp_path / "demo" / "data")
    assert main(["neurons", checkpoint, "--data", data, "--out", str(tmp_path / "here")]) == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        assert main(["neurons", checkpoint, "--data", data, "--out", str(tmp_path / "there"),
                     "--scheduler", cluster.scheduler_address, "--tiles", "1x2"]) == 0
    here, there = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("here", "there"))
    for key in ("best_accuracy", "random_net_accuracy", "auc", "random_net_auc"):
        assert there[key] == pytest.approx(here[key], abs=1e-9), key
    assert there["le2012_protocol"]["best_neuron"] == here["le2012_protocol"]["best_neuron"]
    assert set(here["pictures"]) - set(there["pictures"]) == {"optimal_stimulus", "selective_stimuli"}
    assert filecmp_same(tmp_path / "here" / here["pictures"]["filters"], tmp_path / "there" / there["pictures"]["filters"])
    assert "No optimal stimuli" in (tmp_path / "there" / "report.md").read_text()


def filecmp_same(a, b) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)
