"""Classifier adapter: logits, per-example cross-entropy, predictions, penultimate features."""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..registry import ADAPTERS
from .common import AdapterBase
from ..types import Batch, Split, Task


def softmax_stats(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example loss, true-class probability, max probability, entropy and correctness."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    true_logp = logp.gather(1, y[:, None])[:, 0]
    return {
        "loss": (-true_logp).numpy(),
        "p_true": true_logp.exp().numpy(),
        "p_max": p.max(1).values.numpy(),
        "entropy": (-(p * logp).sum(1)).numpy(),
        "correct": (z.argmax(1) == y).numpy().astype(np.float64),
    }


class ClassifierAdapter(AdapterBase):
    """Works with any ``nn.Module`` mapping a batch ``x`` to logits of shape (n, n_classes)."""

    modality = "classifier"

    def __init__(self, n_classes: int | None = None) -> None:
        self.n_classes = n_classes

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["x"])

    def per_example_loss(self, model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy per example (against ``labels`` if given, else the batch's own)."""
        y = batch["y"] if labels is None else labels
        return F.cross_entropy(self.logits(model, batch), y, reduction="none")

    score_name = "accuracy"

    def stats(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-example statistics of ``outputs(...)``: loss, p_true, p_max, entropy, correct."""
        return softmax_stats(out["logits"], out["labels"])

    def score(self, out: dict[str, np.ndarray]) -> np.ndarray:
        """Per-example fit score, higher = better (here: correct 1/0); used by the relearning attack."""
        return (out["logits"].argmax(1) == out["labels"]).astype(np.float64)

    def outputs(self, model: nn.Module, split: Split, *, batch_size: int = 1024, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
        """Logits and labels for every example of ``split``, in split order (model in eval mode)."""
        logits = self.run_split(model, split, self.logits, batch_size=batch_size, device=device)
        out = torch.cat(logits).numpy() if logits else np.zeros((0, self.n_classes or 0), np.float32)
        labels = split.labels
        return {"logits": out, "labels": labels if labels is not None else np.zeros(len(split), np.int64)}

    def check(self, model: nn.Module, task: Task, device: str | torch.device = "cpu") -> None:
        """Raise ModelError if the model's output does not fit the task (shape, finiteness)."""
        out, _ = self.trial_output(model, task, device)
        if out.ndim != 2 or (self.n_classes is not None and out.shape[1] != self.n_classes):
            raise ModelError(
                f"The model's output has shape {tuple(out.shape)}, but the task has {self.n_classes} classes "
                f"(expected (batch, {self.n_classes}))."
            )



@ADAPTERS.register("classifier")
def classifier_adapter(task: Task) -> ClassifierAdapter:
    return ClassifierAdapter(task.n_classes)
