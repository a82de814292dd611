"""The checks every exact regime shares (``exact.base``): each bad request is a clear error and changes nothing.

``_Counts`` is a test double of a regime whose "model" is the per-class count of its live examples, so what a request
changed can be read off exactly."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit import Split, TensorData
from unlearnkit.errors import ConfigError, EmptySelection, RequestRefused, TaskError
from unlearnkit.exact import GUARANTEES, Backbone, ExactModel, delete, ids_fingerprint, require_exact


class _Counts(ExactModel):
    regime: ClassVar[str] = "counts"
    guarantee: ClassVar[str] = "exact"

    def __init__(self, data: Split, backbone: Backbone | None = None) -> None:
        super().__init__(data, backbone=backbone)
        self.register_buffer("counts", torch.bincount(data.data.y, minlength=3).double())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(x), -1).float()

    def _delete(self, ids, *, progress):
        labels = self.data.data.y[torch.as_tensor(self.data.positions_of(ids))]
        self.counts -= torch.bincount(labels, minlength=3).double()
        return {"rows": len(ids)}


def _split(n: int = 12, start: int = 100) -> Split:
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return Split.create("train", TensorData(x, torch.arange(n) % 3), np.arange(start, start + n))


def _snapshot(m: _Counts):
    return m.counts.clone(), m.live_ids().copy(), len(m.history)


@pytest.fixture()
def model():
    return _Counts(_split(), Backbone("trained on a public split of 2 examples", "fp", np.array([100, 101])))


@pytest.mark.parametrize("ids, error, match", [
    ([], EmptySelection, "request is empty"),
    ([[102, 103]], TaskError, "flat list of integers"),
    ([102.0], TaskError, "flat list of integers"),
    (["102"], TaskError, "flat list of integers"),
    ([102, 102], TaskError, r"repeats ids, e.g. \[102\]"),
    ([102, 5], TaskError, r"1 id\(s\) of the request were never in this counts model's training data .* e.g. \[5\]"),
    ([101, 102], RequestRefused, r"1 id\(s\) of the request are in the data the frozen backbone was trained on .* e.g. \[101\]"),
])
def test_bad_requests_are_refused_and_change_nothing(model, ids, error, match):
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        model.delete(ids)
    after = _snapshot(model)
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_already_deleted_and_other_task_are_refused(model):
    receipt = model.delete([104, 105])
    assert receipt.ids == (104, 105) and receipt.live_after == 10 and receipt.guarantee == "exact"
    assert receipt.live_fingerprint == ids_fingerprint(model.live_ids()) and receipt.to_json()["n"] == 2
    assert model.counts.tolist() == [4.0, 3.0, 3.0]  # ids 104 (class 1) and 105 (class 2) gone, of 4 per class
    before = _snapshot(model)
    with pytest.raises(TaskError, match=r"1 id\(s\) of the request were already deleted, e.g. \[105\]"):
        model.delete([105, 106])
    with pytest.raises(TaskError, match="a different task or dataset"):
        model.delete([106], train_fingerprint=_split(start=0).fingerprint)
    assert torch.equal(before[0], model.counts) and len(model.history) == 1
    model.delete([106], train_fingerprint=model.train_fingerprint)  # the right task's fingerprint is accepted


def test_exact_only_deletion_refuses_a_model_trained_the_usual_way(model):
    with pytest.raises(ConfigError, match="needs a model trained by an exact-unlearning regime .* got a Linear"):
        delete(nn.Linear(1, 3), [102])
    with pytest.raises(ConfigError, match="got a Linear"):
        require_exact(nn.Linear(1, 3), "the ledger")
    assert delete(model, [102]).ids == (102,) and require_exact(model, "x") is model


def test_additions_are_refused_by_regimes_without_them_and_checked_first(model):
    with pytest.raises(ConfigError, match="A counts model does not take additions"):
        model.add(_split(2, start=500))
    with pytest.raises(TaskError, match=r"2 id\(s\) of the addition are already in this model's data"):
        model.add(_split(2, start=100))
    with pytest.raises(EmptySelection, match="addition request is empty"):
        model.add(_split(0, start=500))
    assert len(model.data) == 12 and len(model.history) == 0


def test_describe_states_the_guarantee_and_the_backbone(model):
    d = model.describe()
    assert d["statement"] == GUARANTEES["exact"] and d["live"] == 12 and d["backbone"]["n_protected"] == 2
    assert d["backbone"]["protected_fingerprint"] == ids_fingerprint([101, 100])  # order-free
    assert d["train_fingerprint"] == _split().fingerprint


def test_a_regime_without_a_deletion_cannot_be_built():
    class _NoDelete(ExactModel):
        regime: ClassVar[str] = "none"
        guarantee: ClassVar[str] = "exact"

    with pytest.raises(TypeError, match="abstract"):
        _NoDelete(_split())
