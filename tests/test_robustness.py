"""Robustness of the measures (Dziugaite et al. 2020's sign-error over environments, Jiang et al.
2019's conditional mutual information) on hand-made studies whose answers are known by construction."""
import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy, norm

from lossatlas import plots
from lossatlas.errors import ConfigError
from lossatlas.record import Benchmark, Method, ReportSettings
from lossatlas.report import robustness
from lossatlas.report.collect import Study
from lossatlas.report.comparison import compare
from lossatlas.stats import normalized_conditional_information

LEVELS = {"width": [1, 2, 3], "depth": [1, 2], "lr": [0.1, 0.2]}


def _study(rows, variants, columns, scopes=None, better=None, error="err") -> Study:
    record = Benchmark(name="t", scale="smoke", seeds=[0, 1, 2], variants=variants,
                       methods={c.split(".")[0]: Method("x") for c in columns}, report=ReportSettings(error=error))
    info = {c: {"higher_is_better": (better or {}).get(c, False)} for c in columns}
    scopes = scopes or {c.split(".")[0]: "minimum" for c in columns}
    return Study(record, rows, ["err"], columns, [], scopes, {}, {}, info)


def _design(seeds=3, noise=0.05, lr_matters=True, seed=1) -> list[dict]:
    """Every variant's error its own integer (width 4, depth 2, lr 1 apart) plus seed noise: two
    variants adjacent in error differ in lr alone."""
    generator = np.random.default_rng(seed)
    rows = []
    for width, depth, lr in itertools.product(*LEVELS.values()):
        base = 4 * LEVELS["width"].index(width) + 2 * LEVELS["depth"].index(depth) + \
            (LEVELS["lr"].index(lr) if lr_matters else 0)
        for s in range(seeds):
            error = base + (noise * generator.standard_normal() if noise else 0.01 * s)
            rows.append({"subject": f"w{width}d{depth}l{lr}", "width": width, "depth": depth, "lr": lr, "seed": s,
                         "minimum": s, "err": error})
    return rows


def _known_answers():
    rows = _design()
    swapped = {"w1d1l0.1": "w1d1l0.2", "w1d1l0.2": "w1d1l0.1"}  # errors ~0 and ~1; every neighbour's is >= 2
    error_of = {(r["subject"], r["seed"]): r["err"] for r in rows}
    generator = np.random.default_rng(7)
    for r in rows:
        r["m.perfect"] = r["err"]
        r["m.flat"] = -r["err"]  # declared higher-is-better
        r["m.reversed"] = error_of[(swapped.get(r["subject"], r["subject"]), r["seed"])]
        r["m.seed"] = float(r["seed"])  # independent of the variants: each environment's pairs half each way
        r["m.offset"] = round(r["err"]) + 10.0 * r["seed"]  # matched seeds agree, crossed seeds follow the seed
        r["m.noise"] = generator.random()
    columns = ["m.perfect", "m.flat", "m.reversed", "m.seed", "m.offset", "m.noise"]
    study = _study(rows, LEVELS, columns, better={"m.flat": True})
    return study, {r.measure: r for r in robustness.analyse(study, quantile=0.99)}


def test_sign_errors_worst_case_quantile_and_ranking_follow_the_construction():
    study, found = _known_answers()
    n_environments = 3 * 4 + 1 * 6 + 1 * 6  # width: 3 level pairs x 4 settings of the others; depth, lr: 1 x 6
    for name in ("m.perfect", "m.flat"):
        assert found[name].n_environments == n_environments and found[name].left_out == 0
        assert all(e.sign_error == 0 for e in found[name].environments)
        assert found[name].kendall_tau == pytest.approx(1.0)  # oriented: -err declared higher-is-better tracks err
    reversed_ = found["m.reversed"]
    assert reversed_.worst == 1.0 and [e.label() for e in reversed_.worst_environments()] == \
        ["lr 0.1 → 0.2 (width=1, depth=1)"]
    assert sorted(e.sign_error for e in reversed_.environments) == [0.0] * (n_environments - 1) + [1.0]
    assert reversed_.mean == pytest.approx(1 / n_environments)
    # the 0.99 quantile of 23 zeros and a one, linearly interpolated between order statistics (numpy's
    # default, as the authors' np.percentile): position 0.99 x 23 = 22.77
    assert reversed_.quantile == pytest.approx(0.99 * (n_environments - 1) - (n_environments - 2))
    assert all(e.sign_error == 0.5 for e in found["m.seed"].environments)  # 3 ties (1/2), 3 right, 3 wrong of 9
    # every pair of seeds, not matched seeds: of 9 pairs the 3 matched agree, 3 of the 6 crossed disagree
    assert all(e.sign_error == pytest.approx(1 / 3) for e in found["m.offset"].environments)
    ranked = [r.measure for r in robustness.rank(list(found.values()))]
    assert ranked[:3] == ["m.flat", "m.perfect", "m.offset"]  # worst 0, 0, 1/3 (ties: by name)
    # then the reversed measure (worst 1, mean 1/24) before the seed index, whose mild worst case (1/2) comes of
    # being no better than a coin anywhere; the noise measure falls on either side of the mean's 1/2
    noise = found["m.noise"]
    assert abs(noise.mean - 0.5) < 0.25 and ranked.index("m.reversed") < ranked.index("m.seed")
    better = sorted([r for r in found.values() if r.mean < 0.5], key=lambda r: (r.worst, r.quantile, r.mean, r.measure))
    assert ranked[:len(better)] == [r.measure for r in better] and "m.seed" not in ranked[:len(better)]


