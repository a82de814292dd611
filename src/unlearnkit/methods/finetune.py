"""finetune: continue training on the retain set only (catastrophic forgetting of the forget set)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..objectives import NLL, Reduction, check_reduction
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, GradientMethod, register_method
from ..searchspace import FloatRange


@register_method
@dataclass(frozen=True)
class Finetune(GradientMethod):
    """Fine-tune on the retain set (Warnecke et al., Machine Unlearning of Features and Labels, NDSS 2023; the FT baseline of SalUn).

    The loss is the adapter's on the retain batch. ``retain_reduction`` (language models): ``token`` (default) = the
    answer NLL summed over every answer token of the batch over their number, Hugging Face's loss; ``example`` = the
    mean of per-example length-normalised NLLs (this method's version 1). With one target per example (classifiers,
    regression) the two are the same number."""

    train: TrainConfig = TrainConfig(epochs=3.0, lr=0.05, schedule="cosine")
    retain_reduction: Reduction = "token"

    modalities: ClassVar[tuple[str, ...]] = ("classifier", "regression", "causal_lm")
    name: ClassVar[str] = "finetune"
    paper: ClassVar[str] = "Warnecke et al., NDSS 2023"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: language models' retain NLL over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = dict(LM_BUDGET_SPACE)  # what `unlearnkit tune` searches (causal LMs)
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.2, log=True), "epochs": FloatRange(0.05, 5.0, log=True)}  # what `unlearnkit tune` searches (classifiers)
    epoch_stream: ClassVar[str] = "retain"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_reduction(self.retain_reduction, "finetune: retain_reduction")

    def objective(self, task: Task, refs: References) -> NLL:
        return NLL("retain", self.retain_reduction)
