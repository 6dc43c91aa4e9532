"""How robustly each measure tracks the error: Dziugaite et al. 2020's sign-error over environments
and Jiang et al. 2019's conditional mutual information, computed from a ``Study`` alone.

Dziugaite et al. 2020 ("In search of robust measures of generalization", NeurIPS) judge a measure
by its worst environment, not its average: an environment is two hyperparameter settings that
differ in exactly one hyperparameter (here: two variants), its coupled pairs are the trained
networks of the two, and its sign-error is how often the measure orders a pair against the error.
A measure that fails in one environment is not robust however well it does on average; with few
seeds, though, the worst of many noisy environments is high by chance alone, so every worst case
is shown beside the one a coin-flip measure reaches on the same pairs.

Jiang et al. 2019 ("Fantastic generalization measures and where to find them", ICLR 2020, §4) ask
whether the measure still tells which of two models has the larger error once at most two
hyperparameters are known: K, the least normalized conditional mutual information of the signs.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from ..errors import ConfigError
from .collect import Study, is_finite
from .comparison import Association, associate, csv_cell, factors, granulated, samples
from .tables import Table

QUANTILE = 0.9  # Dziugaite et al. 2020, Fig. 1: the max, the 90th percentile and the mean of the sign-errors
MIN_ESS = 1.0  # the least effective number of pairs an environment needs (see analyse)
PAPER_MIN_ESS = 12.0  # what Dziugaite et al. required, of their many runs per setting
DRAWS = 1000  # coin-flip measures drawn for the chance reference of the sign-errors
CMI_DRAWS = 20  # shuffles of the measure for K's chance reference (K over many pairs moves little)
SEED = 0
GRID = np.linspace(0.0, 1.0, 101)  # where the coin flips' cumulative distribution is kept
_CHUNK = 250  # coin flips drawn at a time
# robustness.csv
COLUMNS = ("measure", "orientation", "declared", "environments", "left_out", "worst", "worst_environment",
           "quantile_level", "quantile", "mean", "chance_worst", "chance_worst_05", "chance_p", "chance_quantile",
           "noise_sd", "kendall_tau", "granulated_tau", "cmi", "cmi_given", "cmi_chance", "cmi_note", "note")


@dataclass(frozen=True)
class Environment:
    """Two variants that differ in ``factor`` alone, and one measure's sign-error over their pairs."""

    factor: str
    levels: tuple  # the factor's two values, in the config's order
    fixed: tuple  # ((key, value), ...): the other variant keys, shared by both
    sign_error: float
    pairs: int  # pairs of minima beyond the noise (weight > 0)
    effective_pairs: float  # (sum of weights)^2 / sum of squared weights

    def label(self) -> str:
        fixed = ", ".join(f"{key}={value}" for key, value in self.fixed)
        return f"{self.factor} {self.levels[0]} → {self.levels[1]}" + (f" ({fixed})" if fixed else "")


@dataclass
class Robustness:
    """One measure's sign-errors over the environments, their summaries beside a coin flip's, its
    Kendall taus against the error and Jiang et al.'s K."""

    measure: str
    orientation: int = 1  # +1: a larger value predicts a larger error; -1: higher_is_better, a smaller one
    declared: bool = True  # False: no higher_is_better declared; read as a complexity (+1)
    environments: list[Environment] = field(default_factory=list)
    left_out: int = 0  # environments with no pair beyond the noise, or fewer effective pairs than min_ess
    quantile_level: float = QUANTILE
    min_ess: float = MIN_ESS
    draws: int = DRAWS  # coin flips behind the chance reference
    worst: float = math.nan
    quantile: float = math.nan
    mean: float = math.nan
    noise_sd: float = math.nan  # the error's pooled within-variant sd over seeds
    chance_worst: float = math.nan  # the mean worst case of a measure independent of the error, same pairs
    chance_worst_05: float = math.nan  # 5 % of those coin flips have a worst case at or below it
    chance_p: float = math.nan  # the share of coin flips whose worst case is at or below this measure's
    chance_quantile: float = math.nan
    chance_cdf: np.ndarray | None = None  # the coin flips' sign-errors, pooled: fraction <= each GRID value
    kendall_tau: float = math.nan  # of the variant means against the error, oriented
    granulated_tau: float = math.nan  # Jiang et al.'s, oriented
    cmi: float = math.nan  # Jiang et al.'s K
    cmi_given: tuple = ()  # the conditioning set that attains it
    cmi_chance: float = math.nan  # mean K of the measure shuffled over its observations
    cmi_note: str = ""
    note: str = ""

    @property
    def n_environments(self) -> int:
        return len(self.environments)

    def worst_environments(self) -> list[Environment]:
        return [e for e in self.environments if math.isclose(e.sign_error, self.worst, abs_tol=1e-12)]


