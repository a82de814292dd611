"""privacy_score: the Unlearning Comparator's worst-case privacy score — the strongest threshold attack
telling the model's forget-set outputs from a retrained model's, turned into an (ε, δ) bound."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric

RATE_FLOOR = 1e-10  # FPR/FNR are clipped to [RATE_FLOOR, 1 − δ − RATE_FLOOR] before taking logs (as the Comparator does)
DIRECTIONS = ("model_above", "retrained_above")  # which distribution the attack calls "positive" when score >= threshold


def entropy_score(logits: np.ndarray, temperature: float = 2.0) -> np.ndarray:
    """Entropy (nats) of softmax(logits / temperature), per example."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return -(np.exp(logp) * logp).sum(axis=1)


def confidence_score(logits: np.ndarray) -> np.ndarray:
    """log p_max − log(1 − p_max) of softmax(logits), per example, computed stably as
    z_max − logsumexp of the other logits (the same quantity, without rounding p_max to 1)."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.argmax(axis=1)
    others = np.where(np.arange(z.shape[1])[None, :] == top[:, None], -np.inf, z)
    return z[np.arange(len(z)), top] - logsumexp(others, axis=1)


SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"entropy": entropy_score, "confidence": confidence_score}


def epsilon(fpr: np.ndarray | float, fnr: np.ndarray | float, delta: float) -> np.ndarray:
    """ε of a test with these error rates: max(0, min(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR)), rates
    clipped to [RATE_FLOOR, 1 − δ − RATE_FLOOR]; so ε = 0 when either rate is ≥ 1 − δ and ε = epsilon_cap(δ)
    at FPR = FNR = 0 (perfect separation)."""
    lo, hi = RATE_FLOOR, 1.0 - delta - RATE_FLOOR
    fp = np.clip(np.asarray(fpr, dtype=np.float64), lo, hi)
    fn = np.clip(np.asarray(fnr, dtype=np.float64), lo, hi)
    eps = np.minimum(np.log(1.0 - delta - fp) - np.log(fn), np.log(1.0 - delta - fn) - np.log(fp))
    return np.maximum(0.0, eps)


def epsilon_cap(delta: float) -> float:
    """The largest ε the clipping allows (perfect separation): log(1 − δ − RATE_FLOOR) − log(RATE_FLOOR)."""
    return float(epsilon(0.0, 0.0, delta))


def attack_scores(model_scores: np.ndarray, retrained_scores: np.ndarray, thresholds: np.ndarray, delta: float) -> dict[str, np.ndarray]:
    """Attack score 1 − 2^−ε per threshold t, for both directions: "model_above" calls score >= t "the
    model" (TPR = P_model(s >= t), FPR = P_retrained(s >= t)), "retrained_above" the reverse; FNR = 1 − TPR."""
    m = np.asarray(model_scores, dtype=np.float64)[:, None]
    r = np.asarray(retrained_scores, dtype=np.float64)[:, None]
    above_m = (m >= thresholds[None, :]).mean(axis=0)
    above_r = (r >= thresholds[None, :]).mean(axis=0)
    rates = {"model_above": (above_r, 1.0 - above_m), "retrained_above": (above_m, 1.0 - above_r)}
    return {d: 1.0 - np.exp2(-epsilon(fpr, fnr, delta)) for d, (fpr, fnr) in rates.items()}


