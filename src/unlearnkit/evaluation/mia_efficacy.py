"""mia_efficacy: SalUn's SVC membership attack (on confidence by default), reported as the share of the forget
set predicted non-member; optionally SalUn's other features and its training-privacy split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..seeding import np_rng
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric, roc_summary

FEATURES = ("confidence", "correctness", "entropy", "m_entropy", "prob")
LOG_FLOOR = 1e-30  # Song & Mittal's code (and SalUn's MIA.py) take log(max(p, 1e-30))


def entropy_feature(probs: np.ndarray) -> np.ndarray:
    """Prediction entropy −Σ_i p_i log p_i per row, with 0 · log 0 = 0 (as SalUn's ``SVC_MIA.entropy``)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


def modified_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Modified entropy (Song & Mittal, USENIX Security 2021): −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i), logs
    floored at 1e-30. SalUn's ``SVC_MIA.m_entropy`` takes log p where log(1 − p) is meant and indexes the true
    class across the whole batch (fixed in Unlearn-Sparse PR #14); this is the paper's formula, as in its MIA.py."""
    p = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(p))
    y = np.asarray(labels, dtype=np.int64)
    weight = p.copy()
    weight[rows, y] = 1 - p[rows, y]
    log_term = np.log(np.maximum(1 - p, LOG_FLOOR))
    log_term[rows, y] = np.log(np.maximum(p[rows, y], LOG_FLOOR))
    return -(weight * log_term).sum(axis=1)


def svc_features(out: dict[str, np.ndarray], feature: str) -> np.ndarray:
    """The SVC's input (n, d) for one split's outputs (``EvalContext.outputs``): the true-class probability, the 0/1
    correctness of the prediction, entropy or modified entropy of the softmax (d = 1), or the softmax vector (d = classes)."""
    if feature == "confidence":
        return out["p_true"][:, None]
    if feature == "correctness":
        return out["correct"][:, None]
    probs = torch.softmax(torch.as_tensor(out["logits"], dtype=torch.float64), dim=-1).numpy()
    if feature == "entropy":
        return entropy_feature(probs)[:, None]
    if feature == "m_entropy":
        return modified_entropy(probs, out["labels"])[:, None]
    if feature == "prob":
        return probs
    raise ConfigError(f"mia_efficacy: feature must be one of {list(FEATURES)}, got {feature!r}.")


