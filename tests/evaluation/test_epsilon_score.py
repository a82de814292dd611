import math

import numpy as np
import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.evaluation.epsilon_score import EPS_CAP, bucket_points, example_epsilon, rule_epsilon
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
    assert example_epsilon(s, s.copy()) == 0.0
    assert example_epsilon(rng.normal(size=16), rng.normal(size=16) + 100) == EPS_CAP
    assert example_epsilon(np.ones(16), rng.normal(size=16)) == EPS_CAP  # degenerate spread


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
    assert example_epsilon(unlearned, retrained) == EPS_CAP
    assert example_epsilon(retrained, unlearned) == EPS_CAP
    rng = np.random.default_rng(3)
    for case in range(60):
        wide = rng.normal(size=8) * 4 + (case % 3)
        narrow = rng.normal(size=8) * rng.uniform(0.3, 2.0)
        u, r = (wide, narrow) if case % 2 else (narrow, wide)
        assert example_epsilon(u, r) == pytest.approx(brute_force_epsilon(u, r)), case


def test_bucket_points():
    # N = 16: top = ceil(ln 15) = 3; ε in [0, 0.5) -> 1, [0.5, 1) -> 1/2, ..., >= 3 -> 0
    assert bucket_points(np.array([0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 50.0]), 16).tolist() == [1.0, 1.0, 0.5, 0.25, 2 ** -5, 0.0, 0.0]


def test_memorisation_shift_cancels_calibration():
    from unlearnkit.evaluation.epsilon_score import memorisation_shift

    r = np.zeros((4, 10))
    assert memorisation_shift(r + 3.0, r, r + 3.0, r) == 0.0  # uniformly more confident: calibration, not memory
    assert memorisation_shift(r + 5.0, r, r + 3.0, r) == 2.0  # more confident on forget than on test: remembered
    assert memorisation_shift(r + 1.0, r, r + 3.0, r) == -2.0  # less: pushed past retraining


def test_epsilon_score_exact_unlearner_matches_reference_and_memoriser_is_flagged():
    from tests.evaluation.test_lira import noise_task_and_refs

    task, refs = noise_task_and_refs()
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("epsilon_score", {"n_models": 6, "n_examples": 60})
    ctx.method = build_method("retrain")
    exact = metric.compute(refs.retrained, task, refs, ctx)
    assert exact.values["forgetting_quality"] == pytest.approx(exact.values["reference_quality"]), exact.values  # the same two ensembles
    assert exact.values["signed_excess"] == 0.0
    ctx.method = None  # the original: N identical copies of a model that memorised the forget set
    orig = metric.compute(refs.original, task, refs, ctx)
    assert orig.values["forgetting_quality"] == 0.0 and orig.values["signed_excess"] > 0, orig.values
