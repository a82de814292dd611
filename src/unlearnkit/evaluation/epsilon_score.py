"""epsilon_score: the NeurIPS 2023 Machine Unlearning Challenge forgetting score."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..ensembles import ensemble_split_sd, logit_confidence
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


THRESHOLDS_PER_UNIT = 100  # the challenge's grid: 100 thresholds per unit of the statistic
INTERVAL_BUFFER = 2.0  # right edges within ±2 of the peakier group's maximum; widths within ±2 of its range
N_LEFT_EDGES = int(math.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT))  # 400 left edges per right edge
SEARCHES = ("grid", "exhaustive")


def grid_thresholds(pooled: np.ndarray) -> np.ndarray:
    """The challenge's single thresholds: ⌈100·range⌉ evenly spaced from the pooled minimum to the maximum, built in
    float32 as the reference's ``torch.linspace`` does (returned as float64, the exact float32 values)."""
    lo, hi = float(pooled.min()), float(pooled.max())
    n = int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    return torch.linspace(lo, hi, n, dtype=torch.float32).numpy().astype(np.float64)


def grid_intervals(inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The challenge's intervals [l, r] for the peakier group ``inner`` (range w): right edges r evenly spaced from
    max − 2 to max + 2 (⌈100·(4 + max − min − w)⌉ of them, written as the reference computes the ends, min + w − 2 and
    max + 2); for each r, 400 left edges evenly spaced from r − w − 2 to r − w + 2. Returns (right (R,), left (R, 400))."""
    w = float(inner.max() - inner.min())
    lo, hi = float(inner.min()) + w - INTERVAL_BUFFER, float(inner.max()) + INTERVAL_BUFFER
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    left = np.linspace(right - w - INTERVAL_BUFFER, right - w + INTERVAL_BUFFER, N_LEFT_EDGES, axis=1)
    return right, left


def best_rule_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> float:
    """Largest rule ε of the rules given; 0 when every rule is discarded (exactly one of FPR, FNR zero)."""
    eps = rule_epsilon(fpr, fnr, delta)
    return float(eps.max()) if eps.size and eps.max() > 0 else 0.0


def _grid_epsilon(pos: np.ndarray, neg: np.ndarray, inner: np.ndarray, outer: np.ndarray, delta: float) -> float:
    pos_s, neg_s, in_s, out_s = np.sort(pos), np.sort(neg), np.sort(inner), np.sort(outer)
    # single thresholds: positive iff s >= t
    t = grid_thresholds(np.concatenate([pos, neg]))
    fnr = np.searchsorted(pos_s, t, "left") / len(pos)
    fpr = (len(neg) - np.searchsorted(neg_s, t, "left")) / len(neg)
    best = best_rule_epsilon(fpr, fnr, delta)
    # intervals: the peakier group iff l <= s <= r; counts inside = #(s <= r) - #(s < l), 0 when l > r
    right, left = grid_intervals(inner)

    def inside(sorted_vals: np.ndarray) -> np.ndarray:
        upto_r = np.searchsorted(sorted_vals, right, "right")[:, None]
        below_l = np.searchsorted(sorted_vals, left.ravel(), "left").reshape(left.shape)
        return np.clip(upto_r - below_l, 0, None).ravel()

    n_in, n_out = len(inner), len(outer)
    seen = np.zeros((n_in + 1) * (n_out + 1), dtype=bool)  # which (inner inside, outer inside) counts occur
    seen[inside(in_s) * (n_out + 1) + inside(out_s)] = True
    a, b = np.divmod(np.flatnonzero(seen), n_out + 1)
    return max(best, best_rule_epsilon(b / n_out, (n_in - a) / n_in, delta))


def _exhaustive_epsilon(pos: np.ndarray, neg: np.ndarray, inner_is_pos: bool, delta: float) -> float:
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
    best = best_rule_epsilon(fpr, fnr, delta)
    # intervals [cut_i, cut_j), i < j: the peakier distribution if inside (FPR = outer inside, FNR = inner outside)
    inside_p = (pos_below[None, :] - pos_below[:, None]) / n_p
    inside_n = (neg_below[None, :] - neg_below[:, None]) / n_n
    upper = np.triu(np.ones_like(inside_p, dtype=bool), k=1)
    inner, outer = (inside_p, inside_n) if inner_is_pos else (inside_n, inside_p)
    return max(best, best_rule_epsilon(outer[upper], 1 - inner[upper], delta))


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = 1e-5, spread_ratio: float = 0.01,
                    search: str = "grid") -> float:
    """Per-example ε from N unlearned and N retrained statistics (the challenge's ``metric.py``, Triantafillou et al.).

    Positive group: the unlearned one unless the retrained median is strictly larger. If the spreads are degenerate
    (smaller range / larger range < ``spread_ratio``), ε is the cap, 50; so it is when both ranges are 0 (where the
    reference's 0/0 passes that test and its rules are scored instead). Otherwise two rule families are scored, as in
    the challenge's code: single thresholds, "positive if s ≥ t", and intervals, "the peakier group (smaller range;
    the negative one on a tie) if l ≤ s ≤ r". Each rule's FPR/FNR give ``rule_epsilon``; ε is the largest, capped at
    50, and 0 if every rule is discarded (the reference stops with an assertion there).

    ``search="grid"`` (default) is the challenge's fixed grid: ``grid_thresholds`` (⌈100·range⌉ thresholds over the
    pooled values) and ``grid_intervals`` (right edges within ±2 of the peakier group's maximum, widths within ±2 of
    its range, both in steps of about 0.01). It can miss a gap between the groups narrower than its step; it is what
    published scores were computed with, so only its numbers compare with them. ``search="exhaustive"`` scores every
    threshold and every interval between the pooled sample points, i.e. every distinct FPR/FNR pair either family can
    give: never lower than the grid (an upper bound on what any rule of the two families shows), but not comparable
    with published scores. Rates and ε are computed in float64, where the reference uses float32: ε differs by
    < 2e-5, and for N ≤ 128 and N = 256, 512, 1024 no (FPR, FNR) pair changes bucket for it (checked over all pairs).
    """
    if search not in SEARCHES:
        raise ConfigError(f"epsilon_score: search must be one of {list(SEARCHES)}, got {search!r}.")
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    spreads = sorted([np.ptp(pos), np.ptp(neg)])
    if spreads[1] == 0 or spreads[0] / spreads[1] < spread_ratio:
        return EPS_CAP
    inner_is_pos = bool(np.ptp(pos) < np.ptp(neg))
    if search == "exhaustive":
        best = _exhaustive_epsilon(pos, neg, inner_is_pos, delta)
    else:
        inner, outer = (pos, neg) if inner_is_pos else (neg, pos)
        best = _grid_epsilon(pos, neg, inner, outer, delta)
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
    """NeurIPS 2023 Machine Unlearning Challenge score (Triantafillou et al., arXiv 2406.09073), as its ``metric.py``
    computes it: per forget example, ε from the best single threshold or interval separating s = log p_y − log(1 − p_y)
    over N unlearned vs N retrained models (δ = 1e-5, cap 50; ``example_epsilon``), on the challenge's fixed grid of
    about 100 thresholds per unit (``search="grid"``, default) or over every threshold and interval between the data
    points (``search="exhaustive"``: never lower, so never a higher score, and not comparable with published scores);
    points 2^−k for ε in bucket k of width 0.5 below ⌈ln(N − 1)⌉, 0 at or above it; F = mean points; score = F ×
    (retain acc ratio) × (test acc ratio), unlearned over retrained ensemble means. 1 = indistinguishable.
    With small N even two retrained ensembles do not reach F = 1, so the verdict's evidence is F's shortfall
    against a second independent retrained ensemble, signed by ``memorisation_shift`` (+: remembers, −: pushed
    past retraining), banded by its sd over random splits of the two ensembles (``null_sd``).

    Unlearned ensemble: the method under test applied N times (seeds) to the original; retrained ensemble:
    N models trained on the retain set (vectorised, cached). For ``retrain`` itself, a third independent retrained
    ensemble (not the reference's second one: that would score retraining against itself, an excess of exactly 0). With no method (the original), N copies of the original (degenerate: ε capped).
    Differences from the challenge's setup: ``n_examples`` forget examples are sampled (the challenge scores all of
    them), and s is computed from the logits in float64 (the challenge exponentiates float32 logits and adds 1e-45
    inside the logs, so its s saturates at about ±103.6)."""

    n_models: int = 16
    n_examples: int = 500
    delta: float = 1e-5
    seed: int = 0
    floor: float = 0.1
    search: Literal["grid", "exhaustive"] = "grid"
    permutations: int = 100  # random splits of the unlearned and second retrained ensembles behind the band (null sd)

    name = "epsilon_score"
    higher_is_better = True
    needs = frozenset({"original", "train_config", "model_factory"})
    paper = "Triantafillou et al., arXiv 2406.09073"
    version = "5"  # bump when its numbers change (2: the interval rule predicts the peakier distribution inside; 3: the challenge's grid
    # by default; 4: retrain is judged with a third retrained ensemble, independent of the reference pair; 5: the band's null sd
    # from random splits of the ensembles)
    modalities = ("classifier",)
    noise_floor_skip = True

    def __post_init__(self) -> None:
        if self.n_models < 4:
            raise ConfigError(f"epsilon_score: n_models must be >= 4, got {self.n_models}.")
        if self.permutations < 20:
            raise ConfigError(f"epsilon_score: permutations must be >= 20 (the band's null sd), got {self.permutations}.")
        if not 0 < self.delta < 1:
            raise ConfigError(f"epsilon_score: delta must be in (0, 1), got {self.delta}.")
        if self.search not in SEARCHES:
            raise ConfigError(f"epsilon_score: search must be one of {list(SEARCHES)}, got {self.search!r}.")

    def unlearned_ensemble(self, task: Task, refs: References, ctx: EvalContext) -> list[nn.Module]:
        method = ctx.method
        if method is None:
            return [refs.original] * self.n_models
        if getattr(method, "name", "") == "retrain":
            return retrained_ensemble(ctx, refs, task, self.n_models, self.seed, which=2)
        key = ("eps-unlearned", repr(method), self.n_models, self.seed, id(refs.original))
        if key not in ctx.shared:
            ctx.shared[key] = [method.unlearn(copy.deepcopy(refs.original), task, refs, rng=np_rng("eps-unlearn", self.seed, i),
                                              device=ctx.device).model.eval() for i in range(self.n_models)]
        return ctx.shared[key]

    def null_sd(self, s_u: np.ndarray, s_r2: np.ndarray, s_r: np.ndarray, points: np.ndarray, ref_points: np.ndarray, task: Task) -> float:
        """The sd of the excess F(second vs retrained) − F(unlearned vs retrained) when the unlearned models are exchangeable
        with retrained ones: ``ensemble_split_sd`` over ``permutations`` random splits of the 2N models. The splits are
        scored with the exhaustive search (40× faster than the grid, same rule families); for the grid the per-example
        standard error of the observed points is scaled by the ratio split sd / per-example sd, both measured with the
        exhaustive search. A per-example standard error alone misses that which N models were drawn moves every
        example's ε together: on class forgetting (digits, class 3) it put retraining itself outside its band in 2 of
        20 draws (docs/results/verdict_calibration.md)."""

        def naive(p: np.ndarray, q: np.ndarray) -> float:
            return float(np.sqrt((p.var() + q.var()) / len(p)))

        def exhaustive_points(ens: np.ndarray) -> np.ndarray:
            eps = [example_epsilon(ens[:, i], s_r[:, i], self.delta, search="exhaustive") for i in range(s_r.shape[1])]
            return bucket_points(np.array(eps), self.n_models)

        rng = np_rng("eps-permutations", self.seed, task.fingerprint)
        split_sd = ensemble_split_sd(s_u, s_r2, lambda ens: float(exhaustive_points(ens).mean()), self.permutations, rng)
        per_example = naive(exhaustive_points(s_u), exhaustive_points(s_r2))
        if self.search == "exhaustive" or per_example == 0:
            return split_sd
        return naive(points, ref_points) * split_sd / per_example

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
        eps = np.array([example_epsilon(s_u[:, i], s_r[:, i], self.delta, search=self.search) for i in range(n)])
        points = bucket_points(eps, self.n_models)
        quality = float(points.mean())
        # what a perfect unlearner scores with N models: a second, independent retrained ensemble
        ref_key = ("eps-reference", self, task.fingerprint)
        if ref_key not in ctx.shared:
            s_r2 = ctx.shared[("eps-second", self, task.fingerprint)] = stats(retrained_ensemble(ctx, refs, task, self.n_models, self.seed, which=1))
            ctx.shared[ref_key] = bucket_points(np.array([example_epsilon(s_r2[:, i], s_r[:, i], self.delta, search=self.search) for i in range(n)]), self.n_models)
        ref_points = ctx.shared[ref_key]
        reference = float(ref_points.mean())
        shift = memorisation_shift(s_u, s_r, stats(unlearned, test), stats(retrained, test))
        excess = (reference - quality) * (1.0 if shift >= 0 else -1.0)
        null_sd = self.null_sd(s_u, ctx.shared[("eps-second", self, task.fingerprint)], s_r, points, ref_points, task)

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
