"""lira / u_lira: per-example likelihood-ratio membership attacks with shadow models.

Shadows: K models of the original's architecture and recipe, trained (vectorised, once per task, cached)
on random halves of the pool = train ∪ test, every pool example in exactly K/2 of them. The *targets*
are a sample of forget examples (unlearned members) and of non-members from the test split (for class
forgetting: test examples of the forgotten classes). For a target x the attack fits one Gaussian to
the statistic φ = log p_y − log(1 − p_y) over the shadows that trained on x ("in") and one over the
shadows that did not ("out"), and scores the model under attack by log N(φ; in) − log N(φ; out).

U-LiRA (Hayes et al.) makes the "in" shadows go through the method under test: shadow k unlearns the
pool examples it trained on that belong to the unlearning set U (all forget examples plus an equally
large sample of the non-member candidates, or, for class forgetting, every example of the classes),
so the attack asks whether the unlearned model looks like "trained on x, then unlearned" rather than
"never saw x". For an exact unlearner both groups coincide and the AUC is 0.5 up to sampling noise.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..ensembles import ShadowSet, balanced_memberships, logit_confidence, pool_of, train_ensemble
from ..errors import ConfigError
from ..io import canonical_json
from ..references import References
from ..version import code_version
from ..seeding import derive_seed, np_rng
from ..types import Evidence, MetricResult, Split, Task
from .base import EvalContext, Metric, class_membership_reported_only, register_metric, roc_summary


def auc_null_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUC (Mann–Whitney U / (n₊n₋)) when both groups share one distribution."""
    return float(np.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg)))


def _key(*parts: Any) -> str:
    return hashlib.blake2b(canonical_json(parts).encode(), digest_size=12).hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """A digest of a whole boolean array (shape included), for cache keys."""
    mask = np.asarray(mask, dtype=bool)
    return hashlib.blake2b(repr(mask.shape).encode() + np.packbits(mask).tobytes(), digest_size=16).hexdigest()


def cached_ensemble(ctx: EvalContext, refs: References, pool: Split, memberships: np.ndarray, seed: int, kind: str) -> list[nn.Module]:
    """``train_ensemble`` with the references' architecture and recipe, cached in ctx and the store."""
    factory = refs.require("model_factory", by=f"{kind} models")
    config = refs.require("train_config", by=f"{kind} models")
    key = "ens-" + _key(kind, pool.fingerprint, mask_digest(memberships), memberships.shape, seed, config.to_dict(),
                        refs.info.get("model", str(factory())), code_version(), torch.device(ctx.device).type)
    if key in ctx.shared:
        return ctx.shared[key]
    models = None
    if ctx.store is not None:
        loaded = ctx.store.load_models(key, factory, ctx.device)
        if loaded is not None:
            models = loaded[0]
    if models is None:
        models = train_ensemble(factory, pool, memberships, config, seed=seed, device=ctx.device, progress=ctx.progress, desc=kind)
        if ctx.store is not None:
            ctx.store.save_models(key, models, {"memberships": memberships}, {"kind": kind, "seed": seed, "pool": pool.fingerprint})
    ctx.shared[key] = models
    return models


def retrained_ensemble(ctx: EvalContext, refs: References, task: Task, n_models: int, seed: int, which: int) -> list[nn.Module]:
    """The ``which``-th ensemble of ``n_models`` models retrained on the retain set, under ``seed``. One cache entry for every
    metric that asks with the same size and seed: epsilon_score and klom compare against the same retrained models, trained
    once per task (the seed label is the one epsilon_score has always used, so its numbers and stored ensembles stay valid)."""
    membership = np.ones((n_models, len(task.retain)), dtype=bool)
    return cached_ensemble(ctx, refs, task.retain, membership, derive_seed(seed, "eps-retrain", which), "retrained ensemble")


