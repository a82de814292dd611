"""Corrective-unlearning evidence (Goel et al., TMLR 2024): accuracy on the clean test set, and how often the
manipulation still works (backdoor success, or inter-class confusion for label flips).

In corrective unlearning only part of the manipulated data is identified and forgotten, so the retrained references
(retrained without the identified part) may themselves still carry the manipulation. Both metrics therefore also
report, when given, the figures of models retrained without ALL manipulated data: pass them as
``refs.info["retrained_without_all_manipulated"]`` (a sequence of models; ``with_full_retrain`` trains them). When they
are not given, the result's ``info["retrained_without_all_manipulated"]`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from ..data.corrective import manipulation_info, manipulation_record
from ..errors import TaskError
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from .base import EvalContext, Metric, register_metric

FULL_RETRAIN_KEY = "retrained_without_all_manipulated"
NOT_PROVIDED = (f"not provided: put models retrained without every manipulated example in refs.info[{FULL_RETRAIN_KEY!r}] "
                "(unlearnkit.evaluation.corrective.with_full_retrain trains them)")
PAPER = "Goel, Prabhu, Torr, Kumaraguru, Sanyal, Corrective Machine Unlearning, TMLR 2024"


def full_retrain_models(refs: References) -> tuple[nn.Module, ...]:
    """The models retrained without all manipulated data that ``refs.info`` carries (empty if none)."""
    return tuple(getattr(refs, "info", {}).get(FULL_RETRAIN_KEY, ()) or ())


def reference_figures(refs: References, figure: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """``figure(model)`` averaged over the retrained references (identified part removed) and, if provided, over the
    models retrained without all manipulated data; plus an info entry saying which were available."""
    values: dict[str, float] = {}
    if refs.retrained_seeds:
        values["retrained_identified"] = float(np.mean([figure(m) for m in refs.retrained_seeds]))
    full = full_retrain_models(refs)
    if full:
        values["retrained_all"] = float(np.mean([figure(m) for m in full]))
    info = {FULL_RETRAIN_KEY: f"provided ({len(full)} model(s))" if full else NOT_PROVIDED}
    return values, info


@register_metric
@dataclass(frozen=True)
class CleanAccuracy(Metric):
    """Clean accuracy (Goel et al., Corrective Machine Unlearning, TMLR 2024): acc = mean over the clean test set of
    [argmax f(x) = y]; higher is better. The ``poisoned`` source never touches the test split, so for corrective tasks
    this is the utility the manipulation and its repair are judged by (on other tasks it is plain test accuracy).
    Values also give the same figure for the retrained references (``retrained_identified``) and, if provided, for
    models retrained without all manipulated data (``retrained_all``)."""

    floor: float = 0.01

    name = "clean_accuracy"
    higher_is_better = True
    paper = PAPER
    modalities = ("classifier",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        def accuracy(m: nn.Module) -> float:
            return float(ctx.outputs(m, "test")["correct"].mean())

        out = ctx.outputs(model, "test")
        values = {"clean_accuracy": accuracy(model)}
        ref_values, info = reference_figures(refs, accuracy)
        values.update(ref_values)
        info["corrective_task"] = manipulation_info(task) is not None
        evidence = (Evidence(key="clean_accuracy", value=values["clean_accuracy"], role="utility", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)),)
        return self.result(values, per_example={"correct.test": (out["ids"], out["correct"])}, evidence=evidence, info=info)


@register_metric
@dataclass(frozen=True)
class BackdoorSuccess(Metric):
    """Manipulation success (Goel et al., Corrective Machine Unlearning, TMLR 2024): the fraction of probe inputs the
    model classifies as the manipulation's target class. Backdoor: probe = clean test inputs of the non-target classes
    with the trigger stamped (attack success rate); label flip: probe = clean test inputs of the source class
    (inter-class confusion). success = mean over the probe of [argmax f(x) = target]; higher means the manipulation
    is remembered, so it is forget evidence compared with the retrain band.

    Values also give the figure for the retrained references (retrained without the identified part:
    ``retrained_identified``) and, if provided, for models retrained without all manipulated data (``retrained_all``).
    On a task without manipulated data (not built from the ``poisoned`` source) there is nothing to measure: the result
    has no values and no evidence, and ``info["not_applicable"]`` says why."""

    floor: float = 0.02

    name = "backdoor_success"
    higher_is_better = False
    paper = PAPER
    modalities = ("classifier",)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        setting = manipulation_info(task)
        if setting is None:
            return self.result({}, info={
                "not_applicable": "the task records no manipulated training data; build it from the 'poisoned' dataset "
                                  "(make_task copies the manipulation into task.info and task.probes)"})
        split = f"probe:{setting['evidence_probe']}"
        target = int(setting["target_class"])

        def hits(m: nn.Module) -> np.ndarray:
            return (ctx.outputs(m, split)["logits"].argmax(1) == target).astype(np.float64)

        def success(m: nn.Module) -> float:
            return float(hits(m).mean())

        values = {"backdoor_success": success(model)}
        ref_values, info = reference_figures(refs, success)
        values.update(ref_values)
        info.update({"kind": setting["kind"], "target_class": target, "probe": split, "n_probe": len(ctx.split(split))})
        evidence = (Evidence(key="backdoor_success", value=values["backdoor_success"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)),)
        per_example = {f"hit.{split}": (ctx.outputs(model, split)["ids"], hits(model))}
        return self.result(values, per_example=per_example, evidence=evidence, info=info)


def without_all_manipulated(task: Task) -> Split:
    """The training split minus every manipulated example (what a full corrective retrain trains on)."""
    record = manipulation_record(task.train)
    if record is None:
        raise TaskError(f"Task {task.name!r}: its training split records no manipulated examples (use the 'poisoned' dataset).")
    keep = np.flatnonzero(~np.isin(task.train.ids, record.ids))
    return task.train.subset(keep, "clean_train")


def with_full_retrain(refs: References, task: Task, seeds: Sequence[int], *, device: str = "cpu", progress: bool = False) -> Any:
    """``refs`` with ``info[FULL_RETRAIN_KEY]`` = models trained with ``refs.train_config`` from ``refs.model_factory``
    on the training data minus ALL manipulated examples, one per seed (use the retrained references' seeds,
    ``refs.info["retrain_seeds"]``, so the two retrains differ only in their data)."""
    from ..adapters import get_adapter
    from ..train import train_model
    from ..seeding import torch_seed

    config = refs.require("train_config", by="with_full_retrain")
    factory = refs.require("model_factory", by="with_full_retrain")
    clean = without_all_manipulated(task)
    models = []
    for seed in seeds:
        with torch_seed(int(seed)):
            model = factory()
        trained, _, _ = train_model(model, clean, config, adapter=get_adapter(task), seed=int(seed), device=device, progress=progress,
                                    desc=f"retrain without all manipulated (seed {seed})")
        models.append(trained)
    return replace(refs, info={**refs.info, FULL_RETRAIN_KEY: tuple(models)})


__all__ = ["FULL_RETRAIN_KEY", "BackdoorSuccess", "CleanAccuracy", "full_retrain_models", "with_full_retrain", "without_all_manipulated"]
