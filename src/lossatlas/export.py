"""Tidy exports of a store, for analysis outside lossatlas (pandas, xarray, R):
one row per result with its parameters and metrics (``Store.to_dataframe``; Parquet), one row per
minimum, every 2-D loss grid as a netCDF file with its coordinates, and a manifest written last. Needs the ``export``
extra (pandas, pyarrow, xarray, h5netcdf), imported only here."""
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
        grid = xr.Dataset({"loss": (("x", "y"), result.arrays["loss_grid"])},
                          coords={"x": result.arrays["x"], "y": result.arrays["y"]},
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

