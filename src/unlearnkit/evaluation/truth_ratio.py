"""truth_ratio and forget_quality: how much more likely the model finds a correct (paraphrased) answer than wrong
ones, and the KS test of those ratios on the forget set against the retain model's (TOFU)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import (answer_prob, check_splits, finite_mean, finite_rows, forget_tr_score, outputs, prob_mean_score, qa_records_missing,
                  task_split, true_tr_score, truth_ratios)
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class TruthRatio(Metric):
    """Truth ratio (TOFU, Maini et al. 2024; OpenUnlearning's aggregates): per item tr = P̄_pert / P̄_para with
    P̄_pert = exp(−mean_j NLL̄(pert_j)) (the geometric mean of the perturbed answers' length-normalised
    probabilities) and P̄_para = exp(−NLL̄(paraphrased answer)) — the paraphrased answer is the "correct" one, for
    the neighbour facts too (theirs equals the original answer). Reported: forget = mean min(tr, 1/tr) ("closer to 1
    is better"), retain / neighbours = mean max(0, 1 − tr) ("true is better"); per-item tr for every split.

    Also reported: {split}_log_tr = mean_i log tr_i, and {split}_prob_mean = mean_i P_correct / (P_correct + P_wrong)
    = mean_i 1/(1 + tr_i), OpenUnlearning's ``prob_mean`` aggregate (its paper's "extent of knowledge": 1 = only the
    correct answer is likely, ½ = as likely as the wrong ones), with P_correct = P̄_para and P_wrong = P̄_pert as in tr.
    Items without a truth ratio (an answer with no token) are left out of every aggregate, counted in
    info["n_excluded"] and warned about. Evidence: the retain score (utility) only. The truth ratio
    has no direction that means "remembers" in every regime: a pretrained model fine-tuned on the facts prefers the
    paraphrased true answer (tr < 1, TOFU), while a small model trained from scratch never saw the paraphrase and
    prefers the perturbed answers, which share the trained template (tr > 1); and min(tr, 1/tr) also drops when
    unlearning pushes the model to prefer wrong answers (TOFU's gradient ascent rows). forget_quality carries the
    forget-set evidence, signed by the answer probability."""

    splits: tuple[str, ...] = ("forget", "retain", "neighbours")
    floor: float = 0.02

    name = "truth_ratio"
    higher_is_better = True
    paper = "Maini et al., TOFU, COLM 2024"
    version = "2"  # bump when its numbers change (2: adds the prob_mean aggregates; unscored items left out, counted)
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, "truth_ratio")

    def why_not_applicable(self, task: Task) -> str | None:
        return qa_records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        excluded: dict[str, int] = {}
        for name in self.splits:
            split = task_split(task, name, required=name in ("forget", "retain", "test"))
            if split is None:
                continue
            tr = truth_ratios(ctx, model, split)
            ok = finite_rows(tr, self.name, name, excluded)
            scored = tr[ok]
            if len(scored):
                values[name] = forget_tr_score(scored) if name == "forget" else true_tr_score(scored)
                values[f"{name}_log_tr"] = float(np.mean(np.log(scored)))
                values[f"{name}_prob_mean"] = prob_mean_score(scored)
            else:
                values.update({name: float("nan"), f"{name}_log_tr": float("nan"), f"{name}_prob_mean": float("nan")})
            per_example[f"tr.{name}"] = (split.ids, tr)
        evidence = []
        if "retain" in values:
            evidence.append(Evidence(key="truth_ratio.retain", value=values["retain"], role="utility", remembers="higher", floor=self.floor))
        return self.result(values, per_example=per_example, evidence=tuple(evidence), info={"n_excluded": excluded})


def ks_pvalue_at(statistic: float, n: int) -> float:
    """The two-sided p-value the KS statistic would have with two samples of ``n`` items each (scipy's asymptotic
    mode: kstwo.sf(D, round(n·n/(n+n))))."""
    from scipy.stats import kstwo

    return float(kstwo.sf(statistic, round(n * n / (2 * n))))


@register_metric
@dataclass(frozen=True)
class ForgetQuality(Metric):
    """Forget quality (TOFU, Maini et al. 2024): scipy.stats.ks_2samp of the model's per-item forget truth ratios
    against the retain model's (refs.retrained, computed here on the same items — never a stored constant);
    reported: p_value (TOFU's number, higher = closer to retraining), the KS statistic D (the effect size), n,
    and p_value_at_n{size}: the p-value the same D would have at other forget-set sizes (``sizes``; default 40, 200
    and 400 are TOFU's forget01/05/10 item counts; scipy's asymptotic mode, kstwo at n_eff = n/2), because the
    p-value depends on n as much as on the model (OpenUnlearning #142).

    Evidence (inferred): signed_statistic = D · sign, sign = +1 when the model's mean forget answer probability is at
    least the retain model's (it knows the forget answers more: the distance is under-forgetting) and −1 otherwise
    (over-forgetting). D alone is a distance, and the truth ratio has no fixed direction (see truth_ratio), so the
    direction comes from the answer probability. The noise floor gives its band from the same statistic between
    retain seeds. retrained_statistic = D between the first two retain seeds, if there are two. Items without a truth
    ratio (an answer with no token) are left out of each sample, counted in info["n_excluded"] and warned about; n is
    the number of the model's items tested."""

    sizes: tuple[int, ...] = (10, 40, 200, 400)
    floor: float = 0.05

    name = "forget_quality"
    higher_is_better = True
    needs = frozenset({"retrained"})
    paper = "Maini et al., TOFU, COLM 2024"
    version = "2"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if any(n < 2 for n in self.sizes):
            raise ConfigError(f"forget_quality: sizes must be >= 2, got {list(self.sizes)}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return qa_records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        from scipy.stats import ks_2samp

        retrained = refs.require("retrained", by="metric 'forget_quality'")
        forget = task_split(task, "forget")
        own = truth_ratios(ctx, model, forget)
        ref = truth_ratios(ctx, retrained, forget)
        excluded: dict[str, int] = {}
        ok_own, ok_ref = finite_rows(own, self.name, "forget", excluded), finite_rows(ref, self.name, "retrained forget", excluded)
        if not (ok_own.any() and ok_ref.any()):
            raise ConfigError("forget_quality: no forget item has a truth ratio (every answer variant is without tokens).")
        res = ks_2samp(own[ok_own], ref[ok_ref])
        p_own = finite_mean(answer_prob(outputs(ctx, model, forget)), self.name, "forget answer", excluded)
        p_ref = finite_mean(answer_prob(outputs(ctx, retrained, forget)), self.name, "retrained forget answer", excluded)
        values = {"p_value": float(res.pvalue), "statistic": float(res.statistic),
                  "signed_statistic": float(res.statistic) * (1.0 if p_own >= p_ref else -1.0), "n": float(ok_own.sum())}
        for n in self.sizes:
            values[f"p_value_at_n{n}"] = ks_pvalue_at(float(res.statistic), n)
        seeds = refs.retrained_seeds
        if len(seeds) > 1:
            second = truth_ratios(ctx, seeds[1], forget)
            ok = finite_rows(second, self.name, "second retrained forget", excluded)
            values["retrained_statistic"] = float(ks_2samp(second[ok], ref[ok_ref]).statistic) if ok.any() else float("nan")
        else:
            values["retrained_statistic"] = float("nan")
        evidence = (Evidence(key="forget_quality.signed_statistic", value=values["signed_statistic"], role="forget", remembers="higher",
                             floor=self.floor, bounds=(-1.0, 1.0)),)
        return self.result(values, per_example={"tr.forget": (forget.ids, own), "retrained_tr.forget": (forget.ids, ref)},
                           evidence=evidence, info={"test": "scipy.stats.ks_2samp, two-sided, method auto (exact for small n)",
                                                    "n_retrained": len(seeds), "n_excluded": excluded})
