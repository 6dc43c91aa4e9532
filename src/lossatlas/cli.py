"""Command line: ``lossatlas methods | inspect STORE | run CONFIG.toml... | report STORE --out DIR``.

Each command imports what it needs when it runs (torch, h5py), so `lossatlas --help` and argument
errors answer at once; these imports hide no cycle (tests/test_imports.py counts them too).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import logging
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, LossatlasError

_FILESYSTEM_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR,
                      errno.EISDIR, errno.EEXIST}


_INTERRUPTED = {  # what an interrupted command leaves behind, and what to do
    "run": "what finished is stored: rerun the same command to resume.",
    "export": "nothing in the output folder was replaced (an earlier export there is intact): export again.",
    "report": "the report folder may be partly rewritten: run the report again (the store is unchanged).",
    "import-surface": "an imported surface is stored whole or not at all: run the import again.",
    "audit-invariance": "what finished is kept in the scratch stores under --out: rerun the same command to resume.",
}

FIGURES_HELP = "full: 300-dpi PNG and vector PDF (default); draft: 100-dpi PNG only (fast); none: tables only"


def parser() -> argparse.ArgumentParser:
    """The command line's parser, built without running anything (the docs render it)."""
    parser = argparse.ArgumentParser(prog="lossatlas", description="Compare loss-landscape analysis methods.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list the installed analyzers and their parameters")
    inspect = commands.add_parser("inspect", help="print the tree of a store with its attributes (also while a run "
                                                  "writes it)")
    inspect.add_argument("store")
    amount = inspect.add_mutually_exclusive_group()
    amount.add_argument("--summary", action="store_true", help="a few lines instead: format, subjects (parameters, "
                         "device, minima and seeds), results per analyzer and minimum, benchmarks, size")
    amount.add_argument("--full", action="store_true", help="attributes in full (default: long ones cut, but "
                         "never a result's params)")
    run = commands.add_parser("run", help="validate benchmark configs, then produce -> analyze -> report")
    run.add_argument("config", nargs="+", help="benchmark TOML file(s), e.g. benchmarks/resnet_skip.toml")
    run.add_argument("--scale", default="cpu", choices=["smoke", "demo", "cpu", "paper"],
                     help="smoke: seconds (the tests); demo: the headline in minutes; cpu: the studies on a CPU; "
                          "paper: the papers' settings (default: cpu)")
    run.add_argument("--store", help="HDF5 store (default: OUT/<name>_<scale>.h5; one config only)")
    run.add_argument("--out", default="results", help="output directory; each report goes to OUT/<name>_<scale>/")
    run.add_argument("--check", action="store_true", help="only validate the config(s)")
    run.add_argument("--plan", action="store_true", help="only print each stage's jobs, estimated time and peak "
                                                         "memory on this machine, measured on the subjects (nothing "
                                                         "is written)")
    run.add_argument("--device", help="auto (a GPU when there is one), cpu, cuda or cuda:N; overrides the configs' "
                                      "'device' key (default: auto)")
    run.add_argument("--executor", default="local", choices=["local", "dask"],
                     help="where grid blocks, minima, path pairs and jump-and-retrain runs are computed; "
                          "the store is written by this process only")
    run.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); default with --executor dask: "
                                         "a LocalCluster with one worker per core")
    run.add_argument("--figures", default="full", choices=["full", "draft", "none"], help=FIGURES_HELP)
    run.add_argument("--nproc", type=int, default=1,
                     help="processes on this machine sharing the run through torch.distributed (gloo on the CPU, "
                          "NCCL with one GPU each): data-parallel evaluation, independent tasks split, rank 0 "
                          "writes the store; the same as torchrun --nproc-per-node N -m lossatlas run ...")
    run.add_argument("--threads", type=int, help="torch threads per process and per task (default: torch's; "
                                                 "1 with --executor dask)")
    report = commands.add_parser("report", help="rebuild the tables and figures of a benchmark from its store "
                                                "(a store of lossatlas.analyze calls: what it holds)")
    report.add_argument("store")
    report.add_argument("--out", required=True, help="output directory for the report")
    report.add_argument("--benchmark", help="which benchmark of the store (default: its only one)")
    report.add_argument("--figures", default="full", choices=["full", "draft", "none"], help=FIGURES_HELP)
    export = commands.add_parser("export", help="the store as tidy tables (Parquet: one row per result, one per "
                                                "minimum) and its loss grids as netCDF, for pandas / xarray / R")
    export.add_argument("store")
    export.add_argument("--out", required=True, help="output directory")
    audit = commands.add_parser("audit-invariance", help="rerun a benchmark's measures on function-preserving "
                                "transformations of its minima (Dinh et al. 2017: layer rescaling, scaling before "
                                "BatchNorm, unit and head permutations) and report which measures move")
    audit.add_argument("store")
    audit.add_argument("--out", required=True, help="output directory: the CSV tables, the figure and the scratch "
                                                    "stores of the transformed minima (a rerun resumes)")
    audit.add_argument("--benchmark", help="which benchmark of the store (default: its only one)")
    audit.add_argument("--transforms", nargs="+", choices=["rescale", "scale_before_norm", "permute", "permute_heads"],
                       help="default: the benchmark's [audit] transforms, else all")
    audit.add_argument("--alphas", nargs="+", type=float, help="rescaling factors (default: [audit] alphas, else "
                                                               "0.5 2 10)")
    audit.add_argument("--minima", type=int, help="the first N minima of every variant (default: [audit], else 1)")
    audit.add_argument("--methods", nargs="+", help="method labels to rerun (default: every method)")
    audit.add_argument("--no-control", action="store_true", help="skip the control (seeded methods rerun with "
                                                                 "shifted seeds at the untransformed minimum)")
    audit.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the benchmark's)")
    surface = commands.add_parser("import-surface", help="read a 2-D loss surface computed elsewhere (a "
                                  "tomgoldstein/loss-landscape .h5 file, or .npy/.npz) into a store and compute its "
                                  "merge tree (Xie, Geniesse et al. 2024)")
    surface.add_argument("file")
    surface.add_argument("--store", required=True, help="HDF5 store to add the surface to (created if missing)")
    surface.add_argument("--name", help="subject name (default: the file's stem)")
    surface.add_argument("--key", default="train_loss", help="loss-landscape quantity (default: train_loss)")
    surface.add_argument("--relative-threshold", type=float, default=0.0,
                         help="merge-tree simplification, as a fraction of the loss range (default 0)")
    surface.add_argument("--no-analyze", action="store_true", help="only import the surface")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return {"methods": _methods, "inspect": _inspect, "run": _run, "report": _report,
                "export": _export, "audit-invariance": _audit,
                "import-surface": _import_surface}[args.command](args)
    except LossatlasError as err:
        print(f"lossatlas: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lossatlas inspect STORE | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0 if args.command in ("inspect", "methods") else 141  # a run cut short is no success
    except OSError as err:  # an output folder that cannot be written, a path that is a file, ...
        if err.errno not in _FILESYSTEM_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"lossatlas: error: cannot write or read{where}: {err.strerror or err}. Check that the folder exists, is "
              f"writable and has space; {_INTERRUPTED.get(args.command, _INTERRUPTED['run'])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nlossatlas: interrupted; {_INTERRUPTED.get(args.command, _INTERRUPTED['run'])}", file=sys.stderr)
        return 130


