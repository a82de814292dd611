"""retrain_gap: |accuracy(model) − accuracy(retrained)| per split, and their average."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..references import References
from ..types import MetricResult, Task
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class RetrainGap(Metric):
    """Gap to retrain (SalUn's "Avg. Gap", Fan et al., ICLR 2024): gap_s = |acc_s(θ_u) − mean_r acc_s(θ_r)|
    for s in forget/retain/test over the retrained seeds r; avg_gap = mean of the three. Lower is better."""

    splits: tuple[str, ...] = ("forget", "retain", "test")

    name = "retrain_gap"
    higher_is_better = False
    needs = frozenset({"retrained"})
    paper = "Fan et al., ICLR 2024"
    modalities = ("classifier",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'retrain_gap'")
        values: dict[str, float] = {}
        for split in self.splits:
            own = float(ctx.outputs(model, split)["correct"].mean())
            ref = float(np.mean([ctx.outputs(r, split)["correct"].mean() for r in refs.retrained_seeds]))
            values[f"retrain_{split}"] = ref
            values[split] = abs(own - ref)
        values["avg_gap"] = float(np.mean([values[s] for s in self.splits]))
        return self.result(values, info={"n_retrained": len(refs.retrained_seeds)})
