"""Shared pieces of the inference-time guards (ECO, GUARD): the task's prompts, the prompt classifier (logistic
regression on the model's own mean hidden states, threshold chosen on held-out prompts, false-positive rates on
retain and neighbour prompts), and the measured inference overhead per generated token."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, EmptySelection
from ..lm.guard import GuardedLM, check_threshold, choose_threshold
from ..lm.text import IGNORE, pad_batch
from ..types import Split, Task


def split_prompts(split: Split) -> list[list[int]]:
    """Per example, its prompt token ids (the unlabelled tokens before the answer)."""
    data = split.data
    if not hasattr(data, "labels") or not hasattr(data, "attention_mask"):
        raise ConfigError(f"Split {split.name!r} is not tokenised question-answer text; a guard needs prompts.")
    out = []
    for i in range(len(data.x)):
        n = int(data.attention_mask[i].sum())
        k = int((data.labels[i, :n] == IGNORE).sum())
        out.append([int(t) for t in data.x[i, :k].tolist()])
    return out


def paraphrased_prompts(split: Split) -> list[list[int]]:
    """The prompts of the split's paraphrased questions, when its records have them (else [])."""
    data = split.data
    records = getattr(data, "records", None) or []
    if not records or not hasattr(records[0], "paraphrased_question"):
        return []
    return [data.codec.encode_prompt(r.paraphrased_question) for r in records]


@torch.no_grad()
def prompt_features(model: nn.Module, prompts: Sequence[Sequence[int]], *, device: str | torch.device, pad_id: int = 0,
                    batch_size: int = 16) -> np.ndarray:
    """The classifier's features: the model's last hidden state averaged over each prompt's tokens (n, d), float64."""
    was = model.training
    model.eval()
    feats = []
    try:
        for start in range(0, len(prompts), batch_size):
            ids, mask = pad_batch(prompts[start : start + batch_size], pad_id, device)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].float()
            w = mask[..., None].float()
            feats.append(((hidden * w).sum(1) / w.sum(1).clamp(min=1)).cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(feats).astype(np.float64) if feats else np.zeros((0, 0))


@dataclass(frozen=True)
class PromptClassifier:
    """σ(w·x + b) on raw features (the standardisation folded into w and b) and the threshold it fires at."""

    weight: np.ndarray
    bias: float
    threshold: float
    info: dict[str, Any]
    heldout: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # rows of forget, retain

    def proba(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(np.asarray(x, np.float64) @ self.weight + self.bias)))


