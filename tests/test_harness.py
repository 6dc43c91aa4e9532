"""A benchmark as one flat list of jobs run by one loop: one progress step per job, every subject
built once for the checks and once for the run and held one at a time, every method's parameters
checked once (``lossatlas run --check`` and the run share the check), and a method table that names
an Analyzer of the user's own (``"package.module:Class"``)."""
import csv
import gc
import json
import weakref

import h5py
import pytest

from lossatlas import harness, problems
from lossatlas.analyzer import Analyzer
from lossatlas.cli import main
from lossatlas.progress import Forecast
from lossatlas.config import tomllib  # tomli before Python 3.11
from lossatlas.errors import ConfigError
from lossatlas.record import Method

_PLUGIN = "plugins.gradient_norm:GradientNorm"  # tests/plugins, on the path (conftest.py)
_TOML = f"""
name = "jobs"
problem = "three_hump_camel"
seeds = [0, 1]
[variants]
lr = [0.01, 0.02]
[minima]
momentum = 0.0
epochs = 1
steps_per_epoch = 20
[methods.hessian]
k = 1
[methods.loss-barcode]
n_minima = 2
curve_epochs = 1
n_eval = 5
[methods.gn]
analyzer = "{_PLUGIN}"
[sensitivity.gn]
scale = [1.0, 2.0]
"""
_CONFIG = tomllib.loads(_TOML)  # scale 1.0 is the method's own: not rerun


def test_a_plan_expands_into_one_flat_list_of_jobs():
    plan = harness.plan(_CONFIG, "smoke")
    jobs = harness.jobs(plan)
    assert len(jobs) == 2 * 8 and {job.subject for job in jobs[:8]} == {0} and {job.subject for job in jobs[8:]} == {1}
    assert [job.stage("camel") for job in jobs[:8]] == [
        "camel minima", "camel hessian @ minimum 0", "camel gn @ minimum 0", "camel hessian @ minimum 1",
        "camel gn @ minimum 1", "camel loss-barcode", "camel gn [scale=2.0] @ minimum 0",
        "camel gn [scale=2.0] @ minimum 1"]
    assert plan.methods["gn"] == Method("gradient-norm", {}, reference=_PLUGIN)  # filed under its own name
    assert plan.analyzer("gn", "scale=2.0", minimum=1).get_params() == {"at": "minimum", "minimum": 1, "scale": 2.0}


