"""The documentation site: reference pages follow the code's declarations, tutorials run, and the
site builds with ``mkdocs build --strict`` (a broken link, a missing page or a failing tutorial fails it)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossatlas import cli, config, record, registry, training
from lossatlas.analyzer import Analyzer, diagnostic, measure
from lossatlas.params import Interval, Options, param

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))

import gen_reference  # noqa: E402
import gen_tutorials  # noqa: E402


def _row(page: str, name: str, section: str = "Parameters") -> str:
    """The table row of ``name`` in a section of a generated page."""
    text = page.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"{name!r}: {len(rows)} rows"
    return rows[0]


def test_a_new_parameter_changes_the_analyzer_page():
    class Toy(Analyzer):
        name = "toy-docs"
        description = "A toy analyzer."
        scope = "subject"
        references = ("Someone et al. 2001",)
        metrics = {"height": measure("how high", higher_is_better=False), "calls": diagnostic("calls made")}
        width: float = param(0.5, Interval(float, 0, 1), "how wide")

    class ToyDeeper(Toy):
        depth: int | None = param(7, Interval(int, 3, allow_none=True), "how deep")
        shape: str = param("round", Options(("round", "square")))

    before, after = gen_reference.analyzer_page(Toy), gen_reference.analyzer_page(ToyDeeper)
    assert "`depth`" not in before
    assert _row(after, "depth") == "| `depth` | `int | None` | `7` | an int in [3, inf) or None | how deep |"
    assert _row(after, "shape") == "| `shape` | `str` | `'round'` | one of ['round', 'square'] |  |"
    width = "| `width` | `float` | `0.5` | a float in [0, 1] | how wide |"
    assert _row(after, "width") == _row(before, "width") == width
    assert _row(after, "height", "Metrics") == "| `height` | measure | lower is better | how high |"
    assert "- Someone et al. 2001" in after and "one result per subject" in after


@pytest.mark.parametrize("name", registry.available())
def test_every_installed_analyzer_page_lists_its_declarations(name):
    cls = registry.get(name)
    page = gen_reference.analyzer_page(cls, name)
    for field in dataclasses.fields(cls):
        row = _row(page, field.name)
        assert gen_reference.code(repr(field.default)) in row
        assert gen_reference.cell(field.metadata["constraint"]) in row
        assert gen_reference.cell(field.metadata.get("doc", "")) in row
    for metric_name, metric in cls.metrics.items():
        row = _row(page, metric_name, "Metrics")
        assert metric.kind in row and gen_reference.cell(metric.description) in row
    for view_name in cls.views:
        _row(page, view_name, "Views")
    if cls.__module__.startswith("lossatlas.methods."):
        assert cls.references, f"{name} names no paper it follows (its class attribute `references`)"
    assert all(f"- {gen_reference.text(reference)}" in page for reference in cls.references)
    assert name in gen_reference.analyzers_index({name: cls})


def test_cli_and_config_pages_list_every_option_and_key():
    parser = cli.parser()
    page = gen_reference.cli_page(parser)
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for command, sub in commands.items():
        assert f"## `lossatlas {command}`" in page
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, (command, option)
    page = gen_reference.config_page()
    for cls in (config.Config, config.ScaleOverrides, training.Recipe, record.ReportSettings, record.Claim):
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in page, (cls.__name__, field.name)


def test_a_tutorial_runs_cell_by_cell_with_its_output_and_figures(tmp_path):
    script = tmp_path / "demo.py"
    script.write_text('"""A demo\n\nIts *intro*.\n"""\n# %%\n# ## First\n#\n# Some text.\nimport os\n'
                      'print("env", os.environ["LOSSATLAS_DOCS_BUILD"], os.listdir("."), os.getcwd() != '
                      f'{str(tmp_path)!r})\nvalue = 41\n\n# %% Second\nimport matplotlib.pyplot as plt\n'
                      'plt.plot([1, 2], [value, value + 1])\nprint(value + 1)\n', encoding="utf-8")
    tutorial = gen_tutorials.run(script)
    assert (tutorial.title, tutorial.intro) == ("A demo", "Its *intro*.")
    first, second = tutorial.cells
    assert first.markdown == "## First\n\nSome text." and first.stdout == "env 1 [] True\n" and not first.figures
    assert second.markdown == "## Second" and second.stdout == "42\n" and len(second.figures) == 1
    assert tutorial.figures[second.figures[0]].startswith(b"\x89PNG")
    page = gen_tutorials.page(tutorial, "demo")
    assert "(demo.py)" in page and f"](demo/{second.figures[0]})" in page and "value = 41" in page


def test_a_failing_tutorial_names_itself_with_its_traceback(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text('"""Broken\n"""\n# %%\nx = 1\n\n# %%\ndef f():\n    raise ValueError("boom")\n\n\nf()\n',
                      encoding="utf-8")
    with pytest.raises(gen_tutorials.TutorialError) as caught:
        gen_tutorials.run(script)
    message = str(caught.value)
    assert "broken.py failed in cell 2" in message and "ValueError: boom" in message
    assert f'File "{script}", line 8, in f' in message  # line numbers are the script's


def test_site_builds_strictly(tmp_path):
    """`make docs` as CI runs it: every tutorial executed, every generated page linked."""
    site = tmp_path / "site"
    env = {**os.environ, "LOSSATLAS_DOCS_BUILD": "1", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]
    pages = [f"reference/analyzers/{name}" for name in registry.available()]
    pages += ["reference/analyzers", "reference/cli", "reference/config", "reference/api", "changelog", "tutorials"]
    for page in pages:
        assert (site / page / "index.html").is_file(), page
    for script in sorted((ROOT / "docs" / "tutorials").glob("*.py")):
        html = (site / "tutorials" / script.stem / "index.html").read_text(encoding="utf-8")
        assert (site / "tutorials" / script.name).is_file()  # the download link's target
        source = script.read_text(encoding="utf-8")
        if "matplotlib" in source or ".plot(" in source:
            assert ".png" in html and list((site / "tutorials" / script.stem).glob("*.png")), script.name
