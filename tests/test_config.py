"""Named configs land on their headline counts; bad configs are refused with one clear sentence."""

import json
import subprocess
import sys

import pytest

from dasksae import ConfigError, NetworkConfig, StageConfig, named_config
from dasksae.network import NAMED_CONFIGS


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dasksae.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name,headline", [("coates11.2b", 11.2e9), ("coates1.8b", 1.8e9), ("le2012", 1.0e9)])
def test_info_parameters_within_3_percent_of_headline(name, headline):
    result = run_cli("info", name, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert isinstance(info["parameters"], int)
    assert abs(info["parameters"] / headline - 1) < 0.03
    assert isinstance(info["flops_per_update"], int) and info["flops_per_update"] > 0
    assert {"weights", "optimizer_state", "activations", "workspace"} <= set(info["bytes"])


def test_info_flops_are_twelve_p_m_less_the_first_input_gradient():
    config = named_config("coates1.8b")
    info = json.loads(run_cli("info", "coates1.8b", "--json", "--minibatch", "96").stdout)
    first = config.geometry()[0].parameters
    assert info["flops_per_update"] == 12 * config.encoder_parameters * 96 - 2 * first * 96


def test_info_text_lists_every_layer():
    result = run_cli("info", "tiny", "--minibatch", "8", "--dtype", "float64")
    assert result.returncode == 0
    for layer in ("stage1.filter", "stage2.pool", "stage3.lcn"):
        assert layer in result.stdout


def test_all_named_configs_validate():
    for config in NAMED_CONFIGS.values():
        assert config.encoder_parameters > 0
        assert config.note


def _single_stage(**changes):
    stage = dict(field=4, step=2, block=(2, 2, 2), maps=2, pool_size=3)
    stage.update(changes)
    return {"name": "bad", "input_shape": [16, 16, 1], "stages": [stage]}


BAD_CONFIGS = [
    (_single_stage(field=20), "field 20 is larger than its 16x16 input"),
    (_single_stage(step=0), "step must be a positive integer, got 0"),
    (_single_stage(maps=-3), "maps must be a positive integer, got -3"),
    (_single_stage(field=2.5), "field must be a positive integer, got 2.5"),
    (_single_stage(block=[2, 2]), "block must be three positive integers"),
    (_single_stage(block=[2, 2, 3]), "block depth 3 must divide maps 2"),
    (_single_stage(pool_size=40), "pool_size 40 is larger than its"),
    (_single_stage(lcn_size=4), "lcn_size must be an odd positive integer"),
    (_single_stage(colour=1), "unknown key 'colour'"),
    ({**_single_stage(), "input_shape": [16, -16, 1]}, "input width must be a positive integer, got -16"),
    ({**_single_stage(), "objective": "pca"}, "objective must be one of rica, le2012"),
    ({**_single_stage(), "stages": []}, "stages must hold at least one stage"),
    ({"name": "x", "stages": []}, "the config has no 'input_shape'"),
]


@pytest.mark.parametrize("data,message", BAD_CONFIGS)
def test_bad_config_refused_with_one_sentence(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NetworkConfig.from_dict(data)


@pytest.mark.parametrize("data,message", BAD_CONFIGS[:3])
def test_cli_bad_config_file_has_no_traceback(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    result = run_cli("info", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["info", "tiny-ish"], "unknown config 'tiny-ish'; choose one of tiny, small, le2012, coates1.8b, coates11.2b."),
        (["info", "tiny", "--dtype", "int8"], "dtype 'int8' is not supported; use one of float32, float64, tf32, bfloat16."),
        (["info", "tiny", "--minibatch", "0"], "--minibatch must be a positive integer, got 0."),
        (["info", "missing.json"], "config file missing.json does not exist"),
    ],
)
def test_cli_refuses_bad_arguments(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr


def test_config_round_trips_through_json():
    config = named_config("coates11.2b")
    again = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_stage_config_in_python_is_validated_too():
    with pytest.raises(ConfigError, match="step must be a positive integer"):
        NetworkConfig("x", (8, 8, 1), (StageConfig(field=2, step=0, block=(1, 1, 1), maps=1, pool_size=1),)).validate()


def test_info_plans_a_tiling(capsys):
    import json

    from dasksae.cli import main

    assert main(["info", "tiny", "--tiles", "2x2", "--minibatch", "32", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["tiling"]
    assert plan["graph_tasks"] == 322 and plan["critical_path"] == 33
    assert plan["halo_bytes"] == 2091008  # what a real step's statistics report for tiny 2x2, M=32, float32
    assert plan["parameters_largest_tile"] >= plan["parameters_smallest_tile"] > 0


def test_memory_plan_of_the_training_step():
    """The step holds weights and momentum and no whole gradient: the 11.2B net plans under 10 B/param in
    float32 and fits one H200 (139 GB) in float32 and with bfloat16 products (+2 B/param of operand copies);
    the workspace stays near one chunk whatever the network's width."""
    from dasksae.accounting import memory_plan
    from dasksae.kernels.local_filter import CHUNK_BYTES

    config = named_config("coates11.2b")
    parameters = config.trainable_parameters
    full = memory_plan(config, 96, "float32")
    reduced = memory_plan(config, 96, "bfloat16")
    assert full["weights"] == full["optimizer_state"] == 4 * parameters and "gradients" not in full
    assert full["total"] / parameters < 10 and reduced["total"] < 139e9
    assert reduced["operand_copies"] == 2 * parameters and reduced["total"] - full["total"] > 2 * parameters * 0.95
    assert full["workspace"] < 2 * CHUNK_BYTES
