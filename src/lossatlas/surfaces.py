"""Landscapes users already have: 2-D loss surfaces computed elsewhere, imported into a store.

Formats (``read_surface``):

* tomgoldstein/loss-landscape (Li et al. 2018) HDF5 surface files: ``xcoordinates``,
  ``ycoordinates`` and one array per quantity (``train_loss``, ``train_acc``, ``test_loss``,
  ``test_acc``). That code fills its arrays in the order of ``np.meshgrid(x, y)`` raveled,
  so value k lies at (x[k % nx], y[k // nx]); here ``loss[i, j]`` is the value at (x[i], y[j]).
  It starts every array at -1 and its scheduler treats values <= 0 as not yet computed: such
  points become NaN (counted, never a false minimum: the merge tree reads NaN as +inf).
  Accuracies stay in its percent.
* numpy: ``.npy`` (the loss grid alone, ``loss[i, j]`` at (x[i], y[j]); coordinates are the
  indices) or ``.npz`` with ``loss`` and optionally ``x``, ``y``, ``accuracy``. NaN marks missing
  points.

An imported surface is a subject of its own (``SurfaceSubject``) whose only content is the grid:
the merge-tree analyzer reads it (``StoredSurface``) instead of sampling one, and the report and
exports treat its results like any other. Analyzers that need the loss as a function of the
parameters (Hessian, sharpness, ...) refuse it with a ConfigError.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .errors import ConfigError, StoreError
from .provenance import digest
from .sampling import Request, Sample
from .subjects import Subject

SURFACE_ARRAYS = ("x", "y", "loss", "accuracy")


class SurfaceSubject(Subject):
    """A 2-D loss surface given as values on a grid (no model behind it)."""

    def __init__(self, name: str, x, y, loss, accuracy=None, source: str = "", quantity: str = "loss"):
        _check_subject_name(name)
        self.name = name
        self.x, self.y = _real(x, f"{name!r}: x"), _real(y, f"{name!r}: y")
        for axis, values in (("x", self.x), ("y", self.y)):
            if values.ndim != 1:
                raise ConfigError(f"Surface {name!r}: the {axis} coordinates have shape {values.shape}; they must be "
                                  "one number per grid row / column (1-D).")
            if not np.isfinite(values).all() or (len(values) > 1 and not (np.diff(values) > 0).all()):
                raise ConfigError(f"Surface {name!r}: the {axis} coordinates must be finite and strictly "
                                  "increasing.")
        self.grid_loss = _real(loss, f"{name!r}: the loss")
        self.grid_accuracy = None if accuracy is None else _real(accuracy, f"{name!r}: the accuracy")
        if self.grid_loss.shape != (len(self.x), len(self.y)) or self.grid_loss.ndim != 2:
            raise ConfigError(f"Surface {name!r}: loss has shape {self.grid_loss.shape}; with {len(self.x)} x and "
                              f"{len(self.y)} y coordinates it must be ({len(self.x)}, {len(self.y)}).")
        if self.grid_accuracy is not None and self.grid_accuracy.shape != self.grid_loss.shape:
            raise ConfigError(f"Surface {name!r}: accuracy has shape {self.grid_accuracy.shape}, the loss "
                              f"{self.grid_loss.shape}.")
        if min(self.grid_loss.shape) < 2:
            raise ConfigError(f"Surface {name!r} has shape {self.grid_loss.shape}: a merge tree needs a 2-D grid "
                              "(a 1-D loss-landscape file has no ycoordinates).")
        self.source, self.quantity = source, quantity
        self.theta0 = torch.zeros(2, dtype=torch.float64)
        self.buffers0 = torch.zeros(0, dtype=torch.float64)

    def config(self) -> dict:
        """The values identify the surface; the file name does not (a renamed copy is the same)."""
        return {"kind": "surface", "quantity": self.quantity,
                "shape": list(self.grid_loss.shape), "loss_sha1": digest(np.nan_to_num(self.grid_loss, nan=-1.0)),
                "x_sha1": digest(self.x), "y_sha1": digest(self.y)}

    @property
    def surface(self) -> dict[str, np.ndarray]:
        arrays = {"x": self.x, "y": self.y, "loss": self.grid_loss}
        if self.grid_accuracy is not None:
            arrays["accuracy"] = self.grid_accuracy
        return arrays

    def _no_model(self, *args, **kwargs):
        raise ConfigError(f"{self.name!r} is an imported surface: it holds loss values on a grid, not a model, so "
                          "only grid analyzers (merge-tree) apply to it.")

    loss = grad = grads = hvp = evaluate_many = init_theta = train = _no_model


def read_surface(path, key: str = "train_loss") -> dict:
    """x, y, loss (NaN where missing), accuracy (or None) and what was read, from a
    loss-landscape HDF5 file or a numpy file; see the module docstring for the layouts."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"No surface file {path}.")
    if path.suffix in (".npy", ".npz"):
        return _read_numpy(path)
    return _read_loss_landscape(path, key)


