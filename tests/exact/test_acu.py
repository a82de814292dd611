"""ACU: after any sequence of deletions and additions the head (R, W) equals a ridge fit from scratch on the live data,
computed independently in numpy; the fitted head agrees with sklearn's Ridge; requests touching the backbone's public
portion, and bad inputs, are refused with nothing changed."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from torch import nn

from unlearnkit.errors import ConfigError, EmptySelection, RequestRefused, TaskError
from unlearnkit.exact import AcuModel
from unlearnkit.exact.backbone import random_backbone
from unlearnkit.methods import build_method
from unlearnkit.models import build_model
from unlearnkit.types import Split, TensorData

GAMMA = 0.5


def net_and_backbone(digits, seed=3):
    return random_backbone(lambda: build_model("mlp", digits.input_shape, 10, hidden=(32,)), seed=seed)


def head_of(digits, positions, *, buffer=0, gamma=GAMMA):
    net, provenance = net_and_backbone(digits)
    return AcuModel(digits.train.subset(np.asarray(positions)), net, backbone=provenance, n_classes=10, gamma=gamma, buffer=buffer, seed=7)


def numpy_features(model, x):
    """φ(x) recomputed outside the model: the backbone's features, then the buffer projection and ReLU by hand."""
    with torch.no_grad():
        f = model.net.features(x).double().numpy()
    if model.projection is not None:
        f = np.maximum(f @ model.projection.double().numpy(), 0.0)
    return f


def ridge_refit(model, split):
    """(R, W) of the ridge solution on ``split``, from the normal equations in numpy."""
    x = numpy_features(model, split.data.x)
    y = np.eye(10)[split.data.y.numpy()]
    a = x.T @ x + model.gamma * np.eye(x.shape[1])
    return np.linalg.inv(a), np.linalg.solve(a, x.T @ y)


def head_state(model):
    return model.R.clone(), model.W.clone(), model.live_ids().copy(), len(model.data)


def assert_unchanged(model, state):
    r, w, live, n = state
    assert torch.equal(model.R, r) and torch.equal(model.W, w)
    assert np.array_equal(model.live_ids(), live) and len(model.data) == n


@pytest.mark.parametrize("buffer", [0, 96])
def test_deletions_and_additions_equal_a_refit_from_scratch(digits, buffer):
    model = head_of(digits, np.arange(1000), buffer=buffer)
    assert model.dim == (buffer or 32)
    rng = np.random.default_rng(0)
    extra = digits.train.subset(np.arange(1000, 1348))
    steps = [("delete", 1), ("delete", 150), ("add", extra.subset(np.arange(0, 200))), ("delete", 7), ("delete", 1),
             ("add", extra.subset(np.arange(200, 348))), ("delete", 80), ("delete", 2)]
    for op, what in steps:
        if op == "delete":
            ids = rng.choice(model.live_ids(), size=what, replace=False)
            receipt = model.delete(ids)
            assert receipt.touched == {"rows": what, "head_dims": model.dim}
        else:
            receipt = model.add(what)
            assert receipt.touched == {"rows": len(what), "head_dims": model.dim}
        r_ref, w_ref = ridge_refit(model, model.live_split())
        np.testing.assert_allclose(model.W.numpy(), w_ref, rtol=0, atol=1e-6)
        np.testing.assert_allclose(model.R.numpy(), r_ref, rtol=0, atol=1e-6)
    assert len(model.live_ids()) == 1000 - 241 + 348 and model.W.dtype == torch.float64
    # the served logits are φ(x)·W in float32
    x = digits.test.data.x[:20]
    logits = model(x)
    assert logits.dtype == torch.float32 and logits.shape == (20, 10)
    np.testing.assert_allclose(logits.detach().numpy(), numpy_features(model, x) @ w_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.features(x).numpy(), numpy_features(model, x), rtol=1e-5, atol=1e-6)  # φ(x), what the head reads


@pytest.mark.parametrize("buffer", [0, 96])
def test_fitted_head_matches_sklearn_ridge(digits, buffer):
    model = head_of(digits, np.arange(900), buffer=buffer)
    x = numpy_features(model, model.data.data.x)
    y = np.eye(10)[model.data.data.y.numpy()]
    ridge = Ridge(alpha=GAMMA, fit_intercept=False).fit(x, y)
    np.testing.assert_allclose(model.W.numpy(), ridge.coef_.T, rtol=0, atol=1e-6)
    assert np.abs(model.W.numpy()).max() > 1e-2  # a real head, not a vacuous match


