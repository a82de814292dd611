"""dp2unlearning: a DP-SGD base model on all training data, served after a non-private fine-tune; a deletion restarts
the fine-tune from the stored base on the live data, so the deleted records are covered by the base's (ε, δ)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..adapters import get_adapter
from ..errors import ConfigError
from ..exact.dp import check_privacy, train_dp2unlearning
from ..references import References
from ..types import Task
from .base import ALL_FORGET_KINDS, ExactMethod, check_numbers, register_method


@register_method
@dataclass(frozen=True)
class Dp2unlearning(ExactMethod):
    """DP2Unlearning (Al Mahmud et al., arXiv 2504.13774): an (ε, δ)-DP base trained once, fine-tuned to serve, the fine-tune redone from it to delete.

    ``dp_epochs``, ``dp_lr`` and ``dp_batch_size`` default to the recipe's (``train_config``); ``delta`` to
    min(1e-5, 1/n^1.1); ``finetune_epochs`` to half the recipe's budget (the paper's "about half the cost of
    retraining"). Needs opacus (``pip install 'unlearnkit[dp]'``)."""

    name: ClassVar[str] = "dp2unlearning"
    paper: ClassVar[str] = ("Al Mahmud, Jebreel, Domingo-Ferrer & Sánchez, DP2Unlearning: An Efficient and Guaranteed Unlearning "
                            "Framework for LLMs, arXiv 2504.13774, 2025")
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]] = ("classifier", "causal_lm")
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS  # a deletion is of ids, whatever chose them

    epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    dp_epochs: float | None = None
    dp_lr: float | None = None
    dp_batch_size: int | None = None
    finetune_epochs: float | None = None
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        check_privacy(self.epsilon, self.delta, self.max_grad_norm, self.accountant)
        for name in ("dp_epochs", "dp_lr", "finetune_epochs"):
            if getattr(self, name) is not None:
                check_numbers(self, name, positive=True)
        b = self.dp_batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ConfigError(f"dp2unlearning: dp_batch_size must be a whole number >= 1 (or null for the recipe's), got {b!r}.")

    def build(self, task: Task, refs: References, *, seed: int, device: str, progress: bool) -> Any:
        recipe = refs.require("train_config", by="method 'dp2unlearning'")
        data = task.train
        check_privacy(self.epsilon, self.delta, self.max_grad_norm, self.accountant, n=len(data))  # before building anything
        adapter = get_adapter(task)
        model = refs.fresh_model(seed, by="method 'dp2unlearning'")
        adapter.check(model, task, device)
        changes: dict[str, Any] = {}
        if self.dp_epochs is not None:
            changes.update(epochs=float(self.dp_epochs), steps=None)
        if self.dp_lr is not None:
            changes["lr"] = float(self.dp_lr)
        if self.dp_batch_size is not None:
            changes["batch_size"] = int(self.dp_batch_size)
        return train_dp2unlearning(model, data, recipe, epsilon=self.epsilon, delta=self.delta, max_grad_norm=self.max_grad_norm,
                                   accountant=self.accountant, dp_config=dataclasses.replace(recipe, **changes),
                                   finetune_epochs=self.finetune_epochs, adapter=adapter, seed=seed, device=device, progress=progress)
