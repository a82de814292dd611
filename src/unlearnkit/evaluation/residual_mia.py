"""residual_mia: membership inference on regression residuals (a smaller error suggests a member)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric, roc_summary

NONMEMBER_SPLITS = ("test", "holdout")


def member_score(out: dict[str, np.ndarray]) -> np.ndarray:
    """Membership score, larger = more likely a member: minus the per-example squared error."""
    return -np.asarray(out["loss"], dtype=np.float64)


@register_metric
@dataclass(frozen=True)
class ResidualMIA(Metric):
    """Membership inference on regression residuals (Yeom et al., CSF 2018; Tarun et al., ICML 2023).

    The loss-threshold attack on squared errors: score(x) = −(f(x) − y)²; AUC of forget examples (members)
    against ``nonmembers`` (test or holdout) and TPR at 1% / 0.1% FPR. 0.5 = indistinguishable; the verdict
    compares the AUC with the retrain band (role forget, higher AUC = still remembered). The authors train
    an RBF SVC on the L1 loss (retain = member vs test) and report the share of forget examples predicted
    member; sweeping every threshold of the squared error instead (an ROC) needs no attack training and
    also gives the low-FPR rates."""

    nonmembers: Literal["test", "holdout"] = "test"
    floor: float = 0.02

    name = "residual_mia"
    paper = "Yeom et al., CSF 2018; Tarun et al., ICML 2023"
    modalities = ("regression",)

    def __post_init__(self) -> None:
        if self.nonmembers not in NONMEMBER_SPLITS:
            raise ConfigError(f"residual_mia: nonmembers must be one of {list(NONMEMBER_SPLITS)}, got {self.nonmembers!r}.")
        if not self.floor >= 0:
            raise ConfigError(f"residual_mia: floor must be >= 0, got {self.floor}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        members = ctx.outputs(model, "forget")
        others = ctx.outputs(model, self.nonmembers)
        roc = roc_summary(member_score(members), member_score(others))
        return self.result(
            roc.values,
            per_example={"score.forget": (members["ids"], member_score(members))},
            curves={"roc": roc.curve},
            evidence=(Evidence(key="residual_mia.auc", value=roc.values["auc"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)),),
            info={"nonmembers": self.nonmembers, "n_members": len(members["ids"]), "n_nonmembers": len(others["ids"])},
        )
