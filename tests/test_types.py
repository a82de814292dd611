import numpy as np
import pytest
import torch

from unlearnkit.errors import EmptySelection, TaskError
from unlearnkit.types import Mask, Split, Task, TensorData


def split(n, start=0, name="s", classes=3):
    x = torch.randn(n, 4)
    y = torch.arange(n) % classes
    return Split.create(name, TensorData(x, y), np.arange(start, start + n))


def test_split_rejects_duplicates_and_mismatch():
    with pytest.raises(TaskError, match="duplicate ids"):
        Split.create("s", TensorData(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), [1, 1, 2])
    with pytest.raises(TaskError, match="mismatched shapes"):
        Split.create("s", TensorData(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), [1, 2])
    with pytest.raises(TaskError, match="Mismatched shapes"):
        TensorData(torch.zeros(3, 2), torch.zeros(4))


def test_fingerprints_stable_and_content_sensitive():
    a = split(10)
    b = Split.create("s", TensorData(a.data.x.clone(), a.data.y.clone()), a.ids)
    assert a.fingerprint == b.fingerprint
    c = Split.create("s", TensorData(a.data.x + 1, a.data.y), a.ids)
    assert c.fingerprint != a.fingerprint
    assert a.subset(np.arange(5)).fingerprint != a.fingerprint


def test_task_from_forget_ids_and_errors():
    train, test = split(20, name="train"), split(10, start=100, name="test")
    task = Task.from_forget_ids("t", train, test, [0, 5, 7], n_classes=3)
    assert sorted(task.forget.ids) == [0, 5, 7] and len(task.retain) == 17
    assert set(task.forget.ids).isdisjoint(task.retain.ids)
    with pytest.raises(TaskError, match=r"not in split 'train'.*\[999\]"):
        Task.from_forget_ids("t", train, test, [0, 999])
    with pytest.raises(TaskError, match="duplicate forget ids"):
        Task.from_forget_ids("t", train, test, [1, 1])
    with pytest.raises(EmptySelection, match="forget set is empty"):
        Task.from_forget_ids("t", train, test, [])
    with pytest.raises(EmptySelection, match="whole training set"):
        Task.from_forget_ids("t", train, test, np.arange(20))


def test_task_rejects_overlap_and_bad_labels():
    train = split(20)
    overlapping_test = split(10, start=15, name="test")
    with pytest.raises(TaskError, match="overlap"):
        Task.from_forget_ids("t", train, overlapping_test, [0, 1])
    with pytest.raises(TaskError, match=r"labels outside \[0, 2\)"):
        Task.from_forget_ids("t", train, split(10, start=100, name="test"), [0, 1], n_classes=2)
    f, r = split(5), split(5, start=3, name="retain")
    with pytest.raises(TaskError, match="'s' and 'retain' overlap"):
        Task("t", f, r, split(3, start=50, name="test"))


def test_task_fingerprint_changes_with_forget_set():
    train, test = split(20), split(10, start=100, name="test")
    a = Task.from_forget_ids("t", train, test, [0, 1])
    b = Task.from_forget_ids("t", train, test, [0, 2])
    assert a.fingerprint != b.fingerprint
    assert a.train.fingerprint == b.train.fingerprint  # the original model is shared across forget sets


def test_mask_algebra():
    a = Mask({"w": torch.tensor([True, False, True])})
    b = Mask({"w": torch.tensor([True, True, False])})
    assert (a & b)["w"].tolist() == [True, False, False]
    assert (a | b)["w"].tolist() == [True, True, True]
    assert (~a)["w"].tolist() == [False, True, False]
    assert a.count() == 2 and a.total() == 3
    with pytest.raises(EmptySelection):
        Mask({"w": torch.zeros(3, dtype=torch.bool)}).require_nonempty("test")
