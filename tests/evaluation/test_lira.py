"""LiRA / U-LiRA on a task where membership is all memorisation (noise inputs, random labels)."""

import math

import numpy as np
import pytest
import torch

from unlearnkit import Split, Task, TensorData
from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, MissingReference
from unlearnkit.evaluation import EvalContext, build_metric
from unlearnkit.evaluation.lira import auc_null_sd, gaussian_log_ratio
from unlearnkit.methods import build_method
from unlearnkit.models import build_model
from unlearnkit.references import References
from unlearnkit.runs.references import build_references
from unlearnkit.train import TrainConfig


_NOISE: dict = {}


def noise_task_and_refs():
    """Noise inputs with random labels: membership is pure memorisation (built once per session)."""
    if "task" in _NOISE:
        return _NOISE["task"], _NOISE["refs"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g)
    y = torch.randint(0, 20, (600,), generator=g)
    train = Split.create("train", TensorData(x[:400], y[:400]))
    test = Split.create("test", TensorData(x[400:], y[400:]), np.arange(400, 600))
    task = Task.from_forget_ids("noise", train, test, np.arange(0, 400, 5), n_classes=20)
    cfg = TrainConfig(epochs=60, batch_size=50, optimizer="adam", lr=3e-3)
    refs = build_references(task, lambda: build_model("mlp", (16,), 20, hidden=(128,)), cfg, retrain_seeds=2)
    _NOISE.update(task=task, refs=refs)
    return task, refs


@pytest.fixture(scope="module")
def noise():
    return noise_task_and_refs()


def test_lira_separates_memorised_from_retrained(noise):
    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    lira = build_metric("lira", {"n_shadows": 8, "n_targets": 80})
    original = lira.compute(refs.original, task, refs, ctx)
    retrained = lira.compute(refs.retrained, task, refs, ctx)
    sd = auc_null_sd(80, 80)
    assert original.values["auc"] > 0.9 and original.values["tpr_at_1pct_fpr"] > 0.2
    assert abs(retrained.values["auc"] - 0.5) < 4 * sd
    ev = original.evidence[0]
    assert ev.strong and ev.null_mean == 0.5 and ev.null_sd == pytest.approx(sd)


def test_u_lira_exact_unlearner_is_indistinguishable_and_no_method_equals_lira(noise):
    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    params = {"n_shadows": 8, "n_targets": 80}
    plain = build_metric("lira", params).compute(refs.original, task, refs, ctx)
    same = build_metric("u_lira", params).compute(refs.original, task, refs, ctx)  # ctx.method is None: no unlearning
    assert same.values["auc"] == plain.values["auc"]
    ctx.method = build_method("retrain")
    exact = build_metric("u_lira", params).compute(refs.retrained, task, refs, ctx)
    assert abs(exact.values["auc"] - 0.5) < 4 * auc_null_sd(80, 80)
    assert exact.info["method_under_test"] == "retrain"


def test_gaussian_log_ratio_hand_case():
    stats = np.array([[0.0], [2.0], [10.0], [12.0]])
    inside = np.array([[True], [True], [False], [False]])
    score = gaussian_log_ratio(np.array([1.0]), stats, inside, fixed_variance=False)
    # in: mean 1, var 2; out: mean 11, var 2  ->  log N(1;1,2) − log N(1;11,2) = 100/4 = 25
    assert score[0] == pytest.approx(25.0)
    with pytest.raises(ConfigError, match="two 'in' and two 'out'"):
        gaussian_log_ratio(np.array([1.0]), stats[:3], inside[:3], fixed_variance=False)


def test_needs_recipe(noise):
    task, refs = noise
    with pytest.raises(MissingReference, match="model_factory"):
        build_metric("lira", {"n_shadows": 4}).compute(refs.original, task, References(original=refs.original), EvalContext(task, get_adapter(task)))


