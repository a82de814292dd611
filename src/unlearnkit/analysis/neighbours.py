"""Adversarial neighbours: each example's nearest wrong class, one FGSM step away (boundary shrink's neighbour search)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import cost
from ..errors import TaskError
from ..objectives.classifier import LabelTable
from ..types import Batch, Split


def fgsm_step(model: nn.Module, batch: Batch, adapter: Any, bound: float) -> torch.Tensor:
    """x' = x + bound·sign(∇ₓ CE(f(x), y)), one signed-gradient step per example (no clamping)."""
    x = batch["x"].detach().clone().requires_grad_(True)
    loss = adapter.per_example_loss(model, {**batch, "x": x}).sum()  # the sum keeps each example's own gradient
    (grad,) = torch.autograd.grad(loss, x)
    return (x + bound * grad.sign()).detach()


def nearest_wrong_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """argmax of the logits over the classes other than each example's own label."""
    if logits.shape[1] < 2:
        raise TaskError(f"A nearest wrong class needs at least two classes; the model outputs {logits.shape[1]}.")
    masked = logits.clone()
    masked.scatter_(1, labels.unsqueeze(1), float("-inf"))
    return masked.argmax(dim=1)


def neighbour_labels(model: nn.Module, split: Split, adapter: Any, bound: float, device: Any, batch_size: int) -> LabelTable:
    """Each example's nearest wrong class under ``model`` (in eval mode; parameters and their gradients untouched)."""
    was_training = model.training
    model.eval()
    ids, labels = [], []
    try:
        for batch in split.batches(batch_size, device=device):
            x_adv = fgsm_step(model, batch, adapter, bound)
            with torch.no_grad():
                logits = adapter.logits(model, {**batch, "x": x_adv})
            labels.append(nearest_wrong_class(logits, batch["y"]).cpu())
            ids.append(batch["ids"].cpu())
            cost.record(passes=2 * len(batch["ids"]))  # the FGSM forward-backward and the forward at x'
    finally:
        model.train(was_training)
    return LabelTable(torch.cat(ids).numpy(), torch.cat(labels))


__all__ = ["fgsm_step", "nearest_wrong_class", "neighbour_labels"]
