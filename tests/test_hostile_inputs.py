"""Hostile inputs: each ends in one clear lossatlas error line (exit status 2 on the command line)
with nothing written, never a traceback, a crash or a silently wrong result.

Covers users' problem factories, class labels and parameterless models, the MNIST IDX reader,
malformed TOML, the Dask options and lost Dask tasks, the store lock against run.log, subject
names the store refuses, FunctionSubject's start and value, and add_minimum's checkpoints.
"""
from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import ConfigError, FunctionSubject, LossatlasError, ModuleSubject, Store, StoreError
from lossatlas.cli import main
from lossatlas.errors import DataError
from lossatlas.problems import mnist
from lossatlas.samplers.minima import add_minimum

FACTORIES = {
    "hostile_import_raises": 'raise RuntimeError("broken at import")\n',
    "hostile_syntax": "def make(:\n    pass\n",
    "hostile_factories": '''
import torch
from torch import nn
from lossatlas import FunctionSubject, ModuleSubject


def raises():
    raise ValueError("no data for you")


def exits():
    raise SystemExit(3)


def bowl(**kwargs):
    return FunctionSubject(lambda t: (t ** 2).sum(), torch.tensor([1.0, -1.0]), name=kwargs.get("name", "bowl"))


def classifier(label: int = 10):
    inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, label])  # the bad one last: the first batch looks fine
    return ModuleSubject(nn.Linear(4, 10), nn.CrossEntropyLoss(), (inputs, labels), name="classifier", device="cpu")


def no_parameters():
    inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    return ModuleSubject(nn.Flatten(), nn.CrossEntropyLoss(), (inputs, torch.arange(8) % 4), name="flat",
                         device="cpu")
''',
}


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """The factory modules, importable from tmp_path; forgotten again afterwards."""
    folder = tmp_path / "factories"
    folder.mkdir()
    for name, source in FACTORIES.items():
        (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    yield
    for name in FACTORIES:
        sys.modules.pop(name, None)


def _config(problem: str, extra: str = "") -> str:
    return f'name = "hostile"\nproblem = "{problem}"\nseeds = [0]\n{extra}[minima]\nlr = 0.01\nepochs = 1\n'


def _cli(tmp_path, capsys, config: str | bytes, *argv) -> str:
    """Run the command line on ``config``: status 2, one lossatlas error line, nothing written."""
    path = tmp_path / "hostile.toml"
    path.write_bytes(config if isinstance(config, bytes) else config.encode())
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lossatlas: error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir()), f"written: {list(out.rglob('*'))}"
    return err


CHECK = ("--check",)
CLI_CASES = [
    pytest.param(_config("hostile_import_raises:make"), (),
                 r"Problem 'hostile_import_raises:make' could not be loaded: importing its module raised "
                 r"RuntimeError: broken at import\.", id="factory-module-raises-on-import"),
    pytest.param(_config("hostile_syntax:make"), (),
                 r"Problem 'hostile_syntax:make' could not be loaded: importing its module raised SyntaxError: "
                 r"invalid syntax \(hostile_syntax\.py, line 1\)", id="factory-module-syntax-error"),
    pytest.param(_config("hostile_factories:raises"), (),
                 r"Problem 'hostile_factories:raises': its factory raised ValueError: no data for you\.",
                 id="factory-raises"),
    pytest.param(_config("hostile_factories:exits"), (),
                 r"Problem 'hostile_factories:exits': its factory raised SystemExit: 3\.", id="factory-sys-exit"),
    pytest.param(_config("hostile_factories:classifier"), CHECK,
                 r"classifier: data has 1 label\(s\) outside \[0, 9\], e\.g\. 10; the model gives 10 class scores",
                 id="check-label-10-of-10-classes"),
    pytest.param(_config("hostile_factories:classifier", "[params]\nlabel = -1\n"), CHECK,
                 r"classifier: data has 1 label\(s\) outside \[0, 9\], e\.g\. -1", id="check-label-negative"),
    pytest.param(_config("hostile_factories:no_parameters"), CHECK,
                 r"The model of flat \(Flatten\) has no parameters", id="check-model-without-parameters"),
    pytest.param(_config("hostile_factories:bowl", '[params]\nname = "a/b"\n'), CHECK,
                 r"Problem 'hostile_factories:bowl' with \{'name': 'a/b'\}: Invalid subject name 'a/b'",
                 id="check-subject-name-with-slash"),
    pytest.param(_config("three_hump_camel").replace('"hostile"', '"caf\xe9"').encode("latin-1"), (),
                 r"hostile\.toml is not UTF-8 text, as TOML must be: byte 0xe9 at offset 11\.",
                 id="config-latin-1"),
    pytest.param(_config("three_hump_camel", "x = " + "[" * 20000 + "]" * 20000 + "\n"), (),
                 r"hostile\.toml nests arrays or inline tables too deeply to read", id="config-20000-nested-arrays"),
    pytest.param(_config("three_hump_camel", "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"), (),
                 r"hostile\.toml nests arrays or inline tables too deeply to read",
                 id="config-5000-nested-inline-tables"),
    pytest.param(_config("three_hump_camel"), ("--executor", "dask", "--scheduler", "not a url"),
                 r"--scheduler 'not a url' is not a Dask scheduler address; expected e\.g\. tcp://host:8786",
                 id="dask-scheduler-not-an-address"),
]


