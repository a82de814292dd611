import numpy as np
import pytest
import torch

from unlearnkit.adapters import ClassifierAdapter
from unlearnkit.objectives import NLL, Ascent, KLToReference, RandomLabels, ReferenceLogits, random_wrong_labels, weighted
from unlearnkit.train import StepContext


def ctx(extra=None):
    return StepContext(0, 1, torch.Generator().manual_seed(0), ClassifierAdapter(10), extra or {})


def batch_of(split, n=64):
    return {split.name: next(split.batches(n))}


def test_random_wrong_labels_never_true_and_cover_others():
    y = torch.randint(0, 10, (5000,), generator=torch.Generator().manual_seed(1))
    z = random_wrong_labels(y, 10, torch.Generator().manual_seed(2))
    assert not (z == y).any()
    assert set(z.tolist()) == set(range(10))


def test_ascent_is_negated_nll(original, random_task):
    b = batch_of(random_task.forget)
    nll = NLL("forget")(original, b, ctx()).value
    asc = Ascent("forget")(original, b, ctx()).value
    assert torch.allclose(asc, -nll)


def test_ascent_unbounded_where_nll_is_not():
    """Gradient ascent's loss has no lower bound: scaling the logits drives it to −∞."""
    model = torch.nn.Linear(2, 2)
    b = {"forget": {"x": torch.tensor([[1.0, 0.0]]), "y": torch.tensor([0]), "ids": torch.tensor([0])}}
    values = []
    for scale in (1, 10, 100, 1000):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[-scale, 0.0], [scale, 0.0]]))
            model.bias.zero_()
        values.append(float(Ascent("forget")(model, b, ctx()).value.detach()))
    assert values == sorted(values, reverse=True) and values[-1] < -1000


def test_weighted_sums_terms(original, random_task):
    b = {**batch_of(random_task.forget), **batch_of(random_task.retain)}
    obj = weighted((1.0, Ascent("forget")), (0.5, NLL("retain")))
    expected = Ascent("forget")(original, b, ctx()).value + 0.5 * NLL("retain")(original, b, ctx()).value
    assert torch.allclose(obj(original, b, ctx()).value, expected)
    assert obj.streams == ("forget", "retain")
    assert weighted((1.0, Ascent("forget")), (0.0, NLL("retain"))).streams == ("forget",)


def test_random_labels_objective_uses_wrong_labels(original, random_task):
    b = batch_of(random_task.forget)
    loss = RandomLabels(10, "forget")(original, b, ctx()).value
    assert loss > NLL("forget")(original, b, ctx()).value  # the original fits the true labels, not random ones


def test_kl_to_reference_is_zero_against_itself(original, random_task):
    out = ClassifierAdapter(10).outputs(original, random_task.retain)
    table = ReferenceLogits(random_task.retain.ids, torch.as_tensor(out["logits"]))
    original.eval()
    b = batch_of(random_task.retain)
    kl = KLToReference("retain")(original, b, ctx({"reference_logits": table})).value
    assert abs(float(kl.detach())) < 1e-5
    assert np.isclose(float(KLToReference("retain", sign=-1.0)(original, b, ctx({"reference_logits": table})).value), 0, atol=1e-5)


def test_table_targets_equal_nll_on_the_relabelled_batch(original, random_task):
    """Training toward a label table is training on the relabelled data: same loss, same gradient; a missing table is named."""
    from unlearnkit.errors import ConfigError
    from unlearnkit.objectives.classifier import LabelTable, TableTargets

    split = random_task.forget
    new = (torch.as_tensor(split.labels) + 1) % 10
    b = batch_of(split)
    relabelled = {"forget": {**b["forget"], "y": new[torch.as_tensor(np.searchsorted(split.ids, b["forget"]["ids"].numpy()))]}}
    assert not torch.equal(relabelled["forget"]["y"], b["forget"]["y"])
    value = TableTargets("new_labels", "forget")(original, b, ctx({"new_labels": LabelTable(split.ids, new)})).value
    assert torch.equal(value, NLL("forget")(original, relabelled, ctx()).value)
    with pytest.raises(ConfigError, match=r"table_targets\('new_labels'\) needs ctx.extra\['new_labels'\]"):
        TableTargets("new_labels")(original, b, ctx())