def test_label_only_sees_memorisation_through_labels_alone(noise):
    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("label_only", {"n_shadows": 6, "n_targets": 60, "steps": 8})
    assert metric.compute(refs.original, task, refs, ctx).values["auc"] > 0.85
    assert abs(metric.compute(refs.retrained, task, refs, ctx).values["auc"] - 0.5) < 4 * auc_null_sd(60, 60)


def test_margin_kl_hand_cases():
    from unlearnkit.evaluation.klom import margin_kl

    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    assert np.allclose(margin_kl(a, a.copy()), 0.0)
    far = margin_kl(a, a + 100.0)
    assert (far > 5).all()  # disjoint histograms: KL ≈ log(1/floor) scale
    # one bin each, fully overlapping after clipping to ±100: zero
    assert margin_kl(np.full((4, 1), 500.0), np.full((4, 1), 900.0))[0] == 0.0
    # direction, by hand with 2 bins over [0, 10]: unlearned (1/2, 1/2), oracle (3/4, 1/4)
    unlearned, oracle = np.array([[0.0], [0], [10], [10]]), np.array([[0.0], [0], [0], [10]])
    assert margin_kl(unlearned=unlearned, oracle=oracle, bins=2)[0] == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert margin_kl(unlearned=oracle, oracle=unlearned, bins=2)[0] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    # an empty oracle bin where the unlearned ensemble has mass is floored at 1e-5 (then renormalised) ...
    q = np.array([1.0, 1e-5]) / (1 + 1e-5)
    one_bin = np.array([[0.0], [0], [0], [1]])
    assert margin_kl(unlearned=unlearned, oracle=one_bin, bins=2)[0] == pytest.approx(float(np.sum(0.5 * np.log(0.5 / q))))
    # ... and an empty unlearned bin contributes nothing (no floor on that side): exactly log 2 here
    assert margin_kl(unlearned=one_bin, oracle=unlearned, bins=2)[0] == pytest.approx(math.log(2), rel=1e-9)
    with pytest.raises(ConfigError, match="NaN margins"):
        margin_kl(unlearned=np.full((4, 1), np.nan), oracle=oracle)


def test_klom_retrain_inside_its_band_and_original_outside(noise):
    """retrain is judged with a third retrained ensemble (independent of the reference pair), so its excess is noise,
    and the permutation null sd must cover it; the original's excess is far outside."""
    from scipy.stats import norm

    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("klom", {"n_models": 6, "n_examples": 60})
    ctx.method = build_method("retrain")
    exact = metric.compute(refs.retrained, task, refs, ctx)
    ev = exact.evidence[0]
    z = norm.ppf(1 - 0.05 / 2)
    assert exact.values["forget.signed_excess"] != 0.0  # not the reference ensemble again
    assert abs(ev.value) <= max(z * ev.null_sd, metric.floor), (ev.value, ev.null_sd)
    ctx.method = None
    orig = metric.compute(refs.original, task, refs, ctx)
    assert orig.values["forget.median_shift"] > 0
    assert orig.evidence[0].value > max(z * orig.evidence[0].null_sd, metric.floor), (orig.evidence[0].value, orig.evidence[0].null_sd)


def test_margin_kl_equals_scipy_entropy_of_numpy_histograms():
    """The vectorised margin_kl against the per-example definition: np.histogram on linspace edges, the oracle floored
    where the unlearned side has mass, scipy.stats.entropy (which renormalises)."""
    from scipy.stats import entropy

    from unlearnkit.evaluation.klom import margin_kl

    def loop(u, o, bins=20, floor=1e-5):
        out = []
        for i in range(o.shape[1]):
            lo, hi = min(o[:, i].min(), u[:, i].min()), max(o[:, i].max(), u[:, i].max())
            if hi <= lo:
                out.append(0.0)
                continue
            edges = np.linspace(lo, hi, bins + 1)
            p, q = np.histogram(u[:, i], edges)[0] / len(u), np.histogram(o[:, i], edges)[0] / len(o)
            out.append(entropy(p, np.where(p > 0, np.maximum(q, floor), q)))
        return np.array(out)

    rng = np.random.default_rng(0)
    for trial in range(6):
        u = rng.normal(size=(16, 80)) * rng.uniform(0.1, 5)
        o = rng.normal(size=(16, 80)) + rng.uniform(-2, 2)
        if trial % 2:  # ties on bin edges
            u, o = np.round(u, 1), np.round(o, 1)
        u[:, :3] = o[:, :3] = 3.0  # one value everywhere: KL 0
        np.testing.assert_allclose(margin_kl(u, o), loop(u, o), rtol=1e-10, atol=1e-12)


