"""Surfaces users already have: tomgoldstein/loss-landscape HDF5 files and numpy grids
imported into a store, with the merge tree checked against the closed-form critical points of
the function the file samples."""
import re

import h5py
import numpy as np
import pytest

from lossatlas import ConfigError, Store, StoreError, analyze
from lossatlas.cli import main
from lossatlas.surfaces import import_surface, load_surface, read_surface


def _double_well(x, y):
    """(x^2 - 1)^2 + (y - 0.2)^2 + 0.5: two minima (+-1, 0.2) at 0.5 and one saddle (0, 0.2) at 1.5;
    not symmetric under swapping x and y, so a transposed grid would show."""
    return (x**2 - 1) ** 2 + (y - 0.2) ** 2 + 0.5


def _loss_landscape_file(path, nx=41, ny=31, unfinished=()):
    """A surface file laid out as loss-landscape's plot_surface.py writes it: arrays of shape
    (nx, ny) that start at -1 and are filled at raveled index k with the value at
    (x[k % nx], y[k // nx]) (its scheduler's meshgrid order)."""
    x, y = np.linspace(-1.6, 1.6, nx), np.linspace(-1.2, 1.2, ny)
    xx, yy = np.meshgrid(x, y)
    losses = -np.ones((nx, ny))
    accuracies = -np.ones((nx, ny))
    done = np.setdiff1d(np.arange(nx * ny), unfinished)
    losses.ravel()[done] = _double_well(xx.ravel(), yy.ravel())[done]
    accuracies.ravel()[done] = 100 - 10 * _double_well(xx.ravel(), yy.ravel())[done]
    with h5py.File(path, "w") as f:
        f["dir_file"] = "directions.h5"
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"], f["train_acc"] = losses, accuracies
    return x, y


def test_a_loss_landscape_file_is_read_on_its_coordinates(tmp_path):
    x, y = _loss_landscape_file(tmp_path / "surface.h5")
    found = read_surface(tmp_path / "surface.h5")
    xx, yy = np.meshgrid(x, y, indexing="ij")
    np.testing.assert_allclose(found["loss"], _double_well(xx, yy), rtol=1e-15)  # loss[i, j] at (x[i], y[j])
    np.testing.assert_allclose(found["accuracy"], 100 - 10 * _double_well(xx, yy), rtol=1e-15)
    assert found["unfinished"] == 0


def test_the_merge_tree_of_an_imported_surface_has_the_functions_critical_points(tmp_path):
    """Unfinished points (-1) become NaN, never a false minimum: with -1 read as a loss, each of
    these points off the basins' bottoms would be a new global minimum."""
    nx, ny = 41, 31
    holes = [5 + 3 * nx, 20 + 25 * nx, 33 + 8 * nx]
    _loss_landscape_file(tmp_path / "surface.h5", nx, ny, unfinished=holes)
    with Store(tmp_path / "store.h5") as store:
        subject = import_surface(store, tmp_path / "surface.h5")
        result = analyze(store, subject, "merge-tree", progress=False)
    assert result.metrics["n_minima"] == 2 and result.metrics["n_saddles"] == 1
    assert result.metrics["n_nonfinite"] == len(holes)
    assert result.metrics["loss_min"] == pytest.approx(0.5, abs=0.01)
    births, deaths = result.arrays["pairs"].T
    finite = np.isfinite(deaths) & (deaths < result.metrics["loss_max"])
    assert deaths[finite] == pytest.approx([1.5], abs=0.01)  # the saddle (0, 0.2), between grid rows


def test_an_imported_surface_is_stored_and_comes_back(tmp_path):
    _loss_landscape_file(tmp_path / "surface.h5")
    with Store(tmp_path / "store.h5") as store:
        first = import_surface(store, tmp_path / "surface.h5", name="resnet56")
        import_surface(store, tmp_path / "surface.h5", name="resnet56")  # the same surface again: nothing new
        again = load_surface(store, "resnet56")
        np.testing.assert_array_equal(again.grid_loss, first.grid_loss)
        assert again.config() == first.config()
        np.save(tmp_path / "other.npy", first.grid_loss + 1)
        with pytest.raises(StoreError, match="another config"):
            import_surface(store, tmp_path / "other.npy", name="resnet56")
        for method in ("hessian", "sharpness", "interpolation"):  # refused before any work, at their defaults
            with pytest.raises(ConfigError, match="imported surface"):
                analyze(store, first, method, progress=False)
        with pytest.raises(StoreError, match="no imported surface"):
            load_surface(store, "missing")


def test_numpy_surfaces_and_bad_files(tmp_path):
    x, y = np.linspace(-1.6, 1.6, 21), np.linspace(-1.2, 1.2, 17)
    loss = _double_well(*np.meshgrid(x, y, indexing="ij"))
    np.savez(tmp_path / "grid.npz", loss=loss, x=x, y=y)
    found = read_surface(tmp_path / "grid.npz")
    np.testing.assert_array_equal(found["loss"], loss)
    np.testing.assert_array_equal(found["y"], y)
    np.save(tmp_path / "line.npy", loss[:, 0])
    with pytest.raises(ConfigError, match="2-D grid"):
        read_surface(tmp_path / "line.npy")
    with h5py.File(tmp_path / "one_d.h5", "w") as f:
        f["xcoordinates"], f["train_loss"] = x, loss[:, 0]
    with pytest.raises(ConfigError, match="1-D"):
        read_surface(tmp_path / "one_d.h5")
    with pytest.raises(ConfigError, match="test_loss"):
        _loss_landscape_file(tmp_path / "surface.h5")
        read_surface(tmp_path / "surface.h5", key="test_loss")


