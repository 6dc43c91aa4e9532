"""Reliability: interrupted runs resume to the same results, the store lock, bad inputs,
non-finite losses through every analyzer, determinism.

- SIGKILL: ``lossatlas run`` (a subprocess, a small PINN config) is killed in the middle of
  minima training, a grid, a jump-and-retrain stage and the loss-barcode paths, one after
  another on the same store; after each kill the store must open read-only, and the last
  rerun must leave a store and a metrics.csv identical to those of an uninterrupted run
  (everything but creation times and wall times). Work finished before a kill must survive.
- Locking: a second writer gets "store is locked"; a reader beside a writer reads or fails
  clearly, never a traceback; the store is unchanged.
- Bad inputs: each is a LossatlasError (exit status 2 on the command line) whose message
  names the problem, and the store file is byte-identical afterwards.
- NaN/inf in grids and paths flow through the harness, every analyzer and the report.
- Determinism: two fresh runs of one config in separate processes store identical results.

The tallies (faults injected / survived, bad inputs tried / clear errors, data lost) are
printed at the end of the module.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lossatlas import FunctionSubject, LossatlasError, Minimum, Recipe, Store, StoreError, analyze
from lossatlas.cli import main

TALLY = {"faults injected": 0, "faults survived": 0, "data lost": 0, "bad inputs tried": 0, "clear errors": 0,
         "lock conflicts tried": 0, "lock conflicts clear": 0}
VOLATILE = {"created", "wall_time_s"}  # attributes that legitimately differ between two runs (and the checksums)
RUN_TIMEOUT = 300


def _stable(attrs) -> dict:
    return {k: v for k, v in attrs.items() if k not in VOLATILE and not k.startswith("checksum")}

# Sized so that each stage killed below lasts from half a second to a few seconds on a shared core
# (minima ~1.5 s each, an 81^2 grid, jump-and-retrain 4 runs x 40 epochs, polychain 250 epochs),
# and a whole run takes ~15 s including the report. The kills wait for a fraction of each stage's
# duration in the reference run.
CONFIG = """
name = "reliability"
problem = "pinn_convection"
seeds = [0, 1]
[params]
beta = 5.0
n_f = 100
hidden = 20
layers = 2
[minima]
optimizer = "lbfgs"
lr = 1.0
epochs = 4
max_iter = 40
batch_size = 100
[methods.merge-tree]
resolution = 81
span = 0.5
[methods.jump-retrain]
seeds = [0, 1]
step_sizes = [0.5, 1.0]
epochs = 40
batch_size = 100
knn_k = 4
[methods.hessian]
trace_max_probes = 10
density_steps = 10
tol = 1e-2
[methods.loss-barcode]
curve_epochs = 250
n_eval = 11
batch_size = 50
"""
RECORD = "reliability_smoke"
# (what is interrupted, the stage in run.log): stages are "<subject> <label> @ minimum <i>",
# "<subject> <label>" and "<subject> minima" (or "minimum <i>").
TARGETS = {
    "minima training": r" minim(a|um 0)$",
    "a grid (merge-tree)": r" merge-tree @ minimum 0$",
    "jump-and-retrain": r" jump-retrain @ minimum 0$",
    "the paths (loss-barcode)": r" loss-barcode$",
}
# The command-line cases below that need a valid config but must never reach any work; [minima]
# is its last table, so appended keys land there.
CAMEL = """
name = "camel"
problem = "three_hump_camel"
seeds = [0]
[minima]
lr = 0.01
epochs = 1
"""


@pytest.fixture(scope="module", autouse=True)
def _tally(request):
    yield
    plugins = request.config.pluginmanager
    writer, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if writer is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            writer.write_line("\nreliability tally: " + ", ".join(f"{k} {v}" for k, v in TALLY.items()))


@pytest.fixture
def one_thread():
    """One torch thread for in-process work: on 2 shared cores, two threads per busy process made
    the grid below 25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- running `lossatlas run` in a subprocess ----------------------------------------------------------
def _env() -> dict:
    """The same torch thread count in every run (reductions depend on it), no progress bars."""
    return {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}


def _launch(config: Path, out: Path, name: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lossatlas.cli", "run", str(config), "--scale", "smoke", "--out", str(out)]
    with open(out / f"{name}.stdout", "ab") as stdout, open(out / f"{name}.stderr", "ab") as stderr:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=_env(), cwd=out,
                                start_new_session=True)  # its own process group: nothing outlives a kill


def _finish(process: subprocess.Popen, out: Path, name: str) -> None:
    try:
        code = process.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert code == 0, (out / f"{name}.stderr").read_text()[-3000:]


