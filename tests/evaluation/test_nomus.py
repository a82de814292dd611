"""nomus: the formula against MUFAC's published numbers, the loss attack at chance on identically
distributed losses and perfect on separated ones, and the metric reports no evidence."""

import numpy as np
import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.evaluation.nomus import balanced, loss_mia_accuracy, nomus_score


@pytest.mark.parametrize("test_accuracy, forgetting_score, expected", [
    (0.5951, 0.2136, 0.5839),  # MUFAC "Original": 0.5·0.5951 + 0.5·(1 − 2·0.2136) = 0.58395
    (0.488, 0.0445, 0.6995),   # MUFAC "Retrained": 0.244 + 0.5·(1 − 0.089) = 0.6995
    (0.5633, 0.0953, 0.6863),  # MUFAC "Adv. NegGrad": 0.28165 + 0.5·(1 − 0.1906) = 0.68635
])
def test_formula_reproduces_mufac_readme(test_accuracy, forgetting_score, expected):
    # the README gives |MIA − 0.5|; the attack accuracy may sit on either side of 0.5
    for mia in (0.5 + forgetting_score, 0.5 - forgetting_score):
        assert nomus_score(test_accuracy, mia) == pytest.approx(expected, abs=6e-5)
    assert nomus_score(0.8, 0.7, utility_weight=1.0) == pytest.approx(0.8)
    assert nomus_score(0.8, 0.7, utility_weight=0.0) == pytest.approx(0.6)


def test_same_distribution_gives_chance_accuracy():
    """Members and non-members with losses drawn from one distribution: the held-out accuracy of the
    attack averages 0.5. Each split tests 400 examples (sd of one split's accuracy √(0.25/400) = 0.025);
    the mean of 10 is within 0.05 (2 sd of a single split)."""
    g = np.random.default_rng(0)
    accs = loss_mia_accuracy(g.exponential(size=3000), g.exponential(size=2000), n_splits=10, test_size=0.1,
                             rng=np.random.default_rng(1))
    assert len(accs) == 10 and abs(np.mean(accs) - 0.5) < 0.05


def test_separated_losses_give_perfect_accuracy():
    g = np.random.default_rng(0)
    accs = loss_mia_accuracy(g.uniform(0, 0.1, 500), g.uniform(2, 3, 300), n_splits=10, test_size=0.1, rng=np.random.default_rng(1))
    assert accs == [1.0] * 10


def test_balanced_subsamples_the_larger_side():
    m, n = balanced(np.arange(10.0), np.arange(100.0, 104.0), np.random.default_rng(0))
    assert len(m) == len(n) == 4 and set(m) <= set(range(10)) and n.tolist() == [100.0, 101.0, 102.0, 103.0]


def test_metric_values_and_no_evidence(class_task, class_refs):
    """Reported only; for class forgetting the utility term is the accuracy on the remaining classes' test
    examples, and the values are tied together by the formula."""
    ctx = EvalContext(class_task, get_adapter(class_task))
    res = build_metric("nomus").compute(class_refs.original, class_task, class_refs, ctx)
    assert res.evidence == ()
    logits = get_adapter(class_task).outputs(class_refs.original, class_task.test)["logits"]
    keep = class_task.test.labels != 3
    assert res.values["test_accuracy"] == pytest.approx(float((logits.argmax(1) == class_task.test.labels)[keep].mean()))
    assert res.values["nomus"] == pytest.approx(nomus_score(res.values["test_accuracy"], res.values["mia_accuracy"]))
    assert res.values["forgetting_score"] == pytest.approx(abs(res.values["mia_accuracy"] - 0.5))
    assert res.info["n_per_side"] == int((class_task.test.labels == 3).sum())


@pytest.mark.parametrize("params, field", [({"utility_weight": 1.5}, "utility_weight"), ({"n_splits": 0}, "n_splits"),
                                           ({"test_size": 1.0}, "test_size")])
def test_invalid_parameters_are_named(params, field):
    with pytest.raises(ConfigError, match=field):
        build_metric("nomus", params)
