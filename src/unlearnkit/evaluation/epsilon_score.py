"""epsilon_score: the NeurIPS 2023 Machine Unlearning Challenge forgetting score."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..ensembles import logit_confidence
from ..errors import ConfigError
from ..references import References
from ..seeding import np_rng
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric
from .lira import retrained_ensemble

EPS_CAP = 50.0


def rule_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """ε of each decision rule: max(0, log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR); rules with
    exactly one of FPR, FNR zero are discarded (−inf here); FPR = FNR = 0 (perfect separation) is +inf."""
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    out = np.full(fpr.shape, -np.inf)
    both = (fpr == 0) & (fnr == 0)
    ok = (fpr > 0) & (fnr > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr[ok], 1e-300, None)) - np.log(fnr[ok])
        b = np.log(np.clip(1 - delta - fnr[ok], 1e-300, None)) - np.log(fpr[ok])
    out[ok] = np.maximum(0.0, np.maximum(a, b))
    out[both] = np.inf
    return out


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = 1e-5, spread_ratio: float = 0.01) -> float:
    """Per-example ε from N unlearned and N retrained statistics (the challenge's procedure).

    If the spreads are degenerate (smaller/larger range < ``spread_ratio``), ε is the cap. Otherwise two rule
    families are scored, as in the challenge's code: single thresholds, "the distribution with the larger median
    if s ≥ t", and intervals, "the peakier distribution (smaller range; the smaller-median one on a tie) if
    l ≤ s ≤ r". Every threshold and interval between the pooled sample points is enumerated (the challenge scans
    a grid of 1/100), so each family's distinct FPR/FNR pairs are all covered; ε is the largest rule ε, capped at 50.
    """
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    pos, neg = (u, r) if np.median(u) >= np.median(r) else (r, u)
    spreads = sorted([np.ptp(pos), np.ptp(neg)])
    if spreads[1] == 0 or spreads[0] / spreads[1] < spread_ratio:
        return EPS_CAP
    pts = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[pts[0] - 1.0], (pts[:-1] + pts[1:]) / 2, [pts[-1] + 1.0]])
    pos_s, neg_s = np.sort(pos), np.sort(neg)
    # cumulative counts below each cut
    pos_below = np.searchsorted(pos_s, cuts)
    neg_below = np.searchsorted(neg_s, cuts)
    n_p, n_n = len(pos), len(neg)
    # single thresholds: positive if s >= cut
    fnr = pos_below / n_p
    fpr = (n_n - neg_below) / n_n
    best = rule_epsilon(fpr, fnr, delta).max()
    # intervals [cut_i, cut_j), i < j: the peakier distribution if inside (FPR = outer inside, FNR = inner outside)
    inside_p = (pos_below[None, :] - pos_below[:, None]) / n_p
    inside_n = (neg_below[None, :] - neg_below[:, None]) / n_n
    upper = np.triu(np.ones_like(inside_p, dtype=bool), k=1)
    inner, outer = (inside_p, inside_n) if np.ptp(pos) < np.ptp(neg) else (inside_n, inside_p)
    best = max(best, rule_epsilon(outer[upper], 1 - inner[upper], delta).max())
    return float(min(best, EPS_CAP))


def memorisation_shift(forget_u: np.ndarray, forget_r: np.ndarray, test_u: np.ndarray, test_r: np.ndarray) -> float:
    """How much more confident (in the statistic's units) the unlearned ensemble is on forget examples than the
    retrained one, beyond its difference on test examples: median over forget of (med_u − med_r) minus the same
    over test. The test term cancels global calibration differences between ensembles, so a positive value means
    the forget set is remembered and a negative one that it was pushed past what retraining gives."""
    forget = np.median(np.median(forget_u, 0) - np.median(forget_r, 0))
    test = np.median(np.median(test_u, 0) - np.median(test_r, 0))
    return float(forget - test)


def bucket_points(eps: np.ndarray, n_models: int, width: float = 0.5) -> np.ndarray:
    """2^−k for ε in bucket k (ε ∈ [k·w, (k+1)·w)); 0 at or above ⌈ln(N − 1)⌉."""
    top = math.ceil(math.log(max(n_models - 1, 2)))
    k = np.floor(np.asarray(eps) / width)
    return np.where(np.asarray(eps) >= top, 0.0, 2.0 ** (-k))


@register_metric
@dataclass(frozen=True)
class EpsilonScore(Metric):
    """NeurIPS 2023 Machine Unlearning Challenge score (Triantafillou et al., arXiv 2406.09073): per forget example,
    ε from the best threshold/interval separating s = log p_y − log(1 − p_y) over N unlearned vs N retrained
    models (δ = 1e-5); points 2^−k for ε in bucket k of width 0.5; F = mean points; score = F ×
    (retain acc ratio) × (test acc ratio), unlearned over retrained ensemble means. 1 = indistinguishable.
    With small N even two retrained ensembles do not reach F = 1, so the verdict's evidence is F's shortfall
    against a second independent retrained ensemble, signed by ``memorisation_shift`` (+: remembers, −: pushed
    past retraining).

    Unlearned ensemble: the method under test applied N times (seeds) to the original; retrained ensemble:
    N models trained on the retain set (vectorised, cached). For ``retrain`` itself, a second independent
    retrained ensemble. With no method (the original), N copies of the original (degenerate: ε capped)."""

    n_models: int = 16
    n_examples: int = 500
    delta: float = 1e-5
    seed: int = 0
    floor: float = 0.1

    name = "epsilon_score"
    higher_is_better = True
    needs = frozenset({"original", "train_config", "model_factory"})
    paper = "Triantafillou et al., arXiv 2406.09073"
    version = "2"  # bump when its numbers change (2: the interval rule predicts the peakier distribution inside)
    modalities = ("classifier",)
    noise_floor_skip = True

    def __post_init__(self) -> None:
        if self.n_models < 4:
            raise ConfigError(f"epsilon_score: n_models must be >= 4, got {self.n_models}.")
        if not 0 < self.delta < 1:
            raise ConfigError(f"epsilon_score: delta must be in (0, 1), got {self.delta}.")

    def unlearned_ensemble(self, task: Task, refs: References, ctx: EvalContext) -> list[nn.Module]:
        method = ctx.method
        if method is None:
            return [refs.original] * self.n_models
        if getattr(method, "name", "") == "retrain":
            return retrained_ensemble(ctx, refs, task, self.n_models, self.seed, which=1)
        key = ("eps-unlearned", repr(method), self.n_models, self.seed, id(refs.original))
        if key not in ctx.shared:
            ctx.shared[key] = [method.unlearn(copy.deepcopy(refs.original), task, refs, rng=np_rng("eps-unlearn", self.seed, i),
                                              device=ctx.device).model.eval() for i in range(self.n_models)]
        return ctx.shared[key]

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        self.require_needs(refs)
        rng = np_rng("eps-examples", self.seed, task.fingerprint)
        n = min(self.n_examples, len(task.forget))
        forget = task.forget.subset(np.sort(rng.choice(len(task.forget), n, replace=False)), "forget")
        test = task.test.subset(np.sort(rng.choice(len(task.test), min(n, len(task.test)), replace=False)), "test")
        unlearned = self.unlearned_ensemble(task, refs, ctx)
        retrained = retrained_ensemble(ctx, refs, task, self.n_models, self.seed, which=0)

        def stats(models: list[nn.Module], split: Any = forget) -> np.ndarray:
            return np.stack([logit_confidence(ctx.adapter.outputs(m, split, batch_size=ctx.batch_size, device=ctx.device)["logits"],
                                              split.labels) for m in models])

        s_u, s_r = stats(unlearned), stats(retrained)
        eps = np.array([example_epsilon(s_u[:, i], s_r[:, i], self.delta) for i in range(n)])
        points = bucket_points(eps, self.n_models)
        quality = float(points.mean())
        # what a perfect unlearner scores with N models: a second, independent retrained ensemble
        ref_key = ("eps-reference", self, task.fingerprint)
        if ref_key not in ctx.shared:
            s_r2 = stats(retrained_ensemble(ctx, refs, task, self.n_models, self.seed, which=1))
            ctx.shared[ref_key] = bucket_points(np.array([example_epsilon(s_r2[:, i], s_r[:, i], self.delta) for i in range(n)]), self.n_models)
        ref_points = ctx.shared[ref_key]
        reference = float(ref_points.mean())
        shift = memorisation_shift(s_u, s_r, stats(unlearned, test), stats(retrained, test))
        excess = (reference - quality) * (1.0 if shift >= 0 else -1.0)
        null_sd = float(np.sqrt((points.var() + ref_points.var()) / n))

        def mean_acc(models: list[nn.Module], split: str) -> float:
            return float(np.mean([ctx.outputs(m, split)["correct"].mean() for m in models]))

        ra = mean_acc(unlearned, "retain") / mean_acc(retrained, "retain")
        ta = mean_acc(unlearned, "test") / mean_acc(retrained, "test")
        score = quality * ra * ta
        values = {"score": score, "forgetting_quality": quality, "reference_quality": reference, "signed_excess": excess,
                  "retain_ratio": ra, "test_ratio": ta, "median_epsilon": float(np.median(eps)), "median_shift": shift,
                  "n_models": float(self.n_models), "n_examples": float(n)}
        # evidence: how much less forgetting quality than two retrained ensembles have between them, signed by the
        # direction of the difference (+: more confident on the forget set, i.e. remembers; −: pushed past retraining)
        evidence = (Evidence(key="epsilon_score.signed_excess", value=excess, role="forget", remembers="higher", floor=self.floor, strong=True,
                             null_mean=0.0, null_sd=null_sd),)
        return self.result(values, per_example={"epsilon.forget": (forget.ids, eps)}, evidence=evidence,
                           info={"method_under_test": None if ctx.method is None else ctx.method.name})
