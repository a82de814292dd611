"""nomus: MUFAC/MUCAC's normalised machine-unlearning score — test accuracy blended with how close a
loss-based membership attack is to chance. Reported only: it is not evidence for the verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..seeding import np_rng
from ..types import MetricResult, Task
from .base import EvalContext, Metric, register_metric
from .threshold_mia import nonmember_outputs


def nomus_score(test_accuracy: float, mia_accuracy: float, utility_weight: float = 0.5) -> float:
    """NoMUS = λ·test accuracy + (1 − λ)·(1 − 2·|MIA accuracy − 0.5|), λ = ``utility_weight``."""
    return float(utility_weight * test_accuracy + (1.0 - utility_weight) * (1.0 - 2.0 * abs(mia_accuracy - 0.5)))


def balanced(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger side, without replacement, to the size of the smaller one."""
    n = min(len(members), len(nonmembers))

    def take(a: np.ndarray) -> np.ndarray:
        return a if len(a) == n else a[np.sort(rng.choice(len(a), n, replace=False))]

    return take(np.asarray(members, dtype=np.float64)), take(np.asarray(nonmembers, dtype=np.float64))


def loss_mia_accuracy(member_losses: np.ndarray, nonmember_losses: np.ndarray, *, n_splits: int, test_size: float,
                      rng: np.random.Generator) -> list[float]:
    """Held-out accuracies of a logistic regression on the per-example loss (member = 1), one per split of
    a StratifiedShuffleSplit over the balanced member / non-member sample (MUFAC's "simple MIA")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    members, nonmembers = balanced(member_losses, nonmember_losses, rng)
    n = len(members)
    n_test = int(np.ceil(test_size * 2 * n))
    if n_test < 2 or 2 * n - n_test < 2:
        raise ConfigError(f"nomus: {n} member(s) and {n} non-member(s) are too few for test_size={test_size} "
                          "(each split needs both kinds in its train and test parts).")
    x = np.r_[members, nonmembers][:, None]
    y = np.r_[np.ones(n), np.zeros(n)]
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=int(rng.integers(2**31 - 1)))
    return cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").tolist()


@register_metric
@dataclass(frozen=True)
class NoMUS(Metric):
    """NoMUS, normalised machine-unlearning score (Choi & Na, Towards Machine Unlearning Benchmarks: Forgetting
    the Personal Identities in Facial Recognition Systems, AAAI-24 PPAI workshop, arXiv 2311.02240):
    NoMUS = λ·Acc_test + (1 − λ)·(1 − 2·|MIA_acc − 0.5|), λ = ``utility_weight`` = 0.5; higher is better.

    MIA_acc: logistic regression on the per-example cross-entropy loss, members = forget examples and
    non-members = test examples (for class forgetting, the test examples of the forgotten classes),
    balanced by subsampling, mean held-out accuracy over a StratifiedShuffleSplit with ``n_splits`` = 10
    splits of ``test_size`` = 0.1 (scikit-learn's default, as in the MUFAC code). forgetting_score =
    |MIA_acc − 0.5| (what the MUFAC README's "MIA" row reports).

    Not evidence: NoMUS rewards test accuracy above retraining's and any MIA accuracy near 0.5, so a
    higher score does not mean closer to retraining (the retrained model is often out-scored).

    Inferred: MUFAC subsamples the forget losses to the number of non-members (it has more forget than
    unseen examples); here whichever side is larger is subsampled. For class forgetting, Acc_test is on
    the test examples of the remaining classes (the forgotten classes' test accuracy is meant to drop);
    otherwise on the whole test set."""

    utility_weight: float = 0.5
    n_splits: int = 10
    test_size: float = 0.1

    name = "nomus"
    higher_is_better = True
    paper = "Choi & Na, arXiv 2311.02240 (MUFAC/MUCAC)"
    modalities = ("classifier",)

    def __post_init__(self) -> None:
        if not 0.0 <= self.utility_weight <= 1.0:
            raise ConfigError(f"nomus: utility_weight (λ) must be in [0, 1], got {self.utility_weight}.")
        if self.n_splits < 1:
            raise ConfigError(f"nomus: n_splits must be >= 1, got {self.n_splits}.")
        if not 0.0 < self.test_size < 1.0:
            raise ConfigError(f"nomus: test_size must be in (0, 1), got {self.test_size}.")

    def utility_accuracy(self, model: nn.Module, ctx: EvalContext) -> tuple[float, str]:
        test = ctx.outputs(model, "test")
        classes = ctx.task.whole_classes()
        if classes is None:
            return float(test["correct"].mean()), "test"
        keep = ~np.isin(test["labels"], classes)
        if not keep.any():
            raise ConfigError(f"nomus: the test set has no example outside the forgotten classes {classes}.")
        return float(test["correct"][keep].mean()), f"test (classes other than {classes})"

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        members = ctx.outputs(model, "forget")["loss"]
        others, nonmember_label = nonmember_outputs(ctx, model, "auto")
        accuracies = loss_mia_accuracy(members, others["loss"], n_splits=self.n_splits, test_size=self.test_size,
                                       rng=np_rng("nomus", ctx.seed, task.fingerprint))
        mia = float(np.mean(accuracies))
        test_accuracy, utility_label = self.utility_accuracy(model, ctx)
        values = {"nomus": nomus_score(test_accuracy, mia, self.utility_weight), "mia_accuracy": mia,
                  "forgetting_score": abs(mia - 0.5), "test_accuracy": test_accuracy}
        info = {"nonmembers": nonmember_label, "utility": utility_label, "split_accuracies": accuracies,
                "n_per_side": min(len(members), len(others["loss"])), "evidence": "none (reported only)"}
        return self.result(values, info=info)
