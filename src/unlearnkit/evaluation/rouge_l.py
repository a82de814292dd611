"""rouge_l: ROUGE-L recall of the greedy answer against the gold answer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import check_splits, finite_mean, greedy_answers, rouge_l, task_split
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class RougeL(Metric):
    """ROUGE-L recall (TOFU, Maini et al. 2024; OpenUnlearning's ``*_Q_A_ROUGE``): LCS(gold, generated) / |gold| in
    words (rouge_score, ``use_stemmer`` on) between the greedy answer to the question (at most ``max_new_tokens``
    new tokens, cut at EOS) and the gold answer; mean over forget / retain / neighbours. OpenUnlearning generates
    up to 200 new tokens; 32 covers the profiles' one-sentence answers (a longer generation can only add words
    that recall ignores, unless the gold answer is cut). Gold = the decoded answer tokens (the same codec path as
    the generation). An item whose gold answer is empty has no recall (0/0, NaN): it is left out of the mean, counted in
    info["n_excluded"] and warned about."""

    splits: tuple[str, ...] = ("forget", "retain", "neighbours")
    max_new_tokens: int = 32
    use_stemmer: bool = True
    floor: float = 0.15  # smallest band half-width: generated answers on tens of items move ROUGE by ~0.1 between retrain seeds

    name = "rouge_l"
    higher_is_better = True
    paper = "Maini et al., TOFU, COLM 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, "rouge_l")
        if self.max_new_tokens < 1:
            raise ConfigError(f"rouge_l: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        examples: dict[str, list[dict[str, str]]] = {}
        excluded: dict[str, int] = {}
        for name in self.splits:
            split = task_split(task, name, required=name in ("forget", "retain", "test"))
            if split is None:
                continue
            gen, gold = greedy_answers(ctx, model, split, self.max_new_tokens)
            r = rouge_l(gold, gen, "recall", use_stemmer=self.use_stemmer)
            values[name] = finite_mean(r, self.name, name, excluded)
            per_example[f"recall.{name}"] = (split.ids, r)
            examples[name] = [{"gold": g, "generated": p} for g, p in zip(gold[:3], gen[:3])]
        evidence = []
        if "forget" in values:
            evidence.append(Evidence(key="rouge_l.forget", value=values["forget"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)))
        if "retain" in values:
            evidence.append(Evidence(key="rouge_l.retain", value=values["retain"], role="utility", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)))
        if "general" in values:  # the knowledge data's general-ability probe, when listed
            evidence.append(Evidence(key="rouge_l.general", value=values["general"], role="utility", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)))
        return self.result(values, per_example=per_example, evidence=tuple(evidence),
                           info={"max_new_tokens": self.max_new_tokens, "use_stemmer": self.use_stemmer, "examples": examples,
                                 "n_excluded": excluded})
