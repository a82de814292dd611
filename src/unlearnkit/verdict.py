"""Evidence -> verdict (removed / suppressed / not forgotten / over-forgotten / inconclusive), decided
against the retrained models' seed-to-seed noise floor, with the numbers behind it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from .types import Evidence, MetricResult, Role

Label = Literal["removed", "suppressed", "not forgotten", "over-forgotten", "inconclusive"]
LABELS: tuple[Label, ...] = get_args(Label)
REQUIRED_ROLES: tuple[Role, ...] = ("forget", "utility", "robustness")
BandSource = Literal["retrained seeds", "null distribution"]
Status = Literal["inside", "more", "less"]  # evidence inside its band, remembering more or less than retraining


def seed_spread(values: Iterable[float | None]) -> tuple[float, float, int] | None:
    """(mean, sd, R) of one evidence over the retrained seeds; a seed whose value is missing or not finite is no draw.
    sd is 0 for R = 1; None without a draw."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    r = len(arr)
    if r == 0:
        return None
    return float(arr.mean()), float(arr.std(ddof=1)) if r > 1 else 0.0, r


def _t_half_width(sd: float, r: int, alpha: float, m: int) -> tuple[float, float]:
    """(t, t·sd·√(1+1/R)) with t = t_{1−α/(2m)}(R−1): the prediction half-width for one more of R draws, Bonferroni
    over m bands (R ≥ 2)."""
    from scipy.stats import t as student_t

    tq = float(student_t.ppf(1 - alpha / (2 * m), r - 1))
    return tq, tq * sd * math.sqrt(1 + 1 / r)


@dataclass(frozen=True)
class Band:
    """The interval [lo, hi] = mean ± half_width an evidence is compared with, built for a Bonferroni family of m bands
    (family-wise false-alarm rate alpha). From retrained seeds: a prediction interval for one more of R retrains,
    half-width t·sd·√(1+1/R) with t = t_{1−α/(2m)}(R−1) (None for R = 1, where the band is the floor alone). From an
    attack's null distribution (R None): null mean ± t·null sd with the normal quantile t = z_{1−α/(2m)}. Either way the
    half-width is at least the evidence's floor and one step of its resolution (``Evidence.min_half_width``)."""

    mean: float
    sd: float
    lo: float
    hi: float
    half_width: float
    R: int | None
    t: float | None
    m: int
    alpha: float
    source: BandSource = "retrained seeds"

    @classmethod
    def from_seeds(cls, spread: tuple[float, float, int], floor: float, alpha: float, m: int) -> Band:
        """The band for one more retrain, from the ``seed_spread`` of an evidence over the retrained seeds."""
        mean, sd, r = spread
        tq, half = _t_half_width(sd, r, alpha, m) if r > 1 else (None, 0.0)
        half = max(half, float(floor))
        return cls(mean, sd, mean - half, mean + half, half, r, tq, m, alpha)

    @classmethod
    def from_null(cls, ev: Evidence, alpha: float, m: int) -> Band:
        """The band from the evidence's own null distribution: null_mean ± z_{1−α/(2m)}·null_sd, at least the floor."""
        from scipy.stats import norm

        assert ev.null_mean is not None
        z, sd = float(norm.ppf(1 - alpha / (2 * m))), float(ev.null_sd or 0.0)
        half = max(z * sd, ev.min_half_width)
        return cls(ev.null_mean, sd, ev.null_mean - half, ev.null_mean + half, half, None, z, m, alpha, "null distribution")

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "lo": self.lo, "hi": self.hi, "half_width": self.half_width, "R": self.R,
                "t": self.t, "m": self.m, "alpha": self.alpha, "source": self.source}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Band:
        """Also reads the noise floor's bands stored before this class (no "source": they came from retrained seeds)."""
        return cls(float(d["mean"]), float(d["sd"]), float(d["lo"]), float(d["hi"]), float(d["half_width"]),
                   None if d["R"] is None else int(d["R"]), None if d["t"] is None else float(d["t"]), int(d["m"]),
                   float(d["alpha"]), d.get("source", "retrained seeds"))


