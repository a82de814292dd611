"""laf (Label-Agnostic Forgetting): never reads a label; forget representations leave the retain distribution while
retain representations stay aligned with the original model's; utility remains."""

import copy
import dataclasses
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.methods.laf import embed
from unlearnkit.objectives.classifier import contrastive_alignment, saturated
from unlearnkit.types import Split, TensorData
from tests.conftest import state_equal

ADAPTER = ClassifierAdapter(10)
# a small budget that still moves the digits MLP: 60 Adam steps at lr 1e-3 on batches of 32, a 200-step VAE
BUDGET = {"steps": 60, "batch_size": 32, "lr": 1e-3, "vae_steps": 200}


def relabelled(task, labels=lambda y: (y + 3) % 10):
    """The same task (inputs, ids) with every label of every split replaced by ``labels(y)`` (None: no labels at all)."""
    def replace(split):
        return Split.create(split.name, TensorData(split.data.x, labels(split.data.y)), split.ids)

    return dataclasses.replace(task, forget=replace(task.forget), retain=replace(task.retain), test=replace(task.test), train_split=None)


def without_timing(info):
    """``info`` without its wall-clock entries."""
    return {k: without_timing(v) for k, v in info.items() if k not in ("seconds", "seconds_per_step")} if isinstance(info, dict) else info


def accuracy(model, split):
    return float((ADAPTER.outputs(model, split)["logits"].argmax(1) == split.labels).mean())


def centred_cosine(before, after, center):
    return float(F.cosine_similarity(before - center, after - center).mean())


@pytest.fixture(scope="module")
def unlearned(random_task, random_refs):
    """LAF with and without its VAE term, and an independent retain VAE (another seed) to measure with."""
    original = random_refs.original
    method = build_method("laf", BUDGET)
    runs = {
        name: build_method("laf", params).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
        for name, params in {"laf": BUDGET, "align_only": {**BUDGET, "unlearn_weight": 0.0}}.items()
    }
    retain0, forget0 = embed(original, random_task.retain, ADAPTER, "cpu"), embed(original, random_task.forget, ADAPTER, "cpu")
    judge, _ = method.fit_density(retain0, random_task.retain.ids, ADAPTER, rng=np.random.default_rng(123), device="cpu")
    return types.SimpleNamespace(runs=runs, judge=judge, retain0=retain0, forget0=forget0, task=random_task, original=original)


def errors(setting, model):
    """Mean reconstruction error of retain and forget embeddings under the independent retain VAE."""
    with torch.no_grad():
        return [float(setting.judge.reconstruction_error(embed(model, split, ADAPTER, "cpu")).mean())
                for split in (setting.task.retain, setting.task.forget)]


def test_never_reads_a_label(random_task, random_refs, original):
    """Bit-identical weights and info when every label of every split is replaced (inputs and ids kept)."""
    budget = {**BUDGET, "steps": 20, "vae_steps": 50}
    a = build_method("laf", budget).unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(5))
    b = build_method("laf", budget).unlearn(copy.deepcopy(original), relabelled(random_task), random_refs, rng=np.random.default_rng(5))
    assert not np.array_equal(random_task.retain.labels, relabelled(random_task).retain.labels)
    assert state_equal(a.model, b.model) and not state_equal(a.model, original)
    assert without_timing(a.info) == without_timing(b.info)


def test_runs_on_a_task_without_labels(random_task, original):
    unlabelled = relabelled(random_task, labels=lambda y: None)
    assert unlabelled.retain.labels is None and unlabelled.forget.labels is None
    out = build_method("laf", {**BUDGET, "steps": 5, "vae_steps": 20}).unlearn(original, unlabelled, None, rng=np.random.default_rng(0))
    assert out.info["train"]["steps"] == 5 and "warning" not in out.info


def test_forget_embeddings_leave_the_retain_distribution(unlearned):
    """Under a retain VAE fitted independently to the original model's retain embeddings, the forget embeddings'
    reconstruction error rises, and by a larger factor than the retain embeddings' error."""
    retain_before, forget_before = errors(unlearned, unlearned.original)
    retain_after, forget_after = errors(unlearned, unlearned.runs["laf"].model)
    assert forget_after > 1.5 * forget_before
    assert forget_after / forget_before > 1.1 * retain_after / retain_before
    reported = unlearned.runs["laf"].info["reconstruction_error"]  # the method's own VAE agrees
    assert reported["forget_after"] / reported["forget_before"] > reported["retain_after"] / reported["retain_before"] > 0


def test_the_vae_term_is_what_makes_forget_atypical(unlearned):
    """Without the VAE term (alignment only) the forget embeddings become far less atypical relative to retain."""
    def forget_over_retain(model):
        retain_error, forget_error = errors(unlearned, model)
        return forget_error / retain_error

    assert forget_over_retain(unlearned.runs["laf"].model) > 1.15 * forget_over_retain(unlearned.runs["align_only"].model)


def test_retain_representation_stays_aligned_and_utility_remains(unlearned):
    """Retain embeddings keep a high (centred) cosine similarity with the original ones, forget embeddings move more, and
    retain accuracy stays above 0.9 (the original and the retrained models fit digits' retain set at ~0.99; the head is
    frozen, so a 9-point loss would mean the alignment failed)."""
    model = unlearned.runs["laf"].model
    center = unlearned.retain0.mean(0)
    retain_cos = centred_cosine(unlearned.retain0, embed(model, unlearned.task.retain, ADAPTER, "cpu"), center)
    forget_cos = centred_cosine(unlearned.forget0, embed(model, unlearned.task.forget, ADAPTER, "cpu"), center)
    assert retain_cos > 0.9
    assert forget_cos < retain_cos
    assert accuracy(unlearned.original, unlearned.task.retain) > 0.98
    assert accuracy(model, unlearned.task.retain) > 0.9


def test_only_the_extractor_changes(unlearned):
    out = unlearned.runs["laf"]
    assert not out.changed["head.weight"].any() and not out.changed["head.bias"].any()
    assert all(out.changed[n].all() for n in out.changed if not n.startswith("head."))
    assert torch.equal(out.model.head.weight, unlearned.original.head.weight)


def test_contrastive_alignment_hand_computed():
    """Two retain anchors equal to their (orthogonal) originals and one forget example equal to its original, τ = 0.5:
    each anchor's logits are [1/τ, 0, 1/τ] (own original, other original, forget self-similarity), so the loss is
    −log(e²/(2e² + 1)); turning the forget embedding orthogonal to its original lowers it to −log(e²/(e² + 2))."""
    retain = torch.eye(3)[:2]
    forget_original = torch.tensor([[0.0, 0.0, 1.0]])
    loss = contrastive_alignment(retain, retain, forget_original, forget_original, temperature=0.5)
    assert float(loss) == pytest.approx(-math.log(math.e**2 / (2 * math.e**2 + 1)))
    moved = contrastive_alignment(retain, retain, torch.tensor([[1.0, 0.0, 0.0]]), forget_original, temperature=0.5)
    assert float(moved) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)))


def test_saturation_is_bounded():
    m = torch.tensor([0.0, 1.0, 1e6])
    assert torch.allclose(saturated(m), torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)


def test_parameters_are_validated():
    for bad in ({"temperature": 0.0}, {"unlearn_weight": -1.0}, {"unlearn_weight": 0.0, "align_weight": 0.0}, {"latent_dim": 0},
                {"vae_steps": 0}, {"vae_lr": float("nan")}, {"optimizer": "rmsprop"}):
        with pytest.raises(ConfigError):
            build_method("laf", bad)
