"""Reference pages generated from what the code declares, so that they cannot drift from it.

An analyzer's page comes from its class (parameters with their defaults, constraints and docs,
metrics, views, scope, version, ``references``) and its module's docstring (why it measures what it
does); the CLI page from ``lossatlas.cli.parser()``; the config page from the declared tables of
``lossatlas.config`` and ``lossatlas.record``. Every function returns Markdown.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys

_CODE = re.compile(r"(``.+?``|`[^`]+`)")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what Markdown would take for raw HTML: "<label>" is text here


def text(value) -> str:
    """Prose from a docstring or a declaration as Markdown: ``rst`` literals are Markdown code spans
    already; a "<" that would open an HTML tag outside them and outside indented code blocks is
    escaped."""
    return "\n".join(line if line.startswith("    ") else _escape(line) for line in str(value).split("\n"))


def _escape(line: str, pipes: bool = False) -> str:
    parts = _CODE.split(line)
    plain = [_TAG.sub("&lt;", part).replace("|", "\\|" if pipes else "|") for part in parts[::2]]
    parts[::2] = plain
    return "".join(parts)


def cell(value) -> str:
    """``text`` for one table cell: one line, its pipes outside code spans escaped."""
    return _escape(" ".join(str(value).split()), pipes=True)


def code(value) -> str:
    """``value`` as a code span inside a table cell (the table reads pipes in code spans as text)."""
    shown = " ".join(str(value).split())
    return f"`` {shown} ``" if "`" in shown else f"`{shown}`"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "")


# -- declared fields (analyzer parameters, config tables) ----------------------------------------
def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return code(repr(field.default))
    if field.default_factory is not dataclasses.MISSING:
        return code(repr(field.default_factory()))
    return "required"


def fields_table(cls) -> str:
    """Every declared field of a dataclass: name, type, default, constraint, doc."""
    rows = []
    for field in dataclasses.fields(cls):
        constraint = field.metadata.get("constraint")
        rows.append([code(field.name), code(getattr(field.type, "__name__", field.type)),
                     _default(field), cell(constraint) if constraint is not None else "",
                     cell(field.metadata.get("doc", ""))])
    return table(["name", "type", "default", "constraint", "description"], rows)


# -- analyzers -----------------------------------------------------------------------------------
SCOPE_TEXT = {"minimum": "one result per trained minimum (its `minimum` parameter chooses it)",
              "subject": "one result per subject, from all its minima"}


def _direction(metric) -> str:
    return {True: "higher is better", False: "lower is better"}.get(metric.higher_is_better, "no preferred direction")


def analyzer_page(cls, name: str | None = None) -> str:
    """The reference page of an Analyzer subclass, from its declarations alone."""
    name = name or cls.name
    module = sys.modules.get(cls.__module__)
    lines = [f"# `{name}`", "", text(cls.description), "",
             table(["", ""], [["scope", cell(SCOPE_TEXT.get(cls.scope, cls.scope))],
                              ["version", f"{cls.version} (raised when a metric's definition changes; stored "
                                          "results of another version are recomputed)"],
                              ["class", code(f"{cls.__module__}.{cls.__qualname__}")],
                              ["in a benchmark config", code(f"[methods.{name}]")],
                              ["from Python", code(f'lossatlas.analyze(store, subject, "{name}", **params)')]]),
             ""]
    references = getattr(cls, "references", ())
    if references:
        lines += ["## Papers", ""] + [f"- {text(reference)}" for reference in references] + [""]
    if module is not None and module.__doc__:
        lines += ["## What it measures and why", "", text(doc(module)), ""]
    lines += ["## Parameters", "", "Checked before any work; an unknown name or a value outside its constraint is "
              "an error that says which.", "", fields_table(cls), ""]
    lines += ["## Metrics", "", "*Measures* are compared across methods in reports; *diagnostics* are bookkeeping "
              "kept out of the comparisons.", "",
              table(["name", "kind", "direction", "description"],
                    [[code(metric_name), metric.kind, _direction(metric), cell(metric.description)]
                     for metric_name, metric in cls.metrics.items()]), ""]
    if cls.views:
        lines += ["## Views", "", "The figures it contributes to reports (`Analyzer.plot(result, view=...)`).", "",
                  table(["name", "projection", "side-by-side panels share", "drawn by"],
                        [[code(view_name), view.projection or "2-D", view.shared or "nothing",
                          code(getattr(view.draw, "__name__", repr(view.draw)))]
                         for view_name, view in cls.views.items()]), ""]
    return "\n".join(lines)


def analyzers_index(analyzers: dict[str, type]) -> str:
    rows = [[f"[`{name}`]({name}.md)", cls.scope, cell(cls.description)] for name, cls in sorted(analyzers.items())]
    return "\n".join([
        "# Analyzers", "",
        "Every analyzer installed here, each page generated from the analyzer's own declarations "
        "(`lossatlas.analyzer`). Analyzers are found through the entry-point group `lossatlas.methods`, "
        "built-in and third-party alike; `lossatlas methods` lists the same.", "",
        table(["analyzer", "scope", "description"], rows), ""])


# -- command line --------------------------------------------------------------------------------
def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _help(action: argparse.Action) -> str:
    help_text = action.help or ""
    if "%(" in help_text:
        help_text = help_text % {**vars(action), "default": action.default}
    if action.choices:
        help_text += (" " if help_text else "") + f"(one of: {', '.join(map(str, action.choices))})"
    return help_text


def _arguments(parser: argparse.ArgumentParser) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            shown = ", ".join(action.option_strings)
            if action.nargs != 0:
                shown += " " + (action.metavar or action.dest.upper())
        else:
            shown = action.metavar or action.dest
            shown += {"+": " ...", "*": " ..."}.get(action.nargs, "")
        default = action.default
        shown_default = "required" if action.required and action.option_strings else (
            "" if default in (None, False, argparse.SUPPRESS) else code(default))
        rows.append([code(shown), shown_default, cell(_help(action))])
    return table(["argument", "default", "description"], rows) if rows else "No arguments."


def cli_page(parser: argparse.ArgumentParser) -> str:
    """Every subcommand of ``parser`` with its usage, options and help."""
    lines = ["# Command line", "", text(parser.description or ""), "",
             "Generated from the parser itself (`lossatlas.cli.parser()`); `lossatlas COMMAND --help` prints the "
             "same.", "", "```text", _usage(parser), "```", ""]
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for command, sub in action.choices.items():
            lines += [f"## `{parser.prog} {command}`", "", text(helps.get(command) or ""), "",
                      "```text", _usage(sub), "```", "", _arguments(sub), ""]
    return "\n".join(lines)


# -- benchmark configs ---------------------------------------------------------------------------
def config_page() -> str:
    """The benchmark config's tables, from their declarations (``lossatlas.config``, ``lossatlas.record``)."""
    from lossatlas import config, problems, record, training

    def section(title: str, cls, intro: str = "") -> list[str]:
        return [f"## `{title}`", "", text(doc(cls)), ""] + ([text(intro), ""] if intro else []) + [
            fields_table(cls), ""]

    problem_rows = [[code(name), cell(", ".join(f"{key}={value!r}" for key, value in problems.parameters(name).items())
                                      or "(none declared)")] for name in sorted(problems.PROBLEMS)]
    lines = ["# Benchmark config", "", "A benchmark is one TOML file, checked in full before any work "
             "(`lossatlas run CONFIG --check`). This page is generated from the declarations the checks read, so it "
             "lists every key that is accepted.", "", text(doc(config)), ""]
    lines += section("top level", config.Config)
    lines += section("[scales.<scale>]", config.ScaleOverrides,
                     f"Scales: {', '.join(f'`{scale}`' for scale in config.SCALES)}.")
    lines += section("[minima]", training.Recipe, "The training recipe of every minimum (`lossatlas.Recipe`); a "
                     "key of `[variants]` that names one of these fields varies the training.")
    lines += ["## `[methods.<label>]`", "", "An analyzer and its parameters: `analyzer` names it (default: the "
              "label itself; `\"package.module:Class\"` for one of your own), every other key is one of its "
              "parameters, listed on its page under [Analyzers](analyzers/index.md).", ""]
    lines += ["## `[sensitivity.<label>]`", "", "For a parameter of the method `<label>`, a list of values: each is "
              "rerun with that one parameter changed (one at a time, not their product) and reported in "
              "`sensitivity.csv`.", ""]
    lines += section("[report]", record.ReportSettings)
    lines += section("[[report.claims]]", record.Claim)
    lines += section("[audit]", record.AuditSettings)
    lines += ["## `problem` and `[params]`", "", "The built-in problems and their parameters with defaults (a "
              "registered problem or `\"package.module:factory\"` declares its own):", "",
              table(["problem", "parameters"], problem_rows), ""]
    return "\n".join(lines)
