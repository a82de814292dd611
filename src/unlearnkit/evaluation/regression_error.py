"""regression_error and regression_gap: squared and absolute error per split, and the gap to retraining."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric

GAP_SPLITS = ("forget", "retain", "test")


def split_mse(ctx: EvalContext, model: nn.Module, split: str) -> float:
    return float(ctx.outputs(model, split)["loss"].mean())


@register_metric
@dataclass(frozen=True)
class RegressionError(Metric):
    """Mean squared and mean absolute error per split (Tarun et al., Deep Regression Unlearning, ICML 2023).

    The regression analogue of forget/retain/test accuracy: mse_s = mean_i (f(x_i) − y_i)², mae_s =
    mean_i |f(x_i) − y_i| over split s (averaged over output dimensions).

    Evidence: forget MSE (role forget; *lower* error = still remembered), retain and test MSE (role
    utility; *lower* error = better utility). ``floor`` is the smallest band half-width, in squared
    target units: the bundled regression datasets standardise targets, so 0.05 is 5% of the target
    variance, i.e. R² differences below 0.05 are not read as differences (inferred: retrained seeds of a
    small regressor often agree on the retain MSE to ±0.002, far tighter than any practical difference)."""

    floor: float = 0.05

    name = "regression_error"
    higher_is_better = False
    paper = "Tarun et al., Deep Regression Unlearning, ICML 2023"
    modalities = ("regression",)

    def __post_init__(self) -> None:
        if not self.floor >= 0:
            raise ConfigError(f"regression_error: floor must be >= 0, got {self.floor}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        for split in task.splits():
            out = ctx.outputs(model, split)
            values[f"mse_{split}"] = float(out["loss"].mean())
            values[f"mae_{split}"] = float(out["abs_error"].mean())
            per_example[f"squared_error.{split}"] = (out["ids"], out["loss"])
        evidence = (
            Evidence(key="regression_error.mse_forget", value=values["mse_forget"], role="forget", remembers="lower", floor=self.floor),
            Evidence(key="regression_error.mse_retain", value=values["mse_retain"], role="utility", remembers="lower", floor=self.floor),
            Evidence(key="regression_error.mse_test", value=values["mse_test"], role="utility", remembers="lower", floor=self.floor),
        )
        return self.result(values, per_example=per_example, evidence=evidence)


@register_metric
@dataclass(frozen=True)
class RegressionGap(Metric):
    """MSE gap to the retrained models per split (SalUn's "Avg. Gap", Fan et al., ICLR 2024, for regression).

    gap_s = |MSE_s(θ_u) − mean_r MSE_s(θ_r)| over the retrained seeds r, for s in forget/retain/test;
    avg_gap = mean of the three. Lower is better; in squared target units."""

    name = "regression_gap"
    higher_is_better = False
    needs = frozenset({"retrained"})
    paper = "Fan et al., ICLR 2024 (Avg. Gap), for regression as in Tarun et al., ICML 2023"
    modalities = ("regression",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'regression_gap'")
        values: dict[str, float] = {}
        for split in GAP_SPLITS:
            reference = float(np.mean([split_mse(ctx, r, split) for r in refs.retrained_seeds]))
            values[f"retrain_mse_{split}"] = reference
            values[split] = abs(split_mse(ctx, model, split) - reference)
        values["avg_gap"] = float(np.mean([values[s] for s in GAP_SPLITS]))
        return self.result(values, info={"n_retrained": len(refs.retrained_seeds)})
