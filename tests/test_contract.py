"""The analyzer contract and the sampling driver: results never stale, parts never confused,
interrupted writes never read as finished, another landscape under a taken name refused before
any work. Ground truth: exact Hessians of Himmelblau's function from torch.autograd."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import ConfigError, Minimum, Recipe, Store, StoreError, add_minimum, analyze, train_minima
from lossatlas.errors import NonFiniteLossError
from lossatlas.point_analyzer import PointAnalyzer
from lossatlas.problems import himmelblau
from lossatlas.registry import get
from lossatlas.samplers import JumpRetrainRuns, Point, jump_and_retrain
from lossatlas.subjects import FunctionSubject, ModuleSubject


def _exact_top_eigenvalue(subject, point) -> float:
    hessian = torch.autograd.functional.hessian(subject.fn, torch.as_tensor(point, dtype=torch.float64))
    return float(torch.linalg.eigvalsh(hessian).max())


def test_a_replaced_minimum_gets_a_new_result_not_the_stored_one():
    subject = himmelblau()
    first, second = (np.array(p) for p, _ in subject.critical_points["minima"][:2])
    with Store.memory() as store:
        store.register(subject)
        store.write_minimum(subject.name, Minimum(0, first, np.zeros(0), 0, {}, {"eval_loss": 0.0}))
        before = analyze(store, subject, "hessian", minimum=0, progress=False)
        store.write_minimum(subject.name, Minimum(0, second, np.zeros(0), 0, {}, {"eval_loss": 0.0}))
        after = analyze(store, subject, "hessian", minimum=0, progress=False)
    assert before.key != after.key  # same parameters, another point
    assert before.metrics["top_eigenvalue"] == pytest.approx(_exact_top_eigenvalue(subject, first), rel=1e-10)
    assert after.metrics["top_eigenvalue"] == pytest.approx(_exact_top_eigenvalue(subject, second), rel=1e-10)
    assert abs(before.metrics["top_eigenvalue"] - after.metrics["top_eigenvalue"]) > 1.0


def test_more_stored_minima_give_a_new_barcode():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 3, generator=generator, dtype=torch.float64)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:, None]
    subject = ModuleSubject(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double(), nn.MSELoss(),
                            (inputs, targets), name="tiny")
    recipe = Recipe(lr=0.05, epochs=2, batch_size=8)
    settings = dict(n_minima=3, curve_epochs=1, n_eval=5, batch_size=8, progress=False)
    with Store.memory() as store:
        train_minima(store, subject, recipe, seeds=[0, 1], progress=False)
        two = analyze(store, subject, "loss-barcode", **settings)
        train_minima(store, subject, recipe, seeds=[0, 1, 2], progress=False)
        three = analyze(store, subject, "loss-barcode", **settings)
    assert two.key != three.key and two.metrics["n_minima"] == 2 and three.metrics["n_minima"] == 3


def test_an_interrupted_result_write_is_not_a_result(monkeypatch):
    subject = himmelblau()
    with Store.memory() as store:
        original = Store.write_array

        def failing(self, group, name, data):
            if name == "eigenvectors":
                raise KeyboardInterrupt
            return original(self, group, name, data)

        monkeypatch.setattr(Store, "write_array", failing)
        with pytest.raises(KeyboardInterrupt):
            analyze(store, subject, "hessian", at="theta0", progress=False)
        monkeypatch.setattr(Store, "write_array", original)
        assert store.results(subject.name) == []
        result = analyze(store, subject, "hessian", at="theta0", progress=False)
        assert set(result.arrays) == {"eigenvalues", "eigenvectors", "bottom_eigenvalues", "density_grid", "density"}
        with pytest.raises(StoreError, match="no result"):
            store.read_result(subject.name, "hessian", "nope")


def test_another_landscape_under_a_taken_name_is_refused_before_training(monkeypatch):
    subject = himmelblau()
    moved = FunctionSubject(subject.fn, subject.theta0 + 1.0, name=subject.name)
    recipe = Recipe(lr=0.01, momentum=0.0, epochs=1, steps_per_epoch=10)
    with Store.memory() as store:
        train_minima(store, subject, recipe, seeds=[0], progress=False)
        trained = []
        monkeypatch.setattr(FunctionSubject, "train", lambda *a, **k: trained.append(1))
        with pytest.raises(StoreError, match="another config"):
            train_minima(store, moved, recipe, seeds=[0, 1], progress=False)
    assert trained == []


def test_distinct_step_sizes_are_distinct_parts_and_duplicates_are_refused():
    subject = himmelblau()
    with Store.memory() as store:
        runs = jump_and_retrain(store, subject, seeds=[0], step_sizes=[0.5, 0.5000001], epochs=1,
                                recipe={"steps_per_epoch": 2}, at="theta0", progress=False)
        root = next(iter(store.file[f"subjects/{subject.name}/samples/jump_retrain"].values()))
        assert sorted(name for name in root if root[name].attrs.get("encoding-type") == "part") == [
            "0_0.5", "0_0.5000001"]
    assert not np.array_equal(runs["thetas"][0], runs["thetas"][2])  # two different jumps, not one read twice
    with pytest.raises(ConfigError, match="distinct values"):
        JumpRetrainRuns(point=Point(at="theta0"), step_sizes=(0.5, 0.5))


def test_an_int_for_a_float_is_the_same_setting():
    subject = himmelblau()
    with Store.memory() as store:
        whole = analyze(store, subject, "merge-tree", directions="axes", at="theta0", span=5, resolution=11,
                        progress=False)
        same = analyze(store, subject, "merge-tree", directions="axes", at="theta0", span=5.0, resolution=11,
                       progress=False)
        assert whole.key == same.key and whole.params["span"] == 5.0
        assert len(store.file[f"subjects/{subject.name}/samples/grid"]) == 1  # one grid, not two


def test_request_fields_are_validated():
    from lossatlas.samplers import Grid, Paths, TrainedMinima, connect_minima

    with pytest.raises(ConfigError, match="The 'minima' parameter of Paths must be a Request"):
        Paths()
    with pytest.raises(ConfigError, match="The 'point' parameter of Grid must be a Point"):
        Grid(point=None)
    with pytest.raises(ConfigError, match="The 'recipe' parameter of TrainedMinima must be a Recipe"):
        TrainedMinima(recipe={"epochs": 1})
    with Store.memory() as store, pytest.raises(ConfigError, match=r"Unknown parameter\(s\) \['path'\]"):
        connect_minima(store, himmelblau(), np.zeros((2, 2)), path="string")


def test_a_new_analyzer_version_recomputes_instead_of_returning_the_old_meaning(monkeypatch):
    from lossatlas.methods.merge_tree import MergeTreeAnalyzer

    settings = dict(directions="axes", at="theta0", span=5.0, resolution=21, progress=False)
    version = MergeTreeAnalyzer.version
    with Store.memory() as store:
        current = analyze(store, himmelblau(), "merge-tree", **settings)
        monkeypatch.setattr(MergeTreeAnalyzer, "version", 1)  # as stored before the metrics changed
        older = analyze(store, himmelblau(), "merge-tree", **settings)
        monkeypatch.setattr(MergeTreeAnalyzer, "version", version)
        again = analyze(store, himmelblau(), "merge-tree", **settings)
        assert len(store.results(himmelblau().name, "merge-tree")) == 2
    assert older.key != current.key and again.key == current.key
    assert again.metrics == current.metrics


def test_two_checkpoints_under_one_name_are_never_confused():
    torch.manual_seed(0)
    data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    checkpoint_a = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint_b = {k: v * 3.0 for k, v in checkpoint_a.items()}

    def subject(checkpoint, name="mlp"):
        model.load_state_dict(checkpoint)
        return ModuleSubject(model, nn.functional.cross_entropy, data, name=name)

    settings = dict(at="theta0", k=1, progress=False)
    with Store.memory() as store:
        first = analyze(store, subject(checkpoint_a), "hessian", **settings)
        with pytest.raises(StoreError, match="another starting point: its theta0 differs"):
            analyze(store, subject(checkpoint_b), "hessian", **settings)
        assert len(store.results("mlp", "hessian")) == 1  # nothing written for B under A's name
        second = analyze(store, subject(checkpoint_b, name="mlp_b"), "hessian", **settings)
        again = analyze(store, subject(checkpoint_a), "hessian", **settings)
    with Store.memory() as fresh:
        expected = analyze(fresh, subject(checkpoint_b), "hessian", **settings)
    assert second.metrics["top_eigenvalue"] == pytest.approx(expected.metrics["top_eigenvalue"], rel=1e-9)
    assert second.metrics["top_eigenvalue"] != pytest.approx(first.metrics["top_eigenvalue"], rel=1e-3)
    assert again.key == first.key


def test_frozen_parameters_stay_out_of_the_landscape_and_keep_their_values():
    torch.manual_seed(0)
    data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen feature layer, as in fine-tuning
    frozen = model[0].weight.detach().clone()
    subject = ModuleSubject(model, nn.functional.cross_entropy, data, name="frozen")
    assert subject.dim == 4 + 8 + 2 and "0.weight" not in dict((n, s) for n, s, _ in subject.param_layout)
    theta, _ = subject.init_theta(3)
    trained = subject.train(theta, Recipe(lr=0.5, epochs=5, batch_size=8), seed=0, progress=False)
    assert not torch.allclose(trained[0], theta)  # the trainable parameters moved
    state = subject.unflatten(trained[0])
    reference = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():
        reference[0].weight.copy_(frozen)  # the loaded frozen weight, untouched by init and training
        for name, tensor in state.items():
            dict(reference.named_parameters())[name].copy_(tensor)
        expected = float(nn.functional.cross_entropy(reference(data[0]), data[1]))
    assert subject.loss(trained[0]) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(subject.model[0].weight, frozen) and torch.equal(model[0].weight, frozen)
    assert "0.weight" in subject.config()["frozen"]
    # a frozen layer's BatchNorm statistics belong to its frozen weights: init_theta keeps them
    backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    backbone.train()(data[0] * 3 + 1)  # loaded statistics, far from the fresh 0 / 1
    backbone[:2].requires_grad_(False)
    tuned = ModuleSubject(backbone, nn.functional.cross_entropy, data, name="tuned")
    _, buffers = tuned.init_theta(1)
    assert torch.equal(tuned.unflatten(tuned.theta0, buffers)["1.running_mean"], backbone[1].running_mean)


def test_a_summed_loss_is_refused_not_averaged_into_a_wrong_number():
    torch.manual_seed(0)
    data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="sums over the batch"):
        ModuleSubject(model, nn.CrossEntropyLoss(reduction="sum"), data)
    with pytest.raises(ConfigError, match="sums over the batch"):
        ModuleSubject(model, lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum"), data)
    mean = ModuleSubject(model, nn.CrossEntropyLoss(), data, eval_batch_size=5)
    assert mean.loss(mean.theta0) == pytest.approx(float(nn.functional.cross_entropy(model(data[0]), data[1])),
                                                   rel=1e-6)


def test_a_checkpoint_with_foreign_batchnorm_statistics_is_flagged_and_can_be_re_estimated():
    """torch.optim.swa_utils.update_bn (torch's own re-estimation) is the reference for the statistics."""
    import warnings

    from torch.optim.swa_utils import update_bn

    torch.manual_seed(0)
    inputs = torch.randn(64, 3, dtype=torch.float64)
    data = (inputs, (inputs[:, 0] > 0).long())
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()
    update_bn([(inputs,)], model)  # statistics of the data: a consistent checkpoint
    good = {k: v.clone() for k, v in model.state_dict().items()}
    foreign = {**good, "1.running_mean": good["1.running_mean"] - 25.0, "1.running_var": good["1.running_var"] * 1e-4}
    subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, name="bn", eval_batch_size=64)
    with Store.memory() as store:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # consistent statistics: no warning
            kept = add_minimum(store, subject, good)
        with pytest.warns(UserWarning, match="BatchNorm statistics give"):
            stale = add_minimum(store, subject, foreign)
        fixed = add_minimum(store, subject, foreign, update_bn=True)
    assert kept.recipe["bn_statistics"] == stale.recipe["bn_statistics"] == "checkpoint"
    assert fixed.recipe["bn_statistics"] == "re-estimated"
    assert stale.metrics["eval_loss"] > 10 * fixed.metrics["eval_loss"]
    np.testing.assert_allclose(fixed.buffers, kept.buffers, rtol=1e-10)  # update_bn's statistics, whatever was given
    assert fixed.metrics["eval_loss"] == pytest.approx(kept.metrics["eval_loss"], rel=1e-10)


