"""Tidy exports of a store, for analysis outside lossatlas (pandas, xarray, R): one row per
metric of every result (``Store.to_dataframe``, ``metrics_frame``), one row per result with its
parameters and metrics (``results_frame``; Parquet), one row per minimum, every 2-D loss grid as a
netCDF file with its coordinates, and a manifest written last. Needs the ``export`` extra (pandas,
pyarrow, xarray, h5netcdf), imported only here."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .errors import ConfigError, ExportError
from .plots import file_stems
from .progress import bar as progress_bar
from .provenance import now, versions

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "lossatlas-export-1"
_EXTRA = "pip install 'lossatlas[export]' (pandas, pyarrow, xarray, h5netcdf)"


def results_frame(store):
    """One row per stored result: subject, method, key, seed, created, wall time, device, every
    parameter as ``param.<name>`` and every metric as ``metric.<name>``."""
    pd = _need("pandas")
    rows = []
    for subject in store.subjects():
        for result in store.results(subject):
            row = {"subject": subject, "method": result.method, "key": result.key, "seed": result.seed,
                   "created": result.created, "wall_time_s": result.wall_time_s,
                   "device": result.runtime.get("device", "")}
            row.update({f"param.{k}": _plain(v) for k, v in sorted(result.params.items())})
            row.update({f"metric.{k}": float(v) for k, v in sorted(result.metrics.items())})
            rows.append(row)
    return _uniform(pd.DataFrame(rows))


METRIC_COLUMNS = ["subject", "analyzer", "label", "minimum", "at", "metric", "value", "kind", "key"]


def metrics_frame(store, wide: bool = False, metrics=None):
    """Every stored metric as a tidy pandas frame: one row per (subject, label, minimum, metric),
    sorted by subject, analyzer, label, minimum and metric, with columns ``subject``, ``analyzer``
    (the registered name the store files results under), ``label`` (the method's label in a
    benchmark, e.g. "merge-tree-hessian"; without one the analyzer, "-2", "-3" added for a second
    and third parameter set), ``minimum`` (an int; NA for a result at theta0 or one per subject),
    ``at`` ("minimum", "theta0" or "subject"), ``metric``, ``value``, ``kind`` ("measure" or
    "diagnostic", as the analyzer declared it) and ``key`` (the result in the store:
    ``store.read_result(subject, analyzer, key)``).

    ``wide=True``: one row per (subject, minimum), a column per ``label.metric`` (the report's
    column names); a per-subject result's values fill every row of its subject. ``metrics``: the
    ones to keep, as "label.metric", "analyzer.metric" or a bare metric name; a name that matches
    nothing is a ConfigError listing those there are."""
    pd = _need("pandas")
    rows = _metric_rows(store)
    if metrics is not None:
        rows = _selected(rows, [metrics] if isinstance(metrics, str) else list(metrics))
    frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    frame["minimum"] = frame["minimum"].astype("Int64")
    frame["value"] = frame["value"].astype(float)
    frame = frame.sort_values(["subject", "analyzer", "label", "minimum", "metric"], na_position="last",
                              kind="stable")
    frame = frame.reset_index(drop=True)
    return _wide(pd, frame) if wide else frame


def _metric_rows(store) -> list[dict]:
    labels = _benchmark_labels(store)
    # a result outside every benchmark never takes the label of a stored result of one
    taken = {label for (subject, analyzer, key), label in labels.items() if store.has_result(subject, analyzer, key)}
    rows = []
    for subject in store.subjects():
        numbered: dict[str, dict[str, str]] = {}  # analyzer -> parameters (minimum aside) -> label
        for result in store.results(subject):
            label = labels.get((subject, result.method, result.key))
            if label is None:
                params = json.dumps({k: v for k, v in result.params.items() if k != "minimum"}, sort_keys=True,
                                    default=str)
                sets = numbered.setdefault(result.method, {})
                if params not in sets:
                    number = len(sets) + 1
                    while (name := result.method + (f"-{number}" if number > 1 else "")) in taken:
                        number += 1
                    sets[params] = name
                label = sets[params]
            scope = result.analyzer.get("scope", "minimum")
            at = "subject" if scope == "subject" else str(result.params.get("at", "minimum"))
            minimum = result.params.get("minimum") if at == "minimum" else None
            declared = result.analyzer.get("metrics", {})
            for name, value in result.metrics.items():
                rows.append({"subject": subject, "analyzer": result.method, "label": label,
                             "minimum": None if minimum is None else int(minimum), "at": at, "metric": name,
                             "value": float(value), "kind": declared.get(name, {}).get("kind", "measure"),
                             "key": result.key})
    return rows


def _benchmark_labels(store) -> dict[tuple[str, str, str], str]:
    """(subject, analyzer, key) -> the label a benchmark run filed the result under ("label
    [setting]" for a [sensitivity] setting); the first benchmark that names a result wins."""
    labels = {}
    for name in store.benchmarks():
        record = store.read_benchmark(name)
        methods = {label: m.get("analyzer", label) for label, m in (record.get("methods") or {}).items()}
        for run in record.get("runs") or []:
            for label, key in (run.get("results") or {}).items():
                labels.setdefault((run["subject"], methods.get(label, label), key), label)
            for label, settings in (run.get("sensitivity") or {}).items():
                for setting, key in settings.items():
                    labels.setdefault((run["subject"], methods.get(label, label), key), f"{label} [{setting}]")
    return labels


def _selected(rows: list[dict], wanted: list[str]) -> list[dict]:
    """The rows of each wanted name: a "label.metric" where one is so named, else an
    "analyzer.metric" (every label of the analyzer: its [sensitivity] settings too), else a bare
    metric name."""
    keep, unknown = set(), []
    for name in wanted:
        for spelled in (lambda r: f"{r['label']}.{r['metric']}", lambda r: f"{r['analyzer']}.{r['metric']}",
                        lambda r: r["metric"]):
            found = {i for i, r in enumerate(rows) if spelled(r) == name}
            if found:
                keep |= found
                break
        else:
            unknown.append(name)
    if unknown:
        valid = sorted({f"{r['label']}.{r['metric']}" for r in rows})
        raise ConfigError(f"No stored metric is named {unknown}; the store holds: {', '.join(valid) or 'none'} "
                          "(a bare metric name, or analyzer.metric, works too).")
    return [r for i, r in enumerate(rows) if i in keep]


def _wide(pd, frame):
    """One row per (subject, minimum): a column per label.metric; per-subject values on every row
    of their subject."""
    frame = frame.assign(column=frame["label"] + "." + frame["metric"])
    once = frame["at"] == "subject"
    index = ["subject", "minimum"]
    table = frame[~once].pivot(index=index, columns="column", values="value") if (~once).any() else \
        pd.DataFrame(index=pd.MultiIndex.from_frame(frame[index].drop_duplicates()))
    table = table.reset_index()
    for subject in frame.loc[once, "subject"].unique():
        if not (table["subject"] == subject).any():  # only per-subject results: one row, minimum NA
            table = pd.concat([table, pd.DataFrame({"subject": [subject], "minimum": [pd.NA]})], ignore_index=True)
        for _, row in frame[once & (frame["subject"] == subject)].iterrows():
            table.loc[table["subject"] == subject, row["column"]] = row["value"]
    table["minimum"] = table["minimum"].astype("Int64")
    table.columns.name = None
    columns = index + sorted(c for c in table.columns if c not in index)
    return table[columns].sort_values(index, na_position="last", kind="stable").reset_index(drop=True)


def minima_frame(store):
    """One row per stored minimum: subject, index, seed, wall time, its metrics, its recipe (JSON)."""
    pd = _need("pandas")
    rows = [{"subject": subject, "minimum": m.index, "seed": m.seed, "wall_time_s": m.wall_time_s,
             **{f"metric.{k}": float(v) for k, v in sorted(m.metrics.items())},
             "recipe": json.dumps(m.recipe, sort_keys=True)}
            for subject in store.subjects() for m in store.minima(subject)]
    return _uniform(pd.DataFrame(rows))


def export(store, out: str | Path) -> dict[str, list[Path]]:
    """Write ``results.parquet``, ``minima.parquet``, ``grids/*.nc`` (one per result holding a
    loss grid, with its x/y coordinates, the result's parameters and metrics as attributes) and
    ``manifest.json`` (what was exported, from which store, each file's sha256).

    All or nothing: everything is written into a hidden folder beside ``out`` and renamed into
    place when complete, so a kill, Ctrl-C or a full disk leaves the earlier export in ``out``
    untouched (and no half-written file in it); a folder that holds other files is refused."""
    xr = _need("xarray")
    _need("h5netcdf")
    _need("pyarrow")
    out = Path(out)
    _clean_leftovers(out)
    _check_replaceable(out)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        files = _write_all(store, staging, xr)
        _write_manifest(store, staging, files)
        _swap(staging, out)
    except OSError as err:
        raise ExportError(f"Cannot write the export to {out}: {err.strerror or err}. Nothing in {out} was replaced "
                          "(an earlier export there is intact); free space or choose another folder, then export "
                          "again.") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"tables": [out / name for name in files if name.endswith(".parquet")],
            "grids": [out / name for name in files if name.startswith("grids/")]}


