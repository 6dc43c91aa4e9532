"""The statistics of the method-comparison report: rank correlations with permutation
p-values, granulated Kendall tau, multiple-testing correction, bootstrap intervals, effect sizes.

Why permutation p-values: with a handful of seeds and variants the t-approximation scipy uses
for Spearman's rho is wrong (it gives p = 0 for a perfect rank order of 4 points, where the exact
two-sided p is 1/12). Here the null distribution of the statistic is enumerated exactly for
n <= ``EXACT_MAX_N`` (8! = 40 320 orders) and drawn by seeded Monte Carlo otherwise, where the p-value
is (1 + hits) / (1 + permutations), never 0. Both statistics are vectorized over permutations: the
denominators of Kendall's tau-b and of Spearman's rho do not change when y is permuted.

Effect size between two levels of a factor: Cliff's delta (rank-based, like tau).

Granulated tau follows Jiang et al. 2019 ("Fantastic Generalization Measures and Where to Find
Them", §4, eq. 4): per hyperparameter axis, Kendall's tau over that axis's values with every
other axis held fixed, averaged over the settings of the others; then averaged over axes.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

EXACT_MAX_N = 8
PERMUTATIONS = 10_000
STATISTICS = ("kendall", "spearman")


@dataclass(frozen=True)
class Test:
    """A rank correlation and its two-sided permutation p-value."""

    statistic: float  # Kendall's tau-b or Spearman's rho; nan where undefined (n < 2 or a constant side)
    p: float
    n: int
    permutations: int  # the orders enumerated (exact) or drawn (Monte Carlo)
    exact: bool
    p_min: float = math.nan  # the smallest p this design allows (that of the most concordant order; Monte
    # Carlo: estimated from the same draws): with 3 seeds at each of two levels no result reaches p < 0.1


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties in either variable handled as scipy does); nan if undefined."""
    x, y = _pair(x, y)
    return float(kendall_tau_rows(x[None], y[None])[0]) if len(x) >= 2 else math.nan


def spearman_rho(x, y) -> float:
    """Spearman's rho: Pearson's correlation of the (average) ranks; nan if undefined."""
    x, y = _pair(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    rx, ry = _centred_ranks(x), _centred_ranks(y)
    return float(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)))


