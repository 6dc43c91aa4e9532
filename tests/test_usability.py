"""What a new user reaches for: a store at a glance (also while a run writes it), its metrics as
a pandas frame, a report whose tables, recipe line and page say what was run, documented entry
points, and a console without third-party noise."""
import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest
import torch

from lossatlas import ConfigError, FunctionSubject, Recipe, Store, analyze, train_minima
from lossatlas.cli import main
from lossatlas.problems import himmelblau


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two minima (seeds 3 and 4) with a Hessian at each, a merge tree at theta0, a benchmark record."""
    path = tmp_path_factory.mktemp("usability") / "study.h5"
    with Store(path) as store:
        subject = himmelblau()
        train_minima(store, subject, Recipe(lr=0.01, epochs=1, steps_per_epoch=20), seeds=[3, 4], progress=False)
        for minimum in (0, 1):
            analyze(store, subject, "hessian", progress=False, minimum=minimum)
        analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0", span=5.0, resolution=5)
        run = {"subject": "himmelblau", "variant": {}, "results": {"hessian": "k"}}
        store.write_benchmark("b_smoke", {"subjects": [{}], "variants": {}, "seeds": [3, 4],
                                          "methods": {"hessian": {"analyzer": "hessian"}}, "runs": [run]})
    return path


# -- inspect ------------------------------------------------------------------------------------------
def test_inspect_summary_says_what_the_store_holds_in_a_few_lines(study, capsys):
    assert main(["inspect", str(study), "--summary"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 15
    assert "schema version 2" in out and "KiB" in out
    assert "himmelblau: " in out and "2 parameters (float64 on cpu)" in out
    assert "minima (2): 0 (seed 3), 1 (seed 4)" in out
    assert "hessian: 2 results: minima 0-1" in out and "merge-tree: 1 result: 1 at theta0" in out
    assert "b_smoke: complete" in out
    with Store(study, "r") as store:
        info = store.overview()
    (subject,) = info["subjects"]
    assert subject["dim"] == 2 and [m["seed"] for m in subject["minima"]] == [3, 4]
    assert sorted(subject["results"]["hessian"]["minima"]) == [0, 1]
    assert info["size_bytes"] == os.path.getsize(study)


def test_inspect_counts_an_unfinished_result_and_shows_parameters_whole(study, tmp_path, capsys):
    path = tmp_path / "copy.h5"
    path.write_bytes(study.read_bytes())
    with h5py.File(path, "a") as file:  # a result whose write was cut before its complete flag
        node = file["subjects/himmelblau/results/hessian"].create_group("unfinished")
        node.attrs.update({"encoding-type": "result", "encoding-version": "2", "complete": False})
    assert main(["inspect", str(path), "--summary"]) == 0
    assert "hessian: 2 results: minima 0-1; 1 unfinished" in capsys.readouterr().out
    assert main(["inspect", str(path)]) == 0
    tree = capsys.readouterr().out
    params = [line.split("params=", 1)[1].split("  ")[0] for line in tree.splitlines() if "method=hessian" in line]
    assert len(params) == 2 and all(p.endswith("}") and '"trace_rtol":' in p for p in params)  # not cut
    assert sorted('"minimum":0' in p for p in params) == [False, True]  # which minimum each one is at


_WRITER = textwrap.dedent("""
    import select, sys, time
    import numpy as np
    from lossatlas.store import Minimum, Result, Store
    store = Store(sys.argv[1], "a")
    store.add_subject("f", {"kind": "function"}, np.zeros(3), np.zeros(0))
    store.write_minimum("f", Minimum(0, np.zeros(3), np.zeros(0), seed=7, recipe={}, metrics={}))
    print("writing", flush=True)
    i = 0
    while i < 2000 and not select.select([sys.stdin], [], [], 0)[0]:  # until the test closes stdin
        store.write_result(Result("hessian", "f", {"at": "minimum", "minimum": 0, "seed": i}, {"trace": float(i)},
                                  arrays={"x": np.random.rand(200)}, key=f"k{i:05d}", analyzer={"scope": "minimum"}))
        i += 1
        time.sleep(0.005)
    store.close()
    print(i, flush=True)
