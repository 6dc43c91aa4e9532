"""Report logic on hand-made studies (claims, correlations, formats) and config validation of reports."""
import csv
import dataclasses
import io
import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from lossatlas import harness
from lossatlas.errors import ConfigError
from lossatlas.record import Benchmark, Claim, Method, ReportSettings
from lossatlas.report.collect import Study
from lossatlas.report.comparison import associate, compare, comparison_csv
from lossatlas.report.tables import Table, comparison_table, evaluate_claim, evaluate_claims, mean_std


def _study(values_by_beta: dict, scope: str = "minimum") -> Study:
    rows = []
    for beta, values in values_by_beta.items():
        for seed, value in enumerate(values):
            rows.append({"subject": f"b{beta}", "beta": beta, "seed": seed, "minimum": seed, "err": value / 10,
                         "m.x": value})
    record = Benchmark(name="t", scale="smoke", seeds=[0, 1], variants={"beta": list(values_by_beta)},
                       methods={"m": Method("x")}, report=ReportSettings(factor="beta", error="err"))
    return Study(record, rows, ["err"], ["m.x"], [], {"m": scope}, {}, {})


def _claim(direction, **extra):
    return Claim(**{"metric": "m.x", "direction": direction, "text": "t", **extra})


def _reported(study, **settings):
    """``study`` with its record's [report] settings changed."""
    study.record = dataclasses.replace(study.record, report=dataclasses.replace(study.record.report, **settings))
    return study


def _verdicts(study, *claims):
    _reported(study, claims=claims)
    return [found["verdict"] for found in evaluate_claims(study)]


def test_claim_verdicts_follow_the_data():
    rising = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})  # exact p = 16 / 720: 8 orders per sign tie tau = 1
    assert _verdicts(rising, _claim("increasing")) == ["reproduced"]
    assert _verdicts(rising, _claim("decreasing"))[0].startswith("not reproduced (opposite direction, p=0.022")
    noisy = _study({1.0: [1, 6], 5.0: [2, 3], 10.0: [4, 5]})
    assert _verdicts(noisy, _claim("increasing"))[0].startswith("same direction, not significant")
    flat = _study({1.0: [2, 2], 5.0: [2, 2]})
    assert _verdicts(flat, _claim("increasing")) == ["not reproduced (no change)"]
    assert _verdicts(rising, _claim("increasing", factor="depth"))[0].startswith("not testable")
    assert _verdicts(rising, _claim("increasing", metric="m.y"))[0].startswith("not available")


def test_claim_p_values_are_adjusted_across_the_claims():
    rising = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    alone, = _verdicts(rising, _claim("increasing"))
    assert alone == "reproduced"  # p = 0.022
    three = _verdicts(rising, _claim("increasing"), _claim("increasing"), _claim("increasing"))
    assert all(v.startswith("same direction, not significant (p=0.022, adjusted 0.067") for v in three)  # Holm: x3


def test_benjamini_hochberg_when_the_config_asks_for_it():
    study = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    _reported(study, correction="bh")
    three = _verdicts(study, _claim("increasing"), _claim("increasing"), _claim("increasing"))
    assert three == ["reproduced"] * 3  # equal p-values: BH leaves them at 0.022, where Holm triples them
    assert "Benjamini-Hochberg" in " ".join(comparison_table(study, [], compare(study)).notes)
    plan = harness.plan({**_BASE, "report": {"factor": "beta", "correction": "bh", "permutations": 5000}}, "smoke")
    assert plan.report.correction == "bh" and plan.report.permutations == 5000


def test_three_seeds_at_two_levels_cannot_be_significant_and_the_verdict_says_so():
    """A factor whose levels are the variants: its seeds are the replicates (under the null the
    factor changes nothing, so all six minima share one distribution)."""
    separated = _study({0.0: [1, 2, 3], 1.0: [7, 8, 9]})  # perfectly separated, but 20 ways to split 6 into 3 + 3
    verdict, = _verdicts(separated, _claim("increasing"))
    assert "p=0.1," in verdict and "no order of this design reaches p < 0.1" in verdict


