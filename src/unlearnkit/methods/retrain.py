"""retrain: train from scratch on the retain set with the original's recipe (the gold standard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

from ..adapters import get_adapter
from ..references import References
from ..train import train_model
from ..types import Mask, Task, Unlearned
from .base import ALL_FORGET_KINDS, register_method


@register_method
@dataclass(frozen=True)
class Retrain:
    """Exact unlearning by retraining on the retain set from a fresh initialisation (the reference every method is measured against).

    For language models the fresh model is the pretrained model (with fresh adapters): fine-tuning it on the retain
    profiles alone is the oracle."""

    name: ClassVar[str] = "retrain"
    kind: ClassVar[str] = "exact"
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "regression", "causal_lm")
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    needs: ClassVar[frozenset[str]] = frozenset({"train_config"})
    paper: ClassVar[str] = "Cao & Yang, Towards Making Systems Forget with Machine Unlearning, IEEE S&P 2015"
    version: ClassVar[str] = "1"  # bump when its numbers change

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned:
        config = refs.require("train_config", by="method 'retrain'")
        seed = int(rng.integers(0, 2**31 - 1))
        fresh = refs.fresh_model(seed, by="method 'retrain'")
        adapter = get_adapter(task)
        fresh, _, result = train_model(fresh, task.retain, config, adapter=adapter, seed=seed, device=device, progress=progress, desc="retrain")
        # the returned model is new, so every coordinate may differ from the input model
        model.load_state_dict(fresh.state_dict())
        return Unlearned(model, Mask.full(model), {"train": result.to_json(), "seed": seed})