GRID_AXES = ("x", "y", "z", "w")


def _write_all(store, folder: Path, xr) -> list[str]:
    """The export's files under ``folder``; returns their names relative to it."""
    names = []
    for name, frame in (("results", results_frame(store)), ("minima", minima_frame(store))):
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        names.append(f"{name}.parquet")
    grids = [(subject, result) for subject in store.subjects() for result in store.results(subject)
             if {"loss_grid", "x", "y"} <= set(result.arrays)]
    stems = file_stems(f"{subject}_{result.method}_{result.key}" for subject, result in grids)
    if grids:
        (folder / "grids").mkdir()
    for subject, result in progress_bar(grids, desc="export: grids", enabled=len(grids) >= 20):
        axes = GRID_AXES[:result.arrays["loss_grid"].ndim]  # a 3-D or 4-D grid has z (and w) too
        grid = xr.Dataset({"loss": (axes, result.arrays["loss_grid"])},
                          coords={axis: result.arrays[axis] for axis in axes},
                          attrs={"subject": subject, "method": result.method, "key": result.key,
                                 "params": json.dumps(result.params, sort_keys=True),
                                 "metrics": json.dumps(result.metrics, sort_keys=True)})
        name = f"grids/{stems[f'{subject}_{result.method}_{result.key}']}.nc"
        grid.to_netcdf(folder / name, engine="h5netcdf")
        names.append(name)
    return names


