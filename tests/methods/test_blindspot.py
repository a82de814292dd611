"""Defining behaviour of blindspot unlearning: the blindspot model never sees the forget set; the
unlearned model's forget predictions move toward the blindspot model's and away from the original's,
while the retain fit stays close to the original's."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from tests.conftest import state_equal
from unlearnkit.adapters.regression import RegressionAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import Setup, build_method
from unlearnkit.objectives.classifier import attention_map
from unlearnkit.objectives import NLL
from unlearnkit.train import fit
from unlearnkit.types import Split, TensorData

ADAPTER = RegressionAdapter()


def predictions(model, split):
    return ADAPTER.outputs(model, split)["pred"].astype(np.float64)


def mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def test_attention_map_hand_computed():
    flat = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    expected = torch.tensor([[1.0, 4.0], [0.0, 0.0]]) / torch.tensor([[math.sqrt(17.0)], [1.0]])
    assert torch.allclose(attention_map(flat), expected)
    maps = torch.ones(1, 2, 2, 2)
    maps[0, 1, 0, 0] = 3.0  # channel mean of squares at position (0, 0): (1 + 9) / 2 = 5, elsewhere 1
    assert torch.allclose(attention_map(maps), torch.tensor([[5.0, 1.0, 1.0, 1.0]]) / math.sqrt(28.0))


def test_blindspot_model_never_reads_the_forget_set(regression_task):
    """Step 1 trains a re-initialised copy on the retain set only: noise in place of the forget inputs
    changes nothing, and the re-initialisation does not depend on the original's weights."""
    method = build_method("blindspot", {"blindspot_epochs": 3})
    original = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    forget = regression_task.forget
    noise = Split.create("forget", TensorData(torch.full_like(forget.data.x, 3.0), forget.data.y), forget.ids)
    noisy = dataclasses.replace(regression_task, forget=noise, train_split=None)
    a, seed_a, _ = method.train_blindspot(copy.deepcopy(original), regression_task, Setup(None, ADAPTER, np.random.default_rng(5)))
    b, seed_b, _ = method.train_blindspot(copy.deepcopy(original), noisy, Setup(None, ADAPTER, np.random.default_rng(5)))
    with torch.no_grad():
        for p in original.parameters():
            p.mul_(-2.0)
    c, _, _ = method.train_blindspot(copy.deepcopy(original), regression_task, Setup(None, ADAPTER, np.random.default_rng(5)))
    assert seed_a == seed_b and state_equal(a, b) and state_equal(a, c)


def test_forget_predictions_move_toward_the_blindspot_and_away_from_the_original(regression_task, regression_refs):
    method = build_method("blindspot")
    original = regression_refs.original
    # unlearn's first use of the rng is the blindspot model: the same seed rebuilds it here
    blind, _, _ = method.train_blindspot(copy.deepcopy(original), regression_task, Setup(None, ADAPTER, np.random.default_rng(0)))
    out = method.unlearn(copy.deepcopy(original), regression_task, regression_refs, rng=np.random.default_rng(0))
    forget, retain = regression_task.forget, regression_task.retain
    before, after, target = predictions(original, forget), predictions(out.model, forget), predictions(blind, forget)
    assert mse(after, target) < 0.5 * mse(before, target)
    assert mse(after, before) > 0.1
    # the forget error rises toward the retrained models'; the retain fit stays close to the original's
    retrained = np.mean([mse(predictions(r, forget), forget.labels) for r in regression_refs.retrained_seeds])
    assert mse(before, forget.labels) < 0.5 * mse(after, forget.labels) and mse(after, forget.labels) < 1.5 * retrained
    assert mse(predictions(out.model, retain), retain.labels) < mse(predictions(original, retain), retain.labels) + 0.03
    assert out.info["blindspot"]["train"]["steps"] > 0 and "warning" not in out.info


def test_without_forget_terms_it_is_fine_tuning_on_retain(regression_task, regression_refs):
    """forget_weight = 0 and both attention weights 0 leave plain training on the retain set, after the
    blindspot model has drawn its randomness from the same rng."""
    params = {"steps": 8, "blindspot_epochs": 2, "forget_weight": 0.0, "retain_weight": 1.0,
              "retain_attention_weight": 0.0, "forget_attention_weight": 0.0}
    method = build_method("blindspot", params)
    out = method.unlearn(copy.deepcopy(regression_refs.original), regression_task, regression_refs, rng=np.random.default_rng(2))
    rng = np.random.default_rng(2)
    method.train_blindspot(copy.deepcopy(regression_refs.original), regression_task, Setup(None, ADAPTER, rng))
    ref = copy.deepcopy(regression_refs.original)
    fit(ref, NLL("retain"), {"retain": regression_task.retain}, method.train, adapter=ADAPTER, rng=rng, epoch_stream="retain")
    assert state_equal(out.model, ref)


@pytest.mark.parametrize("params,message", [
    ({"forget_weight": -1.0}, "forget_weight must be a number >= 0, got -1.0"),
    ({"forget_weight": 0, "retain_weight": 0, "retain_attention_weight": 0}, "at least one of"),
    ({"blindspot_epochs": -1}, "blindspot_epochs"),
])
def test_parameters_are_validated(params, message):
    with pytest.raises(ConfigError, match=message):
        build_method("blindspot", params)
