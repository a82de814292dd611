"""Evidence: registered metrics and attacks, and the evaluation battery."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError, EmptySelection, MissingReference, TaskError
from ..lm.guard import is_guard
from ..references import References
from ..types import Evidence, MetricResult, Task
from ..verdict import Verdict, decide, decide_without_oracle, no_oracle_power
from ..registry import import_submodules
from .base import EvalContext, Metric, build_metric, register_metric, roc_summary, softmax_stats

import_submodules(__name__)  # every metric module registers itself; a new metric is one file

DEFAULT_BATTERIES = {
    "classifier": ("accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "relearn", "noise_floor"),
    "regression": ("regression_error", "regression_gap", "residual_mia", "relearn", "noise_floor"),
    "causal_lm": ("answer_prob", "rouge_l", "truth_ratio", "forget_quality", "model_utility", "extraction_strength", "min_k",
                  "privleak", "paraphrase_probe", "relearn", "noise_floor"),
}
DEFAULT_BATTERY = DEFAULT_BATTERIES["classifier"]


STRONG_ATTACKS = ("privacy_score", "hidden_probe", "mia_nn", "lira", "u_lira", "label_only", "epsilon_score", "klom")
"""The classifier evidence beyond the default battery: the strong attacks that decide most verdicts in
docs/results/attacks.md."""


def strong_battery(n_shadows: int = 8, n_models: int = 8, *, also: Sequence[str] = ()) -> list[Any]:
    """The full classifier battery the benchmarks judge by: the default evidence, every strong attack (LiRA / U-LiRA /
    label-only on ``n_shadows`` shadow models, ε-score / KLoM on ensembles of ``n_models``), then ``also`` (e.g. scores
    reported only), noise_floor last. Metric specs as an experiment's ``metrics`` takes them."""
    sized = {**{n: {"n_shadows": n_shadows} for n in ("lira", "u_lira", "label_only")},
             **{n: {"n_models": n_models} for n in ("epsilon_score", "klom")}}
    cheap = [n for n in DEFAULT_BATTERY if n != "noise_floor"]
    return [*cheap, *({"name": n, "params": sized[n]} if n in sized else n for n in (*STRONG_ATTACKS, *also)), "noise_floor"]


def default_battery(modality: str) -> tuple[str, ...]:
    """The standard evidence for a task modality (cheap tier: outputs, population MIA, relearning, noise floor)."""
    if modality not in DEFAULT_BATTERIES:
        raise ConfigError(f"No default metrics for modality {modality!r}; list them explicitly (known: {sorted(DEFAULT_BATTERIES)}).")
    return DEFAULT_BATTERIES[modality]


def not_applicable(metric: Any, task: Task) -> str | None:
    """Why ``metric`` does not apply to ``task`` (its modality or forget-set kind), or None."""
    kind = task.info.get("forget", {}).get("kind")
    kinds = getattr(metric, "forget_kinds", None)
    if kinds is not None and kind is not None and kind not in kinds:
        return f"not applicable to {kind!r} forget sets (it needs {list(kinds)})"
    modalities = getattr(metric, "modalities", None)
    if modalities is not None and task.modality not in modalities:
        return f"not applicable to the {task.modality!r} modality (it supports {list(modalities)})"
    check = getattr(metric, "why_not_applicable", None)  # optional: a metric's own test of the task's data
    if check is not None:
        reason = check(task)
        if reason:
            return f"not applicable: {reason}"
    return None


def evaluate(
    model: nn.Module, task: Task, refs: References, metrics: Sequence[Any], ctx: EvalContext, *, strict: bool = True
) -> tuple[dict[str, MetricResult], dict[str, str]]:
    """Run every metric on ``model``. Returns (results, missing): with ``strict=False`` a metric whose reference is
    missing, or that cannot run on this task (its data too small or of the wrong kind), is skipped and named in
    ``missing`` with the reason instead of aborting the battery. Each computed metric's wall time (seconds) is left in
    ``ctx.seconds`` (reset per call; a metric's first call can include work later ones reuse, e.g. the noise floor)."""
    ctx.battery = list(metrics)
    ctx.seconds = {}
    results: dict[str, MetricResult] = {}
    missing: dict[str, str] = {}
    model.eval()
    for metric in metrics:
        reason = not_applicable(metric, task)
        if reason is not None:
            missing[metric.name] = reason
            continue
        try:
            t0 = time.perf_counter()
            results[metric.name] = metric.compute(model, task, refs, ctx)
            ctx.seconds[metric.name] = time.perf_counter() - t0
        except (MissingReference, TaskError, EmptySelection, ConfigError) as exc:  # this task or its references lack what it needs
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
    seconds: dict[str, float] = field(default_factory=dict)  # each computed metric's wall time on this model

    def summary(self) -> dict[str, float]:
        return {f"{name}.{k}": v for name, r in self.results.items() if name != "noise_floor" for k, v in r.values.items()}


