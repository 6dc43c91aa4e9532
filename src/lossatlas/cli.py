"""Command line: ``lossatlas methods | inspect STORE | run CONFIG.toml``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import LossatlasError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lossatlas", description="Compare loss-landscape analysis methods.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list the installed analyzers and their parameters")
    inspect = commands.add_parser("inspect", help="print the tree of a store with its attributes")
    inspect.add_argument("store")
    run = commands.add_parser("run", help="validate a benchmark config, train minima, run its methods")
    run.add_argument("config")
    run.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "paper"])
    run.add_argument("--store", help="HDF5 store (default: OUT/<name>_<scale>.h5)")
    run.add_argument("--out", default="results", help="output directory (default: results)")
    run.add_argument("--check", action="store_true", help="only validate the config")
    args = parser.parse_args(argv)
    try:
        return {"methods": _methods, "inspect": _inspect, "run": _run}[args.command](args)
    except LossatlasError as err:
        print(f"lossatlas: error: {err}", file=sys.stderr)
        return 2


def _methods(args) -> int:
    from . import registry

    names = registry.available()
    if not names:
        print("No analyzers installed (entry-point group 'lossatlas.methods').")
    for name in names:
        cls = registry.get(name)
        print(f"{name}: {cls.description}")
        for pname, default in cls.defaults().items():
            constraint = cls.constraints.get(pname)
            print(f"    {pname} = {default!r}" + (f"  ({constraint})" if constraint else ""))
    return 0


def _inspect(args) -> int:
    from .store import Store

    with Store(args.store, "r") as store:
        print(store.tree())
    return 0


def _run(args) -> int:
    from . import harness
    from .store import Store

    plan = harness.load(args.config, args.scale)
    print(f"{plan.name} at scale {plan.scale!r}: {len(plan.subjects)} subject(s) x {len(plan.seeds)} seed(s); "
          f"methods: {sorted(plan.methods) or 'none'}")
    if args.check:
        print("config OK")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = Path(args.store) if args.store else out / f"{plan.name}_{plan.scale}.h5"
    start = time.perf_counter()
    with Store(store_path, "a") as store:
        rows = harness.execute(plan, store)
    table = harness.format_rows(rows)
    (out / f"{plan.name}_{plan.scale}_summary.md").write_text(table + "\n")
    print(table)
    print(f"\nstore: {store_path}  ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
