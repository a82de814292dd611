"""Every registered method: builds with defaults, is deterministic under a seed, leaves parameters
outside ``Unlearned.changed`` bit-identical, round-trips its parameters and info through JSON, raises
MissingReference for each reference it needs, documents its paper, and (classifiers) returns a model whose
penultimate features feature-level evidence can read."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from unlearnkit import METHODS
from unlearnkit.errors import ConfigError, MissingReference, ModelError
from unlearnkit.methods import build_method, method_params
from unlearnkit.params import param_names
from unlearnkit.references import References
from tests.conftest import state_equal

NAMES = METHODS.names()


def setting(name, request):
    """(task, refs, original copy) for the method's first modality: fixtures ``<modality>_task`` and
    ``<modality>_refs`` (the classifier ones are the digits random-10% task)."""
    cls = METHODS.get(name)
    modality = cls.modalities[0]
    if modality == "classifier" and "random" not in cls.forget_kinds:  # class-unlearning methods
        return request.getfixturevalue("class_task"), request.getfixturevalue("class_refs"), copy.deepcopy(request.getfixturevalue("class_refs").original)
    task = request.getfixturevalue(f"{modality}_task")
    refs = request.getfixturevalue(f"{modality}_refs")
    return task, refs, copy.deepcopy(refs.original)


def small(name):
    """Defaults, with the budget cut where a method has one (keeps the suite fast)."""
    return build_method(name, {"steps": 12, "batch_size": 32} if "steps" in param_names(METHODS.get(name)) else {})


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_document(name):
    cls = METHODS.get(name)
    method = cls()
    assert method.name == name and method.kind in {"gradient", "edit", "guard", "exact"}
    assert cls.__doc__ and cls.__doc__.strip().splitlines()[0], "one-line docstring citing the paper"
    assert cls.paper, "the paper the method comes from"
    assert cls.version, "a version that goes into every run key"
    assert cls.__module__.rsplit(".", 1)[-1] == name, "a method's file carries its registry name"
    assert cls.modalities, "the task modalities it supports"
    assert cls.forget_kinds and set(cls.forget_kinds) <= {"random", "classes", "ids", "corrupted", "profiles", "benchmark"}


def new_module(method, out, model) -> bool:
    """Whether an exact method returned a model of its own (a regime's served model: shards, adapters, an analytic head)
    instead of the input model: then nothing is required of the input model, and the checks hold for the new one."""
    return method.kind == "exact" and out.model is not model


def check_same_seed(m, task, refs, original):
    """Same seed, same result: for a new module too (its whole state, whatever its architecture)."""
    a = m.unlearn(copy.deepcopy(original), task, refs, rng=np.random.default_rng(11))
    b = m.unlearn(copy.deepcopy(original), task, refs, rng=np.random.default_rng(11))
    assert type(a.model) is type(b.model) and state_equal(a.model, b.model)
    if new_module(m, a, original):
        assert a.model is not b.model  # two runs, two models: the state equality above is not a model compared with itself


def check_outside_changed(m, task, refs, original):
    """Outside ``changed`` the output model is bit-identical to the input. For an exact method's new module there is no
    input to compare with: its mask must cover it (every parameter named, shapes matching) and its parameters be finite."""
    before = copy.deepcopy(original)
    out = m.unlearn(original, task, refs, rng=np.random.default_rng(0))
    out.changed.check_model(out.model)
    assert all(torch.isfinite(p).all() for p in out.model.parameters())
    if new_module(m, out, original):
        assert set(out.changed) == {n for n, _ in out.model.named_parameters()}
        return
    for (n, p), (_, q) in zip(out.model.named_parameters(), before.named_parameters()):
        assert torch.equal(p.detach()[~out.changed[n]], q.detach()[~out.changed[n]]), n


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name, request):
    random_task, random_refs, original = setting(name, request)
    check_same_seed(small(name), random_task, random_refs, original)


@pytest.mark.parametrize("name", NAMES)
def test_outside_changed_is_bit_identical(name, request):
    random_task, random_refs, original = setting(name, request)
    check_outside_changed(small(name), random_task, random_refs, original)


@pytest.mark.parametrize("name", NAMES)
def test_params_and_info_roundtrip_json(name, request):
    random_task, random_refs, original = setting(name, request)
    m = small(name)
    params = json.loads(json.dumps(method_params(m)))
    assert build_method(name, params) == m
    out = m.unlearn(original, random_task, random_refs, rng=np.random.default_rng(0))
    assert json.loads(json.dumps(out.info)) == out.info


@pytest.mark.parametrize("name", NAMES)
def test_missing_reference_raises(name, request):
    random_task, random_refs, original = setting(name, request)
    cls = METHODS.get(name)
    for need in cls.needs:
        refs = dataclasses.replace(random_refs, **{need if need != "retrained" else "retrained_seeds": None if need != "retrained" else ()})
        with pytest.raises(MissingReference, match=repr(need)):
            small(name).unlearn(copy.deepcopy(original), random_task, refs, rng=np.random.default_rng(0))
    if not cls.needs:  # works with nothing but the model
        small(name).unlearn(copy.deepcopy(original), random_task, References(), rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "retrain"])
def test_rejects_model_with_wrong_output_size(name, request):
    from unlearnkit.models import build_model

    random_task, random_refs, _ = setting(name, request)
    if random_task.modality != "classifier":
        pytest.skip("output-size check of classifiers")
    wrong = build_model("mlp", (64,), 5, hidden=(8,))
    with pytest.raises(ModelError, match=r"task has 10 classes"):
        small(name).unlearn(wrong, random_task, random_refs, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "retrain"])
def test_rejects_nan_weights(name, request):
    random_task, random_refs, original = setting(name, request)
    with torch.no_grad():
        next(original.parameters())[0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        small(name).unlearn(original, random_task, random_refs, rng=np.random.default_rng(0))


WHOLE_CLASS_ONLY = [n for n in NAMES if getattr(METHODS.get(n), "whole_classes_only", False)]


def test_class_unlearning_methods_are_declared():
    assert {"trw", "concept_poison"} <= set(WHOLE_CLASS_ONLY)


@pytest.mark.parametrize("name", WHOLE_CLASS_ONLY)
def test_whole_class_methods_refuse_part_of_a_class(name, digits, class_refs):
    """Half of class 3 forgotten, half retained: a class-unlearning method would erase the class the retain set keeps.
    The grid is told why (so it skips the cell) and a direct call fails before any training."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.methods.base import method_not_applicable

    task = make_task("digits", digits.train, digits.test, ForgetSpec("classes", classes=(3,), fraction=0.5), np.random.default_rng(0),
                     n_classes=10)
    assert task.whole_classes() is None and (task.retain.labels == 3).any()
    why = method_not_applicable(build_method(name), task)
    assert why is not None and "only 50% of the examples of classes [3]" in why
    model = copy.deepcopy(class_refs.original)
    with pytest.raises(ConfigError, match=r"unlearns whole classes; this task forgets only 50%"):
        small(name).unlearn(model, task, class_refs, rng=np.random.default_rng(0))
    assert state_equal(model, class_refs.original)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).modalities[0] == "classifier"])
def test_a_classifier_method_returns_a_model_with_features(name, request):
    """hidden_probe (strong battery) reads ``features(x)`` of whatever model a method returns; an exact method's own module
    (an analytic head, shards, adapters) must offer it too (ACU's did not, and benchmarks/attacks.py stopped on it)."""
    task, refs, original = setting(name, request)
    out = small(name).unlearn(original, task, refs, rng=np.random.default_rng(0))
    with torch.no_grad():
        f = out.model.features(task.forget.data.x[:5])
    assert f.ndim == 2 and f.shape[0] == 5 and f.shape[1] > 0 and torch.isfinite(f).all()
