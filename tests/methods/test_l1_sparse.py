"""l1_sparse: fine-tuning plus a linearly decaying ℓ1 penalty (Jia et al., NeurIPS 2023)."""

import copy

import numpy as np
import pytest
import torch

from tests.conftest import state_equal
from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.objectives.classifier import DecayingL1, l1_norm
from unlearnkit.train import StepContext

BUDGET = {"steps": 10, "batch_size": 32, "lr": 0.05, "schedule": "cosine", "optimizer": "sgd", "momentum": 0.9}


def run(name, params, original, task, refs):
    return build_method(name, params).unlearn(copy.deepcopy(original), task, refs, rng=np.random.default_rng(3))


def tiny_module() -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        layer.bias.copy_(torch.tensor([-0.25, 3.0]))
    return layer  # ‖θ‖₁ = 1 + 2 + 0.5 + 0 + 0.25 + 3 = 6.75


def test_penalty_at_step_t_is_alpha_times_one_minus_t_over_n():
    model = tiny_module()
    objective = DecayingL1(alpha=0.2)
    assert objective.streams == ("retain",)
    for step, expected_weight in [(0, 0.2), (1, 0.15), (2, 0.1), (3, 0.05)]:
        ctx = StepContext(step=step, n_steps=4, generator=torch.Generator(), adapter=ClassifierAdapter(2))
        loss = objective(model, {}, ctx)  # reads no batch
        assert loss.parts["l1_norm"] == pytest.approx(6.75)
        assert loss.parts["l1_weight"] == pytest.approx(expected_weight)
        assert loss.value.item() == pytest.approx(expected_weight * 6.75)


def test_penalty_gradient_is_weighted_sign_of_theta():
    model = tiny_module()
    ctx = StepContext(step=1, n_steps=4, generator=torch.Generator(), adapter=ClassifierAdapter(2))
    DecayingL1(alpha=0.2)(model, {}, ctx).value.backward()
    assert torch.allclose(model.weight.grad, 0.15 * torch.tensor([[1.0, -1.0], [1.0, 0.0]]))
    assert torch.allclose(model.bias.grad, 0.15 * torch.tensor([-1.0, 1.0]))


def test_alpha_zero_is_bit_identical_to_finetune(random_task, random_refs, original):
    a = run("l1_sparse", {**BUDGET, "alpha": 0.0}, original, random_task, random_refs)
    b = run("finetune", BUDGET, original, random_task, random_refs)
    assert state_equal(a.model, b.model)
    assert not state_equal(a.model, original)


def test_large_alpha_gives_smaller_l1_norm_than_finetune(random_task, random_refs, original):
    l1 = run("l1_sparse", {**BUDGET, "alpha": 2e-2}, original, random_task, random_refs)
    ft = run("finetune", BUDGET, original, random_task, random_refs)
    assert "warning" not in l1.info
    with torch.no_grad():
        assert float(l1_norm(l1.model)) < 0.95 * float(l1_norm(ft.model))


def test_alpha_validated():
    with pytest.raises(ConfigError, match="alpha must be a finite number >= 0"):
        build_method("l1_sparse", {"alpha": -1e-4})
    with pytest.raises(ConfigError, match="alpha"):
        build_method("l1_sparse", {"alpha": float("nan")})
