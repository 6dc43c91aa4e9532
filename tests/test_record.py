"""The typed benchmark record: its JSON round trip, records stored before it had a version, and
records of a newer lossatlas refused with a message that says what to do."""
import json

import pytest

from lossatlas import Store
from lossatlas.errors import StoreError
from lossatlas.record import RECORD_VERSION, Benchmark, Claim, Method, ReportSettings, Run

_RECORD = Benchmark(
    name="b", scale="smoke", description="d", problem="mlp", seeds=[0, 1], variants={"depth": [2, 3]},
    subjects=[{"depth": 2, "n_train": 20}, {"depth": 3, "n_train": 20}], recipe={"lr": 0.1},
    methods={"mt": Method("merge-tree", {"resolution": 5}),
             "gn": Method("gradient-norm", {}, reference="plugins.gradient_norm:GradientNorm")},
    report=ReportSettings(factor="depth", error="test_error", correction="bh", names={"mt.n_saddles": "saddles"},
                          claims=(Claim(metric="mt.n_saddles", direction="increasing", text="t", where={"depth": 2}),)),
    sensitivity={"mt": {"seed=1": {"resolution": 5, "seed": 1}}},
    runs=(Run(subject="mlp2", variant={"depth": 2}, seed=0, minimum=0, results={"mt": "abc"},
              sensitivity={"mt": {"seed=1": "def"}}),))

# a record as lossatlas wrote it before records had a version: claims and settings as the config gave them
_UNVERSIONED = {
    "name": "b", "scale": "smoke", "description": "d", "problem": "mlp", "seeds": [0], "variants": {"depth": [2]},
    "subjects": [{"depth": 2}], "recipe": {"lr": 0.1}, "device": "auto", "sensitivity": {},
    "methods": {"mt": {"analyzer": "merge-tree", "params": {"resolution": 5}}},
    "report": {"factor": "depth", "error": None, "claims": [{"metric": "mt.n_saddles", "direction": "increasing",
                                                              "text": "t"}]},
    "runs": [{"subject": "mlp2", "variant": {"depth": 2}, "seed": 0, "minimum": 0, "results": {"mt": "abc"}}]}


def test_a_record_round_trips_through_json_with_its_version():
    stored = json.loads(json.dumps(_RECORD.to_dict()))
    assert stored["record_version"] == RECORD_VERSION == 1
    assert Benchmark.from_dict(stored) == _RECORD


def test_a_record_without_a_version_is_read_as_the_current_layout():
    record = Benchmark.from_dict(_UNVERSIONED)
    assert record.methods["mt"] == Method("merge-tree", {"resolution": 5})
    claim, = record.report.claims
    assert (claim.source, claim.where, record.report.claim_factor(claim)) == ("", {}, "depth")
    assert (record.report.correction, record.report.permutations, record.checkpoints) == ("holm", 10_000, 0)
    assert record.runs[0].sensitivity == {} and record.runs[0].results == {"mt": "abc"}


@pytest.mark.parametrize("change, message", [
    ({"record_version": 2}, "has record_version 2; this lossatlas reads version 1: upgrade lossatlas to read it."),
    ({"record_version": "1"}, "has record_version '1'; this lossatlas reads version 1."),
    ({"colour": 1}, "unknown field(s) ['colour']"),
    ({"runs": [{"subject": "s"}]}, "runs[0] is not a benchmark record of version 1: missing field(s)"),
    ({"report": []}, "report must be a JSON object; got list."),
])
def test_a_record_of_another_layout_is_refused_with_a_clear_error(change, message):
    with pytest.raises(StoreError) as err:
        Benchmark.from_dict({**_UNVERSIONED, **change}, "study.h5: benchmark 'b'")
    assert message in str(err.value) and str(err.value).startswith("study.h5: benchmark 'b'")


def test_a_report_of_a_newer_record_says_to_upgrade(tmp_path):
    from lossatlas.report import write_report

    with Store(tmp_path / "s.h5") as store:
        store.write_benchmark("b_smoke", {**_RECORD.to_dict(), "record_version": RECORD_VERSION + 1})
        with pytest.raises(StoreError, match=r"s\.h5: benchmark 'b_smoke' has record_version 2; this lossatlas "
                                             r"reads version 1: upgrade lossatlas"):
            write_report(store, tmp_path / "report", figures=False)
    assert not (tmp_path / "report" / "report.md").exists()
