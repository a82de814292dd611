"""mia_nn: class-forgetting membership inference from the probabilities on the forgotten class's
nearest-neighbour classes (MIA-NN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..seeding import np_rng
from ..types import Evidence, MetricResult, Task
from .base import CLASS_MEMBERSHIP_REPORTED_ONLY, EvalContext, Metric, register_metric, roc_summary
from .threshold_mia import nonmember_outputs


def neighbour_classes(reference_probs: Sequence[np.ndarray], forgotten: Sequence[int], k: int) -> tuple[list[int], np.ndarray]:
    """The ``k`` classes that receive the most mean probability from the reference (retrained) models
    on forget-class inputs: mass = mean over models of the mean probability vector over inputs; the
    forgotten classes are excluded; ties go to the lower class index. Returns (classes, mass)."""
    mass = np.mean([np.asarray(p, dtype=np.float64).mean(axis=0) for p in reference_probs], axis=0)
    excluded = set(forgotten)
    candidates = [c for c in np.argsort(-mass, kind="stable").tolist() if c not in excluded]
    if k > len(candidates):
        raise ConfigError(f"mia_nn: k must be at most the number of remaining classes ({len(candidates)}), got {k}.")
    return candidates[:k], mass


def attack_features(logits: np.ndarray, classes: Sequence[int], log_probs: bool) -> np.ndarray:
    """The model's (log-)probabilities on ``classes``, one row per example (softmax in float64)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=1)[:, list(classes)]
    return logp if log_probs else np.exp(logp)


def cross_validated_attack_scores(members: np.ndarray, nonmembers: np.ndarray, *, folds: int, C: float,
                                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Held-out attack scores (standardised features -> class-balanced logistic regression, stratified
    k-fold: every example is scored by the attacker trained on the other folds). Returns
    (member scores, non-member scores); larger = "more likely a member"."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(len(members), len(nonmembers)) < folds:
        raise ConfigError(f"mia_nn: folds={folds} needs at least that many members and non-members, "
                          f"got {len(members)} and {len(nonmembers)}.")
    x = np.r_[members, nonmembers]
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    attacker = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    scores = cross_val_predict(attacker, x, y, cv=cv, method="decision_function")
    return scores[: len(members)], scores[len(members):]


@register_metric
@dataclass(frozen=True)
class MIANN(Metric):
    """Membership inference via nearest-neighbour classes, MIA-NN (Ebrahimpour-Boroojeny, Wang & Sundaram,
    On the Necessity of Output Distribution Reweighting for Effective Class Unlearning, arXiv 2506.20893).

    A model retrained without class c sends c's inputs to c's nearest-neighbour classes with a
    characteristic mass; unlearning methods redistribute that mass differently on the examples they
    were run on. Neighbour classes N = the ``k`` classes with the largest mean probability that the
    retrained models (all seeds, averaged) give to forget-set inputs. Features per example: the model's
    log-probabilities (``log_probs``; raw probabilities otherwise) on N and on the forgotten classes.
    Members: the forget set (trained on, then unlearned); non-members: the test examples of the
    forgotten classes. Attacker: class-balanced logistic regression on standardised features, scored
    by stratified ``folds``-fold cross-validation; reported: AUC and TPR at 1% / 0.1% FPR.
    0.5 = members look like unseen examples of the class, as after retraining; higher remembers more
    (the verdict compares the AUC with the retrain band, which noise_floor evaluates on the retrained
    seeds, each with neighbour classes taken from the other seeds).

    Inferred (the abstract leaves it open; no public code): the choice of members/non-members, k = 3,
    the logistic-regression attacker with cross-validation, and log-probability features (a linear
    attacker on raw probabilities cannot weigh orders of magnitude, which is how a retrained model's
    small neighbour probabilities differ from an unlearned model's). Class forgetting only."""

    k: int = 3
    folds: int = 5
    C: float = 1.0
    log_probs: bool = True
    floor: float = 0.03

    name = "mia_nn"
    version = "2"  # 2: its evidence is reported only (class forgetting: no power measured)
    needs = frozenset({"retrained"})
    paper = "Ebrahimpour-Boroojeny, Wang & Sundaram, arXiv 2506.20893"
    modalities = ("classifier",)
    forget_kinds = ("classes",)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"mia_nn: k (number of neighbour classes) must be >= 1, got {self.k}.")
        if self.folds < 2:
            raise ConfigError(f"mia_nn: folds must be >= 2, got {self.folds}.")
        if not self.C > 0:
            raise ConfigError(f"mia_nn: C (inverse regularisation strength) must be > 0, got {self.C}.")
        if self.floor < 0:
            raise ConfigError(f"mia_nn: floor must be >= 0, got {self.floor}.")

    def neighbours(self, refs: References, forgotten: Sequence[int], ctx: EvalContext) -> tuple[list[int], np.ndarray]:
        """Neighbour classes of the forgotten classes according to every retrained seed in ``refs``."""
        probs = [np.exp(log_softmax(ctx.outputs(r, "forget")["logits"].astype(np.float64), axis=1)) for r in refs.retrained_seeds]
        return neighbour_classes(probs, forgotten, self.k)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        forgotten = task.whole_classes()
        if forgotten is None:
            raise ConfigError(f"mia_nn needs class forgetting (forget: {{kind: classes, classes: [...]}}); task {task.name!r} "
                              f"forgets {dict(task.info.get('forget', {})) or 'an explicit set of examples'}.")
        refs.require("retrained", by="metric 'mia_nn'")
        classes, mass = self.neighbours(refs, forgotten, ctx)
        columns = classes + list(forgotten)
        members = ctx.outputs(model, "forget")
        others, label = nonmember_outputs(ctx, model, "test_same_classes")
        member_scores, nonmember_scores = cross_validated_attack_scores(
            attack_features(members["logits"], columns, self.log_probs), attack_features(others["logits"], columns, self.log_probs),
            folds=self.folds, C=self.C, rng=np_rng("mia_nn", ctx.seed, task.fingerprint))
        roc = roc_summary(member_scores, nonmember_scores)
        values = {**roc.values, "neighbour_mass": float(mass[classes].sum())}
        info = {"neighbour_classes": classes, "neighbour_mass": mass[classes].tolist(), "features": "log-probabilities" if self.log_probs
                else "probabilities", "nonmembers": label, "n_members": len(member_scores), "n_nonmembers": len(nonmember_scores),
                "n_retrained": len(refs.retrained_seeds)}
        evidence = (Evidence(key="mia_nn.auc", value=values["auc"], role="forget", remembers="higher", floor=self.floor, strong=True, bounds=(0.0, 1.0),
                             reported_only=CLASS_MEMBERSHIP_REPORTED_ONLY),)
        return self.result(values, per_example={"attack_score.forget": (members["ids"], member_scores)}, curves={"roc": roc.curve},
                           evidence=evidence, info=info)
