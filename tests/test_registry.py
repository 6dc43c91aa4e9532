import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

import numpy as np

from lossatlas import ConfigError, Recipe, Store, analyze, train_minima
from lossatlas import registry as registry_module
from lossatlas.problems import himmelblau
from lossatlas.registry import GROUP, Registry
from lossatlas.testing import analyzer_checks
from plugins.gradient_norm import GradientNorm

_ANALYZERS = [registry_module.get(name) for name in registry_module.available()] + [GradientNorm]


@pytest.mark.parametrize(
    "check", [c for cls in _ANALYZERS for c in analyzer_checks(cls)], ids=lambda c: c.__name__
)
def test_conformance(check):
    check()


def _point(name, value):
    return EntryPoint(name=name, value=value, group=GROUP)


def test_registry_loads_plugins_and_tolerates_broken_and_duplicate_ones():
    registry = Registry([
        _point("gradient-norm", "plugins.gradient_norm:GradientNorm"),
        _point("broken", "no_such_module:Nothing"),
        _point("gradient-norm", "plugins.gradient_norm:GradientNorm"),
        _point("not-an-analyzer", "lossatlas.store:Store"),
    ])
    with pytest.warns(UserWarning) as caught:
        assert registry.available() == ["gradient-norm"]
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken'" in messages and "two analyzers named 'gradient-norm'" in messages
    assert "not an Analyzer" in messages
    with pytest.raises(ConfigError, match=r"Unknown method 'nope'; available methods: \['gradient-norm'\]"):
        registry.get("nope")


def test_analyze_names_unknown_methods_and_parameters():
    with Store.memory() as store:
        with pytest.raises(ConfigError, match="Unknown method 'no-such-method'"):
            analyze(store, himmelblau(), "no-such-method")
        with pytest.raises(ConfigError, match=r"\['scal'\].*valid parameters: \['at', 'minimum', 'scale'\]"):
            analyze(store, himmelblau(), GradientNorm, scal=3)
        with pytest.raises(ConfigError,
                           match=r"The 'scale' parameter of GradientNorm must be a float in \(0, inf\)\. Got 0"):
            analyze(store, himmelblau(), GradientNorm, scale=0)
        assert store.subjects() == []  # nothing was written for rejected calls


def test_example_metric_finds_true_minima_of_himmelblau():
    """Himmelblau's four minima are zeros of f (ground truth: f = (x^2 + y - 11)^2 + (x + y^2 - 7)^2)."""
    subject = himmelblau()
    with Store.memory() as store:
        train_minima(store, subject, Recipe(lr=0.01, momentum=0.0, epochs=5, steps_per_epoch=100), seeds=range(3),
                     progress=False)
        results = [analyze(store, subject, GradientNorm, minimum=index, progress=False) for index in range(3)]
        at_start = analyze(store, subject, GradientNorm, at="theta0", progress=False)
    for result in results:
        assert result.metrics["gradient_norm"] < 1e-6 and result.metrics["loss"] < 1e-12
    assert result.params == {"at": "minimum", "minimum": 2, "scale": 1.0}
    x, y = himmelblau().theta0.tolist()  # the analytic gradient at theta0 is far from zero
    exact = [4 * x * (x * x + y - 11) + 2 * (x + y * y - 7), 2 * (x * x + y - 11) + 4 * y * (x + y * y - 7)]
    assert at_start.metrics["gradient_norm"] == pytest.approx(float(np.hypot(*exact)), rel=1e-10)