def _methods(args) -> int:
    from . import registry

    names = registry.available()
    if not names:
        print("No analyzers installed (entry-point group 'lossatlas.methods').")
    for name in names:
        cls = registry.get(name)
        print(f"{name} (one result per {cls.scope}): {cls.description}")
        for field in dataclasses.fields(cls):
            constraint, doc = field.metadata.get("constraint"), field.metadata.get("doc")
            print(f"    {field.name} = {field.default!r}" + (f"  ({constraint})" if constraint else "")
                  + (f"  # {doc}" if doc else ""))
    return 0


def _inspect(args) -> int:
    from .store import read_while_written

    def render(store):  # the store to diagnose: read unvalidated, its unreadable nodes marked
        return store.summary() if args.summary else store.tree(None) if args.full else store.tree()

    text, written = read_while_written(args.store, render)
    print(text)
    if written:
        print("(another process is writing this store: shown as last flushed; unfinished results are being written)")
    return 0


def _run(args) -> int:
    from . import devices, executor, harness, ranks
    from .store import Store

    if args.nproc != 1 and not ranks.launched():
        if args.executor != "local":
            raise ConfigError("--nproc runs the processes with torch.distributed; it does not combine with "
                              "--executor dask (use one or the other).")
        if args.plan or args.check:
            raise ConfigError("--plan and --check run in one process; leave out --nproc.")
        return ranks.relaunch(args.nproc, _without_nproc(args.argv))
    plans = [harness.load(config, args.scale) for config in args.config]  # every config checked before any work
    if args.device is not None:
        plans = [dataclasses.replace(plan, device=args.device) for plan in plans]
    names = [plan.record_name for plan in plans]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"Two configs have the same name and scale ({twice}): their stores and reports would "
                          "replace each other. Rename one.")
    if args.store and len(plans) > 1:
        raise ConfigError("--store names one store; give one config with it, or leave it out.")
    executor.check_options(args.executor, args.scheduler, args.threads)
    for plan in plans:
        devices.resolve(plan.device)  # a GPU asked for that is not there: refused now, before any work
    out = Path(args.out)
    stores = [Path(args.store) if args.store else out / f"{plan.record_name}.h5" for plan in plans]
    if ranks.launched():  # one of several processes (torchrun): join the group, each on its own device
        if args.plan or args.check or args.executor != "local":
            raise ConfigError("Under torchrun, lossatlas run runs the jobs with torch.distributed: --plan, --check "
                              "and --executor dask run in one process; start them without torchrun.")
        device = ranks.init(plans[0].device if plans else "auto")
        plans = [dataclasses.replace(plan, device=device) for plan in plans]
        try:
            return _run_ranks(args, plans, out, stores)
        finally:
            ranks.finish()
    for plan in plans:  # every method checked against every subject (data, dimensions, memory), one at a time
        harness.check_subjects(plan)
    for path in stores:
        if path.exists():  # a store of another schema, or locked, is refused now, not after the work
            Store(path, "r").close()
    for plan in plans:
        print(f"{plan.name} at scale {plan.scale!r}: {len(plan.subjects)} subject(s) x {len(plan.seeds)} seed(s); "
              f"methods: {sorted(plan.methods) or 'none'}"
              + "".join(f"; sensitivity of {label}: {', '.join(names)}" for label, names in plan.sensitivity.items()))
    if args.check:
        print("config OK")
        return 0
    if args.plan:
        _plan(plans, args)
        return 0
    with executor.make(args.executor, args.scheduler, args.threads) as runner, executor.use(runner):
        reports = [_run_one(plan, out, path, args.figures) for plan, path in zip(plans, stores)]
    print("\nreports:")
    for folder in reports:
        print(f"  {folder / 'report.md'}   {folder / 'index.html'}")
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _run_ranks(args, plans, out: Path, stores: list[Path]) -> int:
    """This process's part of a run over several (torchrun): the same jobs on every rank, the
    store opened and the report written by rank 0 alone (``lossatlas.ranks``)."""
    from . import distributed, executor, harness, progress, ranks

    rank, size = distributed.world()
    for plan in plans:  # on the device of this rank
        harness.check_subjects(plan)
    if rank == 0:
        print(f"{len(plans)} benchmark(s) over {size} processes (torch.distributed, {dist_backend()})")
    with ranks.RankExecutor(args.threads) as runner, executor.use(runner):
        executor.set_threads(args.threads)
        for plan, path in zip(plans, stores):
            if rank == 0:
                _run_one(plan, out, path, args.figures, shared=ranks.Leader)
            else:  # rank 0 alone shows progress
                with progress.shown(False):
                    harness.execute(plan, ranks.Follower(), progress=False)
    return 0


