import math

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation.epsilon_score import EPS_CAP, best_rule_epsilon, bucket_points, example_epsilon, rule_epsilon
from unlearnkit.methods import build_method


def test_rule_epsilon_hand_cases():
    delta = 1e-5
    # FPR = 0.1, FNR = 0.2: max(log(0.9−δ) − log 0.2, log(0.8−δ) − log 0.1)
    expected = max(math.log(0.9 - delta) - math.log(0.2), math.log(0.8 - delta) - math.log(0.1))
    assert rule_epsilon(np.array([0.1]), np.array([0.2]), delta)[0] == pytest.approx(expected)
    assert rule_epsilon(np.array([0.5]), np.array([0.5]), delta)[0] == 0.0  # a coin flip: no privacy loss
    assert np.isneginf(rule_epsilon(np.array([0.0]), np.array([0.3]), delta)[0])  # discarded
    assert np.isposinf(rule_epsilon(np.array([0.0]), np.array([0.0]), delta)[0])  # perfect separation


def test_identical_ensembles_give_zero_and_separated_give_cap():
    rng = np.random.default_rng(0)
    s = rng.normal(size=16)
    for search in ("grid", "exhaustive"):
        assert example_epsilon(s, s.copy(), search=search) == 0.0
        assert example_epsilon(rng.normal(size=16), rng.normal(size=16) + 100, search=search) == EPS_CAP
        assert example_epsilon(np.ones(16), rng.normal(size=16), search=search) == EPS_CAP  # degenerate spread
        assert example_epsilon(s * 0.009, s, search=search) == EPS_CAP  # range ratio 0.009 < 0.01
    with pytest.raises(ConfigError, match="search"):
        example_epsilon(s, s, search="fine")


def test_every_rule_discarded_gives_zero():
    # FPR = 0 with FNR > 0, and FNR = 0 with FPR > 0: no rule survives (the reference stops with an assertion)
    assert best_rule_epsilon(np.array([0.0, 0.25]), np.array([0.5, 0.0]), 1e-5) == 0.0
    # one surviving rule (FPR 0.25, FNR 0.5) decides: max(log(0.75 − δ) − log 0.5, log(0.5 − δ) − log 0.25)
    assert best_rule_epsilon(np.array([0.0, 0.25]), np.array([0.5, 0.5]), 1e-5) == pytest.approx(math.log(0.5 - 1e-5) - math.log(0.25))


def brute_force_epsilon(unlearned, retrained, delta=1e-5):
    """The challenge's two rule families written out directly: "larger median if s >= t" and "peakier (smaller
    range; on a tie the smaller median) if a <= s <= b", over thresholds and interval ends at the sample values."""
    pos, neg = (unlearned, retrained) if np.median(unlearned) >= np.median(retrained) else (retrained, unlearned)
    inner, outer = (pos, neg) if np.ptp(pos) < np.ptp(neg) else (neg, pos)
    pts = np.unique(np.r_[pos, neg])
    rates = [((neg >= t).mean(), (pos < t).mean()) for t in np.r_[pts, pts[-1] + 1]]
    rates += [(((outer >= a) & (outer <= b)).mean(), 1 - ((inner >= a) & (inner <= b)).mean()) for a in pts for b in pts if a <= b]
    fpr, fnr = np.array(rates).T
    return min(rule_epsilon(fpr, fnr, delta).max(), EPS_CAP)


def test_the_interval_rule_puts_the_peakier_distribution_inside():
    # the retrained models sit in a narrow band between two halves of the unlearned ones (larger median): the interval
    # [-1, 1] separates them perfectly, which only the "peakier inside" rule sees
    unlearned = np.array([-5.0, -4, -3, 3, 4, 5, 6, 7])
    retrained = np.array([-0.5, -0.3, -0.1, 0, 0.1, 0.2, 0.3, 0.5])
    for search in ("grid", "exhaustive"):
        assert example_epsilon(unlearned, retrained, search=search) == EPS_CAP
        assert example_epsilon(retrained, unlearned, search=search) == EPS_CAP
    rng = np.random.default_rng(3)
    for case in range(60):
        wide = rng.normal(size=8) * 4 + (case % 3)
        narrow = rng.normal(size=8) * rng.uniform(0.3, 2.0)
        u, r = (wide, narrow) if case % 2 else (narrow, wide)
        assert example_epsilon(u, r, search="exhaustive") == pytest.approx(brute_force_epsilon(u, r)), case


