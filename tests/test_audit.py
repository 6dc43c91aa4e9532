"""The reparameterization-invariance audit (``lossatlas audit-invariance``) on a small study: the
transformed minima keep their function, and the known cases hold -- adaptive sharpness (eta = 0)
does not move when ReLU layers are rescaled (Kwon et al. 2021), epsilon-sharpness and the top
Hessian eigenvalue do (Dinh et al. 2017), and merge trees on filter-normalized random directions do
not (Li et al. 2018); the store, the CLI and the report carry the audit."""
import csv
import math

import numpy as np
import pytest

from lossatlas import harness
from lossatlas.audit import audit, relative_change, transforms
from lossatlas.cli import main, parser
from lossatlas.config import tomllib
from lossatlas.errors import ConfigError
from lossatlas.provenance import digest
from lossatlas.record import AUDIT_TRANSFORMS, AuditSettings, Benchmark
from lossatlas.report import write_report
from lossatlas.report.invariance import summarize, table
from lossatlas.store import Store

_TOML = """
name = "tiny"
problem = "mlp"
seeds = [0, 1]
[params]
dataset = "digits"
n_train = 120
width = 12
depth = 2
[variants]                 # training settings named in this order, which the record's JSON sorts
lr = [0.1]
batch_size = [32]
[minima]
epochs = 3
[methods.sharpness]
steps = 4
restarts = 1
box_restarts = 2
subspace = 100
[methods.hessian]
k = 1
trace_max_probes = 10
density_steps = 10
[methods.merge-tree]
directions = "random"
resolution = 5
span = 0.5
[methods.interpolation]
n_points = 5
[audit]
transforms = ["rescale", "permute", "scale_before_norm"]
alphas = [10.0]
"""


SUBJECT = "mlp2x12_digits_lr0.1_batch_size32"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """`lossatlas run` of a config with [audit]: the benchmark, then the audit, then the report."""
    folder = tmp_path_factory.mktemp("audit")
    (folder / "tiny.toml").write_text(_TOML, encoding="utf-8")
    assert main(["run", str(folder / "tiny.toml"), "--scale", "smoke", "--out", str(folder), "--figures",
                 "draft"]) == 0
    with Store(folder / "tiny_smoke.h5", "r") as store:
        found = store.read_audit("tiny_smoke")
    return folder, found


def _change(found, measure, transform):
    return [row["relative_change"] for row in found["rows"] if row["measure"] == measure
            and row["transform"] == transform]


def test_every_transformation_keeps_the_function(audited):
    _, found = audited
    assert found["checks"] and all(check["unchanged"] for check in found["checks"])
    assert {check["transform"] for check in found["checks"]} == {"rescale ×10", "permute units"}
    assert {(check["minimum"], check["transform"]) for check in found["checks"]} == {  # every minimum, not only the
        (m, t) for m in (0, 1) for t in ("rescale ×10", "permute units")}              # audited one


def test_known_cases_adaptive_sharpness_and_filter_normalized_grids_hold_epsilon_and_eigenvalue_move(audited):
    _, found = audited
    for measure in ("sharpness.adaptive_sharpness_l2", "sharpness.adaptive_sharpness_linf",
                    "merge-tree.average_persistence", "merge-tree.n_minima"):
        changes = _change(found, measure, "rescale ×10")
        assert changes and max(abs(c) for c in changes) <= 1e-3, (measure, changes)
    assert min(abs(c) for c in _change(found, "sharpness.epsilon_sharpness", "rescale ×10")) > 0.05
    assert min(abs(c) for c in _change(found, "hessian.top_eigenvalue", "rescale ×10")) > 0.5


def test_a_method_reading_other_minima_sees_them_transformed_alike(audited):
    """The barrier between minimum 0 and its partner: both transformed, one function along the
    line; the line from the (untransformed) initialisation is not the same line any more."""
    _, found = audited
    for transform in ("rescale ×10", "permute units"):
        assert max(abs(c) for c in _change(found, "interpolation.barrier", transform)) <= 1e-3
    assert min(abs(c) for c in _change(found, "interpolation.init_largest_rise", "rescale ×10")) > 1e-3


def test_the_mlp_has_no_batchnorm_to_scale_and_says_so(audited):
    _, found = audited
    assert any("scale before BN" in note and "not applicable" in note for note in found["notes"])
    assert not [row for row in found["rows"] if row["kind"] == "scale_before_norm"]


def test_the_audit_is_written_and_reported(audited):
    folder, found = audited
    report = (folder / "tiny_smoke" / "report.md").read_text(encoding="utf-8")
    assert "## Reparameterization invariance" in report and "rescale ×10" in report
    assert (folder / "tiny_smoke" / "figures" / "invariance.png").is_file()
    audit_folder = folder / "tiny_smoke" / "audit"
    with open(audit_folder / "invariance_summary.csv", encoding="utf-8") as handle:
        summary = list(csv.DictReader(handle))
    verdicts = {(r["measure"], r["transform"]): r["verdict"] for r in summary}
    assert verdicts[("sharpness.adaptive_sharpness_l2", "rescale ×10")] == "unchanged"
    assert verdicts[("hessian.top_eigenvalue", "rescale ×10")] == "moves"
    assert (audit_folder / "figures" / "invariance.png").is_file()
    with Store(folder / "tiny_smoke.h5", "r") as store:  # the report rebuilt from the store alone has it too
        written = write_report(store, folder / "again", figures="draft")
    assert written["report.md"].read_text(encoding="utf-8") == report


