"""relearn: the relearning attack — fine-tune on a small slice of the forget set and watch how fast
accuracy on the rest of the forget set comes back, next to the same attack on the retrained models."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..lm.guard import bare_model, is_guard
from ..objectives import NLL, weighted
from ..references import References
from ..seeding import np_rng
from ..train import OptimizerName, TrainConfig, fit
from ..types import Evidence, MetricResult, Split, Task
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class Relearn(Metric):
    """Relearning attack (Hu et al., Jogging the Memory of Unlearned LLMs Through Targeted Relearning
    Attacks, ICLR 2025; Lynch et al. 2024): fine-tune a copy of the model for ``steps`` on a random
    ``fraction`` of the forget set; curve = the adapter's fit score (accuracy for classifiers, answer
    probability for causal LMs) on the held-out rest of the forget set at every ``eval_every`` steps.
    auc = mean of the curve. A model that suppressed (rather than removed) the data recovers faster than
    the retrained models, so the verdict compares auc with the retrain band.

    The attacker also fine-tunes on ``retain_mix`` × as many random retain examples (inferred, not in the
    papers' classifier setting): without them, for class forgetting, "predict the forgotten class for
    everything" would score perfectly on the held-out forget examples and the curve would measure bias,
    not recovered knowledge.

    Defaults depend on the modality (``None`` = the modality's default, ``DEFAULTS``): classifiers and regression
    keep Adam lr 3e-4, retain_mix 1, min_examples 16. Causal LMs (score = length-normalised answer probability of
    the held-out forget answers) use retain_mix 0 — the attack of Hu et al. relearns on forget text alone, and the
    class-bias reason above does not apply to generated answers — min_examples 4 (a forget set of a few profiles
    has tens of answers) and the same Adam lr 3e-4 (inferred: LM relearning papers use 1e-5 over 50–150 steps at
    batch 4 on 7B models; 40 CPU steps of a small model need a larger step — on the tiny test Llama, 1e-4 barely
    moves a gradient-ascent model in 40 steps, 3e-4 brings it back past the retain models' end point).

    Weight-level evidence: an inference-time guard (``lm.guard``) is attacked through its bare weights (its inner
    model, untouched by the guard), since whoever obtains the weights relearns without the guard; a guard whose
    outputs look retrained but whose weights relearn the data fast comes out "suppressed"."""

    fraction: float = 0.1
    min_examples: int | None = None
    retain_mix: float | None = None
    steps: int = 40
    eval_every: int = 5
    batch_size: int = 32
    optimizer: OptimizerName = "adam"
    lr: float | None = None
    floor: float = 0.02

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "classifier": {"min_examples": 16, "retain_mix": 1.0, "lr": 3e-4},
        "regression": {"min_examples": 16, "retain_mix": 1.0, "lr": 3e-4},
        "causal_lm": {"min_examples": 4, "retain_mix": 0.0, "lr": 3e-4},
    }

    name = "relearn"
    needs = frozenset({"retrained"})
    paper = "Hu et al., ICLR 2025"
    modalities = ("classifier", "regression", "causal_lm")

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"relearn: fraction must be in (0, 1), got {self.fraction}.")
        if self.steps < 1 or self.eval_every < 1:
            raise ConfigError("relearn: steps and eval_every must be >= 1.")
        if self.retain_mix is not None and self.retain_mix < 0:
            raise ConfigError(f"relearn: retain_mix must be >= 0, got {self.retain_mix}.")
        if self.min_examples is not None and self.min_examples < 1:
            raise ConfigError(f"relearn: min_examples must be >= 1, got {self.min_examples}.")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"relearn: lr must be > 0, got {self.lr}.")

    def setting(self, task: Task, key: str) -> Any:
        """A parameter's value: as given, or the task modality's default."""
        value = getattr(self, key)
        return self.DEFAULTS.get(task.modality, self.DEFAULTS["classifier"])[key] if value is None else value

    MIN_FORGET: ClassVar[int] = 4  # two examples to relearn, two held out to score

    def why_not_applicable(self, task: Task) -> str | None:
        n = len(task.forget)
        if n < self.MIN_FORGET:
            return (f"the forget set has {n} example(s); the relearning attack needs at least {self.MIN_FORGET} (some to relearn, "
                    "the others held out to measure what comes back)")
        return None

    def slices(self, task: Task, seed: int) -> tuple[Split, Split, Split | None]:
        """The forget slice the attacker relearns, the held-out forget examples, and the retain
        examples mixed into the attack (the same for every model). A forget set no larger than the usual slice
        (``min_examples``, or ``fraction`` of it) is split in half: half relearned, half held out."""
        n = len(task.forget)
        if (reason := self.why_not_applicable(task)) is not None:
            raise ConfigError(f"relearn: {reason}.")
        k = max(self.setting(task, "min_examples"), int(round(self.fraction * n)))
        if k >= n:
            k = n // 2
        rng = np_rng("relearn-slice", seed, task.fingerprint)
        pos = rng.permutation(n)
        n_mix = min(len(task.retain), int(round(self.setting(task, "retain_mix") * k)))
        mix = task.retain.subset(np.sort(rng.choice(len(task.retain), n_mix, replace=False)), "relearn_retain") if n_mix else None
        return task.forget.subset(np.sort(pos[:k]), "relearn"), task.forget.subset(np.sort(pos[k:]), "heldout"), mix

    def n_points(self) -> int:
        return self.steps // self.eval_every + 1

    def curve(self, model: nn.Module, task: Task, ctx: EvalContext) -> tuple[list[float], str | None]:
        """Held-out forget accuracy before and every ``eval_every`` steps of the attack. If the attack's
        own training stops (non-finite loss), the remaining points repeat the restored model's accuracy."""
        attack, heldout, mix = self.slices(task, ctx.seed)
        victim = copy.deepcopy(bare_model(model))  # the weights: an inference-time guard's inner model, which an attacker fine-tunes
        points: list[float] = []

        @torch.no_grad()
        def acc(m: nn.Module) -> float:
            return float(ctx.adapter.score(ctx.adapter.outputs(m, heldout, batch_size=ctx.batch_size, device=ctx.device)).mean())

        points.append(acc(victim))

        def on_step(step: int, m: nn.Module) -> None:
            if (step + 1) % self.eval_every == 0:
                points.append(acc(m))

        config = TrainConfig(steps=self.steps, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.setting(task, "lr"))
        retain_mix = self.setting(task, "retain_mix")
        objective = NLL("relearn") if mix is None else weighted((1.0, NLL("relearn")), (retain_mix, NLL("retain")))
        streams = {"relearn": attack} if mix is None else {"relearn": attack, "retain": mix}
        result = fit(victim, objective, streams, config, adapter=ctx.adapter, rng=np_rng("relearn-fit", ctx.seed),
                     device=ctx.device, callback=on_step, desc="relearn", loss_limit=float("inf"))
        if len(points) < self.n_points():
            final = acc(victim)
            points += [final] * (self.n_points() - len(points))
        return points, result.stopped

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'relearn'")
        own, stopped = ctx.memo(model, ("relearn", self), lambda: self.curve(model, task, ctx))
        ref_curves = [ctx.memo(r, ("relearn", self), lambda r=r: self.curve(r, task, ctx))[0] for r in refs.retrained_seeds]
        ref_mean = np.mean(ref_curves, axis=0)
        steps = [0] + [s for s in range(1, self.steps + 1) if s % self.eval_every == 0]
        values = {
            "start": own[0],
            "end": own[-1],
            "auc": float(np.mean(own)),
            "retrained_start": float(ref_mean[0]),
            "retrained_end": float(ref_mean[-1]),
            "retrained_auc": float(np.mean(ref_mean)),
        }
        values["excess_auc"] = values["auc"] - values["retrained_auc"]
        curves = {"relearn": {"step": [float(s) for s in steps], "accuracy": list(map(float, own)), "retrained": ref_mean.tolist()}}
        heldout = len(task.forget) - len(self.slices(task, ctx.seed)[0])
        resolution = 1 / heldout if ctx.adapter.score_name == "accuracy" else 0.0  # one held-out example more or less
        evidence = (Evidence(key="relearn.auc", value=values["auc"], role="robustness", remembers="higher", floor=self.floor, strong=True,
                             resolution=resolution, bounds=None if ctx.adapter.score_name == "negative squared error" else (0.0, 1.0)),)
        return self.result(values, curves=curves, evidence=evidence,
                           info={"slice": len(self.slices(task, ctx.seed)[0]), "retain_mix": self.setting(task, "retain_mix"),
                                 "lr": self.setting(task, "lr"), "score": getattr(ctx.adapter, "score_name", "accuracy"),
                                 "n_retrained": len(refs.retrained_seeds), "attack_stopped": stopped,
                                 **({"measured_on": "the guard's bare weights (its inner model)"} if is_guard(model) else {})})