def test_against_the_error_the_variant_is_the_unit():
    """Measure and error both vary from seed to seed and share each variant's offsets: the seeds are
    averaged, and two variants support no test however many seeds they have."""
    two = associate(_study({0.0: [1, 2, 3], 1.0: [7, 8, 9]}), "m.x", "err")
    assert two.note == "2 variants < 3" and two.n == 2 and two.n_minima == 6
    values = {1.0: [1, 7], 2.0: [3, 2], 3.0: [5, 9], 4.0: [4, 4], 5.0: [8, 6], 6.0: [2, 3]}
    study = _study(values)
    for row in study.rows:  # an error that does not simply follow the measure
        row["err"] = (row["m.x"] * 7) % 5 + row["beta"]
    found = associate(study, "m.x", "err")
    means = np.array([[np.mean([r[c] for r in study.rows if r["beta"] == b]) for c in ("m.x", "err")] for b in values])
    tau = kendalltau(*means.T).statistic
    enumerated = np.mean([abs(kendalltau(means[:, 0], means[list(o), 1]).statistic) >= abs(tau) - 1e-12
                          for o in itertools.permutations(range(6))])
    assert (found.kendall_tau, found.p_value, found.n, found.n_minima) == pytest.approx((tau, enumerated, 6, 12))
    assert found.ci_low <= found.kendall_tau <= found.ci_high and "clusters permuted" in found.test


def test_a_claim_can_name_its_own_factor_and_filter_rows():
    study = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    for row in study.rows:  # depth varies too: deeper is lower, but only where beta > 1
        row["depth"] = 20 if row["seed"] == 0 else 56
        row["subject"] = f"b{row['beta']}_d{row['depth']}"
        row["m.x"] = row["m.x"] - (10 * (row["depth"] == 56) if row["beta"] > 1 else 0)
    study.record = dataclasses.replace(study.record, variants={**study.record.variants, "depth": [20, 56]})
    verdict, = _verdicts(study, _claim("decreasing", factor="depth", where={"beta": 10.0}))
    assert verdict.startswith("same direction, not significant (2 variants < 3)")  # two variants at beta = 10
    assert "depth=20: 5 → depth=56: -4" in evaluate_claim(study, _claim("decreasing", factor="depth",
                                                                         where={"beta": 10.0}))["levels"]
    assert _verdicts(study, _claim("decreasing", factor="depth", where={"beta": 1.0})) == \
        ["not reproduced (opposite direction)"]  # at beta = 1 depth adds nothing: 1 -> 2


def test_associations_match_scipy_and_enumeration_and_per_subject_metrics_count_once():
    study = _study({1.0: [1, 7], 5.0: [3, 2], 10.0: [5, 9]})
    found = associate(study, "m.x", "beta")  # beta's levels are the variants: the seeds replicate them
    beta, x = np.array([1, 1, 5, 5, 10, 10.0]), np.array([1, 7, 3, 2, 5, 9.0])
    tau = kendalltau(x, beta).statistic
    enumerated = np.mean([abs(kendalltau(x, beta[list(o)]).statistic) >= abs(tau) - 1e-12
                          for o in itertools.permutations(range(6))])
    assert (found.kendall_tau, found.spearman_rho, found.p_value, found.n, found.n_minima) == \
        pytest.approx((tau, spearmanr(x, beta).statistic, enumerated, 3, 6))
    assert found.exact and found.ci_low <= found.kendall_tau <= found.ci_high and "observations" in found.test
    once = _study({1.0: [4, 4], 5.0: [2, 2], 10.0: [9, 9]}, scope="subject")
    assert associate(once, "m.x", "beta").n == 3 and "no interval" in associate(once, "m.x", "beta").note
    assert associate(_study({1.0: [1, 2, 3]}), "m.x", "beta").note == "constant"  # one beta
    assert associate(_study({1.0: [1, 2]}), "m.x", "err").note == "1 variants < 3"


