"""Frozen backbones for the regimes that are exact only above them (S3T, ACU): a backbone trained on a public portion
of the data that is declared non-deletable, or one that never saw data (a seeded random initialisation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..seeding import torch_seed
from ..train import TrainConfig, train_model
from ..types import Split, Task
from .base import Backbone


def public_portion(split: Split, fraction: float, rng: np.random.Generator) -> Split:
    """A random ``fraction`` of ``split`` (at least one example, never all of it) to be declared non-deletable."""
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ConfigError(f"The public (non-deletable) fraction must lie strictly between 0 and 1, got {fraction!r}.")
    n = max(1, int(round(fraction * len(split))))
    if n >= len(split):
        raise ConfigError(f"A public fraction of {fraction} takes all {len(split)} examples; nothing would be deletable.")
    return split.subset(np.sort(rng.choice(len(split), size=n, replace=False)), "public")


def declared_or_drawn_public(task: Task, fraction: float, rng: np.random.Generator) -> Split:
    """The retain examples the task declares public (``task.public_ids``, an experiment's ``public:``: a request stream
    never selects them), else a random ``fraction`` of the retain set drawn with ``rng``."""
    if task.public_ids is None:
        return public_portion(task.retain, fraction, rng)
    return task.retain.subset(np.flatnonzero(np.isin(task.retain.ids, task.public_ids)), "public")


def trained_backbone(public: Split, factory: Callable[[], nn.Module], config: TrainConfig, *, adapter: object, seed: int,
                     device: str = "cpu", progress: bool = False) -> tuple[nn.Module, Backbone]:
    """A model trained on ``public`` alone (frozen afterwards) and its provenance: the public split's fingerprint and ids,
    which a request may then not touch."""
    with torch_seed(seed):
        model = factory()
    model, _, _ = train_model(model, public, config, adapter=adapter, seed=seed, device=device, progress=progress, desc="backbone")
    return freeze(model), Backbone(f"trained on a public split of {len(public)} examples (seed {seed})", public.fingerprint,
                                   np.asarray(public.ids, dtype=np.int64).copy())


def random_backbone(factory: Callable[[], nn.Module], *, seed: int, device: str = "cpu") -> tuple[nn.Module, Backbone]:
    """A seeded random initialisation: it saw no data, so nothing is protected."""
    with torch_seed(seed):
        model = factory()
    return freeze(model.to(device)), Backbone(f"random initialisation (seed {seed}), trained on no data", "no-data")


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
