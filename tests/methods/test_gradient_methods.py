"""Defining behaviour of the gradient recipes: which data each reads, what direction it pushes."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.objectives import NLL
from unlearnkit.train import fit
from unlearnkit.types import Split, TensorData
from tests.conftest import state_equal

ADAPTER = ClassifierAdapter(10)


def with_noise(task, which):
    """The same task with the inputs of one split replaced by constants (ids kept)."""
    split = getattr(task, which)
    noisy = Split.create(which, TensorData(torch.full_like(split.data.x, 3.0), split.data.y), split.ids)
    return dataclasses.replace(task, **{which: noisy, "train_split": None})


def mean_loss(model, split):
    out = ADAPTER.outputs(model, split)
    return float(torch.nn.functional.cross_entropy(torch.as_tensor(out["logits"]), torch.as_tensor(out["labels"])))


@pytest.mark.parametrize("name,ignored", [("finetune", "forget"), ("grad_ascent", "retain")])
def test_reads_only_its_own_data(name, ignored, random_task, random_refs, original):
    """finetune never reads the forget set; grad_ascent never reads the retain set."""
    method = build_method(name, {"steps": 8, "batch_size": 32})
    a = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    b = method.unlearn(copy.deepcopy(original), with_noise(random_task, ignored), random_refs, rng=np.random.default_rng(0))
    assert state_equal(a.model, b.model)


def test_finetune_is_plain_training_on_retain(random_task, random_refs, original):
    method = build_method("finetune", {"steps": 6, "batch_size": 32, "lr": 0.02, "schedule": "constant"})
    out = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(4))
    ref = copy.deepcopy(original)
    fit(ref, NLL("retain"), {"retain": random_task.retain, "forget": random_task.forget}, method.train, adapter=ADAPTER,
        rng=np.random.default_rng(4))
    assert state_equal(out.model, ref)


def test_grad_ascent_raises_forget_loss(random_task, random_refs, original):
    before = mean_loss(original, random_task.forget)
    out = build_method("grad_ascent", {"steps": 5, "lr": 0.01}).unlearn(original, random_task, random_refs, rng=np.random.default_rng(0))
    assert mean_loss(out.model, random_task.forget) > before


def test_grad_diff_reduces_to_grad_ascent_without_retain_term(random_task, random_refs, original):
    """NegGrad+ with retain_weight 0 and forget_weight 1 is exactly gradient ascent."""
    common = {"steps": 6, "lr": 0.005, "batch_size": 32, "schedule": "constant"}
    a = build_method("grad_diff", {**common, "forget_weight": 1.0, "retain_weight": 0.0}).unlearn(
        copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(1))
    b = build_method("grad_ascent", common).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(1))
    assert state_equal(a.model, b.model)


def test_grad_diff_keeps_retain_better_than_grad_ascent(random_task, random_refs, original):
    common = {"steps": 20, "lr": 0.002, "batch_size": 32, "schedule": "constant"}
    ga = build_method("grad_ascent", common).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(1))
    gd = build_method("grad_diff", {**common, "forget_weight": 1.0, "retain_weight": 1.0}).unlearn(
        copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(1))
    assert "warning" not in ga.info and "warning" not in gd.info  # neither diverged: a fair comparison
    assert mean_loss(ga.model, random_task.retain) > mean_loss(original, random_task.retain)
    assert mean_loss(gd.model, random_task.retain) < mean_loss(ga.model, random_task.retain)
    with pytest.raises(ConfigError):
        build_method("grad_diff", {"forget_weight": -1})


def test_random_label_drives_forget_predictions_away(class_task, class_refs):
    model = copy.deepcopy(class_refs.original)
    out = build_method("random_label", {"epochs": 2, "lr": 0.01, "batch_size": 32}).unlearn(model, class_task, class_refs, rng=np.random.default_rng(0))
    acc = lambda m, s: float((ADAPTER.outputs(m, s)["logits"].argmax(1) == s.labels).mean())  # noqa: E731
    assert acc(class_refs.original, class_task.forget) > 0.9
    assert acc(out.model, class_task.forget) < 0.2
    assert acc(out.model, class_task.retain) > 0.8


def test_salun_moves_only_salient_weights(random_task, random_refs, original):
    before = copy.deepcopy(original)
    out = build_method("salun", {"steps": 10, "batch_size": 32, "saliency_fraction": 0.2, "weight_decay": 0.01}).unlearn(
        original, random_task, random_refs, rng=np.random.default_rng(0))
    assert abs(out.changed.fraction() - 0.2) < 1e-3
    for (n, p), (_, q) in zip(out.model.named_parameters(), before.named_parameters()):
        assert torch.equal(p[~out.changed[n]], q[~out.changed[n]])
    assert any(not torch.equal(p, q) for p, q in zip(out.model.parameters(), before.parameters()))


def test_salun_with_full_saliency_equals_random_label(random_task, random_refs, original):
    common = {"steps": 5, "batch_size": 32}
    a = build_method("salun", {**common, "saliency_fraction": 1.0}).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(2))
    b = build_method("random_label", common).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(2))
    assert state_equal(a.model, b.model)
