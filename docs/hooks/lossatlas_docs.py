"""The mkdocs hook that generates what the docs must not write by hand.

* every ``docs/tutorials/<name>.py`` is executed (``gen_tutorials``) into ``tutorials/<name>.md``
  with its outputs and figures; one that raises fails the build with its traceback;
* ``reference/analyzers/`` (one page per installed analyzer and an index), ``reference/cli.md`` and
  ``reference/config.md`` are generated from the code's declarations (``gen_reference``);
* ``changelog.md`` is the repository's CHANGELOG.md.

The nav of mkdocs.yml names the fixed pages; the hook adds a tutorial after ``tutorials/index.md``
and an analyzer after ``reference/analyzers/index.md`` for each that exists. Everything is
generated in memory on each build: nothing is cached or written into docs/.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import gen_reference  # noqa: E402
import gen_tutorials  # noqa: E402

log = logging.getLogger("mkdocs.hooks.lossatlas")
TUTORIAL_LIST = "<!-- tutorials -->"
_LISTED: dict[str, tuple[str, str]] = {}  # tutorial name -> (title, first paragraph), this build's


def _tutorials(config) -> list[Path]:
    return sorted(p for p in Path(config.docs_dir, "tutorials").glob("*.py") if not p.name.startswith("__"))


def _analyzers() -> dict[str, type]:
    from lossatlas import registry

    return {name: registry.get(name) for name in registry.available()}


def _expand(nav, after: str, extra: list[str]) -> bool:
    """Insert ``extra`` after the entry naming ``after`` in the (nested) nav; whether it was found."""
    for index, item in enumerate(nav):
        target = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else item
        if target == after:
            nav[index + 1:index + 1] = [page for page in extra if page not in nav]
            return True
        if isinstance(target, list) and _expand(target, after, extra):
            return True
    return False


def on_config(config):
    if config.nav is not None:
        _expand(config.nav, "tutorials/index.md", [f"tutorials/{p.stem}.md" for p in _tutorials(config)])
        _expand(config.nav, "reference/analyzers/index.md",
                [f"reference/analyzers/{name}.md" for name in sorted(_analyzers())])
    return config


def on_files(files, config):
    def add(path: str, content) -> None:
        files.append(File.generated(config, path, content=content))

    _LISTED.clear()
    for script in _tutorials(config):
        try:
            tutorial = gen_tutorials.run(script)
        except gen_tutorials.TutorialError as err:
            raise PluginError(str(err)) from None  # names the tutorial, with its traceback
        log.info("tutorial %s executed in %.1f s (%d cells, %d figures)", script.name, tutorial.seconds,
                 len(tutorial.cells), len(tutorial.figures))
        add(f"tutorials/{script.stem}.md", gen_tutorials.page(tutorial, script.stem))
        for name, png in tutorial.figures.items():
            add(f"tutorials/{script.stem}/{name}", png)
        _LISTED[script.stem] = (tutorial.title, tutorial.intro.split("\n\n")[0])

    from lossatlas import cli

    analyzers = _analyzers()
    add("reference/analyzers/index.md", gen_reference.analyzers_index(analyzers))
    for name, cls in analyzers.items():
        add(f"reference/analyzers/{name}.md", gen_reference.analyzer_page(cls, name))
    add("reference/cli.md", gen_reference.cli_page(cli.parser()))
    add("reference/config.md", gen_reference.config_page())
    changelog = Path(config.config_file_path).parent / "CHANGELOG.md"
    if changelog.is_file():
        add("changelog.md", changelog.read_text(encoding="utf-8"))
    return files


def on_page_markdown(markdown, page, config, files):
    """The tutorials index lists every tutorial where it says ``<!-- tutorials -->``."""
    if page.file.src_uri == "tutorials/index.md" and TUTORIAL_LIST in markdown:
        listed = "\n".join(f"- [{title}]({name}.md): {gen_reference.cell(intro)}"
                           for name, (title, intro) in _LISTED.items())
        markdown = markdown.replace(TUTORIAL_LIST, listed or "No tutorials yet.")
    return markdown
