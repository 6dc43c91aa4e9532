"""Tidy exports of a store (issue 17), for analysis outside lossatlas (pandas, xarray, R):
one row per result with its parameters and metrics (``Store.to_dataframe``; Parquet), one row per
minimum, and every 2-D loss grid as a netCDF file with its coordinates. Needs the ``export``
extra (pandas, pyarrow, xarray, h5netcdf), imported only here."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError
from .plots import file_stem

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
    """Write ``results.parquet``, ``minima.parquet`` and ``grids/*.nc`` (one per result holding a
    loss grid, with its x/y coordinates, the result's parameters and metrics as attributes)."""
    xr = _need("xarray")
    _need("h5netcdf")
    _need("pyarrow")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"tables": [], "grids": []}
    for name, frame in (("results", results_frame(store)), ("minima", minima_frame(store))):
        frame.to_parquet(out / f"{name}.parquet", index=False)
        written["tables"].append(out / f"{name}.parquet")
    for subject in store.subjects():
        for result in store.results(subject):
            if not {"loss_grid", "x", "y"} <= set(result.arrays):
                continue
            grid = xr.Dataset({"loss": (("x", "y"), result.arrays["loss_grid"])},
                              coords={"x": result.arrays["x"], "y": result.arrays["y"]},
                              attrs={"subject": subject, "method": result.method, "key": result.key,
                                     "params": json.dumps(result.params, sort_keys=True),
                                     "metrics": json.dumps(result.metrics, sort_keys=True)})
            path = out / "grids" / f"{file_stem(subject)}_{result.method}_{result.key}.nc"
            path.parent.mkdir(exist_ok=True)
            grid.to_netcdf(path, engine="h5netcdf")
            written["grids"].append(path)
    return written


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

