"""l1_sparse: fine-tune on the retain set with an ℓ1 penalty on the weights whose weight decays linearly to zero."""

from __future__ import annotations

from collections.abc import Mapping

import math
from dataclasses import dataclass
from typing import Any, ClassVar


from ..errors import ConfigError
from ..objectives import NLL, Weighted, weighted
from ..objectives.classifier import DecayingL1
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, register_method
from ..searchspace import FloatRange


@register_method
@dataclass(frozen=True)
class L1Sparse(GradientMethod):
    """ℓ1-sparse unlearning (Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023): fine-tune on the retain set
    with loss CE_retain + α_t·‖θ‖₁, α_t = alpha·(1 − t/T) over the T steps of the budget.

    The penalty pushes the model toward a sparse solution while it forgets by fine-tuning; its weight
    falls to zero so that the final steps are plain fine-tuning and recover accuracy. Inferred where the
    paper leaves details open: ‖θ‖₁ sums every parameter including biases (reference code); the decay is
    per optimizer step rather than per epoch (the reference code steps α once per epoch), so α_t reaches 0
    at the end of the budget, the last update using alpha/T; the fine-tuning part (budget, SGD with
    momentum, cosine learning rate) equals the ``finetune`` defaults so that the two differ only by the
    penalty. alpha = 1e-4 is the value in public run scripts of the reference implementation (``FT_prune``, SGD lr 0.01,
    constant). With the cosine learning rate and momentum 0.9 here, the penalty alone would shrink each weight by
    about 0.02 over 3 Fashion-MNIST epochs (1,266 steps), the scale of a trained MLP's small weights; on digits
    (30 steps) its effect is negligible and the run is close to ``finetune``.
    """

    train: TrainConfig = TrainConfig(epochs=3.0, lr=0.05, schedule="cosine")
    alpha: float = 1e-4

    epoch_stream: ClassVar[str] = "retain"
    name: ClassVar[str] = "l1_sparse"
    paper: ClassVar[str] = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"
    version: ClassVar[str] = "1"  # bump when its numbers change
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-3, 0.2, log=True), "epochs": FloatRange(0.05, 5.0, log=True),
                                                      "alpha": FloatRange(1e-6, 1e-3, log=True)}  # what `unlearnkit tune` searches (classifiers)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"l1_sparse: alpha must be a finite number >= 0 (0 disables the penalty), got {self.alpha}.")

    def objective(self, task: Task, refs: References) -> Weighted:
        terms: list[tuple[float, Any]] = [(1.0, NLL("retain"))]
        if self.alpha > 0:
            terms.append((1.0, DecayingL1(self.alpha, "retain")))
        return weighted(*terms)