def dist_backend() -> str:
    from torch import distributed as dist

    return dist.get_backend() if dist.is_initialized() else "none"


def _plan(plans, args) -> None:
    """Every plan's stages, times and peak memory (``lossatlas.planning``), measured with the threads
    the run would use; nothing is written."""
    from . import executor, planning

    executor.set_threads(args.threads)
    for plan in plans:
        print(f"\n{planning.report(planning.estimate(plan))}")
    if args.executor != "local":
        print("\n(estimated for the local executor: with Dask the independent tasks of a job spread over its workers)")


def _run_one(plan, out: Path, store_path: Path, figures: str = "full", shared=None) -> Path:
    from . import harness
    from .report import write_report
    from .store import Store

    folder = out / plan.record_name
    start = time.perf_counter()
    new_store = not store_path.exists()
    try:
        with Store(store_path, "a") as store:  # locked first: a run refused here writes nothing, not even run.log
            folder.mkdir(parents=True, exist_ok=True)
            with _logging_to(folder / "run.log") as logger:
                logger.info("run %s at scale %s into %s", plan.name, plan.scale, store_path)
                harness.execute(plan, store if shared is None else shared(store))
                if plan.audit is not None and plan.audit.enabled:
                    if shared is None:
                        _audit_after_run(plan, store, folder / "audit", figures, logger)
                    else:  # the audit's scratch stores are one process's
                        logger.info("invariance audit skipped under several processes: run `lossatlas "
                                    "audit-invariance %s --out %s` after the run", store_path, folder / "audit")
                logger.info("report -> %s", folder)
                write_report(store, folder, plan.record_name, figures=figures)
                logger.info("finished in %.1f s", time.perf_counter() - start)
    except BaseException:
        if new_store:
            _remove_if_empty(store_path)
        raise
    print(f"{plan.record_name}: done in {time.perf_counter() - start:.1f} s; store {store_path}")
    report = (folder / "report.md").read_text(encoding="utf-8")
    print(report.split("## Method comparison")[0].split("## Paper claims")[-1])
    return folder


