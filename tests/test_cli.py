import json

import h5py
import pytest

from lossatlas.cli import main

_CONFIG = """
name = "tiny"
problem = "three_hump_camel"
seeds = [0, 1]
[minima]
lr = 0.01
momentum = 0.0
epochs = 2
[scales.smoke]
seeds = [3]
"""


def test_run_trains_minima_and_writes_store_and_summary(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(_CONFIG)
    assert main(["run", str(config), "--scale", "smoke", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "three_hump_camel" in printed and "eval_loss" in printed
    with h5py.File(tmp_path / "out" / "tiny_smoke.h5", "r") as file:
        assert list(file["subjects/three_hump_camel/minima"]) == ["000"]
        assert file["subjects/three_hump_camel/minima/000"].attrs["seed"] == 3  # the smoke override
    assert (tmp_path / "out" / "tiny_smoke_summary.md").read_text().startswith("| subject")
    assert main(["inspect", str(tmp_path / "out" / "tiny_smoke.h5")]) == 0
    assert "encoding-type=minimum" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    ("colour = 1", "unknown key(s) ['colour']"),
    ("[methods.no-such-method]", "Unknown method 'no-such-method'"),
    ("[params]\nbeta = 3", "Unknown parameter(s) ['beta'] for problem 'three_hump_camel'"),
    ("[scales.huge]", "unknown scale(s) ['huge']"),
    ("[scales.cpu]\nminima = { epoch = 3 }", "Unknown parameter(s) ['epoch'] for the training recipe"),
    ("[scales.cpu]\nseeds = [-1]", "'seeds' must be a non-empty list of ints >= 0"),
])
def test_config_errors_name_the_offender(tmp_path, capsys, extra, message):
    config = tmp_path / "bad.toml"
    config.write_text(_CONFIG + "\n" + extra + "\n")
    assert main(["run", str(config), "--check", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.h5"))


def test_shipped_benchmark_configs_validate(capsys):
    from pathlib import Path

    for config in sorted(Path(__file__).parents[1].joinpath("benchmarks").glob("*.toml")):
        for scale in ("smoke", "cpu", "paper"):
            assert main(["run", str(config), "--scale", scale, "--check"]) == 0, (config, scale)


def test_methods_and_bad_store(tmp_path, capsys):
    assert main(["methods"]) == 0
    (tmp_path / "x.h5").write_bytes(b"nope")
    assert main(["inspect", str(tmp_path / "x.h5")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_methods_run_at_every_minimum(tmp_path, capsys):
    config = tmp_path / "camel.toml"
    config.write_text(_CONFIG + '\n[methods.merge-tree]\ndirections = "axes"\nspan = 2.0\nresolution = 21\n')
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    with h5py.File(tmp_path / "out" / "tiny_cpu.h5", "r") as file:
        results = file["subjects/three_hump_camel/results/merge-tree"]
        centers = sorted(json.loads(results[key].attrs["params"])["minimum"] for key in results)
    assert centers == [0, 1]