def _log_lines(log: Path, offset: int) -> list[str]:
    if not log.exists():
        return []
    with open(log, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", "replace").splitlines()


def _stages(lines: list[str]) -> tuple[list[str], dict[str, float]]:
    """Stages started (in order) and the duration of each finished one, from run.log lines."""
    started = [m.group(1) for m in (re.search(r" INFO start (.+)$", line) for line in lines) if m]
    done = {m.group(1): float(m.group(2)) for m in (re.search(r" INFO done  (.+) \(([\d.]+) s\)$", line)
                                                      for line in lines) if m}
    return started, done


# -- comparing stores ---------------------------------------------------------------------------------
def _snapshot(path: Path) -> dict[str, tuple[dict, object]]:
    """Every group and dataset: (attributes but creation and wall times, data)."""
    found = {}
    with h5py.File(path, "r") as file:
        found["/"] = (_stable(file.attrs), None)

        def visit(name, obj):
            data = obj[()] if isinstance(obj, h5py.Dataset) else None
            found[name] = (_stable(obj.attrs), data)

        file.visititems(visit)
    return found


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _differences(a: dict, b: dict) -> list[str]:
    """Nodes whose attributes or data differ (exactly; NaN equals NaN)."""
    out = [f"only in one store: {name}" for name in sorted(set(a) ^ set(b))]
    for name in sorted(set(a) & set(b)):
        (attrs_a, data_a), (attrs_b, data_b) = a[name], b[name]
        if set(attrs_a) != set(attrs_b) or not all(_same(attrs_a[k], attrs_b[k]) for k in attrs_a):
            out.append(f"attributes of {name}")
        if (data_a is None) != (data_b is None) or (data_a is not None and not _same(data_a, data_b)):
            out.append(f"data of {name}")
    return out


def _metrics_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("time.")} for row in csv.DictReader(handle)]


def _rows_differ(a: list[dict], b: list[dict]) -> list[str]:
    """metrics.csv cells that differ."""
    if len(a) != len(b) or any(set(x) != set(y) for x, y in zip(a, b)):
        return ["the rows or columns differ"]
    return [f"row {i} {column}: {x[column]} != {y[column]}" for i, (x, y) in enumerate(zip(a, b)) for column in x
            if x[column] != y[column]]


def _finished(snapshot: dict) -> set[str]:
    """Nodes whose work was finished: minima, results, complete samples, runs and paths."""
    names = set()
    for name, (attrs, _) in snapshot.items():
        kind = attrs.get("encoding-type")
        if kind in ("minimum", "result") or (kind in ("sample", "run", "path") and bool(attrs.get("complete", False))):
            names.add(name)
    return names


def _subtree(snapshot: dict, root: str) -> dict:
    return {name: value for name, value in snapshot.items() if name == root or name.startswith(root + "/")}


def _progress(snapshot: dict) -> str:
    """What an interrupted run had written, for the log of the test."""
    parts = []
    for kind in ("minimum", "result", "part"):
        count = sum(1 for attrs, _ in snapshot.values() if attrs.get("encoding-type") == kind
                    and (kind == "result" or attrs.get("complete")))
        parts.append(f"{count} {kind}(s)")
    return ", ".join(parts)


def _read_everything(path: Path) -> dict:
    """Open with lossatlas read-only, read every minimum and result, then every node with h5py."""
    with Store(path, "r") as store:
        for subject in store.subjects():
            store.minima(subject)
            store.results(subject)
    return _snapshot(path)


# -- the reference runs -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two fresh, uninterrupted runs of CONFIG, side by side in separate processes."""
    root = tmp_path_factory.mktemp("reliability")
    config = root / "reliability.toml"
    config.write_text(CONFIG)
    outs = {name: root / name for name in ("reference", "twin")}
    processes = {name: _launch(config, out, name) for name, out in outs.items()}
    try:
        for name, process in processes.items():
            _finish(process, outs[name], name)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    _, durations = _stages(_log_lines(outs["reference"] / RECORD / "run.log", 0))
    return {"config": config, "root": root, "durations": durations, **outs}


def test_two_fresh_runs_store_identical_results(runs):
    reference, twin = _snapshot(runs["reference"] / f"{RECORD}.h5"), _snapshot(runs["twin"] / f"{RECORD}.h5")
    assert not _differences(reference, twin)  # exactly
    results = {name.split("/")[3] for name, (attrs, _) in reference.items() if attrs.get("encoding-type") == "result"}
    assert results == {"merge-tree", "jump-retrain", "hessian", "loss-barcode"}
    rows = _metrics_rows(runs["reference"] / RECORD / "metrics.csv")
    assert len(rows) == 2 and any(column.startswith("loss-barcode.") for column in rows[0])
    assert rows == _metrics_rows(runs["twin"] / RECORD / "metrics.csv")