def train_prompt_classifier(forget: np.ndarray, retain: np.ndarray, *, rng: np.random.Generator, threshold: float | None,
                            holdout_fraction: float, C: float, who: str) -> PromptClassifier:
    """Logistic regression (scikit-learn, standardised features, balanced class weights) of forget (1) vs retain (0)
    prompt features, fitted on all but a held-out ``holdout_fraction`` of each side; the threshold is ``threshold`` when
    given, else chosen on the held-out prompts (``choose_threshold``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if threshold is not None:
        check_threshold(threshold, who)
    if len(forget) == 0:
        raise EmptySelection(f"{who}: the forget-prompt set is empty; a prompt classifier needs forget prompts to learn what to guard.")
    if len(retain) == 0:
        raise EmptySelection(f"{who}: the retain-prompt set is empty; a prompt classifier needs retain prompts to learn what to let through.")
    n_hold = [int(round(holdout_fraction * len(s))) if len(s) >= 2 else 0 for s in (forget, retain)]
    if threshold is None and min(n_hold) < 1:
        raise ConfigError(f"{who}: choosing the threshold needs held-out forget and retain prompts (holdout_fraction={holdout_fraction} "
                          f"of {len(forget)} forget and {len(retain)} retain prompts holds out {n_hold}); give threshold or more prompts.")
    pf, pr = rng.permutation(len(forget)), rng.permutation(len(retain))
    hold_f, hold_r = pf[: n_hold[0]], pr[: n_hold[1]]
    fit_f, fit_r = pf[n_hold[0]:], pr[n_hold[1]:]
    x = np.r_[forget[fit_f], retain[fit_r]]
    y = np.r_[np.ones(len(fit_f)), np.zeros(len(fit_r))]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(scaler.transform(x), y)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = clf.coef_[0] / scale
    bias = float(clf.intercept_[0] - (clf.coef_[0] * scaler.mean_ / scale).sum())
    tmp = PromptClassifier(weight, bias, 0.5, {})
    chosen = threshold if threshold is not None else choose_threshold(tmp.proba(forget[hold_f]), tmp.proba(retain[hold_r]))
    info = {"features": "mean last hidden state over the prompt tokens", "model": "logistic regression (standardised, balanced)",
            "C": C, "n_fit": {"forget": int(len(fit_f)), "retain": int(len(fit_r))},
            "n_heldout": {"forget": int(len(hold_f)), "retain": int(len(hold_r))},
            "threshold": chosen, "threshold_from": "given" if threshold is not None else "held-out prompts (max TPR − FPR)"}
    return PromptClassifier(weight, bias, chosen, info, (hold_f, hold_r))


def rate(p: np.ndarray, threshold: float) -> float | None:
    return float((np.asarray(p) >= threshold).mean()) if len(p) else None


def classifier_report(model: nn.Module, task: Task, clf: PromptClassifier, feats: dict[str, np.ndarray], held: dict[str, np.ndarray],
                      *, device: str | torch.device, pad_id: int) -> dict[str, Any]:
    """True-positive rates on forget prompts (all, held-out, paraphrased questions) and false-positive rates on retain
    prompts (all, held-out) and on the neighbour prompts (the task's ``probe:neighbours``: related facts to keep)."""
    t = clf.threshold
    out: dict[str, Any] = {"tpr_forget": rate(clf.proba(feats["forget"]), t), "fpr_retain": rate(clf.proba(feats["retain"]), t),
                           "tpr_forget_heldout": rate(clf.proba(held["forget"]), t), "fpr_retain_heldout": rate(clf.proba(held["retain"]), t)}
    para = paraphrased_prompts(task.forget)
    if para:
        out["tpr_forget_paraphrased"] = rate(clf.proba(prompt_features(model, para, device=device, pad_id=pad_id)), t)
    neighbours = task.splits().get("probe:neighbours")
    if neighbours is not None and len(neighbours):
        out["fpr_neighbours"] = rate(clf.proba(prompt_features(model, split_prompts(neighbours), device=device, pad_id=pad_id)), t)
        out["n_neighbours"] = int(len(neighbours))
    return out


def fit_classifier(model: nn.Module, task: Task, *, rng: np.random.Generator, threshold: float | None, holdout_fraction: float,
                   C: float, who: str, device: str | torch.device, pad_id: int) -> tuple[PromptClassifier, dict[str, Any]]:
    """The task's prompt classifier and its report (rates on forget, retain and neighbour prompts)."""
    fp, rp = split_prompts(task.forget), split_prompts(task.retain)
    if not fp:
        raise EmptySelection(f"{who}: the forget-prompt set is empty; a prompt classifier needs forget prompts to learn what to guard.")
    forget = prompt_features(model, fp, device=device, pad_id=pad_id)
    retain = prompt_features(model, rp, device=device, pad_id=pad_id)
    clf = train_prompt_classifier(forget, retain, rng=rng, threshold=threshold, holdout_fraction=holdout_fraction, C=C, who=who)
    hold_f, hold_r = clf.heldout
    report = classifier_report(model, task, clf, {"forget": forget, "retain": retain},
                               {"forget": forget[hold_f], "retain": retain[hold_r]}, device=device, pad_id=pad_id)
    return clf, {**clf.info, **report}


def check_guard_params(method: Any) -> None:
    """The detector / classifier settings every guard shares (``C`` only for guards with a logistic classifier)."""
    if method.threshold is not None:
        check_threshold(method.threshold, method.name)
    if not (isinstance(method.holdout_fraction, (int, float)) and 0.0 < method.holdout_fraction < 1.0):
        raise ConfigError(f"{method.name}: holdout_fraction must be in (0, 1), got {method.holdout_fraction!r}.")
    if hasattr(method, "C") and not (isinstance(method.C, (int, float)) and np.isfinite(method.C) and method.C > 0):
        raise ConfigError(f"{method.name}: C (inverse regularisation of the classifier) must be a finite number > 0, got {method.C!r}.")
    if isinstance(method.latency_tokens, bool) or not (isinstance(method.latency_tokens, int) and method.latency_tokens >= 1):
        raise ConfigError(f"{method.name}: latency_tokens must be an integer >= 1, got {method.latency_tokens!r}.")


def measure_overhead(guard: GuardedLM, task: Task, adapter: Any, *, device: str | torch.device, max_new_tokens: int,
                     n_prompts: int = 8, repeats: int = 2) -> dict[str, Any]:
    """Latency per generated token, greedy decoding of up to ``n_prompts`` forget and as many retain prompts (one batch
    each), for the guard and for its bare model; the best of ``repeats`` timings of each (wall-clock, this machine), the
    guard's caches emptied before each."""
    prompts = split_prompts(task.forget)[:n_prompts] + split_prompts(task.retain)[:n_prompts]

    def timed(model: nn.Module) -> tuple[float, int]:
        best, tokens = float("inf"), 0
        for _ in range(repeats):
            if isinstance(model, GuardedLM):
                model.reset_caches()  # every timing starts cold
            t0 = time.perf_counter()
            gen = adapter.generate(model, prompts, max_new_tokens=max_new_tokens, device=device)
            best = min(best, time.perf_counter() - t0)
            tokens = sum(min(len(g) + 1, max_new_tokens) for g in gen)  # + the EOS that ended it
        return best, max(tokens, 1)

    bare_s, bare_n = timed(guard.inner)
    guard_s, guard_n = timed(guard)
    bare_ms, guard_ms = 1000 * bare_s / bare_n, 1000 * guard_s / guard_n
    return {"bare_ms_per_token": bare_ms, "guarded_ms_per_token": guard_ms, "overhead_ratio": guard_ms / bare_ms if bare_ms > 0 else None,
            "prompts": len(prompts), "max_new_tokens": max_new_tokens, "tokens": {"bare": bare_n, "guarded": guard_n},
            "how": f"greedy decoding, best of {repeats}, wall-clock on {device}"}


__all__ = ["PromptClassifier", "check_guard_params", "choose_threshold", "fit_classifier", "measure_overhead", "paraphrased_prompts",
           "prompt_features", "split_prompts", "train_prompt_classifier"]
