"""Users' own problems in configs: "package.module:factory" and the lossatlas.problems
entry-point group; the run and the report treat them as the built-in ones."""
import csv
import textwrap
from importlib.metadata import EntryPoint

import pytest

from lossatlas import harness, problems, registry
from lossatlas.cli import main
from lossatlas.errors import ConfigError

BOWL = '''
import torch
from lossatlas import FunctionSubject


def bowl(scale: float = 1.0):
    """scale * |t|^2: its Hessian is 2 * scale * I everywhere (a closed form to check against)."""
    return FunctionSubject(lambda t: scale * (t ** 2).sum(), torch.tensor([1.0, -0.5], dtype=torch.float64),
                           name=f"bowl_{scale:g}")


def not_a_subject(scale: float = 1.0):
    return scale
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_problems.py").write_text(BOWL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_problems"


def _config(tmp_path, problem):
    path = tmp_path / "bowl.toml"
    path.write_text(textwrap.dedent(f"""
        name = "bowl"
        problem = "{problem}"
        seeds = [0, 1]
        [variants]
        scale = [1.0, 3.0]
        [minima]
        lr = 0.1
        epochs = 1
        steps_per_epoch = 20
        [methods.hessian]
        k = 2
        [report]
        factor = "scale"
        error = "train_loss"
    """))
    return path


def test_a_config_runs_a_users_own_factory_and_reports_it(user_module, tmp_path):
    config = _config(tmp_path, f"{user_module}:bowl")
    assert main(["run", str(config), "--scale", "smoke", "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "bowl_smoke" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for row in rows:  # the Hessian of scale |t|^2 is 2 scale I
        assert float(row["hessian.top_eigenvalue"]) == pytest.approx(2 * float(row["scale"]), rel=1e-6)
        assert float(row["hessian.trace"]) == pytest.approx(4 * float(row["scale"]), rel=1e-2)


def test_an_installed_package_registers_problems_by_entry_point(user_module, monkeypatch):
    point = EntryPoint(name="bowl", value=f"{user_module}:bowl", group=registry.PROBLEM_GROUP)
    installed = registry.Registry([point], kind="problem", noun="problem", accept=registry._factory_problem)
    monkeypatch.setattr(registry, "problems", lambda: installed)
    plan = harness.plan({"name": "b", "problem": "bowl", "variants": {"scale": [2.0]}}, "smoke")
    assert problems.build(plan.problem, **plan.subjects[0]).name == "bowl_2"
    assert problems.parameters("bowl") == {"scale": 1.0}


@pytest.mark.parametrize("problem, message", [
    ("no_such_module_here:bowl", "could not be loaded: ModuleNotFoundError"),
    ("my_problems:nope", "could not be loaded: AttributeError"),
    ("math:pi", "is a float, not a factory"),
    ("bowls", "Unknown problem 'bowls'"),
])
def test_a_problem_that_cannot_be_loaded_is_a_clear_error(user_module, problem, message):
    with pytest.raises(ConfigError) as err:
        harness.plan({"name": "b", "problem": problem}, "smoke")
    assert message in str(err.value)


def test_a_factory_that_returns_no_subject_is_refused(user_module):
    with pytest.raises(ConfigError, match="returned a float, not a Subject"):
        problems.build(f"{user_module}:not_a_subject", scale=2.0)
    with pytest.raises(ConfigError, match="Unknown parameter"):
        harness.plan({"name": "b", "problem": f"{user_module}:bowl", "params": {"scael": 1.0}}, "smoke")