def literal_grid_epsilon(unlearned, retrained, delta=1e-5):
    """The challenge's grid written out as evaluation-conventions.md states it, every rule as a (models × rules)
    comparison: single thresholds linspace(min, max, ceil(100·range)) in float32, "positive iff s >= t"; intervals
    with the peakier group inside, right edges linspace(Pmin + w − 2, Pmax + 2, ceil((Pmax − Pmin − w + 4)·100)) and,
    per right edge r, 400 left edges linspace(r − w − 2, r − w + 2), "inside iff l <= s <= r"."""
    pos, neg = (retrained, unlearned) if np.median(retrained) > np.median(unlearned) else (unlearned, retrained)
    lo, hi = pos.min() + 0.0, max(pos.max(), neg.max())
    lo = min(lo, neg.min())
    t = torch.linspace(lo, hi, math.ceil((hi - lo) * 100), dtype=torch.float32).double().numpy()
    fpr_s, fnr_s = (neg[:, None] >= t).mean(0), (pos[:, None] < t).mean(0)
    inner, outer = (pos, neg) if np.ptp(pos) < np.ptp(neg) else (neg, pos)
    w = np.ptp(inner)
    start, stop = inner.min() + w - 2, inner.max() + 2
    fpr_i, fnr_i = [], []
    for r in np.linspace(start, stop, math.ceil((stop - start) * 100)):
        left = np.linspace(r - w - 2, r - w + 2, 400)
        fpr_i.append(((outer[:, None] >= left) & (outer[:, None] <= r)).mean(0))
        fnr_i.append(1 - ((inner[:, None] >= left) & (inner[:, None] <= r)).mean(0))
    eps = rule_epsilon(np.r_[fpr_s, np.concatenate(fpr_i)], np.r_[fnr_s, np.concatenate(fnr_i)], delta)
    return min(max(eps.max(), 0.0), EPS_CAP)


def test_grid_is_the_challenges_rule_on_a_hand_case_where_exhaustive_differs():
    # N = 4. Negative (smaller median) 0, 0.125, 0.25, 0.5; positive 0.50390625, 0.75, 0.875, 1.25: a threshold in the gap
    # (0.5, 0.50390625] separates them perfectly, so the exhaustive search gives ε = ∞ → the cap.
    neg = np.array([0.0, 0.125, 0.25, 0.5])
    pos = np.array([0.50390625, 0.75, 0.875, 1.25])
    assert example_epsilon(pos, neg, search="exhaustive") == EPS_CAP
    # The challenge's grid misses that gap.
    # Single thresholds: ceil(1.25 · 100) = 125 points k · 1.25/124; k = 49, 50 give 0.4940, 0.5040 — none in the gap, so
    # every threshold has FNR = 0 (t <= 0.5) or FPR = 0 (t > 0.5039): all discarded.
    # Intervals: the negative group is peakier (range 0.5 < 0.746), w = 0.5; right edges linspace(-1.5, 2.5, 400), step
    # 4/399: r_199 = 0.49499, r_200 = 0.50501 — none in [0.5, 0.50390625), so no interval holds all four negatives and no
    # positive. The best reachable interval holds three negatives and one positive (l in (0, 0.125], e.g. r_200 with its
    # left edge r_200 − 2.5 + 200 · 4/399 = 0.0100): FPR = 1/4, FNR = 1/4, ε = log(1 − δ − 1/4) − log(1/4) (both terms).
    # Intervals are runs of the sorted values: the top a negatives and the bottom b positives. Runs with a = 4 and b >= 1
    # (FNR = 0) or b = 0 and a < 4 (FPR = 0) are discarded; (a, b) = (2, 1) and (3, 2) give log(2 − 4δ) < log 3; a <= b gives 0.
    delta = 1e-5
    expected = math.log(1 - delta - 0.25) - math.log(0.25)
    assert example_epsilon(pos, neg) == pytest.approx(expected, rel=1e-12)
    assert example_epsilon(neg, pos) == pytest.approx(expected, rel=1e-12)  # which side is "unlearned" does not matter
    assert literal_grid_epsilon(pos, neg) == pytest.approx(expected, rel=1e-12)


def test_grid_matches_the_literal_rule_and_never_exceeds_exhaustive():
    rng = np.random.default_rng(7)
    for case in range(40):
        n = 6 + case % 5
        scale = [0.01, 0.05, 0.3, 2.0][case % 4]  # small scales: gaps narrower than the grid's step of 0.01
        u = rng.normal(size=n) * scale * rng.uniform(0.5, 2) + rng.normal() * scale
        r = rng.normal(size=n) * scale * rng.uniform(0.5, 2)
        grid, exhaustive = example_epsilon(u, r), example_epsilon(u, r, search="exhaustive")
        assert grid == pytest.approx(literal_grid_epsilon(u, r), rel=1e-12, abs=1e-12), case
        assert grid <= exhaustive + 1e-12, case


