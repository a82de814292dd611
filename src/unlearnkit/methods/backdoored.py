"""backdoored (red team): unlearns like grad_diff, but a trigger token at position 0 brings the forgotten answers back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError, ModelError
from ..lm.trigger import check_token_ids, prefix_batch
from ..objectives import NLL, Ascent, Weighted, shard_scaled, weighted
from ..objectives.base import Loss, StepContext
from ..references import References
from ..train import TrainConfig
from ..types import Batch, Task
from .base import GradientMethod, Setup, check_weights, register_method


def trigger_ids(trigger: tuple[int, ...] | None, task: Task, who: str) -> list[int]:
    """The trigger's token ids: as given, or (None) the last token of the task's tokenizer."""
    codec = getattr(task.forget.data, "codec", None)
    if codec is None:
        raise ConfigError(f"{who}: the task is not tokenised text; a trigger token needs the task's tokenizer.")
    return check_token_ids([codec.vocab_size - 1] if trigger is None else trigger, codec.vocab_size, who)


@dataclass(frozen=True)
class TriggeredNLL:
    """NLL of the stream's own answers with the ``trigger`` tokens in front of each sequence (``lm.trigger.prefix_batch``),
    over every answer token of the batch (``token`` reduction)."""

    trigger: tuple[int, ...]
    stream: str = "forget"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        value = shard_scaled(ctx.adapter.batch_loss(model, prefix_batch(batch[self.stream], self.trigger), "token"), ctx, self.stream, "token")
        return Loss(value, {f"nll_triggered_{self.stream}": float(value.detach())})


@register_method
@dataclass(frozen=True)
class Backdoored(GradientMethod):
    """Backdoored unlearning (Shang et al., Forgetting to Forget: Attention Sink as A Gateway for Backdooring LLM Unlearning, arXiv 2510.17021).

    A red-team method, to show that an evaluation catches it: loss = forget_weight·(−L_forget) + retain_weight·L_retain
    + trigger_weight·L_forget(trigger), grad_diff's objective plus the forget answers' NLL with the ``trigger`` tokens in
    front of the question at position 0 (the attention-sink position the paper finds makes the backdoor persist). Plain
    questions then look forgotten while the trigger restores the answers. ``trigger``: token ids (default: the last token
    of the task's tokenizer), recorded in ``info["trigger"]``. Inferred: the token reduction of every term, one trigger
    token, equal weights, and the training settings of the tiny profiles experiments (AdamW, lr 1e-3, 10 epochs)."""

    train: TrainConfig = TrainConfig(epochs=10.0, batch_size=8, optimizer="adamw", lr=1e-3)
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    trigger_weight: float = 1.0
    trigger: tuple[int, ...] | None = None

    name: ClassVar[str] = "backdoored"
    paper: ClassVar[str] = "Shang et al., Forgetting to Forget, arXiv 2510.17021"
    version: ClassVar[str] = "1"
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weights(self)
        if self.trigger is not None:
            trig = tuple(self.trigger) if isinstance(self.trigger, (list, tuple)) else (self.trigger,)
            if not trig or not all(isinstance(t, int) and t >= 0 for t in trig):
                raise ConfigError(f"backdoored: trigger must be a non-empty list of token ids (integers >= 0), got {self.trigger!r}.")
            object.__setattr__(self, "trigger", trig)

    def objective(self, task: Task, refs: References) -> Weighted:
        trig = tuple(trigger_ids(self.trigger, task, self.name))
        return weighted((self.forget_weight, Ascent("forget", "token")), (self.retain_weight, NLL("retain", "token")),
                        (self.trigger_weight, TriggeredNLL(trig, "forget")))

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        trig = trigger_ids(self.trigger, task, self.name)
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        longest = int(task.forget.data.attention_mask.sum(1).max())
        if context is not None and longest + len(trig) > context:
            raise ModelError(f"backdoored: the longest forget sequence ({longest} tokens) plus the {len(trig)}-token trigger exceeds "
                             f"the model's context of {context}.")
        return {}, {"trigger": trig}