def test_conditional_mutual_information_is_one_for_the_error_and_near_zero_for_noise():
    _, found = _known_answers()
    assert found["m.perfect"].cmi == pytest.approx(1.0) and found["m.flat"].cmi == pytest.approx(1.0)
    assert found["m.noise"].cmi < 0.05 and found["m.seed"].cmi < 0.05
    assert 0 < found["m.reversed"].cmi < 1
    assert all(r.cmi_chance < 0.05 for r in found.values())  # shuffled: what no signal reads as
    assert len(found["m.perfect"].cmi_given) <= 2


def test_normalized_conditional_information_matches_the_entropy_identity():
    """I(X;Y|Z) = H(X,Z) + H(Y,Z) - H(X,Y,Z) - H(Z) and H(Y|Z) = H(Y,Z) - H(Z), by scipy's entropy."""
    generator = np.random.default_rng(3)
    z = generator.integers(0, 3, 400)
    x = generator.integers(-1, 2, 400)
    y = np.where(generator.random(400) < 0.7, x, generator.integers(-1, 2, 400)) * (z != 2) + (z == 2)

    def h(*columns):
        return entropy(list(Counter(zip(*columns)).values()))

    expected = (h(x, z) + h(y, z) - h(x, y, z) - h(z)) / (h(y, z) - h(z))
    assert normalized_conditional_information(x, y, z) == pytest.approx(expected)
    assert normalized_conditional_information(y, y, z) == pytest.approx(1.0)
    crossed = np.array(list(itertools.product([0, 1], [-1, 1], [-1, 0, 1])))  # every (z, x, y) once: independent
    assert normalized_conditional_information(crossed[:, 1], crossed[:, 2], crossed[:, 0]) == pytest.approx(0.0)
    assert math.isnan(normalized_conditional_information(x, z, z))  # Y fixed by Z: nothing to predict


def test_the_coin_flip_reference_matches_enumeration_of_every_order():
    """A per-variant measure on a 2 x 2 design: one pair per environment, so a coin flip's worst case
    is 1 unless its order of the 4 variants agrees with the error in all 4 environments."""
    levels = {"a": [0, 1], "b": [0, 1]}
    rows = [{"subject": f"a{a}b{b}", "a": a, "b": b, "seed": s, "minimum": s, "err": 2 * a + b + 0.01 * s,
             "s.x": 2 * a + b} for a, b in itertools.product([0, 1], [0, 1]) for s in range(2)]
    study = _study(rows, levels, ["s.x"], scopes={"s": "subject"})
    found, = robustness.analyse(study, draws=4000)
    means = {(a, b): 2 * a + b + 0.005 for a, b in itertools.product([0, 1], [0, 1])}
    pairs = [((0, 0), (0, 1)), ((1, 0), (1, 1)), ((0, 0), (1, 0)), ((0, 1), (1, 1))]
    worst = []
    for order in itertools.permutations(range(4)):
        value = dict(zip(means, order))
        worst.append(max(float(np.sign(value[q] - value[p]) != np.sign(means[q] - means[p])) for p, q in pairs))
    assert found.n_environments == 4 and found.worst == 0.0
    assert found.chance_worst == pytest.approx(np.mean(worst), abs=4 * 0.5 / math.sqrt(4000))
    assert found.chance_p == pytest.approx(np.mean(np.array(worst) == 0), abs=0.02)  # P(a coin is never wrong)
    assert robustness.analyse(study, draws=4000)[0].chance_worst == found.chance_worst  # seeded


