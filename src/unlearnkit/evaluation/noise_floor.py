"""noise_floor: how much two "perfect" answers differ — every metric across the retrained seeds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import MetricResult, Task
from ..verdict import seed_spread
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class NoiseFloor(Metric):
    """Retrain noise floor (the seed-to-seed spread of retraining, as used for calibration in
    Triantafillou et al., NeurIPS 2023 Machine Unlearning Challenge report, arXiv 2406.09073).

    Each retrained seed r is evaluated with every other metric of the battery, with the remaining
    seeds as its "retrained" references (leave-one-out). It records every evidence's values over the seeds
    (their mean and sd as its values) and floor; the verdict builds each evidence's band from them, the
    prediction interval for one more retrain, mean ± t_{1−α/(2m)}(R−1)·sd·√(1 + 1/R), widened to the
    evidence's absolute floor, for its whole Bonferroni family of m bands; α = family-wise false alarms."""

    alpha: float = 0.05

    name = "noise_floor"
    needs = frozenset({"retrained_seeds"})
    paper = "Triantafillou et al., arXiv 2406.09073"
    modalities = ("classifier", "regression", "causal_lm")

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"noise_floor: alpha must be in (0, 1), got {self.alpha}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        key = ("noise_floor", self, tuple(id(m) for m in refs.retrained_seeds), tuple(m for m in ctx.battery if m.name != self.name))
        if key not in ctx.shared:
            ctx.shared[key] = self._compute(task, refs, ctx)
        return ctx.shared[key]

    def _compute(self, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        from dataclasses import replace

        seeds = refs.require("retrained_seeds", by="metric 'noise_floor'")
        # metrics whose evidence carries its own null band (shadow/ensemble attacks) are not re-run per seed
        from . import not_applicable

        others = [m for m in ctx.battery if m.name != self.name and not getattr(m, "noise_floor_skip", False)
                  and not_applicable(m, task) is None]
        if not others:
            raise ConfigError("noise_floor needs other metrics in the battery to take the spread of.")
        evidence: dict[str, list[float]] = {}
        floors: dict[str, float] = {}
        scalars: dict[str, list[float]] = {}
        for i, model in enumerate(seeds):
            loo = replace(refs, retrained_seeds=tuple(s for j, s in enumerate(seeds) if j != i))
            for metric in others:
                result = metric.compute(model, task, loo, ctx)
                for ev in result.evidence:
                    if ev.null_mean is not None:
                        continue
                    evidence.setdefault(ev.key, []).append(ev.value)
                    floors[ev.key] = max(floors.get(ev.key, 0.0), ev.min_half_width)
                for k, v in result.values.items():
                    scalars.setdefault(f"{metric.name}.{k}", []).append(float(v))
        values: dict[str, float] = {}
        for k, vals in evidence.items():
            stat = seed_spread(vals)
            if stat is not None:
                values.update({f"{k}.mean": stat[0], f"{k}.sd": stat[1]})
        spread = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v} for k, v in scalars.items()}
        return MetricResult(self.name, values, None, info={"seed_values": evidence, "floors": floors, "spread": spread,
                                                           "R": len(seeds), "alpha": self.alpha})