def test_sigkill_at_every_stage_then_rerun_reproduces_the_uninterrupted_run(runs):
    """One store, killed in four stages in turn: each rerun resumes where the last one stopped."""
    out = runs["root"] / "killed"
    store, log = out / f"{RECORD}.h5", out / RECORD / "run.log"
    order, _ = _stages(_log_lines(runs["reference"] / RECORD / "run.log", 0))
    position = {what: [i for i, stage in enumerate(order) if re.search(pattern, stage)]
                for what, pattern in TARGETS.items()}
    assert all(position.values()), f"stages not in run.log: {[w for w, p in position.items() if not p]}; {order}"
    targets = sorted(TARGETS.items(), key=lambda item: position[item[0]][0])  # in the order the run reaches them
    finished: dict[str, dict] = {}  # work finished before some kill -> its nodes, to check at the end
    kills = []
    for what, _ in targets:
        stage = order[position[what][0]]
        delay = max(0.15, 0.3 * runs["durations"][stage])
        offset = log.stat().st_size if log.exists() else 0
        process = _launch(runs["config"], out, "killed")
        deadline = time.monotonic() + RUN_TIMEOUT
        while stage not in _stages(_log_lines(log, offset))[0]:
            assert process.poll() is None, f"ended before {stage!r}: {(out / 'killed.stderr').read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{stage!r} never started"
            time.sleep(0.02)
        time.sleep(delay)
        mid_stage = stage not in _stages(_log_lines(log, offset))[1]
        reader = _read_beside_a_writer(store)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        TALLY["faults injected"] += 1
        survivors = _kill_group(process.pid)
        snapshot = _read_everything(store)  # the store opens read-only and every node reads
        for name in _finished(snapshot):
            finished.setdefault(name, _subtree(snapshot, name))
        kills.append((what, mid_stage, survivors, reader, _progress(snapshot)))
    final = _launch(runs["config"], out, "killed")
    _finish(final, out, "killed")
    result = _snapshot(store)
    lost = [name for name, tree in finished.items() if _differences(tree, _subtree(result, name))]
    TALLY["data lost"] += len(lost)
    differences = _differences(_snapshot(runs["reference"] / f"{RECORD}.h5"), result)
    csv_differences = _rows_differ(_metrics_rows(runs["reference"] / RECORD / "metrics.csv"),
                                   _metrics_rows(out / RECORD / "metrics.csv"))
    if not differences and not csv_differences and not lost:
        TALLY["faults survived"] += len(kills)
    print("\n".join(f"SIGKILL in {what}: mid-stage {mid}, survivors {left}, reader {reader}; on disk: {progress}"
                    for what, mid, left, reader, progress in kills))
    assert [what for what, mid, _, _, _ in kills if not mid] == [], "a kill landed after its stage had finished"
    assert [what for what, _, left, _, _ in kills if left] == [], "processes outlived the killed run"
    assert not lost, f"finished work lost or changed by a later kill: {lost}"
    assert not differences, differences[:20]
    assert not csv_differences, csv_differences[:20]


