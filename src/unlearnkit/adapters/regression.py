"""Regression adapter: predictions, per-example squared error, residual statistics, hidden features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..registry import ADAPTERS
from .common import AdapterBase
from ..types import Batch, Split, Task


def squeeze_trailing_one(t: torch.Tensor) -> torch.Tensor:
    """(n, 1) -> (n,); any other shape is returned unchanged (a single-output regressor's column)."""
    return t[:, 0] if t.ndim == 2 and t.shape[1] == 1 else t


def residual_stats(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example squared error and absolute error (averaged over output dimensions) and the residual
    pred − target (same shape as the predictions)."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64).reshape(pred.shape)
    residual = pred - target
    axes = tuple(range(1, residual.ndim))
    squared = residual**2
    absolute = np.abs(residual)
    return {
        "loss": squared.mean(axis=axes) if axes else squared,
        "abs_error": absolute.mean(axis=axes) if axes else absolute,
        "residual": residual,
    }


class RegressionAdapter(AdapterBase):
    """Works with any ``nn.Module`` mapping a batch ``x`` to predictions of shape (n,), (n, 1) or (n, d);
    targets are float tensors of shape (n,) or (n, d). A trailing output dimension of 1 is squeezed.

    Per-example loss = squared error averaged over output dimensions, so the mean over a split is
    scikit-learn's ``mean_squared_error`` (uniform average over outputs)."""

    modality = "regression"
    score_name = "negative squared error"

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The model's prediction (named ``logits`` for the adapter protocol): (n,) or (n, d)."""
        return squeeze_trailing_one(model(batch["x"]))

    def per_example_loss(self, model: nn.Module, batch: Batch, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Squared error per example (against ``targets`` if given, else the batch's own ``y``)."""
        pred = self.logits(model, batch)
        y = squeeze_trailing_one(batch["y"] if targets is None else targets).to(pred.dtype)
        if y.shape != pred.shape:
            raise ModelError(f"Predictions of shape {tuple(pred.shape)} do not match targets of shape {tuple(y.shape)}.")
        squared = (pred - y) ** 2
        return squared.flatten(1).mean(1) if squared.ndim > 1 else squared

    def stats(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-example statistics of ``outputs(...)``: loss (squared error), abs_error, residual."""
        return residual_stats(out["pred"], out["target"])

    def score(self, out: dict[str, np.ndarray]) -> np.ndarray:
        """Per-example fit score, higher = better: minus the squared error (used by the relearning attack)."""
        return -residual_stats(out["pred"], out["target"])["loss"]

    def outputs(self, model: nn.Module, split: Split, *, batch_size: int = 1024,
                device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
        """Predictions and targets for every example of ``split``, in split order (model in eval mode)."""
        preds = self.run_split(model, split, self.logits, batch_size=batch_size, device=device)
        targets = split.labels
        if targets is None:
            raise ModelError(f"Split {split.name!r} has no regression targets (TensorData.y is None).")
        pred = torch.cat(preds).numpy() if preds else np.zeros((0,), np.float32)
        return {"pred": pred, "target": squeeze_trailing_one(torch.as_tensor(targets)).numpy().astype(np.float32)}

    def check(self, model: nn.Module, task: Task, device: str | torch.device = "cpu") -> None:
        """Raise ModelError if the weights are not finite or the output shape does not fit the targets."""
        out, batch = self.trial_output(model, task, device)
        target = squeeze_trailing_one(batch["y"])
        if tuple(out.shape) != tuple(target.shape):
            raise ModelError(
                f"The model's output has shape {tuple(out.shape)} (after squeezing a trailing 1), but the task's targets "
                f"have shape {tuple(target.shape)} (expected one output per target dimension)."
            )
        if not target.is_floating_point():
            raise ModelError(f"Regression targets must be floating point, got dtype {target.dtype}.")


@ADAPTERS.register("regression")
def regression_adapter(task: Task) -> RegressionAdapter:
    return RegressionAdapter()
