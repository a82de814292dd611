"""When unlearning is free: the wrapper only ever removes forget points (retain untouched), skips exactly
the points scoring below the cut (scores checked against an independent autograd computation), equals the
inner method bit for bit when nothing is skipped, and reports savings consistent with what it skipped."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import state_equal
from unlearnkit.cost import CostMeter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.low_influence_skip import (
    LowInfluenceSkip,
    evenly_spaced,
    influence_scores,
    inverse_fisher_weights,
)


class SpyInner:
    """Records the task the wrapper hands over, then runs grad_diff on it."""

    def __init__(self, params=None):
        self.method = build_method("grad_diff", params or {})
        self.tasks = []

    def unlearn(self, model, task, refs, **kw):
        self.tasks.append(task)
        return self.method.unlearn(model, task, refs, **kw)


def loss_gradients(model, split):
    """Per-example cross-entropy gradients, one backward pass per example (independent of torch.func)."""
    rows = []
    for i in range(len(split)):
        model.zero_grad(set_to_none=True)
        x, y = split.data.x[i : i + 1], split.data.y[i : i + 1]
        torch.nn.functional.cross_entropy(model(x), y).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def test_scores_match_an_independent_self_influence_computation(random_task, original):
    original.eval()
    sample = evenly_spaced(random_task.retain, 50)
    assert len(sample) == 50 and set(sample.ids) <= set(random_task.retain.ids)
    fisher = loss_gradients(original, sample).pow(2).mean(0)
    weights = 1.0 / (fisher + 1e-3 * fisher.mean())
    expected = (loss_gradients(original, random_task.forget).pow(2) * weights).sum(1).numpy()
    weights_fisher = inverse_fisher_weights(original, sample, 1e-3, "cpu", 16)
    got = influence_scores(original, random_task.forget, weights_fisher, device="cpu", batch_size=16)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    norms = influence_scores(original, random_task.forget, None, device="cpu", batch_size=16)
    np.testing.assert_allclose(norms, loss_gradients(original, random_task.forget).pow(2).sum(1).numpy(), rtol=1e-4)


def test_inner_sees_a_forget_subset_and_the_same_retain(random_task, random_refs, original, monkeypatch):
    spy = SpyInner()
    monkeypatch.setattr(LowInfluenceSkip, "wrapped", lambda self: spy)
    method = build_method("low_influence_skip", {"quantile": 0.4, "score": "grad_norm", "batch_size": 32})
    out = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))

    (seen,) = spy.tasks
    assert set(seen.forget.ids) < set(random_task.forget.ids)  # never adds, here strictly removes
    assert seen.retain is random_task.retain  # skipped points are not moved to retain
    assert seen.test is random_task.test
    skipped = set(random_task.forget.ids) - set(seen.forget.ids)
    assert skipped == set(out.info["skipped_ids"])
    assert out.info["n_skipped"] == len(skipped) and out.info["n_kept"] == len(seen.forget)
    # exactly the points scoring below the 0.4-quantile of the forget scores were skipped
    scores = loss_gradients(copy.deepcopy(original).eval(), random_task.forget).pow(2).sum(1).numpy()
    below = set(random_task.forget.ids[scores < np.quantile(scores, 0.4)])
    assert skipped == below
    assert abs(len(skipped) / len(random_task.forget) - 0.4) < 0.02
    # the kept points keep their data: same ids, same inputs
    kept = random_task.forget.select_ids(seen.forget.ids)
    assert torch.equal(kept.data.x, seen.forget.data.x)


@pytest.mark.parametrize("params", [{"rule": "threshold", "threshold": 0.0}, {"quantile": 0.0}])
def test_nothing_skipped_is_bit_identical_to_the_inner_method(params, random_task, random_refs, original):
    inner = {"steps": 6, "batch_size": 32, "lr": 0.02}
    wrapped = build_method("low_influence_skip", {**params, "inner": "grad_diff", "inner_params": inner, "n_fisher": 64}).unlearn(
        copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(5))
    alone = build_method("grad_diff", inner).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(5))
    assert wrapped.info["n_skipped"] == 0
    assert state_equal(wrapped.model, alone.model)
    assert all(torch.equal(wrapped.changed[n], alone.changed[n]) for n in alone.changed)
    assert wrapped.info["cost"]["inner_passes_avoided_estimate"] == 0


def test_reported_savings_are_consistent_with_the_skipped_points(random_task, random_refs, original):
    """grad_ascent's budget is epochs over the forget set, so its cost shrinks with the forget set; the wrapper's
    measured inner cost equals grad_ascent run directly on the kept points, and the estimate follows the formula."""
    inner = {"epochs": 4, "batch_size": 16}
    method = build_method("low_influence_skip", {"inner": "grad_ascent", "inner_params": inner, "quantile": 0.5, "n_fisher": 64})
    with CostMeter() as total:
        out = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    cost, n_skipped, n_kept = out.info["cost"], out.info["n_skipped"], out.info["n_kept"]
    assert n_skipped + n_kept == len(random_task.forget) and n_skipped == len(out.info["skipped_ids"]) > 0

    kept_ids = np.setdiff1d(random_task.forget.ids, out.info["skipped_ids"])
    kept_task = dataclasses.replace(random_task, forget=random_task.forget.select_ids(kept_ids), train_split=None)
    with CostMeter() as direct:
        build_method("grad_ascent", inner).unlearn(copy.deepcopy(original), kept_task, random_refs, rng=np.random.default_rng(0))
    assert cost["inner_passes"] == direct.passes and cost["inner_steps"] == direct.steps
    assert cost["scoring_passes"] == 64 + len(random_task.forget)  # Fisher sample + one gradient per forget point
    assert total.passes == cost["scoring_passes"] + cost["inner_passes"]
    assert cost["inner_passes_avoided_estimate"] == round(cost["inner_passes"] * n_skipped / n_kept)
    assert cost["net_passes_saved_estimate"] == cost["inner_passes_avoided_estimate"] - cost["scoring_passes"]
    with CostMeter() as full:
        build_method("grad_ascent", inner).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    saved = full.passes - direct.passes
    assert saved > 0 and abs(cost["inner_passes_avoided_estimate"] - saved) <= 0.25 * saved  # proportional model holds here


def test_all_points_negligible_returns_the_model_unchanged(random_task, random_refs, original):
    before = copy.deepcopy(original)
    out = build_method("low_influence_skip", {"rule": "threshold", "threshold": 1e30, "n_fisher": 32}).unlearn(
        original, random_task, random_refs, rng=np.random.default_rng(0))
    assert state_equal(out.model, before)
    assert out.changed.count() == 0 and set(out.changed) == {n for n, _ in before.named_parameters()}
    assert out.info["n_kept"] == 0 and "nothing to unlearn" in out.info["note"]
    assert out.info["cost"]["inner_passes"] == 0


@pytest.mark.parametrize("params,match", [
    ({"inner": "low_influence_skip"}, "must be another method"),
    ({"inner": "grad_dif"}, "Did you mean: grad_diff"),
    ({"inner_params": {"lrr": 0.1}}, "Unknown parameter 'lrr'"),
    ({"quantile": 1.0}, r"quantile must be in \[0, 1\)"),
    ({"threshold": -1.0}, "threshold must be a finite number >= 0"),
    ({"score": "loss"}, "must be one of"),
    ({"damping": 0}, "damping must be > 0"),
])
def test_parameters_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("low_influence_skip", params)
