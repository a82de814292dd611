"""grad_diff (NegGrad+): ascend on the forget set while descending on the retain set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..objectives import NLL, Ascent, Reduction, Weighted, check_reduction, weighted
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, GradientMethod, register_method
from ..searchspace import FloatRange


@register_method
@dataclass(frozen=True)
class GradDiff(GradientMethod):
    """Gradient difference, loss = −forget_weight·L_forget + retain_weight·L_retain (NegGrad+, Kurmanji et al., NeurIPS 2023).

    L = the adapter's loss: cross-entropy for classifiers, answer NLL for language models. ``forget_reduction`` and
    ``retain_reduction``:
    ``token`` (default) = the retain NLL summed over every answer token of the batch over their number, Hugging Face's
    loss as in OpenUnlearning's and the NPO code's GradDiff; ``example`` = the mean of per-example length-normalised
    NLLs (this method's version 1 for both terms). With one target per example (classifiers) the two are the same number."""

    train: TrainConfig = TrainConfig(epochs=3.0, lr=0.01, schedule="cosine")
    forget_weight: float = 0.5
    retain_weight: float = 1.0
    retain_reduction: Reduction = "token"
    forget_reduction: Reduction = "token"

    name: ClassVar[str] = "grad_diff"
    paper: ClassVar[str] = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"
    version: ClassVar[str] = "3"  # bump when its numbers change (2: retain NLL over the batch's answer tokens; 3: forget NLL too)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "forget_weight": FloatRange(0.05, 2.0, log=True), "retain_weight": FloatRange(0.1, 10.0, log=True)}  # what `unlearnkit tune` searches (causal LMs)
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.1, log=True), "epochs": FloatRange(0.1, 5.0, log=True),
                                                      "forget_weight": FloatRange(0.05, 2.0, log=True)}  # what `unlearnkit tune` searches (classifiers)
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")  # the adapter's per-example loss: answer NLL for LMs

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_weight < 0 or self.retain_weight < 0:
            raise ConfigError("grad_diff: forget_weight and retain_weight must be >= 0.")
        check_reduction(self.retain_reduction, "grad_diff: retain_reduction")
        check_reduction(self.forget_reduction, "grad_diff: forget_reduction")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, Ascent("forget", self.forget_reduction)), (self.retain_weight, NLL("retain", self.retain_reduction)))
