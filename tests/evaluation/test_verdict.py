import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from unlearnkit.types import Evidence, MetricResult
from unlearnkit.verdict import decide, prediction_bands


def test_prediction_band_formula():
    vals = [0.90, 0.92, 0.91]
    b = prediction_bands({"k": vals}, {"k": 0.0}, alpha=0.05)["k"]
    t = student_t.ppf(1 - 0.05 / 2, 2)
    half = t * np.std(vals, ddof=1) * math.sqrt(1 + 1 / 3)
    assert b["lo"] == pytest.approx(np.mean(vals) - half) and b["hi"] == pytest.approx(np.mean(vals) + half)


def test_bonferroni_widens_with_more_bands_and_floor_applies():
    one = prediction_bands({"a": [1.0, 2.0, 3.0]}, {}, 0.05)["a"]["half_width"]
    six = prediction_bands({k: [1.0, 2.0, 3.0] for k in "abcdef"}, {}, 0.05)["a"]["half_width"]
    assert six > one
    flat = prediction_bands({"a": [0.5, 0.5, 0.5]}, {"a": 0.02}, 0.05)["a"]
    assert flat["lo"] == pytest.approx(0.48) and flat["hi"] == pytest.approx(0.52)
    single = prediction_bands({"a": [0.5]}, {"a": 0.03}, 0.05)["a"]
    assert single["half_width"] == pytest.approx(0.03)


def floor(**bands):
    return MetricResult("noise_floor", {}, info={"bands": {k: {"lo": lo, "hi": hi, "mean": (lo + hi) / 2} for k, (lo, hi) in bands.items()},
                                                 "R": 3, "alpha": 0.05})


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
    assert v.label == label
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
    nf = MetricResult("noise_floor", {}, info={"bands": prediction_bands(vals, {}, 0.05), "R": 3, "alpha": 0.05})
    auc = Evidence("u_lira.auc", 0.5, "forget", "higher", floor=0.01, strong=True, null_mean=0.5, null_sd=0.02)
    v = decide(ev() + [auc], nf)
    row = next(r for r in v.rows if r["key"] == "f")
    four = prediction_bands({**vals, "x": [0.0, 1.0, 2.0]}, {}, 0.05)["f"]  # the same band in a family of 4
    assert (row["lo"], row["hi"]) == (pytest.approx(four["lo"]), pytest.approx(four["hi"]))
    assert "over 4 evidence bands" in v.method and v.family == 4 and type(v).from_json(v.to_json()).family == 4
    from types import SimpleNamespace

    from unlearnkit.runs.summary import verdict_bands

    shown, m = verdict_bands(SimpleNamespace(noise_floor={"info": nf.info}, original={"verdict": v.to_json()}))
    assert m == 4 and (shown["f"]["lo"], shown["f"]["hi"]) == (row["lo"], row["hi"])  # the report shows the bands the verdict used
    assert "outside the band of its null distribution" in decide(ev() + [Evidence("u_lira.auc", 0.9, "forget", "higher", floor=0.01,
                                                                                   null_mean=0.5, null_sd=0.02)], nf).reasons[0]
    floored = prediction_bands({"f": [0.9, 0.9, 0.9]}, {"f": 0.05}, 0.05)  # a binding floor stays as it was
    assert decide([Evidence("f", 0.9, "forget"), auc], MetricResult("noise_floor", {}, info={"bands": floored, "R": 3})).rows[0]["hi"] == pytest.approx(0.95)


def test_inapplicable_metric_is_named_not_fatal(random_task, random_refs):
    from unlearnkit.adapters import get_adapter
    from unlearnkit.evaluation import EvalContext, build_metric, evaluate

    metrics = [build_metric(n) for n in ("accuracy", "mia_nn", "noise_floor")]
    results, missing = evaluate(random_refs.original, random_task, random_refs, metrics, EvalContext(random_task, get_adapter(random_task)))
    assert "mia_nn" not in results and "not applicable to 'random' forget sets" in missing["mia_nn"]
    assert "accuracy" in results and "noise_floor" in results
