import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from unlearnkit.types import Evidence, MetricResult
from unlearnkit.verdict import LABELS, Band, Verdict, decide, seed_spread


def band(vals, floor=0.0, m=1):
    return Band.from_seeds(seed_spread(vals), floor, 0.05, m)


def test_prediction_band_formula():
    vals = [0.90, 0.92, 0.91]
    b = band(vals)
    t = student_t.ppf(1 - 0.05 / 2, 2)
    half = t * np.std(vals, ddof=1) * math.sqrt(1 + 1 / 3)
    assert b.lo == pytest.approx(np.mean(vals) - half) and b.hi == pytest.approx(np.mean(vals) + half)
    assert (b.R, b.m, b.source) == (3, 1, "retrained seeds") and b.t == pytest.approx(t)


def test_bonferroni_widens_with_more_bands_and_floor_applies():
    assert band([1.0, 2.0, 3.0], m=6).half_width > band([1.0, 2.0, 3.0], m=1).half_width
    flat = band([0.5, 0.5, 0.5], floor=0.02)
    assert flat.lo == pytest.approx(0.48) and flat.hi == pytest.approx(0.52)
    single = band([0.5, float("nan"), None], floor=0.03)  # a seed without a finite value is no draw
    assert single.half_width == pytest.approx(0.03) and single.R == 1 and single.t is None
    assert seed_spread([float("nan"), None]) is None


def test_a_band_round_trips_through_json_and_reads_the_noise_floors_stored_bands():
    stored = {"mean": 0.9, "sd": 0.01, "lo": 0.86, "hi": 0.94, "half_width": 0.04, "R": 3, "t": 4.3, "m": 6, "alpha": 0.05}
    old = Band.from_json(stored)  # as the noise floor stored its bands before the verdict built them
    assert old.source == "retrained seeds" and old.to_json() == {**stored, "source": "retrained seeds"}
    null = Band.from_null(Evidence("x.auc", 0.6, "forget", null_mean=0.5, null_sd=0.02), 0.05, 4)
    for b in (band([0.9, 0.92, 0.91], 0.01, 4), band([0.5], 0.03), null):
        assert Band.from_json(b.to_json()) == b
    assert null.R is None and null.source == "null distribution"


def floor(**bands):
    """A noise floor whose retrained seeds agree, so each band is its centre ± its floor: (lo, hi) per key."""
    return MetricResult("noise_floor", {}, info={"seed_values": {k: [(lo + hi) / 2] * 3 for k, (lo, hi) in bands.items()},
                                                 "floors": {k: (hi - lo) / 2 for k, (lo, hi) in bands.items()}, "R": 3, "alpha": 0.05})


NF = floor(f=(0.85, 0.95), u=(0.85, 0.95), r=(0.4, 0.6))


def ev(f=0.9, u=0.9, r=0.5):
    return [Evidence("f", f, "forget", "higher"), Evidence("u", u, "utility", "higher"), Evidence("r", r, "robustness", "higher")]


@pytest.mark.parametrize("evidence,label", [
    (ev(), "removed"),
    (ev(f=0.99), "not forgotten"),
    (ev(f=0.5), "over-forgotten"),
    (ev(u=0.5), "over-forgotten"),
    (ev(r=0.9), "suppressed"),
    (ev(f=0.99, r=0.9), "not forgotten"),
    (ev()[:2], "inconclusive"),
])
def test_decision_rules(evidence, label):
    v = decide(evidence, NF)
    assert v.label == label and label in LABELS
    assert v.reasons


def test_direction_lower_means_remembers_less():
    # an efficacy-like evidence: higher = more forgotten
    evidence = [Evidence("f", 0.99, "forget", "lower"), Evidence("u", 0.9, "utility"), Evidence("r", 0.5, "robustness")]
    assert decide(evidence, NF).label == "over-forgotten"


def test_no_noise_floor_is_inconclusive():
    v = decide(ev(), None)
    assert v.label == "inconclusive" and "noise_floor" in v.missing


def test_verdict_names_the_numbers():
    v = decide(ev(f=0.99), NF)
    assert "0.9900" in v.reasons[0] and "[0.8500, 0.9500]" in v.reasons[0]


