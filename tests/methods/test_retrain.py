import copy

import numpy as np
import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import MissingReference
from unlearnkit.methods import build_method
from unlearnkit.references import References
from unlearnkit.train import train_model
from tests.conftest import state_equal


def test_retrain_equals_training_from_scratch_on_retain(random_task, random_refs, original):
    """Defining behaviour: the result is exactly a fresh model trained on the retain set only."""
    rng = np.random.default_rng(3)
    seed = int(np.random.default_rng(3).integers(0, 2**31 - 1))
    out = build_method("retrain").unlearn(original, random_task, random_refs, rng=rng)
    fresh = random_refs.fresh_model(seed, by="test")
    expected, _, _ = train_model(fresh, random_task.retain, random_refs.train_config, adapter=get_adapter(random_task), seed=seed)
    assert state_equal(out.model, expected)


def test_retrain_never_reads_the_forget_set(random_task, random_refs, original):
    import dataclasses

    from unlearnkit.types import Split, TensorData

    noisy = Split.create("forget", TensorData(random_task.forget.data.x * 0 + 7.0, random_task.forget.data.y), random_task.forget.ids)
    task2 = dataclasses.replace(random_task, forget=noisy, train_split=None)
    a = build_method("retrain").unlearn(copy.deepcopy(original), random_task, random_refs, rng=np.random.default_rng(0))
    b = build_method("retrain").unlearn(copy.deepcopy(original), task2, random_refs, rng=np.random.default_rng(0))
    assert state_equal(a.model, b.model)


def test_retrain_needs_the_training_recipe(random_task, original):
    with pytest.raises(MissingReference, match="'train_config'"):
        build_method("retrain").unlearn(original, random_task, References(original=original), rng=np.random.default_rng(0))
