"""label_only: label-only membership inference against the unlearned model, steered by shadow models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from .base import EvalContext, Metric, register_metric, roc_summary
from .lira import SHADOW_NEEDS, auc_null_sd, check_shadow_counts, shadow_set, unlearned_shadows


NO_POWER = ("no power measured: on digits (random 10% and class 3) it detected none of the planted cases, the original model "
            "included (docs/results/verdict_calibration.md); the top-1 labels of the original and of retrained models agree on the "
            "forget examples and along the attack's path, so the label-only signal sits inside the null band")


@register_metric
@dataclass(frozen=True)
class LabelOnly(Metric):
    """Label-only membership inference on unlearned models (Apollo; Tang, Joshi, Kundu, arXiv 2506.09923): only the
    target's top-1 label is observed. For each target x, projected signed-gradient steps inside an L∞ ball of radius
    ``epsilon`` (input units) maximise the mean loss of the shadows that never saw x minus that of the shadows that
    trained on x and unlearned it (the under-unlearning probe: inputs that unlearned models still get right and
    retrained ones do not); the score is the fraction of the path (start included) on which the target predicts y.
    AUC of forget targets vs non-members; 0.5 = indistinguishable. Inferred: the signed-gradient (FGSM-style)
    update instead of the paper's projected Adam, and the path-average score instead of a learned threshold."""

    n_shadows: int = 8
    n_targets: int = 200
    seed: int = 0
    floor: float = 0.02
    epsilon: float = 0.5
    steps: int = 20
    step_size: float = 0.05

    name = "label_only"
    version = "2"  # 2: its evidence is reported only (no power measured)
    needs = SHADOW_NEEDS
    paper = "Tang, Joshi & Kundu, arXiv 2506.09923 (Apollo)"
    modalities = ("classifier",)
    noise_floor_skip = True

    def __post_init__(self) -> None:
        check_shadow_counts(self.name, self.n_shadows, self.n_targets)
        if self.epsilon <= 0 or self.steps < 1 or self.step_size <= 0:
            raise ConfigError("label_only: epsilon, steps and step_size must be positive.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        self.require_needs(refs)
        shadows, targets = shadow_set(task, refs, ctx, self.n_shadows, self.n_targets, self.seed)
        models = unlearned_shadows(shadows, targets, task, refs, ctx, self.seed)
        ids = np.concatenate([targets.pos_ids, targets.neg_ids])
        sub = targets.pool.select_ids(ids, "targets")
        batch = next(sub.batches(len(sub), device=ctx.device))
        x0, y = batch["x"].float(), batch["y"]
        inside = torch.as_tensor(shadows.member_mask(ids), device=ctx.device, dtype=torch.float32)  # (K, n)
        w_in = inside / inside.sum(0).clamp_min(1)
        w_out = (1 - inside) / (1 - inside).sum(0).clamp_min(1)
        for m in models:
            m.eval()
        model.eval()

        @torch.no_grad()
        def target_correct(x: torch.Tensor) -> torch.Tensor:
            return (ctx.adapter.logits(model, {"x": x}).argmax(1) == y).float()

        x = x0.clone()
        hits = target_correct(x)
        for _ in range(self.steps):
            x.requires_grad_(True)
            losses = torch.stack([F.cross_entropy(ctx.adapter.logits(m, {"x": x}), y, reduction="none") for m in models])  # (K, n)
            objective = ((w_out - w_in) * losses).sum()
            (grad,) = torch.autograd.grad(objective, x)
            with torch.no_grad():
                x = x0 + (x + self.step_size * grad.sign() - x0).clamp(-self.epsilon, self.epsilon)
            hits = hits + target_correct(x)
        scores = (hits / (self.steps + 1)).cpu().numpy()
        n_pos = len(targets.pos_ids)
        roc = roc_summary(scores[:n_pos], scores[n_pos:])
        null_sd = auc_null_sd(n_pos, len(targets.neg_ids))
        values = {**roc.values, "mean_score.forget": float(scores[:n_pos].mean()), "mean_score.nonmember": float(scores[n_pos:].mean())}
        evidence = (Evidence(key="label_only.auc", value=values["auc"], role="forget", remembers="higher", floor=self.floor, strong=True,
                             null_mean=0.5, null_sd=null_sd, bounds=(0.0, 1.0), reported_only=NO_POWER),)
        return self.result(values,
                           per_example={"score.forget": (targets.pos_ids, scores[:n_pos]), "score.nonmember": (targets.neg_ids, scores[n_pos:])},
                           curves={"roc": roc.curve}, evidence=evidence,
                           info={"method_under_test": None if ctx.method is None else ctx.method.name, "null_auc_sd": null_sd})
