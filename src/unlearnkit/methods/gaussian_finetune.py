"""gaussian_finetune: replace the forget targets by Gaussian draws and fine-tune on the relabelled training set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..analysis.targets import gaussian_draws, relabelled_targets
from ..objectives.classifier import TableTargets
from ..references import References
from ..train import TrainConfig
from ..types import Task
from .base import GradientMethod, Setup, register_method

TRAINING_TARGETS = "training_targets"


@register_method
@dataclass(frozen=True)
class GaussianFinetune(GradientMethod):
    """Gaussian amnesiac fine-tuning (Tarun, Chundawat, Mandal & Kankanhalli, Deep Regression Unlearning, ICML 2023).

    Fit N(μ, σ²) to the training targets (forget ∪ retain; per output dimension, σ with ddof = 1), replace
    every forget target by one independent draw z_i ~ N(μ, σ²), drawn once from ``rng`` before training,
    and fine-tune on the relabelled training set D' = {(x_i, z_i) : i ∈ F} ∪ R with the squared error:
        min_θ mean_{(x, t) ∈ D'} (f_θ(x) − t)²
    The forget examples are mixed with the retain examples in one shuffled stream in their natural
    proportion (one epoch = one pass over D'), as in the authors' code (which draws once from the mean and
    standard deviation of all training targets and fine-tunes one epoch with Adam). The draws are global
    (around μ), not per-example around the model's prediction: they carry no information about x, which
    is what removes the forget examples' input–target association. Defaults: the authors' optimiser (Adam)
    with a budget sized for tabular regression sets of a few hundred to a few thousand examples (30 epochs,
    lr 3e-3 with cosine decay, batch 32); the authors' single epoch at 1e-3 assumes tens of thousands."""

    train: TrainConfig = TrainConfig(epochs=30.0, batch_size=32, optimizer="adam", lr=3e-3, schedule="cosine")

    name: ClassVar[str] = "gaussian_finetune"
    paper: ClassVar[str] = "Tarun et al., Deep Regression Unlearning, ICML 2023"
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("regression",)
    forget_kinds: ClassVar[tuple[str, ...]] = ("random", "ids")
    epoch_stream: ClassVar[str] = "train"

    def objective(self, task: Task, refs: References) -> TableTargets:
        return TableTargets(TRAINING_TARGETS, "train", "relabelled")

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        draws, gaussian = gaussian_draws(task, setup.rng, self.name)
        return {TRAINING_TARGETS: relabelled_targets(task, draws)}, {"gaussian": gaussian.to_json(), "replaced": len(draws)}