def test_comparison_csv_has_one_row_per_measure_and_target_with_adjusted_p():
    rows = [{"subject": f"b{beta}w{width}", "beta": beta, "width": width, "seed": seed, "minimum": seed,
             "err": (beta * 10 + width + seed) / 10, "m.x": beta * 10 + width + seed}
            for beta in (0.0, 1.0) for width in (1, 2, 3, 4, 5) for seed in (0, 1)]
    record = Benchmark(name="t", scale="smoke", seeds=[0, 1], variants={"beta": [0.0, 1.0], "width": [1, 2, 3, 4, 5]},
                       methods={"m": Method("x")}, report=ReportSettings(factor="beta", error="err"))
    found = compare(Study(record, rows, ["err"], ["m.x"], [], {"m": "minimum"}, {}, {}))
    table = list(csv.DictReader(io.StringIO(comparison_csv(found))))
    assert [(r["measure"], r["against"]) for r in table][:3] == [("m.x", "err"), ("m.x", "beta"), ("m.x", "width")]
    for column in ("n", "n_minima", "kendall_tau", "p_value", "p_adjusted"):
        assert all(r[column] != "" for r in table[:3]), column
    assert table[0]["ci_low"] != "" and table[1]["ci_low"] == ""  # a factor within the others' levels: no interval
    assert "within strata" in table[1]["test"] and "clusters permuted" in table[0]["test"]
    assert {r["n"] for r in table[:3]} == {"10"} and {r["n_minima"] for r in table[:3]} == {"20"}
    p = sorted(float(r["p_value"]) for r in table[:3])
    assert sorted(float(r["p_adjusted"]) for r in table[:3]) == pytest.approx(
        np.maximum.accumulate([min(1, 3 * p[0]), min(1, 2 * p[1]), p[2]]))  # Holm
    assert float(table[1]["cliffs_delta"]) == 1.0  # every variant mean at beta = 1 above every one at beta = 0


def test_mean_std_and_formats():
    assert mean_std([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std([1.0, float("nan")]) == "1 (1 non-finite)"
    table = Table("a_b", ["x", "y"], [["1 ± 2", "ρ"]], ["note"])
    assert "\\pm" in table.latex() and "a\\_b" in table.latex() and "$\\rho$" in table.latex()
    assert "<td>1 ± 2</td>" in table.html() and "| 1 ± 2 | ρ |" in table.markdown()
    study = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    rows = comparison_table(study, [], compare(study)).rows
    assert rows[0][0] == "m.x" and rows[0][1] == "τ +1.00 p=0.33 (adj. 0.33), 3 variants"  # vs the error
    assert rows[0][2] == "τ +0.89 [+0.48, +0.98] p=0.022 (adj. 0.044), 6 minima of 3 variants"  # vs beta (tau-b, ties)


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
                                    "factor": "depth"}]}, "factor 'depth' is neither a problem parameter"),
    ({"factor": "beta", "claims": [{"metric": "mt.x", "direction": "increasing", "text": "t"}]},
     "metric 'mt.x': 'merge-tree' has no metric 'x'"),
    ({"factor": "beta", "correction": "bonferroni"}, "'correction' parameter of config [report] must be one of"),
    ({"factor": "beta", "permutations": 10}, "'permutations' parameter of config [report] must be an int in [1000"),
    ({"factor": "beta", "names": {"mt.nope": "x"}}, "names: 'mt.nope' is no metric"),
    ({"factor": "beta", "names": {"mt.n_saddles": 3}}, "display name of 'mt.n_saddles' must be a non-empty string"),
])
def test_report_config_errors_name_the_offender(report, message):
    with pytest.raises(ConfigError, match=None) as err:
        harness.plan({**_BASE, "report": report}, "smoke")
    assert message in str(err.value)