@dataclass
class _Observed:
    """One measure's observations: minima, or variants for a per-subject measure."""

    keys: list[str]  # the variant keys
    subject: list[str]
    levels: list[tuple]  # their values
    measure: np.ndarray  # oriented: larger predicts a larger error
    error: np.ndarray
    averaged: np.ndarray  # minima behind each observation (a per-subject measure: its variant's seeds)


def analyse(study: Study, quantile: float = QUANTILE, min_ess: float = MIN_ESS, draws: int = DRAWS,
            cmi_draws: int = CMI_DRAWS, compared: list[Association] | None = None) -> list[Robustness]:
    """Every landscape measure's robustness, ranked (``rank``). ``compared``: the report's
    ``comparison.compare(study)``, whose taus are then read rather than recomputed (its permutation
    tests take most of the time).

    Sign-error of an environment (Dziugaite et al. 2020's coupled-network experiments, as their code
    computes it): the
    weighted mean over *all* n_a x n_b pairs of the two variants' minima (seeds are not matched) of
    (1 - sign(Δmeasure) sign(Δerror)) / 2 -- 0 where the measure orders the pair as the error does,
    1 against it, 1/2 where the measure ties. Each unordered environment counts once (the authors'
    code lists both orders, which repeats every value). Pairs within noise: the authors weigh a
    pair by (P - 1/2)_+, P their Hoeffding bound on the probability that both test-set estimates
    lie within |Δerror|/2 of the truth; the Study records no test-set size, and seeds vary more than
    a test set's draw, so here P is that probability under Gaussian seed noise of sd
    ``noise_sd`` (sd / sqrt(k) for a mean over k seeds): ``trust``. A pair of minima then counts
    only where |Δerror| > 2.10 sd. Environments are kept where some pair counts and the effective
    number of pairs (sum w)^2 / sum w^2 reaches ``min_ess``; the authors required 12
    (``PAPER_MIN_ESS``), which 3 seeds (9 pairs) never reach, so the default keeps every
    environment and the coin-flip reference shows what so few pairs allow."""
    _check(quantile, min_ess, draws, cmi_draws)
    error = study.record.report.error
    coupled = environments(study)
    sd = noise_sd(study, error) if error else math.nan
    found = []
    for column in study.measure_columns:
        better = study.metric_info.get(column, {}).get("higher_is_better")
        out = Robustness(column, -1 if better else 1, better is not None, quantile_level=quantile, min_ess=min_ess,
                         draws=draws, noise_sd=sd)
        found.append(out)
        if not error:
            out.note = out.cmi_note = "no error column: [report] error names the column measures should track"
            continue
        observed = _observations(study, column, error, out.orientation)
        _sign_errors(out, observed, coupled, sd, min_ess, draws)
        _taus(study, out, error, compared)
        _information(out, observed, cmi_draws)
    return rank(found)


def rank(found: list[Robustness]) -> list[Robustness]:
    """Most robust first: the worst case, then the quantile, then the mean (Dziugaite et al.'s
    robust sign-error is the worst case; the others break its ties). A measure no better than a
    coin on average (mean sign-error >= 1/2: one that ties in every pair scores 1/2 everywhere) goes
    after those that are, however mild its worst case; unjudged measures last."""
    return sorted(found, key=lambda r: (not r.environments, bool(r.environments) and r.mean >= 0.5,
                                        r.worst if r.environments else 0.0, r.quantile if r.environments else 0.0,
                                        r.mean if r.environments else 0.0, r.measure))


