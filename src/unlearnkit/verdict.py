"""Evidence -> verdict (removed / suppressed / not forgotten / over-forgotten / inconclusive), decided
against the retrained models' seed-to-seed noise floor, with the numbers behind it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import Evidence, MetricResult

LABELS = ("removed", "suppressed", "not forgotten", "over-forgotten", "inconclusive")
REQUIRED_ROLES = ("forget", "utility", "robustness")


def _t_half_width(sd: float, r: int, alpha: float, m: int) -> tuple[float, float]:
    """(t, t·sd·√(1+1/R)) with t = t_{1−α/(2m)}(R−1): the prediction half-width for one more of R draws, Bonferroni
    over m bands (R ≥ 2)."""
    from scipy.stats import t as student_t

    tq = float(student_t.ppf(1 - alpha / (2 * m), r - 1))
    return tq, tq * sd * math.sqrt(1 + 1 / r)


def prediction_bands(values: Mapping[str, Sequence[float]], floors: Mapping[str, float], alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Per key: a prediction interval for one more draw, mean ± t·sd·√(1+1/R), with
    t = t_{1−α/(2m)}(R−1) (two-sided, Bonferroni over the m keys), half-width at least the key's floor.
    With R = 1 there is no spread to estimate: the band is the floor alone."""
    m = max(1, len(values))
    out: dict[str, dict[str, float]] = {}
    for key, vals in values.items():
        arr = np.asarray([v for v in vals if v is not None and math.isfinite(v)], dtype=np.float64)
        r = len(arr)
        if r == 0:
            continue
        mean = float(arr.mean())
        sd = float(arr.std(ddof=1)) if r > 1 else 0.0
        tq, half = _t_half_width(sd, r, alpha, m) if r > 1 else (float("inf"), 0.0)
        half = max(half, float(floors.get(key, 0.0)))
        out[key] = {"mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "half_width": half, "R": r,
                    "t": tq if r > 1 else None, "m": m, "alpha": alpha}
    return out


@dataclass
class Verdict:
    label: str
    reasons: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    method: str = ""
    tests: dict[str, Any] = field(default_factory=dict)
    strong_evidence: list[str] = field(default_factory=list)
    family: int = 0  # m: the number of bands in the Bonferroni family

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "reasons": self.reasons, "rows": self.rows, "missing": self.missing, "method": self.method,
                "tests": self.tests, "strong_evidence": self.strong_evidence, "family": self.family}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(d["label"], list(d["reasons"]), list(d.get("rows", [])), list(d.get("missing", [])), d.get("method", ""),
                   dict(d.get("tests", {})), list(d.get("strong_evidence", [])), int(d.get("family", 0)))


def for_family(band: Mapping[str, Any], m: int) -> dict[str, Any]:
    """A retrain band (built by ``prediction_bands`` for its own ``m`` keys) redone for a Bonferroni family of ``m``
    tests: t recomputed, the half-width never narrower than before (so a binding floor stays)."""
    r, alpha = band.get("R", 1), band.get("alpha", 0.05)
    if band.get("m") == m or r <= 1:
        return dict(band)
    tq, half = _t_half_width(band["sd"], r, alpha, m)
    half = max(half, band["half_width"])
    return {**band, "lo": band["mean"] - half, "hi": band["mean"] + half, "half_width": half, "t": tq, "m": m}


def _direction(ev: Evidence, lo: float, hi: float) -> str:
    """'inside', 'more' (remembers more / better utility than retraining) or 'less'."""
    if lo <= ev.value <= hi:
        return "inside"
    above = ev.value > hi
    return "more" if above == (ev.remembers == "higher") else "less"


def null_band(ev: Evidence, alpha: float, m: int) -> dict[str, float]:
    """Band from the evidence's own null distribution: null_mean ± z_{1−α/(2m)}·null_sd, at least the floor."""
    from scipy.stats import norm

    assert ev.null_mean is not None
    half = max(float(norm.ppf(1 - alpha / (2 * m))) * float(ev.null_sd or 0.0), ev.floor)
    return {"mean": ev.null_mean, "lo": ev.null_mean - half, "hi": ev.null_mean + half}


