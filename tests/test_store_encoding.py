"""Every store node is read by the reader registered for its encoding-type and encoding-version:
a store holding a node this lossatlas does not know (an unknown type, a future version, a group
where the layout has none) is refused when opened, naming the HDF5 path, what it found and what
it reads, and left untouched; nodes of older versions are read by their own readers."""
import hashlib

import h5py
import numpy as np
import pytest

from lossatlas import Minimum, Result, Store, StoreError
from lossatlas.store import Part, encoding

THETA = np.array([1.25, -2.5])
SAMPLE = "subjects/f/samples/grid/k"
NODES = {  # every kind of node a store holds, where it holds it
    "": "store",
    "subjects": "subjects",
    "subjects/f": "subject",
    "subjects/f/minima": "minima",
    "subjects/f/minima/000": "minimum",
    "subjects/f/samples": "samples",
    "subjects/f/samples/grid": "sample-kind",
    "subjects/f/samples/grid/k": "sample",
    "subjects/f/samples/grid/k/0": "part",
    "subjects/f/surface": "surface",
    "subjects/f/results": "results",
    "subjects/f/results/m": "method-results",
    "subjects/f/results/m/k": "result",
    "subjects/f/results/m/k/metrics": "metrics",
    "subjects/f/results/m/k/arrays": "arrays",
    "benchmarks": "benchmarks",
    "benchmarks/study": "benchmark",
    "audits": "audits",
    "audits/study": "audit",
}


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(store: Store) -> None:
    store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
    store.write_minimum("f", Minimum(0, THETA, np.zeros(0), 5, {"lr": 0.1}, {"eval_loss": 0.375}, 2.5,
                                     {"device": "cpu"}, trajectory=np.ones((3, 2))))
    root = store.sample_root(SAMPLE, config={"n": 1})
    store.write_header(root, {"center": np.zeros(2)})
    store.write_part(root, "0", Part({"loss": np.arange(3.0)}, {"n": 3}))
    store.write_header(store.sample_root("subjects/f/surface", "surface", {"kind": "surface"}), {"x": np.arange(2.0)})
    store.write_result(Result("m", "f", {"a": 1}, {"x": 1.5}, {"v": np.arange(3.0)}, seed=2, versions={"t": "1"},
                              created="now", wall_time_s=0.5, key="k", analyzer={"scope": "subject"},
                              runtime={"device": "cpu"}))
    store.write_benchmark("study", {"keys": ["k"]})
    store.write_audit("study", {"rows": [{"measure": "m.x", "relative_change": 0.5}]})


def _read(store: Store) -> tuple:
    (result,) = store.results("f")
    (minimum,) = store.minima("f")
    return (store.subjects(), store.subject_config("f"), result.params, result.metrics, result.arrays["v"].tolist(),
            result.seed, result.analyzer, result.runtime, minimum.theta.tolist(), minimum.recipe, minimum.runtime,
            minimum.wall_time_s, store.trajectory("f", 0).tolist(), _lists(store.read_header(f"{SAMPLE}")),
            store.read_part(f"{SAMPLE}/0").attrs, _lists(store.read_header("subjects/f/surface")),
            store.benchmarks(), store.read_benchmark("study"), store.audits(), store.read_audit("study"))


def _lists(arrays: dict) -> dict:
    return {name: value.tolist() for name, value in arrays.items()}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("encoding") / "good.h5"
    with Store(path) as store:
        _write(store)
    return path


@pytest.fixture
def copy(good, tmp_path):
    path = tmp_path / "copy.h5"
    path.write_bytes(good.read_bytes())
    return path


def _stamps(path) -> dict:
    with h5py.File(path, "r") as file:
        found = {"": (file.attrs["encoding-type"], file.attrs["encoding-version"])}
        file.visititems(lambda name, node: found.__setitem__(name, (
            node.attrs["encoding-type"], node.attrs["encoding-version"])) if isinstance(node, h5py.Group) else None)
    return found


