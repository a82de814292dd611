"""grad_diff (NegGrad+): ascend on the forget set while descending on the retain set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from ..objectives import NLL, Ascent, Weighted, weighted
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method


@register_method
@dataclass(frozen=True)
class GradDiff(GradientMethod):
    """Gradient difference, loss = −forget_weight·L_forget + retain_weight·L_retain (NegGrad+, Kurmanji et al., NeurIPS 2023)."""

    train: TrainConfig = TrainConfig(epochs=3.0, lr=0.01, schedule="cosine")
    forget_weight: float = 0.5
    retain_weight: float = 1.0

    name: ClassVar[str] = "grad_diff"
    paper: ClassVar[str] = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")  # the adapter's per-example loss: answer NLL for LMs

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_weight < 0 or self.retain_weight < 0:
            raise ConfigError("grad_diff: forget_weight and retain_weight must be >= 0.")

    def objective(self, task: Task, refs: References) -> Weighted:
        return weighted((self.forget_weight, Ascent("forget")), (self.retain_weight, NLL("retain")))
