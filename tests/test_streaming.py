"""Streamed evaluation: a subject that reads its Dataset batch by batch gives the in-memory path's
numbers (float64, 1e-10), its fingerprint, training and m-sharpness batches; batches are weighted
by the terms the loss averages over (torch's own loss over the whole data is the ground truth);
memory stays bounded by a batch."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from lossatlas import ConfigError, ModuleSubject, Store, analyze
from lossatlas import evaluation
from lossatlas.subjects import Recipe

RTOL = 1e-10


def _classifier_data(n=203, d=5, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _mlp(d=5, classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes)).double()


def _pair(data, **kwargs):
    model, loss_fn = kwargs.pop("model", None) or _mlp(), kwargs.pop("loss_fn", None) or nn.CrossEntropyLoss()
    memory = ModuleSubject(model, loss_fn, data, stream=False, name="s", **kwargs)
    streamed = ModuleSubject(model, loss_fn, data, stream=True, name="s", **kwargs)
    return memory, streamed


@pytest.mark.parametrize("form", ["dataset", "loader"])
def test_streamed_equals_in_memory(form):
    x, y = _classifier_data()
    data = TensorDataset(x, y) if form == "dataset" else DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    memory, streamed = _pair(data, eval_batch_size=50, test_data=TensorDataset(x[:40], y[:40]))
    assert (memory.data_source, streamed.data_source) == ("memory", "stream")
    assert memory.config() == streamed.config()  # one fingerprint, whichever path a machine takes
    theta = memory.theta0 + 0.1 * torch.randn(memory.dim, generator=torch.Generator().manual_seed(1),
                                              dtype=torch.float64)
    vector = torch.randn(memory.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert streamed.loss(theta) == pytest.approx(memory.loss(theta), rel=RTOL)
    for product in (evaluation.hvp, evaluation.ggn_vp, evaluation.ef_vp):
        np.testing.assert_allclose(product(streamed, theta, vector), product(memory, theta, vector), rtol=RTOL,
                                   atol=1e-14)
    np.testing.assert_allclose(streamed.grad(theta), memory.grad(theta), rtol=RTOL, atol=1e-14)
    points = theta + 0.2 * torch.randn(9, memory.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for vmapped in (True, False):
        memory._vmap_ok = streamed._vmap_ok = vmapped
        want, got = memory.evaluate_many(points), streamed.evaluate_many(points)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=RTOL)
    assert streamed.evaluate(theta, split="test") == pytest.approx(memory.evaluate(theta, split="test"), rel=RTOL)
    assert len(streamed.example_batches(16)) == len(memory.example_batches(16)) == 203 // 16
    assert torch.equal(streamed.example_batches(16)[5][0], memory.example_batches(16)[5][0])
    recipe = Recipe(epochs=2, lr=0.1, batch_size=32)
    trained = [subject.train(theta, recipe, seed=4, progress=False)[0] for subject in (memory, streamed)]
    np.testing.assert_allclose(trained[1], trained[0], rtol=RTOL, atol=1e-14)


def test_streamed_batchnorm_statistics_and_structured_inputs():
    """update_bn over streamed training data, and a model of two inputs (a dict, several leaves in the
    fingerprint)."""
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.out = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(7, 2)

        def forward(self, image, side):
            return self.out(torch.cat([torch.relu(self.bn(self.a(image))), side], dim=1))

    generator = torch.Generator().manual_seed(0)
    image, side = torch.randn(90, 4, generator=generator), torch.randn(90, 1, generator=generator)
    labels = torch.randint(0, 2, (90,), generator=generator)
    items = [({"image": i, "side": s}, t) for i, s, t in zip(image, side, labels)]
    torch.manual_seed(0)
    memory, streamed = _pair(items_dataset(items), model=TwoInputs().double(), eval_batch_size=25, bn="recompute")
    assert memory.config() == streamed.config()
    np.testing.assert_allclose(streamed.update_bn(memory.theta0), memory.update_bn(memory.theta0), rtol=RTOL)
    assert streamed.loss(memory.theta0) == pytest.approx(memory.loss(memory.theta0), rel=RTOL)


def items_dataset(items):
    class Items(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    return Items()


@pytest.mark.parametrize("stream", [False, True])
def test_batches_weigh_by_the_terms_the_loss_averages(stream):
    """Ignored labels and class weights make a batch's mean cover fewer (or heavier) terms than its
    examples: the landscape is still torch's loss over the whole data at once."""
    x, y = _classifier_data(n=101)
    y[::3] = -100
    y[1:20] = -100  # the first batches hold more ignored labels than the others
    weights = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    for loss_fn in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(weight=weights)):
        subject = ModuleSubject(_mlp(), loss_fn, TensorDataset(x, y), eval_batch_size=16, stream=stream)
        with torch.no_grad():
            whole = float(loss_fn(subject.model(x), y))
        assert subject.loss(subject.theta0) == pytest.approx(whole, rel=1e-12)


