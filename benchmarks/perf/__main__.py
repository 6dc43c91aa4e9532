"""The performance suite in one run: every section side by side, written to results.md.

    python -m benchmarks.perf                      # all sections (~7 min on 2 cores) -> benchmarks/perf/results.md
    python -m benchmarks.perf --quick              # smaller sizes (~1.5 min), printed only
    python -m benchmarks.perf --only grid,hessian  # some sections, printed only (or --out FILE)

Sections: grid (grid evaluation), merge_tree (merge tree + persistence vs gudhi and landscaper),
hessian (native vs pyhessian), hvp (Hessian-vector products: double backward vs forward-over-reverse,
eager and compiled), streaming (peak memory of streamed vs in-memory data), paths (path optimization
vs one minimum), jump_retrain (jump and
retrain vs one minimum), batched (many small training runs at once vs one at a time), gpu (device
throughput and the paper-scale projection; on a CPU with cut sizes). Run it on an otherwise idle
machine: the load average before and after is recorded, and a busy one skews every ratio (see
README.md).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from . import common

SECTIONS = ("grid", "merge_tree", "hessian", "hvp", "streaming", "paths", "jump_retrain", "batched", "gpu")
RESULTS = Path(__file__).with_name("results.md")


def _run_section(name: str, args) -> common.Section:
    if name == "grid":
        from . import grid
        return grid.run(args.quick)
    if name == "merge_tree":
        from . import merge_tree
        return merge_tree.run(args.quick, args.landscaper_python)
    if name == "hessian":
        from . import hessian
        return hessian.run(args.quick)
    if name == "hvp":
        from . import hvp
        return hvp.run(args.quick)
    if name == "streaming":
        from . import streaming
        return streaming.run(args.quick)
    if name == "paths":
        from . import paths
        return paths.run(args.quick)
    if name == "gpu":
        from . import gpu
        return gpu.run(args.quick)
    if name == "batched":
        from . import batched
        return batched.run(args.quick)
    from . import jump_retrain
    return jump_retrain.run(args.quick)


def main(argv=None) -> int:
    from .merge_tree import LANDSCAPER_PYTHON

    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    parser.add_argument("--out", type=Path, help="where to write the Markdown (default: results.md for a full run, "
                                                 "nothing otherwise)")
    parser.add_argument("--landscaper-python", default=LANDSCAPER_PYTHON,
                        help="python of the throwaway landscaper venv (see merge_tree.py)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; valid: {list(SECTIONS)}")
    full = not args.quick and set(names) == set(SECTIONS)
    out = args.out or (RESULTS if full else None)

    load_before = common.load_average()
    common.log(f"load average before: {load_before}")
    started = time.perf_counter()
    sections = []
    for name in SECTIONS:
        if name in names:
            start = time.perf_counter()
            section = _run_section(name, args)
            section.seconds = time.perf_counter() - start
            sections.append(section)
            common.log(f"{name}: {section.seconds:.0f} s")
    total = time.perf_counter() - started
    load_after = common.load_average()

    targets = [t for s in sections for t in s.targets]
    lines = [
        "# lossatlas performance",
        "",
        f"`python -m benchmarks.perf{' --quick' if args.quick else ''}"
        f"{'' if full or args.quick else ' --only ' + ','.join(names)}` on "
        f"{datetime.date.today().isoformat()}, {total / 60:.1f} min in all. Every ratio is measured in this one run, "
        "both sides on identical inputs, best of several interleaved runs unless a section says otherwise.",
        "",
        "## Machine",
        "",
        *common.machine_lines(),
        f"- Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after}",
        "",
        "## Targets",
        "",
        *(["Quick run: sizes and repeats below what the targets were set for; the verdicts are indicative only.", ""]
          if args.quick else []),
        "| comparison | measured | target | verdict |",
        "|---|---|---|---|",
        *[t.row() for t in targets],
        "",
        *[s.markdown() for s in sections],
    ]
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text)
        common.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
