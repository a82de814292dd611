"""npo: negative preference optimisation on the forget answers, plus retain NLL; reference log-probs cached once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..objectives import NLL, Reduction, Weighted, check_reduction, weighted
from ..objectives.lm import NPO as NPOLoss
from ..objectives.lm import Reference, reference_tables
from ..references import References
from ..searchspace import FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, Setup, check_weights, register_method

@register_method
@dataclass(frozen=True)
class NPO(GradientMethod):
    """Negative Preference Optimization (Zhang, Lin, Bai & Mei, COLM 2024): a bounded, reference-relative replacement for gradient ascent.

    L = forget_weight · (−(2/β)·mean log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))) on forget + retain_weight · NLL̄ on retain,
    with log π the summed answer log-probability and π_ref the model before unlearning (the NPO code's
    ``npo_grad_diff``). The loss is bounded below by 0 (reached as log π_θ − log π_ref → −∞), so it slows down by
    itself where gradient ascent diverges; as β → 0 its gradient is gradient ascent's on the summed NLL.

    ``reference: cached`` (default) computes π_ref's log-probs of the forget answers once before training and looks
    them up by example id, so no second model is held; ``live`` keeps a frozen copy and recomputes them every step
    (identical up to float noise; for the step-time and memory comparison).

    The retain NLL̄ (``retain_reduction``): ``token`` (default) = the NLL summed over every retain answer token of the
    batch over their number, the Hugging Face loss the NPO code and OpenUnlearning use; ``example`` = the mean of
    the per-example length-normalised NLLs (this method's version 1).

    Defaults: β = 0.1, both weights 1 (NPO's TOFU config and OpenUnlearning); optimiser and budget from
    ``LM_TRAIN`` (AdamW, lr 1e-4, weight decay 0.01, 10 epochs of batch 8); one retain batch of the same size per
    forget batch.
    """

    train: TrainConfig = LM_TRAIN
    beta: float = 0.1
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    reference: Reference = "cached"
    retain_reduction: Reduction = "token"

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "npo"
    paper: ClassVar[str] = "Zhang et al., Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning, COLM 2024"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: retain NLL averaged over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "beta": FloatRange(0.02, 1.0, log=True), "retain_weight": FloatRange(0.1, 10.0, log=True)}  # what `unlearnkit tune` searches (causal LMs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        NPOLoss(beta=self.beta)  # validates beta
        check_reduction(self.retain_reduction, "npo: retain_reduction")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, NPOLoss("forget", self.beta)), (self.retain_weight, NLL("retain", self.retain_reduction)))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        return reference_tables(model, task.forget, setup.adapter, reference=self.reference, batch_size=self.train.batch_size,
                                device=setup.device)
