"""simnpo: reference-free, length-normalised NPO on the forget answers, plus retain NLL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..objectives import NLL, Reduction, Weighted, check_reduction, weighted
from ..objectives.lm import SimNPO as SimNPOLoss
from ..references import References
from ..searchspace import FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, check_weights, register_method


@register_method
@dataclass(frozen=True)
class SimNPO(GradientMethod):
    """SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning", 2024).

    L = forget_weight · (−(2/β)·mean log σ(β·(NLL̄_θ(y|x) − δ))) on forget + retain_weight · NLL̄ on retain, where
    NLL̄ = −log π_θ(y|x)/|y| is the answer NLL averaged over its tokens (the paper's −(β/|y|)·log π_θ − γ inside σ, with
    δ = γ/β as in OpenUnlearning). No reference model: nothing is computed before training. Bounded below by 0,
    reached as NLL̄ → ∞; the length normalisation stops long answers dominating the gradient. The retain NLL̄
    (``retain_reduction``): ``token`` (default) = summed over every retain answer token of the batch over their
    number (Hugging Face's loss, as OpenUnlearning's and the SimNPO code's retain term); ``example`` = the mean of the
    per-example length-normalised NLLs (this method's version 1).

    Defaults: β = 4.5, forget_weight 0.125, retain_weight 1, δ = 0 — the SimNPO TOFU forget10 config as copied by
    OpenUnlearning (our profile tasks forget 10% by default); optimiser and budget from ``LM_TRAIN``.
    """

    train: TrainConfig = LM_TRAIN
    beta: float = 4.5
    delta: float = 0.0
    forget_weight: float = 0.125
    retain_weight: float = 1.0
    retain_reduction: Reduction = "token"

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "simnpo"
    paper: ClassVar[str] = "Fan et al., Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning, 2024"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: retain NLL averaged over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "beta": FloatRange(0.5, 10.0, log=True), "delta": FloatRange(0.0, 2.0), "forget_weight": FloatRange(0.05, 1.0, log=True)}  # what `unlearnkit tune` searches (causal LMs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        SimNPOLoss(beta=self.beta, delta=self.delta)  # validates
        check_reduction(self.retain_reduction, "simnpo: retain_reduction")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, SimNPOLoss("forget", self.beta, self.delta)), (self.retain_weight, NLL("retain", self.retain_reduction)))
