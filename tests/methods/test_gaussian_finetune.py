"""Defining behaviour of Gaussian amnesiac fine-tuning: the replacement targets are draws from the
Gaussian fitted to the training targets (checked statistically), deterministic under the seed, and the
method is exactly fine-tuning on the relabelled training set."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from tests.conftest import state_equal
from unlearnkit.adapters.regression import RegressionAdapter
from unlearnkit.analysis.targets import GaussianFit, gaussian_draws
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import TaskError
from unlearnkit.methods import build_method
from unlearnkit.objectives import NLL
from unlearnkit.train import fit
from unlearnkit.types import Split, TensorData

ADAPTER = RegressionAdapter()


def predictions(model, split):
    return ADAPTER.outputs(model, split)["pred"].astype(np.float64)


def mse(a, b):
    return float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))


@pytest.fixture(scope="module")
def half_forget_task():
    """4,000 synthetic training targets, half of them forgotten: 2,000 replacement draws (no model needed)."""
    source = load_dataset("synthetic_regression", n_train=4000, n_test=10, seed=1)
    task = make_task("synthetic", source.train, source.test, ForgetSpec("random", fraction=0.5), np.random.default_rng(0), n_classes=None)
    return dataclasses.replace(task, modality="regression")


def test_replacement_targets_follow_the_fitted_gaussian(half_forget_task):
    draws, gaussian = gaussian_draws(half_forget_task, np.random.default_rng(0), "gaussian_finetune")
    targets = half_forget_task.train.labels.astype(np.float64)
    assert gaussian.mean == pytest.approx(targets.mean()) and gaussian.std == pytest.approx(targets.std(ddof=1))
    n = len(half_forget_task.forget)
    assert draws.shape == (n,)
    # sample mean within 4 standard errors, sample sd within 4 standard errors (≈ σ/√(2n)), and a KS test
    assert abs(draws.mean() - gaussian.mean) < 4 * gaussian.std / np.sqrt(n)
    assert abs(draws.std(ddof=1) - gaussian.std) < 4 * gaussian.std / np.sqrt(2 * n)
    assert kstest(draws, "norm", args=(float(gaussian.mean), float(gaussian.std))).pvalue > 1e-3
    # the draws carry no information about the true forget targets
    assert abs(np.corrcoef(draws, half_forget_task.forget.labels)[0, 1]) < 4 / np.sqrt(n)


def test_replacement_targets_are_deterministic_under_the_seed(half_forget_task):
    a, _ = gaussian_draws(half_forget_task, np.random.default_rng(7), "gaussian_finetune")
    b, _ = gaussian_draws(half_forget_task, np.random.default_rng(7), "gaussian_finetune")
    c, _ = gaussian_draws(half_forget_task, np.random.default_rng(8), "gaussian_finetune")
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_multi_output_fit_is_per_dimension():
    targets = np.stack([np.arange(10.0), 100.0 + 3.0 * np.arange(10.0)], axis=1)
    gaussian = GaussianFit.of(targets)
    np.testing.assert_allclose(gaussian.mean, [4.5, 113.5])
    np.testing.assert_allclose(gaussian.std, [np.arange(10.0).std(ddof=1), 3.0 * np.arange(10.0).std(ddof=1)])
    assert gaussian.sample(5, np.random.default_rng(0)).shape == (5, 2)
    with pytest.raises(TaskError, match="real-valued"):
        GaussianFit.of(np.arange(10))


def test_is_fine_tuning_on_the_relabelled_training_set(regression_task, regression_refs):
    """The same run as plain training on an explicit copy of the training set whose forget targets are
    the draws (same ids, so the same shuffles)."""
    method = build_method("gaussian_finetune", {"steps": 10})
    out = method.unlearn(copy.deepcopy(regression_refs.original), regression_task, regression_refs, rng=np.random.default_rng(3))
    rng = np.random.default_rng(3)
    draws, _ = gaussian_draws(regression_task, rng, "gaussian_finetune")
    train = regression_task.train
    y = train.data.y.clone()
    y[torch.as_tensor(train.positions_of(regression_task.forget.ids))] = torch.as_tensor(draws, dtype=y.dtype)
    relabelled = Split.create("train", TensorData(train.data.x, y), train.ids)
    ref = copy.deepcopy(regression_refs.original)
    fit(ref, NLL("train"), {"train": relabelled}, method.train, adapter=ADAPTER, rng=rng)
    assert state_equal(out.model, ref)
    assert out.info["replaced"] == len(regression_task.forget)


def test_forgets_the_forget_targets_and_keeps_the_retain_fit(regression_task, regression_refs):
    method = build_method("gaussian_finetune")
    original = regression_refs.original
    out = method.unlearn(copy.deepcopy(original), regression_task, regression_refs, rng=np.random.default_rng(0))
    draws, _ = gaussian_draws(regression_task, np.random.default_rng(0), "gaussian_finetune")
    forget, retain = regression_task.forget, regression_task.retain
    before, after = predictions(original, forget), predictions(out.model, forget)
    assert mse(after, draws) < 0.5 * mse(before, draws)  # it fits the replacement targets ...
    retrained = np.mean([mse(predictions(r, forget), forget.labels) for r in regression_refs.retrained_seeds])
    assert mse(after, forget.labels) > 0.5 * retrained > 4 * mse(before, forget.labels)  # ... and loses the true ones
    assert mse(predictions(out.model, retain), retain.labels) < mse(predictions(original, retain), retain.labels) + 0.03
    assert "warning" not in out.info
