"""Report logic on hand-made studies (claims, correlations, formats) and config validation of reports."""
import pytest
from scipy.stats import spearmanr

from lossatlas import harness
from lossatlas.errors import ConfigError
from lossatlas.report.collect import Study
from lossatlas.report.tables import Table, comparison_table, correlate, evaluate_claim, mean_std


def _study(values_by_beta: dict, scope: str = "minimum") -> Study:
    rows = []
    for beta, values in values_by_beta.items():
        for seed, value in enumerate(values):
            rows.append({"subject": f"b{beta}", "beta": beta, "seed": seed, "minimum": seed, "err": value / 10,
                         "m.x": value})
    record = {"name": "t", "scale": "smoke", "seeds": [0, 1], "variants": {"beta": list(values_by_beta)},
              "methods": {"m": {"analyzer": "x", "params": {}}},
              "report": {"factor": "beta", "error": "err", "claims": []}}
    return Study(record, rows, ["err"], ["m.x"], [], {"m": scope}, {}, {})


def _claim(direction, **extra):
    return {"metric": "m.x", "direction": direction, "text": "t", **extra}


def test_claim_verdicts_follow_the_data():
    rising = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    assert evaluate_claim(rising, _claim("increasing"))["verdict"] == "reproduced"
    assert evaluate_claim(rising, _claim("decreasing"))["verdict"].startswith("not reproduced (opposite direction, p=")
    noisy = _study({1.0: [1, 6], 5.0: [2, 3], 10.0: [4, 5]})  # rho = +0.24, p = 0.65
    assert evaluate_claim(noisy, _claim("increasing"))["verdict"].startswith("same direction, not significant")
    flat = _study({1.0: [2, 2], 5.0: [2, 2]})
    assert evaluate_claim(flat, _claim("increasing"))["verdict"] == "not reproduced (no change)"
    assert evaluate_claim(rising, _claim("increasing", factor="depth"))["verdict"].startswith("not testable")
    assert evaluate_claim(rising, {**_claim("increasing"), "metric": "m.y"})["verdict"].startswith("not available")


def test_a_claim_can_name_its_own_factor_and_filter_rows():
    study = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    for row in study.rows:  # depth varies too: deeper is lower, but only where beta > 1
        row["depth"] = 20 if row["seed"] == 0 else 56
        row["m.x"] = row["m.x"] - (10 * (row["depth"] == 56) if row["beta"] > 1 else 0)
    study.record["variants"]["depth"] = [20, 56]
    found = evaluate_claim(study, _claim("decreasing", factor="depth", where={"beta": 10.0}))
    assert found["verdict"].startswith("same direction, not significant (n=2 < 3)")  # two rows at beta = 10
    assert "depth=20: 5 → depth=56: -4" in found["observed"]
    assert evaluate_claim(study, _claim("decreasing", factor="depth", where={"beta": 1.0}))["verdict"] == \
        "not reproduced (opposite direction)"  # at beta = 1 depth adds nothing: 1 -> 2


def test_correlations_match_scipy_and_per_subject_metrics_count_once():
    study = _study({1.0: [1, 7], 5.0: [3, 2], 10.0: [5, 9]})
    found = correlate(study, "m.x", "beta")
    rho, p = spearmanr([1, 1, 5, 5, 10, 10], [1, 7, 3, 2, 5, 9])
    assert (found.rho, found.p, found.n) == pytest.approx((rho, p, 6))
    once = _study({1.0: [4, 4], 5.0: [2, 2], 10.0: [9, 9]}, scope="subject")
    assert correlate(once, "m.x", "beta").n == 3
    assert correlate(_study({1.0: [1, 2, 3]}), "m.x", "beta").why == "constant"  # one beta
    assert correlate(_study({1.0: [1, 2]}), "m.x", "beta").why == "n=2 < 3"