def test_every_node_kind_is_written_at_its_current_version_and_reads_back(good):
    stamps = _stamps(good)
    assert {name: kind for name, (kind, _) in stamps.items()} == NODES
    assert {kind: version for kind, version in stamps.values()} == {kind: encoding.current(kind) for kind in
                                                                      set(NODES.values())}
    assert set(NODES.values()) == set(encoding.registered())  # no type goes untested, none is written unregistered
    with Store(good, "r") as store:
        back = _read(store)
    assert back[1] == {"kind": "function"} and back[3] == {"x": 1.5} and back[6] == {"scope": "subject"}
    assert back[11] == 2.5 and back[-3] == {"keys": ["k"]} and back[-1]["rows"][0]["relative_change"] == 0.5


def _refused(path, *patterns):
    before = _digest(path)
    for mode in ("r", "a"):
        with pytest.raises(StoreError) as caught:
            Store(path, mode)
        for pattern in patterns:
            assert pattern in str(caught.value), (pattern, str(caught.value))
        assert "The file was not modified" in str(caught.value)
    assert _digest(path) == before
    return str(caught.value)


@pytest.mark.parametrize("node", list(NODES))
def test_a_node_of_a_future_version_is_refused_naming_its_path(copy, node):
    kind = NODES[node]
    with h5py.File(copy, "a") as file:
        (file[node] if node else file).attrs["encoding-version"] = "9"
    known = ", ".join(repr(v) for v in encoding.known_versions(kind))
    _refused(copy, f"{copy}:/{node} is a {kind!r} node of encoding-version '9'; ",
             f"this lossatlas reads {kind!r} nodes of encoding-version {known}. Upgrade lossatlas")


@pytest.mark.parametrize("node", [n for n in NODES if n])
def test_a_node_of_an_unknown_type_is_refused_naming_its_path(copy, node):
    with h5py.File(copy, "a") as file:
        file[node].attrs["encoding-type"] = "hologram"
    _refused(copy, f"{copy}:/{node} is a 'hologram' node, expected {NODES[node]!r} (it says encoding-version")


@pytest.mark.parametrize("where,stamp", [
    ("subjects/f/holograms", {"encoding-type": "hologram", "encoding-version": "1"}),  # a group the layout lacks
    ("subjects/f/results/m/k/arrays/extra", {}),  # an unstamped group where only datasets belong
    ("benchmarks/study/extra", {"encoding-type": "result", "encoding-version": "2"}),  # a known type misplaced
])
def test_a_group_where_the_layout_has_none_is_refused(copy, where, stamp):
    with h5py.File(copy, "a") as file:
        file.create_group(where).attrs.update(stamp)
    message = _refused(copy, f"{copy}:/{where} is a {stamp.get('encoding-type')!r} node of encoding-version "
                             f"{stamp.get('encoding-version')!r} inside a ")
    assert "written by another program or a newer lossatlas" in message


def test_a_version_no_lossatlas_wrote_is_refused_as_damaged_or_foreign(copy):
    with h5py.File(copy, "a") as file:
        file["subjects/f"].attrs["encoding-version"] = "0"
    _refused(copy, f"{copy}:/subjects/f is a 'subject' node of encoding-version '0'", "damaged or foreign")


def test_nodes_are_dispatched_on_their_stamp_when_read(tmp_path):
    """A store opened without the walk (in memory) still refuses a node it cannot read, when read."""
    with Store.memory() as store:
        _write(store)
        store.file["subjects/f/results/m/k"].attrs["encoding-version"] = "9"
        with pytest.raises(StoreError, match=r":/subjects/f/results/m/k is a 'result' node of encoding-version '9'"):
            store.read_result("f", "m", "k")
        store.file["subjects"].attrs["encoding-type"] = "hologram"
        with pytest.raises(StoreError, match=r":/subjects is a 'hologram' node, expected 'subjects'"):
            store.subjects()


def _as_version_1(file: h5py.File) -> None:
    """The store as lossatlas wrote it before version 2: no checksums, no shapes, and results and
    minima without the runtime (and minima without the wall time) added during version 1."""
    left_out = {"result": ("shapes", "runtime", "analyzer"), "minimum": ("runtime", "wall_time_s")}

    def strip(_, node):
        if isinstance(node, h5py.Group) and node.attrs["encoding-version"] == "2":
            node.attrs["encoding-version"] = "1"
            for key in [k for k in node.attrs if k.startswith("checksum")] + list(left_out.get(
                    node.attrs["encoding-type"], ())):
                del node.attrs[key]

    file.visititems(strip)


