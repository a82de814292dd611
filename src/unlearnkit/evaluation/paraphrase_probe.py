"""paraphrase_probe: the forgotten facts asked another way — answer probability and ROUGE-L of the original answer
under the paraphrased question, next to the retain model's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..lm.text import TokenData
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from ._lm import answer_prob, check_splits, finite_mean, greedy_answers, outputs, qa_records_missing, rouge_l, task_split, text_data
from .base import EvalContext, Metric, register_metric

_CACHE: dict[str, Split] = {}


def paraphrased_question(split: Split) -> Split:
    """The split's items (same ids and order) as (paraphrased question, original answer) pairs."""
    if split.fingerprint not in _CACHE:
        data = text_data(split)
        pairs = [(r.paraphrased_question, r.answer) for r in data.records]
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[split.fingerprint] = Split.create(f"{split.name}:paraphrased_question",
                                                 TokenData.from_pairs(pairs, data.y.tolist(), data.records, data.codec), split.ids)
    return _CACHE[split.fingerprint]


@register_metric
@dataclass(frozen=True)
class ParaphraseProbe(Metric):
    """Paraphrase probe (RWKU's rephrased probes, Jin et al., NeurIPS 2024 D&B; TOFU's paraphrased questions): the
    original answer's probability P̄(a | q') and the ROUGE-L recall of the greedy answer to q' against a, where q' is
    the paraphrased question; for forget (and retain, for context), next to the mean over the retain models.
    Also the plain-question probability P̄(a | q) and the TOFU ``paraphrase`` variant P̄(a' | q').

    Evidence (robustness, "higher" remembers): the forget P̄(a | q'). Next to answer_prob's forget evidence this is the
    "suppressed" pattern: plain questions inside the retrain band while the paraphrased question, above it, still
    brings the answer back. Inferred: the original (not the paraphrased) answer is scored, so both forms ask for the
    same string. Items without a score (an empty answer has no ROUGE-L recall) are left out of the means, counted in
    info["n_excluded"] (the model's) and info["retrained_n_excluded"] and warned about."""

    splits: tuple[str, ...] = ("forget", "retain")
    max_new_tokens: int = 32
    floor: float = 0.05  # smallest band half-width (tens of items per split)

    name = "paraphrase_probe"
    needs = frozenset({"retrained"})
    paper = "Jin et al., RWKU, NeurIPS 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, self.name)
        if "forget" not in self.splits:
            raise ConfigError("paraphrase_probe: splits must include 'forget'.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"paraphrase_probe: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def scores(self, ctx: EvalContext, model: nn.Module, split: Split) -> dict[str, np.ndarray]:
        from ..data.profiles import variant

        probe = paraphrased_question(split)
        gen, gold = greedy_answers(ctx, model, probe, self.max_new_tokens)  # gold = the original answer
        return {"prob": answer_prob(outputs(ctx, model, probe)), "rouge_l": rouge_l(gold, gen, "recall"),
                "plain_prob": answer_prob(outputs(ctx, model, split)),
                "paraphrase_prob": answer_prob(outputs(ctx, model, variant(split, "paraphrase")))}

    def why_not_applicable(self, task: Task) -> str | None:
        return qa_records_missing(task)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'paraphrase_probe'")
        values: dict[str, float] = {}
        per_example = {}
        excluded: dict[str, int] = {}
        ref_excluded: dict[str, int] = {}
        for name in self.splits:
            split = task_split(task, name, required=name in ("forget", "retain", "test"))
            if split is None:
                continue
            own = self.scores(ctx, model, split)
            refs_scores = [self.scores(ctx, r, split) for r in refs.retrained_seeds]  # retrained = the first of them
            for key, v in own.items():
                values[f"{name}_{key}"] = finite_mean(v, self.name, f"{name} {key}", excluded)
                values[f"retrained_{name}_{key}"] = float(np.mean([finite_mean(s[key], self.name, f"{name} {key}", ref_excluded)
                                                                   for s in refs_scores]))
            values[f"{name}_excess_prob"] = values[f"{name}_prob"] - values[f"retrained_{name}_prob"]
            values[f"{name}_excess_rouge_l"] = values[f"{name}_rouge_l"] - values[f"retrained_{name}_rouge_l"]
            per_example[f"prob.{name}"] = (split.ids, own["prob"])
            per_example[f"rouge_l.{name}"] = (split.ids, own["rouge_l"])
        evidence = (Evidence(key="paraphrase_probe.forget_prob", value=values["forget_prob"], role="robustness", remembers="higher",
                             floor=self.floor, bounds=(0.0, 1.0)),)
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"n_retrained": len(refs.retrained_seeds), "max_new_tokens": self.max_new_tokens,
                                 "n_excluded": excluded, "retrained_n_excluded": ref_excluded})
