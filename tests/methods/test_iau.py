"""iau (Influence Approximation Unlearning): checked on a convex problem whose retrained solution is exact.

The problem: L2-regularised multinomial logistic regression (one nn.Linear, float64) on the digits task,
G(θ) = mean CE + λ/2·‖θ‖², solved to machine precision by Newton's method on forget ∪ retain (the original) and
on retain alone (the exact retrained model)."""

import copy
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.references import References

LAM = 0.1  # strong enough that Newton converges in a few steps; the model still fits digits (> 90% accuracy)


def full_batch(split):
    return next(iter(split.batches(len(split))))


def design(split):
    """[x, 1] in float64 and the labels of every example of a split."""
    batch = full_batch(split)
    x = batch["x"].to(torch.float64)
    return torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1), batch["y"]


def regularised_gradient(theta, x, y, lam=LAM):
    """∇ of mean CE(x θᵀ, y) + λ/2·‖θ‖² in closed form: (softmax − onehot)ᵀx / n + λθ."""
    p = torch.softmax(x @ theta.T, 1)
    return (p - F.one_hot(y, theta.shape[0]).to(p)).T @ x / len(x) + lam * theta


def objective(theta, x, y, lam=LAM):
    return float(F.cross_entropy(x @ theta.T, y) + lam / 2 * (theta**2).sum())


def newton(x, y, start, lam=LAM, tol=1e-12):
    """Damped Newton on the (strongly convex) regularised softmax regression; θ = [W | b] of shape (classes, d + 1)."""
    theta = start.clone()
    k, d = theta.shape
    for _ in range(50):
        g = regularised_gradient(theta, x, y, lam)
        if g.norm() < tol:
            return theta
        p = torch.softmax(x @ theta.T, 1)
        # H = Σ_a e_a e_aᵀ ⊗ Xᵀdiag(p_a)X − Σ_n (p_n ⊗ x_n)(p_n ⊗ x_n)ᵀ, over n examples, plus λI
        u = (p[:, :, None] * x[:, None, :]).reshape(len(x), k * d)
        h = torch.block_diag(*[(x * p[:, [a]]).T @ x for a in range(k)]) - u.T @ u
        h = h / len(x) + lam * torch.eye(k * d, dtype=x.dtype)
        step = torch.linalg.solve(h, g.reshape(-1)).reshape(k, d)
        t, f0 = 1.0, objective(theta, x, y, lam)
        while objective(theta - t * step, x, y, lam) > f0 - 0.25 * t * float((g * step).sum()) and t > 1e-6:
            t /= 2
        theta = theta - t * step
    raise AssertionError(f"Newton did not converge: gradient norm {float(g.norm()):.3g}")


