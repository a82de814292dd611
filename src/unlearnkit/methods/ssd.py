"""ssd: Selective Synaptic Dampening — a retrain-free parameter edit from Fisher importances
(``analysis.importance``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..analysis.importance import dampen, fisher_diagonal
from ..errors import ConfigError
from ..references import References
from ..types import Mask, Task, Unlearned
from .base import ALL_FORGET_KINDS, register_method
from ..searchspace import FloatRange


@register_method
@dataclass(frozen=True)
class SSD:
    """Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024): importances I = E[grad²]
    on the full training set D and on the forget set; where I_f > alpha·I_D, scale θ by
    min(lambda_·I_D/I_f, 1). No gradient steps; parameters below the threshold are untouched.

    As in the reference, I is the mean over mini-batches of the squared gradient of each batch's mean loss, with the
    batches taken in the split's stored order (no randomness: the result does not depend on ``rng``). It therefore
    depends on which examples share a batch: reordering the training set changes which coordinates are dampened."""

    alpha: float = 10.0
    lambda_: float = 1.0
    batch_size: int = 128

    name: ClassVar[str] = "ssd"
    kind: ClassVar[str] = "edit"
    modalities: ClassVar[tuple[str, ...]] = ("classifier",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS
    needs: ClassVar[frozenset[str]] = frozenset()
    paper: ClassVar[str] = "Foster et al., Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening, AAAI 2024"
    version: ClassVar[str] = "1"  # bump when its numbers change
    search_space: ClassVar[Mapping[str, Any] | None] = {"alpha": FloatRange(1.0, 100.0, log=True), "lambda_": FloatRange(0.1, 2.0, log=True)}  # what `unlearnkit tune` searches (classifiers)

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.lambda_ <= 0:
            raise ConfigError(f"ssd: alpha and lambda_ must be positive, got alpha={self.alpha}, lambda_={self.lambda_}.")
        if self.batch_size <= 0:
            raise ConfigError(f"ssd: batch_size must be positive, got {self.batch_size}.")

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu", progress: bool = False) -> Unlearned:
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        imp_full = fisher_diagonal(model, task.train, adapter, device, self.batch_size)
        imp_forget = fisher_diagonal(model, task.forget, adapter, device, self.batch_size)
        params = {n: p for n, p in model.named_parameters() if n in imp_full}
        selected = dampen({n: p.data for n, p in params.items()}, imp_forget, imp_full, self.alpha, self.lambda_)
        changed = Mask({n: selected.get(n, torch.zeros_like(p, dtype=torch.bool)) for n, p in model.named_parameters()})
        return Unlearned(model, changed, {"mask": changed.summary(), "selected_fraction": changed.fraction()})