def test_public_portion_is_refused_and_bad_inputs_change_nothing(random_task, random_refs):
    method = build_method("acu", {"gamma": GAMMA})
    model = method.build(random_task, random_refs, seed=0, device="cpu", progress=False)
    protected = model.backbone.protected_ids
    assert len(protected) == round(0.2 * len(random_task.retain)) and np.isin(protected, random_task.retain.ids).all()
    assert len(model.data) == len(random_task.train)  # the head sees the public portion too
    state = head_state(model)
    with pytest.raises(RequestRefused, match="frozen backbone"):
        model.delete([int(protected[0]), int(random_task.forget.ids[0])])
    assert_unchanged(model, state)
    with pytest.raises(EmptySelection):
        model.delete([])
    with pytest.raises(TaskError, match="never in"):
        model.delete([10**9])
    assert_unchanged(model, state)
    model.delete(random_task.forget.ids[:3])
    state = head_state(model)
    with pytest.raises(TaskError, match="already deleted"):
        model.delete(random_task.forget.ids[2:4])
    assert_unchanged(model, state)
    fresh_ids = np.arange(10**6, 10**6 + 4)
    x = random_task.test.data.x[:4]
    for y, match in [(torch.tensor([0, 1, 10, 2]), r"labels outside \[0, 10\)"), (torch.tensor([0.0, 1.0, 2.0, 3.0]), "integer class label"),
                     (torch.tensor([0, 1, -1, 2]), r"labels outside")]:
        with pytest.raises(TaskError, match=match):
            model.add(Split.create("new", TensorData(x, y), fresh_ids))
        assert_unchanged(model, state)
    with pytest.raises(TaskError, match="shape"):
        model.add(Split.create("new", TensorData(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long)), fresh_ids))
    assert_unchanged(model, state)
    described = model.describe()
    assert described["guarantee"] == "exact_above_backbone" and described["backbone"]["n_protected"] == len(protected)


@pytest.mark.parametrize("params, match", [({"gamma": 0}, "gamma"), ({"gamma": -1.0}, "gamma"), ({"gamma": math.nan}, "gamma"),
                                           ({"gamma": math.inf}, "gamma"), ({"buffer": -3}, "buffer"), ({"public_fraction": 1.0}, "public_fraction"),
                                           ({"backbone": "pretrained"}, "backbone")])
def test_bad_settings_are_refused(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("acu", params)


def test_bad_model_arguments(digits):
    net, provenance = net_and_backbone(digits)
    split = digits.train.subset(np.arange(50))
    with pytest.raises(ConfigError, match="gamma"):
        AcuModel(split, net, backbone=provenance, n_classes=10, gamma=0.0)
    with pytest.raises(ConfigError, match="features"):
        AcuModel(split, nn.Linear(64, 10), backbone=provenance, n_classes=10)
    with pytest.raises(TaskError, match="labels outside"):
        AcuModel(split, net, backbone=provenance, n_classes=3)


class Identity(nn.Module):
    def features(self, x):
        return x


def test_a_downdate_that_would_be_singular_is_refused():
    """One example alone spans the third coordinate; with γ = 1e-13, deleting it would leave XᵀX + γI singular to
    rounding (the pivot of I − x R xᵀ is γ/(1 + γ)): refused, nothing changed; deleting an ordinary example works."""
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 2, generator=gen), torch.zeros(30, 1)], dim=1)
    x = torch.cat([x, torch.tensor([[0.0, 0.0, 1.0]])])
    y = torch.cat([torch.randint(0, 3, (30,), generator=gen), torch.tensor([2])])
    from unlearnkit.exact import Backbone

    model = AcuModel(Split.create("toy", TensorData(x, y)), Identity(), backbone=Backbone("identity", "no-data"), n_classes=3, gamma=1e-13)
    state = head_state(model)
    with pytest.raises(RequestRefused, match="numerically singular"):
        model.delete([30])
    assert_unchanged(model, state)
    model.delete([0])
    xs, ys = x[1:].double().numpy(), np.eye(3)[y[1:].numpy()]
    np.testing.assert_allclose(model.W.numpy(), np.linalg.solve(xs.T @ xs + 1e-13 * np.eye(3), xs.T @ ys), atol=1e-6)


def test_random_backbone_protects_nothing(random_task, random_refs):
    model = build_method("acu", {"backbone": "random", "buffer": 64}).build(random_task, random_refs, seed=1, device="cpu", progress=False)
    assert len(model.backbone.protected_ids) == 0 and model.backbone.data_fingerprint == "no-data"
    receipt = model.delete(random_task.retain.ids[:5])
    assert receipt.guarantee == "exact_above_backbone" and receipt.live_after == len(random_task.train) - 5
    r_ref, w_ref = ridge_refit(model, model.live_split())
    np.testing.assert_allclose(model.W.numpy(), w_ref, rtol=0, atol=1e-6)