@dataclass
class Verdict:
    label: Label
    reasons: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    method: str = ""
    tests: dict[str, Any] = field(default_factory=dict)
    strong_evidence: list[str] = field(default_factory=list)
    family: int = 0  # m: the number of bands in the Bonferroni family
    bands: dict[str, Band] = field(default_factory=dict)  # the family's bands, as the decision used them

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "reasons": self.reasons, "rows": self.rows, "missing": self.missing, "method": self.method,
                "tests": self.tests, "strong_evidence": self.strong_evidence, "family": self.family,
                "bands": {key: band.to_json() for key, band in self.bands.items()}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(d["label"], list(d["reasons"]), list(d.get("rows", [])), list(d.get("missing", [])), d.get("method", ""),
                   dict(d.get("tests", {})), list(d.get("strong_evidence", [])), int(d.get("family", 0)),
                   {key: Band.from_json(b) for key, b in d.get("bands", {}).items()})


def _direction(ev: Evidence, band: Band) -> Status:
    """'inside', 'more' (remembers more / better utility than retraining) or 'less'. The edges belong to the band, up
    to rounding (a value one resolution step from the mean lands on an edge)."""
    eps = 1e-12 * max(1.0, abs(band.mean))
    if band.lo - eps <= ev.value <= band.hi + eps:
        return "inside"
    above = ev.value > band.hi
    return "more" if above == (ev.remembers == "higher") else "less"


def decide(evidence: Iterable[Evidence], noise_floor: MetricResult | None, *, missing: Sequence[str] = (), tests: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict from a model's evidence and the retrain noise floor.

    Order of precedence: forget evidence remembering more than retraining -> not forgotten; forget
    evidence below the band or utility below its band -> over-forgotten; robustness evidence above
    its band -> suppressed; a needed role without evidence -> inconclusive; otherwise removed.
    Every band is built here, once, for the one Bonferroni family of all of them: a band from the retrained seeds for
    each evidence the noise floor measured, and one from its own null distribution for evidence that carries one.
    """
    evidence = list(evidence)
    missing = list(missing)
    if noise_floor is None:
        return Verdict("inconclusive", ["no retrain noise floor (needs >= 2 retrained seeds and the noise_floor metric)"],
                       missing=missing + ["noise_floor"], tests=dict(tests or {}))
    info = noise_floor.info
    r = info.get("R")
    alpha = float(info.get("alpha", 0.05))
    spreads = {key: s for key, s in ((key, seed_spread(vals)) for key, vals in info["seed_values"].items()) if s is not None}
    null_keys = [ev.key for ev in evidence if ev.null_mean is not None and ev.key not in spreads]
    m = len(spreads) + len(null_keys)
    bands = {key: Band.from_seeds(s, info["floors"].get(key, 0.0), alpha, m) for key, s in spreads.items()}
    bands.update({ev.key: Band.from_null(ev, alpha, m) for ev in evidence if ev.key in null_keys})
    method = (f"prediction interval over R={r} retrained seeds, mean ± t·sd·√(1+1/R), two-sided with Bonferroni "
              f"over {m} evidence bands (family-wise false-alarm rate α={alpha}), widened to each evidence's floor")
    if null_keys:
        method += f"; {', '.join(null_keys)}: band from the attack's own null distribution, null mean ± z·null sd"
    rows = []
    for ev in evidence:
        band = bands.get(ev.key)
        if band is None or not math.isfinite(ev.value):
            missing.append(f"{ev.key} (no band)" if band is None else f"{ev.key} (not finite)")
            continue
        rows.append({"key": ev.key, "role": ev.role, "value": ev.value, "lo": band.lo, "hi": band.hi,
                     "retrain_mean": band.mean, "status": _direction(ev, band), "remembers": ev.remembers, "strong": ev.strong,
                     "band_from": band.source})
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
    label: Label
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
    return Verdict(label, reasons, rows, missing, method, dict(tests or {}), strong, m, bands)