def test_report_draws_a_plugins_views_and_skips_uninstalled_ones(tmp_path, monkeypatch):
    """A new metric's figures reach the report with no edit to lossatlas; a store reported where
    its plugin is not installed keeps its tables and says which figures it skipped."""
    from lossatlas import harness
    from lossatlas.report import write_report

    installed = Registry([_point("gradient-norm", "plugins.gradient_norm:GradientNorm")])
    monkeypatch.setattr(registry_module, "default", lambda: installed)
    config = {"name": "plug", "problem": "himmelblau", "seeds": [0],
              "minima": {"lr": 0.01, "momentum": 0.0, "epochs": 1, "steps_per_epoch": 50},
              "methods": {"gradient-norm": {}}}
    plan = harness.plan(config, "smoke")
    with Store(tmp_path / "s.h5") as store:
        harness.execute(plan, store, progress=False)
        write_report(store, tmp_path / "with")
    assert (tmp_path / "with" / "figures" / "compare_gradient-norm_gradient.png").exists()
    assert "gradient-norm.gradient_norm" in (tmp_path / "with" / "table.md").read_text()
    monkeypatch.setattr(registry_module, "default", lambda: Registry([]))
    with Store(tmp_path / "s.h5", "r") as store:
        write_report(store, tmp_path / "without")
    text = (tmp_path / "without" / "report.md").read_text()
    assert "Figures of `gradient-norm` (gradient) skipped" in text
    assert "gradient-norm.gradient_norm" in (tmp_path / "without" / "table.md").read_text()
    assert not list((tmp_path / "without" / "figures").glob("*gradient*"))


def test_import_is_light():
    code = ("import sys, lossatlas, lossatlas.methods; "
            "print(sorted({'torch', 'phate', 'gudhi', 'h5py'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_asking_for_one_analyzer_loads_that_one_alone():
    """Entry points load on first use: running one method does not import the others (a broken
    plugin installed beside it costs nothing until it is asked for, and then says why)."""
    registry = Registry([_point("gradient-norm", "plugins.gradient_norm:GradientNorm"),
                         _point("broken", "no_such_module:Nothing")])
    assert registry.names() == ["broken", "gradient-norm"]
    assert registry.get("gradient-norm") is GradientNorm
    with pytest.raises(ConfigError, match=r"Method 'broken' could not be loaded: ModuleNotFoundError"):
        registry.get("broken")


def test_a_users_own_analyzer_class_by_reference():
    registry = Registry([])
    assert registry.get("plugins.gradient_norm:GradientNorm") is GradientNorm
    with pytest.raises(ConfigError, match=r"Method 'lossatlas.store:Store' is not an Analyzer"):
        registry.get("lossatlas.store:Store")
    with pytest.raises(ConfigError, match=r"Method 'plugins.gradient_norm:Nope' could not be loaded: AttributeError"):
        registry.get("plugins.gradient_norm:Nope")


def test_a_cold_analyze_imports_only_the_analyzer_it_runs():
    code = ("import sys, lossatlas; from lossatlas import registry; registry.get('hessian'); "
            "print(sorted(m for m in sys.modules if m.startswith('lossatlas.methods.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['lossatlas.methods.hessian']"


def test_a_broken_duplicate_falls_back_to_the_one_that_loads():
    registry = Registry([_point("gradient-norm", "no_such_module:Nothing"),
                         _point("gradient-norm", "plugins.gradient_norm:GradientNorm")])
    with pytest.warns(UserWarning, match="failed to load"):
        assert registry.get("gradient-norm") is GradientNorm


def test_a_users_own_class_needs_a_name_of_its_own():
    """Results are filed under the class's name: an empty one cannot be stored, and an installed
    analyzer's name would hand back that analyzer's stored results."""
    import types

    module = types.ModuleType("own_analyzers")
    module.Nameless = type("Nameless", (GradientNorm,), {"name": ""})
    module.Impostor = type("Impostor", (GradientNorm,), {"name": "hessian"})
    sys.modules["own_analyzers"] = module
    try:
        with pytest.raises(ConfigError, match="needs a name of its own"):
            Registry([]).get("own_analyzers:Nameless")
        with pytest.raises(ConfigError, match="named 'hessian', as the installed analyzer .*Hessian is"):
            Registry([]).get("own_analyzers:Impostor")
    finally:
        del sys.modules["own_analyzers"]
