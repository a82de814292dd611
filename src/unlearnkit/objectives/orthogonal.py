"""Orthogonality of a new LoRA adapter to earlier ones (O3, Gao et al., On Large Language Model Continual Unlearning,
ICLR 2025): the penalty Σ_layers Σ_{earlier k} ‖A_k A_newᵀ‖²_F on the down-projections A (r × in), 0 exactly when the
new adapter reads a subspace of each layer's input orthogonal to every earlier adapter's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import OBJECTIVES
from ..types import Batch
from .base import Loss, StepContext


def cross_gram_norm2(prev: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """‖A_prev A_newᵀ‖²_F for down-projections A (r × in): 0 exactly when every row of ``new`` is orthogonal to every
    row of ``prev`` (the paper's ‖A_prevᵀ A_new‖²_F, its A stored as in × r)."""
    return (prev.to(new.dtype) @ new.T).pow(2).sum()


def orthogonality_penalty(pairs: Sequence[tuple[Sequence[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """Σ over layers of Σ over the earlier adapters of ``cross_gram_norm2(A_prev, A_new)``; ``pairs`` holds, per layer,
    (the earlier adapters' A, the new A). 0 (with a gradient path) when there are no earlier adapters."""
    total: torch.Tensor | None = None
    for prev, new in pairs:
        for a in prev:
            term = cross_gram_norm2(a.detach(), new)
            total = term if total is None else total + term
    if total is None:
        return pairs[0][1].sum() * 0.0 if pairs else torch.zeros(())
    return total


@OBJECTIVES.register("lora_orthogonality")
@dataclass(frozen=True)
class LoRAOrthogonality:
    """O3's orthogonal-subspace regulariser: ``orthogonality_penalty`` of the model's ``orthogonality_pairs()`` (a model
    that trains one adapter while holding earlier ones, such as ``lm.o3.O3LM``). Reads no data stream."""

    @property
    def streams(self) -> tuple[str, ...]:
        return ()

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        pairs = getattr(model, "orthogonality_pairs", None)
        if not callable(pairs):
            raise ConfigError(f"lora_orthogonality needs a model that trains a LoRA adapter next to earlier ones (orthogonality_pairs()), "
                              f"got a {type(model).__name__}.")
        value = orthogonality_penalty(pairs())
        return Loss(value, {"orthogonality": float(value.detach())})


__all__ = ["LoRAOrthogonality", "cross_gram_norm2", "orthogonality_penalty"]