def _write_manifest(store, folder: Path, names: list[str]) -> None:
    """Written last: a folder with a manifest holds a whole export; its checksums let a reader
    check each file."""
    manifest = {"format": MANIFEST_FORMAT, "complete": True, "created": now(), "store": str(Path(store.path).resolve()),
                "lossatlas": versions().get("lossatlas", "unknown"),
                "files": {name: _sha256(folder / name) for name in names}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _check_replaceable(out: Path) -> None:
    """An export folder holds exactly one export: an earlier export there is replaced whole, a
    folder with anything else in it is refused (its files are not ours to delete)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; export into a folder (new, empty, or an earlier export).")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise ExportError(f"{out} holds files that are not a lossatlas export (no {MANIFEST}); export into a new or "
                          "empty folder, or into an earlier export, which is replaced whole.")


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _swap(staging: Path, out: Path) -> None:
    """Put the finished export in place of ``out``: renames only, so ``out`` is always either the
    earlier export or the new one (a kill between the two renames leaves the earlier one in
    ``.<out>.old-<pid>`` beside it)."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(out: Path) -> None:
    """What a killed export left beside ``out``: its staging folder goes; an earlier export moved
    aside just before the kill goes back in place if nothing replaced it, else goes too."""
    if not out.parent.is_dir():
        return
    for path in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind, _, pid = path.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.rename(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ConfigError(f"Exports need {module}, which is not installed: {_EXTRA}.") from err


def _plain(value):
    """Parameters as table cells: lists and dicts as JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict, tuple)) else value


def _uniform(frame):
    """Columns whose cells mix types (a parameter that is a number here and text there) as text,
    so that Parquet can store them."""
    for column in frame.columns:
        kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if frame[column].dtype == object and len(kinds) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None or v != v else str(v))
    return frame