def decide(evidence: Iterable[Evidence], noise_floor: MetricResult | None, *, missing: Sequence[str] = (), tests: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict from a model's evidence and the retrain noise floor.

    Order of precedence: forget evidence remembering more than retraining -> not forgotten; forget
    evidence below the band or utility below its band -> over-forgotten; robustness evidence above
    its band -> suppressed; a needed role without evidence -> inconclusive; otherwise removed.
    Evidence with its own null distribution gets a band from it, with the same Bonferroni correction.
    """
    evidence = list(evidence)
    missing = list(missing)
    if noise_floor is None:
        return Verdict("inconclusive", ["no retrain noise floor (needs >= 2 retrained seeds and the noise_floor metric)"],
                       missing=missing + ["noise_floor"], tests=dict(tests or {}))
    bands = noise_floor.info["bands"]
    r = noise_floor.info.get("R")
    alpha = float(noise_floor.info.get("alpha", 0.05))
    null_keys = [ev.key for ev in evidence if ev.null_mean is not None and ev.key not in bands]
    m = len(bands) + len(null_keys)
    bands = {key: for_family(band, m) for key, band in bands.items()}  # one family: retrain bands and null bands alike
    method = (f"prediction interval over R={r} retrained seeds, mean ± t·sd·√(1+1/R), two-sided with Bonferroni "
              f"over {m} evidence bands (family-wise false-alarm rate α={alpha}), widened to each evidence's floor")
    if null_keys:
        method += f"; {', '.join(null_keys)}: band from the attack's own null distribution, null mean ± z·null sd"
    rows = []
    for ev in evidence:
        band = bands.get(ev.key)
        source = "retrained seeds"
        if band is None and ev.null_mean is not None:
            band, source = null_band(ev, alpha, m), "null distribution"
        if band is None or not math.isfinite(ev.value):
            missing.append(f"{ev.key} (no band)" if band is None else f"{ev.key} (not finite)")
            continue
        status = _direction(ev, band["lo"], band["hi"])
        rows.append({"key": ev.key, "role": ev.role, "value": ev.value, "lo": band["lo"], "hi": band["hi"],
                     "retrain_mean": band["mean"], "status": status, "remembers": ev.remembers, "strong": ev.strong,
                     "band_from": source})
    roles = {row["role"] for row in rows}
    for role in REQUIRED_ROLES:
        if role not in roles:
            missing.append(f"{role} evidence")

    def fmt(row: dict[str, Any]) -> str:
        where = "retrain band" if row["band_from"] == "retrained seeds" else "band of its null distribution"
        return f"{row['key']} = {row['value']:.4f} outside the {where} [{row['lo']:.4f}, {row['hi']:.4f}]"

    more_forget = [row for row in rows if row["role"] == "forget" and row["status"] == "more"]
    less_forget = [row for row in rows if row["role"] == "forget" and row["status"] == "less"]
    less_utility = [row for row in rows if row["role"] == "utility" and row["status"] == "less"]
    more_robust = [row for row in rows if row["role"] == "robustness" and row["status"] == "more"]
    if more_forget:
        label, reasons = "not forgotten", [f"remembers more than retraining: {fmt(r)}" for r in more_forget]
    elif less_forget or less_utility:
        label = "over-forgotten"
        reasons = [f"forgets past retraining: {fmt(r)}" for r in less_forget] + [f"utility below retraining: {fmt(r)}" for r in less_utility]
    elif more_robust:
        label, reasons = "suppressed", [f"outputs look retrained, but recovers faster: {fmt(r)}" for r in more_robust]
    elif "forget evidence" in missing or "utility evidence" in missing or "robustness evidence" in missing:
        label, reasons = "inconclusive", [f"missing: {', '.join(missing)}"]
    else:
        label, reasons = "removed", ["every evidence inside its band"]
    strong = sorted({row["key"] for row in rows if row["strong"]})
    reasons.append(f"strong evidence used: {', '.join(strong)}" if strong else
                   "no strong evidence (per-example/shadow attacks, relearning, hidden probes) was computed")
    return Verdict(label, reasons, rows, missing, method, dict(tests or {}), strong, m)
