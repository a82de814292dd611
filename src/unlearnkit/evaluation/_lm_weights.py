"""Shared pieces of the weight-level language-model attacks (quantisation, soft_prompt, lm_hidden_probe): which tasks
they can read, and the per-model comparison with the retrained models."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import torch
from torch import nn

from ..lm.text import TokenData
from ..references import References
from ..types import Task
from ._lm import finite_mean


def text_split_missing(task: Task, fields: tuple[str, ...] = ()) -> str | None:
    """Why ``task``'s forget and retain splits are not tokenised question-answer text with the record ``fields``, or None."""
    for split in (task.forget, task.retain):
        data = split.data
        if not isinstance(data, TokenData) or not data.records:
            return f"needs tokenised question-answer text; the {split.name} split is {type(data).__name__}"
        lacking = [f for f in fields if not hasattr(data.records[0], f)]
        if lacking:
            return (f"needs records with the field(s) {', '.join(lacking)} (e.g. the profiles data); the {split.name} records are "
                    f"{type(data.records[0]).__name__}")
    return None


def compare(who: str, own: Mapping[str, np.ndarray], refs: list[Mapping[str, np.ndarray]],
            keys: Callable[[str], bool] = lambda k: True, prefix: str = "retrained_") -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """The finite mean of each per-item array of the model (``key``) and the mean over the reference models of theirs
    (``<prefix><key>``: the retrained models, or ``unknown_`` for the original on the facts it does not know); items
    without a score are counted per side (``n_excluded``, ``<prefix>n_excluded``)."""
    values: dict[str, float] = {}
    excluded: dict[str, int] = {}
    ref_excluded: dict[str, int] = {}
    for key, v in own.items():
        if not keys(key):
            continue
        values[key] = finite_mean(v, who, key, excluded)
        values[f"{prefix}{key}"] = float(np.mean([finite_mean(s[key], who, key, ref_excluded) for s in refs])) if refs else float("nan")
    return values, {"n_excluded": excluded, f"{prefix}n_excluded": ref_excluded}


def unknown_view(task: Task, who: str) -> Task:
    """``task`` with the facts the model does not know (its test split) in the forget slot: what a weight-level attack
    runs the original model on when no retrained oracle exists (real knowledge), so its value is the level of a model
    that never learned the facts. A TaskError without such facts."""
    import dataclasses

    from ..errors import TaskError

    if task.test is None or len(task.test) == 0:
        raise TaskError(f"{who}: a task without a retrained oracle needs a test split of facts the model does not know.")
    return dataclasses.replace(task, forget=task.test, test=task.forget, holdout=None, train_split=None, public_ids=None)


def reference_scores(who: str, scores: Callable[[nn.Module, Task], Mapping[str, np.ndarray]], task: Task, refs: References
                     ) -> tuple[list[Mapping[str, np.ndarray]], str, dict[str, Any]]:
    """The reference side of a weight-level attack: ``scores`` of each retrained model on ``task``; or, on a task without a
    retrained oracle (``task.info["oracle"] is False``, no retrained models), of the original model on the facts it does
    not know (``unknown_view``). Returns (their scores, the values' prefix ``retrained_`` / ``unknown_``, info)."""
    if task.info.get("oracle") is False and refs.retrained is None:
        original = refs.require("original", by=f"metric {who!r} on a task without a retrained oracle")
        return ([scores(original, unknown_view(task, who))], "unknown_",
                {"against": "the original model on the facts it does not know (test split): the same attack, the same budget"})
    refs.require("retrained", by=f"metric {who!r}")
    return [scores(r, task) for r in refs.retrained_seeds], "retrained_", {"n_retrained": len(refs.retrained_seeds)}


def gain_level(values: Mapping[str, float], attacked: str, plain: str) -> float:
    """A weight-level attack's no-oracle level: the model's own ``plain`` value plus what the attack adds on the facts the
    original does not know (``unknown_<attacked>`` − ``unknown_<plain>``): recovery is adding more than that, so a method
    that shifted every answer's probability is not read as recovering."""
    return values[plain] + values[f"unknown_{attacked}"] - values[f"unknown_{plain}"]


@torch.no_grad()
def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a linear layer applies, as a detached float64 copy: for a PEFT LoRA layer, its base weight plus the
    delta of every active, not yet merged adapter (what ``merge_and_unload`` would write), without copying the model."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    w = base.weight.detach().double().clone()
    if base is not module and not getattr(module, "merged", False) and not getattr(module, "disable_adapters", False):
        for name in module.active_adapters:
            if name in getattr(module, "lora_A", {}):
                w += module.get_delta_weight(name).detach().double()
    return w


__all__ = ["compare", "effective_weight", "gain_level", "reference_scores", "text_split_missing", "unknown_view"]
