"""Parameter importances from squared gradients, and the selective dampening they guide (SSD)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import cost
from ..types import Split


def fisher_diagonal(model: nn.Module, split: Split, adapter: Any, device: str, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of the squared gradient of the batch-mean loss (SSD's importance)."""
    was_training = model.training
    model.eval()
    imp = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    n_batches = 0
    try:
        for batch in split.batches(batch_size, device=device):
            model.zero_grad(set_to_none=True)
            adapter.per_example_loss(model, batch).mean().backward()
            cost.record(passes=len(batch["ids"]))
            for n, p in model.named_parameters():
                if p.grad is not None and n in imp:
                    imp[n] += p.grad.detach() ** 2
            n_batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {n: v / max(n_batches, 1) for n, v in imp.items()}


def dampen(
    params: dict[str, torch.Tensor], imp_forget: dict[str, torch.Tensor], imp_full: dict[str, torch.Tensor], alpha: float, lam: float
) -> dict[str, torch.Tensor]:
    """In place: θ ← β·θ where I_f > α·I_D, β = min(λ·I_D / I_f, 1). Returns the selection mask."""
    selected = {}
    with torch.no_grad():
        for name, theta in params.items():
            f, d = imp_forget[name], imp_full[name]
            sel = f > alpha * d
            beta = torch.clamp(lam * d / f.clamp_min(torch.finfo(f.dtype).tiny), max=1.0)
            theta.copy_(torch.where(sel, beta * theta, theta))
            selected[name] = sel
    return selected


__all__ = ["dampen", "fisher_diagonal"]
