import json

import h5py
import pytest

from lossatlas import Store, StoreError
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
    assert "tiny_smoke" in printed and "report.md" in printed
    with h5py.File(tmp_path / "out" / "tiny_smoke.h5", "r") as file:
        assert list(file["subjects/three_hump_camel/minima"]) == ["000"]
        assert file["subjects/three_hump_camel/minima/000"].attrs["seed"] == 3  # the smoke override
    header = (tmp_path / "out" / "tiny_smoke" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["subject", "seed", "minimum"] and "train_loss" in header
    assert main(["inspect", str(tmp_path / "out" / "tiny_smoke.h5")]) == 0
    assert "encoding-type=minimum" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    ("colour = 1", "Unknown key(s) ['colour']"),
    ("[methods.no-such-method]", "Unknown method 'no-such-method'"),
    ("[params]\nbeta = 3", "Unknown parameter(s) ['beta'] for problem 'three_hump_camel'"),
    ("[scales.huge]", "Unknown scale(s) ['huge']"),
    ("[scales.cpu]\nminima = { epoch = 3 }", "Unknown parameter(s) ['epoch'] for the training recipe"),
    ("[scales.cpu]\nseeds = [-1]", "The 'seeds' parameter of"),
    ("[scales.cpu]\nseeds = [-1]", "must be a non-empty list of distinct values, each an int in [0, inf). Got [-1]."),
    ("[[report.claims]]\nmetric = 'train_loss'\ndirection = 'up'\ntext = 't'\nfactor = 'x'",
     "The 'direction' parameter of"),
    # every analyzer rule a run would apply, before any minimum is trained
    ("[methods.jump-retrain]\nlr = 0.0", "The 'lr' parameter of JumpRetrain must be a float in (0, inf). Got 0.0."),
    ("[methods.jump-retrain]\nmomentum = 1.0", "The 'momentum' parameter of JumpRetrain must be a float in [0, 1)."),
    ("[methods.merge-tree]\nresolution = 1",
     "The 'resolution' parameter of MergeTreeAnalyzer must be an int in [2, inf)"),
    ("[methods.merge-tree]\nspan = 'wide'", "The 'span' parameter of MergeTreeAnalyzer must be a float in (0, inf)"),
    ("[methods.merge-tree]\nbackend = 'ttk'\nrepresentation = 'knn'", "needs backend='native'"),
    ("[methods.hessian]\ntrace_min_probes = 50\ntrace_max_probes = 10", "must not exceed trace_max_probes"),
    ("[methods.loss-barcode]\nminima = [[0.0, 'a']]", "The 'minima' parameter of LossBarcode must be a list of"),
    ("[scales.cpu]\nminima = { lr = 0 }", "The 'lr' parameter of Recipe must be a float in (0, inf). Got 0."),
    ("[scales.cpu]\nminima = { lr = inf }", "The 'lr' parameter of Recipe must be a float in (0, inf). Got inf."),
    ("[scales.cpu]\nseeds = [0, 0]", "must be a non-empty list of distinct values"),
    ("[variants]\nbeta = [1.0, 1.0]", "'beta' repeats a value"),
    ("[variants]\nlr = [0.01, 0.0]", "[variants]: The 'lr' parameter of Recipe must be a float in (0, inf). Got 0.0."),
    ("[variants]\nlr = [0.01, { gamma = 0.5 }]", "a level given as a table needs 'value'"),
    ("[variants]\nlr = [0.01, { value = 0.1, momentum = 0.5 }]\nmomentum = [0.0, 0.9]",
     "a level sets ['momentum'], which [variants] varies itself"),
    ("[params]\nlr = 0.1", "[params] ['lr']: training settings go in [minima]"),
    ("[variants]\nlr = [0.01, { value = 0.1, gama = 0.5 }]", "Unknown parameter(s) ['gama'] for problem"),
    ("[methods.merge-tree]\nresolution = 100000", "grid has 1e+10 points and needs about"),
    # rules that need the subject (three-hump camel has 2 parameters), still before any work
    ("[methods.merge-tree]\ndirections = 'hessian'",
     "[methods.merge-tree] on three_hump_camel: Hessian directions need more than 2 parameters"),
    ("[methods.loss-barcode]\nminima = [[0.0, 0.0, 0.0]]", "minima must be vectors of length 2"),
    ("[methods.loss-barcode]\nbounds = [[0.0, 1.0]]", "bounds must be 2 pairs (low, high)"),
    ("[methods.hessian]\nbackend = 'pyhessian'\ndense_limit = 0",
     "backend='pyhessian' needs a plain model + criterion subject"),
    # a benchmark runs per-minimum methods at every minimum itself
    ("[methods.hessian]\nminimum = 0", "[methods.hessian] sets 'minimum', which a benchmark chooses itself"),
    ("[methods.hessian]\n[[report.claims]]\nmetric = 'hessian.top_eigenvalu'\ndirection = 'increasing'\n"
     "text = 't'\nfactor = 'x'", "'hessian' has no metric 'top_eigenvalu'"),
])
def test_config_errors_name_the_offender(tmp_path, capsys, extra, message):
    config = tmp_path / "bad.toml"
    config.write_text(_CONFIG + "\n" + extra + "\n")
    assert main(["run", str(config), "--check", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.h5"))


@pytest.mark.parametrize("options,message", [
    (["--threads", "0"], "threads must be an int in [1, inf)"),
    (["--scheduler", "tcp://nowhere:1"], "--scheduler needs --executor dask"),
])
def test_check_rejects_run_options_too(tmp_path, capsys, options, message):
    config = tmp_path / "tiny.toml"
    config.write_text(_CONFIG)
    assert main(["run", str(config), "--check", *options]) == 2
    assert message in capsys.readouterr().err


def test_check_counts_the_minima_a_barcode_needs(tmp_path, capsys):
    config = tmp_path / "one.toml"
    config.write_text('name = "one"\nproblem = "pinn_convection"\nseeds = [0]\n[params]\nbeta = 1.0\nn_f = 20\n'
                      "[methods.loss-barcode]\n")
    assert main(["run", str(config), "--check"]) == 2
    assert "needs at least 2 trained minima; the benchmark trains 1" in capsys.readouterr().err


def test_check_refuses_a_store_of_another_schema(tmp_path, capsys):
    config, store = tmp_path / "tiny.toml", tmp_path / "old.h5"
    config.write_text(_CONFIG)
    Store(store).close()
    with h5py.File(store, "a") as file:
        file.attrs["schema_version"] = 1
    assert main(["run", str(config), "--check", "--store", str(store)]) == 2
    assert "schema_version 1" in capsys.readouterr().err


def test_shipped_benchmark_configs_validate(capsys, tmp_path):
    from pathlib import Path

    from lossatlas.problems.data import DEFAULT_DATA_ROOT

    folders = {"cifar10": "cifar-10-batches-py", "mnist": "mnist"}
    for config in sorted(Path(__file__).parents[1].joinpath("benchmarks").glob("*.toml")):
        for scale in ("smoke", "cpu", "paper"):
            code = main(["run", str(config), "--scale", scale, "--check", "--out", str(tmp_path)])
            missing = [name for name, folder in folders.items() if f'dataset = "{name}"' in config.read_text()
                       and not (Path(DEFAULT_DATA_ROOT) / folder).is_dir()]
            if config.stem == "hf_lm" and not (Path(DEFAULT_DATA_ROOT) / "corpus.txt").is_file():
                missing.append("corpus")  # the paper scale's text, not shipped
            if scale == "paper" and missing:
                # --check builds every subject: a missing dataset is caught before any work
                assert code == 2 and ("not found" in (err := capsys.readouterr().err) or "not a file" in err), err
            else:
                assert code == 0, (config, scale, capsys.readouterr().err)


def test_training_variants_train_their_own_minima_under_their_own_names(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(_CONFIG + "[variants]\nlr = [0.01, { value = 0.03, momentum = 0.5 }]\n")
    assert main(["run", str(config), "--scale", "smoke", "--out", str(tmp_path), "--figures", "none"]) == 0
    with Store(tmp_path / "tiny_smoke.h5", "r") as store:
        names = store.subjects()
        assert sorted(names) == ["three_hump_camel_lr0.01", "three_hump_camel_lr0.03_momentum0.5"]
        for name, lr, momentum in zip(sorted(names), (0.01, 0.03), (0.0, 0.5)):  # a level carries its momentum
            (minimum,) = store.minima(name)
            assert minimum.recipe["lr"] == lr and minimum.recipe["momentum"] == momentum
            assert minimum.recipe["epochs"] == 2 and minimum.seed == 3
        first, second = (store.minima(name)[0].theta for name in sorted(names))
    assert (first != second).any()  # one start (seed 3), two learning rates
    rows = (tmp_path / "tiny_smoke" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[1] == "lr" and {r.split(",")[1] for r in rows[1:]} == {"0.01", "0.03"}


def test_methods_and_bad_store(tmp_path, capsys):
    assert main(["methods"]) == 0
    (tmp_path / "x.h5").write_bytes(b"nope")
    assert main(["inspect", str(tmp_path / "x.h5")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_inspect_shows_a_store_that_holds_a_foreign_node_and_marks_the_node(tmp_path, capsys):
    """The store a run refuses is the one inspect must open: it reads it unvalidated, read only."""
    path = tmp_path / "s.h5"
    with Store(path) as store:
        store.add_subject("f", {"kind": "function"}, [0.0, 0.0], [])
    with h5py.File(path, "a") as file:
        file.create_group("subjects/f/extra").attrs.update({"encoding-type": "extra", "encoding-version": "7"})
    with pytest.raises(StoreError, match="subjects/f/extra"):
        Store(path, "r")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    (marked,) = [line for line in out.splitlines() if "NOT READABLE" in line]
    assert marked.strip().startswith("extra/") and "is a 'extra' node of encoding-version '7'" in marked
    assert "encoding-type=subject" in out and "theta0" in out


def test_methods_run_at_every_minimum(tmp_path, capsys):
    config = tmp_path / "camel.toml"
    config.write_text(_CONFIG + '\n[methods.merge-tree]\ndirections = "axes"\nspan = 2.0\nresolution = 21\n')
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    with h5py.File(tmp_path / "out" / "tiny_cpu.h5", "r") as file:
        results = file["subjects/three_hump_camel/results/merge-tree"]
        centers = sorted(json.loads(results[key].attrs["params"])["minimum"] for key in results)
    assert centers == [0, 1]


_PINN = """
name = "pinn_check"
problem = "pinn_convection"
seeds = [0, 1]
[params]
beta = 5.0
n_f = 200
[minima]
optimizer = "lbfgs"
lr = 1.0
epochs = 2
max_iter = 20
batch_size = 200
[methods.hessian]
trace_max_probes = 10
density_steps = 10
[methods.merge-tree]
resolution = 7
[methods.loss-barcode]
curve_epochs = 1
n_eval = 7
[methods.jump-retrain]
seeds = [0, 1]
step_sizes = [0.5, 1.0]
epochs = 2
steps_per_epoch = 2
knn_k = 4
"""


def test_every_method_runs_on_a_pinn(tmp_path, capsys):
    import warnings

    config = tmp_path / "pinn.toml"
    config.write_text(_PINN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # PHATE on 12 samples warns about its graph
        assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    import csv

    with open(tmp_path / "out" / "pinn_check_cpu" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    for method in ("hessian.top_eigenvalue", "merge-tree.n_saddles", "loss-barcode.to_score",
                   "jump-retrain.total_persistence_0_finite", "train_relative_l2_error"):
        assert method in rows[0]
    assert len(rows) == 2
    for row in rows:
        assert all(v not in ("nan", "inf", "") for v in row.values()), row


def test_a_run_that_fails_before_storing_anything_leaves_no_store(tmp_path, capsys):
    config = tmp_path / "cifar.toml"
    config.write_text(f'name = "cifar"\nproblem = "resnet"\n[params]\ndataset = "cifar10"\n'
                      f'data_root = "{tmp_path / "no-such-dir"}"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "CIFAR-10" in capsys.readouterr().err
    assert not (tmp_path / "out" / "cifar_cpu.h5").exists()


@pytest.mark.parametrize("name", ["../../escaped", "with space", ".hidden", "a" * 101, "nul\x00byte", ""])
def test_config_names_that_would_escape_or_break_the_output_are_refused_by_check(tmp_path, capsys, name):
    config = tmp_path / "named.toml"
    config.write_text(_CONFIG.replace('name = "tiny"', f"name = {json.dumps(name)}"))
    assert main(["run", str(config), "--check", "--out", str(tmp_path / "out")]) == 2
    assert "must be 1-100 letters" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not any(tmp_path.parent.glob("escaped*"))


@pytest.mark.parametrize("extra, message", [
    ('[methods."merge tree"]\nanalyzer = "merge-tree"\n[methods.merge-tree]\n',
     "method labels 'merge tree' and 'merge-tree' would write figure files of the same name"),
    ('[methods.Hessian]\nanalyzer = "hessian"\n[methods.hessian]\n', "'Hessian' and 'hessian'"),
])
def test_labels_whose_figures_would_overwrite_each_other_are_refused_by_check(tmp_path, capsys, extra, message):
    config = tmp_path / "labels.toml"
    config.write_text(_CONFIG.replace("[minima]", extra + "[minima]"))
    assert main(["run", str(config), "--check", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_two_configs_with_one_name_are_refused_and_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text(_CONFIG)
    second.write_text(_CONFIG)
    assert main(["run", str(first), str(second), "--check"]) == 2
    assert "same name and scale" in capsys.readouterr().err
    from lossatlas import harness

    def interrupted(plan, store, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "execute", interrupted)
    assert main(["run", str(first), "--scale", "smoke", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command to resume" in err and "Traceback" not in err
