"""random_label: train the forget set toward random wrong labels, keeping the retain set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import TaskError
from ..objectives import NLL, RandomLabels, Weighted, weighted
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method
from ..searchspace import FloatRange


def random_label_objective(task: Task, retain_weight: float) -> Weighted:
    if task.n_classes is None:
        raise TaskError("Random relabelling needs a classification task with n_classes.")
    return weighted((1.0, RandomLabels(task.n_classes, "forget")), (retain_weight, NLL("retain")))


@register_method
@dataclass(frozen=True)
class RandomLabel(GradientMethod):
    """Random labelling (Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; RL in SalUn):
    CE to random wrong labels on forget + retain_weight·CE on retain, summed per step (SalUn's Eq. 6)."""

    train: TrainConfig = TrainConfig(epochs=1.0, lr=0.01)
    retain_weight: float = 3.0

    name: ClassVar[str] = "random_label"
    paper: ClassVar[str] = "Golatkar et al., CVPR 2020"
    version: ClassVar[str] = "1"  # bump when its numbers change
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.1, log=True), "epochs": FloatRange(0.05, 2.0, log=True),
                                                      "retain_weight": FloatRange(0.5, 10.0, log=True)}  # what `unlearnkit tune` searches (classifiers)
    epoch_stream: ClassVar[str] = "retain"  # an epoch is a pass over the retain set, as in SalUn's code

    def objective(self, task: Task, refs: References) -> Weighted:
        return random_label_objective(task, self.retain_weight)