@dataclass(frozen=True)
class Targets:
    pool: Split
    unlearn_mask: np.ndarray  # over pool positions: the set U shadows unlearn
    pos_ids: np.ndarray  # forget examples attacked (members that were unlearned)
    neg_ids: np.ndarray  # non-members attacked


def choose_targets(task: Task, ctx: EvalContext, n_targets: int, seed: int) -> Targets:
    pool = ctx.shared.get(("pool", task.fingerprint))
    if pool is None:
        pool = ctx.shared[("pool", task.fingerprint)] = pool_of(task.train, task.test)
    rng = np_rng("lira-targets", seed, task.fingerprint)
    classes = task.whole_classes()
    labels = pool.labels
    if classes is not None:
        candidates = task.test.ids[np.isin(task.test.labels, classes)]
        unlearn_ids = pool.ids[np.isin(labels, classes)]
    else:
        candidates = rng.choice(task.test.ids, size=min(len(task.test), len(task.forget)), replace=False)
        unlearn_ids = np.concatenate([task.forget.ids, candidates])
    if len(candidates) < 2:
        raise ConfigError("LiRA needs non-member candidates in the test split (none of the forgotten classes?).")
    n = min(n_targets, len(task.forget), len(candidates))
    pos = np.sort(rng.choice(task.forget.ids, size=n, replace=False))
    neg = np.sort(rng.choice(candidates, size=n, replace=False))
    mask = np.zeros(len(pool), dtype=bool)
    mask[pool.positions_of(unlearn_ids)] = True
    return Targets(pool, mask, pos, neg)


def shadow_task(task: Task, pool: Split, trained: np.ndarray, unlearn: np.ndarray, k: int) -> Task | None:
    """The task shadow k faces: forget = what it trained on from U, retain = the rest of its data."""
    forget_pos = np.flatnonzero(trained & unlearn)
    retain_pos = np.flatnonzero(trained & ~unlearn)
    test_pos = np.flatnonzero(~trained)
    if len(forget_pos) == 0 or len(retain_pos) == 0 or len(test_pos) == 0:
        return None
    return Task(
        name=f"{task.name}-shadow{k}", forget=pool.subset(forget_pos, "forget"), retain=pool.subset(retain_pos, "retain"),
        test=pool.subset(test_pos, "test"), n_classes=task.n_classes, version=task.version, modality=task.modality,
        info={**dict(task.info), "shadow": k}, train_split=pool.subset(np.flatnonzero(trained), "train"),
    )


def unlearned_shadows(shadows: ShadowSet, targets: Targets, task: Task, refs: References, ctx: EvalContext, seed: int) -> list[nn.Module]:
    """Every shadow after the method under test unlearned its part of U (cached per method)."""
    method = ctx.method
    if method is None:  # no unlearning happened to the model under attack (e.g. the original)
        return shadows.models
    key = ("u_lira-shadows", shadows.pool.fingerprint, mask_digest(shadows.membership), mask_digest(targets.unlearn_mask),
           repr(method), seed)
    if key in ctx.shared:
        return ctx.shared[key]
    if getattr(method, "name", "") == "retrain":  # exact: train the shadows from scratch without U, all at once
        models = cached_ensemble(ctx, refs, targets.pool, shadows.membership & ~targets.unlearn_mask[None, :],
                                 derive_seed(seed, "u_lira-retrain"), "u_lira retrained shadows")
    else:
        from ..executor import LocalExecutor

        jobs = [ShadowJob(method, model, shadow_task(task, targets.pool, shadows.membership[k], targets.unlearn_mask, k),
                          replace(refs, original=model, retrained_seeds=()), derive_seed(seed, "u_lira-unlearn", k), ctx.device)
                for k, model in enumerate(shadows.models)]
        executor = ctx.executor or LocalExecutor()
        models = []
        for state, model in zip(executor.map(shadow_unlearn_job, jobs, desc="unlearning shadows"), shadows.models):
            if isinstance(state, nn.Module):
                models.append(state)
                continue
            victim = copy.deepcopy(model)
            victim.load_state_dict(state)
            models.append(victim.eval())
    ctx.shared[key] = models
    return models


