import numpy as np
import pytest
import torch

from torch import nn

from unlearnkit.ensembles import balanced_memberships, batch_plan, ensemble_path, logit_confidence, pool_of, train_ensemble
from unlearnkit.errors import ConfigError
from unlearnkit.models import build_model
from unlearnkit.train import TrainConfig


@pytest.mark.parametrize("mode", ["stacked", "vmap"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_vectorised_equals_loop(digits, mode, optimizer):
    pool = pool_of(digits.train, digits.test)
    members = balanced_memberships(4, len(pool), seed=1)
    cfg = TrainConfig(steps=30, batch_size=32, optimizer=optimizer, lr=2e-3 if optimizer == "adam" else 0.05, momentum=0.9,
                      weight_decay=1e-4, schedule="cosine")
    factory = lambda: build_model("mlp", (64,), 10, hidden=(32, 16))  # noqa: E731
    vec = train_ensemble(factory, pool, members, cfg, seed=5, mode=mode)
    loop = train_ensemble(factory, pool, members, cfg, seed=5, mode="loop")
    start = factory()
    for a, b in zip(vec, loop):
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.allclose(p, q, atol=1e-5), n
    # training moved the weights, and different members really give different models
    assert not torch.allclose(vec[0].head.weight, start.head.weight)
    assert not torch.allclose(vec[0].head.weight, vec[1].head.weight)


def test_loop_path_with_dropout_is_a_function_of_the_seed_alone(digits):
    """Each model's dropout masks come from torch's global RNG seeded per model from ``seed``; the caller's state is kept."""
    pool = pool_of(digits.train, digits.test)
    members = balanced_memberships(2, len(pool), seed=0)
    cfg = TrainConfig(steps=8, batch_size=32, optimizer="adam", lr=1e-2)
    factory = lambda: build_model("mlp", (64,), 10, hidden=(32,), dropout=0.5)

    def train(seed: int, global_seed: int) -> list[nn.Module]:
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        models = train_ensemble(factory, pool, members, cfg, seed=seed, mode="loop")
        assert torch.equal(torch.get_rng_state(), before)
        return models

    a, b = train(seed=3, global_seed=123), train(seed=3, global_seed=456)
    for ma, mb in zip(a, b):
        for (n, p), (_, q) in zip(ma.named_parameters(), mb.named_parameters()):
            assert torch.equal(p, q), n
    assert not torch.equal(a[0].head.weight, train(seed=4, global_seed=123)[0].head.weight)


class _Bilinear(nn.Module):  # no buffers, not an MLP: only vmap can stack it
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 10)
        self.b = nn.Linear(64, 10)

    def forward(self, x):
        return self.a(x) * torch.tanh(self.b(x))


def test_ensemble_path_picks_the_fastest_valid_path():
    mlp = build_model("mlp", (64,), 10, hidden=(32,))
    assert ensemble_path(mlp) == "stacked" and ensemble_path(mlp, "vmap") == "vmap" and ensemble_path(mlp, "loop") == "loop"
    assert ensemble_path(_Bilinear()) == "vmap"
    dropout = build_model("mlp", (64,), 10, hidden=(32,), dropout=0.3)
    assert ensemble_path(dropout) == "loop"  # per-model random streams could not match the loop's
    cnn = build_model("small_cnn", (1, 8, 8), 10)
    assert ensemble_path(cnn) == "loop"  # BatchNorm buffers
    with pytest.raises(ConfigError, match="stacked"):
        ensemble_path(_Bilinear(), "stacked")
    with pytest.raises(ConfigError, match="vmap"):
        ensemble_path(cnn, "vmap")
    with pytest.raises(ConfigError, match="mode"):
        ensemble_path(mlp, "fast")


def test_vmap_path_trains_a_non_mlp_like_the_loop(digits):
    pool = pool_of(digits.train, digits.test)
    members = balanced_memberships(2, len(pool), seed=0)
    cfg = TrainConfig(steps=10, batch_size=16, optimizer="adam", lr=1e-2)
    vec = train_ensemble(_Bilinear, pool, members, cfg, seed=2)
    loop = train_ensemble(_Bilinear, pool, members, cfg, seed=2, mode="loop")
    for a, b in zip(vec, loop):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-5)


def test_balanced_memberships():
    m = balanced_memberships(8, 500, seed=0)
    assert (m.sum(0) == 4).all()
    assert abs(m.sum(1).mean() - 250) < 1e-9
    with pytest.raises(ConfigError):
        balanced_memberships(1, 10, seed=0)


def test_batch_plan_uses_only_members_and_covers_them():
    members = np.array([3, 5, 7, 11, 13])
    plan = batch_plan(members, n_steps=4, batch_size=5, seed=0)
    assert plan.shape == (4, 5) and set(plan.ravel()) == set(members)
    assert all(sorted(row) == sorted(members) for row in plan)  # each pass is a permutation


def test_logit_confidence_matches_definition_and_is_stable():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 2])
    p = torch.softmax(torch.tensor(logits), 1).numpy()[np.arange(2), labels]
    assert np.allclose(logit_confidence(logits, labels), np.log(p) - np.log1p(-p))
    huge = logit_confidence(np.array([[1000.0, 0.0]]), np.array([0]))
    assert np.isfinite(huge).all() and huge[0] == pytest.approx(1000.0)


def test_rows_is_indexing_by_an_index_tensor_of_any_shape():
    from unlearnkit.ensembles import rows

    x, y = torch.randn(50, 3, 4), torch.arange(50)
    idx = torch.randint(0, 50, (6, 5))
    assert torch.equal(rows(x, idx), x[idx]) and torch.equal(rows(y, idx), y[idx])
    assert torch.equal(rows(x, idx[0]), x[idx[0]])