def assess(
    model: nn.Module,
    task: Task,
    refs: References,
    metrics: Sequence[Any] | None = None,
    *,
    ctx: EvalContext | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Assessment:
    """Evaluate ``model`` with ``metrics`` (names or built metrics; default: the standard battery) and decide its verdict.
    Reuse one ``ctx`` across models of the same task so the retrained models' outputs are computed once."""
    from ..adapters import get_adapter

    metrics = [build_metric(m) if isinstance(m, str) else m for m in (default_battery(task.modality) if metrics is None else metrics)]
    ctx = ctx or EvalContext(task, get_adapter(task), device=device, seed=seed)
    results, missing = evaluate(model, task, refs, metrics, ctx, strict=False)
    seconds = dict(ctx.seconds)
    evidence = [e for r in results.values() for e in r.evidence]
    if task.info.get("oracle") is False and refs.retrained is None:
        return Assessment(results, verdict_without_oracle(model, task, refs, metrics, ctx, results, missing), missing, seconds)
    verdict = decide(evidence, results.get("noise_floor"), missing=[f"{k}: {v}" for k, v in missing.items()],
                     tests=ks_forget_losses(model, refs, ctx), weights_untouched=is_guard(model))
    return Assessment(results, verdict, missing, seconds)


def verdict_without_oracle(model: nn.Module, task: Task, refs: References, metrics: Sequence[Any], ctx: EvalContext,
                           results: dict[str, MetricResult], missing: dict[str, str]) -> Verdict:
    """The verdict of a task with no retrained oracle (``task.info["oracle"] is False``, the ``knowledge`` data): the same
    metrics on the original model give, for forget evidence ``<metric>.forget``, its value on the facts it does not know
    (``<metric>``'s ``test`` value: list ``test`` among the metric's splits) and, for utility evidence, the original's own
    value — or the level the metric itself measured for a model without the knowledge (``info["no_oracle_levels"]``, e.g.
    ``icl_probe``: the original reading unknown facts from the prompt; for robustness evidence, the weight-level attacks on
    the original over the facts it does not know); ``verdict.decide_without_oracle`` bands them. A forget evidence whose
    metric keeps per-fact values (one ``*.forget`` array, and the original's ``*.test``) is banded by a permutation test
    that the forget facts now score like the facts never known, and is reported only where the original does not score
    the facts it knows beyond those it does not (``verdict.no_oracle_power``: it has no power there)."""
    original = refs.require("original", by="the verdict of a task without a retrained oracle")
    orig = results if original is model else evaluate(original, task, refs, metrics, ctx, strict=False)[0]
    return no_oracle_verdict(results, orig, missing, weights_untouched=is_guard(model))


def forget_pool(result: MetricResult, original: MetricResult) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(the original's per-fact values on the forget facts, on the facts it does not know (``test``), ``result``'s
    per-fact values on the forget facts), or None when the metric keeps no single per-fact forget array."""
    keys = [k for k in result.per_example if k.endswith(".forget")]
    if len(keys) != 1:
        return None
    stem = keys[0][: -len("forget")]
    if f"{stem}test" not in original.per_example or keys[0] not in original.per_example:
        return None
    sample = np.asarray(result.per_example[keys[0]][1], dtype=np.float64)
    known = np.asarray(original.per_example[keys[0]][1], dtype=np.float64)
    unknown = np.asarray(original.per_example[f"{stem}test"][1], dtype=np.float64)
    return (known, unknown, sample) if np.isfinite(sample).any() and np.isfinite(unknown).sum() >= 2 else None


def no_oracle_verdict(results: Mapping[str, MetricResult], orig: Mapping[str, MetricResult], missing: Mapping[str, str], *,
                      weights_untouched: bool = False) -> Verdict:
    """``verdict_without_oracle`` from the evaluated results: ``results`` of the model under test, ``orig`` of the
    original (the same mapping when the model is the original)."""
    forget_levels: dict[str, float] = {}
    utility_levels: dict[str, float] = {}
    robustness_levels: dict[str, float] = {}
    sources: dict[str, str] = {}
    pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    evidence: list[Evidence] = []
    for name, result in results.items():
        stated = result.info.get("no_oracle_levels") or {}  # a metric that measured a model without the knowledge itself
        for ev in result.evidence:
            evidence.append(ev)
            ref = orig.get(name)
            if ref is None:
                continue
            if ev.role == "forget" and ev.key == f"{name}.forget" and "test" in ref.values:
                forget_levels[ev.key] = float(ref.values["test"])
                found = None if ev.reported_only else forget_pool(result, ref)
                if found is not None:
                    known, unknown, sample = found
                    why = no_oracle_power(known, unknown, ev.remembers)
                    if why is not None:
                        evidence[-1] = replace(ev, reported_only=why)
                    else:
                        pools[ev.key] = (unknown, sample)
            elif ev.role == "robustness" and ev.key in stated:
                robustness_levels[ev.key] = float(stated[ev.key])
            elif ev.role == "utility" and ev.key in stated:
                utility_levels[ev.key], sources[ev.key] = float(stated[ev.key]), "unknown facts"
            elif ev.role == "utility":
                match = [e.value for e in ref.evidence if e.key == ev.key]
                if match:
                    utility_levels[ev.key] = float(match[0])
    return decide_without_oracle(evidence, forget_levels, utility_levels, missing=[f"{k}: {v}" for k, v in missing.items()],
                                 sources=sources, robustness_levels=robustness_levels, weights_untouched=weights_untouched,
                                 forget_pools=pools)


def ks_forget_losses(model: nn.Module, refs: References, ctx: EvalContext) -> dict[str, Any]:
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


__all__ = ["DEFAULT_BATTERIES", "DEFAULT_BATTERY", "STRONG_ATTACKS", "default_battery", "strong_battery", "Assessment", "assess", "EvalContext", "Metric", "build_metric", "evaluate", "ks_forget_losses", "register_metric", "verdict_without_oracle", "no_oracle_verdict", "forget_pool", "roc_summary", "softmax_stats"]
