"""Defining behaviour of concept_poison: the concept bottleneck, integrated gradients, and the poisoned labels."""

import copy
import dataclasses
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method
from unlearnkit.analysis.concepts import ConceptBottleneck, analyse, integrated_gradients, poison_labels
from unlearnkit.types import Split, TensorData

ADAPTER = ClassifierAdapter(10)


def synthetic_bottleneck(n=300, d=12, n_classes=4, n_concepts=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.relu(torch.randn(n, d, generator=gen, dtype=torch.float64))
    noise = 0.1 * torch.randn(n, n_classes, generator=gen, dtype=torch.float64)
    logits = features @ torch.randn(d, n_classes, generator=gen, dtype=torch.float64) + noise
    return ConceptBottleneck.fit(features, logits, n_concepts), features, logits, gen


@pytest.mark.parametrize("cls", [0, 3])
def test_integrated_gradients_are_complete_and_step_free_on_the_linear_head(cls):
    """Σ_j IG_j = g_k(a) − g_k(0) for a random input, to 1e-4, with the same attributions at any number of steps."""
    bottleneck, _, _, gen = synthetic_bottleneck()
    a = 3.0 * torch.randn(1, 5, generator=gen, dtype=torch.float64)
    zero = torch.zeros_like(a)
    target = torch.tensor([cls])
    gap = float(bottleneck.head(a)[0, cls] - bottleneck.head(zero)[0, cls])
    runs = [integrated_gradients(bottleneck.head, a, zero, target, steps) for steps in (1, 3, 16, 101)]
    for attr in runs:
        assert abs(float(attr.sum()) - gap) < 1e-4
        assert torch.allclose(attr, runs[0], atol=1e-12)
    assert torch.allclose(runs[0][0], a[0] * bottleneck.weight_[cls], atol=1e-12)  # IG of a linear map: a_j · W_kj


def test_integrated_gradients_converge_to_completeness_on_a_nonlinear_function():
    gen = torch.Generator().manual_seed(3)
    m1, m2 = torch.randn(6, 8, generator=gen, dtype=torch.float64), torch.randn(8, 3, generator=gen, dtype=torch.float64)

    def fn(a):
        return torch.tanh(a @ m1) @ m2

    x, base = torch.randn(4, 6, generator=gen, dtype=torch.float64), torch.zeros(4, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    gap = (fn(x) - fn(base)).gather(1, target[:, None])[:, 0]
    errors = [float((integrated_gradients(fn, x, base, target, steps).sum(1) - gap).abs().max()) for steps in (2, 8, 32, 128)]
    assert errors[0] > 1e-3 and all(b < a / 4 for a, b in itertools.pairwise(errors)) and errors[-1] < 1e-4


def test_bottleneck_concepts_are_orthonormal_and_fidelity_is_pooled_r2():
    bottleneck, features, logits, _ = synthetic_bottleneck()
    c = bottleneck.concepts_
    assert torch.allclose(c @ c.T, torch.eye(len(c), dtype=torch.float64), atol=1e-10)
    predicted = bottleneck.head(bottleneck.activations(features))
    expected = r2_score(logits.numpy(), predicted.numpy(), multioutput="variance_weighted")
    assert abs(bottleneck.fidelity(features, logits) - expected) < 1e-10


def test_bottleneck_is_exact_when_logits_live_in_the_concept_span():
    """Features of rank 3 and logits linear in them: three concepts explain everything (R² = 1, variance fraction 1)."""
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(200, 3, generator=gen, dtype=torch.float64) @ torch.randn(3, 10, generator=gen, dtype=torch.float64)
    logits = features @ torch.randn(10, 4, generator=gen, dtype=torch.float64) + 2.0
    bottleneck = ConceptBottleneck.fit(features, logits, 3)
    assert abs(bottleneck.fidelity(features, logits) - 1.0) < 1e-10
    assert abs(bottleneck.explained_variance_ - 1.0) < 1e-10


def independent_nearest_class(model, task, n_concepts, forgotten):
    """Numpy re-derivation: SVD concepts, least squares with intercept, IG of a linear head = a_j·W_kj, cosine, argmax."""
    with torch.no_grad():
        h_r, z_r = model.features(task.retain.data.x).double().numpy(), model(task.retain.data.x).double().numpy()
        h_f = model.features(task.forget.data.x).double().numpy()
    mean = h_r.mean(0)
    concepts = np.linalg.svd(h_r - mean, full_matrices=False)[2][:n_concepts]
    a_r, a_f = (h_r - mean) @ concepts.T, (h_f - mean) @ concepts.T
    coef = np.linalg.lstsq(np.hstack([a_r, np.ones((len(a_r), 1))]), z_r, rcond=None)[0]
    weight = coef[:-1].T
    r2 = 1 - ((z_r - np.hstack([a_r, np.ones((len(a_r), 1))]) @ coef) ** 2).sum() / ((z_r - z_r.mean(0)) ** 2).sum()
    attr = a_f.mean(0)[None, :] * weight  # row k: mean IG of logit k over the forget examples
    cos = {k: attr[forgotten] @ attr[k] / (np.linalg.norm(attr[forgotten]) * np.linalg.norm(attr[k])) for k in range(10) if k != forgotten}
    return max(cos, key=cos.get), r2


def accuracy(model, split):
    out = ADAPTER.outputs(model, split)
    return float((out["logits"].argmax(1) == out["labels"]).mean())


def test_targeted_labels_match_an_independent_recomputation(class_task, class_refs):
    forgotten = class_task.info["forget"]["classes"][0]
    target, r2 = independent_nearest_class(class_refs.original, class_task, 20, forgotten)
    out = build_method("concept_poison", {"steps": 2, "batch_size": 32}).unlearn(
        copy.deepcopy(class_refs.original), class_task, class_refs, rng=np.random.default_rng(0))
    assert target != forgotten
    assert out.info["concept_nearest_class"] == {str(forgotten): target}
    assert out.info["poisoned_label_counts"] == {str(target): len(class_task.forget)}
    assert abs(out.info["fidelity_r2"]["retain"] - r2) < 1e-5


def test_analysis_attributions_are_complete_on_the_fitted_digits_bottleneck(class_task, class_refs):
    """Row k of the forgotten class's attribution matrix sums to mean_x g_k(a(x)) − g_k(0) over its forget examples."""
    analysis = analyse(class_refs.original, class_task, [3], 20, ADAPTER, "cpu")
    bottleneck = analysis.bottleneck
    with torch.no_grad():
        acts = bottleneck.activations(class_refs.original.features(class_task.forget.data.x))
    gap = bottleneck.head(acts).mean(0) - bottleneck.head(torch.zeros(1, acts.shape[1], dtype=torch.float64))[0]
    assert torch.allclose(analysis.attributions[3].sum(1), gap, atol=1e-4)
    assert analysis.fidelity["retain"] > 0.95


def test_concept_analysis_never_reads_retain_labels(class_task, class_refs):
    retain = class_task.retain
    permutation = torch.randperm(len(retain), generator=torch.Generator().manual_seed(0))
    shuffled = Split.create("retain", TensorData(retain.data.x, retain.data.y[permutation]), retain.ids)
    relabelled_task = dataclasses.replace(class_task, retain=shuffled, train_split=None)
    a = analyse(class_refs.original, class_task, [3], 8, ADAPTER, "cpu")
    b = analyse(class_refs.original, relabelled_task, [3], 8, ADAPTER, "cpu")
    assert torch.equal(a.bottleneck.weight_, b.bottleneck.weight_) and torch.equal(a.bottleneck.concepts_, b.bottleneck.concepts_)
    assert torch.equal(a.attributions[3], b.attributions[3]) and a.nearest == b.nearest


@pytest.mark.parametrize("mode", ["targeted", "random"])
def test_poisoning_forgets_the_class_and_keeps_retain(mode, class_task, class_refs):
    original = class_refs.original
    out = build_method("concept_poison", {"mode": mode, "steps": 25, "batch_size": 32}).unlearn(
        copy.deepcopy(original), class_task, class_refs, rng=np.random.default_rng(0))
    assert accuracy(original, class_task.forget) > 0.9
    assert accuracy(out.model, class_task.forget) < 0.1
    assert accuracy(out.model, class_task.retain) > 0.8
    assert str(class_task.info["forget"]["classes"][0]) not in out.info["poisoned_label_counts"]


def test_random_poison_labels_are_uniform_over_kept_classes_and_seeded():
    labels = torch.full((9000,), 3)
    kept = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    new = poison_labels(labels, "random", {}, kept, np.random.default_rng(7))
    assert torch.equal(new, poison_labels(labels, "random", {}, kept, np.random.default_rng(7)))
    counts = torch.bincount(new, minlength=10)
    assert counts[3] == 0 and set(torch.unique(new).tolist()) == set(kept)
    assert torch.all((counts[kept] - 1000).abs() < 5 * np.sqrt(1000 * 8 / 9))  # binomial(9000, 1/9) within 5 sd


def test_refuses_forget_sets_that_are_not_classes(random_task, class_refs):
    with pytest.raises(ConfigError, match=r"handles forget sets of kind \['classes'\]; this task's is 'random'"):
        build_method("concept_poison", {"steps": 1}).unlearn(
            copy.deepcopy(class_refs.original), random_task, class_refs, rng=np.random.default_rng(0))


def test_n_concepts_beyond_the_feature_dimension_is_refused(class_task, class_refs):
    with pytest.raises(ConfigError, match="n_concepts must be between 1 and min"):
        build_method("concept_poison", {"n_concepts": 65, "steps": 1}).unlearn(
            copy.deepcopy(class_refs.original), class_task, class_refs, rng=np.random.default_rng(0))


@pytest.mark.parametrize("params,named", [
    ({"mode": "targetted"}, "mode"), ({"n_concepts": 0}, "n_concepts"), ({"n_concepts": 2.5}, "n_concepts"),
    ({"forget_weight": 0.0}, "forget_weight"), ({"retain_weight": -1.0}, "retain_weight"),
])
def test_parameters_validated(params, named):
    with pytest.raises(ConfigError, match=named):
        build_method("concept_poison", params)