class SoftmaxRegression(nn.Module):
    """One nn.Linear in float64 (inputs are cast), with parameters θ = [W | b]."""

    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(theta.shape[1] - 1, theta.shape[0], dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(theta[:, :-1])
            self.linear.bias.copy_(theta[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(torch.float64))

    def theta(self) -> torch.Tensor:
        return torch.cat([self.linear.weight, self.linear.bias[:, None]], 1).detach()


@pytest.fixture(scope="module")
def convex(random_task):
    xf, yf = design(random_task.forget)
    xr, yr = design(random_task.retain)
    original = newton(torch.cat([xf, xr]), torch.cat([yf, yr]), torch.zeros(10, xf.shape[1], dtype=torch.float64))
    retrained = newton(xr, yr, original)  # warm start: same optimum, fewer steps
    return types.SimpleNamespace(task=random_task, original=original, retrained=retrained, xf=xf, yf=yf, xr=xr, yr=yr)


def run(method_name, params, convex):
    model = SoftmaxRegression(convex.original)
    out = build_method(method_name, params).unlearn(model, convex.task, References(), rng=np.random.default_rng(0))
    assert "warning" not in out.info
    return out.model.theta()


def sgd(lr, steps, **extra):
    return {"optimizer": "sgd", "momentum": 0.0, "lr": lr, "steps": steps, **extra}


def test_fixture_is_an_exact_convex_unlearning_problem(convex):
    assert regularised_gradient(convex.original, torch.cat([convex.xf, convex.xr]), torch.cat([convex.yf, convex.yr])).norm() < 1e-10
    assert regularised_gradient(convex.retrained, convex.xr, convex.yr).norm() < 1e-10
    accuracy = float(((convex.xr @ convex.original.T).argmax(1) == convex.yr).double().mean())
    assert accuracy > 0.9
    assert (convex.original - convex.retrained).norm() > 0.05  # removing the forget set moves the optimum


def test_one_step_is_a_gradient_step_on_the_exact_retrain_objective(convex):
    """At the original optimum θ*, ∇L_R − ∇L_F = (n/n_F)·∇G(θ*), G = retain loss + regulariser: one SGD step of IAU is
    θ* − lr·(n/n_F)·∇G(θ*), with ∇G computed independently in closed form. Gradient ascent alone is not parallel to it."""
    lr = 0.1
    n_f, n = len(convex.xf), len(convex.xf) + len(convex.xr)
    expected = -lr * (n / n_f) * regularised_gradient(convex.original, convex.xr, convex.yr)
    moved = run("iau", sgd(lr, 1), convex) - convex.original
    assert torch.allclose(moved, expected, rtol=1e-7, atol=1e-12)
    ascent = run("grad_ascent", sgd(lr, 1, batch_size=n_f, schedule="constant"), convex) - convex.original
    cosine = float((ascent * expected).sum() / (ascent.norm() * expected.norm()))
    assert cosine < 0.9


@pytest.mark.parametrize("lr,steps", [(0.1, 1), (0.05, 3)])
def test_closer_to_retrained_than_original_and_than_gradient_ascent(convex, lr, steps):
    """With the same optimizer, step size and number of steps, IAU lands closer to the exact retrained parameters than
    the original is, and closer than plain (full-batch) gradient ascent on the forget set."""
    n_f = len(convex.xf)

    def distance(theta):
        return float((theta - convex.retrained).norm())

    iau = distance(run("iau", sgd(lr, steps), convex))
    ascent = distance(run("grad_ascent", sgd(lr, steps, batch_size=n_f, schedule="constant"), convex))
    original = distance(convex.original)
    assert iau < 0.95 * original
    assert iau < 0.98 * ascent


def test_without_the_retain_correction_it_is_full_batch_gradient_ascent(convex):
    n_f = len(convex.xf)
    a = run("iau", sgd(0.05, 3, retain_weight=0.0), convex)
    b = run("grad_ascent", sgd(0.05, 3, batch_size=n_f, schedule="constant"), convex)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_default_is_one_adam_step_on_exact_full_split_gradients(random_task, random_refs, original):
    """The paper's recipe: one Adam step (lr 1e-3) along d = ∇L_retain − ∇L_forget, each the mean over the whole split.
    Adam's first step is lr·d/(|d| + eps); d is recomputed here with a single full batch per split."""
    before = copy.deepcopy(original)
    params = list(before.parameters())

    def mean_gradient(split):
        batch = full_batch(split)
        return torch.autograd.grad(F.cross_entropy(before(batch["x"]), batch["y"]), params)

    d = [r - f for r, f in zip(mean_gradient(random_task.retain), mean_gradient(random_task.forget))]
    out = build_method("iau").unlearn(original, random_task, random_refs, rng=np.random.default_rng(0))
    assert out.info["steps"] == 1 and out.changed.fraction() == 1.0
    for p, q, g in zip(out.model.parameters(), before.parameters(), d):
        clear = g.abs() > 1e-5  # coordinates whose sign is not decided by rounding
        step = (p - q).detach()
        assert torch.allclose(step[clear], (-1e-3 * g / (g.abs() + 1e-8))[clear], rtol=1e-3, atol=1e-7)
        assert step.abs().max() <= 1e-3 * (1 + 1e-5)


def test_parameters_are_validated():
    for bad in ({"steps": 0}, {"lr": 0.0}, {"momentum": 1.0}, {"forget_weight": -1.0}, {"forget_weight": 0.0, "retain_weight": 0.0},
                {"optimizer": "lbfgs"}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            build_method("iau", bad)