def test_checkpoints_added_as_minima_are_analyzed_where_they_are():
    torch.manual_seed(0)
    data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    checkpoints = [{k: v.clone() for k, v in model.state_dict().items()}]
    checkpoints.append({k: v * 2.0 for k, v in checkpoints[0].items()})
    subject = ModuleSubject(model, nn.functional.cross_entropy, data, name="mine")
    settings = dict(k=1, progress=False)
    with Store.memory() as store:
        first = add_minimum(store, subject, checkpoints[0])
        second = add_minimum(store, subject, torch.cat([v.reshape(-1) for v in checkpoints[1].values()]))
        assert (first.index, second.index) == (0, 1) and "eval_loss" in second.metrics
        at = [analyze(store, subject, "hessian", minimum=i, **settings) for i in (0, 1)]
        with pytest.raises(StoreError, match="already holds minimum 1"):
            add_minimum(store, subject, checkpoints[0], index=1)
        with pytest.raises(ConfigError, match="lacks"):
            add_minimum(store, subject, {"0.weight": checkpoints[0]["0.weight"]})
        with pytest.raises(StoreError, match="Minimum 0 .* is a checkpoint added with add_minimum"):
            train_minima(store, subject, Recipe(lr=0.1, epochs=1), seeds=[0], progress=False)
    for checkpoint, result in zip(checkpoints, at):
        model.load_state_dict(checkpoint)
        own = ModuleSubject(model, nn.functional.cross_entropy, data, name="own")
        exact = torch.autograd.functional.hessian(lambda t, s=own: s._loss_tensor(t, s.buffers0), own.theta0)
        assert result.metrics["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(exact).max()), rel=1e-6)


def test_a_fully_frozen_model_is_refused_and_batch_statistics_models_pass_the_reduction_probe():
    torch.manual_seed(0)
    data = (torch.randn(32, 3), torch.randint(0, 2, (32,)))
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).requires_grad_(False)
    with pytest.raises(ConfigError, match="Every parameter .* requires_grad=False"):
        ModuleSubject(model, nn.functional.cross_entropy, data)
    # BatchNorm without running statistics normalizes by the batch: the probe must not crash it
    batch_stats = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    subject = ModuleSubject(batch_stats, nn.functional.cross_entropy, data)
    assert np.isfinite(subject.loss(subject.theta0))