def test_pairs_within_the_seed_noise_are_left_out():
    """Dziugaite et al.'s weight (P - 1/2)_+ with Gaussian noise: P = (2 Phi(|d| / 2 sd) - 1)^2."""
    sd = 0.3
    for delta in (0.1, 0.5, 0.7, 1.5):
        expected = max((2 * norm.cdf(delta / (2 * sd)) - 1) ** 2 - 0.5, 0.0)
        assert robustness.trust(delta, sd, sd) == pytest.approx(expected)
    t = robustness.threshold()
    assert t == pytest.approx(2 * norm.ppf((1 + math.sqrt(0.5)) / 2))
    assert robustness.trust(0.999 * t * sd, sd, sd) == 0 < robustness.trust(1.001 * t * sd, sd, sd)
    assert robustness.trust(0.0, 0.0, 0.0) == 0 and robustness.trust(0.1, math.nan, math.nan) == 0.5
    rows = _design(noise=0, lr_matters=False)  # seeds 0.01 apart (pooled sd 0.01); lr changes nothing
    for r in rows:
        r["m.x"] = r["err"]
    study = _study(rows, LEVELS, ["m.x"])
    found, = robustness.analyse(study)
    assert found.noise_sd == pytest.approx(0.01) and found.left_out == 6 and found.n_environments == 18
    assert {e.factor for e in found.environments} == {"width", "depth"}
    strict, = robustness.analyse(study, min_ess=10)  # 9 pairs an environment: none has 10 effective
    assert strict.n_environments == 0 and strict.note.startswith("no environment left")


def test_designs_too_small_give_a_reason_not_a_crash(tmp_path):
    diagonal = [{"subject": f"v{i}", "width": i, "depth": i, "seed": 0, "minimum": 0, "err": float(i),
                 "m.x": float(i)} for i in (1, 2)]  # the two variants differ in both keys
    study = _study(diagonal, {"width": [1, 2], "depth": [1, 2]}, ["m.x"])
    found, = robustness.analyse(study)
    assert found.n_environments == 0 and "no two variants differ in exactly one" in found.note
    assert "three or more varied hyperparameters" in found.cmi_note and math.isnan(found.cmi)
    rows = [r for r in _design() if r["lr"] == 0.1]
    for r in rows:
        r["m.x"] = r["err"]
    two, = robustness.analyse(_study(rows, {"width": [1, 2, 3], "depth": [1, 2]}, ["m.x"]))
    assert two.worst == 0 and math.isnan(two.cmi) and "(2 here)" in two.cmi_note
    blind, = robustness.analyse(_study(rows, {"width": [1, 2, 3], "depth": [1, 2]}, ["m.x"], error=None))
    assert blind.note.startswith("no error column")
    for case in ([found], [two], [blind], []):
        assert robustness.summary(study, case)
        assert robustness.table(study, case).markdown()
        assert robustness.robustness_csv(case).startswith("measure,")
        with plots.style("draft"):
            assert plots.save_figure(robustness.figure(case, "t"), tmp_path / f"f{len(case)}")[0].exists()
    with pytest.raises(ConfigError, match="quantile"):
        robustness.analyse(study, quantile=1.5)
    with pytest.raises(ConfigError, match="min_ess"):
        robustness.analyse(study, min_ess=0)


def test_report_pieces_name_the_worst_environment_and_the_chance_level():
    study, found = _known_answers()
    ranked = robustness.rank(list(found.values()))
    table = robustness.table(study, ranked)
    row = next(r for r in table.rows if r[1] == "m.reversed")
    assert row[3] == "1.00 (lr 0.1 → 0.2 (width=1, depth=1))" and "(−)" in next(r[1] for r in table.rows
                                                                                   if r[1].startswith("m.flat"))
    assert any("coin flip" in note for note in table.notes)
    lines = robustness.environments_csv(ranked).splitlines()
    assert len(lines) == 1 + sum(r.n_environments for r in ranked)
    assert "m.flat" in robustness.summary(study, ranked)
    read = {r.measure: r for r in robustness.analyse(study, quantile=0.99, compared=compare(study))}
    for name, r in found.items():  # the comparison's taus read, not recomputed: the same numbers
        assert (read[name].kendall_tau, read[name].granulated_tau) == pytest.approx(
            (r.kendall_tau, r.granulated_tau), nan_ok=True)