""")


def test_inspect_reads_a_store_that_another_process_is_writing(tmp_path, capsys):
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        for argv in (["inspect", str(path), "--summary"], ["inspect", str(path)], ["inspect", str(path), "--summary"]):
            assert main(argv) == 0, capsys.readouterr().err
            out = capsys.readouterr().out
            assert "another process is writing this store" in out
            assert ("minima (1): 0 (seed 7)" in out) if "--summary" in argv else ("encoding-type=minimum" in out)
    finally:
        written, errors = writer.communicate("", timeout=60)
    assert writer.returncode == 0, errors
    assert int(written.split()[-1]) > 0  # the writer kept writing while it was inspected
    with Store(path, "r") as store:  # and the store it wrote is whole
        assert len(store.results("f", "hessian")) == int(written.split()[-1])


# -- to_dataframe ---------------------------------------------------------------------------------------
def test_to_dataframe_is_tidy_and_holds_the_stored_values(study):
    import pandas as pd

    with Store(study, "r") as store:
        frame = store.to_dataframe()
        stored = {(r.method, r.key): r for r in store.results("himmelblau")}
        for _, row in frame.iterrows():
            result = store.read_result(row["subject"], row["analyzer"], row["key"])
            assert row["value"] == pytest.approx(result.metrics[row["metric"]], nan_ok=True)
            assert row["kind"] == result.analyzer["metrics"][row["metric"]]["kind"]
        wide = store.to_dataframe(wide=True)
        chosen = store.to_dataframe(metrics=["hessian.top_eigenvalue", "n_saddles"])
        with pytest.raises(ConfigError, match="hessian.top_eigenvalue"):  # the valid names are listed
            store.to_dataframe(metrics=["hessian.no_such_metric"])
    assert len(frame) == sum(len(r.metrics) for r in stored.values())
    keys = ["subject", "analyzer", "label", "minimum", "metric"]
    assert frame.equals(frame.sort_values(keys, na_position="last").reset_index(drop=True))
    hessian = frame[frame["analyzer"] == "hessian"]
    assert sorted(set(hessian["minimum"])) == [0, 1] and frame["minimum"].dtype == "Int64"
    assert frame.loc[frame["analyzer"] == "merge-tree", "minimum"].isna().all()
    assert {"measure", "diagnostic"} <= set(frame["kind"])
    assert len(wide) == 3 and list(wide["minimum"][:2]) == [0, 1] and pd.isna(wide["minimum"][2])  # theta0 last
    top = frame[(frame["metric"] == "top_eigenvalue") & (frame["minimum"] == 1)]["value"].item()
    assert wide.loc[1, "hessian.top_eigenvalue"] == top and pd.isna(wide.loc[2, "hessian.top_eigenvalue"])
    assert set(chosen["metric"]) == {"top_eigenvalue", "n_saddles"} and len(chosen) == 3


def test_to_dataframe_without_pandas_says_what_to_install(study, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with Store(study, "r") as store, pytest.raises(ConfigError, match=r"pip install 'lossatlas\[export\]'"):
        store.to_dataframe()


# -- the report -----------------------------------------------------------------------------------------
_CONFIG = """
name = "tiny"
problem = "three_hump_camel"
seeds = [0, 1]
[variants]
lr = [0.01, { value = 0.03, momentum = 0.5 }]
[minima]
lr = 0.1
momentum = 0.0
epochs = 2
[methods.hessian]
at = "minimum"
[report]
factor = "lr"
table = ["hessian.trace", "hessian.hvp_count"]
[scales.smoke]
seeds = [3]
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    (folder / "tiny.toml").write_text(_CONFIG)
    assert main(["run", str(folder / "tiny.toml"), "--scale", "smoke", "--out", str(folder), "--figures",
                 "draft"]) == 0
    return folder


def test_report_table_key_chooses_the_metrics_and_is_checked(report):
    from lossatlas import harness

    table = (report / "tiny_smoke" / "table.md").read_text().split("### ")[1]
    shown = [line.split("|")[1].strip() for line in table.splitlines()[4:] if line.startswith("| ")]
    assert [s for s in shown if "." in s] == ["hessian.trace", "hessian.hvp_count"]  # in the config's order
    assert "train_loss" in shown  # the model's own columns are always there
    config = report / "bad.toml"
    config.write_text(_CONFIG.replace('"hessian.hvp_count"', '"hessian.hvp"'))
    with pytest.raises(ConfigError, match=r"\['hessian.hvp'\] is not a metric.*valid: .*hessian.hvp_count"):
        harness.load(config, "smoke")


def test_the_per_variant_table_shows_the_measures_by_default(report):
    from lossatlas.report import collect
    from lossatlas.report.tables import variant_table

    with Store(report / "tiny_smoke.h5", "r") as store:
        study = collect(store)
    study.record = dataclasses.replace(study.record, report=dataclasses.replace(study.record.report, table=()))
    shown = [row[0] for row in variant_table(study).rows]
    assert "hessian.top_eigenvalue" in shown and "hessian.trace" in shown
    assert "hessian.hvp_count" not in shown and not any(s.startswith("time.") for s in shown)


def test_the_recipe_line_gives_what_each_variant_trained_with(report):
    line = next(line for line in (report / "tiny_smoke" / "report.md").read_text().splitlines()
                if "Training recipe" in line)
    assert '"lr": 0.1' not in line  # the base value no variant used
    assert 'lr=0.01: {"lr": 0.01, "momentum": 0.0}' in line and 'lr=0.03: {"lr": 0.03, "momentum": 0.5}' in line
    assert '"epochs": 2' in line.split("per variant")[0]  # shared by both
    with Store(report / "tiny_smoke.h5", "r") as store:  # what the minima were trained with
        recipes = {name: store.minima(name)[0].recipe for name in store.subjects()}
    assert sorted((r["lr"], r["momentum"]) for r in recipes.values()) == [(0.01, 0.0), (0.03, 0.5)]


