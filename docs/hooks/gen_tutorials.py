"""Executed tutorials: a script in sphinx-gallery format becomes a page with its outputs.

A tutorial ``docs/tutorials/<name>.py`` starts with a docstring (first line: the title; the rest:
Markdown), then cells separated by lines ``# %%`` (text after the marker becomes a heading). A
cell's leading comment lines are Markdown, the rest is code. ``run`` executes the script cell by
cell in one namespace, in a fresh process (so ``OMP_NUM_THREADS`` and ``MPLBACKEND`` hold before
torch or matplotlib is imported) and a fresh temporary folder, with ``LOSSATLAS_DOCS_BUILD=1`` so
that scripts choose smoke settings; it keeps each cell's stdout and every matplotlib figure open at
the end of the cell. Nothing is cached between builds. Run as a script, this module is that process.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ENV = {"LOSSATLAS_DOCS_BUILD": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
_MARKER = re.compile(r"^#\s?%%(.*)$")


class TutorialError(Exception):
    """A tutorial that cannot be parsed or raised while running: its name, cell and traceback."""


@dataclasses.dataclass
class Cell:
    markdown: str
    code: str
    line: int  # the code's first line in the script (tracebacks point into the script)
    stdout: str = ""
    figures: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Tutorial:
    name: str
    title: str
    intro: str
    cells: list[Cell]
    figures: dict[str, bytes] = dataclasses.field(default_factory=dict)  # file name -> PNG
    seconds: float = 0.0


def parse(source: str, name: str = "tutorial") -> Tutorial:
    """Title, intro and cells of a sphinx-gallery script (nothing is run)."""
    tree = ast.parse(source)
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        raise TutorialError(f"Tutorial {name}: it must start with a docstring whose first line is its title.")
    title, _, intro = ast.get_docstring(tree).partition("\n")
    intro = re.sub(r"^[=\-~^]{3,}\s*\n", "", intro.lstrip("\n"))  # an rst underline of the title
    lines = source.splitlines()
    chunks, heading, start, body = [], "", first.end_lineno + 1, []
    for number, line in enumerate(lines[first.end_lineno:], start=first.end_lineno + 1):
        marker = _MARKER.match(line)
        if marker:
            chunks.append((heading, start, body))
            heading, start, body = marker.group(1).strip(), number + 1, []
        else:
            body.append(line)
    chunks.append((heading, start, body))
    cells = []
    for heading, start, body in chunks:
        index = 0
        while index < len(body) and not body[index].strip():
            index += 1
        markdown = [f"## {heading}", ""] if heading else []
        while index < len(body) and body[index].startswith("#"):
            markdown.append(re.sub(r"^# ?", "", body[index]))
            index += 1
        while index < len(body) and not body[index].strip():
            index += 1
        code = "\n".join(body[index:]).rstrip()
        if markdown or code:
            cells.append(Cell("\n".join(markdown).strip(), code, start + index))
    return Tutorial(name, title.strip().lstrip("#").strip(), intro.strip(), cells)


def execute(script: Path, out: Path) -> int:
    """Run ``script`` cell by cell in this process (cwd: where it should write); write each cell's
    stdout and figures to ``out`` (``tutorial.json``, PNGs). On an exception: its traceback on
    stderr, exit status 1."""
    tutorial = parse(script.read_text(encoding="utf-8"), script.stem)
    namespace = {"__name__": "__main__", "__file__": str(script)}
    sys.path[0] = str(script.parent)  # as `python script.py` would have it
    start = time.perf_counter()
    for number, cell in enumerate(tutorial.cells, start=1):
        if not cell.code:
            continue
        code = compile("\n" * (cell.line - 1) + cell.code + "\n", str(script), "exec")
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                exec(code, namespace)
        except (Exception, SystemExit) as err:
            trace = "".join(traceback.format_exception(type(err), err, err.__traceback__.tb_next))
            sys.stderr.write(f"{buffer.getvalue()}\nTutorial {script.name} failed in cell {number} "
                             f"(line {cell.line}):\n{trace}")
            return 1
        cell.stdout = buffer.getvalue()
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            for index, figure_number in enumerate(pyplot.get_fignums(), start=1):
                cell.figures.append(f"cell{number:02d}_{index}.png")
                pyplot.figure(figure_number).savefig(out / cell.figures[-1], dpi=100, bbox_inches="tight")
            pyplot.close("all")
    data = dataclasses.asdict(tutorial)
    data.update(figures={}, seconds=time.perf_counter() - start)
    (out / "tutorial.json").write_text(json.dumps(data), encoding="utf-8")
    return 0


def run(script: Path, timeout: float = 600) -> Tutorial:
    """Execute ``script`` in a fresh process and a fresh temporary folder; its cells with their
    outputs, or a TutorialError naming it with the traceback."""
    script = Path(script).resolve()
    with tempfile.TemporaryDirectory(prefix=f"tutorial-{script.stem}-") as work:
        cwd, out = Path(work, "cwd"), Path(work, "out")
        cwd.mkdir()
        out.mkdir()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(script), str(out)], cwd=cwd,
                              env={**os.environ, **ENV}, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise TutorialError(done.stderr.strip() or f"Tutorial {script.name} exited with {done.returncode}.")
        data = json.loads((out / "tutorial.json").read_text(encoding="utf-8"))
        tutorial = Tutorial(data["name"], data["title"], data["intro"], [Cell(**cell) for cell in data["cells"]],
                            seconds=time.perf_counter() - start)
        tutorial.figures = {name: (out / name).read_bytes() for cell in tutorial.cells for name in cell.figures}
    return tutorial


def _fence(content: str, info: str) -> str:
    """A fenced block longer than any run of backticks in ``content``."""
    ticks = "`" * max([3] + [len(run) + 1 for run in re.findall(r"`{3,}", content)])
    return f"{ticks}{info}\n{content.rstrip()}\n{ticks}"


def page(tutorial: Tutorial, figure_folder: str) -> str:
    """The Markdown page of an executed tutorial; its figures are ``figure_folder/<file>``."""
    lines = [f"# {tutorial.title}", "",
             f'[:material-download: Download the script]({tutorial.name}.py){{ download="{tutorial.name}.py" }}', "",
             tutorial.intro, ""]
    for cell in tutorial.cells:
        if cell.markdown:
            lines += [cell.markdown, ""]
        if cell.code:
            lines += [_fence(cell.code, "python"), ""]
        if cell.stdout.strip():
            lines += [_fence(cell.stdout, 'text title="Output"'), ""]
        lines += [f"![Figure of cell {name[4:6].lstrip('0')}]({figure_folder}/{name})\n" for name in cell.figures]
    lines += [f"*This page was produced by running the script at smoke settings (`LOSSATLAS_DOCS_BUILD=1`), "
              f"in {tutorial.seconds:.0f} s.*", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(execute(Path(sys.argv[1]), Path(sys.argv[2])))