def _read_loss_landscape(path: Path, key: str) -> dict:
    try:
        with h5py.File(path, "r") as f:
            if "xcoordinates" not in f or key not in f:
                raise ConfigError(f"{path} is not a loss-landscape surface file with {key!r}: it holds {sorted(f)} "
                                  "(needs xcoordinates, ycoordinates and the quantity; choose it with --key).")
            if "ycoordinates" not in f:
                raise ConfigError(f"{path} is a 1-D loss-landscape file (no ycoordinates): a merge tree needs 2-D.")
            x, y = _dataset(f, "xcoordinates", path), _dataset(f, "ycoordinates", path)
            values = _dataset(f, key, path)
            accuracy_key = key.replace("loss", "acc")
            accuracy = _dataset(f, accuracy_key, path) if accuracy_key != key and accuracy_key in f else None
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"{path} is not a readable HDF5 file ({err}).") from err
    x, y = _real(x, f"{path}: xcoordinates"), _real(y, f"{path}: ycoordinates")
    values = _real(values, f"{path}: {key}")
    accuracy = None if accuracy is None else _real(accuracy, f"{path}: {accuracy_key}")
    if x.ndim != 1 or y.ndim != 1:
        raise ConfigError(f"{path}: xcoordinates and ycoordinates must be 1-D; they have shapes {x.shape} and "
                          f"{y.shape}.")
    for name, array in ((key, values), ("accuracy", accuracy)):
        if array is not None and array.size != len(x) * len(y):
            raise ConfigError(f"{path}: {name} has {array.size} values for {len(x)} x {len(y)} coordinates.")

    def on_grid(raveled):  # loss-landscape's order: meshgrid(x, y) raveled -> (ny, nx); ours is [x, y]
        return raveled.reshape(len(y), len(x)).T

    loss = on_grid(values.ravel())
    unfinished = loss <= 0  # loss-landscape's own rule for points it has not computed (they start at -1)
    loss = np.where(unfinished | ~np.isfinite(loss), np.nan, loss)
    if accuracy is not None:
        accuracy = np.where(unfinished, np.nan, on_grid(accuracy.ravel()))
    return {"x": x, "y": y, "loss": loss, "accuracy": accuracy, "quantity": key,
            "unfinished": int(unfinished.sum())}