def test_index_html_embeds_each_figure_with_a_caption(report):
    page = (report / "tiny_smoke" / "index.html").read_text()
    pngs = sorted(p.name for p in (report / "tiny_smoke" / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        figure = page.split(f'<img src="figures/{png}"', 1)[1].split("</figure>", 1)[0]
        assert "<figcaption>" in figure and f"figures/{png}" in figure
    from lossatlas.report.document import index_html

    page = index_html("t", [], ["figures/compare_hessian_density.png", "figures/compare_hessian_density.pdf"])
    assert '<img src="figures/compare_hessian_density.png"' in page
    assert '<a href="figures/compare_hessian_density.pdf">PDF</a>' in page and "hessian density" in page


# -- documented entry points ------------------------------------------------------------------------------
def test_memory_store_read_result_and_plot_do_what_their_docstrings_say():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lossatlas.methods.merge_tree import MergeTreeAnalyzer

    subject = himmelblau()
    with Store.memory() as store:
        assert str(store.path) == ":memory:"
        result = analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0", span=5.0,
                         resolution=5)
        again = store.read_result(subject.name, "merge-tree", result.key)
        with pytest.raises(Exception, match="has no result"):
            store.read_result(subject.name, "merge-tree", "nope")
    assert again.metrics == result.metrics and np.array_equal(again.arrays["loss_grid"], result.arrays["loss_grid"])
    analyzer = MergeTreeAnalyzer()
    figure, ax = plt.subplots()
    assert analyzer.plot(again, ax=ax, view="contour") is figure and ax.has_data()
    whole = analyzer.plot(again)
    assert len([a for a in whole.axes if a.has_data()]) >= 2
    with pytest.raises(ConfigError, match="its views"):
        analyzer.plot(again, ax=ax, view="nope")
    plt.close("all")


# -- the console during a run -------------------------------------------------------------------------------
def test_jump_retrain_turns_phate_output_into_diagnostics_and_one_log_line(capfd, caplog):
    from lossatlas.methods.jump_retrain import JumpRetrain

    # 600 parameters and 36 samples: graphtools warns that its kNN graph is expensive, PHATE that its
    # graph is disconnected, SGD-MDS (graphtools' logger, straight to stdout) that it has not converged
    subject = FunctionSubject(lambda t: (t**2).sum() + 0.1 * (t**4).sum(), torch.ones(600, dtype=torch.float64),
                              name="bowl")
    with warnings.catch_warnings(record=True) as raised, caplog.at_level(logging.INFO, logger="lossatlas"):
        warnings.simplefilter("always")
        with Store.memory() as store:
            result = analyze(store, subject, "jump-retrain", progress=False, **JumpRetrain.smoke_params)
    out, err = capfd.readouterr()
    raw = ("kNNGraph", "is expensive", "Graph is disconnected", "SGD-MDS", "n_pca", "RuntimeWarning")
    assert not [text for text in raw if text in out + err], out + err
    assert not [w for w in raised if any(text in str(w.message) for text in raw)]
    assert result.metrics["phate_components"] > 1  # the runs stay apart at smoke settings
    assert result.metrics["phate_mds_converged"] in (0.0, 1.0)
    lines = [r for r in caplog.records if r.name.startswith("lossatlas") and "jump-retrain on bowl" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    said = lines[0].getMessage()
    assert f"has {int(result.metrics['phate_components'])} components (phate_components)" in said
    assert "all 600 coordinates of the 36 samples" in said
    assert ("phate_mds_converged = 0" in said) == (result.metrics["phate_mds_converged"] == 0)


def test_a_result_outside_the_benchmark_never_takes_a_benchmark_label(tmp_path):
    """A config edited and rerun into one store: the old result stays, unlabelled, beside the new one."""
    with Store(tmp_path / "s.h5") as store:
        subject = himmelblau()
        train_minima(store, subject, Recipe(lr=0.01, epochs=1, steps_per_epoch=20), seeds=[3], progress=False)
        old = analyze(store, subject, "hessian", progress=False, minimum=0, k=1)
        new = analyze(store, subject, "hessian", progress=False, minimum=0, k=2)
        run = {"subject": "himmelblau", "variant": {}, "results": {"hessian": new.key}}
        store.write_benchmark("b_smoke", {"subjects": [{}], "variants": {}, "seeds": [3],
                                          "methods": {"hessian": {"analyzer": "hessian"}}, "runs": [run]})
        frame = store.to_dataframe()
        wide = store.to_dataframe(wide=True)  # two labels: no duplicate cells to pivot
    labels = frame.drop_duplicates("key").set_index("key")["label"]
    assert labels[new.key] == "hessian" and labels[old.key] == "hessian-2"
    assert wide.loc[0, "hessian.top_eigenvalue"] == new.metrics["top_eigenvalue"]