def test_version_1_nodes_are_read_by_their_own_readers(good, copy):
    with Store(good, "r") as store:
        current = _read(store)
    with h5py.File(copy, "a") as file:
        _as_version_1(file)
    assert {version for _, version in _stamps(copy).values()} == {"1"}
    with Store(copy, "r") as store:
        old = _read(store)
    assert old[6] == old[7] == old[10] == {} and np.isnan(old[11])  # what version 1 did not always record
    assert [v for i, v in enumerate(old) if i not in (6, 7, 10, 11)] == [
        v for i, v in enumerate(current) if i not in (6, 7, 10, 11)]


def test_version_1_nodes_with_checksums_are_still_checked(copy):
    with h5py.File(copy, "a") as file:
        file["subjects/f/results/m/k"].attrs["encoding-version"] = "1"
        file["subjects/f/results/m/k/metrics"].attrs["x"] = 2.5
    with Store(copy, "r") as store, pytest.raises(StoreError, match="does not match the checksum"):
        store.results("f")


@pytest.mark.parametrize("node,attr,message", [
    ("subjects/f/results/m/k", "checksum", "its checksum attribute, which its encoding-version '2' always carries"),
    ("subjects/f/results/m/k", "shapes", "KeyError: 'shapes'"),
    ("subjects/f/minima/000", "checksum-trajectory", "its checksum-trajectory attribute"),
    ("subjects/f", "checksum", "its checksum attribute"),
    ("benchmarks/study", "checksum", "its checksum attribute"),
])
def test_a_version_2_node_without_what_version_2_always_carries_is_damaged(copy, node, attr, message):
    """Stripping a checksum must not switch its check off."""
    with h5py.File(copy, "a") as file:
        del file[node].attrs[attr]
    with Store(copy, "r") as store, pytest.raises(StoreError, match=f"{copy}.*{message}"):
        _read(store)


def test_a_benchmark_record_that_cannot_be_written_leaves_the_earlier_one(copy):
    with Store(copy) as store:
        with pytest.raises(TypeError):
            store.write_benchmark("study", {"keys": [object()]})  # not JSON: fails while serialising
        assert store.read_benchmark("study") == {"keys": ["k"]}
    with Store(copy, "r") as store:
        assert store.read_benchmark("study") == {"keys": ["k"]}


def test_a_damaged_earlier_benchmark_record_is_a_store_error_and_stays(copy):
    with h5py.File(copy, "a") as file:
        del file["benchmarks/study"].attrs["created"]
    with Store(copy) as store, pytest.raises(StoreError, match=r":/benchmarks/study is damaged: its created"):
        store.write_benchmark("study", {"keys": ["k2"]})
    with h5py.File(copy, "r") as file:
        assert file["benchmarks/study"].attrs["record"] == '{"keys":["k"]}'


def test_a_store_with_a_foreign_node_opens_unvalidated_read_only_and_its_tree_marks_it(copy):
    with h5py.File(copy, "a") as file:
        file.create_group("subjects/f/holograms/inner").attrs.update({"encoding-type": "hologram"})
        file["subjects/f/holograms"].attrs.update({"encoding-type": "hologram", "encoding-version": "1"})
    before = _digest(copy)
    with pytest.raises(StoreError, match="holograms"):
        Store(copy, "r")
    with pytest.raises(StoreError, match="read only"):
        Store(copy, "a", validate=False)
    with Store(copy, "r", validate=False) as store:
        lines = store.tree().splitlines()
    marked = [line for line in lines if "NOT READABLE" in line]
    assert len(marked) == 1 and marked[0].strip().startswith("holograms/")  # what lies inside is not marked again
    assert "is a 'hologram' node of encoding-version '1' inside a 'subject' node" in marked[0]
    assert any(line.strip().startswith("inner/") for line in lines) and any("minima/" in line for line in lines)
    assert _digest(copy) == before


def test_registration_reads_the_stored_subject_through_its_encoding(copy):
    """A stored subject whose config no longer matches its checksum is damage, not another config."""
    with h5py.File(copy, "a") as file:
        file["subjects/f"].attrs["config"] = '{"kind":"other"}'
    with Store(copy) as store, pytest.raises(StoreError, match=r":/subjects/f is damaged"):
        store.add_subject("f", {"kind": "function"}, np.zeros(2), np.zeros(0))