def test_the_cli_reruns_from_the_scratch_stores(audited, capsys):
    folder, found = audited
    assert main(["audit-invariance", str(folder / "tiny_smoke.h5"), "--out", str(folder / "tiny_smoke" / "audit"),
                 "--transforms", "rescale", "--alphas", "10", "--methods", "sharpness", "--no-control"]) == 0
    assert "transformed minima" in capsys.readouterr().out
    with Store(folder / "tiny_smoke.h5", "r") as store:
        again = store.read_audit("tiny_smoke")
    old = {(r["measure"], r["minimum"]): r["transformed"] for r in found["rows"] if r["transform"] == "rescale ×10"}
    assert again["rows"] and all(old[(r["measure"], r["minimum"])] == r["transformed"] for r in again["rows"])


def test_audit_settings_are_checked_and_recorded():
    config = tomllib.loads(_TOML)
    plan = harness.plan(config, "smoke")
    assert Benchmark.from_dict(plan.to_record().to_dict()).audit == plan.audit
    assert [t.label for t in transforms(plan.audit)] == ["rescale ×10", "permute units", "scale before BN ×10",
                                                         "control (seeds shifted)"]
    with pytest.raises(ConfigError, match="transforms"):
        harness.plan({**config, "audit": {"transforms": ["mirror"]}}, "smoke")
    with pytest.raises(ConfigError, match="not methods of this benchmark"):
        harness.plan({**config, "audit": {"methods": ["nope"]}}, "smoke")
    with pytest.raises(ConfigError, match="alphas"):
        harness.plan({**config, "audit": {"alphas": [-1.0]}}, "smoke")
    assert AuditSettings().transforms == ("rescale", "scale_before_norm", "permute", "permute_heads")
    assert harness.plan({**config, "audit": {}}, "smoke").audit == AuditSettings()  # an empty [audit]: defaults
    assert harness.plan({k: v for k, v in config.items() if k != "audit"}, "smoke").audit is None
    choices = next(a for a in parser()._subparsers._group_actions[0].choices["audit-invariance"]._actions
                   if a.dest == "transforms").choices
    assert tuple(choices) == AUDIT_TRANSFORMS  # the command line's list (kept literal: a light import) is the same


def test_a_study_whose_original_minima_changed_starts_the_scratch_stores_afresh(audited, tmp_path):
    """Another benchmark of the same name (the minima retrained longer) audited into the same
    folder: its transformed minima are its own, not the first study's read back."""
    folder, found = audited
    (tmp_path / "tiny.toml").write_text(_TOML.replace("epochs = 3", "epochs = 4"), encoding="utf-8")
    assert main(["run", str(tmp_path / "tiny.toml"), "--scale", "smoke", "--out", str(tmp_path), "--figures",
                 "none"]) == 0
    with Store(tmp_path / "tiny_smoke.h5", "a") as store:
        originals = {m.index: m.theta for m in store.minima(SUBJECT)}
        audit(store, folder / "tiny_smoke" / "audit", settings=AuditSettings(transforms=("rescale",), alphas=(10.0,),
                                                                              methods=("sharpness",), control=False),
              progress=False, figures="none")
    with Store(folder / "tiny_smoke" / "audit" / "scratch" / "tiny_smoke" / "rescale_10.h5", "r") as scratch:
        for minimum in scratch.minima(SUBJECT):
            assert minimum.recipe["audit_source_sha1"] == digest(originals[minimum.index])
            assert np.allclose(minimum.theta[:64 * 12], 10 * originals[minimum.index][:64 * 12])


def test_a_function_of_a_flat_vector_has_nothing_to_transform_and_its_report_is_still_written(tmp_path):
    (tmp_path / "camel.toml").write_text('name = "camel"\nproblem = "three_hump_camel"\nseeds = [0]\n'
                                         '[minima]\nepochs = 1\nsteps_per_epoch = 5\n[methods.hessian]\nk = 1\n'
                                         '[audit]\n', encoding="utf-8")
    assert main(["run", str(tmp_path / "camel.toml"), "--scale", "smoke", "--out", str(tmp_path), "--figures",
                 "none"]) == 0
    with Store(tmp_path / "camel_smoke.h5", "r") as store:
        found = store.read_audit("camel_smoke")
    assert not found["rows"] and any("no transformation applies" in note for note in found["notes"])
    assert (tmp_path / "camel_smoke" / "report.md").is_file()


def test_verdicts_count_a_change_from_zero_and_a_value_turned_nan_as_moving():
    rows = [{"measure": m, "transform": t, "subject": "s", "minimum": 0, "original": a, "transformed": b,
             "relative_change": relative_change(a, b)}
            for m, t, a, b in [("m.zero", "rescale ×10", 0.0, 0.3), ("m.nan", "rescale ×10", 1.0, float("nan")),
                               ("m.same", "rescale ×10", 2.0, 2.0), ("m.lost", "rescale ×10", float("nan"), 1.0)]]
    verdicts = {r["measure"]: r["verdict"] for r in summarize({"rows": rows})}
    assert verdicts == {"m.zero": "moves", "m.nan": "breaks", "m.same": "unchanged", "m.lost": "undefined"}
    assert table({"rows": rows, "checks": []}, "t").rows[2][-1] == "invariant"
    assert all(row[-1].startswith("moves") for i, row in enumerate(table({"rows": rows, "checks": []}, "t").rows)
               if i != 2)


def test_relative_change_handles_zero_and_non_finite_values():
    assert relative_change(2.0, 3.0) == 0.5 and relative_change(-2.0, -3.0) == -0.5
    assert relative_change(0.0, 0.0) == 0.0 and relative_change(0.0, 1.0) == math.inf
    assert math.isnan(relative_change(float("nan"), 1.0))