def test_null_band_evidence_uses_its_own_distribution_and_is_reported_as_strong():
    from scipy.stats import norm

    auc = Evidence("u_lira.auc", 0.62, "forget", "higher", floor=0.01, strong=True, null_mean=0.5, null_sd=0.02)
    v = decide(ev() + [auc], NF)
    row = next(r for r in v.rows if r["key"] == "u_lira.auc")
    z = norm.ppf(1 - 0.05 / (2 * 4))  # three noise-floor bands + one null band
    assert row["hi"] == pytest.approx(0.5 + z * 0.02) and row["band_from"] == "null distribution"
    assert v.label == "not forgotten" and v.strong_evidence == ["u_lira.auc"]
    assert "strong evidence used: u_lira.auc" in v.reasons[-1]


def test_retrain_bands_and_null_bands_share_one_bonferroni_family():
    vals = {"f": [0.88, 0.90, 0.92], "u": [0.88, 0.90, 0.92], "r": [0.45, 0.5, 0.55]}
    nf = MetricResult("noise_floor", {}, info={"seed_values": vals, "floors": {}, "R": 3, "alpha": 0.05})
    auc = Evidence("u_lira.auc", 0.5, "forget", "higher", floor=0.01, strong=True, null_mean=0.5, null_sd=0.02)
    v = decide(ev() + [auc], nf)
    row = next(r for r in v.rows if r["key"] == "f")
    four = band(vals["f"], m=4)  # three retrain bands and one null band
    assert v.bands["f"] == four and (row["lo"], row["hi"], row["retrain_mean"]) == (four.lo, four.hi, four.mean)
    assert v.bands["u_lira.auc"] == Band.from_null(auc, 0.05, 4) and sorted(v.bands) == ["f", "r", "u", "u_lira.auc"]
    assert "over 4 evidence bands" in v.method and v.family == 4 and Verdict.from_json(v.to_json()) == v
    assert "outside the band of its null distribution" in decide(ev() + [Evidence("u_lira.auc", 0.9, "forget", "higher", floor=0.01,
                                                                                   null_mean=0.5, null_sd=0.02)], nf).reasons[0]
    floored = MetricResult("noise_floor", {}, info={"seed_values": {"f": [0.9, 0.9, 0.9]}, "floors": {"f": 0.05}, "R": 3})
    assert decide([Evidence("f", 0.9, "forget"), auc], floored).rows[0]["hi"] == pytest.approx(0.95)  # a binding floor stays


def test_the_summary_shows_the_bands_the_verdict_stored():
    from types import SimpleNamespace

    from unlearnkit.runs.summary import verdict_bands

    vals = {"f": [0.88, 0.90, 0.92], "u": [0.88, 0.90, 0.92], "r": [0.45, 0.5, 0.55]}
    nf = MetricResult("noise_floor", {}, info={"seed_values": vals, "floors": {}, "R": 3, "alpha": 0.05})
    auc = Evidence("u_lira.auc", 0.5, "forget", "higher", floor=0.01, strong=True, null_mean=0.5, null_sd=0.02)
    v = decide(ev() + [auc], nf)
    shown, m = verdict_bands(SimpleNamespace(noise_floor={"info": nf.info}, original={"verdict": v.to_json()}))
    assert m == 4 and shown == {k: v.bands[k] for k in ("f", "u", "r")}  # the retrain bands; a null band is the model's own
    # a record written before verdicts stored bands: the bands its noise floor stored
    old = {"f": band(vals["f"], m=3).to_json()}
    del old["f"]["source"]
    shown, m = verdict_bands(SimpleNamespace(noise_floor={"info": {"bands": old}}, original={"verdict": {"label": "removed", "family": 3}}))
    assert m == 3 and shown == {"f": band(vals["f"], m=3)}


def test_inapplicable_metric_is_named_not_fatal(random_task, random_refs):
    from unlearnkit.adapters import get_adapter
    from unlearnkit.evaluation import EvalContext, build_metric, evaluate

    metrics = [build_metric(n) for n in ("accuracy", "mia_nn", "noise_floor")]
    results, missing = evaluate(random_refs.original, random_task, random_refs, metrics, EvalContext(random_task, get_adapter(random_task)))
    assert "mia_nn" not in results and "not applicable to 'random' forget sets" in missing["mia_nn"]
    assert "accuracy" in results and "noise_floor" in results


