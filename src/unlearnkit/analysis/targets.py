"""Targets computed from data or a model before training: a Gaussian fit of regression targets, draws from it and
the relabelled target table built from them (gaussian_finetune); the tilted, renormalised output distribution of a
class-unlearning model (trw)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import TaskError
from ..objectives import ReferenceLogits
from ..types import Split, Task


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


def remaining_log_probs(logits: torch.Tensor, forgotten: list[int]) -> torch.Tensor:
    """log p̃: the softmax of ``logits`` with the ``forgotten`` classes removed and the rest renormalised
    (−inf at forgotten classes). Computed from logits, so it stays exact when p_c ≈ 1."""
    kept = logits.double().clone()
    kept[:, forgotten] = -math.inf
    return torch.log_softmax(kept, dim=-1)


def class_similarity(log_p: torch.Tensor, labels: torch.Tensor, forgotten: list[int]) -> torch.Tensor:
    """Row c (c forgotten) = s_c: the mean over forget examples of class c of p̃_k(x), a distribution over
    the remaining classes k (how much the original model confuses c with k). Rows of kept classes are 0."""
    sim = torch.zeros(log_p.shape[1], log_p.shape[1], dtype=torch.float64)
    for c in forgotten:
        rows = labels == c
        if not bool(rows.any()):
            raise TaskError(f"trw: the forget set has no example of forgotten class {c}; its similarity cannot be estimated.")
        sim[c] = log_p[rows].exp().mean(0)
    return sim


def tilted_log_targets(log_p: torch.Tensor, labels: torch.Tensor, sim: torch.Tensor, tilt: float) -> torch.Tensor:
    """log q with q_k(x) ∝ p̃_k(x) · s_{y(x),k}^tilt over the remaining classes (q = 0 on forgotten ones)."""
    log_sim = torch.log(sim[labels].clamp_min(torch.finfo(torch.float64).tiny))
    tilted = log_p + tilt * log_sim if tilt != 0 else log_p
    return torch.log_softmax(tilted, dim=-1)


@torch.no_grad()
def forget_logits(
    model: nn.Module, split: Split, adapter: Any, device: str, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The model's logits, labels and ids on ``split`` (eval mode), on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in split.batches(batch_size, device=device):
            logits.append(adapter.logits(model, batch).detach().cpu())
            labels.append(batch["y"].detach().cpu())
            cost.record(passes=len(batch["ids"]))
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels).long(), split.ids


def tilted_targets(model: nn.Module, forget: Split, forgotten: list[int], tilt: float, adapter: Any,
                   device: str) -> tuple[ReferenceLogits, torch.Tensor]:
    """The TRW target table (log q by forget id, from ``model`` as it is now) and the similarity matrix."""
    logits, labels, ids = forget_logits(model, forget, adapter, device)
    log_p = remaining_log_probs(logits, forgotten)
    sim = class_similarity(log_p, labels, forgotten)
    return ReferenceLogits(ids, tilted_log_targets(log_p, labels, sim, tilt)), sim


__all__ = [
    "GaussianFit", "class_similarity", "forget_logits", "gaussian_draws", "relabelled_targets", "remaining_log_probs",
    "tilted_log_targets", "tilted_targets",
]
