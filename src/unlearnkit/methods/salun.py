"""salun: random labelling restricted to the most forget-salient weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..references import References
from ..selectors import BySaliency
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method
from ..searchspace import FloatRange
from .random_label import random_label_objective


@register_method
@dataclass(frozen=True)
class SalUn(GradientMethod):
    """SalUn (Fan et al., ICLR 2024): mask = top ``saliency_fraction`` of |Σ∇θ(−L_forget)| (global
    ranking; per-example forget losses summed, see ``by_saliency``); random-label + retain objective; masked-out
    weights never move (gradient, decay, state)."""

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.01)
    retain_weight: float = 3.0
    saliency_fraction: float = 0.5

    epoch_stream: ClassVar[str] = "retain"  # an epoch is a pass over the retain set, as in SalUn's code
    name: ClassVar[str] = "salun"
    paper: ClassVar[str] = "Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024"
    version: ClassVar[str] = "1"  # bump when its numbers change
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.1, log=True), "epochs": FloatRange(0.05, 2.0, log=True),
                                                      "retain_weight": FloatRange(0.5, 10.0, log=True), "saliency_fraction": FloatRange(0.05, 0.9)}  # what `unlearnkit tune` searches (classifiers)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.selector()  # validates saliency_fraction

    def selector(self) -> BySaliency:
        return BySaliency(self.saliency_fraction)

    def objective(self, task: Task, refs: References) -> Any:
        return random_label_objective(task, self.retain_weight)
