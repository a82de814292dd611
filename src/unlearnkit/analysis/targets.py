"""Targets computed from data or a model before training: a Gaussian fit of regression targets, draws from it and
the relabelled target table built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import TaskError
from ..objectives import ReferenceLogits
from ..types import Task


@dataclass(frozen=True)
class GaussianFit:
    """Per-output mean and sample standard deviation (ddof = 1) of regression targets."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, targets: np.ndarray) -> GaussianFit:
        raw = np.asarray(targets)
        if raw.dtype.kind != "f" or len(raw) < 2:
            raise TaskError(f"A Gaussian fit needs at least two real-valued targets, got {len(raw)} of dtype {raw.dtype}.")
        values = raw.astype(np.float64)
        return cls(values.mean(axis=0), values.std(axis=0, ddof=1))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws mean + std·N(0, 1), shape (n,) + the targets' trailing shape."""
        return self.mean + self.std * rng.standard_normal((n,) + np.shape(self.mean))

    def to_json(self) -> dict[str, Any]:
        return {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}


def gaussian_draws(task: Task, rng: np.random.Generator, who: str) -> tuple[np.ndarray, GaussianFit]:
    """The Gaussian fitted to the task's training targets (forget ∪ retain) and one draw from it per forget example
    (forget order)."""
    targets = task.train.labels
    if targets is None:
        raise TaskError(f"Task {task.name!r}: {who} needs regression targets (TensorData.y).")
    gaussian = GaussianFit.of(targets)
    return gaussian.sample(len(task.forget), rng), gaussian


def relabelled_targets(task: Task, draws: np.ndarray) -> ReferenceLogits:
    """Targets of the relabelled training set keyed by example id: ``draws`` for the forget ids (in forget order), the
    own targets for the retain ids."""
    retain = np.asarray(task.retain.labels, dtype=np.float64).reshape((len(task.retain),) + draws.shape[1:])
    ids = np.concatenate([task.forget.ids, task.retain.ids])
    return ReferenceLogits(ids, torch.as_tensor(np.concatenate([draws, retain])))


__all__ = ["GaussianFit", "gaussian_draws", "relabelled_targets"]
