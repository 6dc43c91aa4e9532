"""Exports (issue 17): the store as a pandas table and Parquet, the loss grids as netCDF."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lossatlas import Recipe, Store, analyze, train_minima
from lossatlas.cli import main
from lossatlas.problems import himmelblau


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "study.h5"
    with Store(path) as store:
        subject = himmelblau()
        train_minima(store, subject, Recipe(lr=0.01, epochs=1, steps_per_epoch=30), seeds=[0, 1], progress=False)
        for minimum in (0, 1):
            analyze(store, subject, "hessian", progress=False, minimum=minimum)
        analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0", span=5.0, resolution=7)
    return path


def test_to_dataframe_has_one_row_per_result_with_its_parameters_and_metrics(store_path):
    with Store(store_path, "r") as store:
        frame = store.to_dataframe()
        results = {r.key: r for r in store.results("himmelblau")}
    assert len(frame) == 3 and set(frame["key"]) == set(results)
    for _, row in frame.iterrows():
        result = results[row["key"]]
        assert row["method"] == result.method
        for name, value in result.metrics.items():
            assert row[f"metric.{name}"] == pytest.approx(value, nan_ok=True)
    hessian = frame[frame["method"] == "hessian"]
    assert sorted(hessian["param.minimum"]) == [0, 1] and "param.resolution" in frame.columns


def test_export_writes_parquet_tables_and_netcdf_grids_that_read_back(store_path, tmp_path):
    assert main(["export", str(store_path), "--out", str(tmp_path)]) == 0
    with Store(store_path, "r") as store:
        frame = store.to_dataframe()
        grid = next(r for r in store.results("himmelblau", "merge-tree"))
        n_minima = len(store.minima("himmelblau"))
    back = pd.read_parquet(tmp_path / "results.parquet")
    assert list(back.columns) == list(frame.columns) and len(back) == len(frame)
    assert np.allclose(back["metric.top_eigenvalue"].astype(float), frame["metric.top_eigenvalue"].astype(float),
                       equal_nan=True)
    assert len(pd.read_parquet(tmp_path / "minima.parquet")) == n_minima
    (path,) = (tmp_path / "grids").glob("*.nc")
    with xr.open_dataset(path, engine="h5netcdf") as data:
        assert np.array_equal(data["loss"].values, grid.arrays["loss_grid"], equal_nan=True)
        assert np.array_equal(data["x"].values, grid.arrays["x"]) and data.attrs["method"] == "merge-tree"


def test_a_missing_export_package_is_a_clear_error(store_path, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    assert main(["export", str(store_path), "--out", str(tmp_path)]) == 2
    assert "pip install 'lossatlas[export]'" in capsys.readouterr().err
    assert not (tmp_path / "results.parquet").exists()