@dataclass(frozen=True)
class ShadowJob:
    method: Any
    model: nn.Module
    task: Task | None  # None: the shadow holds nothing to unlearn
    refs: References
    seed: int
    device: str


def shadow_unlearn_job(job: ShadowJob) -> dict[str, torch.Tensor] | nn.Module:
    """The shadow's weights after the method unlearned its part of U (picklable job for any executor); the whole
    model when the method returns another architecture than the shadow's (e.g. an exact regime's SISA ensemble)."""
    victim = copy.deepcopy(job.model)
    if job.task is not None:
        victim = job.method.unlearn(victim, job.task, job.refs, rng=np.random.default_rng(job.seed), device=job.device).model
    if type(victim) is not type(job.model):  # its weights would not load into the shadow's architecture
        return victim.cpu().eval()
    return {k: v.detach().cpu() for k, v in victim.state_dict().items()}


def gaussian_log_ratio(phi: np.ndarray, stats: np.ndarray, inside: np.ndarray, fixed_variance: bool) -> np.ndarray:
    """log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out) per target; ``stats`` and ``inside`` are (K, n)."""
    out_side = ~inside
    if (inside.sum(0) < 2).any() or (out_side.sum(0) < 2).any():
        raise ConfigError("Every target needs at least two 'in' and two 'out' shadows; use more shadow models.")

    def moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = mask.sum(0)
        mu = (stats * mask).sum(0) / cnt
        var = (((stats - mu) ** 2) * mask).sum(0) / (cnt - 1)
        return mu, var

    mu_in, var_in = moments(inside)
    mu_out, var_out = moments(out_side)
    if fixed_variance:  # LiRA's global-variance variant: robust with few shadows
        var_in = np.full_like(var_in, var_in.mean())
        var_out = np.full_like(var_out, var_out.mean())
    var_in = np.maximum(var_in, 1e-8)
    var_out = np.maximum(var_out, 1e-8)
    log_in = -0.5 * (np.log(2 * np.pi * var_in) + (phi - mu_in) ** 2 / var_in)
    log_out = -0.5 * (np.log(2 * np.pi * var_out) + (phi - mu_out) ** 2 / var_out)
    return log_in - log_out


SHADOW_NEEDS = frozenset({"train_config", "model_factory"})  # the shadows are trained like the original


def check_shadow_counts(metric: str, n_shadows: int, n_targets: int) -> None:
    if n_shadows < 4:
        raise ConfigError(f"{metric}: n_shadows must be >= 4 (each target needs two 'in' and two 'out' shadows), got {n_shadows}.")
    if n_targets < 2:
        raise ConfigError(f"{metric}: n_targets must be >= 2, got {n_targets}.")


def shadow_set(task: Task, refs: References, ctx: EvalContext, n_shadows: int, n_targets: int, seed: int) -> tuple[ShadowSet, Targets]:
    """The attack's targets, and ``n_shadows`` shadows trained on balanced halves of their pool (cached)."""
    targets = choose_targets(task, ctx, n_targets, seed)
    membership = balanced_memberships(n_shadows, len(targets.pool), derive_seed(seed, "lira-membership", task.train.fingerprint))
    models = cached_ensemble(ctx, refs, targets.pool, membership, derive_seed(seed, "lira-shadows"), "shadow")
    return ShadowSet(targets.pool, membership, models), targets


