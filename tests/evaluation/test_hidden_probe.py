"""hidden_probe: the forgotten class is more readable from the original's features than from the
retrained models'; random features carry no membership; same examples and numbers every time."""

import numpy as np
import pytest
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, ModelError
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.models import build_model
from unlearnkit.seeding import torch_seed


def run(model, task, **params):
    return build_metric("hidden_probe", params).compute(model, task, None, EvalContext(task, get_adapter(task)))


def test_class_probe_reads_the_forgotten_class_better_in_the_original(class_task, class_refs):
    """Forget class vs retain examples on penultimate features. Measured on digits: the original AUC 0.997,
    accuracy 0.97; the retrained models (never trained on class 3, but their features still partly separate
    digits) AUC 0.966–0.974, accuracy 0.90–0.91."""
    original = run(class_refs.original, class_task)
    retrained = [run(m, class_task) for m in class_refs.retrained_seeds]
    assert original.info["mode"] == "class" and original.info["negatives"] == "retain"
    assert original.values["auc"] > 0.99 > max(r.values["auc"] for r in retrained)
    assert original.values["accuracy"] - max(r.values["accuracy"] for r in retrained) > 0.03
    assert original.evidence[0].key == "hidden_probe.few_shot_auc" and original.evidence[0].role == "robustness"
    assert original.evidence[0].reported_only is None


def test_few_shot_probe_separates_the_original_from_retraining(class_task, class_refs):
    """The half-data probe saturates (both near 1); with 5 shots per side the retrained models read class 3 at
    0.85–0.90 and the original at ≈ 0.98 (measured on digits)."""
    original = run(class_refs.original, class_task).values["few_shot_auc"]
    retrained = [run(m, class_task).values["few_shot_auc"] for m in class_refs.retrained_seeds]
    assert original > 0.95 and max(retrained) < 0.93 and original - max(retrained) > 0.04


def test_membership_probe_is_reported_only(random_task, random_refs):
    ev = run(random_refs.original, random_task).evidence[0]
    assert ev.reported_only and "membership" in ev.reported_only


def test_membership_probe_on_random_features_is_at_chance(random_task):
    """An untrained network's features know nothing about which examples were trained on: forget vs test
    AUC ≈ 0.5. Null sd of this cross-fitted AUC with 135 examples per side: 0.053 (measured by permuting the
    membership labels 20 times); the tolerance 0.2 is ~4 sd."""
    with torch_seed(3):
        untrained = build_model("mlp", (64,), 10, hidden=(64, 64))
    res = run(untrained, random_task)
    assert res.info["mode"] == "membership" and res.info["negatives"] == "test"
    assert res.info["n_per_side"] == len(random_task.forget)
    assert abs(res.values["auc"] - 0.5) < 0.2


def test_deterministic_and_same_examples_for_every_model(class_task, class_refs):
    a = run(class_refs.original, class_task)
    b = run(class_refs.original, class_task)
    assert a.values == b.values
    for key, (ids, vals) in a.per_example.items():
        assert np.array_equal(ids, b.per_example[key][0]) and np.array_equal(vals, b.per_example[key][1])
    metric = build_metric("hidden_probe")
    ctx = EvalContext(class_task, get_adapter(class_task))
    sets = metric.probe_sets(class_task, ctx)
    assert len(sets.positives) == len(sets.negatives) == len(class_task.forget)
    assert set(sets.negatives.ids) <= set(class_task.retain.ids)
    other = metric.probe_sets(class_task, EvalContext(class_task, get_adapter(class_task)))
    assert np.array_equal(sets.negatives.ids, other.negatives.ids)


def test_max_per_side_caps_both_sides(class_task, class_refs):
    res = run(class_refs.original, class_task, max_per_side=50)
    assert res.info["n_per_side"] == 50
    ids, _ = res.per_example["probe_score.forget_probed"]
    assert len(ids) == 50 and set(ids) <= set(class_task.forget.ids)


def test_model_without_features_is_refused(class_task):
    with pytest.raises(ModelError, match="features"):
        run(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), class_task)


@pytest.mark.parametrize("params, field", [({"folds": 1}, "folds"), ({"C": -1.0}, "C"), ({"max_per_side": 1}, "max_per_side")])
def test_invalid_parameters_are_named(params, field):
    with pytest.raises(ConfigError, match=field):
        build_metric("hidden_probe", params)
