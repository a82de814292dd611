"""ihl: LoKU's inverted hinge loss on the forget answers plus retain NLL, with optional Fisher-weighted LoRA init (FILA).

Longer than a recipe's 60 lines: FILA, the Fisher-weighted LoRA initialisation of LoKU, is this method's own and
stays with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from .. import cost
from ..errors import ConfigError
from ..objectives import NLL, Weighted, weighted
from ..objectives.lm import InvertedHinge
from ..references import References
from ..train import TrainConfig
from ..types import Split, Task
from .base import LM_TRAIN, GradientMethod, Setup, check_weights, register_method


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


def fisher_lora_init(model: nn.Module, task: Task, adapter: Any, batch_size: int, device: Any) -> dict[str, Any]:
    """FILA for every LoRA layer of ``model``: importance = (F_forget / n_forget) / (1e-5 + F_retain / n_retain), the
    per-weight ratio of empirical Fisher information (squared gradients of the mean-token NLL) on the forget and
    retain sets, then ``fila_init``. Raises ConfigError if the model has no LoRA adapters."""
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("ihl: fila=true initialises LoRA adapters, but the model has none. Build it with LoRA "
                          "(e.g. model params lora_r: 8, or models.causal_lm.adapt(model, lora_r=8)), or set fila: false.")
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


@register_method
@dataclass(frozen=True)
class IHL(GradientMethod):
    """LoKU (Cha, Cho, Hwang & Lee, "Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs", ICLR 2025): inverted hinge loss + FILA.

    L = forget_weight · mean over forget answer tokens of max(0, 1 + p(y_t) − max_{v≠y_t} p(v)) + retain_weight · NLL̄_retain
    (averaged per example, then over the batch). The hinge lowers the true token's probability by raising the
    strongest other token's, so it is bounded (≤ 2) and keeps the output distribution fluent, unlike gradient ascent.

    ``fila: true`` (LoRA models only; a clear error otherwise) first initialises every LoRA adapter from the
    Fisher-importance-weighted low-rank SVD of its base weight, importance = forget/retain ratio of squared gradients
    of the mean-token NLL (one pass over each set, no update), and subtracts the adapter's product from the base
    weight so the model's output is unchanged at the start. Inferred: the importance pass uses the whole retain set
    (LoKU pairs one retain batch with each forget batch) and an exact SVD (LoKU: ``torch.svd_lowrank``).

    Defaults: forget and retain weights 1, 5 epochs, AdamW lr 1e-4 (LoKU's LoRA recipe; r 32/α 64 there, the
    model's LoRA here), weight decay 0.01, batch 8; ``fila`` off so the method works on any causal LM.
    """

    train: TrainConfig = replace(LM_TRAIN, epochs=5.0)
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    fila: bool = False

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "ihl"
    paper: ClassVar[str] = "Cha et al., Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs, ICLR 2025"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: FILA folds an existing adapter into the weight first)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        if self.fila and self.restrict_to is not None:
            raise ConfigError("ihl: fila=true re-initialises every LoRA layer (and its base weight), so it cannot be combined "
                              "with restrict_to, which promises that parameters outside the selection stay untouched.")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, InvertedHinge("forget")), (self.retain_weight, NLL("retain")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self.fila:
            return {}, {}
        return {}, fisher_lora_init(model, task, setup.adapter, self.train.batch_size, setup.device)