@register_metric
@dataclass(frozen=True)
class MIAEfficacy(Metric):
    """MIA-Efficacy (Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023, App. C.3;
    SalUn): an RBF SVC (C=3, gamma="auto") on a per-example feature, trained on retain examples (member) vs test
    examples (non-member), applied to the forget set; efficacy = |forget predicted non-member| / |forget|. Higher =
    more forgotten. ``max_train`` caps each side of the training set (random subsample) to bound SVC cost. Also
    reported: the attack's AUC and TPR at 1% FPR, forget vs the test examples the SVC did not train on (all test
    examples when none are left over, noted in ``info``).

    ``feature`` is one of SalUn's ``SVC_MIA`` features: ``confidence`` (p(y|x), default: the one both papers report,
    ``SVC_MIA_forget_efficacy['confidence']``), ``correctness`` (1 if the prediction is right, else 0), ``entropy``,
    ``m_entropy`` (``modified_entropy``: the paper's formula, not SalUn's buggy one) or ``prob`` (the softmax vector).
    Correctness goes through the same SVC, as in ``SVC_MIA.py`` (Song & Mittal's own benchmark, SalUn's ``MIA.py``,
    thresholds it instead: member iff correct). On a 0/1 feature the SVC predicts, for each value, the side with more
    training examples there, so it is that rule whenever retain examples are right more often than test ones and
    test examples are wrong more often than retain ones.

    ``training_privacy`` adds SalUn's ``SVC_MIA_training_privacy``: a second SVC on the same feature, trained on n
    random retain examples (member) and n random test examples (non-member), n = half the test set (capped by half
    the retain set and ``max_train``; SalUn takes the first n of each), evaluated on all the other retain and test
    examples: training_privacy = ½ (share of held-out retain predicted member + share of held-out test
    predicted non-member); 0.5 = no membership leak. It is about the retain set, not forgetting: values only, no
    evidence. Its draws are separate from the efficacy's, so efficacy does not change with it."""

    max_train: int = 2000
    C: float = 3.0
    floor: float = 0.02
    feature: Literal["confidence", "correctness", "entropy", "m_entropy", "prob"] = "confidence"
    training_privacy: bool = False

    name = "mia_efficacy"
    paper = "Jia et al., NeurIPS 2023"
    modalities = ("classifier",)

    def __post_init__(self) -> None:
        if self.max_train < 2:
            raise ConfigError(f"mia_efficacy: max_train must be >= 2, got {self.max_train}.")
        if self.feature not in FEATURES:
            raise ConfigError(f"mia_efficacy: feature must be one of {list(FEATURES)}, got {self.feature!r}.")

    def svc(self, members: np.ndarray, nonmembers: np.ndarray) -> Any:
        from sklearn.svm import SVC

        x = np.r_[members, nonmembers]
        y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
        return SVC(C=self.C, gamma="auto", kernel="rbf").fit(x, y), x, y

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        rng = np_rng("mia_efficacy", ctx.seed, task.fingerprint)
        retain = svc_features(ctx.outputs(model, "retain"), self.feature)
        test = svc_features(ctx.outputs(model, "test"), self.feature)
        n = min(len(test), len(retain), self.max_train)
        pos = retain[rng.choice(len(retain), n, replace=False)]
        neg_idx = rng.choice(len(test), n, replace=False)
        clf, x, y = self.svc(pos, test[neg_idx])
        forget = ctx.outputs(model, "forget")
        forget_x = svc_features(forget, self.feature)
        pred = clf.predict(forget_x)
        efficacy = float(np.mean(pred == 0))
        train_acc = float(clf.score(x, y))
        held_out = np.setdiff1d(np.arange(len(test)), neg_idx)
        nonmembers = test[held_out] if len(held_out) else test
        roc = roc_summary(clf.decision_function(forget_x), clf.decision_function(nonmembers))
        values = {"efficacy": efficacy, "attack_train_accuracy": train_acc, **roc.values}
        per_example = {"predicted_member.forget": (forget["ids"], pred.astype(np.float64))}
        info: dict[str, Any] = {"n_train_per_side": n, "auc_nonmembers": "held-out test" if len(held_out) else "all test (none held out)",
                                "feature": self.feature}
        if self.training_privacy:
            tp_values, tp_per_example, info["training_privacy_n_train_per_side"] = self.privacy(ctx, model, task, retain, test)
            values.update(tp_values)
            per_example.update(tp_per_example)
        return self.result(
            values,
            per_example=per_example,
            curves={"roc": roc.curve},
            evidence=(Evidence(key="mia_efficacy.efficacy", value=efficacy, role="forget", remembers="lower", floor=self.floor,
                               resolution=1 / len(forget["ids"]), bounds=(0.0, 1.0)),),
            info=info,
        )

    def privacy(self, ctx: EvalContext, model: nn.Module, task: Task, retain: np.ndarray,
                test: np.ndarray) -> tuple[dict[str, float], dict[str, Any], int]:
        """SalUn's training-privacy MIA: SVC on n retain vs n test examples (n = half the test set, capped), scored on
        the other retain and test examples."""
        n = min(len(test) // 2, len(retain) // 2, self.max_train)
        if n < 1:
            raise ConfigError(f"mia_efficacy: training_privacy needs at least 2 retain and 2 test examples, "
                              f"got {len(retain)} and {len(test)}.")
        rng = np_rng("mia_efficacy.training_privacy", ctx.seed, task.fingerprint)
        r_perm, t_perm = rng.permutation(len(retain)), rng.permutation(len(test))
        clf, _, _ = self.svc(retain[r_perm[:n]], test[t_perm[:n]])
        r_held, t_held = np.sort(r_perm[n:]), np.sort(t_perm[n:])
        member_pred, nonmember_pred = clf.predict(retain[r_held]), clf.predict(test[t_held])
        member_rate, nonmember_rate = float(np.mean(member_pred == 1)), float(np.mean(nonmember_pred == 0))
        roc = roc_summary(clf.decision_function(retain[r_held]), clf.decision_function(test[t_held]), prefix="training_privacy.")
        values = {"training_privacy": 0.5 * (member_rate + nonmember_rate), "training_privacy.member_rate_retain": member_rate,
                  "training_privacy.nonmember_rate_test": nonmember_rate,
                  "training_privacy.auc": roc.values["training_privacy.auc"]}
        ids_r, ids_t = ctx.outputs(model, "retain")["ids"], ctx.outputs(model, "test")["ids"]
        per_example = {"training_privacy.predicted_member.retain": (ids_r[r_held], member_pred.astype(np.float64)),
                       "training_privacy.predicted_member.test": (ids_t[t_held], nonmember_pred.astype(np.float64))}
        return values, per_example, n
