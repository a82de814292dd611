"""Early stopping of unlearning at the level of never-trained data, measured without the retrained oracle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import cost
from .train import Snapshot
from .types import Split


def mean_true_prob(model: nn.Module, split: Split, adapter: Any, *, batch_size: int = 16, device: Any = "cpu") -> float:
    """Mean over ``split`` of exp(−per-example loss): the length-normalised answer probability P̄(a|q) for causal
    LMs, the true label's probability for classifiers. Eval mode, no gradients; the model's mode is restored."""
    losses = adapter.run_split(model, split, adapter.per_example_loss, batch_size=batch_size, device=device)
    cost.record(passes=len(split))
    return float(torch.exp(-torch.cat(losses)).mean()) if losses else float("nan")


@dataclass
class HoldoutLevelStop:
    """Stop unlearning once the forget set's mean true-answer probability is at or below ``level``, the holdout
    (never trained) examples' on the model before unlearning: the forgetting threshold of Jang et al., Knowledge
    Unlearning for Mitigating Privacy Risks in Language Models, ACL 2023 (unlearn until the forget data is
    remembered no better than unseen data). Checked after every ``every`` steps; a ``fit`` callback.

    Going below that level is over-forgetting: a retrained model does not know the forget answers, but it answers them
    as well as any unseen fact of the same kind, and a forget set scored below unseen data is itself a membership
    signal (the "Streisand effect"). One step can jump well past the level, so with ``nearest`` (default) the rule
    keeps a copy of the trainable state at each check above the level, and when the check that reaches the level lands
    farther below it than the previous check was above it, the previous check's weights are restored (inferred: a
    discrete-step refinement of the threshold; it costs one copy of the trainable parameters and buffers — a few MB
    under LoRA)."""

    forget: Split
    level: float
    adapter: Any
    batch_size: int = 16
    device: Any = "cpu"
    every: int = 1
    nearest: bool = True
    trace: list[tuple[int, float]] = field(default_factory=list)  # (step, forget value) at every check
    fired: str | None = None
    restored: int | None = None  # the step whose weights were restored (``nearest``)
    _kept: Any = field(default=None, repr=False)  # train.Snapshot of the last check above the level, and its value
    _kept_value: float = field(default=float("nan"), repr=False)

    @classmethod
    def measured(cls, model: nn.Module, forget: Split, holdout: Split, adapter: Any, *, batch_size: int = 16, device: Any = "cpu",
                 every: int = 1, nearest: bool = True) -> HoldoutLevelStop:
        """The rule with ``level`` measured now on ``holdout`` (call before training)."""
        level = mean_true_prob(model, holdout, adapter, batch_size=batch_size, device=device)
        return cls(forget, level, adapter, batch_size, device, every, nearest)

    def __call__(self, step: int, model: nn.Module) -> str | None:
        if (step + 1) % self.every:
            return None
        value = mean_true_prob(model, self.forget, self.adapter, batch_size=self.batch_size, device=self.device)
        self.trace.append((step, value))
        if np.isfinite(value) and value <= self.level:
            self.fired = (f"stopped early after step {step}: forget answer probability {value:.3f} reached the holdout "
                          f"level {self.level:.3f}")
            if self._kept is not None and self._kept_value - self.level < self.level - value:
                self._kept.restore()
                self.restored = self._kept.step
                self.fired += f"; restored the weights of step {self.restored} ({self._kept_value:.3f}), nearer the level"
            return self.fired
        if self.nearest and np.isfinite(value):
            if self._kept is None:
                self._kept = Snapshot(model, [p for p in model.parameters() if p.requires_grad])
            self._kept.save(step)
            self._kept_value = value
        return None

    def to_json(self) -> dict[str, Any]:
        return {"rule": "holdout_level", "level": self.level, "every": self.every, "nearest": self.nearest, "fired": self.fired,
                "restored": self.restored, "trace": [[s, v] for s, v in self.trace]}


__all__ = ["HoldoutLevelStop", "mean_true_prob"]
