"""The analyzer conformance suite, public so plugin authors run the same checks as lossatlas.

In a test module:

    import pytest
    from lossatlas.testing import analyzer_checks

    @pytest.mark.parametrize("check", analyzer_checks(MyAnalyzer), ids=lambda c: c.__name__)
    def test_conformance(check):
        check()

Each check runs the analyzer with its ``smoke_params`` on a small analytic subject
(Himmelblau by default) in an in-memory store. They check the contract: parameters declared
once with constraints, a declared scope, complete metric metadata, views that draw (also from a
result whose arrays are empty or all NaN, as a diverged run leaves them), a pure compute step,
results that round-trip through the store, reruns that do nothing.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Callable

import numpy as np

from .analysis import analyze, stored_params
from .analyzer import KINDS, SCOPES, Analyzer, Metric, View
from .errors import ConfigError
from .memory import Memory
from .params import constraints_of
from .problems import himmelblau
from .provenance import canonical_json
from .samplers import train_minima
from .sampling import obtain
from .store import Store
from .training import Recipe


def analyzer_checks(cls: type[Analyzer], subject_factory: Callable | None = None) -> list[Callable[[], None]]:
    """One callable per contract check, named ``<check>[<analyzer name>]``."""
    subject_factory = subject_factory or himmelblau
    checks = []
    for check in CHECKS:
        bound = functools.partial(check, cls, subject_factory)
        bound.__name__ = f"{check.__name__}[{cls.name}]"
        checks.append(bound)
    return checks


def check_analyzer(cls: type[Analyzer], subject_factory: Callable | None = None) -> None:
    for check in analyzer_checks(cls, subject_factory):
        check()


def check_parameters(cls, subject_factory) -> None:
    """Every parameter declared once with a default and a constraint; JSON-serializable; a
    lossless round trip; a "minimum"-scope analyzer says which minimum with ``minimum``."""
    assert cls.name, f"{cls.__name__} has no name"
    assert cls.description, f"{cls.name} has no description"
    defaults = cls.defaults()
    unconstrained = sorted(set(defaults) - set(constraints_of(cls)))
    assert not unconstrained, f"{cls.name}: parameters without a declared constraint: {unconstrained}"
    canonical_json(defaults)  # raises if a default cannot live in a config
    assert set(cls.smoke_params) <= set(defaults), f"smoke_params of {cls.name} name unknown parameters"
    analyzer = cls.from_params(dict(cls.smoke_params))
    params = analyzer.get_params()
    assert cls.from_params(params).get_params() == params, "get_params -> from_params is not a round trip"
    assert params == {**defaults, **cls.smoke_params}
    for name in defaults:
        try:
            setattr(analyzer, name, defaults[name])
        except dataclasses.FrozenInstanceError:
            continue
        raise AssertionError(f"{cls.name}: parameter {name!r} can be changed after construction (not frozen)")


def check_scope(cls, subject_factory) -> None:
    assert cls.scope in SCOPES, f"{cls.name}.scope is {cls.scope!r}; must be one of {SCOPES}"
    if cls.scope == "minimum":
        assert "minimum" in cls.defaults(), f"{cls.name} has scope 'minimum' but no 'minimum' parameter"


def check_unknown_parameter(cls, subject_factory) -> None:
    try:
        cls.from_params({"no_such_parameter": 1})
    except ConfigError as err:
        assert "no_such_parameter" in str(err), f"error does not name the unknown parameter: {err}"
    else:
        raise AssertionError(f"{cls.name} accepted an unknown parameter")


def check_metric_metadata(cls, subject_factory) -> None:
    """Every metric the analyzer returns is declared, with a description, a kind and a direction."""
    assert cls.metrics, f"{cls.name} declares no metrics"
    for name, metric in cls.metrics.items():
        assert isinstance(metric, Metric), f"{cls.name}.metrics[{name!r}] is not a Metric"
        assert metric.description, f"{cls.name}.metrics[{name!r}] has no description"
        assert metric.kind in KINDS, f"{cls.name}.metrics[{name!r}].kind is {metric.kind!r}"
        assert metric.higher_is_better in (True, False, None)
    assert any(m.kind == "measure" for m in cls.metrics.values()), f"{cls.name} declares no measure"
    with Store.memory() as store:
        result = analyze(store, _subject(cls, store, subject_factory), cls, progress=False, **cls.smoke_params)
    assert set(result.metrics) == set(cls.metrics), (
        f"{cls.name} returned metrics {sorted(set(result.metrics) - set(cls.metrics))} it does not declare and "
        f"declares {sorted(set(cls.metrics) - set(result.metrics))} it did not return")


def check_compute_is_pure(cls, subject_factory) -> None:
    """The same samples give the same output, and compute leaves the samples as it found them."""
    with Store.memory() as store:
        subject = _subject(cls, store, subject_factory)
        analyzer = cls.from_params(dict(cls.smoke_params))
        samples = {name: obtain(store, subject, request, False) for name, request in analyzer.requests(subject).items()}
        before = {name: {k: np.array(v, copy=True) for k, v in s.data.items()} for name, s in samples.items()}
        first, second = analyzer.compute(subject, samples), analyzer.compute(subject, samples)
        for name, sample in samples.items():
            for key, value in sample.data.items():
                np.testing.assert_array_equal(value, before[name][key], err_msg=f"{cls.name} changed sample {name}")
    assert first[0].keys() == second[0].keys()
    for name in first[0]:
        np.testing.assert_equal(float(first[0][name]), float(second[0][name]), err_msg=f"{cls.name}: {name}")
    for name in first[1]:
        np.testing.assert_array_equal(np.asarray(first[1][name]), np.asarray(second[1][name]))


def check_result_round_trip(cls, subject_factory) -> None:
    """The result is written and reads back identical, with params, seed, versions and the
    analyzer's declarations (scope, views, metric metadata) for reports."""
    with Store.memory() as store:
        subject = _subject(cls, store, subject_factory)
        result = analyze(store, subject, cls, progress=False, **cls.smoke_params)
        assert all(isinstance(v, float) for v in result.metrics.values())
        back = store.read_result(subject.name, cls.name, result.key)
        assert back.params == result.params == stored_params(cls.from_params(dict(cls.smoke_params)))[0]
        assert set(back.metrics) == set(result.metrics)
        for name, value in result.metrics.items():
            np.testing.assert_equal(back.metrics[name], value)
        assert set(back.arrays) == set(result.arrays)
        for name, array in result.arrays.items():
            np.testing.assert_array_equal(back.arrays[name], array)
        assert "torch" in back.versions and "lossatlas" in back.versions
        assert back.analyzer == cls.info() and back.analyzer["scope"] == cls.scope