def likelihood_ratio_attack(metric: LiRA | ULiRA, model: nn.Module, task: Task, refs: References, ctx: EvalContext, *,
                            unlearn_shadows: bool) -> MetricResult:
    """LiRA's scores of ``model`` on the targets, against the shadows (after unlearning U when ``unlearn_shadows``)."""
    metric.require_needs(refs)
    shadows, targets = shadow_set(task, refs, ctx, metric.n_shadows, metric.n_targets, metric.seed)
    models = unlearned_shadows(shadows, targets, task, refs, ctx, metric.seed) if unlearn_shadows else shadows.models
    ids = np.concatenate([targets.pos_ids, targets.neg_ids])
    sub = targets.pool.select_ids(ids, "targets")
    labels = sub.labels

    def phi_of(m: nn.Module) -> np.ndarray:
        return logit_confidence(ctx.adapter.outputs(m, sub, batch_size=ctx.batch_size, device=ctx.device)["logits"], labels)

    stats = np.stack([phi_of(m) for m in models])  # (K, n)
    inside = shadows.member_mask(ids)
    scores = gaussian_log_ratio(phi_of(model), stats, inside, metric.fixed_variance)
    n_pos = len(targets.pos_ids)
    roc = roc_summary(scores[:n_pos], scores[n_pos:])
    null_sd = auc_null_sd(n_pos, len(targets.neg_ids))
    values = {**roc.values, "n_shadows": float(metric.n_shadows), "n_targets": float(n_pos)}
    evidence = (Evidence(key=f"{metric.name}.auc", value=values["auc"], role="forget", remembers="higher", floor=metric.floor, strong=True,
                         null_mean=0.5, null_sd=null_sd, bounds=(0.0, 1.0), reported_only=class_membership_reported_only(task)),)
    return metric.result(
        values,
        per_example={"score.forget": (targets.pos_ids, scores[:n_pos]), "score.nonmember": (targets.neg_ids, scores[n_pos:])},
        curves={"roc": roc.curve}, evidence=evidence,
        info={"method_under_test": None if ctx.method is None else ctx.method.name, "unlearn_set_size": int(targets.unlearn_mask.sum()),
              "null_auc_sd": null_sd},
    )


@register_metric
@dataclass(frozen=True)
class LiRA(Metric):
    """Likelihood-ratio membership attack (Carlini et al., Membership Inference Attacks From First Principles, S&P 2022),
    per example with K shadow models; AUC of forget (unlearned members) vs non-members and TPR at 1% / 0.1% FPR.
    An unlearned model should look like a model that never trained on its forget set: AUC ≈ 0.5."""

    n_shadows: int = 16
    n_targets: int = 500
    fixed_variance: bool = True
    seed: int = 0
    floor: float = 0.02

    name = "lira"
    version = "2"  # 2: its evidence is reported only on class forgetting
    needs = SHADOW_NEEDS
    paper = "Carlini et al., S&P 2022"
    modalities = ("classifier",)
    noise_floor_skip = True

    def __post_init__(self) -> None:
        check_shadow_counts(self.name, self.n_shadows, self.n_targets)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return likelihood_ratio_attack(self, model, task, refs, ctx, unlearn_shadows=False)


@register_metric
@dataclass(frozen=True)
class ULiRA(Metric):
    """U-LiRA (Hayes, Shumailov, Triantafillou, Khalifa, Papernot, Inexact Unlearning Needs More Careful Evaluations
    to Avoid a False Sense of Privacy, SaTML 2025): LiRA whose "in" shadows were trained on x and then unlearned it
    with the method under test; AUC ≈ 0.5 means the unlearned model is indistinguishable from never having seen x."""

    n_shadows: int = 16
    n_targets: int = 500
    fixed_variance: bool = True
    seed: int = 0
    floor: float = 0.02

    name = "u_lira"
    version = "2"  # 2: its evidence is reported only on class forgetting
    needs = SHADOW_NEEDS
    paper = "Hayes et al., SaTML 2025"
    modalities = ("classifier",)
    noise_floor_skip = True

    def __post_init__(self) -> None:
        check_shadow_counts(self.name, self.n_shadows, self.n_targets)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return likelihood_ratio_attack(self, model, task, refs, ctx, unlearn_shadows=True)
