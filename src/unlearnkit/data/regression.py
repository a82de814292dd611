"""Regression data sources: scikit-learn's bundled diabetes data and a generated nonlinear regression.

Both standardise features and target with statistics of the training split only, so the test split
carries no information into the preprocessing. Targets are float32 tensors of shape (n,); tasks built
from them have modality "regression" and ``n_classes=None`` (``info["modality"]`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..registry import DATASETS
from .sources import DataSource, make_source


@dataclass(frozen=True)
class Standardiser:
    """Per-column mean and standard deviation fitted on training rows; constant columns keep scale 1."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardiser:
        values = np.asarray(values, dtype=np.float64)
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) - self.mean) / self.std).astype(np.float32)


def split_positions(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test positions of a seeded random split."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(test_fraction * n)
    if n_test == 0 or n_test == n:
        raise ConfigError(f"test_fraction={test_fraction} leaves an empty split of {n} examples.")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def standardised_source(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                        info: dict[str, object]) -> DataSource:
    """A regression DataSource with features and target standardised by training statistics."""
    xs, ys = Standardiser.fit(x_train), Standardiser.fit(y_train)
    meta = {**info, "modality": "regression", "target_mean": float(ys.mean), "target_std": float(ys.std),
            "standardised_with": "training split statistics"}
    return make_source(name, xs.transform(x_train), ys.transform(y_train), xs.transform(x_test), ys.transform(y_test), None, meta)


@DATASETS.register("diabetes")
def diabetes(test_fraction: float = 0.25, seed: int = 0) -> DataSource:
    """scikit-learn's bundled diabetes regression (442 patients, 10 features, disease progression); standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    train, test = split_positions(len(x), test_fraction, seed)
    return standardised_source("diabetes", x[train], y[train], x[test], y[test],
                               {"source": "sklearn.datasets.load_diabetes", "seed": seed, "test_fraction": test_fraction})


@DATASETS.register("synthetic_regression")
def synthetic_regression(n_train: int = 1000, n_test: int = 500, n_features: int = 10, noise: float = 1.0, seed: int = 0) -> DataSource:
    """Generated nonlinear regression (Friedman #1: 10 sin(π x1 x2) + 20 (x3 − ½)² + 10 x4 + 5 x5 + noise·N(0, 1)); standardised."""
    from sklearn.datasets import make_friedman1

    if n_train < 2 or n_test < 1:
        raise ConfigError(f"synthetic_regression: n_train must be >= 2 and n_test >= 1, got n_train={n_train}, n_test={n_test}.")
    if n_features < 5:
        raise ConfigError(f"synthetic_regression: n_features must be >= 5 (Friedman #1 uses five), got {n_features}.")
    if not noise >= 0:
        raise ConfigError(f"synthetic_regression: noise must be >= 0, got {noise}.")
    x, y = make_friedman1(n_samples=n_train + n_test, n_features=n_features, noise=noise, random_state=seed)
    return standardised_source("synthetic_regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                               {"source": "sklearn.datasets.make_friedman1", "seed": seed, "noise": noise})
