"""boundary_shrink: forget examples are relabelled to their nearest wrong class (one FGSM step) and fine-tuned toward it."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import state_equal
from tests.methods.test_gradient_methods import with_noise
from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.analysis.neighbours import nearest_wrong_class, neighbour_labels
from unlearnkit.errors import ConfigError
from unlearnkit.methods import build_method

ADAPTER = ClassifierAdapter(10)


def accuracy(model, split) -> float:
    return float((ADAPTER.outputs(model, split)["logits"].argmax(1) == split.labels).mean())


def independent_neighbour(model, x: torch.Tensor, y: int, bound: float) -> int:
    """One example at a time: FGSM step from the input gradient, then the best class other than y."""
    x = x.detach().clone().unsqueeze(0).requires_grad_(True)
    F.cross_entropy(model(x), torch.tensor([y])).backward()
    with torch.no_grad():
        logits = model(x + bound * x.grad.sign())[0]
    logits[y] = float("-inf")
    return int(logits.argmax())


def test_nearest_wrong_class_hand_computed():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 4.0], [1.0, 1.5, 9.0]])
    assert nearest_wrong_class(logits, torch.tensor([0, 1, 0])).tolist() == [1, 2, 2]


def test_neighbour_labels_are_wrong_and_match_an_independent_search(random_task, random_refs, original):
    before = copy.deepcopy(original)
    original.train()
    forget = random_task.forget
    table = neighbour_labels(original, forget, ADAPTER, 0.1, "cpu", batch_size=32)
    labels = table.lookup(torch.tensor(forget.ids))
    y = torch.as_tensor(forget.labels)
    assert not bool((labels == y).any())
    assert original.training and state_equal(original, before)  # mode restored, weights untouched
    model = copy.deepcopy(before).eval()
    expected = [independent_neighbour(model, forget.data.x[i], int(y[i]), 0.1) for i in range(len(forget))]
    assert labels.tolist() == expected
    # the search depends on the step: a large step moves many examples to another neighbour
    far = neighbour_labels(before, forget, ADAPTER, 2.0, "cpu", batch_size=32).lookup(torch.tensor(forget.ids))
    assert not torch.equal(far, labels)


def test_reads_no_retain_data(random_task, random_refs, original):
    method = build_method("boundary_shrink", {"steps": 8, "batch_size": 32})
    a = method.unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    b = method.unlearn(copy.deepcopy(original), with_noise(random_task, "retain"), random_refs, rng=np.random.default_rng(0))
    assert state_equal(a.model, b.model)
    assert not state_equal(a.model, original)


def test_forgets_a_class_toward_its_neighbours(class_task, class_refs):
    """Defaults on the digits one-class task: the forgotten class is predicted as its neighbour classes
    (not as itself), while the retain set is kept."""
    model = copy.deepcopy(class_refs.original)
    targets = neighbour_labels(model, class_task.forget, ADAPTER, 0.1, "cpu", 128).lookup(torch.tensor(class_task.forget.ids))
    out = build_method("boundary_shrink").unlearn(model, class_task, class_refs, rng=np.random.default_rng(0))
    assert accuracy(class_refs.original, class_task.forget) > 0.95
    assert accuracy(out.model, class_task.forget) < 0.1
    assert accuracy(out.model, class_task.retain) > 0.95
    predictions = torch.as_tensor(ADAPTER.outputs(out.model, class_task.forget)["logits"]).argmax(1)
    assert float((predictions == targets).float().mean()) > 0.6  # an arbitrary wrong class would match 1 in 9


def test_bound_validated():
    with pytest.raises(ConfigError, match="bound"):
        build_method("boundary_shrink", {"bound": 0.0})