def check_rerun_is_noop(cls, subject_factory) -> None:
    """A second analyze with the same parameters returns the stored result without computing."""
    calls = []

    class Counting(cls):
        def compute(self, subject, samples):
            calls.append(1)
            return super().compute(subject, samples)

    Counting.__name__ = cls.__name__
    with Store.memory() as store:
        subject = _subject(cls, store, subject_factory)
        first = analyze(store, subject, Counting, progress=False, **cls.smoke_params)
        second = analyze(store, subject, Counting, progress=False, **cls.smoke_params)
        assert len(calls) == 1, f"{cls.name} ran {len(calls)} times for the same parameters"
        np.testing.assert_equal(second.metrics, first.metrics)  # NaN (a metric not asked for) equals NaN
        assert second.created == first.created


def check_views_draw(cls, subject_factory) -> None:
    """Every declared view draws something on the axes it is given; ``plot`` draws them all, or
    one into a given axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert cls.views, f"{cls.name} declares no views"
    assert all(isinstance(v, View) for v in cls.views.values()), f"{cls.name}: views must be View declarations"
    with Store.memory() as store:
        result = analyze(store, _subject(cls, store, subject_factory), cls, progress=False, **cls.smoke_params)
    analyzer = cls.from_params(dict(cls.smoke_params))
    for name, view in cls.views.items():
        figure = plt.figure()
        ax = figure.add_subplot(projection=view.projection)
        try:
            assert analyzer.plot(result, ax=ax, view=name) is figure
            assert _has_drawing(ax), f"{cls.name} view {name!r} drew nothing"
        finally:
            plt.close(figure)
    figure = analyzer.plot(result)
    try:
        assert len(figure.axes) >= len(cls.views) and any(_has_drawing(a) for a in figure.axes)
    finally:
        plt.close(figure)


def check_views_draw_empty_and_nan(cls, subject_factory) -> None:
    """Every view draws, without an error or a warning, a result whose arrays are empty (no rows)
    or all NaN (floats; integer arrays such as indices kept) and whose metrics are NaN, as a
    diverged or degenerate run leaves them: the report must still be made. With nothing finite to
    draw, the view says so on the axes (``lossatlas.plots.no_data``) rather than leave them blank.
    A declared shared scale is read from such results too (``limits_of``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Store.memory() as store:
        result = analyze(store, _subject(cls, store, subject_factory), cls, progress=False, **cls.smoke_params)
    for case, broken in (("empty", _emptied(result)), ("all-NaN", _all_nan(result))):
        for name, view in cls.views.items():
            figure = plt.figure()
            ax = figure.add_subplot(projection=view.projection)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # "posx and posy should be finite values" and the like
                    view.draw(ax, broken)
                    figure.canvas.draw()  # rendering, not only creating the artists, must survive the data
                    limits = view.limits_of(broken) if view.limits_of is not None else None
            except Exception as err:
                raise AssertionError(f"{cls.name} view {name!r} failed on an {case} result: {err!r}") from err
            finally:
                plt.close(figure)
            assert ax.texts, (f"{cls.name} view {name!r} drew an {case} result without saying that it has nothing "
                              "to draw (lossatlas.plots.no_data)")
            assert limits is None or len(limits) == 2, f"{cls.name} view {name!r}: limits_of gave {limits!r}"


def _emptied(result):
    """The result with every array cut to zero rows (its trailing shape and dtype kept) and NaN metrics."""
    arrays = {key: np.asarray(a)[:0] if np.ndim(a) else np.asarray(a) for key, a in result.arrays.items()}
    return dataclasses.replace(result, arrays=arrays, metrics={key: float("nan") for key in result.metrics})


def _all_nan(result):
    """The result with every float array all NaN (shapes kept; other arrays as they were) and NaN metrics."""
    arrays = {key: np.full_like(a, np.nan) if np.issubdtype(np.asarray(a).dtype, np.floating) else a
              for key, a in result.arrays.items()}
    return dataclasses.replace(result, arrays=arrays, metrics={key: float("nan") for key in result.metrics})


def check_memory_estimate(cls, subject_factory) -> None:
    """``memory(subject)`` declares the peak as a ``Memory`` of whole, non-negative byte counts (the
    run refuses before any work what cannot fit)."""
    need = cls.from_params(dict(cls.smoke_params)).memory(subject_factory())
    assert isinstance(need, Memory), f"{cls.name}.memory returned {type(need).__name__}, not a lossatlas.memory.Memory"
    for part in (need.host, need.device):
        assert isinstance(part, int) and part >= 0, f"{cls.name}.memory: {need}: byte counts must be ints >= 0"


def _has_drawing(ax) -> bool:
    return bool(ax.has_data() or ax.images or ax.collections or ax.lines or ax.texts)


def _subject(cls, store, subject_factory):
    """The check's subject, with ``cls.smoke_minima`` minima trained into ``store`` (a short
    descent from seeds 0, 1, ...) for analyzers that read stored minima."""
    subject = subject_factory()
    if cls.smoke_minima:
        train_minima(store, subject, Recipe(lr=0.005, momentum=0.0, epochs=2, batch_size=None),
                     seeds=range(cls.smoke_minima), progress=False)
    return subject


CHECKS = (check_parameters, check_scope, check_unknown_parameter, check_metric_metadata, check_compute_is_pure,
          check_result_round_trip, check_rerun_is_noop, check_views_draw, check_views_draw_empty_and_nan,
          check_memory_estimate)
