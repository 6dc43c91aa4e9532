import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from lossatlas import ConfigError, Store, analyze
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
    assert "'broken'" in messages and "two analyzers named 'gradient-norm'" in messages and "not an Analyzer" in messages
    with pytest.raises(ConfigError, match=r"Unknown method 'nope'; available methods: \['gradient-norm'\]"):
        registry.get("nope")


def test_analyze_names_unknown_methods_and_parameters():
    with Store.memory() as store:
        with pytest.raises(ConfigError, match="Unknown method 'no-such-method'"):
            analyze(store, himmelblau(), "no-such-method")
        with pytest.raises(ConfigError, match=r"\['epoch'\].*valid parameters: \['epochs', 'lr', 'n_minima'\]"):
            analyze(store, himmelblau(), GradientNorm, epoch=3)
        with pytest.raises(ConfigError, match="The 'n_minima' parameter of GradientNorm must be an int in \\[1, inf\\). Got 0."):
            analyze(store, himmelblau(), GradientNorm, n_minima=0)
        assert store.subjects() == []  # nothing was written for rejected calls


def test_example_metric_finds_true_minima_of_himmelblau():
    with Store.memory() as store:
        result = analyze(store, himmelblau(), GradientNorm, n_minima=3, epochs=5)
    assert result.metrics["max_grad_norm"] < 1e-6 and result.metrics["mean_loss"] < 1e-12
    assert result.params == {"n_minima": 3, "epochs": 5, "lr": 0.01}


def test_import_is_light():
    code = "import sys, lossatlas, lossatlas.methods; print(sorted({'torch', 'phate', 'gudhi', 'h5py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
