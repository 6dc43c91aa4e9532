"""What a store reads back is what was written, or a StoreError naming the file: checksums on
results, minima, subjects and benchmark records; strict completion flags; links, damaged HDF5
structures and over-deep JSON refused. Single-byte flips stand in for disk and copy errors."""
import json
import random
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from lossatlas import Minimum, Store, StoreError, analyze
from lossatlas.problems import three_hump_camel

THETA = np.array([1.25e-3, -2.5e-3])  # distinctive bytes, found in the file below
FLIPS = 200  # random single-byte flips over the whole file (test_random_flips_never_change_a_value)


def _write(path: Path) -> tuple[str, str]:
    subject = three_hump_camel()
    with Store(path) as store:
        store.register(subject)
        store.write_minimum(subject.name, Minimum(0, THETA, np.zeros(0), 5, {"lr": 0.1}, {"eval_loss": 0.375},
                                                  trajectory=np.ones((3, 2))))
        result = analyze(store, subject, "hessian", minimum=0, progress=False)
        store.write_benchmark("study", {"keys": [result.key], "plan": {"seeds": [0, 1]}})
    return subject.name, result.key


def _arrays(arrays: dict) -> list:
    return [(k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(arrays.items()) if v is not None]


def _snapshot(path: Path) -> str:
    """Everything a report reads, compared exactly (floats by repr, arrays by their bytes)."""
    with Store(path, "r") as store:
        subjects = []
        for name in store.subjects():
            results = [(r.key, r.method, r.params, r.metrics, _arrays(r.arrays), r.seed, r.versions, r.created,
                        r.wall_time_s, r.analyzer, r.runtime) for r in store.results(name)]
            minima = [(m.index, _arrays({"theta": m.theta, "buffers": m.buffers}), m.seed, m.recipe, m.metrics,
                       m.wall_time_s, m.runtime, _arrays({"t": store.trajectory(name, m.index)}))
                      for m in store.minima(name)]
            subjects.append((name, store.subject_config(name), results, minima))
        return repr((subjects, [(b, store.read_benchmark(b)) for b in store.benchmarks()]))


def _outcome(path: Path, original: str) -> str:
    try:
        return "harmless" if _snapshot(path) == original else "changed"
    except StoreError as err:
        return "detected" if str(path) in str(err) else f"raw: a StoreError not naming the file: {err}"
    except Exception as err:  # noqa: BLE001 -- the point: anything else is a failure, reported with its type
        return f"raw {type(err).__name__}: {err}"


def _flipped(data: bytes, position: int, mask: int, path: Path) -> Path:
    damaged = bytearray(data)
    damaged[position] ^= mask
    path.write_bytes(bytes(damaged))
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "good.h5"
    name, key = _write(path)
    return path, name, key


@pytest.fixture
def copy(good, tmp_path):
    path = tmp_path / "copy.h5"
    path.write_bytes(good[0].read_bytes())
    return path


def test_checksums_are_written_and_old_content_without_them_is_still_read(good, copy):
    path, name, key = good
    with h5py.File(path, "r") as file:
        for node in (f"subjects/{name}", f"subjects/{name}/minima/000", f"subjects/{name}/results/hessian/{key}",
                     "benchmarks/study"):
            assert file[node].attrs["checksum"].startswith("sha256:"), node
        assert "checksum-trajectory" in file[f"subjects/{name}/minima/000"].attrs
    original = _snapshot(path)

    def strip(_, node):  # as written before checksums were stored: encoding-version 1 (None: visit every node)
        if any(k.startswith("checksum") for k in node.attrs):
            node.attrs["encoding-version"] = "1"
        for key in [k for k in node.attrs if k.startswith("checksum")]:
            del node.attrs[key]

    with h5py.File(copy, "a") as file:
        file.visititems(strip)
        assert "checksum-trajectory" not in file[f"subjects/{name}/minima/000"].attrs
    assert _snapshot(copy) == original


def _set(node, name, value):
    node.attrs[name] = value


def _poke(dataset):
    values = dataset[()]
    values.flat[0] = np.nextafter(values.flat[0], np.inf)  # one ulp
    dataset[...] = values


@pytest.mark.parametrize("where,change", [
    ("result/metrics", lambda node: _set(node, "top_eigenvalue", 7.06e-304)),  # what the audit saw in metrics.csv
    ("result/arrays/eigenvalues", _poke),
    ("result", lambda node: _set(node, "params", node.attrs["params"].replace("100", "101"))),
    ("result", lambda node: _set(node, "seed", 1)),
    ("minimum/theta", _poke),
    ("minimum/trajectory", _poke),
    ("minimum", lambda node: _set(node, "metrics", '{"eval_loss":0.5}')),
    ("minimum", lambda node: _set(node, "seed", 6)),
    ("subject", lambda node: _set(node, "config", node.attrs["config"].replace('"dim":2', '"dim":3'))),
    ("benchmarks/study", lambda node: _set(node, "record", '{"keys":[]}')),
])
def test_content_changed_after_it_was_written_is_a_store_error(good, copy, where, change):
    """Valid HDF5, other values: only the checksums can tell (HDF5 checks its own headers, not values)."""
    _, name, key = good
    prefix = {"result": f"subjects/{name}/results/hessian/{key}", "minimum": f"subjects/{name}/minima/000",
              "subject": f"subjects/{name}"}
    head = where.split("/")[0]
    with h5py.File(copy, "a") as file:
        change(file[where.replace(head, prefix[head], 1) if head in prefix else where])
    with pytest.raises(StoreError, match=f"{copy}.*damaged: its content does not match the checksum"):
        _snapshot(copy)


def test_every_kind_of_value_reads_back_without_a_false_alarm(tmp_path):
    from lossatlas import Result
    from lossatlas.store import Part

    arrays = {"f32": np.arange(5, dtype=np.float32), "i8": np.array([-1, 2], dtype=np.int8), "b": np.array([True]),
              "s": np.array([b"ab", b"c"], dtype="S"), "o": np.array(["x", "yz"], dtype=object), "zero": np.float64(2),
              "empty": np.empty((0, 2)), "big": np.linspace(0, 1, 5000), "nan": np.array([np.nan, -np.inf])}
    with Store(tmp_path / "s.h5") as store:
        store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
        store.write_result(Result("m", "f", {"a": [1, 2.5]}, {"x": float("nan"), "y": -0.0}, arrays, key="k"))
        root = store.sample_root("subjects/f/samples/grid/k", config={"n": 1})
        attrs = {"flag": True, "n": 3, "text": "t", "list": [1.5, 2.5], "names": ["a"]}
        store.write_part(root, "0", Part(arrays, attrs))
    with Store(tmp_path / "s.h5", "r") as store:
        assert store.subject_config("f") == {"kind": "function"}
        back = store.read_result("f", "m", "k")
        assert set(back.arrays) == set(arrays) and back.arrays["o"].tolist() == [b"x", b"yz"]
        part = store.read_part("subjects/f/samples/grid/k/0")
        assert part.attrs["n"] == 3 and "checksum" not in part.attrs


def test_every_flip_of_stored_values_is_detected_or_harmless(good, tmp_path):
    path, name, key = good
    data, original = path.read_bytes(), _snapshot(path)
    with Store(path, "r") as store:
        result = store.read_result(name, "hessian", key)
    values = {  # what the audit changed (a metric), and the other values a report reads
        "metric": struct.pack("<d", result.metrics["top_eigenvalue"]),
        "array": result.arrays["eigenvalues"].tobytes(),
        "theta": THETA.tobytes(),
        "minimum metrics": b'{"eval_loss":0.375}',
        "record": b'{"keys":["' + key.encode(),
    }
    tally = {"harmless": 0, "detected": 0}
    for what, pattern in values.items():
        starts = [i for i in range(len(data)) if data.startswith(pattern, i)]  # the metric is also in an array
        assert starts, what
        for position in (i for start in starts for i in range(start, start + len(pattern))):
            for mask in (0x01, 0x80):
                outcome = _outcome(_flipped(data, position, mask, tmp_path / "flip.h5"), original)
                assert outcome in tally, (what, position, mask, outcome)
                tally[outcome] += 1
    print(f"value flips: {tally}")
    assert tally["detected"] > 0


@pytest.mark.parametrize("node", ["result", "minimum"])
@pytest.mark.parametrize("value", ["False", "True", np.array([True]), np.array([1, 1]), 2])
def test_a_damaged_complete_flag_is_a_store_error(good, copy, node, value):
    _, name, key = good
    where = f"subjects/{name}/results/hessian/{key}" if node == "result" else f"subjects/{name}/minima/000"
    with h5py.File(copy, "a") as file:
        file[where].attrs["complete"] = value
    with pytest.raises(StoreError, match=f"{copy}.*damaged.*complete"):
        with Store(copy, "r") as store:
            store.results(name)
            store.minima(name)


@pytest.mark.parametrize("node", ["result", "minimum"])
def test_a_false_flag_beside_a_matching_checksum_reads_whole_and_a_half_write_as_interrupted(good, copy, node):
    """The checksum is written just before ``complete``: content that matches it is whole (a kill
    between the two, or a flipped flag: never silently dropped); content that does not is an
    unfinished write, left out and redone on resume -- not a damaged store."""
    _, name, key = good
    where = f"subjects/{name}/results/hessian/{key}" if node == "result" else f"subjects/{name}/minima/000"

    def read():
        with Store(copy, "r") as store:
            return store.results(name) if node == "result" else store.minima(name)
    whole = read()
    with h5py.File(copy, "a") as file:
        file[where].attrs["complete"] = False
    assert len(read()) == len(whole) == 1
    with h5py.File(copy, "a") as file:
        file[where].attrs["checksum"] = "sha256:" + "0" * 64  # as if killed before the checksum was right
    assert read() == []


def test_a_damaged_prepared_flag_is_a_store_error(copy):
    with Store(copy) as store:
        store.write_header(store.sample_root("subjects/three_hump_camel/samples/grid/k", config={}),
                           {"center": np.zeros(2)})
    with h5py.File(copy, "a") as file:
        file["subjects/three_hump_camel/samples/grid/k"].attrs["prepared"] = "False"
    with Store(copy, "r") as store, pytest.raises(StoreError, match="damaged: its prepared flag is 'False'"):
        store.has_header("subjects/three_hump_camel/samples/grid/k")


@pytest.mark.parametrize("node", ["subject", "minimum", "result", "results"])
def test_a_link_to_a_missing_file_is_a_store_error(good, copy, node):
    _, name, key = good
    where = {"subject": f"subjects/{name}", "minimum": f"subjects/{name}/minima/000",
             "result": f"subjects/{name}/results/hessian/{key}", "results": f"subjects/{name}/results"}[node]
    with h5py.File(copy, "a") as file:
        del file[where]
        file[where] = h5py.ExternalLink("missing.h5", "/x")
    with pytest.raises(StoreError, match=f"{copy}.*ExternalLink"):
        with Store(copy, "r") as store:
            for subject in store.subjects():
                store.results(subject)
                store.minima(subject)


def test_a_record_nested_too_deep_to_parse_is_a_store_error(copy):
    with h5py.File(copy, "a") as file:
        node = file["benchmarks/study"]
        del node.attrs["checksum"]  # as written before checksums: the parser itself must not escape
        node.attrs["record"] = "[" * 50000 + "]" * 50000
    with Store(copy, "r") as store, pytest.raises(StoreError, match=f"{copy}.*RecursionError"):
        store.read_benchmark("study")


def test_random_flips_never_change_a_value(good, tmp_path):
    """Flips anywhere (headers, heaps, B-trees, data) run in a child process: on some damage HDF5's
    own C library crashes or loops (in its global heap), which no Python code can catch. Those are
    counted and warned about; everything else must be identical or a StoreError."""
    path = good[0]
    rng = random.Random(20240607)
    trials = [(rng.randrange(path.stat().st_size), rng.randrange(1, 256)) for _ in range(FLIPS)]
    outcomes = _run(path, tmp_path, trials)
    tally = {}
    for outcome in outcomes:
        tally[outcome.split(":")[0]] = tally.get(outcome.split(":")[0], 0) + 1
    print(f"random flips: {tally}")
    failures = {trial: o for trial, o in zip(trials, outcomes) if o not in ("harmless", "detected", "hdf5 crashed")}
    assert not failures, failures
    if tally.get("hdf5 crashed"):
        warnings.warn(f"HDF5 crashed or hung on {tally['hdf5 crashed']} of {FLIPS} damaged copies", stacklevel=1)


def _run(path: Path, folder: Path, trials: list) -> list[str]:
    """Each trial's outcome, from child processes: one that dies (or hangs) is restarted after its trial."""
    outcomes = []
    while len(outcomes) < len(trials):
        child = subprocess.run([sys.executable, __file__, str(path), str(folder), json.dumps(trials[len(outcomes):])],
                               capture_output=True, text=True, timeout=300)
        assert child.stdout.startswith("ready\n"), child.stderr  # the trials began: what ends them is HDF5
        outcomes += [line.split(" ", 1)[1] for line in child.stdout.splitlines()[1:] if line]
        if child.returncode:
            outcomes.append("hdf5 crashed")
    return outcomes


def _child(good: str, folder: str, trials: str) -> None:
    """The flips of test_random_flips_never_change_a_value, one outcome a line; a trial that hangs
    ends the process (HDF5 holds the interpreter, so only a timer thread can)."""
    import faulthandler

    data, original = Path(good).read_bytes(), _snapshot(Path(good))
    print("ready", flush=True)
    for index, (position, mask) in enumerate(json.loads(trials)):
        faulthandler.dump_traceback_later(10, exit=True)
        outcome = _outcome(_flipped(data, position, mask, Path(folder) / "flip.h5"), original)
        print(index, outcome.replace("\n", " "), flush=True)


if __name__ == "__main__":
    _child(*sys.argv[1:])
