"""What every objective shares: the ``Loss`` it returns, the ``StepContext`` it reads, and reference lookups.

An objective is a callable ``(model, batches: dict[stream, Batch], ctx: StepContext) -> Loss`` with a ``streams``
attribute; the training loop (``unlearnkit.train``) calls it, so this module depends on nothing above the core types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..types import Batch


@dataclass
class Loss:
    """A scalar loss to minimise and its named parts (floats, for logging)."""

    value: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class StepContext:
    """What an objective may use besides the model and batch."""

    step: int
    n_steps: int
    generator: torch.Generator
    adapter: Any
    extra: dict[str, Any] = field(default_factory=dict)


def reference_for(ctx: StepContext, batch: Batch, who: str, key: str = "reference_logits") -> torch.Tensor:
    """The frozen reference rows (logits, predictions, targets) of ``batch``'s examples from ``ctx.extra[key]``."""
    table = ctx.extra.get(key)
    if table is None:
        raise ConfigError(f"{who} needs ctx.extra[{key!r}] (a ReferenceLogits table computed before training).")
    return table.lookup(batch["ids"]).to(batch["x"].device)
