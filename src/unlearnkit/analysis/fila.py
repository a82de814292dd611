"""LoKU's Fisher-weighted LoRA initialisation (FILA; Cha et al., ICLR 2025): per-weight empirical Fisher importances
on the forget and retain sets, and the importance-weighted low-rank SVD that initialises each LoRA adapter."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import cost
from ..types import Split, Task


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """PEFT LoRA-wrapped linear layers (a ``base_layer`` plus ``lora_A``/``lora_B`` with a ``default`` adapter)."""
    out = []
    for name, m in model.named_modules():
        a, b = getattr(m, "lora_A", None), getattr(m, "lora_B", None)
        if isinstance(a, nn.ModuleDict) and isinstance(b, nn.ModuleDict) and "default" in a and hasattr(m, "base_layer"):
            out.append((name, m))
    return out


def squared_gradients(model: nn.Module, weights: list[nn.Parameter], split: Split, adapter: Any, batch_size: int,
                      device: Any) -> tuple[list[torch.Tensor], int]:
    """Σ over batches of (∂ mean-token-NLL / ∂W)² · (answer tokens in the batch), and the total token count
    (LoKU's ``measure_importance``: an empirical Fisher per weight)."""
    acc = [torch.zeros_like(w) for w in weights]
    tokens = 0
    for b in split.batches(batch_size, device=device):
        total, n = adapter.sequence_logprob(model, b)
        count = int(n.sum())
        loss = -total.sum() / max(count, 1)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        for a, g in zip(acc, grads):
            if g is not None:
                a += g.detach().square() * count
        tokens += count
    cost.record(passes=len(split))
    return acc, tokens


@torch.no_grad()
def fila_init(layer: nn.Module, importance: torch.Tensor) -> None:
    """Initialise the layer's LoRA A, B from the row-weighted rank-r SVD of its weight w and subtract the adapter's
    product from the base weight, so the layer's output is unchanged: w = W + scaling·B₀·A₀ (the adapter a LoRA
    fine-tuned model already carries is folded in first, as LoKU merges it before adding fresh LoRA), with
    d = sqrt(Σ_in importance) per output row, U S Vᵀ = svd(diag(d)·w) truncated to r, S' = S/scaling,
    A = (V·√S')ᵀ, B = diag(1/(d + 1e-5))·U·√S', W ← w − scaling·B·A (LoKU's FILA)."""
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    W = layer.base_layer.weight
    scaling = float(layer.scaling["default"])
    r = A.shape[0]
    w = W.float() + scaling * (B.float() @ A.float())
    d = importance.float().sum(1).sqrt()
    U, S, Vh = torch.linalg.svd(d[:, None] * w, full_matrices=False)
    U, S, V = U[:, :r], S[:r] / scaling, Vh[:r].T
    new_a = (V * S.sqrt()).T
    new_b = (1.0 / (d + 1e-5))[:, None] * (U * S.sqrt())
    A.copy_(new_a.to(A.dtype))
    B.copy_(new_b.to(B.dtype))
    W.copy_((w - scaling * new_b @ new_a).to(W.dtype))


def fisher_lora_init(model: nn.Module, layers: list[tuple[str, nn.Module]], task: Task, adapter: Any, batch_size: int,
                     device: Any) -> dict[str, Any]:
    """FILA for the LoRA ``layers`` of ``model`` (``lora_layers``): importance = (F_forget / n_forget) / (1e-5 + F_retain /
    n_retain), the per-weight ratio of empirical Fisher information (squared gradients of the mean-token NLL) on the
    forget and retain sets, then ``fila_init``."""
    weights = [m.base_layer.weight for _, m in layers]
    saved = [w.requires_grad for w in weights]
    was_training = model.training
    model.eval()
    try:
        for w in weights:
            w.requires_grad_(True)
        f_forget, n_forget = squared_gradients(model, weights, task.forget, adapter, batch_size, device)
        f_retain, n_retain = squared_gradients(model, weights, task.retain, adapter, batch_size, device)
    finally:
        for w, flag in zip(weights, saved):
            w.requires_grad_(flag)
        model.train(was_training)
    for (_, m), ff, fr in zip(layers, f_forget, f_retain):
        fila_init(m, (ff / max(n_forget, 1)) / (1e-5 + fr / max(n_retain, 1)))
    return {"fila_layers": len(layers), "fila_tokens": {"forget": n_forget, "retain": n_retain}}


__all__ = ["fila_init", "fisher_lora_init", "lora_layers", "squared_gradients"]