def environments(study: Study) -> list[tuple[str, str, str, tuple, tuple]]:
    """(factor, subject a, subject b, (level a, level b), fixed) for every two variants that differ
    in exactly one variant key, a's level first in the config's order."""
    keys = study.variant_keys
    settings: dict[str, tuple] = {}
    for row in study.rows:
        settings.setdefault(row["subject"], tuple(row.get(k) for k in keys))
    found = []
    for a, b in itertools.combinations(settings, 2):
        differ = [i for i in range(len(keys)) if settings[a][i] != settings[b][i]]
        if len(differ) != 1:
            continue
        i = differ[0]
        order = list(study.record.variants.get(keys[i], []))
        first, second = (order.index(v) if v in order else len(order) for v in (settings[a][i], settings[b][i]))
        if second < first:
            a, b = b, a
        fixed = tuple((k, settings[a][j]) for j, k in enumerate(keys) if j != i)
        found.append((keys[i], a, b, (settings[a][i], settings[b][i]), fixed))
    return found


def noise_sd(study: Study, error: str) -> float:
    """The error's pooled within-variant sample sd: sqrt(sum of squared deviations from each
    variant's mean / sum of (seeds - 1)); nan where no variant has two minima."""
    groups: dict[str, list[float]] = {}
    for row in study.rows:
        if is_finite(row.get(error)):
            groups.setdefault(row["subject"], []).append(float(row[error]))
    dof = sum(len(g) - 1 for g in groups.values())
    if dof == 0:
        return math.nan
    return math.sqrt(sum(float(((np.array(g) - np.mean(g)) ** 2).sum()) for g in groups.values()) / dof)


def trust(delta, sd_a, sd_b) -> np.ndarray:
    """Dziugaite et al.'s pair weight (P - 1/2)_+, P = P(|noise_a| < |Δ|/2) P(|noise_b| < |Δ|/2)
    under Gaussian noise of sd ``sd_a``, ``sd_b``: a lower bound on the chance that the pair's sign
    is that of its variants' means (both within |Δ|/2 of them). 0 for Δ = 0; 1/2 for every other
    pair where the sd is 0 or unknown (nan)."""
    from scipy.special import erf

    delta = np.abs(np.asarray(delta, dtype=float))

    def within(sd):
        sd = np.broadcast_to(np.asarray(sd, dtype=float), delta.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 0, erf(delta / (2 * math.sqrt(2) * np.where(sd > 0, sd, 1.0))), 1.0)

    return np.where(delta > 0, np.maximum(within(sd_a) * within(sd_b) - 0.5, 0.0), 0.0)


def threshold() -> float:
    """|Δerror| / sd beyond which a pair of single minima counts: P > 1/2 in ``trust``."""
    from scipy.special import erfinv

    return float(2 * math.sqrt(2) * erfinv(math.sqrt(0.5)))