@pytest.mark.parametrize("config, argv, message", CLI_CASES)
def test_hostile_command_line_input_is_one_clear_error_line(tmp_path, capsys, factories, config, argv, message):
    err = _cli(tmp_path, capsys, config, *argv)
    assert re.search(message, err), err


def test_a_factory_taking_kwargs_gets_every_parameter(tmp_path, capsys, factories):
    from lossatlas import problems

    assert problems.build("hostile_factories:bowl", name="mine", anything=1).name == "mine"
    (tmp_path / "kw.toml").write_text(_config("hostile_factories:bowl", '[params]\nname = "kw"\nwhatever = 2\n'))
    assert main(["run", str(tmp_path / "kw.toml"), "--check", "--out", str(tmp_path / "out")]) == 0
    assert "config OK" in capsys.readouterr().out


# -- the Python API ----------------------------------------------------------------------------------
def _idx(values) -> bytes:
    """An IDX file of unsigned bytes: 0, 0, 0x08, ndim, each dimension as a big-endian int32, the data."""
    array = np.asarray(values, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">i", n) for n in array.shape) + array.tobytes()


def _mnist(**files):
    """MNIST from four tiny IDX files in tmp_path/mnist, ``files`` replacing some (a name ending in
    .gz replaces the plain file)."""
    def act(tmp_path):
        folder = tmp_path / "mnist"
        folder.mkdir()
        plain = {"train-images-idx3-ubyte": _idx(np.arange(48).reshape(3, 4, 4)),
                 "train-labels-idx1-ubyte": _idx([0, 1, 2]),
                 "t10k-images-idx3-ubyte": _idx(np.arange(32).reshape(2, 4, 4)),
                 "t10k-labels-idx1-ubyte": _idx([3, 4])}
        for name, data in {**plain, **files}.items():
            (folder / name).write_bytes(data)
        for name in files:
            if name.endswith(".gz"):
                (folder / name.removesuffix(".gz")).unlink()
        mnist(tmp_path)
    return act


def _classifier(labels, test_labels=None):
    inputs = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    test = None if test_labels is None else (inputs[: len(test_labels)], torch.tensor(test_labels))
    return lambda tmp_path: ModuleSubject(nn.Linear(4, 10), nn.CrossEntropyLoss(), (inputs, torch.tensor(labels)),
                                          name="clf", test_data=test, device="cpu")


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _bn_subject(model):
    inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    return ModuleSubject(model, nn.CrossEntropyLoss(), (inputs, torch.arange(8) % 3), name="bn", device="cpu")


def _add_minimum(checkpoint):
    """add_minimum with ``checkpoint(tmp_path)``; the store must stay without subjects."""
    def act(tmp_path):
        model = _bn_model()
        subject = _bn_subject(model)
        with Store(tmp_path / "study.h5") as store:
            try:
                add_minimum(store, subject, checkpoint(tmp_path, model))
            finally:
                assert store.subjects() == []
    return act


def _saved(tmp_path, obj, name="checkpoint.pt") -> str:
    torch.save(obj, tmp_path / name)
    return str(tmp_path / name)


def _junk(tmp_path, model) -> str:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    return str(tmp_path / "junk.pt")


def _with_extra_key(tmp_path, model):
    return {**model.state_dict(), "head.weight": torch.zeros(2)}