def test_a_band_is_never_narrower_than_one_example_of_its_split(random_task):
    """Three retrains all score 54/54; a fresh retrain scoring 53/54 is one example away, inside the band (the
    floor alone, 0.01, would call it over-forgotten); 52/54 is two examples away, outside."""
    from dataclasses import dataclass

    from torch import nn

    from unlearnkit.adapters import get_adapter
    from unlearnkit.evaluation import EvalContext, build_metric, evaluate
    from unlearnkit.evaluation.base import Metric
    from unlearnkit.references import References

    @dataclass(frozen=True)
    class Fraction(Metric):
        name = "fraction"
        paper = "test"

        def compute(self, model, task, refs, ctx):
            value = model.correct / 54
            return self.result({"value": value}, evidence=(Evidence(key="fraction", value=value, role="utility", floor=0.01,
                                                                   resolution=1 / 54),))

    def model(correct):
        m = nn.Linear(1, 1)
        m.correct = correct
        return m

    refs = References(retrained_seeds=(model(54), model(54), model(54)))
    ctx = EvalContext(random_task, get_adapter(random_task))
    metrics = [Fraction(), build_metric("noise_floor")]
    for correct, status in ((53, "inside"), (52, "less")):
        results, _ = evaluate(model(correct), random_task, refs, metrics, ctx)
        verdict = decide(results["fraction"].evidence, results["noise_floor"])
        assert verdict.bands["fraction"].half_width == pytest.approx(1 / 54)
        assert [row["status"] for row in verdict.rows] == [status]


def test_rows_carry_their_margin_in_half_widths_and_a_near_edge_verdict_is_borderline():
    nf = floor(f=(0.8, 1.0), u=(0.8, 1.0), r=(0.4, 0.6))  # centres 0.9 / 0.9 / 0.5, half-widths 0.1
    v = decide(ev(f=0.9, u=0.99, r=0.5), nf)
    margins = {row["key"]: row["margin"] for row in v.rows}
    assert margins["f"] == pytest.approx(1.0) and margins["u"] == pytest.approx(0.1) and margins["r"] == pytest.approx(1.0)
    assert v.label == "removed" and v.margin == pytest.approx(0.1) and v.borderline and v.display == "removed (borderline)"
    firm = decide(ev(f=0.9, u=0.9, r=0.5), nf)
    assert not firm.borderline and firm.display == "removed" and firm.margin == pytest.approx(1.0)
    out = decide(ev(f=1.05, u=0.9, r=0.5), nf)  # half a half-width above the band
    assert out.label == "not forgotten" and out.margin == pytest.approx(0.5) and not out.borderline
    assert [row["margin"] for row in out.rows if row["key"] == "f"] == [pytest.approx(-0.5)]
    assert Verdict.from_json(v.to_json()) == v


def test_every_failing_aspect_is_listed_not_only_the_label():
    v = decide(ev(f=0.99, u=0.5, r=0.9), NF)
    assert v.label == "not forgotten"
    assert v.also == ["utility below retraining (u)", "recovers faster than retraining (r)"]
    assert v.display == "not forgotten; also: utility below retraining (u), recovers faster than retraining (r)"


def test_relearning_slower_than_retraining_is_a_difference_from_retraining():
    v = decide(ev(r=0.2), NF)  # relearns far slower than any retrained model
    assert v.label == "over-forgotten" and v.reasons[0].startswith("resists relearning more than retraining: r = 0.2000")


def test_bands_are_cut_to_the_evidence_range_and_a_band_spanning_it_decides_nothing():
    nf = floor(f=(-0.2, 1.2), u=(0.85, 0.95), r=(0.4, 0.6), a=(0.9, 1.1))
    evidence = [Evidence("f", 0.5, "forget", bounds=(0.0, 1.0)), Evidence("u", 0.9, "utility"), Evidence("r", 0.5, "robustness"),
                Evidence("a", 1.0, "forget", bounds=(0.0, 1.0))]
    v = decide(evidence, nf)
    rows = {row["key"]: row for row in v.rows}
    assert (rows["f"]["lo"], rows["f"]["hi"], rows["f"]["status"], rows["f"]["margin"]) == (0.0, 1.0, "uninformative", None)
    assert rows["a"]["hi"] == 1.0 and rows["a"]["status"] == "inside" and rows["a"]["margin"] == pytest.approx(1.0)  # only its lower edge
    assert any("band spans every possible value" in m and "f" in m for m in v.missing) and v.label == "removed"
    alone = decide([evidence[0], evidence[1], evidence[2]], nf)  # the only forget evidence decides nothing
    assert alone.label == "inconclusive" and "forget evidence" in alone.missing