def _check(quantile, min_ess, draws, cmi_draws) -> None:
    if not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ConfigError(f"The 'quantile' of the robustness analysis must be in (0, 1]; got {quantile!r}. "
                          "Dziugaite et al. 2020 show the 90th percentile: quantile = 0.9.")
    if not isinstance(min_ess, (int, float)) or not min_ess >= 1:
        raise ConfigError(f"The 'min_ess' of the robustness analysis must be a number >= 1 (an effective number "
                          f"of pairs); got {min_ess!r}. Dziugaite et al. 2020 used {PAPER_MIN_ESS:g}.")
    for name, value in (("draws", draws), ("cmi_draws", cmi_draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The '{name}' of the robustness analysis must be an int >= 1; got {value!r}.")


def _observations(study: Study, column: str, error: str, orientation: int) -> _Observed:
    rows = [r for r in samples(study, column) if is_finite(r.get(column)) and is_finite(r.get(error))]
    once = study.scopes.get(column.split(".", 1)[0]) == "subject"
    seeds: dict[str, int] = {}
    for row in study.rows:
        seeds[row["subject"]] = seeds.get(row["subject"], 0) + is_finite(row.get(error))
    return _Observed(study.variant_keys, [r["subject"] for r in rows],
                     [tuple(r.get(k) for k in study.variant_keys) for r in rows],
                     orientation * np.array([r[column] for r in rows], dtype=float),
                     np.array([r[error] for r in rows], dtype=float),
                     np.array([max(seeds[r["subject"]], 1) if once else 1 for r in rows], dtype=float))


def _sign_errors(out: Robustness, observed: _Observed, coupled: list, sd: float, min_ess: float,
                 draws: int) -> None:
    where: dict[str, list[int]] = {}
    for index, subject in enumerate(observed.subject):
        where.setdefault(subject, []).append(index)
    c, g, noise = observed.measure, observed.error, sd / np.sqrt(observed.averaged)
    design = []  # per kept environment: (i, j, sign of Δerror, weights) of its counted pairs
    for factor, a, b, levels, fixed in coupled:
        pairs = list(itertools.product(where.get(a, []), where.get(b, [])))
        i, j = (np.array([p[k] for p in pairs], dtype=np.intp) for k in (0, 1))
        delta = g[j] - g[i]
        weight = trust(delta, noise[i], noise[j])
        total = float(weight.sum())
        if total <= 0 or total ** 2 / float((weight ** 2).sum()) < min_ess - 1e-9:
            out.left_out += 1
            continue
        counted = weight > 0
        wrong = (1 - np.sign(c[j] - c[i]) * np.sign(delta)) / 2
        out.environments.append(Environment(factor, levels, fixed, float(weight @ wrong / total), int(counted.sum()),
                                            total ** 2 / float((weight ** 2).sum())))
        design.append((i[counted], j[counted], np.sign(delta[counted]), weight[counted]))
    if not out.environments:
        out.note = ("no two variants differ in exactly one hyperparameter: no environment" if not coupled else
                    f"no environment left: none of the {len(coupled)} has a pair of minima whose errors differ beyond "
                    f"the seed noise (|Δerror| > {threshold():.2f} × {sd:.3g}) with {min_ess:g} effective pairs")
        return
    errors = np.array([e.sign_error for e in out.environments])
    out.worst, out.quantile, out.mean = float(errors.max()), float(np.quantile(errors, out.quantile_level)), \
        float(errors.mean())
    _chance(out, design, len(c), draws)


def _chance(out: Robustness, design: list, n: int, draws: int) -> None:
    """The same summaries for measures independent of the error: i.i.d. uniform values per
    observation (each pair a fair coin, the pairs as dependent as the design makes them), drawn
    ``draws`` times with a fixed seed, on the same pairs and weights."""
    i, j, sign, weight = (np.concatenate([d[k] for d in design]) for k in range(4))
    starts = np.cumsum([0] + [len(d[0]) for d in design[:-1]])
    totals = np.add.reduceat(weight, starts)
    generator = np.random.default_rng(SEED)
    worst, quantiles, counts = [], [], np.zeros(len(GRID))
    for start in range(0, draws, _CHUNK):
        u = generator.random((min(_CHUNK, draws - start), n))
        errors = np.add.reduceat((1 - np.sign(u[:, j] - u[:, i]) * sign) / 2 * weight, starts, axis=1) / totals
        worst.append(errors.max(axis=1))
        quantiles.append(np.quantile(errors, out.quantile_level, axis=1))
        counts += np.searchsorted(np.sort(errors.ravel()), GRID + 1e-12, side="right")
    worst = np.concatenate(worst)
    out.chance_worst, out.chance_worst_05 = float(worst.mean()), float(np.quantile(worst, 0.05))
    out.chance_p = float((1 + np.sum(worst <= out.worst + 1e-12)) / (1 + draws))
    out.chance_quantile = float(np.concatenate(quantiles).mean())
    out.chance_cdf = counts / (draws * len(design))


def _taus(study: Study, out: Robustness, error: str, compared: list[Association] | None) -> None:
    """The method comparison's Kendall tau of the variant means and Jiang et al.'s granulated tau,
    oriented like the sign-error (+1: the measure predicts the error's order)."""
    mine = [a for a in compared or () if a.measure == out.measure]
    plain = next((a for a in mine if a.against == error), None)
    if plain is None:
        plain = associate(study, out.measure, error)
    keys = factors(study)
    grained = next((a for a in mine if a.against.startswith(f"{error} (granulated over")), None)
    if grained is None and len(keys) >= 2:
        grained = granulated(study, out.measure, error, keys)
    out.kendall_tau = out.orientation * plain.kendall_tau
    if grained is not None:
        out.granulated_tau = out.orientation * grained.kendall_tau


def _information(out: Robustness, observed: _Observed, draws: int) -> None:
    """Jiang et al. 2019's K = min over sets S of at most two hyperparameters of
    I(V_measure; V_error | U_S) / H(V_error | U_S), V the sign of a difference (0 a state of its own),
    over all ordered pairs of distinct observations, U_S the two observations' values of S -- as
    Jiang's scoring code for the PGDL competition conditions (the paper's |S| <= 2 includes S = {}
    and single hyperparameters; that code took |S| = 2 only). Sets where the error's sign is fixed
    (H = 0) are left out. Needs three varied hyperparameters: with two, S would hold all of them
    and leave only seed noise to predict. The chance reference is the mean K of the measure
    shuffled over the observations, with a fixed seed."""
    keys = [k for k in range(len(observed.keys)) if len({repr(levels[k]) for levels in observed.levels}) >= 2]
    if len(keys) < 3:
        out.cmi_note = (f"K needs three or more varied hyperparameters ({len(keys)} here): conditioning on two of two "
                        "leaves only the seeds to predict")
        return
    n = len(observed.measure)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    gap = np.sign(observed.error[j] - observed.error[i]).astype(np.int64) + 1  # codes 0, 1, 2
    codes = [np.unique([repr(levels[k]) for levels in observed.levels], return_inverse=True)[1] for k in keys]
    given = {}
    for size in (0, 1, 2):
        for chosen in itertools.combinations(range(len(keys)), size):
            z = np.zeros(len(i), dtype=np.int64)
            for k in chosen:
                width = int(codes[k].max()) + 1
                z = (z * width + codes[k][i]) * width + codes[k][j]
            given[chosen] = z

    def least(values):
        sign = np.sign(values[j] - values[i]).astype(np.int64) + 1
        found = [(stats.normalized_conditional_information(sign, gap, z), chosen) for chosen, z in given.items()]
        found = [f for f in found if not math.isnan(f[0])]
        return min(found, key=lambda f: f[0]) if found else (math.nan, None)

    value, chosen = least(observed.measure)
    if chosen is None:
        out.cmi_note = "every conditioning set fixes the error's sign: nothing left to predict"
        return
    out.cmi, out.cmi_given = value, tuple(observed.keys[keys[k]] for k in chosen)
    generator = np.random.default_rng(SEED)
    out.cmi_chance = float(np.nanmean([least(generator.permutation(observed.measure))[0] for _ in range(draws)]))


# -- the report's pieces -------------------------------------------------------------------------
def robustness_csv(found: list[Robustness]) -> str:
    """One row per measure, in rank order (the environments themselves: ``environments_csv``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in found:
        row = {**{name: getattr(r, name, "") for name in COLUMNS}, "environments": r.n_environments,
               "worst_environment": _where(r),
               "cmi_given": ", ".join(r.cmi_given)}
        writer.writerow([csv_cell(row[name]) for name in COLUMNS])
    return buffer.getvalue()


def environments_csv(found: list[Robustness]) -> str:
    """One row per measure and environment: its sign-error and the pairs behind it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["measure", "factor", "from", "to", "fixed", "sign_error", "pairs", "effective_pairs"])
    for r in found:
        for e in r.environments:
            writer.writerow([r.measure, e.factor, e.levels[0], e.levels[1],
                             "; ".join(f"{k}={v}" for k, v in e.fixed), csv_cell(e.sign_error), e.pairs,
                             csv_cell(e.effective_pairs)])
    return buffer.getvalue()


def table(study: Study, found: list[Robustness]) -> Table:
    """The measures ranked by robustness, with notes that say what each number can and cannot show."""
    error = study.record.report.error or "the error"
    level = _percent(found)
    header = ["rank", "measure", "environments", "worst sign-error", f"{level} percentile", "mean",
              "coin flip: worst (5 %)", f"τ vs {error}", "granulated τ", "K (shuffled)"]
    rows = []
    for place, r in enumerate(found, 1):
        name = study.display(r.measure) + ("" if r.declared else " †") + (" (−)" if r.orientation < 0 else "")
        if not r.environments:
            rows.append(["–", name, f"0 (+{r.left_out} left out)" if r.left_out else "0", r.note or "–",
                         "–", "–", "–", _signed(r.kendall_tau), _signed(r.granulated_tau), _information_cell(r)])
            continue
        rows.append([str(place), name, str(r.n_environments) + (f" (+{r.left_out} left out)" if r.left_out else ""),
                     f"{r.worst:.2f} ({_where(r)})", f"{r.quantile:.2f}", f"{r.mean:.2f}",
                     f"{r.chance_worst:.2f} ({r.chance_worst_05:.2f})", _signed(r.kendall_tau),
                     _signed(r.granulated_tau), _information_cell(r)])
    sd = next((r.noise_sd for r in found), math.nan)
    sd_text = "unknown: one minimum per variant, every pair counts alike" if math.isnan(sd) else f"{sd:.3g}"
    min_ess, draws = (found[0].min_ess, found[0].draws) if found else (MIN_ESS, DRAWS)
    notes = [
        "Dziugaite et al. 2020's robust sign-error. An environment is two variants that differ in one hyperparameter; "
        "its sign-error is the weighted mean, over every pair of their minima (all seeds of one against all of the "
        "other, as in the authors' code), of (1 − sign(Δmeasure)·sign(Δerror))/2: 0 where the measure orders the pair "
        "as the error does, 1 against it, ½ where the measure ties. (−): declared higher-is-better, so negated first "
        "(larger predicts a smaller error); †: no direction declared, read as a complexity (larger predicts a larger "
        "error), as all of Dziugaite et al.'s measures are.",
        "Pairs within the seed noise are left out, by Dziugaite et al.'s rule with the seeds' spread in place of "
        "their test-set bound: a pair weighs (P − ½)₊, P the probability under Gaussian noise of the pooled "
        f"within-variant sd of {error} ({sd_text}) that both errors lie within |Δerror|/2 of their variants' means: "
        f"two single minima count only where |Δerror| > {threshold():.2f} sd. An environment needs a counted pair "
        f"and at least {min_ess:g} effective pairs (Σw)²/Σw² (Dziugaite et al. asked {PAPER_MIN_ESS:g} of their many "
        "runs); 'left out': those that had not.",
        f"Ranked by the worst case, then the {level} percentile, then the mean: the worst case is Dziugaite et al.'s "
        "robust sign-error (their Fig. 1 shows the three). A measure whose mean is ½ or more (no better than a coin "
        "on average; one that ties in every pair scores ½ everywhere) ranks after those below ½.",
        "What the numbers can show. An environment's sign-error averages its pairs, which share minima (each minimum "
        "is in a pair with every minimum of the other variant), so it rests on fewer independent pieces than pairs; "
        "environments share variants (one per neighbour), so one odd variant moves several. The worst of many noisy "
        "environments is high by chance alone: 'coin flip' is the worst case a measure independent of the error "
        f"reaches on the same pairs and weights (mean over {draws} seeded draws of i.i.d. values per minimum; in "
        "brackets its 5th percentile). A worst case near it says nothing either way. Beating a coin flip takes a "
        "worst case below ½ (a coin's expected sign-error in every environment, Dziugaite et al.'s bar) and below "
        "that 5th percentile (one-sided, level 0.05; robustness.csv: chance_p).",
        "τ: Kendall's τ of the variant means against the error, as in the method comparison; granulated τ: Jiang et "
        "al. 2019's, where two or more factors vary; both oriented like the sign-error (+1: the measure orders the "
        "variants as the error does).",
        "K: Jiang et al. 2019's conditional mutual information, the least over sets S of at most two hyperparameters "
        "of I(V_measure; V_error | U_S) / H(V_error | U_S): V the sign of the difference over every ordered pair of "
        "minima, U_S the pair's values of S; 1: the measure's sign fixes the error's, 0: none of it. Plug-in "
        "frequencies read few pairs per value of U_S as dependence; in brackets K of the measure shuffled over the "
        f"minima (mean of {CMI_DRAWS}), what no signal reads as here. It needs three or more varied "
        "hyperparameters." + "".join(f" Not computed here: {why}." for why in dict.fromkeys(
            r.cmi_note for r in found if math.isnan(r.cmi) and r.cmi_note)),
        "Every number per environment: robustness_environments.csv; per measure: robustness.csv."]
    return Table(f"{study.record.name} ({study.record.scale} scale): robustness of the measures", header, rows, notes)


def figure(found: list[Robustness], title: str, display=str):
    """The cumulative distribution of each measure's sign-errors over the environments, as
    Dziugaite et al. 2020 show them (their Fig. 1 as curves), with a coin flip's on the same pairs
    (grey, dashed); a curve far up and to the left is a robust measure."""
    import matplotlib.pyplot as plt

    from .. import plots

    drawn = [r for r in found if r.environments]
    colours = [c for name, c in plots.OKABE_ITO.items() if name != "yellow"]  # yellow is unreadable on white
    ncols = 1 if len(drawn) <= 3 else 2 if len(drawn) <= 6 else 3
    rows = math.ceil((len(drawn) + 1) / ncols)  # the legend's, the coin flip's line included
    fig, ax = plt.subplots(figsize=(plots.COLUMN if len(drawn) <= 6 else plots.PAGE, 2.4 + 0.14 * rows),
                           layout="constrained")
    chance = next((r for r in drawn if r.chance_cdf is not None), None)
    if chance is not None:
        ax.step(GRID, chance.chance_cdf, where="post", color="grey", ls="--", lw=1,
                label=f"coin flip (worst {chance.chance_worst:.2f})")
    for index, r in enumerate(drawn):
        values = np.sort([e.sign_error for e in r.environments])
        x = np.concatenate([[0.0], values, [1.0]])
        y = np.concatenate([[0.0], np.arange(1, len(values) + 1) / len(values), [1.0]])
        ax.step(x, y, where="post", color=colours[index % len(colours)], ls=("-", "--", "-.", ":")[
            index // len(colours) % 4], label=f"{display(r.measure)} (worst {r.worst:.2f})")
    if not drawn:
        plots.no_data(ax, "no environment (no two variants differ in one hyperparameter beyond the noise)")
    ax.axvline(0.5, color="grey", lw=0.6)
    ax.set(xlim=(-0.02, 1.02), ylim=(0, 1.02), ylabel="fraction of environments ≤ x",
           xlabel="sign-error of an environment")
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=ncols)
    ax.set_title(title)
    return fig


def summary(study: Study, found: list[Robustness]) -> str:
    """Two or three sentences for the report's robustness section."""
    if not found:
        return "Robustness (Dziugaite et al. 2020): no landscape measure to judge."
    judged = [r for r in found if r.environments]
    if not judged:
        return f"Robustness (Dziugaite et al. 2020): not judged -- {found[0].note}."
    best, level = judged[0], _percent(found)
    text = [f"Over {best.n_environments} environments (two variants that differ in one hyperparameter), the most "
            f"robust measure is {study.display(best.measure)}: worst sign-error {best.worst:.2f}, {level} percentile "
            f"{best.quantile:.2f}, mean {best.mean:.2f}, where a measure independent of the error reaches a worst case "
            f"of {best.chance_worst:.2f} on the same pairs (5 % of coin flips ≤ {best.chance_worst_05:.2f})."]
    clear = [r for r in judged if r.worst < 0.5 and r.chance_p <= 0.05]
    text.append(f"{len(clear)} of {len(judged)} measures beat a coin flip in their worst environment (below ½, and "
                "lower than 5 % of coin flips reach)" if clear else "No measure beats a coin flip in its worst "
                "environment (below ½, and lower than 5 % of coin flips reach): none is shown robust at this design.")
    informative = [r for r in judged if not math.isnan(r.cmi)]
    if informative:
        top = max(informative, key=lambda r: r.cmi)
        text.append(f"Jiang et al. 2019's conditional mutual information K is highest for {study.display(top.measure)} "
                    f"({top.cmi:.2f}; shuffled, {top.cmi_chance:.2f}).")
    else:
        text.append(f"Jiang et al. 2019's K: {found[0].cmi_note or 'not defined'}.")
    return " ".join(t if t.endswith(".") else t + "." for t in text)


def _percent(found: list[Robustness]) -> str:
    value = 100 * (found[0].quantile_level if found else QUANTILE)
    return f"{value:g}th"


def _where(r: Robustness) -> str:
    """The worst environment, or how many share the worst case."""
    worst = r.worst_environments()
    return worst[0].label() if len(worst) == 1 else f"{len(worst)} environments" if worst else ""


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def _information_cell(r: Robustness) -> str:
    if math.isnan(r.cmi):
        return "–"  # why: once, in the table's notes
    return f"{r.cmi:.2f} ({r.cmi_chance:.2f})"
