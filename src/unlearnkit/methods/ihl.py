"""ihl: LoKU's inverted hinge loss on the forget answers plus retain NLL, with optional Fisher-weighted LoRA init (FILA).

Slightly longer than a recipe's 60 lines: its docstring describes FILA and what was inferred, and FILA's two
preconditions (LoRA adapters, no ``restrict_to``) are checked here; FILA itself is ``analysis.fila``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from torch import nn

from ..analysis.fila import fisher_lora_init, lora_layers
from ..errors import ConfigError
from ..objectives import NLL, Reduction, Weighted, check_reduction, weighted
from ..objectives.lm import InvertedHinge
from ..references import References
from ..searchspace import Choice, FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, Setup, check_weights, register_method


@register_method
@dataclass(frozen=True)
class IHL(GradientMethod):
    """LoKU (Cha, Cho, Hwang & Lee, "Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs", ICLR 2025): inverted hinge loss + FILA.

    L = forget_weight · mean over forget answer tokens of max(0, 1 + p(y_t) − max_{v≠y_t} p(v)) + retain_weight · NLL̄_retain
    (the hinge averaged per example, then over the batch; NLL̄_retain by ``retain_reduction``: ``token``, the default,
    over every retain answer token of the batch, Hugging Face's loss; ``example``, the mean of per-example NLL̄, this
    method's version 2). The hinge lowers the true token's probability by raising the
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
    retain_reduction: Reduction = "token"

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "ihl"
    paper: ClassVar[str] = "Cha et al., Towards Robust and Parameter-Efficient Knowledge Unlearning for LLMs, ICLR 2025"
    version: ClassVar[str] = "3"  # bump when its numbers change (2: FILA folds an existing adapter into the weight first; 3: retain NLL over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "retain_weight": FloatRange(0.1, 10.0, log=True), "fila": Choice((False, True))}  # what `unlearnkit tune` searches (causal LMs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        check_reduction(self.retain_reduction, "ihl: retain_reduction")
        if self.fila and self.restrict_to is not None:
            raise ConfigError("ihl: fila=true re-initialises every LoRA layer (and its base weight), so it cannot be combined "
                              "with restrict_to, which promises that parameters outside the selection stay untouched.")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, InvertedHinge("forget")), (self.retain_weight, NLL("retain", self.retain_reduction)))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        if not self.fila:
            return {}, {}
        layers = lora_layers(model)
        if not layers:
            raise ConfigError("ihl: fila=true initialises LoRA adapters, but the model has none. Build it with LoRA "
                              "(e.g. model params lora_r: 8, or models.causal_lm.adapt(model, lora_r=8)), or set fila: false.")
        return {}, fisher_lora_init(model, layers, task, setup.adapter, self.train.batch_size, setup.device)