def test_one_analyzer_under_two_labels():
    plan = harness.plan({**_BASE, "methods": {"mt": {"analyzer": "merge-tree"},
                                              "mt-hessian": {"analyzer": "merge-tree", "directions": "hessian"}}})
    assert plan.methods["mt-hessian"] == Method("merge-tree", {"directions": "hessian"})
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


def test_sensitivity_flags_a_measure_whose_verdict_flips_with_a_nuisance_setting():
    from lossatlas.report.sensitivity import analyse, verdicts

    study = _study({0.0: [1, 2, 3], 1.0: [7, 8, 9]})  # at the base, m.x rises with beta
    flipped = [{**row, "m.x": -row["m.x"]} for row in study.rows]  # a direction seed where it falls
    shifted = [{**row, "m.x": row["m.x"] + 0.5} for row in study.rows]  # one where it only moves
    study.sensitivity = {"m": {"seed=1": shifted}}
    (stable,) = analyse(study)[1]
    assert stable.holds and stable.taus["beta"][0] == stable.taus["beta"][1] > 0
    assert stable.nuisance_sd == pytest.approx(np.std([0, 0.5], ddof=1))  # every minimum moves by 0.5
    assert stable.between_sd == pytest.approx(np.std([1, 2, 3, 7, 8, 9], ddof=1))
    study.sensitivity = {"m": {"seed=1": shifted, "seed=2": flipped}}
    per_setting, (unstable,) = analyse(study)
    assert not unstable.holds and unstable.order_tau_min == -1.0
    assert [(s, a.against) for s, a in per_setting] == [(s, t) for t in ("err", "beta")
                                                        for s in ("base", "seed=1", "seed=2")]
    found = compare(study)
    assert verdicts([unstable]) == {"m.x": "no"}
    assert comparison_table(study, [], found, verdicts([unstable])).rows[0][0] == "m.x (unstable)"
    assert comparison_table(study, [], found).rows[0][0] == "m.x"  # the comparison itself is left as it was
    stable_column = [row["stable"] for row in csv.DictReader(io.StringIO(comparison_csv(found, verdicts([unstable]))))]
    assert stable_column == ["no"] * len(found)


def test_sensitivity_config_names_the_offender():
    base = {**_BASE, "report": {"factor": "beta"}}
    plan = harness.plan({**base, "sensitivity": {"mt": {"seed": [0, 1, 2], "resolution": [7]}}}, "smoke")
    assert list(plan.sensitivity["mt"]) == ["seed=1", "seed=2", "resolution=7"]  # seed 0 is the base itself
    assert plan.sensitivity["mt"]["resolution=7"] == {"resolution": 7}
    for sensitivity, message in [({"nope": {"seed": [1]}}, "[sensitivity.nope] names no method"),
                                 ({"mt": {"seed": 3}}, "'seed' must be a non-empty list"),
                                 ({"mt": {"resolution": [1]}}, "The 'resolution' parameter"),
                                 ({"mt": {"colour": [1]}}, "colour"),
                                 ({"mt": {"minimum": [1]}}, "varies 'minimum', which a benchmark chooses itself")]:
        with pytest.raises(ConfigError) as err:
            harness.plan({**base, "sensitivity": sensitivity}, "smoke")
        assert message in str(err.value)


def test_display_names_from_the_config_label_tables():
    study = _study({1.0: [1, 2], 5.0: [3, 4], 10.0: [5, 6]})
    _reported(study, names={"m.x": "the x measure"})
    assert comparison_table(study, [], compare(study)).rows[0][0] == "the x measure"
    plan = harness.plan({**_BASE, "report": {"factor": "beta", "names": {"mt.n_saddles": "saddles"}}}, "smoke")
    assert plan.report.names == {"mt.n_saddles": "saddles"}