def _read_numpy(path: Path) -> dict:
    try:
        found = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
        if path.suffix == ".npy":
            arrays = {"loss": found}
        else:
            with found:
                arrays = {}
                for name in found.files:  # the declared size is checked before anything is read
                    _check_size(_npz_shape(found, name), f"{path}: {name}")
                    arrays[name] = found[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{path} is not a readable numpy file ({err}).") from err
    for name, array in arrays.items():
        _check_size(np.shape(array), f"{path}: {name}")
        arrays[name] = _real(array, f"{path}: {name}")
    if "loss" not in arrays:
        raise ConfigError(f"{path} holds {sorted(arrays)}; a surface needs 'loss' (and optionally x, y, accuracy).")
    loss = np.asarray(arrays["loss"], dtype=float)
    if loss.ndim != 2:
        raise ConfigError(f"{path}: the loss has shape {loss.shape}; a surface is a 2-D grid, loss[i, j] at "
                          "(x[i], y[j]).")
    x = np.asarray(arrays.get("x", np.arange(loss.shape[0])), dtype=float)
    y = np.asarray(arrays.get("y", np.arange(loss.shape[1])), dtype=float)
    accuracy = arrays.get("accuracy")
    return {"x": x, "y": y, "loss": np.where(np.isfinite(loss), loss, np.nan), "quantity": "loss",
            "accuracy": None if accuracy is None else np.asarray(accuracy, dtype=float), "unfinished": 0}


def surface_subject(path, name: str | None = None, key: str = "train_loss") -> SurfaceSubject:
    """The surface in ``path`` as a subject, every check done: nothing is written yet."""
    found = read_surface(path, key)
    return SurfaceSubject(name or Path(path).stem, found["x"], found["y"], found["loss"], found["accuracy"],
                          source=Path(path).name, quantity=found["quantity"])


def import_surface(store, path, name: str | None = None, key: str = "train_loss") -> SurfaceSubject:
    """Read a surface file into ``store`` as subject ``name`` (default: the file's stem); the same
    name with another surface is refused, the same surface again (from any file name) is a no-op."""
    subject = path if isinstance(path, SurfaceSubject) else surface_subject(path, name, key)
    store.register(subject)
    root = store.sample_root(f"subjects/{subject.name}/surface", "surface",
                             {**subject.config(), "source": subject.source})
    if not store.has_header(root.name):
        store.write_header(root, subject.surface)
    return subject


def load_surface(store, name: str) -> SurfaceSubject:
    """The surface subject ``name`` as ``import_surface`` stored it."""
    config = store.subject_config(name) if name in store.subjects() else None
    if not config or config.get("kind") != "surface":
        raise StoreError(f"{store.path} holds no imported surface {name!r}; its subjects: {store.subjects()}.")
    path = f"subjects/{name}/surface"
    arrays = store.read_header(path)
    source = store.sample_config(path).get("source", "")
    return SurfaceSubject(name, arrays["x"], arrays["y"], arrays["loss"], arrays.get("accuracy"),
                          source=source, quantity=config["quantity"])


MAX_POINTS = 10**8  # 800 MB of float64: a grid beyond this is no loss surface anyone computed
MAX_NAME = 100  # characters: a subject name becomes part of figure and export file names


def _check_subject_name(name) -> None:
    if not isinstance(name, str) or not name or "/" in name or name != name.strip() or name.startswith(".") \
            or len(name) > MAX_NAME or not name.isprintable():
        raise ConfigError(f"Invalid surface name {str(name)[:MAX_NAME]!r}: use 1 to {MAX_NAME} printable characters, "
                          "without '/' or surrounding spaces (choose it with --name).")


def _check_size(shape, what: str) -> None:
    if int(np.prod(shape, dtype=float)) > MAX_POINTS:
        raise ConfigError(f"{what} declares shape {tuple(shape)}: more than {MAX_POINTS:.0e} values; a surface of "
                          "that size is not a loss grid this import can hold.")


def _dataset(file, name: str, path: Path) -> np.ndarray:
    """A dataset of the file, its size checked before it is read (a group or a link there is refused)."""
    node = file.get(name)
    if not isinstance(node, h5py.Dataset):
        raise ConfigError(f"{path}: {name!r} is a {type(node).__name__}, not an array of numbers.")
    _check_size(node.shape, f"{path}: {name}")
    return node[()]


def _npz_shape(npz, name: str) -> tuple:
    """The shape an ``.npz`` member declares, read from its header without loading it."""
    with npz.zip.open(name + ".npy") as member:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(member)[0]


def _real(values, what: str) -> np.ndarray:
    """Real numbers as float64; strings, complex numbers, objects and scalars-where-arrays-belong
    are refused (``np.asarray(..., float)`` would raise, or drop imaginary parts silently)."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{what} holds {array.dtype} values; a surface needs real numbers.")
    if array.ndim == 0:
        raise ConfigError(f"{what} is a single number; it must be an array.")
    return array.astype(float)


@dataclass(frozen=True)
class StoredSurface(Request):
    """The grid of an imported surface, in the shape of a ``Grid`` sample (x, y, loss, accuracy;
    the cosine of its directions is unknown: NaN)."""

    kind = "surface"

    def check(self, subject):
        if not isinstance(subject, SurfaceSubject):
            raise ConfigError(f"{subject.name!r} is not an imported surface (lossatlas import-surface).")

    def read(self, store, subject, inputs) -> Sample:
        arrays = {**subject.surface, "cosine": np.array(np.nan)}
        return Sample(self.kind, "", subject.config(), arrays)
