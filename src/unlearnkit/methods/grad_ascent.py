"""grad_ascent: maximise the loss on the forget set (unbounded objective; watch the guard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..objectives import Ascent
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method


@register_method
@dataclass(frozen=True)
class GradAscent(GradientMethod):
    """Gradient ascent on the forget set (Thudi et al., Unrolling SGD, EuroS&P 2022; the GA baseline)."""

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.0005)

    name: ClassVar[str] = "grad_ascent"
    paper: ClassVar[str] = "Thudi et al., EuroS&P 2022"
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")  # the adapter's per-example loss: answer NLL for LMs

    def objective(self, task: Task, refs: References) -> Ascent:
        return Ascent("forget")