def test_a_store_of_analyze_calls_alone_gets_a_report_of_what_is_there(tmp_path):
    from lossatlas import Recipe, Store, analyze, train_minima
    from lossatlas.cli import main
    from lossatlas.errors import StoreError
    from lossatlas.problems import himmelblau
    from lossatlas.report import write_report

    with Store(tmp_path / "mine.h5") as store:
        with pytest.raises(StoreError, match="no trained or added minima"):
            write_report(store, tmp_path / "empty")
        for name, shift in (("well_a", 0.0), ("well_b", 0.5)):
            subject = himmelblau()
            subject.name = name
            subject.theta0 = subject.theta0 + shift
            minima = train_minima(store, subject, Recipe(lr=0.01, epochs=2, steps_per_epoch=50), seeds=[0, 1],
                                  progress=False)
            for minimum in minima:
                analyze(store, subject, "hessian", progress=False, minimum=minimum.index)
            analyze(store, subject, "hessian", progress=False, minimum=0, k=1)  # a second parameter set
            analyze(store, subject, "merge-tree", progress=False, at="theta0", resolution=5)  # no minimum: no row
    assert main(["report", str(tmp_path / "mine.h5"), "--out", str(tmp_path / "report")]) == 0
    with open(tmp_path / "report" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["subject"], r["minimum"]) for r in rows] == [("well_a", "0"), ("well_a", "1"), ("well_b", "0"),
                                                            ("well_b", "1")]
    assert rows[0]["hessian-2.top_eigenvalue"] != "" and rows[1]["hessian-2.top_eigenvalue"] == ""
    with Store(tmp_path / "mine.h5", "r") as store:  # each cell is the stored result at that minimum
        stored = {(r.subject, r.params["minimum"]): r.metrics["trace"] for r in store.results("well_b", "hessian")
                  if r.params["k"] != 1}
    assert float(rows[3]["hessian.trace"]) == stored[("well_b", 1)]
    assert not any(c.startswith("merge-tree") for c in rows[0])  # at theta0: not at a minimum
    report = (tmp_path / "report" / "report.md").read_text()
    assert "no benchmark record" in report and "well_b" in report


def test_a_report_of_added_checkpoints_names_and_counts_them(tmp_path):
    import torch

    from lossatlas import Store, add_minimum, analyze
    from lossatlas.report import write_report
    from lossatlas.subjects import FunctionSubject

    subject = FunctionSubject(lambda t: (((t - 1) ** 2 + (t - 1) ** 4) * torch.arange(1, 4)).sum(),
                              torch.zeros(3, dtype=torch.float64), name="bowl")
    with Store(tmp_path / "mine.h5") as store:
        for shift in (0.0, 0.1, 0.3):
            minimum = add_minimum(store, subject, torch.full((3,), 1.0 + shift, dtype=torch.float64))
            analyze(store, subject, "hessian", progress=False, minimum=minimum.index)
            analyze(store, subject, "interpolation", progress=False, minimum=minimum.index, n_points=5)
        write_report(store, tmp_path / "report", figures=False)
        stored = sum(r.wall_time_s for r in store.results("bowl", "hessian"))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "3 added checkpoint(s) (no training seed)" in report and "Seeds: [-1]" not in report
    assert "over the 3 minima of each variant" in report and "seed -1" not in report
    timing = next(line for line in report.splitlines() if line.startswith("| hessian |"))
    assert timing.split("|")[2].strip() == "3"  # three results, not one per (subject, seed -1)
    assert float(timing.split("|")[3]) == pytest.approx(stored, abs=0.1)
    assert "too few to tell agreement from chance" in report and "disagree (" not in report


def test_a_flip_needs_taus_beyond_the_noise_band_and_nothing_compared_is_no_verdict():
    from lossatlas.report.sensitivity import FLIP, Stability

    small = Stability("m.x", ["base", "seed=1"], {"err": [FLIP / 2, -FLIP / 2]})
    assert small.holds is True  # both near 0: noise, not a flip
    assert Stability("m.x", ["base", "seed=1"], {"err": [FLIP, -FLIP]}).holds is False
    assert Stability("m.x", ["base"], {"err": [0.5]}).holds is None  # one setting: nothing to compare
    assert Stability("m.x", ["base", "seed=1"], {"err": [0.0, -2 * FLIP]}).holds is False  # no change -> a direction
