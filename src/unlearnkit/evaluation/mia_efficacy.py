"""mia_efficacy: SalUn's SVC-on-confidence membership attack, reported as the share of the forget
set predicted non-member."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..seeding import np_rng
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric, roc_summary


@register_metric
@dataclass(frozen=True)
class MIAEfficacy(Metric):
    """MIA-Efficacy (Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023, App. C.3;
    SalUn): an RBF SVC (C=3, gamma="auto") on the true-class confidence p(y|x), trained on retain
    examples (member) vs test examples (non-member), applied to the forget set;
    efficacy = |forget predicted non-member| / |forget|. Higher = more forgotten.
    ``max_train`` caps each side of the training set (random subsample) to bound SVC cost. Also reported:
    the attack's AUC and TPR at 1% FPR, forget vs the test examples the SVC did not train on (all test
    examples when none are left over, noted in ``info``)."""

    max_train: int = 2000
    C: float = 3.0
    floor: float = 0.02

    name = "mia_efficacy"
    paper = "Jia et al., NeurIPS 2023"
    modalities = ("classifier",)

    def __post_init__(self) -> None:
        if self.max_train < 2:
            raise ConfigError(f"mia_efficacy: max_train must be >= 2, got {self.max_train}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        from sklearn.svm import SVC

        rng = np_rng("mia_efficacy", ctx.seed, task.fingerprint)
        retain = ctx.outputs(model, "retain")["p_true"]
        test = ctx.outputs(model, "test")["p_true"]
        n = min(len(test), len(retain), self.max_train)
        pos = retain[rng.choice(len(retain), n, replace=False)]
        neg_idx = rng.choice(len(test), n, replace=False)
        neg = test[neg_idx]
        x = np.r_[pos, neg][:, None]
        y = np.r_[np.ones(n), np.zeros(n)]
        clf = SVC(C=self.C, gamma="auto", kernel="rbf").fit(x, y)
        forget = ctx.outputs(model, "forget")
        pred = clf.predict(forget["p_true"][:, None])
        efficacy = float(np.mean(pred == 0))
        train_acc = float(clf.score(x, y))
        held_out = np.setdiff1d(np.arange(len(test)), neg_idx)
        nonmembers = test[held_out] if len(held_out) else test
        roc = roc_summary(clf.decision_function(forget["p_true"][:, None]), clf.decision_function(nonmembers[:, None]))
        return self.result(
            {"efficacy": efficacy, "attack_train_accuracy": train_acc, **roc.values},
            per_example={"predicted_member.forget": (forget["ids"], pred.astype(np.float64))},
            curves={"roc": roc.curve},
            evidence=(Evidence(key="mia_efficacy.efficacy", value=efficacy, role="forget", remembers="lower", floor=self.floor,
                               resolution=1 / len(forget["ids"]), bounds=(0.0, 1.0)),),
            info={"n_train_per_side": n, "auc_nonmembers": "held-out test" if len(held_out) else "all test (none held out)"},
        )
