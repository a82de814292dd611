"""Defining behaviour of trw: the tilted, renormalised target and fine-tuning toward it."""

import copy
import math

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.analysis.targets import class_similarity, remaining_log_probs, tilted_log_targets
from unlearnkit.objectives.classifier import TargetKL
from unlearnkit.objectives import ReferenceLogits
from unlearnkit.train import StepContext

ADAPTER = ClassifierAdapter(10)


def random_case(n=40, n_classes=6, forgotten=(1, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 4.0 * torch.randn(n, n_classes, generator=gen, dtype=torch.float64)
    labels = torch.tensor([forgotten[i % len(forgotten)] for i in range(n)])
    return logits, labels, list(forgotten)


def targets(logits, labels, forgotten, tilt):
    log_p = remaining_log_probs(logits, forgotten)
    sim = class_similarity(log_p, labels, forgotten)
    return tilted_log_targets(log_p, labels, sim, tilt), sim


@pytest.mark.parametrize("tilt", [0.0, 0.7, 3.0])
def test_target_has_no_mass_on_forgotten_classes_and_sums_to_one(tilt):
    logits, labels, forgotten = random_case()
    q = targets(logits, labels, forgotten, tilt)[0].exp()
    assert torch.all(q[:, forgotten] == 0)
    kept = [k for k in range(logits.shape[1]) if k not in forgotten]
    assert torch.all(q[:, kept] > 0)
    assert torch.allclose(q.sum(1), torch.ones(len(q), dtype=torch.float64), atol=1e-12)


def test_zero_tilt_keeps_the_originals_ratios_among_remaining_classes():
    logits, labels, forgotten = random_case()
    log_q = targets(logits, labels, forgotten, 0.0)[0]
    kept = [k for k in range(logits.shape[1]) if k not in forgotten]
    for j in kept:
        for k in kept:  # log(q_j / q_k) = log(p_j / p_k) = z_j − z_k
            assert torch.allclose(log_q[:, j] - log_q[:, k], logits[:, j] - logits[:, k], atol=1e-10)


def test_tilt_hand_computed_three_classes():
    """Forget class 0. p = (0.8, 0.15, 0.05) -> p̃ = (0, 3/4, 1/4); p = (0.9, 0.05, 0.05) -> p̃ = (0, 1/2, 1/2).
    s = mean p̃ = (0, 5/8, 3/8). With tilt 2: q1 ∝ (3/4·(5/8)², 1/4·(3/8)²) = (25/28, 3/28) and q2 = (25/34, 9/34)."""
    logits = torch.log(torch.tensor([[0.8, 0.15, 0.05], [0.9, 0.05, 0.05]], dtype=torch.float64))
    labels = torch.tensor([0, 0])
    log_q, sim = targets(logits, labels, [0], 2.0)
    assert torch.allclose(sim[0], torch.tensor([0.0, 5 / 8, 3 / 8], dtype=torch.float64), atol=1e-12)
    expected = torch.tensor([[0.0, 25 / 28, 3 / 28], [0.0, 25 / 34, 9 / 34]], dtype=torch.float64)
    assert torch.allclose(log_q.exp(), expected, atol=1e-12)


@pytest.mark.parametrize("tilt", [0.5, 2.0])
def test_tilt_changes_each_ratio_by_the_similarity_ratio_to_the_power_tilt(tilt):
    """q_j/q_k = (p_j/p_k)·(s_{c,j}/s_{c,k})^tilt for every pair of kept classes, with c the example's own class."""
    logits, labels, forgotten = random_case()
    log_q, sim = targets(logits, labels, forgotten, tilt)
    kept = [k for k in range(logits.shape[1]) if k not in forgotten]
    for j in kept:
        for k in kept:
            tilt_term = tilt * (torch.log(sim[labels, j]) - torch.log(sim[labels, k]))
            assert torch.allclose(log_q[:, j] - log_q[:, k], logits[:, j] - logits[:, k] + tilt_term, atol=1e-10)


def test_similarity_row_is_the_mean_renormalised_distribution_of_its_own_class():
    logits, labels, forgotten = random_case()
    sim = class_similarity(remaining_log_probs(logits, forgotten), labels, forgotten)
    for c in forgotten:
        p = torch.softmax(logits[labels == c], dim=1)
        p[:, forgotten] = 0
        assert torch.allclose(sim[c], (p / p.sum(1, keepdim=True)).mean(0), atol=1e-12)
    kept = [k for k in range(logits.shape[1]) if k not in forgotten]
    assert torch.all(sim[kept] == 0)


def test_target_kl_looks_targets_up_by_example_id():
    """The loss pairs each example with its own target whatever the batch order."""
    gen = torch.Generator().manual_seed(1)
    log_q = torch.log_softmax(torch.randn(5, 3, generator=gen), 1)
    log_q[:, 0] = -math.inf
    log_q = torch.log_softmax(log_q, 1)
    table = ReferenceLogits(np.array([10, 11, 12, 13, 14]), log_q)
    model = torch.nn.Linear(2, 3)
    x = torch.randn(5, 2, generator=gen)
    batch = {"forget": {"x": x[[3, 0, 4]], "y": torch.zeros(3, dtype=torch.long), "ids": torch.tensor([13, 10, 14])}}
    ctx = StepContext(0, 1, gen, ClassifierAdapter(3), {"trw_targets": table})
    value = TargetKL("forget")(model, batch, ctx).value
    log_m = torch.log_softmax(model(x[[3, 0, 4]]), 1)
    q = log_q[[3, 0, 4]].exp()
    expected = (q[:, 1:] * (log_q[[3, 0, 4], 1:] - log_m[:, 1:])).sum(1).mean()
    assert torch.isfinite(value) and torch.allclose(value, expected, atol=1e-6)


def forget_probs(model, task):
    return torch.softmax(torch.as_tensor(ADAPTER.outputs(model, task.forget)["logits"], dtype=torch.float64), 1)


def accuracy(model, split):
    out = ADAPTER.outputs(model, split)
    return float((out["logits"].argmax(1) == out["labels"]).mean())


def test_unlearning_moves_forget_outputs_to_the_target_and_keeps_retain(class_task, class_refs):
    original = class_refs.original
    forgotten = class_task.info["forget"]["classes"]
    p0 = forget_probs(original, class_task)
    p_kept = p0.clone()
    p_kept[:, forgotten] = 0
    p_kept /= p_kept.sum(1, keepdim=True)  # direct recomputation of the default (tilt = 1) target from the original's outputs
    sim = p_kept.mean(0)
    q = p_kept * sim / (p_kept * sim).sum(1, keepdim=True)
    log_q = torch.log(q)
    out = build_method("trw", {"steps": 30, "batch_size": 32}).unlearn(
        copy.deepcopy(original), class_task, class_refs, rng=np.random.default_rng(0))
    p1 = forget_probs(out.model, class_task)

    def kl_to_target(p):
        return float(torch.where(q > 0, q * (log_q - torch.log(p)), torch.zeros_like(q)).sum(1).mean())

    assert float(p0[:, forgotten].sum(1).mean()) > 0.9
    assert float(p1[:, forgotten].sum(1).mean()) < 0.05
    assert kl_to_target(p1) < 0.1 * kl_to_target(p0)
    assert accuracy(out.model, class_task.retain) > 0.9
    assert np.allclose(out.info["similarity"][str(forgotten[0])], sim.numpy(), atol=1e-5)


def test_refuses_forget_sets_that_are_not_classes(random_task, class_refs):
    with pytest.raises(ConfigError, match=r"handles forget sets of kind \['classes'\]; this task's is 'random'"):
        build_method("trw", {"steps": 1}).unlearn(
            copy.deepcopy(class_refs.original), random_task, class_refs, rng=np.random.default_rng(0))


@pytest.mark.parametrize("params,named", [({"tilt": -1.0}, "tilt"), ({"tilt": float("nan")}, "tilt"),
                                          ({"forget_weight": 0.0}, "forget_weight"), ({"retain_weight": -1.0}, "retain_weight")])
def test_parameters_validated(params, named):
    with pytest.raises(ConfigError, match=named):
        build_method("trw", params)
