"""gaussian_finetune: replace the forget targets by Gaussian draws and fine-tune on the relabelled training set.

Longer than a recipe's 60 lines: the Gaussian fit of the targets and the relabelled target table are this
method's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import TaskError
from ..objectives import ReferenceLogits
from ..objectives.classifier import TableTargets
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, Setup, register_method

TRAINING_TARGETS = "training_targets"


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


@register_method
@dataclass(frozen=True)
class GaussianFinetune(GradientMethod):
    """Gaussian amnesiac fine-tuning (Tarun, Chundawat, Mandal & Kankanhalli, Deep Regression Unlearning, ICML 2023).

    Fit N(μ, σ²) to the training targets (forget ∪ retain; per output dimension, σ with ddof = 1), replace
    every forget target by one independent draw z_i ~ N(μ, σ²), drawn once from ``rng`` before training,
    and fine-tune on the relabelled training set D' = {(x_i, z_i) : i ∈ F} ∪ R with the squared error:
        min_θ mean_{(x, t) ∈ D'} (f_θ(x) − t)²
    The forget examples are mixed with the retain examples in one shuffled stream in their natural
    proportion (one epoch = one pass over D'), as in the authors' code (which draws once from the mean and
    standard deviation of all training targets and fine-tunes one epoch with Adam). The draws are global
    (around μ), not per-example around the model's prediction: they carry no information about x, which
    is what removes the forget examples' input–target association. Defaults: the authors' optimiser (Adam)
    with a budget sized for tabular regression sets of a few hundred to a few thousand examples (30 epochs,
    lr 3e-3 with cosine decay, batch 32); the authors' single epoch at 1e-3 assumes tens of thousands."""

    train: TrainConfig = TrainConfig(epochs=30.0, batch_size=32, optimizer="adam", lr=3e-3, schedule="cosine")

    name: ClassVar[str] = "gaussian_finetune"
    paper: ClassVar[str] = "Tarun et al., Deep Regression Unlearning, ICML 2023"
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("regression",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("random", "ids")
    epoch_stream: ClassVar[str] = "train"

    def replacement_targets(self, task: Task, rng: np.random.Generator) -> tuple[np.ndarray, GaussianFit]:
        """The Gaussian fitted to the training targets and one draw from it per forget example (forget order)."""
        targets = task.train.labels
        if targets is None:
            raise TaskError(f"Task {task.name!r}: gaussian_finetune needs regression targets (TensorData.y).")
        gaussian = GaussianFit.of(targets)
        return gaussian.sample(len(task.forget), rng), gaussian

    def relabelled_targets(self, task: Task, draws: np.ndarray) -> ReferenceLogits:
        """Targets of D' keyed by example id: the draws for forget ids, the own targets for retain ids."""
        retain = np.asarray(task.retain.labels, dtype=np.float64).reshape((len(task.retain),) + draws.shape[1:])
        ids = np.concatenate([task.forget.ids, task.retain.ids])
        return ReferenceLogits(ids, torch.as_tensor(np.concatenate([draws, retain])))

    def objective(self, task: Task, refs: References) -> TableTargets:
        return TableTargets(TRAINING_TARGETS, "train", "relabelled")

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        draws, gaussian = self.replacement_targets(task, setup.rng)
        return {TRAINING_TARGETS: self.relabelled_targets(task, draws)}, {"gaussian": gaussian.to_json(), "replaced": len(draws)}
