"""sisa: train the served model as SISA shards and slices; a deletion retrains only the affected shards from the slice
that held the deleted data (``exact.sisa``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..adapters import get_adapter
from ..errors import ConfigError
from ..exact import SisaModel, train_sisa
from ..references import References
from ..types import Task
from .base import ExactMethod, register_method


@register_method
@dataclass(frozen=True)
class Sisa(ExactMethod):
    """SISA exact unlearning: shard models trained slice by slice, retrained from the checkpoint before a deleted example (Bourtoule et al., IEEE S&P 2021).

    ``epochs`` None keeps the original's recipe (its total work, spread over the slices as SISA does); a number replaces
    the recipe's budget by that many epochs of one ordinary training."""

    name: ClassVar[str] = "sisa"
    paper: ClassVar[str] = "Bourtoule, Chandrasekaran, Choquette-Choo, Jia, Travers, Zhang, Lie & Papernot, Machine Unlearning, IEEE S&P 2021"
    version: ClassVar[str] = "1"  # bump when its numbers change

    shards: int = 8
    slices: int = 4
    aggregation: Literal["vote", "mean"] = "vote"
    epochs: float | None = None

    def __post_init__(self) -> None:
        for what in ("shards", "slices"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sisa: {what} must be a whole number >= 1, got {value!r}.")
        if self.aggregation not in ("vote", "mean"):
            raise ConfigError(f"sisa: aggregation must be 'vote' or 'mean', got {self.aggregation!r}.")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and 0 < self.epochs < float("inf")):
            raise ConfigError(f"sisa: epochs must be a finite number > 0 (or None for the original's recipe), got {self.epochs!r}.")

    def build(self, task: Task, refs: References, *, seed: int, device: str, progress: bool) -> SisaModel:
        by = "method 'sisa'"
        config = refs.require("train_config", by=by)
        if self.epochs is not None:
            config = dataclasses.replace(config, epochs=float(self.epochs), steps=None)

        def factory() -> Any:  # train_sisa seeds torch's global RNG per shard; the fresh model's seed is drawn from it
            return refs.fresh_model(int(torch.randint(0, 2**31 - 1, ()).item()), by=by)

        return train_sisa(task.train, factory, config, shards=self.shards, slices=self.slices, aggregation=self.aggregation, seed=seed,
                          adapter=get_adapter(task), device=device, progress=progress)
