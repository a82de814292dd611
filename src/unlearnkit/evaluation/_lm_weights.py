"""Shared pieces of the weight-level language-model attacks (quantisation, soft_prompt, lm_hidden_probe): which tasks
they can read, and the per-model comparison with the retrained models."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..lm.text import TokenData
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
            keys: Callable[[str], bool] = lambda k: True) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """The finite mean of each per-item array of the model (``key``) and the mean over the retrained models of theirs
    (``retrained_<key>``); items without a score are counted per side (``n_excluded``, ``retrained_n_excluded``)."""
    values: dict[str, float] = {}
    excluded: dict[str, int] = {}
    ref_excluded: dict[str, int] = {}
    for key, v in own.items():
        if not keys(key):
            continue
        values[key] = finite_mean(v, who, key, excluded)
        values[f"retrained_{key}"] = float(np.mean([finite_mean(s[key], who, key, ref_excluded) for s in refs])) if refs else float("nan")
    return values, {"n_excluded": excluded, "retrained_n_excluded": ref_excluded}


__all__ = ["compare", "text_split_missing"]