def _without(key):
    return lambda tmp_path, model: {k: v for k, v in model.state_dict().items() if k != key}


API_CASES = [
    pytest.param(_mnist(**{"train-images-idx3-ubyte": bytes([0, 0, 8, 3, 0, 0])}), DataError,
                 r"train-images-idx3-ubyte: the header announces 3 dimensions, but the file ends after 6 bytes",
                 id="mnist-short-header"),
    pytest.param(_mnist(**{"train-images-idx3-ubyte": bytes([0, 0, 8, 255]) + bytes(64)}), DataError,
                 r"train-images-idx3-ubyte: the header announces 255 dimensions", id="mnist-ndim-255"),
    pytest.param(_mnist(**{"train-images-idx3-ubyte.gz": gzip.compress(_idx(np.zeros((3, 4, 4))))[:30]}), DataError,
                 r"train-images-idx3-ubyte\.gz could not be read \(truncated or corrupt\?\): EOFError",
                 id="mnist-truncated-gz"),
    pytest.param(_mnist(**{"train-images-idx3-ubyte": _idx(np.zeros((0, 4, 4))),
                           "train-labels-idx1-ubyte": _idx(np.zeros(0))}), DataError,
                 r"train-images-idx3-ubyte holds no images", id="mnist-zero-images"),
    pytest.param(_mnist(**{"t10k-labels-idx1-ubyte": _idx([3, 200])}), DataError,
                 r"t10k-labels-idx1-ubyte: label 200 is not a class of 0-9", id="mnist-label-200"),
    pytest.param(_mnist(**{"t10k-images-idx3-ubyte": _idx(np.zeros((2, 5, 5)))}), DataError,
                 r"train-images-idx3-ubyte holds 4x4 images but .*t10k-images-idx3-ubyte 5x5",
                 id="mnist-train-and-test-sizes-differ"),
    pytest.param(_classifier([0, 1, 2, 10]), ConfigError, r"clf: data has 1 label\(s\) outside \[0, 9\], e\.g\. 10",
                 id="module-label-out-of-range"),
    pytest.param(_classifier([0, 1, -3, 2]), ConfigError, r"clf: data has 1 label\(s\) outside \[0, 9\], e\.g\. -3",
                 id="module-label-negative"),
    pytest.param(_classifier([0, 1, 2, 3], test_labels=[1, 12]), ConfigError,
                 r"clf: test_data has 1 label\(s\) outside \[0, 9\], e\.g\. 12", id="module-test-label-out-of-range"),
    pytest.param(lambda tmp_path: ModuleSubject(nn.ReLU(), nn.MSELoss(), (torch.randn(4, 2), torch.randn(4, 2))),
                 ConfigError, r"The model of ReLU \(ReLU\) has no parameters", id="module-without-parameters"),
    pytest.param(lambda tmp_path: FunctionSubject(lambda t: t**2, torch.tensor(1.0)), ConfigError,
                 r"theta0 must be a non-empty vector of parameters; got a tensor of shape \(\)",
                 id="function-0-dimensional-start"),
    pytest.param(lambda tmp_path: FunctionSubject(lambda t: float((t**2).sum()), torch.tensor([1.0, 2.0])),
                 ConfigError, r"fn must return the loss as a tensor holding one number.*returned a float",
                 id="function-returns-a-float"),
    pytest.param(_add_minimum(lambda tmp_path, model: str(tmp_path / "missing.pt")), DataError,
                 r"The checkpoint .*missing\.pt could not be loaded .*FileNotFoundError",
                 id="add-minimum-missing-file"),
    pytest.param(_add_minimum(_junk), DataError, r"The checkpoint .*junk\.pt could not be loaded",
                 id="add-minimum-unreadable-file"),
    pytest.param(_add_minimum(lambda tmp_path, model: _saved(tmp_path, {"epoch": 3, "model": model.state_dict()})),
                 DataError, r"holds a dict with keys \['epoch', 'model'\], not a state_dict",
                 id="add-minimum-file-of-another-kind"),
    pytest.param(_add_minimum(_with_extra_key), ConfigError, r"The state_dict has \['head\.weight'\], which bn's "
                 r"model does not have", id="add-minimum-extra-key"),
    pytest.param(_add_minimum(_without("0.bias")), ConfigError, r"The state_dict lacks \['0\.bias'\]",
                 id="add-minimum-missing-key"),
]


