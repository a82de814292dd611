"""Regression end to end: the adapter, the datasets, the metrics against independent computations, and
the verdict on the diabetes task (original -> not forgotten, an independent retrain -> removed)."""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score

from tests.conftest import REGRESSION_CONFIG, regressor_factory
from unlearnkit.adapters import get_adapter
from unlearnkit.adapters.regression import RegressionAdapter
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError, ModelError
from unlearnkit.evaluation import EvalContext, assess, build_metric
from unlearnkit.models import build_model
from unlearnkit.train import train_model
from unlearnkit.seeding import torch_seed
from unlearnkit.types import Evidence, MetricResult, Split, TensorData
from unlearnkit.verdict import decide

ADAPTER = RegressionAdapter()
BATTERY = ["regression_error", "regression_gap", "residual_mia", "relearn", "noise_floor"]


def numpy_predictions(model, split):
    with torch.no_grad():
        return model.eval()(split.data.x).numpy()[:, 0]


# ------------------------------------------------------------------------------------- adapter
def test_adapter_squeezes_single_output_and_matches_numpy(regression_task, regression_refs):
    model = regression_refs.original
    batch = next(iter(regression_task.test.batches(7)))
    assert model(batch["x"]).shape == (7, 1)
    assert ADAPTER.logits(model, batch).shape == (7,)
    with torch.no_grad():
        loss = ADAPTER.per_example_loss(model, batch).numpy()
    pred = numpy_predictions(model, Split.create("b", TensorData(batch["x"], batch["y"])))
    np.testing.assert_allclose(loss, (pred - batch["y"].numpy()) ** 2, rtol=1e-6)
    out = ADAPTER.outputs(model, regression_task.test, batch_size=16)
    np.testing.assert_allclose(out["pred"], numpy_predictions(model, regression_task.test), rtol=1e-6)
    np.testing.assert_array_equal(out["target"], regression_task.test.labels)
    stats = ADAPTER.stats(out)
    residual = out["pred"].astype(np.float64) - out["target"]
    np.testing.assert_allclose(stats["residual"], residual)
    np.testing.assert_allclose(stats["loss"], residual**2)
    np.testing.assert_allclose(stats["abs_error"], np.abs(residual))
    np.testing.assert_allclose(ADAPTER.score(out), -(residual**2))


def test_adapter_multi_output_loss_is_sklearn_uniform_average():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Linear(3, 2)
    split = Split.create("s", TensorData(x, y))
    with torch.no_grad():
        loss = ADAPTER.per_example_loss(model, {"x": x, "y": y})
        pred = model(x).numpy()
    out = ADAPTER.outputs(model, split)
    assert out["pred"].shape == (20, 2)
    assert float(loss.mean()) == pytest.approx(mean_squared_error(y.numpy(), pred), rel=1e-6)
    assert float(ADAPTER.stats(out)["abs_error"].mean()) == pytest.approx(mean_absolute_error(y.numpy(), pred), rel=1e-6)


def test_adapter_check_rejects_wrong_width_and_nan(regression_task, regression_refs):
    with pytest.raises(ModelError, match=r"output has shape \(2, 3\)"):
        ADAPTER.check(build_model("mlp", (10,), 3, hidden=(4,)), regression_task)
    broken = build_model("mlp", (10,), 1, hidden=(4,))
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="NaN"):
        ADAPTER.check(broken, regression_task)
    ADAPTER.check(regression_refs.original, regression_task)
    assert isinstance(get_adapter(regression_task), RegressionAdapter)