def joint_thresholds(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced thresholds over the joint range [min(a ∪ b), max(a ∪ b)]."""
    both = np.r_[np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)]
    return np.linspace(both.min(), both.max(), n)


@dataclass(frozen=True)
class PairResult:
    """The worst-case attack between the model and one retrained model."""

    score: float  # 1 − max attack score over scores, directions, thresholds
    per_score: dict[str, float]  # 1 − max attack score for each score alone
    best: dict[str, Any]  # where the strongest attack is: score, direction, threshold, attack score
    curves: dict[str, dict[str, list[float]]]


def worst_case_privacy(model_logits: np.ndarray, retrained_logits: np.ndarray, *, n_thresholds: int, delta: float,
                       scores: Mapping[str, Callable[[np.ndarray], np.ndarray]] = SCORES) -> PairResult:
    """Privacy score of one (model, retrained model) pair on the same examples: 1 − the largest attack
    score over every score, direction and threshold."""
    per_score: dict[str, float] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    best: dict[str, Any] = {"attack": -1.0}
    for name, fn in scores.items():
        own, ref = fn(model_logits), fn(retrained_logits)
        thresholds = joint_thresholds(own, ref, n_thresholds)
        attacks = attack_scores(own, ref, thresholds, delta)
        per_score[name] = 1.0 - float(max(a.max() for a in attacks.values()))
        curves[name] = {"threshold": thresholds.tolist(), **{d: a.tolist() for d, a in attacks.items()}}
        for direction in DIRECTIONS:
            i = int(attacks[direction].argmax())
            if attacks[direction][i] > best["attack"]:
                best = {"attack": float(attacks[direction][i]), "score": name, "direction": direction, "threshold": float(thresholds[i])}
    return PairResult(min(per_score.values()), per_score, best, curves)


DIRECTION_BLIND = ("direction-blind: a low score means the forget outputs are distinguishable from retraining's either way, "
                   "so a model pushed past retraining scores as one that remembers (digits, gradient ascent past retraining: "
                   "'remembers more' on every instance, turning over-forgotten into not forgotten; "
                   "docs/results/verdict_calibration.md)")


@register_metric
@dataclass(frozen=True)
class PrivacyScore(Metric):
    """Worst-case privacy score (Lee, Yu, Jang, Woo, Jo, Unlearning Comparator, IEEE TVCG 2026, arXiv 2508.12730).

    On the forget set, two per-example scores of the model and of a retrained model: entropy of
    softmax(logits / 2) and confidence log p_max − log(1 − p_max). For ``n_thresholds`` thresholds t evenly
    spaced over the joint range of the two samples, both directions (s >= t means "model", or means
    "retrained"), FPR and FNR of that test give ε = max(0, min(log(1−δ−FPR) − log FNR, log(1−δ−FNR) − log FPR))
    with δ = ``delta`` (rates clipped to [1e-10, 1 − δ − 1e-10], which caps ε at ≈ 23.03 when the two samples
    are perfectly separated), and attack score 1 − 2^−ε. Privacy score = 1 − the largest attack score over
    both scores, directions and thresholds: 1 = the model's forget outputs are indistinguishable from
    retraining by any such test, 0 = perfectly distinguishable. Lower remembers more.

    Computed against each retrained seed; reported: the mean (``score``, the evidence: a mean does not
    drift with the number of seeds it is taken over, a minimum does, and noise_floor evaluates each
    retrained seed against one seed fewer) and the worst (``worst``, the minimum over seeds).

    Inferred / deviations from the Comparator's code: thresholds span the joint range of the two samples
    (the Comparator uses fixed ranges, entropy [0, 2.5] and confidence [−2.5, 10], and clips scores into
    them); confidence is computed as z_max − logsumexp(other logits) instead of with a 1e-45 guard;
    perfect separation gives ε at its cap (score 2^−23.03 ≈ 1.2e-7) where the Comparator sets 2^−ε = 0."""

    n_thresholds: int = 51
    delta: float = 1e-5
    entropy_temperature: float = 2.0
    floor: float = 0.05

    name = "privacy_score"
    version = "2"  # 2: its evidence is reported only (direction-blind), no longer deciding the verdict
    higher_is_better = True
    needs = frozenset({"retrained"})
    paper = "Lee et al., IEEE TVCG 2026 (Unlearning Comparator), arXiv 2508.12730"
    modalities = ("classifier",)

    def __post_init__(self) -> None:
        if self.n_thresholds < 2:
            raise ConfigError(f"privacy_score: n_thresholds must be >= 2, got {self.n_thresholds}.")
        if not 0.0 < self.delta < 0.5:
            raise ConfigError(f"privacy_score: delta must be in (0, 0.5), got {self.delta}.")
        if not self.entropy_temperature > 0:
            raise ConfigError(f"privacy_score: entropy_temperature must be > 0, got {self.entropy_temperature}.")
        if self.floor < 0:
            raise ConfigError(f"privacy_score: floor must be >= 0, got {self.floor}.")

    def scores(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        return {"entropy": lambda z: entropy_score(z, self.entropy_temperature), "confidence": confidence_score}

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'privacy_score'")
        own = ctx.outputs(model, "forget")
        pairs = [worst_case_privacy(own["logits"], ctx.outputs(r, "forget")["logits"], n_thresholds=self.n_thresholds,
                                    delta=self.delta, scores=self.scores()) for r in refs.retrained_seeds]
        per_seed = [p.score for p in pairs]
        worst = int(np.argmin(per_seed))
        values = {"score": float(np.mean(per_seed)), "worst": float(per_seed[worst])}
        for name in self.scores():
            values[f"{name}.score"] = float(np.mean([p.per_score[name] for p in pairs]))
        per_example = {f"{name}.forget": (own["ids"], fn(own["logits"])) for name, fn in self.scores().items()}
        curves = {f"attack.{name}": curve for name, curve in pairs[worst].curves.items()}
        info = {"per_seed": per_seed, "worst_seed": worst, "strongest_attack": pairs[worst].best, "delta": self.delta,
                "epsilon_cap": epsilon_cap(self.delta), "n_retrained": len(pairs)}
        evidence = (Evidence(key="privacy_score.score", value=values["score"], role="forget", remembers="lower", floor=self.floor,
                             reported_only=DIRECTION_BLIND),)
        return self.result(values, per_example=per_example, curves=curves, evidence=evidence, info=info)