def _audit_after_run(plan, store, out: Path, figures: str, logger) -> None:
    """The run's ``[audit]``; one that fails is logged and the report written without it: the
    benchmark's results are stored, and ``lossatlas audit-invariance`` can audit them later."""
    from .audit import audit

    logger.info("invariance audit -> %s", out)
    try:
        audit(store, out, plan.record_name, plan.audit, device=plan.device, figures=figures)
    except LossatlasError as err:
        logger.error("invariance audit failed: %s", err)
        print(f"lossatlas: warning: the invariance audit of {plan.record_name} failed ({err}); the report is written "
              "without it.", file=sys.stderr)


@contextlib.contextmanager
def _logging_to(path: Path):
    """The lossatlas log, also written to ``path`` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("lossatlas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def _remove_if_empty(path: Path) -> None:
    """A run that failed before storing anything (a missing dataset, a bad problem parameter)
    leaves no empty store behind."""
    from .store import remove_if_empty

    remove_if_empty(path)


def _report(args) -> int:
    from .report import write_report
    from .store import Store

    with Store(args.store, "r") as store:
        written = write_report(store, args.out, args.benchmark, figures=args.figures)
    print(f"report: {written['report.md']}  {written['index.html']}")
    return 0


def _audit(args) -> int:
    from .audit import audit
    from .params import validate_fields
    from .record import AuditSettings, Benchmark
    from .report.collect import benchmark_name
    from .store import Store

    with Store(args.store, "a") as store:
        name = benchmark_name(store, args.benchmark)
        recorded = Benchmark.from_dict(store.read_benchmark(name)).audit if name is not None else None
        given = {"transforms": args.transforms, "alphas": args.alphas, "minima": args.minima,
                 "methods": args.methods, "control": False if args.no_control else None}
        settings = dataclasses.replace(recorded or AuditSettings(), enabled=True,
                                       **{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in given.items() if v is not None})
        validate_fields(settings, "audit-invariance")
        found = audit(store, args.out, name, settings, device=args.device)
    moved = {row["measure"] for row in found["rows"] if row["kind"] != "control"}
    print(f"audit: {len(found['checks'])} transformed minima, {len(moved)} measures; tables and figure in {args.out} "
          f"(invariance_summary.csv); the report of {args.store} now has a section on it")
    return 0


def _export(args) -> int:
    from .export import export
    from .store import Store

    with Store(args.store, "r") as store:
        written = export(store, args.out)
    print(f"export: {', '.join(str(p) for p in written['tables'])}; {len(written['grids'])} grid(s) in "
          f"{Path(args.out) / 'grids'}; {Path(args.out) / 'manifest.json'} lists them with their checksums")
    return 0


def _import_surface(args) -> int:
    import numpy as np

    from .analysis import analyze
    from .store import Store
    from .surfaces import import_surface, surface_subject

    subject = surface_subject(args.file, args.name, args.key)  # every check before the store is touched
    path, lock = Path(args.store), Path(args.store + ".lock")
    created = [p for p in (path, lock) if not p.exists()]
    try:
        with Store(path) as store:
            import_surface(store, subject)
    except BaseException:  # a store this import created holds nothing else: it goes, with its lock file
        for made in created:
            made.unlink(missing_ok=True)
        raise
    with Store(path) as store:
        missing = int(np.isnan(subject.grid_loss).sum())
        print(f"imported {args.file} as {subject.name!r}: {subject.grid_loss.shape[0]} x {subject.grid_loss.shape[1]} "
              f"grid of {subject.quantity}" + (f", {missing} point(s) missing (NaN)" if missing else ""))
        if not args.no_analyze:
            result = analyze(store, subject, "merge-tree", relative_threshold=args.relative_threshold,
                             progress=False)
            shown = ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items())
            print(f"merge-tree (Xie, Geniesse et al. 2024): {shown}")
    print(f"store: {args.store}; `lossatlas report {args.store} --out DIR` draws and tabulates it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
