"""Early stopping at the holdout level (Jang et al.'s forgetting threshold): the measure, when the rule fires,
what a method reports, and the configuration errors."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.references import References
from unlearnkit.stopping import HoldoutLevelStop, mean_true_prob


def test_mean_true_prob_is_the_answer_probability(causal_lm_task, causal_lm_refs):
    """On a causal LM the measure is the length-normalised answer probability exp(−NLL̄) the metrics report; the
    model's train/eval mode is restored."""
    model, adapter = causal_lm_refs.original, get_adapter(causal_lm_task)
    expected = float(np.exp(-adapter.outputs(model, causal_lm_task.forget)["nll"]).mean())
    was = model.training
    model.train()
    try:
        assert mean_true_prob(model, causal_lm_task.forget, adapter, batch_size=5) == pytest.approx(expected, rel=1e-5)
        assert model.training
    finally:
        model.train(was)


def test_rule_fires_at_the_first_check_at_or_below_the_level(monkeypatch):
    values = iter([0.9, 0.7, 0.5, 0.3])
    monkeypatch.setattr("unlearnkit.stopping.mean_true_prob", lambda *a, **k: next(values))
    rule = HoldoutLevelStop(forget=None, level=0.5, adapter=None, every=2, nearest=False)
    fired = [rule(step, None) for step in range(6)]
    assert fired[:5] == [None] * 5  # checks after steps 1, 3, 5 only (every=2): 0.9, 0.7, then 0.5
    assert fired[5] is not None and "0.500" in fired[5]  # 0.5 <= 0.5 fires
    assert rule.trace == [(1, 0.9), (3, 0.7), (5, 0.5)] and rule.to_json()["fired"] == rule.fired



@pytest.mark.parametrize(("last", "kept_step"), [(0.2, 1), (0.49, None)])
def test_nearest_restores_the_check_closer_to_the_level(monkeypatch, last, kept_step):
    """Level 0.5, checks 0.9, 0.52, then ``last``: 0.2 lands 0.3 below, farther than 0.52 was above, so the weights of
    the 0.52 check (step 1) come back — trainable ones only; 0.49 is nearer, so the last weights stay."""
    values = iter([0.9, 0.52, last])
    monkeypatch.setattr("unlearnkit.stopping.mean_true_prob", lambda *a, **k: next(values))
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    rule = HoldoutLevelStop(forget=None, level=0.5, adapter=None)
    for step in range(3):
        with torch.no_grad():  # stands in for a training step
            model.weight.fill_(float(step))
            model.bias.fill_(float(step))
        fired = rule(step, model)
    assert fired is not None and rule.restored == kept_step and rule.to_json()["restored"] == kept_step
    assert float(model.weight.detach()[0, 0]) == (2.0 if kept_step is None else 1.0)
    assert float(model.bias[0]) == 2.0  # frozen: never copied, never restored
    assert ("restored the weights of step 1 (0.520)" in fired) == (kept_step == 1)

def test_gradient_ascent_stops_at_the_holdout_level(causal_lm_task, causal_lm_refs):
    """With a large budget, plain gradient ascent drives the forget probability to ~0; with stop_at='holdout' it stops
    at the first step where the forget probability is at or below the holdout profiles' on the start model."""
    adapter = get_adapter(causal_lm_task)
    params = {"steps": 60, "lr": 3e-3, "batch_size": 4}
    free = build_method("grad_ascent", params).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(),
                                                      rng=np.random.default_rng(0))
    stopped = build_method("grad_ascent", {**params, "stop_at": "holdout"}).unlearn(
        copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(), rng=np.random.default_rng(0))
    level = mean_true_prob(causal_lm_refs.original, causal_lm_task.test, adapter)
    rule = stopped.info["early_stop"]
    assert rule["level"] == pytest.approx(level, rel=1e-6)
    steps = stopped.info["train"]["steps"]
    assert rule["fired"] and 1 <= steps < 60 and "warning" not in stopped.info
    trace = rule["trace"]
    assert [s for s, _ in trace] == list(range(steps))
    assert trace[-1][1] <= level and all(v > level for _, v in trace[:-1])
    kept = trace[-1][1] if rule["restored"] is None else trace[-2][1]  # the check nearer the level
    assert abs(kept - level) == min(abs(v - level) for _, v in trace[-2:])
    assert mean_true_prob(stopped.model, causal_lm_task.forget, adapter) == pytest.approx(kept, rel=1e-5)
    assert mean_true_prob(free.model, causal_lm_task.forget, adapter) < 0.5 * kept  # the fixed budget over-forgets


def test_stop_configuration_errors(causal_lm_task):
    with pytest.raises(ConfigError, match="stop_at.*retrain"):
        build_method("npo", {"stop_at": "retrain"})
    with pytest.raises(ConfigError, match="stop_check_every"):
        build_method("npo", {"stop_at": "holdout", "stop_check_every": 0})


def test_holdout_stop_is_refused_when_whole_classes_are_forgotten(class_task, class_refs, random_task):
    """On a one-class forget set the original predicts the class's unseen examples about as well as its forget examples
    (0.94 vs 0.97 here), so the holdout level is reached almost at once, although a retrained model never predicts the
    class: the rule is refused there, kept on a random forget set."""
    method = build_method("grad_ascent", {"steps": 3, "stop_at": "holdout", "batch_size": 16})
    assert class_task.whole_classes() is not None and random_task.whole_classes() is None
    with pytest.raises(ConfigError, match="stop almost at once"):
        method.unlearn(copy.deepcopy(class_refs.original), class_task, class_refs, rng=np.random.default_rng(0))
    adapter = get_adapter(random_task)
    assert method.stop_rule(class_refs.original, random_task, adapter, "cpu") is not None
