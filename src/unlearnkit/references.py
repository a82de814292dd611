"""Reference models: the original (trained on forget ∪ retain) and retrained models (retain only, several seeds),
and what methods and metrics need to know about how they were made. Built and cached by
``unlearnkit.runs.references.build_references``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import MissingReference
from .models import reset_parameters
from .seeding import torch_seed
from .train import TrainConfig

HOW_TO = {
    "original": "pass References(original=model), or build them with unlearnkit.build_references(task, ...)",
    "retrained": "pass References(retrained_seeds=(model, ...)), or build_references(task, retrain_seeds=3, ...)",
    "retrained_seeds": "pass References(retrained_seeds=(...)) with at least two models, or build_references(task, retrain_seeds=3, ...)",
    "train_config": "pass References(train_config=TrainConfig(...)) describing how the original was trained",
    "model_factory": "pass References(model_factory=callable returning a fresh, untrained model)",
    "shadows": "build shadow models for the task (see the shadow-model attacks)",
}


@dataclass
class References:
    """Models and facts that methods and metrics compare against; ``require`` names what is missing."""

    original: nn.Module | None = None
    retrained_seeds: tuple[nn.Module, ...] = ()
    train_config: TrainConfig | None = None
    model_factory: Callable[[], nn.Module] | None = None
    shadows: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def retrained(self) -> nn.Module | None:
        return self.retrained_seeds[0] if self.retrained_seeds else None

    def require(self, name: str, by: str) -> Any:
        """The reference ``name``; raises MissingReference naming who needed it and how to provide it."""
        value = {
            "original": self.original,
            "retrained": self.retrained,
            "retrained_seeds": self.retrained_seeds if len(self.retrained_seeds) >= 2 else None,
            "train_config": self.train_config,
            "model_factory": self.model_factory,
            "shadows": self.shadows,
        }.get(name)
        if value is None:
            raise MissingReference(f"{by} needs the {name!r} reference, which was not provided: {HOW_TO.get(name, '')}.")
        return value

    def fresh_model(self, seed: int, by: str) -> nn.Module:
        """A freshly initialised model of the original's architecture (seeded)."""
        if self.model_factory is not None:
            with torch_seed(seed):
                return self.model_factory()
        original = self.require("original", by)
        return reset_parameters(copy.deepcopy(original), seed)
