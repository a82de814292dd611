"""Unlearning under overparameterisation: the update is orthogonal to every retain output gradient used
(checked against gradients computed independently with autograd), changes only the chosen parameters,
moves the sampled retain outputs only to second order, and is the minimum-norm interpolator for a linear model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.types import Split, Task, TensorData

ADAPTER = ClassifierAdapter(10)
LAST_TWO = ["body.3.weight", "body.3.bias", "head.weight", "head.bias"]


def flat(model, names):
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names]).double()


def autograd_output_gradients(model, names, x):
    """One row per (example, logit): ∂f_k(x_i)/∂θ_S by plain autograd, example by example."""
    params = dict(model.named_parameters())
    rows = []
    for xi in x:
        logits = model(xi[None])[0]
        for k in range(len(logits)):
            grads = torch.autograd.grad(logits[k], [params[n] for n in names], retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]).double())
    return torch.stack(rows)


@torch.no_grad()
def assign(model, names, vector):
    params, start = dict(model.named_parameters()), 0
    for n in names:
        params[n].copy_(vector[start : start + params[n].numel()].view_as(params[n]))
        start += params[n].numel()


def retain_inputs(task, ids):
    return task.retain.select_ids(ids).data.x


@pytest.mark.parametrize("params", [
    {"n_retain_grads": 16},
    {"n_retain_grads": 16, "regularizer": "min_change", "forget_weight": 2.0, "steps": 15, "batch_size": 32},
    {"n_retain_grads": 16, "forget_weight": 1.0, "steps": 15, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
])
def test_update_is_orthogonal_to_every_retain_gradient_used(params, random_task, original):
    before = copy.deepcopy(original)
    out = build_method("overparam_orthogonal", params).unlearn(original, random_task, None, rng=np.random.default_rng(0))
    assert out.info["parameters"] == LAST_TWO  # default: the last two layers
    assert len(out.info["retain_ids_used"]) == 16

    g = autograd_output_gradients(before, LAST_TWO, retain_inputs(random_task, out.info["retain_ids_used"]))
    delta = flat(out.model, LAST_TWO) - flat(before, LAST_TWO)
    assert float(delta.norm()) > 0.1
    assert float((g @ delta).abs().max()) <= 1e-5 * float(g.norm()) * float(delta.norm())

    # only the chosen parameters may move, and the mask says exactly that
    for (n, p), (_, q) in zip(out.model.named_parameters(), before.named_parameters()):
        assert bool(out.changed[n].all()) == (n in LAST_TWO)
        if n not in LAST_TWO:
            assert torch.equal(p, q), n


def test_min_norm_is_the_projection_of_theta_onto_the_gradient_span(random_task, original):
    """Closed form for ‖θ+Δ‖²: θ_after = θ − P⊥θ, i.e. θ_after lies in span(G) and θ − θ_after in its complement."""
    before = copy.deepcopy(original)
    out = build_method("overparam_orthogonal", {"n_retain_grads": 8}).unlearn(original, random_task, None, rng=np.random.default_rng(1))
    g = autograd_output_gradients(before, LAST_TWO, retain_inputs(random_task, out.info["retain_ids_used"]))
    after = flat(out.model, LAST_TWO)
    in_span = g.T @ torch.linalg.lstsq(g.T, after[:, None]).solution[:, 0]  # least-squares fit of θ_after from the rows of G
    assert float((in_span - after).norm()) <= 1e-4 * float(after.norm())
    assert out.info["theta_norm_after"] < out.info["theta_norm_before"]
    assert out.info["constraint_rank"] == 80 and out.info["complement_dim"] == out.info["n_parameters"] - 80


def test_sampled_retain_outputs_move_to_second_order_forget_outputs_to_first(random_task, original):
    """Along θ + tΔ the sampled retain outputs change ∝ t² (first-order term cancelled), forget outputs ∝ t.
    Small t keeps every ReLU on its side (a kink would add a first-order term)."""
    before = copy.deepcopy(original)
    out = build_method("overparam_orthogonal", {"n_retain_grads": 16}).unlearn(
        copy.deepcopy(original), random_task, None, rng=np.random.default_rng(0))
    theta0, delta = flat(before, LAST_TWO), flat(out.model, LAST_TWO) - flat(before, LAST_TWO)
    x_retain = retain_inputs(random_task, out.info["retain_ids_used"])
    x_forget = random_task.forget.data.x

    reference = copy.deepcopy(before).double()

    def change(t, x):
        model = copy.deepcopy(reference)
        assign(model, LAST_TWO, theta0 + t * delta)
        with torch.no_grad():
            return float((model(x.double()) - reference(x.double())).abs().mean())

    r1, r2 = change(1e-4, x_retain), change(2e-4, x_retain)
    f1, f2 = change(1e-4, x_forget), change(2e-4, x_forget)
    assert 3.5 < r2 / r1 < 4.5  # quadratic
    assert 1.8 < f2 / f1 < 2.2  # linear
    assert f1 > 1000 * r1


def test_head_only_update_keeps_sampled_retain_outputs_at_full_step(random_task, original):
    """The logits are linear in the head, so the first-order relaxation is exact there: the sampled retain
    outputs do not move at all while forget outputs do."""
    before = copy.deepcopy(original)
    out = build_method("overparam_orthogonal", {"last_layers": 1, "n_retain_grads": 4}).unlearn(
        original, random_task, None, rng=np.random.default_rng(0))
    assert out.info["parameters"] == ["head.weight", "head.bias"] and out.info["complement_dim"] > 0
    x_retain = retain_inputs(random_task, out.info["retain_ids_used"])
    with torch.no_grad():
        assert float((out.model(x_retain) - before(x_retain)).abs().max()) < 1e-4
        x_forget = random_task.forget.data.x
        assert float((out.model(x_forget) - before(x_forget)).abs().mean()) > 0.01


class LinearClassifier(nn.Module):
    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.head = nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_linear_model_gets_the_minimum_norm_interpolator_of_the_retain_outputs():
    """Overparameterised linear model (d=12 > n=7): with every retain point constrained, the result is
    argmin ‖[W b]‖ s.t. [W b]x̃_i = f(x_i) on retain — computed independently with a pseudo-inverse."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 12, generator=gen), torch.arange(10) % 3
    data = Split.create("train", TensorData(x, y))
    test = Split.create("test", TensorData(torch.randn(4, 12, generator=gen), torch.arange(4) % 3), ids=np.arange(10, 14))
    task = Task.from_forget_ids("linear", data, test, [1, 4, 8], n_classes=3)
    model = LinearClassifier(12, 3)
    with torch.no_grad():  # an interpolator of all ten points with extra norm outside the data span
        model.head.weight.copy_(torch.randn(3, 12, generator=gen))
    before = copy.deepcopy(model)
    out = build_method("overparam_orthogonal", {"last_layers": 1, "n_retain_grads": 100, "tol": 1e-10}).unlearn(
        model, task, None, rng=np.random.default_rng(0))

    xr = np.hstack([task.retain.data.x.double().numpy(), np.ones((len(task.retain), 1))])
    with torch.no_grad():
        targets = before(task.retain.data.x).double().numpy()
    theta_star = (np.linalg.pinv(xr) @ targets).T  # rows: min-norm solutions of xr·w = targets[:, k]
    got = np.hstack([out.model.head.weight.detach().double().numpy(), out.model.head.bias.detach().double().numpy()[:, None]])
    np.testing.assert_allclose(got, theta_star, atol=1e-5)
    with torch.no_grad():  # retain outputs are kept exactly (linear in θ); forget outputs are not
        np.testing.assert_allclose(out.model(task.retain.data.x).numpy(), targets, atol=1e-4)
        assert float((out.model(task.forget.data.x) - before(task.forget.data.x)).abs().max()) > 0.1


def test_params_globs_replace_last_layers_and_bad_values_are_refused(random_task, original):
    out = build_method("overparam_orthogonal", {"params": ["head.*"], "n_retain_grads": 4}).unlearn(
        original, random_task, None, rng=np.random.default_rng(0))
    assert out.info["parameters"] == ["head.weight", "head.bias"]
    for params, match in [({"last_layers": 0}, "last_layers must be >= 1"), ({"n_retain_grads": 0}, "n_retain_grads must be >= 1"),
                          ({"tol": 1.0}, r"tol must be in \[0, 1\)"), ({"forget_weight": -1}, "forget_weight must be >= 0"),
                          ({"regularizer": "min_change"}, "needs forget_weight > 0"), ({"regularizer": "l1"}, "must be one of")]:
        with pytest.raises(ConfigError, match=match):
            build_method("overparam_orthogonal", params)
