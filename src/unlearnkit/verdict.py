"""Evidence -> verdict (removed / suppressed / not forgotten / over-forgotten / inconclusive), decided
against the retrained models' seed-to-seed noise floor, with the numbers behind it."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np

from .types import Evidence, MetricResult, Role

Label = Literal["removed", "suppressed", "not forgotten", "over-forgotten", "inconclusive"]
LABELS: tuple[Label, ...] = get_args(Label)
REQUIRED_ROLES: tuple[Role, ...] = ("forget", "utility", "robustness")
BandSource = Literal["retrained seeds", "null distribution", "original model", "unknown facts"]
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

    @classmethod
    def from_pool(cls, pool: Sequence[float] | np.ndarray, sample: Sequence[float] | np.ndarray, floor: float, alpha: float, m: int, *,
                  draws: int = 20_000, seed: int = 0) -> Band:
        """The band of a permutation test that ``sample`` (per-item values, e.g. an unlearned model's on the forget facts)
        is exchangeable with ``pool`` (the original's on the facts it does not know): the α/(2m) and 1 − α/(2m)
        quantiles of the mean of len(sample) items drawn without replacement from pool ∪ sample, so the sample's mean
        leaves it with probability at most α/m under the null, whatever the skew (most unknown facts score 0 ROUGE-L, a
        few high) and the number of items; a few facts get a wide band. ``mean`` is the pool's (the unknown-fact level),
        the band at least ± ``floor`` around it; ``half_width`` is half the band's width. A bootstrap prediction band
        (resampling the pool alone) is anti-conservative on such data: it ignores that the pool's own mean is uncertain,
        so with a few dozen unknown facts it leaves its upper tail more often than nominal (tests/data/test_knowledge.py
        checks this band's rate)."""
        a, b = np.asarray(pool, dtype=np.float64), np.asarray(sample, dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) < 2 or len(b) < 1:
            raise ValueError(f"a permutation band needs at least 2 finite pool values and 1 sample value, got {len(a)} and {len(b)}")
        rng, level, n = np.random.default_rng(seed), float(a.mean()), len(b)
        both = np.concatenate([a, b])
        chunk = max(1, min(draws, 2_000_000 // len(both)))  # bounded memory for large pools
        means = np.concatenate([rng.permuted(np.broadcast_to(both, (c, len(both))), axis=1)[:, :n].mean(1)
                                for c in [chunk] * (draws // chunk) + ([draws % chunk] if draws % chunk else [])])
        q_lo, q_hi = np.quantile(means, [alpha / (2 * m), 1 - alpha / (2 * m)])
        lo, hi = min(float(q_lo), level - floor), max(float(q_hi), level + floor)
        return cls(level, float(means.std()), lo, hi, (hi - lo) / 2, None, None, m, alpha, "unknown facts")

    def clipped(self, bounds: tuple[float, float] | None) -> Band:
        """The band cut to the evidence's possible range (an AUC cannot leave [0, 1]); mean and half-width unchanged."""
        if bounds is None:
            return self
        return replace(self, lo=max(self.lo, bounds[0]), hi=min(self.hi, bounds[1]))

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
    also: list[str] = field(default_factory=list)  # failing aspects the label does not name (it names the first by precedence)
    margin: float | None = None  # in band half-widths: removed, the smallest slack inside; otherwise how far out its evidence is
    borderline: bool = False  # margin < BORDERLINE: one band edge away from another label
    weights_untouched: bool = False  # a guard's verdict: its weights are the original's, read by the weight-level evidence

    @property
    def display(self) -> str:
        """The label, marked when borderline, followed by every other failing aspect: what tables and the CLI print."""
        text = self.label + (" (borderline)" if self.borderline else "")
        return text + (f"; also: {', '.join(self.also)}" if self.also else "")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "reasons": self.reasons, "rows": self.rows, "missing": self.missing, "method": self.method,
                "tests": self.tests, "strong_evidence": self.strong_evidence, "family": self.family,
                "bands": {key: band.to_json() for key, band in self.bands.items()}, "also": self.also, "margin": self.margin,
                "borderline": self.borderline, "weights_untouched": self.weights_untouched}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(d["label"], list(d.get("reasons", [])), list(d.get("rows", [])), list(d.get("missing", [])), d.get("method", ""),
                   dict(d.get("tests", {})), list(d.get("strong_evidence", [])), int(d.get("family", 0)),
                   {key: Band.from_json(b) for key, b in d.get("bands", {}).items()}, list(d.get("also", [])), d.get("margin"),
                   bool(d.get("borderline", False)), bool(d.get("weights_untouched", False)))


BORDERLINE = 0.2  # a verdict this close to a band edge (in half-widths) could flip with the machine or the seed


def margin_of(value: float, band: Band, bounds: tuple[float, float] | None) -> float | None:
    """How far ``value`` is inside (> 0) or outside (< 0) its band, in half-widths, counting only edges that are not the
    metric's own bounds (a value at an AUC's 1.0 is not near an edge it could cross). None: no such edge, the band
    spans every value the evidence can take."""
    lo_open = bounds is None or band.lo > bounds[0]
    hi_open = bounds is None or band.hi < bounds[1]
    if not (lo_open or hi_open) or band.half_width <= 0:
        return None
    if value < band.lo:
        return (value - band.lo) / band.half_width
    if value > band.hi:
        return (band.hi - value) / band.half_width
    return min(([value - band.lo] if lo_open else []) + ([band.hi - value] if hi_open else [])) / band.half_width


def _direction(ev: Evidence, band: Band) -> Status:
    """'inside', 'more' (remembers more / better utility than retraining) or 'less'. The edges belong to the band, up
    to rounding (a value one resolution step from the mean lands on an edge)."""
    eps = 1e-12 * max(1.0, abs(band.mean))
    if band.lo - eps <= ev.value <= band.hi + eps:
        return "inside"
    above = ev.value > band.hi
    return "more" if above == (ev.remembers == "higher") else "less"


Aspect = tuple[Label, str, str, list[dict[str, Any]]]  # (label, as listed after another label, reason when deciding, rows)


def _ranked(aspects: list[Aspect], weights_untouched: bool, guard_why: str) -> list[Aspect]:
    """The failing aspects in the label's order of precedence (the last aspect is the "suppressed" one). A guard (weights
    untouched) ranks it right after "not forgotten": that its weights still hold the data outranks what its refusals
    cost, and its reason says so (``guard_why``)."""
    if weights_untouched:
        *rest, suppressed = aspects
        aspects = [rest[0], (suppressed[0], suppressed[1], guard_why, suppressed[3]), *rest[1:]]
    return [a for a in aspects if a[3]]


def _labelled(found: list[Aspect], fmt: Any) -> tuple[Label, list[tuple[str, dict[str, Any]]], list[str], list[str]]:
    """(label, the deciding (reason, row) pairs, their reasons, the other labels' aspects) from ranked failing aspects."""
    label = found[0][0]
    deciding = [(why, row) for lab, _, why, bad in found if lab == label for row in bad]
    also = [f"{what} ({', '.join(row['key'] for row in bad)})" for lab, what, _, bad in found if lab != label]
    return label, deciding, [f"{why}: {fmt(row)}" for why, row in deciding], also


REPORTED_ONLY = "reported only, not deciding: "  # how the reason listing the evidence reported only begins


def reported_only_reason(reported: Mapping[str, str]) -> str:
    """The verdict reason listing the evidence that is shown but decides nothing, each with why."""
    return REPORTED_ONLY + "; ".join(f"{key} ({why})" for key, why in reported.items())


def decide(evidence: Iterable[Evidence], noise_floor: MetricResult | None, *, missing: Sequence[str] = (), tests: Mapping[str, Any] | None = None,
           weights_untouched: bool = False) -> Verdict:
    """The verdict from a model's evidence and the retrain noise floor.

    Order of precedence: forget evidence remembering more than retraining -> not forgotten; forget
    evidence below the band or utility below its band -> over-forgotten; robustness evidence above
    its band -> suppressed; a needed role without evidence -> inconclusive; otherwise removed.
    ``weights_untouched`` (a guard: a wrapper whose weights are the original's) puts "suppressed" before "over-forgotten":
    where the weight-level evidence recovers the data, that the data is still in the weights is the finding, and a guard's
    refusals on utility prompts are listed after it (GUARD/ECO issue: "the verdict should say suppressed where it does").
    Every band is built here, once, for the one Bonferroni family of all of them: a band from the retrained seeds for
    each evidence the noise floor measured, and one from its own null distribution for evidence that carries one.
    Evidence marked ``reported_only`` is shown with its band (status "reported only") but is not in the family and
    decides nothing.
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
    # reported-only evidence gets its band for display, but is no member of the family and decides nothing
    reported = {ev.key: ev.reported_only for ev in evidence if ev.reported_only}
    m = max(1, sum(key not in reported for key in spreads) + sum(key not in reported for key in null_keys))
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
        band = bands[ev.key] = band.clipped(ev.bounds)
        margin = margin_of(ev.value, band, ev.bounds)
        status = "reported only" if ev.reported_only else _direction(ev, band) if margin is not None else "uninformative"
        rows.append({"key": ev.key, "role": ev.role, "value": ev.value, "lo": band.lo, "hi": band.hi,
                     "retrain_mean": band.mean, "status": status, "remembers": ev.remembers, "strong": ev.strong,
                     "band_from": band.source, "margin": margin, "reported_only": ev.reported_only})
    uninformative = [row["key"] for row in rows if row["status"] == "uninformative"]
    if uninformative:
        missing.append(f"{', '.join(uninformative)} (band spans every possible value: decides nothing at this size)")
    roles = {row["role"] for row in rows if row["status"] not in ("uninformative", "reported only")}
    for role in REQUIRED_ROLES:
        if role not in roles:
            missing.append(f"{role} evidence")

    def fmt(row: dict[str, Any]) -> str:
        where = "retrain band" if row["band_from"] == "retrained seeds" else "band of its null distribution"
        return f"{row['key']} = {row['value']:.4f} outside the {where} [{row['lo']:.4f}, {row['hi']:.4f}]"

    def failing(role: str, status: str) -> list[dict[str, Any]]:
        return [row for row in rows if row["role"] == role and row["status"] == status]

    # every way a model can differ from retraining, in the label's order of precedence; a robustness value *below* the
    # band (relearning slower than from a retrained model, a probe separating less) is a difference an attacker can see
    # too, so it counts as forgetting past retraining
    # (label, the aspect as listed after another label, the reason when it decides the label, the rows showing it)
    aspects: list[Aspect] = [
        ("not forgotten", "remembers more than retraining", "remembers more than retraining", failing("forget", "more")),
        ("over-forgotten", "forgets past retraining", "forgets past retraining", failing("forget", "less")),
        ("over-forgotten", "utility below retraining", "utility below retraining", failing("utility", "less")),
        ("over-forgotten", "resists relearning more than retraining", "resists relearning more than retraining",
         failing("robustness", "less")),
        ("suppressed", "recovers faster than retraining", "outputs look retrained, but recovers faster", failing("robustness", "more")),
    ]
    found = _ranked(aspects, weights_untouched, "a guard (weights untouched): an attack recovers the data faster than from "
                    "retraining (the weights hold it)")
    label: Label
    if found:
        label, deciding, reasons, also = _labelled(found, fmt)
        margin = max(-row["margin"] for _, row in deciding)
    elif "forget evidence" in missing or "utility evidence" in missing or "robustness evidence" in missing:
        label, reasons, also, margin = "inconclusive", [f"missing: {', '.join(missing)}"], [], None
    else:
        label, reasons, also = "removed", ["every evidence inside its band"], []
        # the slack of the evidence inside its band (utility above the band is no failure and no edge to fear)
        margin = min((row["margin"] for row in rows if row["status"] == "inside" and row["margin"] is not None), default=None)
    borderline = margin is not None and margin < BORDERLINE
    if borderline:
        reasons.append(f"borderline: {margin:.2f} band half-widths from the nearest band edge that would change the verdict")
    if reported:
        reasons.append(reported_only_reason(reported))
    strong = sorted({row["key"] for row in rows if row["strong"] and row["status"] != "reported only"})
    reasons.append(f"strong evidence used: {', '.join(strong)}" if strong else
                   "no strong evidence (per-example/shadow attacks, relearning, hidden probes) was computed")
    if weights_untouched:
        reasons.append("a guard: its weights are the original's, untouched; the weight-level evidence (relearning, quantisation, "
                       "soft prompt, hidden-state probes) reads them, the rest reads the guarded outputs")
    return Verdict(label, reasons, rows, missing, method, dict(tests or {}), strong, m, bands, also, margin, borderline,
                   weights_untouched)


NO_ORACLE = ("no retrained oracle exists for this task (real knowledge from pretraining): forget evidence is compared with the "
             "original model's value on facts it does not know (band: that level ± the evidence's floor), neighbours and general "
             "ability with the original model's own values (band: original ± floor), a forget fact read from the prompt with the "
             "original reading facts it does not know, the weight-level attacks (quantisation, soft prompt) with the model's own "
             "plain level plus what the same attack adds on facts the original does not know; the other robustness evidence is "
             "reported, not banded")


def no_oracle_power(known: Sequence[float] | np.ndarray, unknown: Sequence[float] | np.ndarray, remembers: str,
                    alpha: float = 0.05) -> str | None:
    """Why a forget evidence cannot decide without an oracle, or None: the original must score the facts it knows (the
    forget facts, before unlearning) beyond those it does not know, in the direction that means remembering (one-sided
    Mann–Whitney test at ``alpha``); otherwise a value at the unknown-fact level says nothing about forgetting."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return "no per-fact values on the known or the unknown facts to test its power with"
    p = float(mannwhitneyu(a, b, alternative="greater" if remembers == "higher" else "less").pvalue)
    if p < alpha:
        return None
    return (f"no power without an oracle: the original scores the facts it knows no {'higher' if remembers == 'higher' else 'lower'} "
            f"than those it does not know (one-sided Mann–Whitney p = {p:.2f}), so a value at the unknown-fact level says "
            "nothing about forgetting")


def decide_without_oracle(evidence: Iterable[Evidence], forget_levels: Mapping[str, float], utility_levels: Mapping[str, float], *,
                          missing: Sequence[str] = (), sources: Mapping[str, str] | None = None,
                          robustness_levels: Mapping[str, float] | None = None, weights_untouched: bool = False,
                          forget_pools: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]] | None = None,
                          alpha: float = 0.05) -> Verdict:
    """The verdict of a task without a retrained oracle (the ``knowledge`` data): ``forget_levels`` maps forget evidence keys
    to the original model's value on facts it does not know, ``utility_levels`` utility evidence keys to the original's own
    value (or, where ``sources`` names another source for a key, that level: e.g. "unknown facts" for the in-context score
    a model reaches on facts it never knew), ``robustness_levels`` robustness evidence keys to the value an attack would
    reach if it recovered no more than from a model that never knew the facts (the metric states it: e.g. the model's own
    plain level plus the attack's gain on the original over unknown facts); robustness evidence without one is reported.

    Forget evidence above its band -> not forgotten; forget evidence below it, utility (neighbours, general ability,
    retained facts) below the original's band, or an attack recovering less than from a model that never knew the facts ->
    over-forgotten; an attack recovering more than from such a model -> suppressed (without an oracle this is the one
    finding about the weights that can be positive); otherwise inconclusive, saying that the outputs are those of a model
    without the knowledge but that removal vs suppression cannot be decided without an oracle. ``weights_untouched`` (a
    guard) ranks suppressed before over-forgotten, as ``decide`` does.

    ``forget_pools`` maps forget evidence keys to (the original's per-fact values on the facts it does not know, the model's
    per-fact values on the forget facts): such evidence is compared with the band of a permutation test that the two are
    exchangeable (``Band.from_pool``), Bonferroni over the forget evidence that has one (family-wise false-alarm rate
    ``alpha``), at least ± its floor; other evidence with ± its floor around the level."""
    missing = list(missing)
    robustness_levels = robustness_levels or {}
    evidence = list(evidence)
    pools = {k: v for k, v in (forget_pools or {}).items()
             if any(ev.key == k and ev.role == "forget" and not ev.reported_only for ev in evidence)}
    m = max(1, len(pools))
    rows: list[dict[str, Any]] = []
    bands: dict[str, Band] = {}
    reported: dict[str, str] = {}
    for ev in evidence:
        if ev.reported_only:  # e.g. neighbours the original does not know: shown, decides nothing, as in ``decide``
            reported[ev.key] = ev.reported_only
        if ev.role == "robustness":
            levels, source = robustness_levels, "unknown facts, same attack"
        elif ev.role == "forget":
            levels, source = forget_levels, "unknown facts"
        else:
            levels, source = utility_levels, (sources or {}).get(ev.key, "original model")
        if ev.key not in levels or not math.isfinite(levels[ev.key]) or not math.isfinite(ev.value):
            if ev.role != "robustness" and ev.key not in levels and not ev.reported_only:
                missing.append(f"{ev.key} (no {'unknown-fact level' if ev.role == 'forget' else 'original value'} to compare with)")
            continue
        level, half = float(levels[ev.key]), max(float(ev.floor), ev.min_half_width)
        if ev.key in pools:  # the level is the pool's mean; the band is a mean of that many unknown facts'
            pool, sample = pools[ev.key]
            band = Band.from_pool(pool, sample, half, alpha, m, seed=zlib.crc32(ev.key.encode())).clipped(ev.bounds)
            level = band.mean
        else:
            band = Band(level, 0.0, level - half, level + half, half, None, None, 1, 0.0, source).clipped(ev.bounds)  # type: ignore[arg-type]
        if not ev.reported_only:
            bands[ev.key] = band
        status = "reported only" if ev.reported_only else _direction(ev, band)
        if ev.role == "utility" and status == "more":
            status = "inside"  # better utility than the original is no failure
        rows.append({"key": ev.key, "role": ev.role, "value": ev.value, "lo": band.lo, "hi": band.hi, "retrain_mean": level,  # the reference level (report columns)
                     "reference": level, "status": status, "remembers": ev.remembers, "strong": ev.strong, "band_from": source,
                     "margin": None if ev.reported_only else margin_of(ev.value, band, ev.bounds),
                     "reported_only": ev.reported_only or False})
    for role in ("forget", "utility"):
        if not any(r["role"] == role and r["status"] != "reported only" for r in rows):
            missing.append(f"{role} evidence")

    def fmt(row: dict[str, Any]) -> str:
        return f"{row['key']} = {row['value']:.4f} outside [{row['lo']:.4f}, {row['hi']:.4f}] (band of the {row['band_from']})"

    def failing(role: str, status: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["role"] == role and r["status"] == status]

    # (label, the aspect as listed after another label, the reason when it decides the label, the rows showing it)
    aspects: list[Aspect] = [
        ("not forgotten", "remembers more than a model that does not know the facts",
         "remembers more than a model that does not know the facts", failing("forget", "more")),
        ("over-forgotten", "forgets past not knowing", "forgets past not knowing", failing("forget", "less")),
        ("over-forgotten", "neighbours or general ability below the original", "neighbours or general ability lost",
         [r for r in failing("utility", "less") if r["band_from"] == "original model"]),
        ("over-forgotten", "reads a fact given in the prompt less well than the original reads facts it does not know",
         "a forget fact given back in the prompt is used less than the original uses facts it does not know",
         [r for r in failing("utility", "less") if r["band_from"] != "original model"]),
        ("over-forgotten", "resists attacks more than a model that never knew the facts",
         "resists attacks more than a model that never knew the facts", failing("robustness", "less")),
        ("suppressed", "an attack recovers more than from a model that never knew the facts",
         "outputs of a model without the knowledge, but an attack recovers more than from a model that never knew the facts",
         failing("robustness", "more")),
    ]
    found = _ranked(aspects, weights_untouched, "a guard (weights untouched): an attack on its weights recovers more than "
                    "from a model that never knew the facts")
    label: Label
    also: list[str] = []
    if found:
        label, _, reasons, also = _labelled(found, fmt)
    elif "forget evidence" in missing or "utility evidence" in missing:
        label, reasons = "inconclusive", [f"missing: {', '.join(missing)}"]
    else:
        label = "inconclusive"
        reasons = ["forget evidence at the level of facts the model does not know, neighbours and general ability kept: the outputs "
                   "are those of a model without the knowledge, but with no retrained oracle removal cannot be told from "
                   "suppression (run the robustness probes and read them against the original)"]
    if reported:
        reasons.append(reported_only_reason(reported))
    reasons.append(NO_ORACLE)
    if weights_untouched:
        reasons.append("a guard: its weights are the original's, untouched; the weight-level attacks read them")
    if "retrained oracle" not in " ".join(missing):
        missing.append("retrained oracle (none exists: the knowledge comes from pretraining)")
    return Verdict(label, reasons, rows, missing, NO_ORACLE, {}, [], len(bands), bands, also, None, False, weights_untouched)
