"""What every adapter shares: running a model over a split in eval mode, penultimate features, and a trial
forward pass that turns shape errors into a clear ModelError."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from ..io import check_finite_state
from ..types import Batch, Split, Task


class AdapterBase:
    """Shared behaviour; a modality's adapter adds logits, per_example_loss, outputs, stats, score, check."""

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define logits()")  # pragma: no cover

    @torch.no_grad()
    def run_split(self, model: nn.Module, split: Split, fn: Callable[[nn.Module, Batch], torch.Tensor], *, batch_size: int = 1024,
                  device: str | torch.device = "cpu") -> list[torch.Tensor]:
        """``fn(model, batch)`` for every batch of ``split`` in order, in eval mode (mode restored), on the CPU."""
        was_training = model.training
        model.eval()
        try:
            return [fn(model, b).float().cpu() for b in split.batches(batch_size, device=device)]
        finally:
            model.train(was_training)

    def batch_loss(self, model: nn.Module, batch: Batch, reduction: str = "example") -> torch.Tensor:
        """The batch's mean loss. One target per example, so ``token`` (the mean over all targets of the batch) and
        ``example`` (the mean of the per-example losses) are the same number: the mean of ``per_example_loss``."""
        return self.per_example_loss(model, batch).mean()  # type: ignore[attr-defined, no-any-return]

    def features(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if not hasattr(model, "features"):
            raise ModelError(f"{type(model).__name__} has no features(x) method; hidden-representation tools need one.")
        return model.features(batch["x"])

    def feature_matrix(self, model: nn.Module, split: Split, *, batch_size: int = 1024, device: str | torch.device = "cpu") -> np.ndarray:
        """Penultimate features of every example of ``split``, in split order."""
        return torch.cat(self.run_split(model, split, self.features, batch_size=batch_size, device=device)).numpy()

    def trial_output(self, model: nn.Module, task: Task, device: str | torch.device = "cpu") -> tuple[torch.Tensor, Batch]:
        """The model's output on two retain examples (eval mode), after checking its weights are finite."""
        check_finite_state(model.state_dict(), "The model")
        batch: Batch = next(iter(task.retain.batches(2, device=device)))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self.logits(model, batch), batch
        except RuntimeError as exc:
            raise ModelError(f"The model cannot run on the task's inputs of shape {tuple(batch['x'].shape)}: {exc}") from None
        finally:
            model.train(was_training)