def permutation_test(x, y, statistic: str = "kendall", permutations: int = PERMUTATIONS, seed: int = 0) -> Test:
    """Two-sided test of no association: the share of orders of ``y`` whose statistic is at least
    as far from 0 as the observed one (to 1e-12, so exact ties count). All n! orders for
    n <= ``EXACT_MAX_N``, else ``permutations`` seeded random orders plus the observed one."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}; got {statistic!r}.")
    x, y = _pair(x, y)
    n = len(x)
    observed = kendall_tau(x, y) if statistic == "kendall" else spearman_rho(x, y)
    if math.isnan(observed):
        return Test(math.nan, math.nan, n, 0, True)
    exact = n <= EXACT_MAX_N
    orders = _all_orders(n) if exact else _random_orders(n, permutations, seed)
    values = _permuted(x, y, orders, statistic)
    most = kendall_tau if statistic == "kendall" else spearman_rho
    extreme = abs(most(np.sort(x), np.sort(y)))  # the most concordant arrangement the design allows

    def share(hits: int) -> float:
        return min(1.0, hits / len(orders) if exact else (1 + hits) / (1 + len(orders)))

    p = share(int((np.abs(values) >= abs(observed) - 1e-12).sum()))
    return Test(observed, p, n, len(orders), exact, share(int((np.abs(values) >= extreme - 1e-12).sum())))


EXACT_MAX_ORDERS = 40_320


def stratified_tau(x, y, strata) -> float:
    """The statistic of ``stratified_permutation_test`` alone: Kendall's tau over the pairs that
    share a stratum; nan where no such pair is untied in both."""
    return float(stratified_tau_rows(np.asarray(x, dtype=float)[None], np.asarray(y, dtype=float)[None], strata)[0])


def stratified_tau_rows(x: np.ndarray, y: np.ndarray, strata) -> np.ndarray:
    """``stratified_tau`` of every row pair of (B, n) arrays (or (1, n) against (B, n)): the
    within-strata concordance over sqrt(#pairs untied in x x #pairs untied in y), Kendall's tau-b
    of ``kendall_tau_rows`` for one stratum; nan where a row has no untied pair."""
    i, j = _stratum_pairs(strata)[1:]
    sx, sy = np.sign(x[:, j] - x[:, i]), np.sign(y[:, j] - y[:, i])
    denominator = np.sqrt((sx != 0).sum(axis=1) * (sy != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (sx * sy).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def _stratum_pairs(strata) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The observations of each stratum (an entry per observation: a value or a tuple of them),
    and the index pairs (i, j), i < j, that share one."""
    groups: dict[tuple, list[int]] = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(tuple(stratum) if isinstance(stratum, (list, tuple)) else (stratum,), []).append(index)
    members = [np.array(g, dtype=np.intp) for g in groups.values()]
    pairs = [(g[a], g[b]) for g in members for a, b in zip(*np.triu_indices(len(g), 1))]
    i, j = (np.array([pair[k] for pair in pairs], dtype=np.intp) for k in (0, 1))
    return members, i, j


def stratified_permutation_test(x, y, strata, permutations: int = PERMUTATIONS, seed: int = 0) -> Test:
    """Kendall's tau of ``x`` against ``y`` within ``strata`` (the pairs of observations that share
    a stratum only), and its two-sided permutation p with ``y`` shuffled within each stratum: the
    test of a factor in a factorial design that holds the other factors fixed (a blocked design;
    pooling over strata whose values span orders of magnitude buries a consistent within-stratum
    effect). The statistic is ``stratified_tau``; both counts in its denominator are the same for
    every shuffle. Exact over all within-stratum orders when there are at most
    ``EXACT_MAX_ORDERS``, else seeded Monte Carlo."""
    x, y = _pair(x, y)
    if len(strata) != len(x):
        raise ValueError(f"strata must have one entry per observation ({len(x)}); got {len(strata)}.")
    members = _stratum_pairs(strata)[0]
    observed = stratified_tau(x, y, strata)
    if math.isnan(observed):
        return Test(math.nan, math.nan, len(x), 0, True)
    count = math.prod(math.factorial(len(g)) for g in members)
    exact = count <= EXACT_MAX_ORDERS
    if exact:
        orders = np.arange(len(x))[None].repeat(count, axis=0)
        for row, choice in enumerate(itertools.product(*(itertools.permutations(g) for g in members))):
            for group, permuted in zip(members, choice):
                orders[row, group] = permuted
    else:
        generator = np.random.default_rng(seed)
        orders = np.arange(len(x))[None].repeat(permutations, axis=0)
        for group in members:
            orders[:, group] = group[np.argsort(generator.random((permutations, len(group))), axis=1)]
    chunk = max(1, 2**25 // max(len(x) ** 2, 1))  # rows of ~2^25 pair entries at a time, as _permuted
    values = np.concatenate([stratified_tau_rows(x[None], y[orders[start:start + chunk]], strata)
                             for start in range(0, len(orders), chunk)])
    best = np.arange(len(x))
    for group in members:  # the most concordant order the design allows: y sorted as x within each stratum
        best[group[np.argsort(x[group], kind="stable")]] = group[np.argsort(y[group], kind="stable")]
    extreme = abs(stratified_tau(x, y[best], strata))

    def share(hits: int) -> float:
        return min(1.0, hits / len(orders) if exact else (1 + hits) / (1 + len(orders)))

    p = share(int((np.abs(values) >= abs(observed) - 1e-12).sum()))
    return Test(observed, p, len(x), len(orders), exact, share(int((np.abs(values) >= extreme - 1e-12).sum())))


def granulated_tau(measure, target, axes: dict[str, Sequence]) -> tuple[float, dict[str, float]]:
    """Jiang et al. 2019's granulated Kendall tau of ``measure`` against ``target`` over the
    hyperparameter ``axes`` (name -> the level of every observation). Observations sharing all
    levels (seeds) are averaged first; within a slice the tau is Jiang et al.'s tau-a (ties count
    0). Returns (the mean over axes, the per-axis psi_i); an axis with one level gives nan and is
    left out of the mean."""
    measure, target = np.asarray(measure, dtype=float), np.asarray(target, dtype=float)
    levels = list(zip(*(list(values) for values in axes.values())))
    cells: dict[tuple, list[int]] = {}
    for i, setting in enumerate(levels):
        if math.isfinite(measure[i]) and math.isfinite(target[i]):
            cells.setdefault(setting, []).append(i)
    settings = list(cells)
    if not settings:
        return math.nan, {key: math.nan for key in axes}
    means = np.array([[measure[cells[s]].mean(), target[cells[s]].mean()] for s in settings]).reshape(1, -1, 2)
    total, per_axis = granulated_tau_of_means(means[..., 0], means[..., 1], settings)
    return float(total[0]), {key: float(v[0]) for key, v in zip(axes, per_axis)}


def granulated_tau_of_means(measure: np.ndarray, target: np.ndarray, settings: list[tuple]):
    """``granulated_tau`` on (B, C) arrays of per-setting means (B resamples, C settings, the
    hyperparameter levels of setting c in ``settings[c]``): returns the (B,) granulated taus and
    one (B,) psi per axis."""
    per_axis = []
    for axis in range(len(settings[0]) if settings else 0):
        slices: dict[tuple, list[int]] = {}
        for c, setting in enumerate(settings):
            slices.setdefault(setting[:axis] + setting[axis + 1:], []).append(c)
        taus = [kendall_tau_a_rows(measure[:, group], target[:, group]) for group in slices.values()
                if len(group) >= 2]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan slice or axis: nan, as documented
            per_axis.append(np.nanmean(taus, axis=0) if taus else np.full(len(measure), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        total = np.nanmean(per_axis, axis=0) if per_axis else np.full(len(measure), np.nan)
    return total, per_axis


# -- inference on designed studies: the cluster is the unit ----------------------------------------
MIN_INTERVAL_CLUSTERS = 5  # Bonett & Wright's variance needs n > 4; coverage checked by simulation from 5


@dataclass(frozen=True)
class ClusteredAssociation:
    """Kendall's tau of a measure against a target over clusters (the unit of replication: a
    variant whose seeds are averaged), its permutation p over whole clusters, and an interval."""

    tau: float
    p: float
    ci_low: float
    ci_high: float
    n_clusters: int
    n_observations: int
    spearman: float = math.nan
    permutations: int = 0
    exact: bool = False
    p_min: float = math.nan
    test: str = ""  # what was permuted, in words
    note: str = ""  # why a number is missing


def associate(measure, target, clusters=None, strata=None, factor: bool = False, permutations: int = PERMUTATIONS,
              level: float = 0.95, seed: int = 0) -> ClusteredAssociation:
    """Association of ``measure`` with ``target`` that respects the design: observations of one
    cluster (the seeds of a variant) are not independent evidence, so each cluster enters once,
    as its means, and the p-value permutes whole clusters (exact for at most ``EXACT_MAX_N``
    clusters, seeded Monte Carlo beyond). ``strata`` (one entry per observation, constant within a
    cluster: the other factors of a factorial design) restricts tau to the pairs of clusters in
    one stratum and shuffles clusters within strata (``stratified_permutation_test``).

    One case keeps the observations, when the caller says so (``factor=True``): a factor of the
    design, constant within clusters, whose levels tell the clusters of each stratum apart (the
    variants, the other factors in the strata). Under its null -- the factor changes nothing --
    all observations of a stratum share one distribution, so shuffling them within strata is
    exact, and the seeds are the replicates (skip vs no-skip with 3 seeds each is a test; as 2
    cluster means it is none).

    The interval (plain tau only, at least ``MIN_INTERVAL_CLUSTERS`` clusters) is Fisher's z of
    tau with the larger of Bonett & Wright's (2000) variance 0.437 / (n - 4) and the
    leave-one-cluster-out jackknife's; it contains its point estimate. Under a clustered null
    seeds counted as independent observations rejected 21-24 % at alpha = 0.05; this test holds
    its level, and the interval held >= 0.93 coverage at 5-16 clusters (tests/test_stats.py)."""
    x, y = np.asarray(measure, dtype=float), np.asarray(target, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"measure and target must be 1-D of one length; got shapes {x.shape} and {y.shape}.")
    labels = list(range(len(x))) if clusters is None else list(clusters)
    layers = [None] * len(x) if strata is None else list(strata)
    if len(labels) != len(x) or len(layers) != len(x):
        raise ValueError(f"clusters and strata must have one entry per observation ({len(x)}).")
    keep = np.isfinite(x) & np.isfinite(y)
    members: dict = {}
    for index in np.flatnonzero(keep):
        members.setdefault(labels[index], []).append(index)
    layer_of = {}
    for cluster, indices in members.items():
        found = {_key(layers[i]) for i in indices}
        if len(found) > 1:
            raise ValueError(f"Cluster {cluster!r} spans strata {sorted(map(str, found))}: a cluster must lie in one "
                             "stratum (strata are the other factors' levels, constant within a variant).")
        layer_of[cluster] = layers[indices[0]]
    n, observations = len(members), int(keep.sum())
    within = strata is not None
    if factor and clusters is not None and observations > n and _identifies(y, members, layer_of):
        rows = np.flatnonzero(keep)  # the observations are the units
        text = "observations shuffled" + (" within strata" if within else "") + \
            " (the target's levels are the clusters: under the null their seeds are exchangeable)"
        return _units_test(x[rows], y[rows], [layers[i] for i in rows] if within else None, n, observations, text,
                           None, "", permutations, level, seed)
    text = ("clusters shuffled within strata" if within else "clusters permuted") + \
        (" (each the mean of its observations)" if observations > n else "")
    return _units_test(np.array([x[i].mean() for i in members.values()]),
                       np.array([y[i].mean() for i in members.values()]),
                       [layer_of[c] for c in members] if within else None, n, observations, text,
                       f"{n} clusters < 3", f"no interval with {n} < {MIN_INTERVAL_CLUSTERS} clusters",
                       permutations, level, seed)


def _units_test(x, y, strata, n_clusters, n_observations, text, too_few, no_interval, permutations, level,
                seed) -> ClusteredAssociation:
    """Kendall's tau of the units ``x``, ``y`` (cluster means, or observations), its permutation p
    (within ``strata`` when given) and, without strata, its Fisher-z interval. ``too_few``: the
    note below 3 units (None: not checked); ``no_interval``: the note when no interval is valid."""
    empty = ClusteredAssociation(math.nan, math.nan, math.nan, math.nan, n_clusters, n_observations, test=text)
    if too_few is not None and len(x) < 3:
        return dataclasses.replace(empty, note=too_few)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return dataclasses.replace(empty, note="constant")
    if strata is not None:
        test = stratified_permutation_test(x, y, strata, permutations, seed)
        if math.isnan(test.statistic):
            return dataclasses.replace(empty, note="constant within every stratum")
        return ClusteredAssociation(test.statistic, test.p, math.nan, math.nan, n_clusters, n_observations,
                                    math.nan, test.permutations, test.exact, test.p_min, text,
                                    "no interval for a within-strata tau")
    test = permutation_test(x, y, "kendall", permutations, seed)
    low, high = fisher_z_interval(x, y, test.statistic, level)
    return ClusteredAssociation(test.statistic, test.p, low, high, n_clusters, n_observations, spearman_rho(x, y),
                                test.permutations, test.exact, test.p_min, text,
                                no_interval if math.isnan(low) else "")


def _identifies(y: np.ndarray, members: dict, layer_of: dict) -> bool:
    """Whether the target is constant within every cluster and tells the clusters of a stratum
    apart (a factor whose levels are the variants, the other factors held in the strata)."""
    seen: dict = {}
    for cluster, indices in members.items():
        if np.ptp(y[indices]) > 0:
            return False
        key = (_key(layer_of[cluster]), float(y[indices[0]]))
        if key in seen:
            return False
        seen[key] = cluster
    return True


def fisher_z_interval(x: np.ndarray, y: np.ndarray, tau: float, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` interval of Kendall's tau over n >= ``MIN_INTERVAL_CLUSTERS`` points: z =
    atanh(tau) (|tau| kept half a discordant pair below 1) +- q sqrt(max(0.437 / (n - 4), the
    jackknife variance of z)), back-transformed and widened to contain tau."""
    from scipy.stats import norm

    n = len(x)
    if n < MIN_INTERVAL_CLUSTERS or math.isnan(tau):
        return math.nan, math.nan
    drop = ~np.eye(n, dtype=bool)
    leave_out = kendall_tau_rows(np.stack([x[row] for row in drop]), np.stack([y[row] for row in drop]))
    zs = _z(leave_out[~np.isnan(leave_out)], n - 1)
    jackknife = (len(zs) - 1) / len(zs) * float(np.sum((zs - zs.mean()) ** 2)) if len(zs) > 1 else 0.0
    half = norm.ppf(0.5 + level / 2) * math.sqrt(max(0.437 / (n - 4), jackknife))
    z = float(_z(np.array([tau]), n)[0])
    return min(math.tanh(z - half), tau), max(math.tanh(z + half), tau)


def _z(tau: np.ndarray, n: int) -> np.ndarray:
    bound = 1 - 2 / (n * (n - 1))  # half of one discordant pair of n(n-1)/2
    return np.arctanh(np.clip(tau, -bound, bound))


def _key(stratum):
    return tuple(stratum) if isinstance(stratum, (list, tuple)) else stratum


# -- multiple testing ----------------------------------------------------------------------------
def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); nan entries stay nan and do not count."""
    p, out, order = _ranked(p_values)
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); nan entries stay nan."""
    p, out, order = _ranked(p_values)
    m = len(order)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        running = min(running, p[order[rank]] * m / (rank + 1))
        out[order[rank]] = running
    return out


def _ranked(p_values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, an all-nan output of its shape, the indices of the non-nan p in ascending order)."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(~np.isnan(p))
    return p, np.full_like(p, np.nan), finite[np.argsort(p[finite], kind="stable")]


CORRECTIONS: dict[str, Callable] = {"holm": holm, "bh": benjamini_hochberg}


# -- bootstrap and effect sizes -------------------------------------------------------------------
def bootstrap_ci(groups: Sequence[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray],
                 resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over stratified resamples: each group (the seeds of one
    variant: rows of observations) is resampled with replacement within itself, so that variants
    keep their sizes. ``statistic`` takes one (resamples, len(group), ...) array per group and
    returns (resamples,) values. Resamples where it is undefined (nan, e.g. a constant column) are
    left out; (nan, nan) if fewer than half are defined."""
    generator = np.random.default_rng(seed)
    drawn = []
    for group in groups:
        group = np.asarray(group, dtype=float)
        drawn.append(group[generator.integers(0, len(group), (resamples, len(group)))] if len(group)
                     else np.empty((resamples, 0) + group.shape[1:]))
    values = np.asarray(statistic(drawn), dtype=float).reshape(resamples)
    values = values[~np.isnan(values)]
    if len(values) < resamples / 2:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of a mean (exact for normal data at any n >= 2; (nan, nan) below)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    half = t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def kendall_tau_a_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-a of every row pair: the mean of sign(dx) sign(dy) over all pairs, as Jiang et
    al. 2019 define the tau of the granulated tau. A tie counts 0: a measure that does not order
    two models says nothing about their gap (tau-b would leave the slice out and let the few
    slices where the measure moves decide alone)."""
    i, j = np.triu_indices(x.shape[1], 1)
    return (np.sign(x[:, j] - x[:, i]) * np.sign(y[:, j] - y[:, i])).mean(axis=1)


def kendall_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every row pair (x[b], y[b]) of two (B, n) arrays; nan where a row is constant."""
    i, j = np.triu_indices(x.shape[1], 1)
    sx, sy = np.sign(x[:, j] - x[:, i]), np.sign(y[:, j] - y[:, i])
    denominator = np.sqrt((sx != 0).sum(axis=1) * (sy != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (sx * sy).sum(axis=1) / np.where(denominator > 0, denominator, 1), np.nan)


def cliffs_delta(a, b) -> float:
    """Cliff's delta: P(A > B) - P(A < B) over all pairs, in [-1, 1]; nan if a side is empty."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(a) or not len(b):
        return math.nan
    difference = np.sign(a[:, None] - b[None, :])
    return float(difference.mean())


def normalized_conditional_information(x, y, given) -> float:
    """I(X; Y | Z) / H(Y | Z) of discrete samples, with plug-in frequencies: Jiang et al. 2019's
    normalized conditional mutual information (§4), 1 where X determines Y within every Z
    and 0 where they are independent within every Z; nan where H(Y | Z) = 0 (Y is fixed by Z:
    nothing is left to predict). Plug-in estimates are biased upward by about (|X|-1)(|Y|-1) /
    (2 n) nats per value of Z (Miller 1955): few samples per value of Z read as dependence."""
    codes = [_codes(v) for v in (given, x, y)]
    if len({len(c) for c in codes}) != 1:
        raise ValueError(f"x, y and given must have one entry per sample; got lengths {[len(c) for c in codes]}.")
    if not len(codes[0]):
        return math.nan
    sizes = [int(c.max()) + 1 for c in codes]
    p = np.bincount((codes[0] * sizes[1] + codes[1]) * sizes[2] + codes[2],
                    minlength=math.prod(sizes)).reshape(sizes) / len(codes[0])
    pz, pxz, pyz = p.sum(axis=(1, 2)), p.sum(axis=2), p.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        information = np.nansum(p * np.log(p * pz[:, None, None] / (pxz[:, :, None] * pyz[:, None, :])))
        entropy = -np.nansum(pyz * np.log(pyz / pz[:, None]))
    return float(max(information, 0.0) / entropy) if entropy > 1e-12 else math.nan


# -- helpers -------------------------------------------------------------------------------------
def _codes(values) -> np.ndarray:
    """0, 1, ... for the distinct values; small non-negative integers are their own codes (no sort)."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "iu" and len(values) and 0 <= values.min() and values.max() < 2**20:
        return values.astype(np.int64)
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both are finite numbers."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length; got shapes {x.shape} and {y.shape}.")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _signs(v: np.ndarray) -> np.ndarray:
    """sign(v_j - v_i) for i < j, flattened."""
    i, j = np.triu_indices(len(v), 1)
    return np.sign(v[j] - v[i])


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    ranks = rankdata(v)
    return ranks - ranks.mean()


@lru_cache(maxsize=EXACT_MAX_N + 1)
def _all_orders(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp).reshape(-1, n)


def _random_orders(n: int, count: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return np.argsort(generator.random((count, n)), axis=1)


def _permuted(x: np.ndarray, y: np.ndarray, orders: np.ndarray, statistic: str) -> np.ndarray:
    """The statistic of (x, y[order]) for every order, in chunks of ~2^25 pair entries."""
    out = np.empty(len(orders))
    chunk = max(1, 2**25 // max(len(x) ** 2, 1))
    if statistic == "kendall":
        i, j = np.triu_indices(len(x), 1)
        sx = np.sign(x[j] - x[i])
        denominator = math.sqrt((sx != 0).sum() * (_signs(y) != 0).sum())
        for start in range(0, len(orders), chunk):
            ys = y[orders[start:start + chunk]]
            out[start:start + chunk] = np.sign(ys[:, j] - ys[:, i]) @ sx / denominator
    else:
        rx, ry = _centred_ranks(x), _centred_ranks(y)
        denominator = math.sqrt((rx @ rx) * (ry @ ry))
        for start in range(0, len(orders), chunk):
            out[start:start + chunk] = ry[orders[start:start + chunk]] @ rx / denominator
    return out
