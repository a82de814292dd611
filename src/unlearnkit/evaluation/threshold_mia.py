"""threshold_mia: population membership inference by thresholding loss, confidence or entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, class_membership_reported_only, register_metric, roc_summary

# each score oriented so that larger means "more likely a member"
SCORES = {
    "loss": lambda o: -o["loss"],
    "confidence": lambda o: o["p_true"],
    "entropy": lambda o: -o["entropy"],
}


def nonmember_outputs(ctx: EvalContext, model: nn.Module, nonmembers: str) -> tuple[dict[str, np.ndarray], str]:
    """Outputs on the non-member split; ``auto`` uses the test examples of the forgotten classes for
    class forgetting (so the attack is not just a class detector) and the whole test set otherwise."""
    if nonmembers in ("auto", "test_same_classes"):
        out = ctx.outputs(model, "test")
        classes = ctx.task.whole_classes()
        if classes is None:
            if nonmembers == "test_same_classes":
                raise ConfigError("nonmembers: test_same_classes needs a class-forgetting task.")
            return out, "test"
        keep = np.isin(out["labels"], classes)
        if not keep.any():
            raise ConfigError(f"The test set has no example of the forgotten classes {classes}.")
        return {k: v[keep] for k, v in out.items()}, f"test (classes {classes})"
    if nonmembers in ("test", "holdout"):
        return ctx.outputs(model, nonmembers), nonmembers
    raise ConfigError(f"nonmembers must be auto, test, test_same_classes or holdout, got {nonmembers!r}.")


@register_metric
@dataclass(frozen=True)
class ThresholdMIA(Metric):
    """Threshold membership inference (Yeom et al., CSF 2018; Song & Mittal, USENIX Sec 2021):
    score = −loss, p(y|x) or −entropy; AUC of forget (members) vs non-members and TPR at 1% / 0.1% FPR.
    0.5 = indistinguishable; the verdict compares the loss AUC with the retrain band."""

    nonmembers: Literal["auto", "test", "test_same_classes", "holdout"] = "auto"
    scores: tuple[str, ...] = ("loss", "confidence", "entropy")
    floor: float = 0.02

    name = "threshold_mia"
    version = "2"  # 2: its evidence is reported only on class forgetting
    paper = "Yeom et al., CSF 2018"
    modalities = ("classifier",)

    def __post_init__(self) -> None:
        unknown = [s for s in self.scores if s not in SCORES]
        if unknown or not self.scores:
            raise ConfigError(f"threshold_mia: scores must be a non-empty subset of {sorted(SCORES)}, got {list(self.scores)}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        members = ctx.outputs(model, "forget")
        others, label = nonmember_outputs(ctx, model, self.nonmembers)
        values: dict[str, float] = {}
        curves: dict[str, dict[str, list[float]]] = {}
        per_example = {}
        for score in self.scores:
            roc = roc_summary(SCORES[score](members), SCORES[score](others), prefix=f"{score}.")
            values.update(roc.values)
            curves[f"roc.{score}"] = roc.curve
            per_example[f"{score}.forget"] = (members["ids"], SCORES[score](members))
        evidence = []
        if "loss" in self.scores:
            evidence.append(Evidence(key="threshold_mia.loss.auc", value=values["loss.auc"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0),
                                     reported_only=class_membership_reported_only(task)))
        return self.result(values, per_example=per_example, curves=curves, evidence=tuple(evidence), info={"nonmembers": label})
