"""What every objective shares: the ``Loss`` it returns, the ``StepContext`` it reads, and reference lookups.

An objective is a callable ``(model, batches: dict[stream, Batch], ctx: StepContext) -> Loss`` with a ``streams``
attribute; the training loop (``unlearnkit.train``) calls it, so this module depends on nothing above the core types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, TaskError
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


class ReferenceLogits:
    """Frozen reference outputs keyed by example id: computed once, looked up per batch."""

    def __init__(self, ids: Any, logits: torch.Tensor) -> None:
        ids_t = torch.as_tensor(np.array(ids, dtype=np.int64))
        self.logits = logits.detach().float().cpu()
        order = torch.argsort(ids_t)
        self._sorted = ids_t[order]
        self._order = order

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.detach().cpu().long()
        pos = torch.searchsorted(self._sorted, ids).clamp(max=len(self._sorted) - 1)
        if not bool((self._sorted[pos] == ids).all()):
            raise TaskError("Reference logits are missing for some example ids.")
        return self.logits[self._order[pos]]
