"""Objectives of the classifier and regression recipes: losses toward targets computed before training and looked up by
example id (relabelled data, frozen predictions), distillation, and output-distribution targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..registry import OBJECTIVES
from ..train import Loss, StepContext
from ..types import Batch
from . import ReferenceLogits, reference_for


class LabelTable:
    """Fixed integer labels keyed by example id, looked up per batch (the id lookup of ReferenceLogits;
    labels are stored as float32, exact for class indices below 2**24)."""

    def __init__(self, ids: Any, labels: torch.Tensor) -> None:
        self._table = ReferenceLogits(ids, labels.to(torch.float32).unsqueeze(1))

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self._table.lookup(ids).squeeze(1).long()


@OBJECTIVES.register("table_targets")
@dataclass(frozen=True)
class TableTargets:
    """The adapter's mean loss on the stream toward targets looked up by example id in ``ctx.extra[key]`` (a
    ``LabelTable`` or ``ReferenceLogits``) instead of the batch's own ``y``: training on relabelled data without copying
    its inputs, or matching frozen predictions. ``part`` names the logged value."""

    key: str
    stream: str = "forget"
    part: str = "targets"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        b = batch[self.stream]
        value = ctx.adapter.per_example_loss(model, b, reference_for(ctx, b, f"table_targets({self.key!r})", self.key)).mean()
        return Loss(value, {f"{self.part}_{self.stream}": float(value.detach())})


__all__ = ["LabelTable", "TableTargets"]
