"""Datamodel Matching: the closed-form leave-forget-out prediction is an exact ridge refit on the retain set
(checked against an independent numpy solve), and the fine-tune moves the forget outputs toward it."""

import copy

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.dmm import predict_retrained_logits, ridge_leave_out
from unlearnkit.types import Task

ADAPTER = ClassifierAdapter(10)
RIDGE = 1e-3
SCALE = 6.0


def features_with_bias(model, split):
    with torch.no_grad():
        phi = model.features(split.data.x).double().numpy()
    return np.hstack([phi, np.ones((len(phi), 1))])


def set_head_to_ridge_solution(model, phi, labels, scale):
    """Head := the ridge regression of scale·(onehot − 1/C) on [features, 1] (λ as the method defines it)."""
    targets = scale * (np.eye(10)[labels] - 0.1)
    lam = RIDGE * np.trace(phi.T @ phi) / phi.shape[1]
    w = np.linalg.solve(phi.T @ phi + lam * np.eye(phi.shape[1]), phi.T @ targets)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w[:-1].T))
        model.head.bias.copy_(torch.as_tensor(w[-1]))
    return targets, lam


def small_forget_task(digits):
    ids = np.random.default_rng(3).choice(len(digits.train), size=20, replace=False)
    return Task.from_forget_ids("digits-20", digits.train, digits.test, ids, n_classes=10)


@pytest.mark.parametrize("which,route", [("small", "woodbury"), ("class", "downdate")])
def test_prediction_equals_explicit_ridge_refit_on_retain(which, route, digits, class_task, original):
    task = small_forget_task(digits) if which == "small" else class_task
    phi = features_with_bias(original, task.train)
    targets, lam = set_head_to_ridge_solution(original, phi, task.train.labels, SCALE)

    pred = predict_retrained_logits(original, task, ADAPTER, ridge=RIDGE, label_scale=None, device="cpu")

    keep = ~np.isin(task.train.ids, task.forget.ids)
    w_retain = np.linalg.solve(phi[keep].T @ phi[keep] + lam * np.eye(phi.shape[1]), phi[keep].T @ targets[keep])
    assert pred.fit.route == route
    assert pred.scale == pytest.approx(SCALE, rel=1e-5)  # the fitted label scale recovers the head's
    np.testing.assert_array_equal(pred.ids, task.train.ids)
    np.testing.assert_allclose(pred.predicted.numpy(), phi @ w_retain, rtol=1e-5, atol=1e-5)
    # the prediction is not trivially the original output: removing F moves the forget logits
    forget_rows = ~keep
    assert float((pred.predicted - pred.original)[forget_rows].abs().max()) > 0.05


@pytest.mark.parametrize("n_forget", [5, 30])
def test_woodbury_and_downdate_match_a_direct_solve(n_forget):
    rng = np.random.default_rng(0)
    phi = torch.as_tensor(rng.normal(size=(60, 12)))
    targets = torch.as_tensor(rng.normal(size=(60, 3)))
    forget = torch.zeros(60, dtype=torch.bool)
    forget[rng.choice(60, n_forget, replace=False)] = True
    fit = ridge_leave_out(phi, targets, forget, penalty=0.7)
    r = ~forget.numpy()
    direct = np.linalg.solve(phi.numpy()[r].T @ phi.numpy()[r] + 0.7 * np.eye(12), phi.numpy()[r].T @ targets.numpy()[r])
    full = np.linalg.solve(phi.numpy().T @ phi.numpy() + 0.7 * np.eye(12), phi.numpy().T @ targets.numpy())
    assert fit.route == ("woodbury" if n_forget <= 12 else "downdate")
    np.testing.assert_allclose(fit.retain.numpy(), direct, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit.full.numpy(), full, rtol=1e-9, atol=1e-9)


def divergence(logits, target, match):
    """What the fine-tune minimises on the forget set: MSE of logits, or KL(softmax target ‖ softmax logits)."""
    if match == "mse":
        return float(((logits - target) ** 2).mean())
    logq = torch.log_softmax(target, dim=1)
    return float((logq.exp() * (logq - torch.log_softmax(logits, dim=1))).sum(1).mean())


@pytest.mark.parametrize("match", ["mse", "kl"])
def test_finetune_moves_forget_outputs_toward_the_prediction(match, class_task, original):
    pred = predict_retrained_logits(copy.deepcopy(original), class_task, ADAPTER, ridge=RIDGE, label_scale=None, device="cpu")
    target = pred.predicted[pred.forget_rows].float()
    before = torch.as_tensor(ADAPTER.outputs(original, class_task.forget)["logits"])
    out = build_method("dmm", {"steps": 30, "batch_size": 32, "match": match, "lr": 3e-3}).unlearn(
        copy.deepcopy(original), class_task, None, rng=np.random.default_rng(0))
    after = torch.as_tensor(ADAPTER.outputs(out.model, class_task.forget)["logits"])
    # forget rows of the prediction are in train order; the forget split is in id order, as is task.train's forget part
    assert np.array_equal(pred.ids[pred.forget_rows.numpy()], class_task.forget.ids)
    assert divergence(after, target, match) < 0.5 * divergence(before, target, match)
    labels = torch.as_tensor(class_task.forget.labels)
    assert out.info["datamodel"]["forget_accuracy_predicted"] < 0.1  # a class never seen is predicted away
    assert float((after.argmax(1) == labels).double().mean()) < float((before.argmax(1) == labels).double().mean())


@pytest.mark.parametrize("params,match", [
    ({"ridge": 0}, "ridge must be > 0"),
    ({"label_scale": -1}, "label_scale must be >= 0"),
    ({"match": "l1"}, "must be one of"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"forget_weight": 0, "retain_weight": 0}, "not both 0"),
])
def test_parameters_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("dmm", params)
