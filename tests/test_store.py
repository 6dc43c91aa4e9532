import hashlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from lossatlas import Minimum, Result, Store, StoreError
from lossatlas.store import SCHEMA_VERSION


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _result(subject="f", key="k1"):
    return Result(method="m", subject=subject, params={"a": 1, "b": [1, 2]}, metrics={"x": 1.5, "y": float("nan")},
                  arrays={"big": np.arange(10000.0).reshape(100, 100), "small": np.array([1, 2, 3])},
                  seed=3, versions={"torch": "t"}, created="now", wall_time_s=0.25, key=key)


def test_round_trip_subject_minima_result(tmp_path):
    path = tmp_path / "s.h5"
    with Store(path) as store:
        store.add_subject("f", {"kind": "function", "dim": 3}, np.zeros(3), np.zeros(0))
        store.write_minimum("f", Minimum(0, np.ones(3), np.zeros(0), 7, {"lr": 0.1}, {"eval_loss": 0.5}))
        store.write_result(_result())
    with Store(path, "r") as store:
        assert store.subjects() == ["f"]
        assert store.subject_config("f") == {"kind": "function", "dim": 3}
        (minimum,) = store.minima("f")
        assert minimum.seed == 7 and minimum.recipe == {"lr": 0.1} and minimum.metrics == {"eval_loss": 0.5}
        np.testing.assert_array_equal(minimum.theta, np.ones(3))
        back = store.read_result("f", "m", "k1")
        assert back.params == {"a": 1, "b": [1, 2]} and back.seed == 3 and back.wall_time_s == 0.25
        assert back.metrics["x"] == 1.5 and np.isnan(back.metrics["y"])
        np.testing.assert_array_equal(back.arrays["big"], np.arange(10000.0).reshape(100, 100))
        assert [r.key for r in store.results("f")] == ["k1"]


def test_plain_h5py_reads_everything(tmp_path):
    path = tmp_path / "s.h5"
    with Store(path) as store:
        store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
        store.write_result(_result())
    with h5py.File(path, "r") as file:
        assert file.attrs["schema"] == "lossatlas" and file.attrs["schema_version"] == SCHEMA_VERSION
        node = file["subjects/f/results/m/k1"]
        assert node.attrs["encoding-type"] == "result"
        assert node["metrics"].attrs["x"] == 1.5
        assert node["arrays/big"].compression == "gzip"  # large arrays are compressed
        assert node["arrays/small"][()].tolist() == [1, 2, 3]
        for _name, obj in file.items():
            assert "encoding-type" in obj.attrs


def test_memory_store_round_trip():
    with Store.memory() as store:
        store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
        store.write_result(_result())
        assert store.read_result("f", "m", "k1").metrics["x"] == 1.5


def test_same_name_other_config_is_refused(tmp_path):
    with Store(tmp_path / "s.h5") as store:
        store.add_subject("f", {"dim": 2}, np.zeros(2), np.zeros(0))
        store.add_subject("f", {"dim": 2}, np.zeros(2), np.zeros(0))  # same config: fine
        with pytest.raises(StoreError, match="another config"):
            store.add_subject("f", {"dim": 3}, np.zeros(3), np.zeros(0))


def test_foreign_hdf5_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file["data"] = np.arange(5)
    before = _digest(path)
    with pytest.raises(StoreError, match="not a lossatlas store"):
        Store(path, "a")
    assert _digest(path) == before


def test_other_schema_version_is_refused_and_untouched(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).close()
    with h5py.File(path, "a") as file:
        file.attrs["schema_version"] = SCHEMA_VERSION + 1
    before = _digest(path)
    with pytest.raises(StoreError, match="Upgrade lossatlas"):
        Store(path, "a")
    assert _digest(path) == before


def test_schema_1_store_is_refused_with_its_version(tmp_path):
    """Stores written before the sample protocol (schema 1) are named as such, not misread."""
    path = tmp_path / "old.h5"
    Store(path).close()
    with h5py.File(path, "a") as file:
        file.attrs["schema_version"] = 1
    before = _digest(path)
    with pytest.raises(StoreError, match="schema_version 1; this lossatlas reads version 2. Re-create the store"):
        Store(path, "r")
    assert _digest(path) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_is_refused_and_untouched(tmp_path, damage):
    path = tmp_path / "s.h5"
    with Store(path) as store:
        store.add_subject("f", {}, np.zeros(1000), np.zeros(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not hdf5 at all" * 100)
    before = _digest(path)
    with pytest.raises(StoreError, match="corrupt or truncated"):
        Store(path, "a")
    assert _digest(path) == before


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).close()
    with Store(path, "r") as store:
        with pytest.raises(StoreError, match="read-only"):
            store.add_subject("f", {}, np.zeros(1), np.zeros(0))


def test_missing_and_existing_paths(tmp_path):
    with pytest.raises(StoreError, match="No store"):
        Store(tmp_path / "missing.h5", "r")
    Store(tmp_path / "s.h5", "x").close()
    with pytest.raises(StoreError, match="already exists"):
        Store(tmp_path / "s.h5", "x")


def test_second_writer_gets_locked_error(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import sys, lossatlas; s = lossatlas.Store({str(path)!r}); print('ok', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreError, match="locked"):
            Store(path, "a")
    finally:
        holder.communicate("")


def test_filesystems_without_locks_warn_and_unclosed_stores_release_their_lock(tmp_path, monkeypatch):
    import errno
    import gc

    from lossatlas import store as store_module

    path = tmp_path / "s.h5"
    Store(path).close()
    store = Store(path)  # never closed: dropping it must release the lock
    assert len(store_module._HELD) == 1
    del store
    gc.collect()
    assert store_module._HELD == {}

    def no_locks(handle, flags):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(store_module.fcntl, "lockf", no_locks)
    with pytest.warns(UserWarning, match="file locks are not supported here"):
        with Store(path) as opened:  # a cluster filesystem without locks: usable, with a warning
            assert opened.subjects() == []
    monkeypatch.setenv("LOSSATLAS_FILE_LOCKING", "0")
    with Store(path) as opened:  # and the switch to turn them off
        assert store_module._HELD == {}