def test_mean_std_and_formats():
    assert mean_std([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std([1.0, float("nan")]) == "1 (1 non-finite)"
    table = Table("a_b", ["x", "y"], [["1 ± 2", "ρ"]], ["note"])
    assert "\\pm" in table.latex() and "a\\_b" in table.latex() and "$\\rho$" in table.latex()
    assert "<td>1 ± 2</td>" in table.html() and "| 1 ± 2 | ρ |" in table.markdown()
    rows = comparison_table(_study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]}), []).rows
    assert rows[0][0] == "m.x" and rows[0][1].startswith("+1.00")


_BASE = {"name": "b", "problem": "pinn_convection", "params": {"n_f": 10}, "variants": {"beta": [1.0, 5.0]},
         "methods": {"mt": {"analyzer": "merge-tree", "resolution": 5}}}


@pytest.mark.parametrize("report,message", [
    ({"factor": "gamma"}, "factor 'gamma' is not a variant"),
    ({"colour": 1}, "Unknown key(s) ['colour']"),
    ({"factor": "beta", "claims": [{"metric": "mt.n_saddles", "direction": "up", "text": "t"}]},
     "The 'direction' parameter of config [report] claims[0] must be one of ['increasing', 'decreasing']. Got 'up'."),
    ({"factor": "beta", "claims": [{"metric": "nope.n", "direction": "increasing", "text": "t"}]}, "names no method"),
    ({"factor": "beta", "claims": [{"metric": "mt.x", "direction": "increasing", "text": "t", "when": 1}]},
     "Unknown key(s) ['when']"),
    ({"factor": "beta", "claims": [{"metric": "mt.n_saddles", "direction": "increasing", "text": "t",
                                    "factor": "depth"}]}, "factor 'depth' is not a problem parameter"),
    ({"factor": "beta", "claims": [{"metric": "mt.x", "direction": "increasing", "text": "t"}]},
     "metric 'mt.x': 'merge-tree' has no metric 'x'"),
])
def test_report_config_errors_name_the_offender(report, message):
    with pytest.raises(ConfigError, match=None) as err:
        harness.plan({**_BASE, "report": report}, "smoke")
    assert message in str(err.value)


def test_one_analyzer_under_two_labels():
    plan = harness.plan({**_BASE, "methods": {"mt": {"analyzer": "merge-tree"},
                                              "mt-hessian": {"analyzer": "merge-tree", "directions": "hessian"}}})
    assert plan.methods["mt-hessian"] == {"analyzer": "merge-tree", "params": {"directions": "hessian"}}
    with pytest.raises(ConfigError, match="Unknown parameter"):
        harness.plan({**_BASE, "methods": {"mt": {"analyzer": "merge-tree", "resolutionn": 3}}})
    with pytest.raises(ConfigError, match="Unknown method 'merge'"):
        harness.plan({**_BASE, "methods": {"mt": {"analyzer": "merge"}}})


def test_a_report_of_a_run_killed_half_way_says_what_is_missing(tmp_path, monkeypatch):
    from lossatlas import Store, problems
    from lossatlas.report import write_report

    plan = harness.plan({"name": "half", "problem": "pinn_convection", "seeds": [0], "params": {"n_f": 20},
                         "variants": {"beta": [1.0, 30.0]},
                         "minima": {"optimizer": "lbfgs", "lr": 1.0, "epochs": 1, "max_iter": 2, "batch_size": 20}},
                        "cpu")
    build = problems.build

    def killed_at_the_second(problem, **params):
        if params["beta"] == 30.0:
            raise KeyboardInterrupt
        return build(problem, **params)

    monkeypatch.setattr(problems, "build", killed_at_the_second)
    with Store(tmp_path / "half.h5") as store:
        with pytest.raises(KeyboardInterrupt):
            harness.execute(plan, store, progress=False)
        write_report(store, tmp_path / "report", figures=False)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Incomplete run" in report and "1 of 2 variants have no results (beta=30.0)" in report
    monkeypatch.setattr(problems, "build", build)
    with Store(tmp_path / "half.h5") as store:  # resumed: complete, and the note is gone
        harness.execute(plan, store, progress=False)
        write_report(store, tmp_path / "report", figures=False)
    assert "Incomplete run" not in (tmp_path / "report" / "report.md").read_text()