def _kill_group(pid: int) -> bool:
    """Whether processes of the killed run's group were still alive (then killed): a leftover
    worker would keep the store locked or write to it."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    os.killpg(pid, signal.SIGKILL)
    return True


def _read_beside_a_writer(path: Path) -> str:
    """Reading a store while `lossatlas run` writes it: it reads, or fails with a clear StoreError."""
    TALLY["lock conflicts tried"] += 1
    try:
        with Store(path, "r") as store:
            store.subjects()
    except StoreError as err:
        assert "is locked" in str(err), err
        TALLY["lock conflicts clear"] += 1
        return "refused: locked"
    TALLY["lock conflicts clear"] += 1
    return "read"


def test_a_resumed_grid_is_bit_identical_to_an_uninterrupted_one(one_thread):
    """An interruption simulated in-process: the store's flush fails after a few grid blocks were
    written, as a kill leaves it; the resumed grid must equal the one computed in one go."""
    from lossatlas.problems import pinn_convection
    from lossatlas.samplers import loss_grid

    class Killed(Exception):
        pass

    subject = pinn_convection(5.0, n_f=20, hidden=8, layers=1)
    with Store.memory() as store:
        whole = loss_grid(store, subject, "random", 81, 0.5, progress=False)
    with Store.memory() as store:
        flush, calls = store.flush, []

        def failing_flush():
            flush()
            calls.append(1)
            if len(calls) == 6:
                raise Killed

        store.flush = failing_flush
        with pytest.raises(Killed):
            loss_grid(store, subject, "random", 81, 0.5, progress=False)
        store.flush = flush
        root = store.file[f"subjects/{subject.name}/samples/grid/{whole.key}"]
        done = sum(len(part["loss"]) for part in root.values() if part.attrs.get("complete"))
        assert 0 < done < whole["loss"].size  # interrupted mid-grid
        resumed = loss_grid(store, subject, "random", 81, 0.5, progress=False)
    differing = int(np.sum(resumed["loss"] != whole["loss"]))
    assert differing == 0, f"{differing} of {whole['loss'].size} points differ from the uninterrupted grid"


# -- locking ------------------------------------------------------------------------------------------
def _hold(path: Path, mode: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from lossatlas.store import Store; s = Store({str(path)!r}, {mode!r}); "
                               "print('ok', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert holder.stdout.readline().strip() == "ok"
    return holder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_writer_is_refused_and_readers_fail_clearly(tmp_path, capsys):
    path, config = tmp_path / "held.h5", tmp_path / "camel.toml"
    config.write_text(CAMEL)
    with Store(path) as store:
        store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
    before = _digest(path)
    writer = _hold(path, "a")
    try:
        attempts = {
            "run": ["run", str(config), "--store", str(path), "--out", str(tmp_path / "out")],
            "report": ["report", str(path), "--out", str(tmp_path / "report")],
        }
        assert main(["inspect", str(path), "--summary"]) == 0  # inspection reads beside a writer, without locks
        assert "another process is writing this store" in capsys.readouterr().out
        for command, argv in attempts.items():
            TALLY["lock conflicts tried"] += 1
            code = main(argv)
            err = capsys.readouterr().err
            if command == "run":  # the second writer
                assert code == 2 and "is locked: another process has it open for writing" in err, err
            else:  # readers: refused clearly while a writer holds the file
                assert code == 2 and "is locked" in err, err
            TALLY["lock conflicts clear"] += 1
    finally:
        writer.communicate("")
    reader = _hold(path, "r")
    try:
        TALLY["lock conflicts tried"] += 2
        with Store(path, "r") as store:  # readers share the file
            assert store.subjects() == ["f"]
        TALLY["lock conflicts clear"] += 1
        with pytest.raises(StoreError, match="is locked: another process has it open .*reader"):
            Store(path, "a")
        TALLY["lock conflicts clear"] += 1
    finally:
        reader.communicate("")
    assert _digest(path) == before
    with Store(path, "a") as store:  # the lock is gone with its holders
        assert store.subjects() == ["f"]


def test_the_lock_holds_without_hdf5_file_locking_and_one_of_two_creators_wins(tmp_path):
    """Clusters often set HDF5_USE_FILE_LOCKING=FALSE (network filesystems); two processes must
    still never write one store, and a second creator must not replace the first one's file."""
    path = tmp_path / "new.h5"
    env = {**_env(), "HDF5_USE_FILE_LOCKING": "FALSE"}
    contend = ("import sys; from lossatlas.store import Store\n"
               "try:\n    Store(sys.argv[1], sys.argv[2]).close(); print('opened')\n"
               "except Exception as err:\n    print(type(err).__name__, err)")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lossatlas.store import Store; s = Store(sys.argv[1], 'a'); "
                               "s.add_subject('mine', {'kind': 'function'}, [0.0], []); s.flush(); "
                               "print('ok', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "ok"  # the first creator holds the new store
        for mode in ("a", "x", "r"):
            TALLY["lock conflicts tried"] += 1
            out = subprocess.run([sys.executable, "-c", contend, str(path), mode], capture_output=True, text=True,
                                 env=env).stdout
            expected = "already exists" if mode == "x" else "is locked"
            refused = "StoreError" in out or "StoreLocked" in out  # StoreLocked is a StoreError
            assert refused and ("is locked" in out or expected in out), (mode, out)
            TALLY["lock conflicts clear"] += 1
    finally:
        holder.communicate("")
    with Store(path, "r") as store:  # the first creator's work is there, whole
        assert store.subjects() == ["mine"]


def _delete_array(node):
    del node["arrays/eigenvalues"]


def _reshape_array(node):
    values = node["arrays/eigenvalues"][()]
    del node["arrays/eigenvalues"]
    node["arrays"].create_dataset("eigenvalues", data=values.reshape(-1, 1))


def _shrink_minimum(file):
    minimum = file["subjects/himmelblau/minima/000"]
    del minimum["theta"]
    minimum.create_dataset("theta", data=np.zeros(3))


@pytest.mark.parametrize("damage,message", [
    (lambda f, r: f.attrs.__setitem__("schema_version", "two"), "schema_version that is not a number"),
    (lambda f, r: f[r].attrs.__setitem__("params", "{not json"), "JSONDecodeError"),
    (lambda f, r: f[r].attrs.__setitem__("encoding-type", "weird"), "is a 'weird' node, expected 'result'"),
    (lambda f, r: _delete_array(f[r]), "arrays \\['eigenvalues'\\] are missing or have another shape"),
    (lambda f, r: _reshape_array(f[r]), "arrays \\['eigenvalues'\\] are missing or have another shape"),
    (lambda f, r: _shrink_minimum(f), "minimum 0 has parameters of shape \\(3,\\)"),
])
def test_damaged_content_is_a_store_error_naming_what_was_read(tmp_path, damage, message):
    from lossatlas.problems import himmelblau

    path = tmp_path / "damaged.h5"
    subject = himmelblau()
    with Store(path) as store:
        store.register(subject)
        store.write_minimum(subject.name, Minimum(0, np.array([3.0, 2.0]), np.zeros(0), 0, {}, {"eval_loss": 0.0}))
        result = analyze(store, subject, "hessian", minimum=0, progress=False)
    with h5py.File(path, "a") as file:
        damage(file, f"subjects/{subject.name}/results/hessian/{result.key}")
    TALLY["bad inputs tried"] += 1
    before = _digest(path)
    with pytest.raises(StoreError, match=message):
        with Store(path, "a") as store:
            store.minima(subject.name)
            store.read_result(subject.name, "hessian", result.key)
    assert _digest(path) == before
    TALLY["clear errors"] += 1


