"""Datasets: CIFAR-10 from the standard python batches, MNIST and Fashion-MNIST from the
standard IDX files, and scikit-learn's digits offline.

CIFAR-10 cannot be fetched at run time; ``download_cifar10`` is the documented, checksummed
way for users who are online. Everything returns ((x_train, y_train), (x_test, y_test)) as
float32 image tensors (N, C, H, W) normalized per channel with training-set statistics, and
int64 labels.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
DEFAULT_DATA_ROOT = Path(os.environ.get("LOSSATLAS_DATA", "data"))  # relative to the working directory
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)

Split = tuple[torch.Tensor, torch.Tensor]


def digits(test_fraction: float = 0.25, split_seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 8x8 handwritten digits (1797 real images, 1 channel, 10 classes),
    with a fixed stratified train/test split; pixels standardized with train statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    images = images.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    mean, std = x_tr.mean(), x_tr.std()
    return _tensors((x_tr - mean) / std, y_tr), _tensors((x_te - mean) / std, y_te)


def cifar10(root: str | Path | None = None) -> tuple[Split, Split]:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (default root: $LOSSATLAS_DATA or ./data)."""
    folder = Path(root or DEFAULT_DATA_ROOT) / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: expected the python batches {missing} in {folder}.\n"
            "Download it (about 170 MB, checksummed) with\n"
            "    python -c \"from lossatlas.problems.data import download_cifar10; "
            f"download_cifar10('{folder.parent}')\"\n"
            "or unpack cifar-10-python.tar.gz there yourself; the offline default dataset is 'digits'."
        )
    batches = [_read_batch(folder / n) for n in names]
    x_tr = np.concatenate([b[0] for b in batches[:5]])
    y_tr = np.concatenate([b[1] for b in batches[:5]])
    x_te, y_te = batches[5]
    mean = np.array(_CIFAR_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.array(_CIFAR_STD, dtype=np.float32)[None, :, None, None]
    return _tensors((x_tr - mean) / std, y_tr), _tensors((x_te - mean) / std, y_te)


MNIST_FOLDERS = {"mnist": "mnist", "fmnist": "fashion-mnist"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def mnist(root: str | Path | None = None, kind: str = "mnist") -> tuple[Split, Split]:
    """MNIST (``kind="mnist"``) or Fashion-MNIST (``"fmnist"``) from the four standard IDX files
    (gzipped or not) in ``<root>/mnist`` or ``<root>/fashion-mnist``, as Barannikov et al. 2025
    §4.1 use them: 60 000 training and 10 000 test 28x28 images, pixels standardized with the
    training set's mean and std."""
    folder = Path(root or DEFAULT_DATA_ROOT) / MNIST_FOLDERS[kind]
    found = {name: next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
             for name in _IDX_FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{'MNIST' if kind == 'mnist' else 'Fashion-MNIST'} not found: expected the IDX files {missing} "
            f"(optionally .gz) in {folder}. Download the four files of the standard distribution (e.g. from "
            "the PyTorch mirror https://ossci-datasets.s3.amazonaws.com/mnist/ or github.com/zalandoresearch/"
            "fashion-mnist) into that folder; the offline default dataset is 'digits'.")
    x_tr, y_tr, x_te, y_te = (_read_idx(found[name]) for name in _IDX_FILES)
    for images, labels, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{folder}: the {split} files hold images of shape {images.shape} and labels of shape "
                            f"{labels.shape}; expected (N, H, W) and (N,).")
        if not len(images):
            raise DataError(f"{found[f'{split}-images-idx3-ubyte']} holds no images.")
        if labels.max() > 9:  # both datasets have ten classes
            raise DataError(f"{found[f'{split}-labels-idx1-ubyte']}: label {int(labels.max())} is not a class of "
                            "0-9.")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{found[_IDX_FILES[0]]} holds {x_tr.shape[1]}x{x_tr.shape[2]} images but "
                        f"{found[_IDX_FILES[2]]} {x_te.shape[1]}x{x_te.shape[2]}; both splits need one size.")
    x_tr, x_te = (x[:, None].astype(np.float32) / 255.0 for x in (x_tr, x_te))
    mean, std = x_tr.mean(), x_tr.std()
    return _tensors((x_tr - mean) / std, y_tr), _tensors((x_te - mean) / std, y_te)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's format: 0, 0, type 0x08, the number of dimensions,
    then each dimension as a big-endian int32, then the data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:  # a truncated .gz ends in EOFError
        raise DataError(f"{path} could not be read (truncated or corrupt?): {type(err).__name__}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (its header is {data[:4]!r}).")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: the header announces {ndim} dimensions, but the file ends after {len(data)} bytes, "
                        "inside the header (truncated, or not an IDX file).")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: the header says {shape} ({int(np.prod(shape))} bytes), the file holds {body.size}.")
    return body.reshape(shape)


# What a CIFAR-10 python batch may reference: numpy's array and scalar constructors (and
# _codecs.encode, which protocol-2 pickles written by Python 3 use for bytes), nothing else.
_BATCH_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
    (f"{prefix}.{module}", name) for prefix in ("numpy.core", "numpy._core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickling runs whatever callables a file names; a batch file in data/ must not run code,
    so only numpy's array constructors are resolved."""

    def find_class(self, module, name):
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                         "lists and bytes (a pickle naming other callables could run code)")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}).") from err
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels.")
    return data.astype(np.float32) / 255.0, labels


def download_cifar10(root: str | Path = DEFAULT_DATA_ROOT) -> Path:
    """Download and unpack CIFAR-10 into ``root`` after checking its MD5 (needs internet)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    if not archive.exists():
        urllib.request.urlretrieve(CIFAR10_URL, archive)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != CIFAR10_MD5:
        raise DataError(f"{archive} has MD5 {digest}, expected {CIFAR10_MD5}; delete it and retry.")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / "cifar-10-batches-py"


def _tensors(images: np.ndarray, labels: np.ndarray) -> Split:
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), torch.from_numpy(labels.astype(np.int64))