def test_a_method_row_states_agreement_borderline_seeds_and_other_failures():
    from collections import Counter

    from unlearnkit.runs.summary import MethodRow

    runs = [{"verdict": {"label": "removed", "borderline": True}}, {"verdict": {"label": "removed"}},
            {"verdict": {"label": "not forgotten", "also": ["utility below retraining (accuracy.test)"]}}]
    row = MethodRow("m", "gradient", runs, verdicts=Counter(r["verdict"]["label"] for r in runs))
    assert row.verdict == "removed 2/3, not forgotten 1/3 (1/3 borderline); also: utility below retraining 1/3"


def test_reported_only_evidence_is_shown_but_decides_nothing_and_leaves_the_family():
    """Evidence marked reported_only (powerless or miscalibrated, measured) gets its row and band, status 'reported only',
    is no member of the Bonferroni family and cannot change the label; the reason is stated."""
    nf = floor(f=(0.85, 0.95), u=(0.85, 0.95), r=(0.4, 0.6), p=(0.4, 0.6))
    probe = Evidence("p", 0.99, "robustness", "higher", reported_only="no power on any planted case")
    with_probe = decide(ev() + [probe], nf)
    deciding = decide(ev() + [Evidence("p", 0.99, "robustness", "higher")], nf)
    assert deciding.label == "suppressed"
    assert with_probe.label == "removed" and (with_probe.family, deciding.family) == (3, 4)
    row = next(r for r in with_probe.rows if r["key"] == "p")
    assert row["status"] == "reported only" and row["reported_only"] == "no power on any planted case"
    assert "p" in with_probe.bands and "p" not in with_probe.strong_evidence
    assert any("reported only" in r and "no power" in r for r in with_probe.reasons)
    only = decide([Evidence("f", 0.9, "forget"), Evidence("u", 0.9, "utility"), probe], nf)
    assert only.label == "inconclusive" and "robustness evidence" in only.missing  # a reported-only row fills no role
    assert Evidence.from_json(probe.to_json()) == probe


def test_a_guards_weights_recovering_the_data_is_suppressed_before_its_refusals_are_over_forgetting():
    """A guard (weights untouched) whose weight-level evidence recovers the data is "suppressed", its utility loss listed
    after it; the same evidence from a model whose weights changed is over-forgotten first. Forget evidence remembering
    more than retraining still comes first for both."""
    floor = MetricResult("noise_floor", {}, info={"R": 3, "alpha": 0.05, "floors": {},
                                                 "seed_values": {"f.forget": [0.10, 0.11, 0.12], "u.retain": [0.80, 0.81, 0.82],
                                                                 "w.relearn": [0.30, 0.31, 0.32]}})

    def evidence(forget):
        return [Evidence("f.forget", forget, "forget"), Evidence("u.retain", 0.2, "utility"), Evidence("w.relearn", 0.9, "robustness")]

    plain = decide(evidence(0.11), floor)
    assert plain.label == "over-forgotten" and plain.also == ["recovers faster than retraining (w.relearn)"]
    assert not plain.weights_untouched and not any("a guard" in r for r in plain.reasons)
    guard = decide(evidence(0.11), floor, weights_untouched=True)
    assert guard.label == "suppressed" and guard.also == ["utility below retraining (u.retain)"]
    assert guard.reasons[0].startswith("a guard (weights untouched): an attack recovers the data faster than from retraining "
                                       "(the weights hold it): w.relearn")
    assert any(r.startswith("a guard: its weights are the original's") for r in guard.reasons)
    assert Verdict.from_json(guard.to_json()).weights_untouched
    assert decide(evidence(0.9), floor, weights_untouched=True).label == "not forgotten"