# -- a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB filesystem (tmpfs) that a study fills up; skipped where mounting is not allowed."""
    folder = tmp_path / "small"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is not exercised")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill_study(path: Path) -> tuple[str, list]:
    """Minima and ever larger grids until the disk is full: the error, and what the store then holds."""
    from lossatlas import train_minima
    from lossatlas.problems import three_hump_camel

    subject, message = three_hump_camel(), ""
    try:
        with Store(path) as store:
            train_minima(store, subject, Recipe(lr=0.01, epochs=2), seeds=[0, 1], progress=False)
            for resolution in (41, 81, 121, 161):
                analyze(store, subject, "merge-tree", resolution=resolution, progress=False)
    except StoreError as err:
        message = str(err)
    with Store(path, "r") as store:
        found = sorted((r.params["resolution"], r.metrics["average_persistence"]) for r in store.results(subject.name))
        return message, [m.theta.tolist() for m in store.minima(subject.name)] + found


def test_a_full_disk_abandons_the_write_keeps_the_store_readable_and_a_rerun_resumes(tmp_path, small_disk,
                                                                                        monkeypatch):
    monkeypatch.setenv("LOSSATLAS_MIN_FREE_MB", "0")  # no margin: the disk fills in the middle of a write
    TALLY["faults injected"] += 1
    message, kept = _fill_study(small_disk / "study.h5")
    assert re.search(r"disk holding .* is full \(\[Errno 28\] No space left on device\)\. The write "
                     r"\(write_\w+\) was abandoned.*rerun the same command to resume", message), message
    assert 2 < len(kept) < 6  # both minima and some, not all, results survived, and they read back
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    _, resumed = _fill_study(small_disk / "study.h5")
    _, reference = _fill_study(tmp_path / "reference.h5")
    assert resumed == reference and kept == resumed[: len(kept)]
    TALLY["faults survived"] += 1


def _camel_run(tmp_path: Path) -> tuple[Path, Path, str]:
    """A finished smoke run of the camel config: its store, its config and the store's digest."""
    path, config = tmp_path / "study.h5", tmp_path / "camel.toml"
    config.write_text(CAMEL)
    assert main(["run", str(config), "--scale", "smoke", "--store", str(path), "--out", str(tmp_path / "a")]) == 0
    return path, config, _digest(path)


def test_a_nearly_full_disk_is_refused_before_writing(tmp_path, capsys, monkeypatch):
    from lossatlas.store import durability

    path, config, before = _camel_run(tmp_path)
    monkeypatch.setattr(durability, "free_bytes", lambda folder: 5 * 2**20)
    TALLY["bad inputs tried"] += 1
    err = _cli(tmp_path, capsys, None, "run", str(config), "--scale", "smoke", "--store", str(path),
               "--out", str(tmp_path / "b"))
    assert "is (nearly) full: 5.0 MiB free" in err and "rerun the same command to resume" in err
    assert _digest(path) == before
    TALLY["clear errors"] += 1


def test_read_only_stores_and_output_folders_are_clear_errors(tmp_path, capsys, monkeypatch):
    path, config, before = _camel_run(tmp_path)
    (tmp_path / "a-file").write_text("")  # an output folder that cannot be made: a file is in the way
    err = _cli(tmp_path, capsys, None, "report", str(path), "--out", str(tmp_path / "a-file" / "report"))
    assert "cannot write or read" in err and "a-file" in err and "Not a directory" in err
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path), str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only folder here (needs root); permissions are not exercised")
    try:  # the folder now shows tmp_path read-only (root ignores permission bits, not a read-only mount)
        ro_store = folder / "study.h5"
        err = _cli(tmp_path, capsys, None, "run", str(config), "--scale", "smoke", "--store", str(ro_store),
                   "--out", str(tmp_path / "b"))
        assert re.search(r"Cannot write beside the store .*Read-only file system", err), err
        monkeypatch.setenv("LOSSATLAS_FILE_LOCKING", "0")
        err = _cli(tmp_path, capsys, None, "run", str(config), "--scale", "smoke", "--store", str(ro_store),
                   "--out", str(tmp_path / "c"))
        assert re.search(r"Cannot open the store .* for writing: .*Read-only file system.*only read it", err), err
        assert main(["report", str(ro_store), "--out", str(tmp_path / "report")]) == 0  # reading works
        err = _cli(tmp_path, capsys, None, "report", str(ro_store), "--out", str(folder / "report"))
        assert "cannot write or read" in err and "Read-only file system" in err
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    assert _digest(path) == before