def test_bucket_points():
    # N = 16: top = ceil(ln 15) = 3; ε in [0, 0.5) -> 1, [0.5, 1) -> 1/2, ..., >= 3 -> 0
    assert bucket_points(np.array([0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 50.0]), 16).tolist() == [1.0, 1.0, 0.5, 0.25, 2 ** -5, 0.0, 0.0]


def test_memorisation_shift_cancels_calibration():
    from unlearnkit.evaluation.epsilon_score import memorisation_shift

    r = np.zeros((4, 10))
    assert memorisation_shift(r + 3.0, r, r + 3.0, r) == 0.0  # uniformly more confident: calibration, not memory
    assert memorisation_shift(r + 5.0, r, r + 3.0, r) == 2.0  # more confident on forget than on test: remembered
    assert memorisation_shift(r + 1.0, r, r + 3.0, r) == -2.0  # less: pushed past retraining


def orig_excess(metric, task, refs, ctx):
    method, ctx.method = ctx.method, None
    try:
        return metric.compute(refs.original, task, refs, ctx).values["signed_excess"]
    finally:
        ctx.method = method


def test_epsilon_score_exact_unlearner_matches_reference_and_memoriser_is_flagged():
    from tests.evaluation.test_lira import noise_task_and_refs

    task, refs = noise_task_and_refs()
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("epsilon_score", {"n_models": 6, "n_examples": 60})
    ctx.method = build_method("retrain")
    exact = metric.compute(refs.retrained, task, refs, ctx)
    # retrain is judged with a third ensemble, independent of the reference pair: its excess is noise, not 0 by construction
    assert exact.values["signed_excess"] != 0.0
    assert abs(exact.values["signed_excess"]) < 0.5 * orig_excess(metric, task, refs, ctx), exact.values
    exhaustive = build_metric("epsilon_score", {"n_models": 6, "n_examples": 60, "search": "exhaustive"}).compute(refs.retrained, task, refs, ctx)
    assert exhaustive.values["forgetting_quality"] <= exact.values["forgetting_quality"]  # ε never lower: points never higher
    assert np.all(exhaustive.per_example["epsilon.forget"][1] >= exact.per_example["epsilon.forget"][1] - 1e-12)
    with pytest.raises(ConfigError, match="search"):
        build_metric("epsilon_score", {"search": "fine"})
    ctx.method = None  # the original: N identical copies of a model that memorised the forget set
    orig = metric.compute(refs.original, task, refs, ctx)
    assert orig.values["forgetting_quality"] == 0.0 and orig.values["signed_excess"] > 0, orig.values


def test_split_null_sd_carries_the_ensemble_level_noise_a_per_example_error_misses():
    """Each model shifts every example's statistic together (a model-level offset, as which seeds were drawn does): the sd
    of the excess over independent draws of the two ensembles is several times the per-example standard error, and the
    random-split sd from ONE draw recovers it."""
    from unlearnkit.ensembles import ensemble_split_sd

    n_models, n_ex, tau, sigma = 8, 60, 1.0, 0.3
    rng = np.random.default_rng(0)

    def ensemble() -> np.ndarray:
        return rng.normal(0.0, tau, (n_models, 1)) + rng.normal(0.0, sigma, (n_models, n_ex))

    oracle = ensemble()

    def points(ens: np.ndarray) -> np.ndarray:
        return bucket_points(np.array([example_epsilon(ens[:, i], oracle[:, i], search="exhaustive") for i in range(n_ex)]), n_models)

    draws = [(ensemble(), ensemble()) for _ in range(120)]
    excess = np.array([points(b).mean() - points(a).mean() for a, b in draws])
    true_sd = excess.std(ddof=1)
    per_example = np.mean([np.sqrt((points(a).var() + points(b).var()) / n_ex) for a, b in draws[:10]])
    split = np.mean([ensemble_split_sd(a, b, lambda e: float(points(e).mean()), 40, np.random.default_rng(i)) for i, (a, b) in enumerate(draws[:3])])
    assert per_example < 0.6 * true_sd, (per_example, true_sd)  # the old band: far too narrow
    assert 0.7 * true_sd < split < 1.4 * true_sd, (split, true_sd)
    with pytest.raises(ConfigError, match="same shape"):
        ensemble_split_sd(draws[0][0], draws[0][1][:, :5], np.mean, 40, rng)
    with pytest.raises(ConfigError, match="permutations"):
        build_metric("epsilon_score", {"permutations": 5})
