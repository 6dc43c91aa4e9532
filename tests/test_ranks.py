"""A run over several processes (``lossatlas run --nproc``, torch.distributed with gloo on the CPU)
stores the numbers of the one-process run; a rank that dies leaves a store the next run resumes."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

CONFIG = "benchmarks/pinn_convection.toml"  # float64: the processes must agree to rounding
ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, *extra: str, env=None, wait=True):
    command = [sys.executable, "-m", "lossatlas", "run", CONFIG, "--scale", "smoke", "--out", str(out),
               "--figures", "none", "--threads", "1", *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _metrics(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "pinn_convection_smoke" / "metrics.csv")
    return table[[c for c in table.columns if not c.startswith("time.")]]  # wall times differ, numbers must not


def _assert_same(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    numbers = want.select_dtypes("number").columns
    np.testing.assert_allclose(got[numbers].to_numpy(float), want[numbers].to_numpy(float), rtol=1e-9, atol=1e-12)
    others = [c for c in want.columns if c not in numbers]
    assert got[others].equals(want[others])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    _run(out)
    return _metrics(out)


def test_two_processes_store_the_numbers_of_one(one_process, tmp_path):
    done = _run(tmp_path, "--nproc", "2")
    assert "over 2 processes (torch.distributed, gloo)" in done.stdout
    _assert_same(_metrics(tmp_path), one_process)


def _rank_pid(tag: str, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOSSATLAS_TEST_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ \
                and b"LOCAL_RANK=" + str(rank).encode() in environ:
            return int(entry.name)
    return None


def _stored_results(store: Path) -> int:
    try:
        with h5py.File(store, "r", locking=False) as file:
            return sum(len(subject.get("results", {})) for subject in file["subjects"].values())
    except (OSError, KeyError, RuntimeError):
        return 0


def test_a_rank_that_dies_leaves_a_store_the_next_run_resumes(one_process, tmp_path):
    tag = uuid.uuid4().hex
    running = _run(tmp_path, "--nproc", "2", env={"LOSSATLAS_TEST_TAG": tag}, wait=False)
    store = tmp_path / "pinn_convection_smoke.h5"
    deadline = time.monotonic() + 300
    while _stored_results(store) == 0 and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    victim = _rank_pid(tag, 1)
    assert running.poll() is None and victim is not None, "the run ended before a rank could be stopped"
    os.kill(victim, signal.SIGKILL)
    output, _ = running.communicate(timeout=300)
    assert running.returncode != 0, output[-2000:]
    kept = _stored_results(store)
    assert kept > 0  # what rank 0 wrote before the loss is in the store
    done = _run(tmp_path)  # one process resumes the store two began
    assert "pinn_convection_smoke: done" in done.stdout
    _assert_same(_metrics(tmp_path), one_process)