def test_analyzers_of_one_point_declare_it_once_and_refuse_a_non_finite_loss_there():
    """``at``, ``minimum``, the Point request and the finite-loss check live in PointAnalyzer:
    declared as Point declares them, with the same messages for every analyzer of a point."""
    declared = {f.name: f for f in dataclasses.fields(Point)}
    for name in ("hessian", "hessian-layers", "sharpness", "jump-retrain", "merge-tree"):
        cls = get(name)
        assert issubclass(cls, PointAnalyzer), name
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in ("at", "minimum"):
            assert (fields[key].default, fields[key].metadata) == (declared[key].default, declared[key].metadata)
    hessian = get("hessian")
    assert hessian(at="theta0", minimum=3).requests(himmelblau()) == {"point": Point(at="theta0", minimum=3)}
    with pytest.raises(ConfigError, match=r"The 'at' parameter of Hessian must be one of \['minimum', 'theta0'\]"):
        hessian(at="middle")
    diverged = FunctionSubject(lambda t: (t**2).sum() * float("nan"), torch.zeros(2, dtype=torch.float64),
                               name="diverged")
    with Store.memory() as store:
        for name, what in (("hessian", "the Hessian"), ("sharpness", "the sharpness")):
            with pytest.raises(NonFiniteLossError, match=f"The loss of 'diverged' at theta0 is nan: {what} of a "
                               "non-finite loss is meaningless. Nothing was written"):
                analyze(store, diverged, name, at="theta0", progress=False)
