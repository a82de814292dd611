"""holdout_match: make the forget set's loss distribution that of never-trained data, under the model being unlearned."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError, TaskError
from ..objectives import NLL, MatchedLoss, Weighted, weighted
from ..references import References
from ..searchspace import FloatRange
from ..train import TrainConfig
from ..types import Task
from .base import LM_BUDGET_SPACE, GradientMethod, check_weights, register_method


@register_method
@dataclass(frozen=True)
class HoldoutMatch(GradientMethod):
    """Holdout-matched forgetting (this project's recipe; builds on Jang et al., ACL 2023's holdout-level forgetting
    threshold and Kurmanji et al., NeurIPS 2023 (SCRUB)'s warning that a forget set pushed past unseen data is itself a
    membership signal).

    A model retrained without a random forget set treats it as unseen data: its losses there are distributed like its
    losses on never-trained examples, and the examples it gets wrong are the atypical ones the original had to memorise.
    Each step draws a forget batch, a holdout batch and a retain batch and minimises
    ``forget_weight`` · MatchedLoss + ``retain_weight`` · CE(retain): the forget losses, sorted, are pulled (Huber, δ =
    ``delta``, on log-losses with ``scale="log"``) to the holdout batch's loss quantiles at their ranks, both under the current model (``objectives.MatchedLoss``;
    the holdout losses carry no gradient — those examples are read, never trained on). The hardest forget examples
    take the largest unseen losses, i.e. they become the ones the model gets wrong. Unlike gradient ascent the forget
    term has a minimum, at the unseen-data level, and a bounded pull per example, so more steps do not over-forget; unlike the
    holdout-level stopping rule it matches the whole distribution under the model as it changes (a loss-threshold
    membership attack compares distributions), not the input model's mean. An epoch is a pass over the forget set.

    The holdout is the task's ``holdout`` split when it has one, else its ``test`` split (forward passes only). Not for
    whole classes (a retrained model never predicts the class, while unseen examples of it are predicted well): refused,
    as ``stop_at='holdout'`` is."""

    train: TrainConfig = TrainConfig(epochs=10.0, lr=3e-4, optimizer="adam", batch_size=64)
    forget_weight: float = 1.0
    retain_weight: float = 3.0
    delta: float = 1.0
    scale: str = "log"

    name: ClassVar[str] = "holdout_match"
    paper: ClassVar[str] = "this project's recipe (Jang et al., ACL 2023 threshold; Kurmanji et al., NeurIPS 2023)"
    version: ClassVar[str] = "1"  # bump when its numbers change
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "regression", "causal_lm")
    search_space: ClassVar[Mapping[str, Any] | None] = {"lr": FloatRange(1e-4, 3e-3, log=True), "epochs": FloatRange(1.0, 20.0, log=True),
                                                      "retain_weight": FloatRange(0.3, 10.0, log=True)}  # what `unlearnkit tune` searches (classifiers)
    lm_search_space: ClassVar[Mapping[str, Any] | None] = {**LM_BUDGET_SPACE, "retain_weight": FloatRange(0.3, 10.0, log=True)}  # (causal LMs)
    epoch_stream: ClassVar[str] = "forget"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        MatchedLoss(delta=self.delta, scale=self.scale)  # validates delta and scale (the objective's own checks)
        if self.forget_weight == 0:
            raise ConfigError("holdout_match: forget_weight must be > 0 (with 0 nothing is unlearned), got 0.")

    def why_not_applicable(self, task: Task) -> str | None:
        if task.whole_classes() is not None:
            return ("matches forget losses to unseen examples' losses; when whole classes are forgotten, unseen examples of "
                    "those classes are predicted as well as the forget set, so there is nothing to match (use a class method)")
        return None

    def objective(self, task: Task, refs: References) -> Weighted:
        holdout = "holdout" if task.holdout is not None and len(task.holdout) else "test"
        if len(getattr(task, holdout)) < 2:
            raise TaskError(f"holdout_match needs at least 2 never-trained ({holdout}) examples to read unseen data's losses; "
                            f"the task has {len(getattr(task, holdout))}.")
        return weighted((self.forget_weight, MatchedLoss("forget", holdout, self.delta, self.scale)), (self.retain_weight, NLL("retain")))
