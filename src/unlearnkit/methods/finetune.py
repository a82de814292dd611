"""finetune: continue training on the retain set only (catastrophic forgetting of the forget set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..objectives import NLL
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method


@register_method
@dataclass(frozen=True)
class Finetune(GradientMethod):
    """Fine-tune on the retain set (Warnecke et al., Machine Unlearning of Features and Labels, NDSS 2023; the FT baseline of SalUn)."""

    train: TrainConfig = TrainConfig(epochs=3.0, lr=0.05, schedule="cosine")

    modalities: ClassVar[tuple[str, ...]] = ("classifier", "regression", "causal_lm")
    name: ClassVar[str] = "finetune"
    paper: ClassVar[str] = "Warnecke et al., NDSS 2023"
    version: ClassVar[str] = "1"  # bump when its numbers change
    epoch_stream: ClassVar[str] = "retain"

    def objective(self, task: Task, refs: References) -> NLL:
        return NLL("retain")
