"""Evidence: registered metrics and attacks, and the evaluation battery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..errors import MissingReference
from ..types import MetricResult, Task
from ..verdict import Verdict, decide
from ..registry import import_submodules
from .base import EvalContext, Metric, build_metric, register_metric, roc_summary, softmax_stats

import_submodules(__name__)  # every metric module registers itself; a new metric is one file

DEFAULT_BATTERY = ("accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "relearn", "noise_floor")


def evaluate(
    model: nn.Module, task: Task, refs: Any, metrics: Sequence[Any], ctx: EvalContext, *, strict: bool = True
) -> tuple[dict[str, MetricResult], dict[str, str]]:
    """Run every metric on ``model``. Returns (results, missing): with ``strict=False`` a metric whose
    reference is missing is skipped and named in ``missing`` instead of raising MissingReference."""
    ctx.battery = list(metrics)
    results: dict[str, MetricResult] = {}
    missing: dict[str, str] = {}
    model.eval()
    for metric in metrics:
        try:
            results[metric.name] = metric.compute(model, task, refs, ctx)
        except MissingReference as exc:
            if strict:
                raise
            missing[metric.name] = str(exc)
    return results, missing


@dataclass
class Assessment:
    """Results of every metric on one model, and the verdict they support."""

    results: dict[str, MetricResult]
    verdict: Verdict
    missing: dict[str, str]

    def summary(self) -> dict[str, float]:
        return {f"{name}.{k}": v for name, r in self.results.items() if name != "noise_floor" for k, v in r.values.items()}


def assess(
    model: nn.Module,
    task: Task,
    refs: Any,
    metrics: Sequence[Any] | None = None,
    *,
    ctx: EvalContext | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Assessment:
    """Evaluate ``model`` with ``metrics`` (default: the standard battery) and decide its verdict.
    Reuse one ``ctx`` across models of the same task so the retrained models' outputs are computed once."""
    from ..adapters import get_adapter

    metrics = [build_metric(m) if isinstance(m, str) else m for m in (metrics or DEFAULT_BATTERY)]
    ctx = ctx or EvalContext(task, get_adapter(task), device=device, seed=seed)
    results, missing = evaluate(model, task, refs, metrics, ctx, strict=False)
    evidence = [e for r in results.values() for e in r.evidence]
    verdict = decide(evidence, results.get("noise_floor"), missing=[f"{k}: {v}" for k, v in missing.items()],
                     tests=ks_forget_losses(model, refs, ctx))
    return Assessment(results, verdict, missing)


def ks_forget_losses(model: nn.Module, refs: Any, ctx: EvalContext) -> dict[str, Any]:
    """Two-sample KS test of the forget examples' losses: model vs the first retrained model; and,
    as its noise floor, the same statistic between retrained seeds."""
    from scipy.stats import ks_2samp

    if refs.retrained is None:
        return {}
    ref = ctx.outputs(refs.retrained, "forget")["loss"]
    res = ks_2samp(ctx.outputs(model, "forget")["loss"], ref)
    floor = [float(ks_2samp(ctx.outputs(r, "forget")["loss"], ref).statistic) for r in refs.retrained_seeds[1:]]
    return {"ks_forget_loss": {"statistic": float(res.statistic), "pvalue": float(res.pvalue),
                               "retrain_seed_statistics": floor, "retrain_seed_max": float(np.max(floor)) if floor else None}}


__all__ = ["DEFAULT_BATTERY", "Assessment", "assess", "EvalContext", "Metric", "build_metric", "evaluate", "ks_forget_losses", "register_metric", "roc_summary", "softmax_stats"]
