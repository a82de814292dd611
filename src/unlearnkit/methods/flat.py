"""flat: f-divergence loss adjustment between "I don't know" and the forget answers, forget data only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from torch import nn

from ..objectives.lm import DIVERGENCES, IDK_ANSWERS, Divergence, flat_terms, idk_pairs
from ..objectives.lm import FLAT as FLATLoss
from ..references import References
from ..searchspace import Choice
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, LM_TRAIN, GradientMethod, Setup, register_method


@register_method
@dataclass(frozen=True)
class FLAT(GradientMethod):
    """FLAT, Forget data only Loss AjustmenT (Wang et al., "LLM Unlearning via Loss Adjustment with Only Forget Data", ICLR 2025).

    L = −g(P̄_template) + f*(g(P̄_forget)): the variational (f-GAN) form of an f-divergence between the template
    ("I don't know") answers and the forget answers of the same questions, maximised. P̄ is the batch mean of each
    example's mean answer-token probability. (g, f*∘g) as in the FLAT code:
    ``tv`` (default, FLAT's config): g(v) = ½·tanh v, f*(g(v)) = ½·tanh v;
    ``kl``: g(v) = v, f*(g(v)) = exp(v − 1);
    ``js``: g(v) = log 2 − log(1 + e^−v), f*(g(v)) = log(1 + e^v) − log 2;
    ``pearson``: g(v) = v, f*(g(v)) = v²/4 + v.
    No retain data and no reference model: the objective reads the forget stream and its IDK variants only.

    Inferred: P̄ averages over answer tokens only (the FLAT code averages the per-position probabilities over every
    position of the batch, prompt and padding included as zeros, which shrinks P̄ by the answer fraction); the IDK
    answer of each step is one variant of ``data.profiles.variant(forget, "idk", k)``, k drawn with the step
    generator. Defaults: ``tv``; 5 epochs (FLAT's config) with AdamW, lr 1e-4, weight decay 0.01, batch 8.
    """

    train: TrainConfig = replace(LM_TRAIN, epochs=5.0)
    divergence: Divergence = "tv"

    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    name: ClassVar[str] = "flat"
    paper: ClassVar[str] = "Wang et al., LLM Unlearning via Loss Adjustment with Only Forget Data, ICLR 2025"
    version: ClassVar[str] = "1"  # bump when its numbers change
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "divergence": Choice(("kl", "js", "tv", "pearson"))}  # what `unlearnkit tune` searches (causal LMs)
    divergences: ClassVar[tuple[str, ...]] = DIVERGENCES

    def __post_init__(self) -> None:
        super().__post_init__()
        flat_terms(self.divergence)  # validates

    def objective(self, task: Task, refs: References) -> FLATLoss:
        return FLATLoss(self.divergence, "forget")

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        pairs = idk_pairs(task.forget)
        return {IDK_ANSWERS: pairs}, {"idk_answers": len(pairs)}
