"""The README's Python flow: own tensors or torch Dataset, own nn.Module, a method, assess — no YAML."""

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

import unlearnkit as uk


class MyNet(nn.Module):
    """A user model with no ``features`` method and its own layer names."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 10))

    def forward(self, x):
        return self.net(x)


def test_readme_flow(digits, tmp_path):
    x_train, y_train = digits.train.data.x, digits.train.data.y
    train = uk.Split.create("train", uk.TensorData.from_dataset(TensorDataset(x_train, y_train)))
    n = len(train)
    test = uk.Split.create("test", uk.TensorData(digits.test.data.x, digits.test.data.y), ids=np.arange(n, n + len(digits.test)))
    forget_ids = np.flatnonzero(y_train.numpy() == 7)
    task = uk.Task.from_forget_ids("my-task", train, test, forget_ids, n_classes=10)

    refs = uk.build_references(task, MyNet, uk.TrainConfig(epochs=30, batch_size=64, optimizer="adam", lr=3e-3, schedule="cosine"),
                               retrain_seeds=3, store=uk.Store(tmp_path))
    out = uk.build_method("salun", {"epochs": 2, "batch_size": 64}).unlearn(copy.deepcopy(refs.original), task, refs,
                                                                           rng=np.random.default_rng(0))
    result = uk.assess(out.model, task, refs)
    assert result.verdict.label in {"removed", "suppressed", "not forgotten", "over-forgotten"}
    assert result.summary()["accuracy.forget"] < 0.2
    # the references were cached: building them again trains nothing
    with uk.CostMeter() as meter:
        uk.build_references(task, MyNet, refs.train_config, retrain_seeds=3, store=uk.Store(tmp_path))
    assert meter.steps == 0
    assert uk.assess(refs.original, task, refs).verdict.label == "not forgotten"


def test_from_dataset_rejects_bad_items():
    import pytest

    with pytest.raises(uk.TaskError, match="not an \\(x, y\\) pair"):
        uk.TensorData.from_dataset([torch.zeros(3)])


def test_readme_exact_deletion_flow(random_task, random_refs):
    """The README's exact-unlearning snippet: build a SISA model, delete two ids through ``exact.delete``, read the receipt."""
    import pytest

    from unlearnkit.exact import delete

    task = random_task
    model = uk.build_method("sisa", {"shards": 4, "slices": 2}).build(task, random_refs, seed=0, device="cpu", progress=False)
    ids = [int(i) for i in task.forget.ids[:2]]
    receipt = delete(model, ids, train_fingerprint=task.train.fingerprint)
    got = receipt.to_json()
    assert got["ids"] == sorted(ids) and got["guarantee"] == "exact" and got["live_after"] == len(task.train) - 2
    assert model.describe()["requests"] == 1 and model.describe()["regime"] == "sisa"
    with pytest.raises(uk.TaskError, match="already deleted"):
        delete(model, ids, train_fingerprint=task.train.fingerprint)