def test_a_loss_that_says_its_terms_is_a_mean_over_them():
    """A token-level loss (``terms(targets)``: how many terms its mean averages) over sequences of
    different lengths: the mean over all tokens, not of batch means."""
    class TokenLoss:
        def __call__(self, outputs, targets):
            mask = targets[:, :, 1]
            return ((outputs - targets[:, :, 0]) ** 2 * mask).sum() / mask.sum()

        def terms(self, targets):
            return float(targets[:, :, 1].sum())

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    lengths = torch.randint(1, 7, (40,), generator=generator)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).double()
    targets = torch.stack([torch.randn(40, 6, dtype=torch.float64, generator=generator), mask], dim=2)
    torch.manual_seed(0)
    model = nn.Linear(6, 6).double()
    for stream in (False, True):
        subject = ModuleSubject(model, TokenLoss(), TensorDataset(x, targets), eval_batch_size=9, stream=stream)
        with torch.no_grad():
            want = float(((model(x) - targets[:, :, 0]) ** 2 * mask).sum() / mask.sum())
        assert subject.loss(subject.theta0) == pytest.approx(want, rel=1e-12)


def test_the_memory_budget_chooses_and_the_result_says(monkeypatch):
    x, y = _classifier_data()
    assert ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x, y)).data_source == "memory"
    monkeypatch.setenv("LOSSATLAS_DATA_BUDGET", "1000")  # bytes: this dataset is ~8 KB
    subject = ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x, y), name="tiny")
    assert subject.data_source == "stream"
    assert ModuleSubject(_mlp(), nn.CrossEntropyLoss(), (x, y)).data_source == "memory"  # already held
    with Store.memory() as store:
        result = analyze(store, subject, "hessian", at="theta0", density_runs=0, progress=False)
    assert result.runtime["data"] == "stream"


def test_streamed_memory_is_bounded_by_a_batch():
    """The Hessian, a merge-tree grid and sharpness over a dataset generated from its indices, 64 times
    larger than one evaluation batch: the process's peak memory grows by less than half the dataset
    (in memory it grows by several times the dataset: benchmarks/perf/results.md)."""
    from benchmarks.perf.streaming import measure

    found = measure(True, 4000, 1024, 62)
    assert found["data"] == "stream"
    assert found["dataset_mb"] >= 64 * found["batch_mb"]
    assert found["peak_growth_mb"] < found["dataset_mb"] / 2, found


class _Counting(IterableDataset):
    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        for _ in range(30):
            x = torch.randn(5, generator=generator, dtype=torch.float64)
            yield x, int(torch.randint(0, 3, (), generator=generator))


def test_hostile_streams_get_clear_errors():
    x, y = _classifier_data()
    with pytest.raises(ConfigError, match="already in memory"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), (x, y), stream=True)
    late = y.clone()
    late[-1] = 7  # found by the pass at construction, not minutes into a run
    with pytest.raises(ConfigError, match=r"labels in \[0, 7\]"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x, late), stream=True, eval_batch_size=50)
    with pytest.raises(ConfigError, match="no examples|no batches|non-zero"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x[:0], y[:0]), stream=True)
    iterable = ModuleSubject(_mlp(), nn.CrossEntropyLoss(), _Counting(), eval_batch_size=7)
    assert iterable.data_source == "stream" and iterable.loss(iterable.theta0) > 0  # no length: streamed
    with pytest.raises(ConfigError, match="map-style"):
        iterable.train(iterable.theta0, Recipe(epochs=1, lr=0.1, batch_size=8), seed=0, progress=False)
    streamed = ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x, y), stream=True)
    with pytest.raises(ConfigError, match="batch_size"):
        streamed.train(streamed.theta0, Recipe(epochs=1, lr=0.1, batch_size=None), seed=0, progress=False)


@pytest.mark.parametrize("stream", [False, True])
def test_accuracy_counts_the_labels_the_loss_counts(stream):
    """Padding labels (ignore_index) are neither right nor wrong: accuracy over the counted labels,
    computed by hand, from evaluate and from evaluate_many (vmapped and looped)."""
    x, y = _classifier_data(n=60)
    y[::2] = -100
    subject = ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x, y), eval_batch_size=16, stream=stream)
    with torch.no_grad():
        predicted = subject.model(x).argmax(dim=1)
    counted = y != -100
    want = float((predicted[counted] == y[counted]).double().mean())
    assert subject.evaluate(subject.theta0)["accuracy"] == pytest.approx(want, rel=1e-12)
    for vmapped in (True, False):
        subject._vmap_ok = vmapped
        assert subject.evaluate_many(subject.theta0[None])["accuracy"][0] == pytest.approx(want, rel=1e-12)


class _Noisy(Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.randn(5, dtype=torch.float64), i % 3


def test_streams_that_cannot_be_read_the_same_way_twice_are_refused():
    x, y = _classifier_data(n=20)
    with pytest.raises(ConfigError, match="random transform"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), _Noisy(), stream=True)
    with pytest.raises(ConfigError, match="worker processes"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), DataLoader(_Counting(), batch_size=4, num_workers=2), stream=True)
    ragged = items_dataset([(torch.randn(3 + i % 2, dtype=torch.float64), 0) for i in range(10)])
    with pytest.raises(ConfigError, match="same structure and shapes"):
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), ragged, stream=True)
    one = ModuleSubject(_mlp(), nn.CrossEntropyLoss(), TensorDataset(x[:1], y[:1]), stream=True)
    assert one.loss(one.theta0) == pytest.approx(
        ModuleSubject(_mlp(), nn.CrossEntropyLoss(), (x[:1], y[:1])).loss(one.theta0), rel=1e-12)
