"""The validation forget set a tuning study searches on: drawn from the real task's retain data only, the same way as
the real forget set, so no trial ever sees (trains on, unlearns or evaluates) an example of the forget set the tuned
setting is judged on."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..data.forget import ForgetSpec, select_forget, task_from_ids
from ..errors import ConfigError, TaskError
from ..types import Task

PROTOCOL = (
    "Validation protocol (no peeking): the pool is the real task's retain set — the real forget set is never in it. From the "
    "pool a validation forget set is drawn the way the real one was: a random forget set of the same size (for a "
    "forget set of listed ids too: a random one of the same size stands in); for a class forget set, as many other "
    "classes (drawn at random among those left in the pool, with the same fraction); for profiles, the same fraction of "
    "the pool's profiles. A validation 'original' is trained on the whole pool and validation retrains on the pool "
    "without the validation forget set (same model, recipe and seeds as the real references; cached in the store). "
    "Every trial unlearns and is judged on this validation task only; the chosen setting is then run once on the real "
    "forget set, against the real references.")


def validation_spec(spec: ForgetSpec, real: Task, rng: np.random.Generator) -> ForgetSpec:
    """The spec of the validation forget set for the real task ``real`` chosen by ``spec``; a ConfigError when none can
    be drawn from its retain data (too little of it, no other class left, a kind that cannot be redrawn)."""
    pool = real.retain
    k = len(real.forget)
    if spec.kind in ("random", "ids"):
        if len(pool) - k < k:
            raise ConfigError(f"Cannot draw a validation forget set of {k} examples (the real forget set's size) from the "
                              f"{len(pool)} retained examples: it would leave only {len(pool) - k} to retain, fewer than it "
                              "forgets. Tuning needs retain data at least twice the forget set's size.")
        return ForgetSpec("random", count=k)
    if spec.kind == "classes":
        labels = pool.labels
        if labels is None:
            raise TaskError("Cannot draw a validation class forget set: the retain data has no labels.")
        candidates = sorted(set(np.unique(labels).tolist()) - set(spec.classes))
        if len(candidates) <= len(spec.classes):
            raise ConfigError(f"Cannot draw a validation class forget set: the retain data holds {len(candidates)} class(es) other "
                              f"than the forgotten {list(spec.classes)}, and forgetting {len(spec.classes)} of them would leave "
                              "no class to retain.")
        chosen = tuple(sorted(int(c) for c in rng.choice(candidates, size=len(spec.classes), replace=False)))
        return ForgetSpec("classes", classes=chosen, fraction=spec.fraction)
    if spec.kind == "profiles" and spec.fraction is not None:
        return ForgetSpec("profiles", fraction=spec.fraction)
    raise ConfigError(f"Cannot draw a validation forget set like a {spec.label()!r} forget set from the retain data (kinds that "
                      "can: random, classes, ids, profiles with a fraction); tune on such a task's random or class setting.")


def validation_task(real: Task, spec: ForgetSpec, test: Any, rng: np.random.Generator, *, info: dict[str, Any]) -> Task:
    """The validation task of ``real``: its training data is ``real.retain`` (the pool), its forget set drawn by
    ``validation_spec``, its test split ``test`` (held-out data, never a training example)."""
    vspec = validation_spec(spec, real, rng)
    pool = dataclasses.replace(real.retain, name="train")
    try:
        ids = select_forget(pool, vspec, rng, real.n_classes)
    except ConfigError as exc:
        raise ConfigError(f"Cannot draw the validation forget set from the retain data: {exc}") from None
    task = task_from_ids(f"{real.name}-validation", pool, test, ids, forget_info=vspec.to_dict(),
                         forget_label=f"validation {vspec.label()} (for {spec.label()})", n_classes=real.n_classes,
                         info={**info, "validation_of": spec.to_dict()}, modality=real.modality)
    leaked = np.intersect1d(task.train.ids, real.forget.ids)
    assert len(leaked) == 0, leaked[:5]  # the pool is the retain set: by construction
    return task
