"""Registered data sources: each returns train and test splits with stable ids.

Train ids are 0..n_train-1, test ids n_train..n_train+n_test-1, so ids never collide across splits.
"""

from __future__ import annotations

import gzip
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataUnavailable
from ..registry import DATASETS
from ..types import Split, TensorData


@dataclass(frozen=True)
class DataSource:
    """A dataset ready for tasks: train/test splits, number of classes, input shape, provenance."""

    name: str
    train: Split
    test: Split
    n_classes: int | None
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Split] = field(default_factory=dict)  # extra splits every task of this data carries

    @property
    def modality(self) -> str:
        """The task modality of this data (``info["modality"]``; default "classifier")."""
        return str(self.info.get("modality", "classifier"))

    @property
    def n_outputs(self) -> int:
        """Model outputs needed: the number of classes, or the target width for regression."""
        if "vocab_size" in self.info:  # language models: one output per token
            return int(self.info["vocab_size"])
        if self.n_classes is not None:
            return self.n_classes
        y = getattr(self.train.data, "y", None)
        return 1 if y is None or y.ndim == 1 else int(y.shape[1])


def load_dataset(name: str, **params: Any) -> DataSource:
    """Load a registered dataset by name (``unlearnkit ls tasks`` lists them)."""
    factory = DATASETS.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"Dataset {name!r}: bad parameters {sorted(params)}: {exc}") from None


def make_source(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int | None,
    info: dict[str, Any],
) -> DataSource:
    n = len(x_train)
    train = Split.create("train", TensorData(torch.as_tensor(x_train), torch.as_tensor(y_train)))
    test = Split.create(
        "test", TensorData(torch.as_tensor(x_test), torch.as_tensor(y_test)), np.arange(n, n + len(x_test))
    )
    return DataSource(name, train, test, n_classes, tuple(x_train.shape[1:]), info)


def _subsample(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(x):
        return x, y
    if n <= 0:
        raise ConfigError(f"Subset size must be positive, got {n}.")
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx], y[idx]


@DATASETS.register("digits")
def digits(test_fraction: float = 0.25, seed: int = 0, flatten: bool = True) -> DataSource:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes); for fast tests."""
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"digits: test_fraction must be in (0, 1), got {test_fraction}.")
    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0 - 0.5) / 0.5
    if not flatten:
        x = x.reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = perm[:n_test], np.sort(perm[n_test:])
    te = np.sort(te)
    return make_source("digits", x[tr], y[tr], x[te], y[te], 10, {"source": "sklearn.datasets.load_digits", "seed": seed})


FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), as distributed for MNIST-style datasets."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataUnavailable(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataUnavailable(f"{path} is truncated: {arr.size} values for shape {dims}.")
    return arr.reshape(dims)


def find_fashion_mnist(root: str | None, download: bool) -> Path:
    candidates = [Path(root)] if root else []
    if os.environ.get("UNLEARNKIT_FASHION_MNIST"):
        candidates.append(Path(os.environ["UNLEARNKIT_FASHION_MNIST"]))
    candidates += [Path(p) for p in FASHION_DIRS]
    cache = Path(os.environ.get("UNLEARNKIT_DATA", Path.home() / ".cache" / "unlearnkit" / "data")) / "fashion-mnist"
    candidates.append(cache)
    for folder in candidates:
        if all((folder / f).is_file() for f in FASHION_FILES.values()):
            return folder
    if download:
        cache.mkdir(parents=True, exist_ok=True)
        for fname in FASHION_FILES.values():
            target = cache / fname
            if not target.is_file():
                tmp = target.with_suffix(".part")
                urllib.request.urlretrieve(FASHION_URL + fname, tmp)  # noqa: S310 - fixed https/http host
                tmp.replace(target)
        return cache
    raise DataUnavailable(
        "Fashion-MNIST was not found (looked in: " + ", ".join(str(c) for c in candidates) + "). Get it with\n"
        "  sudo apt-get install -y --no-install-recommends dataset-fashion-mnist   (Debian/Ubuntu, offline mirror)\n"
        "or pass download=True (dataset params: {download: true}) to fetch it from " + FASHION_URL + ",\n"
        "or point UNLEARNKIT_FASHION_MNIST at a folder holding the four IDX .gz files."
    )


@DATASETS.register("fashion_mnist")
def fashion_mnist(
    root: str | None = None,
    download: bool = False,
    flatten: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
) -> DataSource:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28×28 greyscale images of 10 clothing classes."""
    folder = find_fashion_mnist(root, download)
    raw = {k: read_idx(folder / f) for k, f in FASHION_FILES.items()}

    def prep(images: np.ndarray) -> np.ndarray:
        x = (images.astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD
        return x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, 28, 28)

    xtr, ytr = _subsample(raw["x_train"], raw["y_train"], train_subset, seed)
    xte, yte = _subsample(raw["x_test"], raw["y_test"], test_subset, seed + 1)
    return make_source(
        "fashion_mnist",
        prep(xtr),
        ytr.astype(np.int64),
        prep(xte),
        yte.astype(np.int64),
        10,
        {"source": str(folder), "train_subset": train_subset, "test_subset": test_subset},
    )


@DATASETS.register("gaussian_blobs")
def gaussian_blobs(
    n_train: int = 1000, n_test: int = 500, n_features: int = 20, n_classes: int = 4, noise: float = 2.0, seed: int = 0
) -> DataSource:
    """Synthetic Gaussian class clusters (sklearn ``make_classification``-style); a generated toy task."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_train + n_test,
        n_features=n_features,
        n_informative=min(n_features, max(2, n_classes * 2)),
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=1.0 / max(noise, 1e-3) * 2,
        flip_y=0.05,
        random_state=seed,
    )
    x = x.astype(np.float32)
    return make_source(
        "gaussian_blobs", x[:n_train], y[:n_train].astype(np.int64), x[n_train:], y[n_train:].astype(np.int64),
        n_classes, {"source": "sklearn.datasets.make_classification", "seed": seed},
    )