# -- bad inputs ---------------------------------------------------------------------------------------
def _nan_near_zero(t):
    """A bowl whose loss is NaN close to its minimum."""
    loss = (t**2).sum()
    return torch.where(t.norm() < 0.05, torch.full_like(loss, float("nan")), loss)


def _nan_everywhere(t):
    return (t**2).sum() + torch.log(t[0] - 5.0)


def _bowl(fn=_nan_near_zero, name="nan_bowl"):
    return FunctionSubject(fn, torch.tensor([1.0, 1.0], dtype=torch.float64), name=name, init_scale=0.1)


def _cli(tmp_path, capsys, config_text: str | None, *argv) -> str:
    """Run the command line; it must exit with status 2 and print a lossatlas error."""
    if config_text is not None:
        (tmp_path / "bad.toml").write_text(config_text)
    code = main([a.replace("CONFIG", str(tmp_path / "bad.toml")) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lossatlas: error: "), err
    return err


def _run_with(config_text):
    return lambda tmp_path, capsys, store: _cli(tmp_path, capsys, config_text, "run", "CONFIG", "--scale", "smoke",
                                                "--store", str(store), "--out", str(tmp_path / "out"))


def _damage(how):
    def prepare(store: Path):
        data = store.read_bytes()
        if how == "garbage":
            store.write_bytes(b"\x89HDF but not really" + bytes(range(256)) * 40)
        elif how == "truncate":
            store.write_bytes(data[: len(data) // 2])
        elif how == "schema":
            with h5py.File(store, "a") as file:
                file.attrs["schema_version"] = 99
        elif how == "foreign":
            store.unlink()
            with h5py.File(store, "w") as file:
                file["x"] = np.arange(3)
    return prepare


def _register(subject):
    def prepare(store: Path):
        with Store(store) as opened:
            opened.register(subject)
    return prepare


def _api(call):
    """Call the Python API on the opened store; return the message of the LossatlasError it raises."""
    def act(tmp_path, capsys, store):
        with Store(store) as opened:
            with pytest.raises(LossatlasError) as caught:
                call(opened)
        return str(caught.value)
    return act


def _train_nan(store):
    from lossatlas import train_minima

    train_minima(store, _bowl(), Recipe(lr=0.2, momentum=0.0, epochs=5), seeds=[0], progress=False)


def _filter_normalize_wrong_length(store):
    from lossatlas.directions import filter_normalize
    from lossatlas.problems import pinn_convection

    subject = pinn_convection(1.0, n_f=10, hidden=4, layers=1)
    filter_normalize(torch.ones(subject.dim - 1, dtype=torch.float64), subject.theta0, subject.param_layout)


def _losses_wrong_length(store):
    subject = _bowl()
    subject.losses(np.zeros((3, 2 * subject.dim)))  # rows of 4 numbers for a 2-parameter subject


BAD_INPUTS = [
    pytest.param(_damage("garbage"), _run_with(CAMEL), r"not a readable HDF5 file \(corrupt or truncated\?\)",
                 id="corrupt-file"),
    pytest.param(_damage("truncate"), _run_with(CAMEL), r"corrupt or truncated", id="truncated-file"),
    pytest.param(_damage("schema"), _run_with(CAMEL), r"schema_version 99; this lossatlas reads version 2",
                 id="wrong-schema-version"),
    pytest.param(_damage("foreign"), _run_with(CAMEL), r"not a lossatlas store", id="foreign-hdf5-file"),
    pytest.param(None, _run_with("name = \"x\"\nproblem = [\n"), r"is not valid TOML", id="config-not-toml"),
    pytest.param(None, _run_with("colour = 1\n" + CAMEL), r"Unknown key\(s\) \['colour'\]", id="config-unknown-key"),
    pytest.param(None, _run_with(CAMEL + "[params]\nbetta = 1.0\n"), r"Unknown parameter\(s\) \['betta'\]",
                 id="config-unknown-problem-parameter"),
    pytest.param(None, _run_with(CAMEL + "[methods.merge-tree]\nresolutoin = 5\n"),
                 r"Unknown parameter\(s\) \['resolutoin'\] for method 'merge-tree'",
                 id="config-unknown-method-parameter"),
    pytest.param(None, _run_with(CAMEL + "epoch = 3\n"),
                 r"Unknown parameter\(s\) \['epoch'\] for the training recipe", id="config-unknown-recipe-key"),
    pytest.param(None, _run_with(CAMEL.replace("seeds = [0]", 'seeds = "0"')),
                 r"The 'seeds' parameter of .*bad.toml must be a non-empty list", id="config-seeds-not-a-list"),
    pytest.param(None, _run_with(CAMEL.replace("epochs = 1", "epochs = 1.5")),
                 r"'epochs' parameter of Recipe must be an int", id="config-epochs-float"),
    pytest.param(None, _run_with(CAMEL + "[methods.merge-tree]\nresolution = \"big\"\n"),
                 r"'resolution' parameter of MergeTreeAnalyzer must be an int", id="config-resolution-string"),
    pytest.param(None, _run_with(CAMEL + "[methods.jump-retrain]\nseeds = \"ab\"\n"),
                 r"'seeds' parameter of JumpRetrain must be a non-empty list", id="config-jump-retrain-seeds-string"),
    pytest.param(None, _run_with(CAMEL.replace("lr = 0.01", 'lr = "fast"')), r"'lr' parameter of Recipe",
                 id="config-lr-string"),
    pytest.param(None, _run_with(CAMEL.replace('"three_hump_camel"', '"pinn_convection"')
                                 + '[params]\nbeta = "five"\n'),
                 r"beta", id="config-problem-parameter-string"),
    pytest.param(None, _run_with(CAMEL.replace('"three_hump_camel"', '"resnet"')
                                 + '[params]\ndataset = "cifar10"\ndata_root = "no-such-dir"\n'),
                 r"CIFAR-10 not found: expected the python batches .* in no-such-dir", id="missing-cifar10-directory"),
    pytest.param(_register(_bowl()), _api(_train_nan), r"nan", id="model-nan-at-minimum"),
    pytest.param(None, _api(_train_nan), r"nan", id="model-nan-at-minimum-unknown-subject"),
    pytest.param(_register(_bowl(_nan_everywhere, "nan_point")),
                 _api(lambda store: analyze(store, _bowl(_nan_everywhere, "nan_point"), "hessian", at="theta0")),
                 r"loss of 'nan_point' at theta0 is nan", id="hessian-at-a-nan-point"),
    pytest.param(None, _api(_filter_normalize_wrong_length), r"direction must be a flat vector as long as theta",
                 id="direction-wrong-length"),
    pytest.param(_register(_bowl()),
                 _api(lambda store: analyze(store, _bowl(), "loss-barcode", minima=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])),
                 r"minima must be vectors of length 2", id="minima-wrong-length"),
    pytest.param(_register(_bowl()),
                 _api(lambda store: analyze(store, _bowl(), "loss-barcode", minima=[[0.0, 0.0, 0.0], [1.0, 1.0]])),
                 r"'minima' parameter of LossBarcode must be a list of equal-length vectors", id="minima-ragged"),
    pytest.param(None, _api(_losses_wrong_length), r"2 parameters", id="points-wrong-length"),
]


@pytest.fixture(scope="module")
def populated_store(tmp_path_factory):
    """A store with a subject, a trained minimum and a result: what a bad input must leave intact."""
    from lossatlas import train_minima
    from lossatlas.problems import three_hump_camel

    path = tmp_path_factory.mktemp("bad") / "study.h5"
    subject = three_hump_camel()
    with Store(path) as store:
        train_minima(store, subject, Recipe(lr=0.01, epochs=2), seeds=[0], progress=False)
        analyze(store, subject, "hessian")
    return path


@pytest.mark.parametrize("prepare, act, message", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_leaves_the_store_unchanged(tmp_path, capsys, populated_store, prepare, act,
                                                                   message):
    store = tmp_path / "study.h5"
    shutil.copy(populated_store, store)
    if prepare is not None:
        prepare(store)
    before = _digest(store)
    TALLY["bad inputs tried"] += 1
    text = act(tmp_path, capsys, store)
    assert re.search(message, text), text
    assert _digest(store) == before, "the store file changed"
    TALLY["clear errors"] += 1


# -- NaN and inf through every analyzer ---------------------------------------------------------------
def _band(fill: float, half_width: float = 0.05):
    """A double well (x^2 - 1)^2 + y^2 cut in two by a band |x| < half_width where the loss is ``fill``."""
    def fn(t):
        loss = (t[0] ** 2 - 1) ** 2 + t[1] ** 2
        return torch.where(t[0].abs() < half_width, torch.full_like(loss, fill), loss)
    return fn


NAN_CONFIG = """
name = "nonfinite"
problem = "banded_well"
seeds = [0, 1]
[minima]
lr = 0.01
momentum = 0.0
epochs = 2
[methods.merge-tree]
directions = "axes"
span = 2.0
resolution = 41
[methods.loss-barcode]
bounds = [[-1.5, 1.5], [-0.5, 0.5]]
n_starts = 6
gd_steps = 300
n_images = 11
string_steps = 100
n_eval = 11
[methods.jump-retrain]
seeds = [0, 1]
step_sizes = [0.1, 0.2]
epochs = 4
steps_per_epoch = 5
knn_k = 4
[methods.hessian]
"""


@pytest.mark.parametrize("fill", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nonfinite_grids_and_paths_flow_through_every_analyzer_into_the_report(tmp_path, monkeypatch, fill,
                                                                                   one_thread):
    from lossatlas import harness, problems
    from lossatlas.report import write_report
    from lossatlas.topology.barcode import barcode_scores, minima_barcode

    def banded_well():
        return FunctionSubject(_band(fill), torch.tensor([1.0, 0.0], dtype=torch.float64), name="banded_well",
                               init_scale=0.1)

    monkeypatch.setitem(problems.PROBLEMS, "banded_well", banded_well)
    (tmp_path / "nonfinite.toml").write_text(NAN_CONFIG)
    plan = harness.load(tmp_path / "nonfinite.toml", "smoke")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PHATE on 20 points
        with Store(tmp_path / "nonfinite.h5") as store:
            harness.execute(plan, store, progress=False)
            written = write_report(store, tmp_path / "report")
            results = {r.method: r for r in store.results("banded_well")}
    grid = results["merge-tree"]
    assert grid.metrics["n_nonfinite"] == np.sum(~np.isfinite(grid.arrays["loss_grid"])) > 0
    assert grid.metrics["n_minima"] >= 1 and math.isfinite(grid.metrics["average_persistence"])
    barcode = results["loss-barcode"]
    on_path = ~np.isnan(barcode.arrays["path_t"])  # rows are padded with NaN to one length
    assert barcode.metrics["n_nonfinite"] == np.sum(~np.isfinite(barcode.arrays["path_losses"][on_path])) > 0
    assert barcode.metrics["n_impassable"] >= 1 and barcode.metrics["to_score"] == math.inf
    # the stored barcode, rebuilt from the stored path maxima, and gudhi's distance to the ideal barcode
    rebuilt = minima_barcode(barcode.arrays["minima_losses"], barcode.arrays["pairs"],
                             barcode.arrays["path_max"][tuple(barcode.arrays["pairs"].T)])
    assert barcode_scores(rebuilt)["to_score"] == math.inf
    import gudhi

    ideal = np.array([[barcode.arrays["minima_losses"].min(), np.inf]])
    assert gudhi.bottleneck_distance(barcode.arrays["bars"], ideal) == math.inf
    assert results["jump-retrain"].metrics["n_nonfinite"] == 0 and results["hessian"].metrics["top_eigenvalue"] > 0
    report = written["report.md"].read_text()
    explained = report.split("\n## Non-finite values", 1)[1].split("\n## ", 1)[0]
    assert "`merge-tree.n_nonfinite`" in explained and "`loss-barcode.to_score` = inf" in explained
    assert "non-finite loss value" in explained
    rows = _metrics_rows(written["metrics.csv"])
    assert {float(row["merge-tree.n_nonfinite"]) for row in rows} == {grid.metrics["n_nonfinite"]}


def _ring(t):
    """A bowl walled off by inf beyond radius 1.5: a jump of 2 lands outside."""
    return torch.where(t.norm() > 1.5, torch.full_like(t[0], float("inf")), (t**2).sum())


def test_nonfinite_trajectories_are_counted_not_fatal():
    subject = FunctionSubject(_ring, torch.zeros(2, dtype=torch.float64), name="ring")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store.memory() as store:
            result = analyze(store, subject, "jump-retrain", at="theta0", seeds=[0, 1], step_sizes=[0.5, 2.0],
                             epochs=4, steps_per_epoch=5, knn_k=4)
    assert result.metrics["n_nonfinite"] > 0 and math.isfinite(result.metrics["total_persistence_0_finite"])


def test_nonfinite_curve_paths_are_counted_not_fatal():
    # a band wider than the spacing of the 11 evaluation points: every curve across it is sampled inside it
    subject = FunctionSubject(_band(float("nan"), 0.3), torch.tensor([1.0, 0.0], dtype=torch.float64), name="band")
    with Store.memory() as store:
        result = analyze(store, subject, "loss-barcode", path="polychain", minima=[[-1.0, 0.0], [1.0, 0.0]],
                         curve_epochs=2, n_eval=11)
    assert result.metrics["n_nonfinite"] > 0 and result.metrics["to_score"] == math.inf


def test_progress_in_a_log_is_plain_lines(monkeypatch):
    """A batch job's log (not a terminal) gets one readable line per update, at most every
    LOG_INTERVAL seconds, and one when the work ends -- no carriage-return redraws."""
    import io

    from lossatlas import progress

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    import time

    log = io.StringIO()
    bar = progress.bar(total=6, desc="grid", file=log)
    clock = iter(time.time() + 20.0 * step for step in range(1, 1000))  # 20 s between updates
    bar._time = lambda: next(clock)
    for _ in range(6):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.startswith("grid: ") for line in lines)
    assert 2 <= len(lines) <= 5 and lines[-1].startswith("grid: 6/6 (100%)")