def test_a_run_builds_each_subject_once_checks_each_method_once_and_counts_one_step_per_job(tmp_path, monkeypatch):
    built, alive, checked, bars = [], [], [], []
    build, from_params = problems.build, Analyzer.from_params.__func__

    def counted_build(problem, **params):
        gc.collect()
        alive.append(sum(ref() is not None for _, ref in built))  # subjects still held when one more is built
        subject = build(problem, **params)
        built.append((params.get("device"), weakref.ref(subject)))
        return subject

    def counted_from_params(cls, params):
        checked.append(cls.name)
        return from_params(cls, params)

    class Bar:
        def __init__(self, total, **options):
            self.total, self.steps = total, 0
            bars.append(self)

        def update(self, n):
            self.steps += n

        def set_postfix_str(self, text):
            self.postfixes = getattr(self, "postfixes", []) + [text]

        def close(self):
            pass

    monkeypatch.setattr(problems, "build", counted_build)
    monkeypatch.setattr(Analyzer, "from_params", classmethod(counted_from_params))
    monkeypatch.setattr(harness, "progress_bar", Bar)
    config = tmp_path / "jobs.toml"
    config.write_text(_TOML)
    assert main(["run", str(config), "--scale", "smoke", "--out", str(tmp_path / "out"), "--figures", "draft",
                 "--device", "cpu"]) == 0
    gc.collect()
    assert all(ref() is None for _, ref in built)  # the last one too, after its last job
    # two subjects, each built once for the checks and once for the run, and released after each
    assert [device for device, _ in built] == ["cpu"] * 4 and alive == [0] * 4
    assert sorted(checked) == ["gradient-norm"] * 3 + ["hessian", "loss-barcode"]  # the tables, scale 1.0 and 2.0
    assert [(bar.total, bar.steps) for bar in bars] == [(16, 16)]
    assert bars[0].postfixes[0].startswith("time left: estimated after the first job")
    assert bars[0].postfixes[-1] == "about 0 s left" and "left; " in bars[0].postfixes[2]
    folder = tmp_path / "out" / "jobs_smoke"
    with open(folder / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(float(row["gn.gradient_norm"]) >= 0 for row in rows)
    assert (folder / "figures" / "compare_gn_gradient.png").is_file()
    assert f"`gn`: gradient-norm ({_PLUGIN})" in (folder / "report.md").read_text()
    with h5py.File(tmp_path / "out" / "jobs_smoke.h5", "r") as file:
        record = json.loads(file["benchmarks/jobs_smoke"].attrs["record"])
    assert record["record_version"] == 1 and record["methods"]["gn"]["reference"] == _PLUGIN
    assert [set(run["sensitivity"]["gn"]) for run in record["runs"]] == [{"scale=2.0"}] * 4
    monkeypatch.undo()
    assert main(["report", str(tmp_path / "out" / "jobs_smoke.h5"), "--out", str(tmp_path / "again"),
                 "--figures", "none"]) == 0
    for name in ("metrics.csv", "comparison.csv", "table.md", "sensitivity.csv"):
        assert (tmp_path / "again" / name).read_text() == (folder / name).read_text(), name


def test_the_check_builds_every_subject_of_every_config_one_at_a_time(tmp_path, monkeypatch, capsys):
    """``lossatlas run`` checks every config before any work: holding their subjects meanwhile would
    hold all their data at once (and GPU memory that later memory checks read as taken)."""
    built, alive = [], []
    build = problems.build

    def counted_build(problem, **params):
        gc.collect()
        alive.append(sum(ref() is not None for ref in built))
        subject = build(problem, **params)
        built.append(weakref.ref(subject))
        return subject

    monkeypatch.setattr(problems, "build", counted_build)
    configs = [tmp_path / "a.toml", tmp_path / "b.toml"]
    for config in configs:
        config.write_text(_TOML.replace('name = "jobs"', f'name = "{config.stem}"'))
    assert main(["run", *map(str, configs), "--scale", "smoke", "--check", "--device", "cpu"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert len(built) == 4 and alive == [0] * 4


@pytest.mark.parametrize("table, message", [
    ({"analyzer": _PLUGIN, "scale": 0}, "The 'scale' parameter of GradientNorm must be a float in (0, inf). Got 0."),
    ({"analyzer": _PLUGIN, "scael": 1.0}, "Unknown parameter(s) ['scael'] for method 'gradient-norm'"),
    ({"analyzer": "lossatlas.store:Store"}, "Method 'lossatlas.store:Store' is not an Analyzer"),
    ({"analyzer": "plugins.gradient_norm:Nope"}, "Method 'plugins.gradient_norm:Nope' could not be loaded"),
])
def test_a_users_own_analyzer_is_checked_like_a_registered_one(table, message):
    with pytest.raises(ConfigError) as err:
        harness.plan({**_CONFIG, "methods": {"gn": table}, "sensitivity": {}}, "smoke")
    assert message in str(err.value)


def test_every_scale_of_a_config_is_checked_against_its_declaration():
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['seed'\] for config \[scales.paper\]"):
        harness.plan({**_CONFIG, "scales": {"paper": {"seed": [1]}}}, "smoke")
    with pytest.raises(ConfigError, match=r"The 'seeds' parameter of config \[scales.paper\] must be a non-empty "
                                          r"list of distinct values"):
        harness.plan({**_CONFIG, "scales": {"paper": {"seeds": [1, 1]}}}, "smoke")
    with pytest.raises(ConfigError, match="config needs a top-level 'problem' key"):
        harness.plan({"name": "x"}, "smoke")


def test_the_time_left_counts_each_job_at_what_its_kind_took_so_far():
    forecast = Forecast(["train", "hessian", "grid", "train", "hessian", "grid"])
    assert forecast.left(-1) is None
    forecast.done(0, 30.0)  # nothing else seen yet: every job as long as the average one
    assert forecast.left(0) == 5 * 30.0
    forecast.done(1, 10.0)  # the grid, not seen, at the mean of the jobs run (20 s)
    assert forecast.left(1) == 20.0 + 30.0 + 10.0 + 20.0
    forecast.done(2, 2.0)
    assert forecast.left(2) == 30.0 + 10.0 + 2.0 and forecast.text(2) == "about 42 s left"
    forecast.done(3, 50.0)  # a kind seen twice: its mean
    assert forecast.left(3) == 10.0 + 2.0