@pytest.mark.parametrize("act, error, message", API_CASES)
def test_hostile_api_input_is_a_clear_error(tmp_path, act, error, message):
    with pytest.raises(error) as caught:
        act(tmp_path)
    assert isinstance(caught.value, LossatlasError)
    assert re.search(message, str(caught.value)) and "\n" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize("as_file", ["state_dict", "flat"])
def test_add_minimum_loads_a_checkpoint_file(tmp_path, as_file):
    model = _bn_model()
    subject = _bn_subject(model)
    saved = _saved(tmp_path, model.state_dict() if as_file == "state_dict" else subject.theta0)
    with Store(tmp_path / "study.h5") as store:
        minimum = add_minimum(store, subject, saved)
    np.testing.assert_array_equal(minimum.theta, subject.theta0.numpy())


# -- the store lock and run.log ----------------------------------------------------------------------
def test_a_refused_run_writes_nothing_into_the_winners_run_log(tmp_path):
    """A second run of a store another process holds is refused before its log line is written."""
    from lossatlas import harness
    from lossatlas.cli import _run_one

    (tmp_path / "c.toml").write_text(_config("three_hump_camel"))
    plan = harness.load(tmp_path / "c.toml", "smoke")
    out = tmp_path / "out"
    store = out / f"{plan.record_name}.h5"
    log = out / plan.record_name / "run.log"
    log.parent.mkdir(parents=True)
    log.write_text("the winner's log\n")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lossatlas.store import Store; "
                               "s = Store(sys.argv[1], 'a'); print('held', flush=True); time.sleep(60)", str(store)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match="is locked"):
            _run_one(plan, out, store)
    finally:
        holder.kill()
        holder.wait()
    assert log.read_text() == "the winner's log\n"


# -- Dask: tasks lost with a dying worker run again ----------------------------------------------------
class _Future:
    def __init__(self, value=None, error=None):
        self.value, self.error, self.status = value, error, "error" if error else "finished"

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self):
        self.status = "cancelled"


class _Client:
    """Runs a task when it is submitted; its first ``lost[task]`` submissions come back lost, as a
    worker's death leaves them (KilledWorker, or cancelled for lost dependencies)."""

    def __init__(self, lost: dict):
        self.lost, self.submitted, self.scattered = dict(lost), [], 0

    def scatter(self, objects, broadcast, hash):
        self.scattered += 1
        return [_Future(objects[0])]

    def submit(self, call, fn, threads, task, *shared, pure):
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        self.submitted.append(task)
        if self.lost.get(task):
            self.lost[task] -= 1
            error = KilledWorker(f"task-{task}", SimpleNamespace(address="tcp://10.0.0.9:1"), 3) if task % 2 else \
                FutureCancelledError(f"task-{task}", "lost dependencies")
            return _Future(error=error)
        return _Future(call(fn, threads, task, *(s.value for s in shared)))


class _AsCompleted:
    """distributed.as_completed for the fake futures: each once, more added while iterating."""

    def __init__(self, futures):
        self.queue = list(futures)

    def add(self, future):
        self.queue.append(future)

    def __iter__(self):
        while self.queue:
            yield self.queue.pop(0)


@pytest.fixture
def fake_dask(monkeypatch):
    import distributed

    from lossatlas.executor import DaskExecutor

    monkeypatch.setattr(distributed, "as_completed", _AsCompleted)
    return lambda lost: DaskExecutor(client=_Client(lost), threads=None)


def test_dask_tasks_lost_with_a_worker_run_again_and_finish(fake_dask):
    runner = fake_dask({1: 1, 2: 2})
    results = dict(runner.map(lambda offset, task: offset + task, [0, 1, 2, 3], shared=(10,)))
    assert results == {0: 10, 1: 11, 2: 12, 3: 13}
    assert sorted(runner.client.submitted) == [0, 1, 1, 2, 2, 2, 3]


def test_dask_a_task_lost_again_and_again_is_a_clear_error(fake_dask):
    runner = fake_dask({1: 3})
    with pytest.raises(LossatlasError, match=r"Task 1 was lost 3 times with its Dask worker \(KilledWorker: .*\); "
                                             r"what finished is stored: rerun the same command to resume"):
        list(runner.map(lambda task: task, [0, 1]))