def test_import_surface_command(tmp_path, capsys):
    _loss_landscape_file(tmp_path / "surface.h5", unfinished=[7])
    code = main(["import-surface", str(tmp_path / "surface.h5"), "--store", str(tmp_path / "s.h5"), "--name", "net"])
    out = capsys.readouterr().out
    assert code == 0 and "1 point(s) missing" in out and "n_saddles 1" in out
    assert main(["report", str(tmp_path / "s.h5"), "--out", str(tmp_path / "report")]) == 0
    assert "merge-tree" in (tmp_path / "report" / "metrics.csv").read_text()


# -- hostile files: one clear error, nothing written (no store, no lock file) --------------------------
def _h5(**arrays):
    def write(path):
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            for name, value in arrays.items():
                if isinstance(value, str) and value == "GROUP":
                    f.create_group(name)
                elif isinstance(value, str) and value == "HUGE":
                    f.create_dataset(name, shape=(10**6, 10**6), dtype="f8")  # declared, never allocated
                else:
                    f[name] = value
        return path.with_suffix(".h5")
    return write


def _npz(**arrays):
    def write(path):
        np.savez(path.with_suffix(".npz"), **arrays)
        return path.with_suffix(".npz")
    return write


def _huge_npy(path):
    """A .npy whose header declares a 7 TiB array (the file itself is a few bytes)."""
    target = path.with_suffix(".npy")
    with open(target, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    return target


_X, _Y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
_LOSS = np.arange(20.0).reshape(5, 4) % 7 + 1
HOSTILE_SURFACES = [
    pytest.param(_h5(xcoordinates=np.ones((5, 2)), ycoordinates=_Y, train_loss=_LOSS), [], r"must be 1-D",
                 id="2-D-xcoordinates"),
    pytest.param(_npz(loss=_LOSS, x=np.ones((5, 1)), y=_Y), [], r"x coordinates have shape \(5, 1\)", id="2-D-npz-x"),
    pytest.param(_npz(loss=_LOSS), ["--name", "n" * 300], r"Invalid surface name", id="300-character-name"),
    pytest.param(_npz(loss=_LOSS), ["--name", "a/b"], r"Invalid surface name", id="name-with-slash"),
    pytest.param(_npz(loss=_LOSS.astype(str)), [], r"holds <U\d+ values; a surface needs real numbers",
                 id="string-loss"),
    pytest.param(_npz(loss=_LOSS + 1j), [], r"complex128 values", id="complex-loss"),
    pytest.param(_h5(xcoordinates=np.array(["a"] * 5, dtype="S1"), ycoordinates=_Y, train_loss=_LOSS), [],
                 r"xcoordinates holds \|S1 values", id="string-coordinates"),
    pytest.param(_h5(xcoordinates=1.0, ycoordinates=_Y, train_loss=_LOSS), [], r"xcoordinates is a single number",
                 id="scalar-coordinates"),
    pytest.param(_h5(xcoordinates=_X, ycoordinates=_Y, train_loss="GROUP"), [], r"'train_loss' is a Group",
                 id="group-where-the-loss-belongs"),
    pytest.param(_h5(xcoordinates=_X, ycoordinates=_Y, train_loss="HUGE"), [], r"declares shape \(1000000, 1000000\)",
                 id="declared-7-TiB-loss"),
    pytest.param(_huge_npy, [], r"is not a readable numpy file|declares shape", id="declared-7-TiB-npy"),
    pytest.param(_npz(loss=_LOSS, x=_X[::-1], y=_Y), [], r"strictly increasing", id="decreasing-x"),
]


@pytest.mark.parametrize("write, extra, message", HOSTILE_SURFACES)
def test_hostile_surface_files_are_one_clear_error_and_write_nothing(tmp_path, capsys, write, extra, message):
    path = write(tmp_path / "surface")
    store = tmp_path / "store.h5"
    assert main(["import-surface", str(path), "--store", str(store), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lossatlas: error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no store, no lock file


def test_a_full_disk_during_an_import_is_one_error_and_leaves_nothing(tmp_path):
    """It used to die with SIGSEGV: HDF5 does not survive a dataset whose close fails for lack of
    space, so the data's room is reserved before HDF5 writes it."""
    import subprocess
    import sys

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is not exercised")
    try:
        np.save(tmp_path / "big.npy", np.random.default_rng(0).random((300, 300)))
        done = subprocess.run([sys.executable, "-m", "lossatlas.cli", "import-surface", str(tmp_path / "big.npy"),
                               "--store", str(small / "s.h5")], capture_output=True, text=True,
                              env={**__import__("os").environ, "LOSSATLAS_MIN_FREE_MB": "0"})
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.startswith("lossatlas: error: The disk holding") and "is full" in done.stderr
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
