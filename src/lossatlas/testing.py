"""The analyzer conformance suite, public so plugin authors run the same checks as lossatlas.

In a test module:

    import pytest
    from lossatlas.testing import analyzer_checks

    @pytest.mark.parametrize("check", analyzer_checks(MyAnalyzer), ids=lambda c: c.__name__)
    def test_conformance(check):
        check()

Each check runs the analyzer with its ``smoke_params`` on a small analytic subject
(Himmelblau by default) in an in-memory store.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .analyzer import Analyzer, analyze
from .errors import ConfigError
from .provenance import canonical_json
from .store import Store


def analyzer_checks(cls: type[Analyzer], subject_factory: Callable | None = None) -> list[Callable[[], None]]:
    """One callable per contract check, named ``<check>[<analyzer name>]``."""
    if subject_factory is None:
        from .problems import himmelblau as subject_factory
    checks = []
    for check in (check_parameters, check_unknown_parameter, check_result_round_trip, check_rerun_is_noop,
                  check_plot_draws):
        bound = functools.partial(check, cls, subject_factory)
        bound.__name__ = f"{check.__name__}[{cls.name}]"
        checks.append(bound)
    return checks


def check_analyzer(cls: type[Analyzer], subject_factory: Callable | None = None) -> None:
    for check in analyzer_checks(cls, subject_factory):
        check()


def check_parameters(cls, subject_factory) -> None:
    """Keyword parameters with defaults, JSON/TOML-serializable, and a lossless round trip."""
    assert cls.name, f"{cls.__name__} has no name"
    defaults = cls.defaults()
    canonical_json(defaults)  # raises if a default cannot live in a config
    assert set(cls.smoke_params) <= set(defaults), f"smoke_params of {cls.name} name unknown parameters"
    assert set(cls.constraints) <= set(defaults), f"constraints of {cls.name} name unknown parameters"
    analyzer = cls.from_params(dict(cls.smoke_params))
    params = analyzer.get_params()
    assert cls.from_params(params).get_params() == params, "get_params -> from_params is not a round trip"
    assert params == {**defaults, **cls.smoke_params}


def check_unknown_parameter(cls, subject_factory) -> None:
    try:
        cls.from_params({"no_such_parameter": 1})
    except ConfigError as err:
        assert "no_such_parameter" in str(err), f"error does not name the unknown parameter: {err}"
    else:
        raise AssertionError(f"{cls.name} accepted an unknown parameter")


def check_result_round_trip(cls, subject_factory) -> None:
    """The result is written and reads back identical, with params, seed and versions."""
    with Store.memory() as store:
        subject = subject_factory()
        result = analyze(store, subject, cls, **cls.smoke_params)
        assert result.metrics, f"{cls.name} returned no metrics"
        assert all(isinstance(v, float) for v in result.metrics.values())
        back = store.read_result(subject.name, cls.name, result.key)
        assert back.params == result.params == cls.from_params(dict(cls.smoke_params)).get_params()
        assert set(back.metrics) == set(result.metrics)
        for name, value in result.metrics.items():
            np.testing.assert_equal(back.metrics[name], value)
        assert set(back.arrays) == set(result.arrays)
        for name, array in result.arrays.items():
            np.testing.assert_array_equal(back.arrays[name], array)
        assert "torch" in back.versions and "lossatlas" in back.versions


def check_rerun_is_noop(cls, subject_factory) -> None:
    """A second analyze with the same parameters returns the stored result without running."""
    calls = []

    class Counting(cls):
        def run(self, store, subject):
            calls.append(1)
            return super().run(store, subject)

    Counting.__name__ = cls.__name__
    with Store.memory() as store:
        subject = subject_factory()
        first = analyze(store, subject, Counting, **cls.smoke_params)
        second = analyze(store, subject, Counting, **cls.smoke_params)
        assert len(calls) == 1, f"{cls.name} ran {len(calls)} times for the same parameters"
        assert second.metrics == first.metrics and second.created == first.created


def check_plot_draws(cls, subject_factory) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Store.memory() as store:
        result = analyze(store, subject_factory(), cls, **cls.smoke_params)
        analyzer = cls.from_params(dict(cls.smoke_params))
        figure = analyzer.plot(result)
        try:
            drawn = [a for a in figure.axes if a.has_data() or a.images or a.collections]
            assert drawn, f"{cls.name}.plot drew nothing"
        finally:
            plt.close(figure)
