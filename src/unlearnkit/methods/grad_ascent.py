"""grad_ascent: maximise the loss on the forget set (unbounded objective; watch the guard)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..objectives import Ascent, Reduction, check_reduction
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, GradientMethod, register_method
from ..searchspace import FloatRange


@register_method
@dataclass(frozen=True)
class GradAscent(GradientMethod):
    """Gradient ascent on the forget set (Thudi et al., Unrolling SGD, EuroS&P 2022; the GA baseline).

    ``forget_reduction``: ``token`` (default) = the forget NLL over every answer token of the batch, the negated Hugging
    Face loss of OpenUnlearning's and the NPO code's GradAscent; ``example`` = the mean of per-example length-normalised
    NLLs (version 1). The same number for classifiers (one target per example)."""

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.0005)
    forget_reduction: Reduction = "token"

    name: ClassVar[str] = "grad_ascent"
    paper: ClassVar[str] = "Thudi et al., EuroS&P 2022"
    version: ClassVar[str] = "2"  # bump when its numbers change (2: forget NLL averaged over the batch's answer tokens)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = dict(LM_BUDGET_SPACE)  # what `unlearnkit tune` searches (causal LMs)
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-5, 1e-2, log=True), "epochs": FloatRange(0.1, 3.0, log=True)}  # what `unlearnkit tune` searches (classifiers)
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")  # the adapter's per-example loss: answer NLL for LMs

    def __post_init__(self) -> None:
        super().__post_init__()
        check_reduction(self.forget_reduction, "grad_ascent: forget_reduction")

    def objective(self, task: Task, refs: References) -> Ascent:
        return Ascent("forget", self.forget_reduction)
