"""The Dask executor: a LocalCluster of 2 workers stores exactly what local execution stores."""
import h5py
import numpy as np
import pytest

from lossatlas import Store, executor, harness
from lossatlas.cli import main
from lossatlas.errors import ConfigError

distributed = pytest.importorskip("distributed")

# Every farmed-out kind of work: minima, grid blocks (random and Hessian directions), path pairs, J&R runs.
_RESNET = {
    "name": "scaleout", "problem": "resnet", "seeds": [0, 1, 2],
    "params": {"depth": 8, "n_train": 96, "eval_batch_size": 48},
    "minima": {"lr": 0.05, "epochs": 1, "batch_size": 32},
    "methods": {
        "merge-tree": {"resolution": 9, "span": 0.5},
        "loss-barcode": {"n_minima": 3, "curve_epochs": 1, "n_eval": 5, "batch_size": 32},
        "jump-retrain": {"seeds": [0, 1], "step_sizes": [0.5, 1.0], "epochs": 2, "batch_size": 32, "knn_k": 4},
    },
}
_CAMEL = {  # vmapped analytic subject, string paths
    "name": "scaleout_camel", "problem": "three_hump_camel", "seeds": [0, 1, 2],
    "minima": {"lr": 0.01, "momentum": 0.0, "epochs": 3},
    "methods": {"merge-tree": {"resolution": 41, "span": 2.0, "at": "theta0"},
                "loss-barcode": {"path": "string", "n_eval": 11, "bounds": [[-2.5, 2.5], [-2.5, 2.5]]}},
}


@pytest.fixture(scope="module")
def cluster():
    with executor.DaskExecutor(workers=2, threads=1) as runner:
        yield runner


def _run(config, path, runner):
    with Store(path, "a") as store, executor.use(runner):
        harness.execute(harness.plan(config, "cpu"), store, progress=False)


def _contents(path) -> dict:
    """Every dataset and numeric attribute of the store except wall times and creation stamps."""
    found = {}

    def visit(name, node):
        if isinstance(node, h5py.Dataset):
            found[name] = node[()]
        for key, value in node.attrs.items():
            if key not in ("created", "wall_time_s", "versions") and not key.startswith("checksum"):  # they cover times
                found[f"{name}@{key}"] = value

    with h5py.File(path, "r") as file:
        file.visititems(visit)
    return found


@pytest.fixture
def one_thread():
    """The workers' torch thread count here too: bitwise equality needs the same reductions."""
    import torch

    before = torch.get_num_threads()
    executor.set_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("config", [_RESNET, _CAMEL], ids=["resnet8", "camel"])
def test_dask_stores_exactly_what_local_execution_stores(config, cluster, one_thread, tmp_path):
    _run(config, tmp_path / "local.h5", executor.LocalExecutor(threads=1))
    _run(config, tmp_path / "dask.h5", cluster)
    local, farmed = _contents(tmp_path / "local.h5"), _contents(tmp_path / "dask.h5")
    assert sorted(local) == sorted(farmed)
    assert any("/samples/grid/" in name for name in local) and any("/samples/paths/" in name for name in local)
    differing = [name for name in local if not _equal(local[name], farmed[name])]
    assert differing == []


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.all(a == b))


def test_workers_never_open_the_store(cluster, tmp_path):
    """The coordinator holds the only handle: a worker trying to open the store for writing is locked out."""
    path = tmp_path / "held.h5"

    def try_open(_, task):
        try:
            with Store(task, "a"):
                return "opened"
        except Exception as err:  # noqa: BLE001 - the test reports what the worker saw
            return str(err)

    with Store(path, "a"):
        ((_, seen),) = list(cluster.map(try_open, [str(path)], shared=(None,)))
    assert "locked" in seen


def test_task_errors_reach_the_coordinator(cluster):
    def fail(task):
        raise ConfigError(f"bad task {task}")

    with pytest.raises(ConfigError, match="bad task 1"):
        list(cluster.map(fail, [1]))


def test_cli_executor_options_are_checked(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\nproblem = "himmelblau"\n')
    assert main(["run", str(config), "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "--scheduler needs --executor dask" in capsys.readouterr().err
    assert main(["run", str(config), "--out", str(tmp_path), "--threads", "0"]) == 2
    assert "threads must be an int in [1, inf)" in capsys.readouterr().err
    assert not (tmp_path / "c_cpu.h5").exists()


def test_cli_run_on_dask_writes_the_same_report_numbers(tmp_path, one_thread):
    config = tmp_path / "camel.toml"
    config.write_text('name = "camel"\nproblem = "three_hump_camel"\nseeds = [0, 1]\n'
                      '[minima]\nlr = 0.01\nmomentum = 0.0\nepochs = 2\n'
                      '[methods.merge-tree]\nresolution = 21\nspan = 2.0\n')
    for kind in ("local", "dask"):
        assert main(["run", str(config), "--out", str(tmp_path / kind), "--executor", kind, "--threads", "1"]) == 0
    tables = []
    for kind in ("local", "dask"):
        rows = (tmp_path / kind / "camel_cpu" / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        keep = [i for i, column in enumerate(header) if not column.startswith("time.")]
        tables.append([[row.split(",")[i] for i in keep] for row in rows])
    assert len(tables[0]) == 3 and tables[0] == tables[1]
