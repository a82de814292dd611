"""Every registered metric: builds with defaults, inherits from the Metric base alone and declares its own name and
paper, is deterministic, returns per-example arrays aligned to split ids, round-trips through JSON, and raises
MissingReference for each reference it needs. A metric that declares only name, paper and compute gets the base's
defaults."""

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest

from unlearnkit import METRICS
from unlearnkit.adapters import get_adapter
from unlearnkit.errors import MissingReference
from unlearnkit.evaluation import EvalContext, Metric, build_metric, evaluate
from unlearnkit.params import build_component
from unlearnkit.registry import ADAPTERS
from unlearnkit.types import MetricResult

NAMES = METRICS.names()
BATTERY = ["accuracy", "threshold_mia", "mia_efficacy", "relearn"]
BENCHMARKS = ("tofu", "muse", "wmdp")  # conftest fixtures <name>_task / <name>_refs from local copies of the hub data


def setting(name, request):
    """(task, refs) for the metric's first modality: fixtures ``<modality>_task`` / ``<modality>_refs``."""
    cls = METRICS.get(name)
    modality = (cls.modalities or ("classifier",))[0]
    if modality == "classifier" and "random" not in (cls.forget_kinds or ("random",)):
        return request.getfixturevalue("class_task"), request.getfixturevalue("class_refs")
    if modality == "causal_lm" and cls().why_not_applicable(request.getfixturevalue("causal_lm_task")) is not None:
        for bench in BENCHMARKS:  # a metric of a hub benchmark's own sets: that benchmark's local copy
            if cls().why_not_applicable(request.getfixturevalue(f"{bench}_task")) is None:
                return request.getfixturevalue(f"{bench}_task"), request.getfixturevalue(f"{bench}_refs")
    return request.getfixturevalue(f"{modality}_task"), request.getfixturevalue(f"{modality}_refs")


# language-model metrics run next to a cheap LM companion (the classifier list would pull in relearn, which
# tests/lm/test_lm_metrics.py covers on its own)
COMPANIONS = {"causal_lm": ["answer_prob"]}


def battery(name, modality):
    base = [n for n in COMPANIONS.get(modality, BATTERY)
            if modality in (METRICS.get(n).modalities or (modality,)) and "random" in (METRICS.get(n).forget_kinds or ("random",))]
    return [build_metric(n) for n in dict.fromkeys(base + [name])]


def run(name, task, refs, model):
    ctx = EvalContext(task, get_adapter(task))
    results, _ = evaluate(model, task, refs, battery(name, task.modality), ctx)
    return results[name]


@pytest.mark.parametrize("name", NAMES)
def test_defaults_and_declarations(name):
    cls = METRICS.get(name)
    cls()
    assert cls.__bases__ == (Metric,), "one level of inheritance: share behaviour through functions, not base classes"
    assert vars(cls)["name"] == name and vars(cls)["paper"] and cls.__doc__
    assert cls.higher_is_better in (True, False, None) and isinstance(cls.needs, frozenset) and cls.version
    assert cls.modalities is None or (cls.modalities and set(cls.modalities) <= set(ADAPTERS.names()))


@dataclass(frozen=True)
class Constant(Metric):
    """A metric that declares nothing but its name, paper and compute."""

    value: float = 1.0

    name = "constant"
    paper = "none"

    def compute(self, model, task, refs, ctx):
        return self.result({"value": self.value}, info={"task": task.name})


def test_a_metric_declares_only_what_differs_from_the_defaults(random_task, random_refs):
    assert (Constant.higher_is_better, Constant.needs, Constant.version) == (None, frozenset(), "1")
    assert (Constant.modalities, Constant.forget_kinds, Constant.noise_floor_skip) == (None, None, False)
    metric = build_component(Constant, {"value": "2"}, "metric 'constant'")  # type hints resolve through the base
    assert metric.why_not_applicable(random_task) is None
    results, missing = evaluate(random_refs.original, random_task, random_refs, [metric], EvalContext(random_task, get_adapter(random_task)))
    assert not missing and results["constant"] == MetricResult(name="constant", values={"value": 2.0}, info={"task": random_task.name})
    with pytest.raises(TypeError, match="abstract"):
        type("NoCompute", (Metric,), {"name": "no_compute", "paper": "none"})()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_json_roundtrip(name, request):
    random_task, random_refs = setting(name, request)
    a = run(name, random_task, random_refs, random_refs.original)
    b = run(name, random_task, random_refs, random_refs.original)
    assert a.values == b.values
    back = MetricResult.from_json(json.loads(json.dumps(a.to_json())))
    assert back.values == pytest.approx(dict(a.values), nan_ok=True)
    assert back.evidence == a.evidence
    for key, (ids, vals) in a.per_example.items():
        ids2, vals2 = back.per_example[key]
        assert np.array_equal(ids, ids2) and np.allclose(vals, vals2)


@pytest.mark.parametrize("name", NAMES)
def test_per_example_arrays_align_to_split_ids(name, request):
    random_task, random_refs = setting(name, request)
    result = run(name, random_task, random_refs, random_refs.original)
    all_ids = set(np.concatenate([s.ids for s in random_task.splits().values()]).tolist())
    for key, (ids, vals) in result.per_example.items():
        assert len(ids) == len(vals) and set(ids.tolist()) <= all_ids, key
        assert len(np.unique(ids)) == len(ids), f"{key}: duplicate ids"
        split = key.rsplit(".", 1)[-1]
        if split in random_task.splits():  # named after a split: its ids (all of them, or a sample) belong to it
            assert set(ids.tolist()) <= set(random_task.splits()[split].ids.tolist()), key


@pytest.mark.parametrize("name", NAMES)
def test_missing_reference_raises(name, request):
    random_task, random_refs = setting(name, request)
    cls = METRICS.get(name)
    for need in cls.needs:
        field = {"retrained": "retrained_seeds", "retrained_seeds": "retrained_seeds"}.get(need, need)
        value = () if field == "retrained_seeds" else None
        refs = dataclasses.replace(random_refs, **{field: value})
        ctx = EvalContext(random_task, get_adapter(random_task))
        ctx.battery = battery(name, random_task.modality)
        with pytest.raises(MissingReference, match=repr(need)):
            build_metric(name).compute(random_refs.original, random_task, refs, ctx)
