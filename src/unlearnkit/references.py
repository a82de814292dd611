"""Reference models: the original (trained on forget ∪ retain) and retrained models (retain only, several seeds),
and what methods and metrics need to know about how they were made. Built and cached by
``unlearnkit.runs.references.build_references``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import ConfigError, MissingReference
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


def check_retrain_seeds(value: Any, *, minimum: int = 1, why: str = "") -> int:
    """The number of retrained reference models, a whole number >= ``minimum``; a ConfigError naming the value (and
    ``why`` the minimum holds) otherwise. The one check behind experiment files (minimum 2, for the verdict's band) and
    ``build_references`` (minimum 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"references.retrain_seeds must be a whole number >= {minimum}, got {value!r}{why}.")
    return value


def check_seed_list(seeds: Any, where: str) -> list[int]:
    """Explicit seeds: a non-empty sequence of distinct integers."""
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"{where}: give a whole number or a non-empty list of distinct integer seeds, got {seeds!r}.")
    return out


def checked_model(factory: Callable[[], Any]) -> nn.Module:
    """One model from ``factory``, which must return a ``torch.nn.Module`` (a clear error otherwise)."""
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"The model factory must return a torch.nn.Module, got {type(model).__name__}: {model!r:.80}.")
    return model
