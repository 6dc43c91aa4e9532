"""Exports: the store as a pandas table and Parquet, the loss grids as netCDF."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lossatlas import Recipe, Store, analyze, train_minima
from lossatlas.cli import main
from lossatlas.export import results_frame
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


def test_results_frame_has_one_row_per_result_with_its_parameters_and_metrics(store_path):
    with Store(store_path, "r") as store:
        frame = results_frame(store)
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
        frame = results_frame(store)
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


# -- all or nothing ---------------------------------------------------------------------------------
def _digests(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture
def earlier(store_path, tmp_path):
    """A finished export, the one every failed export below must leave as it was."""
    out = tmp_path / "export"
    assert main(["export", str(store_path), "--out", str(out)]) == 0
    return out, _digests(out)


def test_the_manifest_lists_every_file_with_its_checksum(earlier):
    import hashlib
    import json

    out, files = earlier
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["store"].endswith("study.h5")
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, sha in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha


def test_an_export_replaces_the_earlier_one_whole_and_keeps_no_stale_grids(earlier, tmp_path):
    out, files = earlier
    assert any(name.startswith("grids/") for name in files)
    empty = tmp_path / "empty.h5"
    with Store(empty) as store:
        store.register(himmelblau())  # a subject and nothing else: no grid to export
    assert main(["export", str(empty), "--out", str(out)]) == 0
    assert not (out / "grids").exists() and set(_digests(out)) == {"results.parquet", "minima.parquet",
                                                                    "manifest.json"}
    assert _leftovers(out) == []


@pytest.fixture
def two_grids(tmp_path):
    """A store with two grids, so that an export can fail at the second."""
    path = tmp_path / "two.h5"
    with Store(path) as store:
        subject = himmelblau()
        for span in (4.0, 5.0):
            analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0", span=span,
                    resolution=5)
    return path


def _fail_at_second_grid(monkeypatch, error):
    calls = []
    original = xr.Dataset.to_netcdf

    def write(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise error
        return original(self, path, *args, **kwargs)
    monkeypatch.setattr(xr.Dataset, "to_netcdf", write)


def test_a_full_disk_during_an_export_leaves_the_earlier_export_intact(earlier, two_grids, monkeypatch, capsys):
    import errno

    out, files = earlier
    _fail_at_second_grid(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    assert main(["export", str(two_grids), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Nothing in" in err and "rerun" not in err
    assert _digests(out) == files and _leftovers(out) == []


def test_ctrl_c_during_an_export_leaves_the_earlier_export_intact(earlier, two_grids, monkeypatch, capsys):
    out, files = earlier
    _fail_at_second_grid(monkeypatch, KeyboardInterrupt())
    assert main(["export", str(two_grids), "--out", str(out)]) == 130
    assert "earlier export there is intact" in capsys.readouterr().err
    assert _digests(out) == files and _leftovers(out) == []


def test_sigkill_during_an_export_leaves_the_earlier_export_intact(earlier, two_grids):
    import subprocess
    import sys

    out, files = earlier
    script = (  # the process kills itself while writing its second grid
        "import os, signal, xarray as xr\n"
        "from lossatlas.cli import main\n"
        "original, calls = xr.Dataset.to_netcdf, []\n"
        "def write(self, path, *a, **k):\n"
        "    calls.append(path)\n"
        "    if len(calls) == 2:\n"
        "        open(path, 'wb').write(b'half a file')\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return original(self, path, *a, **k)\n"
        "xr.Dataset.to_netcdf = write\n"
        f"main(['export', {str(two_grids)!r}, '--out', {str(out)!r}])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == -9
    assert _digests(out) == files  # the half-written grid is in the hidden staging folder, never in out
    assert main(["export", str(two_grids), "--out", str(out)]) == 0  # and the next export completes
    assert len(list((out / "grids").glob("*.nc"))) == 2 and _leftovers(out) == []


def test_a_folder_holding_other_files_is_refused_and_left_alone(store_path, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main(["export", str(store_path), "--out", str(out)]) == 2
    assert "not a lossatlas export" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_subjects_whose_names_differ_only_in_punctuation_export_to_separate_files(tmp_path):
    from lossatlas.plots import file_stems

    labels = ["s_1", "s-1", "λ", "μ", "Net", "net", "x" * 300]
    stems = file_stems(labels)
    assert len(set(stems.values())) == len(labels)
    assert len({s.lower() for s in stems.values()}) == len(labels) and all(0 < len(s) <= 80 for s in stems.values())
    assert stems["Net"] == "Net-" + stems["Net"].split("-")[1] and file_stems(["plain"])["plain"] == "plain"
    with Store(tmp_path / "s.h5") as store:
        for name in ("s_1", "s-1"):
            subject = himmelblau()
            subject.name = name
            analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0",
                    span=5.0, resolution=5)
    assert main(["export", str(tmp_path / "s.h5"), "--out", str(tmp_path / "out")]) == 0
    grids = sorted((tmp_path / "out" / "grids").glob("*.nc"))
    subjects = set()
    for path in grids:
        with xr.open_dataset(path, engine="h5netcdf") as data:
            subjects.add(data.attrs["subject"])
    assert len(grids) == 2 and subjects == {"s_1", "s-1"}


def test_a_kill_between_the_two_renames_puts_the_earlier_export_back(earlier, store_path):
    """The one moment ``out`` is missing: the earlier export was moved aside, the new one not yet
    renamed in. The next export finds it by the dead process's id and restores it first."""
    import subprocess
    import sys

    out, files = earlier
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = out.with_name(f".{out.name}.old-{int(dead.stdout)}")
    out.rename(aside)
    (tmp := out.with_name(f".{out.name}.partial-{int(dead.stdout)}")).mkdir()
    (tmp / "results.parquet").write_bytes(b"half")
    from lossatlas.export import _clean_leftovers

    _clean_leftovers(out)
    assert _digests(out) == files and _leftovers(out) == []
    assert main(["export", str(store_path), "--out", str(out)]) == 0


def test_a_3d_grid_exports_with_its_third_axis(tmp_path):
    """A merge tree on a 3-D grid (dimensions = 3) exports as netCDF with x, y and z."""
    from lossatlas import FunctionSubject

    subject = FunctionSubject(lambda t: ((t**2 - 1) ** 2).sum(), np.zeros(3), name="wells3")
    with Store(tmp_path / "s.h5") as store:
        found = analyze(store, subject, "merge-tree", progress=False, directions="axes", at="theta0", span=1.5,
                        resolution=5, dimensions=3)
    assert main(["export", str(tmp_path / "s.h5"), "--out", str(tmp_path / "out")]) == 0
    (path,) = (tmp_path / "out" / "grids").glob("*.nc")
    with xr.open_dataset(path, engine="h5netcdf") as data:
        assert data["loss"].dims == ("x", "y", "z") and np.array_equal(data["z"].values, found.arrays["z"])
        assert np.array_equal(data["loss"].values, found.arrays["loss_grid"])