# ------------------------------------------------------------------------------------ datasets
def test_diabetes_shapes_ids_and_train_only_standardisation():
    from sklearn.datasets import load_diabetes

    source = load_dataset("diabetes", test_fraction=0.25, seed=3)
    n_train, n_test = len(source.train), len(source.test)
    assert (n_train, n_test) == (332, 110) and source.input_shape == (10,) and source.n_classes is None
    assert np.array_equal(source.train.ids, np.arange(n_train)) and np.array_equal(source.test.ids, np.arange(n_train, 442))
    assert source.train.data.y.dtype == torch.float32 and source.info["modality"] == "regression"
    x, y = load_diabetes(return_X_y=True, scaled=False)
    perm = np.random.default_rng(3).permutation(442)
    train, test = np.sort(perm[110:]), np.sort(perm[:110])
    mean, std = x[train].mean(0), x[train].std(0)
    np.testing.assert_allclose(source.test.data.x.numpy(), (x[test] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(source.test.data.y.numpy(), (y[test] - y[train].mean()) / y[train].std(), rtol=1e-5, atol=1e-5)
    assert source.info["target_mean"] == pytest.approx(y[train].mean())
    train_x = source.train.data.x.numpy()
    np.testing.assert_allclose(train_x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(0), 1, atol=1e-4)
    assert abs(float(source.test.data.y.mean())) > 1e-3  # test statistics were not used


def test_datasets_are_deterministic_and_validated():
    a, b, c = load_dataset("diabetes", seed=1), load_dataset("diabetes", seed=1), load_dataset("diabetes", seed=2)
    assert a.train.fingerprint == b.train.fingerprint and a.test.fingerprint == b.test.fingerprint
    assert a.train.fingerprint != c.train.fingerprint
    params = {"n_train": 200, "n_test": 50, "n_features": 7, "noise": 0.5, "seed": 4}
    s = load_dataset("synthetic_regression", **params)
    assert s.train.data.x.shape == (200, 7) and s.test.data.x.shape == (50, 7) and s.train.data.y.shape == (200,)
    assert s.train.fingerprint == load_dataset("synthetic_regression", **params).train.fingerprint
    noiseless = load_dataset("synthetic_regression", **{**params, "noise": 0.0})
    assert torch.equal(noiseless.train.data.x, s.train.data.x) and not torch.equal(noiseless.train.data.y, s.train.data.y)
    np.testing.assert_allclose(s.train.data.y.numpy().mean(), 0, atol=1e-5)
    with pytest.raises(ConfigError, match="n_features must be >= 5"):
        load_dataset("synthetic_regression", n_features=3)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("diabetes", test_fraction=1.5)


# ------------------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def ctx(regression_task):
    return EvalContext(regression_task, get_adapter(regression_task))


def test_regression_error_matches_sklearn(regression_task, regression_refs, ctx):
    model = regression_refs.original
    result = build_metric("regression_error").compute(model, regression_task, regression_refs, ctx)
    for name, split in regression_task.splits().items():
        pred = numpy_predictions(model, split)
        assert result.values[f"mse_{name}"] == pytest.approx(mean_squared_error(split.labels, pred), rel=1e-5)
        assert result.values[f"mae_{name}"] == pytest.approx(mean_absolute_error(split.labels, pred), rel=1e-5)
        ids, errors = result.per_example[f"squared_error.{name}"]
        assert np.array_equal(ids, split.ids)
        np.testing.assert_allclose(errors, (pred - split.labels) ** 2, rtol=1e-5)
    assert {e.key: (e.role, e.remembers) for e in result.evidence} == {
        "regression_error.mse_forget": ("forget", "lower"),
        "regression_error.mse_retain": ("utility", "lower"),
        "regression_error.mse_test": ("utility", "lower"),
    }


def band_floor(**bands):
    """A noise floor whose retrained seeds agree, so each band is its centre ± its floor: (lo, hi) per key."""
    return MetricResult("noise_floor", {}, info={"seed_values": {k: [(lo + hi) / 2] * 3 for k, (lo, hi) in bands.items()},
                                                 "floors": {k: (hi - lo) / 2 for k, (lo, hi) in bands.items()}, "R": 3, "alpha": 0.05})


@pytest.mark.parametrize("forget_mse,test_mse,label", [
    (0.1, 0.8, "not forgotten"),   # forget error below the retrain band: the forget set is still fitted
    (0.8, 2.0, "over-forgotten"),  # test error above the band: utility worse than retraining
    (0.8, 0.5, "removed"),         # test error below the band is *better* utility, not a failure
    (0.8, 0.8, "removed"),
])
def test_error_evidence_directions_in_the_verdict(forget_mse, test_mse, label):
    evidence = [Evidence(key="regression_error.mse_forget", value=forget_mse, role="forget", remembers="lower", floor=0.0),
                Evidence(key="regression_error.mse_test", value=test_mse, role="utility", remembers="lower", floor=0.0),
                Evidence(key="relearn.auc", value=-0.8, role="robustness", remembers="higher", floor=0.0)]
    floor = band_floor(**{"regression_error.mse_forget": (0.6, 1.0), "regression_error.mse_test": (0.7, 0.9), "relearn.auc": (-1.0, -0.6)})
    assert decide(evidence, floor).label == label


def test_regression_gap_matches_independent_mse(regression_task, regression_refs, ctx):
    model = regression_refs.original
    result = build_metric("regression_gap").compute(model, regression_task, regression_refs, ctx)
    for name in ("forget", "retain", "test"):
        split = regression_task.splits()[name]
        ref = np.mean([mean_squared_error(split.labels, numpy_predictions(r, split)) for r in regression_refs.retrained_seeds])
        own = mean_squared_error(split.labels, numpy_predictions(model, split))
        assert result.values[name] == pytest.approx(abs(own - ref), rel=1e-4, abs=1e-6)
    assert result.values["avg_gap"] == pytest.approx(np.mean([result.values[s] for s in ("forget", "retain", "test")]))
    itself = dataclasses.replace(regression_refs, retrained_seeds=(model,))
    assert build_metric("regression_gap").compute(model, regression_task, itself, ctx).values["avg_gap"] == 0.0


def test_residual_mia_matches_roc_auc_score(regression_task, regression_refs, ctx):
    model = regression_refs.original
    result = build_metric("residual_mia").compute(model, regression_task, regression_refs, ctx)
    forget, test = regression_task.forget, regression_task.test
    members = -((numpy_predictions(model, forget) - forget.labels) ** 2)
    others = -((numpy_predictions(model, test) - test.labels) ** 2)
    labels = np.r_[np.ones(len(members)), np.zeros(len(others))]
    assert result.values["auc"] == pytest.approx(roc_auc_score(labels, np.r_[members, others]), abs=1e-6)
    assert result.values["auc"] > 0.75  # the original memorised its forget set
    assert 0.0 <= result.values["tpr_at_0.1pct_fpr"] <= result.values["tpr_at_1pct_fpr"] <= 1.0
    (key_ev,) = result.evidence
    assert (key_ev.key, key_ev.role, key_ev.remembers) == ("residual_mia.auc", "forget", "higher")
    with pytest.raises(ConfigError, match=r"must be one of \['test', 'holdout'\]"):
        build_metric("residual_mia", {"nonmembers": "retain"})


def test_relearn_scores_regression_by_negative_squared_error(regression_task, regression_refs, ctx):
    relearn = build_metric("relearn")
    model = regression_refs.original
    result = relearn.compute(model, regression_task, regression_refs, ctx)
    _, heldout, _ = relearn.slices(regression_task, ctx.seed)
    start = -mean_squared_error(heldout.labels, numpy_predictions(model, heldout))
    assert result.values["start"] == pytest.approx(start, rel=1e-5)
    assert result.values["auc"] > result.values["retrained_auc"]  # the original fits held-out forget examples better


# ------------------------------------------------------------------------------------- verdict
def test_verdict_original_not_forgotten_independent_retrain_removed(diabetes, regression_task, regression_refs):
    """The original must come out "not forgotten"; a model retrained on the retain set with a seed none
    of the references used must come out "removed" (it is one more draw from the retrain distribution)."""
    ctx = EvalContext(regression_task, get_adapter(regression_task))
    original = assess(regression_refs.original, regression_task, regression_refs, BATTERY, ctx=ctx)
    assert original.verdict.label == "not forgotten", original.verdict.reasons
    flagged = {row["key"] for row in original.verdict.rows if row["status"] == "more" and row["role"] == "forget"}
    assert "regression_error.mse_forget" in flagged
    with torch_seed(12345):
        fresh = regressor_factory(diabetes)()
    retrained, _, _ = train_model(fresh, regression_task.retain, REGRESSION_CONFIG, adapter=ctx.adapter, seed=12345)
    verdict = assess(retrained, regression_task, regression_refs, BATTERY, ctx=ctx).verdict
    assert verdict.label == "removed", verdict.reasons
