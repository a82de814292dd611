"""idk_po: DPO toward "I don't know" answers on the forget questions, plus retain NLL; reference log-probs cached once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..objectives import NLL, Reduction, Weighted, check_reduction, weighted
from ..objectives.lm import IdkDPO, Reference, idk_tables
from ..references import References
from ..searchspace import FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, Setup, check_weights, register_method


@register_method
@dataclass(frozen=True)
class IdkPO(GradientMethod):
    """IdkDPO (Maini et al., TOFU, COLM 2024; DPO of Rafailov et al., NeurIPS 2023): prefer "I don't know" to the true answer.

    L = forget_weight · (−(2/β)·mean log σ(β·[(log π_w − log π^ref_w) − (log π_l − log π^ref_l)])) + retain_weight · NLL̄_retain,
    w = an "I don't know" answer to the forget question, l = its true answer, log π summed answer log-probs and
    π_ref the model before unlearning. Factor 2/β rather than standard DPO's 1: it is what TOFU and OpenUnlearning
    use (so numbers compare with their IdkDPO), it keeps the gradient scale of NPO/GA as β → 0, and under Adam a
    constant factor only re-weights the forget term against the retain term.

    The IDK answers are ``data.profiles.variant(forget, "idk", k)`` for the K built-in answers; each step uses one
    variant k (drawn with the step generator) in which the K answers cycle across the examples, so every question
    meets every IDK answer (TOFU draws one at random per example). ``reference: cached`` computes π_ref's log-probs
    of the true answers and of every IDK variant once before training (1 + K passes over the forget set) and looks
    them up by example id; ``live`` keeps a frozen copy of the model instead.

    Has NPO's parameters (β = 0.1, weights 1, ``reference``, ``retain_reduction``: the retain NLL̄ over the batch's
    retain answer tokens by default, Hugging Face's loss as in OpenUnlearning; ``example`` = the mean of per-example
    NLL̄, this method's version 1; OpenUnlearning's TOFU idk config) and shares its reference
    table of the true answers (``objectives.lm.reference_tables``), adding the IDK answers' table (``idk_tables``).
    """

    train: TrainConfig = LM_TRAIN
    beta: float = 0.1
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    reference: Reference = "cached"
    retain_reduction: Reduction = "token"

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "idk_po"
    paper: ClassVar[str] = "Maini et al., TOFU: A Task of Fictitious Unlearning for LLMs, COLM 2024 (IdkDPO; DPO: Rafailov et al., NeurIPS 2023)"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: retain NLL averaged over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "beta": FloatRange(0.02, 1.0, log=True), "retain_weight": FloatRange(0.1, 10.0, log=True)}  # what `unlearnkit tune` searches (causal LMs)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        IdkDPO(beta=self.beta)  # validates beta
        check_reduction(self.retain_reduction, "idk_po: retain_reduction")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, IdkDPO("forget", self.beta)), (self.retain_weight, NLL("retain", self.retain_reduction)))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        return idk_tables(model, task.forget, setup.adapter, reference=self.reference, batch_size=self.train.batch_size,
                          device=setup.device)