def test_cached_ensembles_are_keyed_by_the_whole_membership(noise):
    """Two membership matrices that differ only in the last pool example (as U-LiRA's retrained shadows for two forget
    sets can) must not share a cache entry."""
    from unlearnkit.ensembles import balanced_memberships
    from unlearnkit.evaluation.lira import cached_ensemble

    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    pool = task.train.subset(np.arange(300), "pool")
    first = balanced_memberships(4, len(pool), seed=0)
    second = first.copy()
    second[:, -1] = ~second[:, -1]
    a = cached_ensemble(ctx, refs, pool, first, seed=1, kind="test")
    b = cached_ensemble(ctx, refs, pool, second, seed=1, kind="test")
    assert cached_ensemble(ctx, refs, pool, first.copy(), seed=1, kind="test") is a
    assert b is not a
    assert any(not torch.equal(p, q) for p, q in zip(a[0].parameters(), b[0].parameters()))


def test_epsilon_score_and_klom_share_their_retrained_ensembles(noise, monkeypatch):
    """Both compare the unlearned models with two ensembles retrained on the retain set: trained once per task, not once per
    metric. Counted by the ensembles trained: epsilon_score trains its two retrained ones (plus nothing for the original);
    klom then trains only its ensemble of originals."""
    import unlearnkit.evaluation.lira as lira

    task, refs = noise
    trained = []
    real = lira.train_ensemble
    monkeypatch.setattr(lira, "train_ensemble", lambda *a, desc="", **k: trained.append(desc) or real(*a, desc=desc, **k))
    ctx = EvalContext(task, get_adapter(task))
    ctx.method = None
    build_metric("epsilon_score", {"n_models": 4, "n_examples": 30}).compute(refs.original, task, refs, ctx)
    assert trained == ["retrained ensemble"] * 2
    build_metric("klom", {"n_models": 4, "n_examples": 30}).compute(refs.original, task, refs, ctx)
    assert trained == ["retrained ensemble"] * 2 + ["klom original ensemble"]
    build_metric("klom", {"n_models": 5, "n_examples": 30}).compute(refs.original, task, refs, ctx)  # another size: its own
    assert trained[3:] == ["retrained ensemble"] * 2 + ["klom original ensemble"]


def test_u_lira_runs_on_an_exact_regime_that_serves_its_own_architecture(noise):
    """An exact method (SISA) serves an ensemble, not the shadow's architecture: each shadow is rebuilt in the regime
    and its part of U deleted. Deletion there is exact, so U-LiRA cannot tell its forget set from non-members."""
    from unlearnkit.exact import SisaModel

    task, refs = noise
    ctx = EvalContext(task, get_adapter(task))
    ctx.method = build_method("sisa", {"shards": 2, "slices": 1})
    out = build_metric("u_lira", {"n_shadows": 8, "n_targets": 80}).compute(refs.retrained, task, refs, ctx)
    key = next(k for k in ctx.shared if k[0] == "u_lira-shadows")
    assert all(isinstance(m, SisaModel) for m in ctx.shared[key])
    assert abs(out.values["auc"] - 0.5) < 4 * auc_null_sd(80, 80)
