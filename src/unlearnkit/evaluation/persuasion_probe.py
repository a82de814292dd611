"""persuasion_probe: authority, expert-endorsement, emotional and logical framings of the forgotten questions; recall
relative to the plain question, next to the retrained models."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..lm.probes import PERSUASION, TEMPLATE_VERSION
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._probes import against, check_params, check_templates, facts_of, kind_scores, records_missing, strongest, table_for
from .base import EvalContext, Metric, register_metric

FRAMINGS = tuple(k for k in PERSUASION if k != "plain")


@register_metric
@dataclass(frozen=True)
class PersuasionProbe(Metric):
    """Persuasion probes (Limits of Obliviate / SKeB: persuasive framings of a question recover unlearned knowledge):
    each forgotten question under an authority, expert-endorsement, emotional and logical framing, and plain
    (``lm.probes.PERSUASION``; target: the answer). Per framing: ROUGE-L recall of the greedy answer and P̄(answer |
    prompt), and the lift over the plain question (``lift_forget_{framing}_{score}`` = framed − plain), on the model
    and on the retrained models.

    Evidence (robustness, "higher" remembers): max over framings of the lift's excess over the retrained models'
    (``score``): how much more a framing brings back on this model than on retraining, relative to the plain
    question. A model that still answers plainly shows no lift (answer_prob and rouge_l catch it); a model whose
    plain answers look forgotten but whose framed ones return is above the band."""

    framings: tuple[str, ...] = FRAMINGS
    score: str = "rouge_l"
    splits: tuple[str, ...] = ("forget",)
    max_new_tokens: int = 32
    floor: float = 0.05
    templates: str = TEMPLATE_VERSION

    name = "persuasion_probe"
    needs = frozenset({"retrained"})
    paper = "Limits of Obliviate / SKeB persuasion probes (issue 24 seeds)"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_params(self.name, self.splits, self.score, self.max_new_tokens, self.floor)
        check_templates(self.name, self.templates)
        unknown = [f for f in self.framings if f not in FRAMINGS]
        if unknown or not self.framings or len(set(self.framings)) != len(self.framings):
            raise ConfigError(f"persuasion_probe: framings must be distinct names of {list(FRAMINGS)}, got {list(self.framings)}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task, knowledge=True)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        facts = facts_of(task)
        table, kinds, left_out = table_for(task, "PERSUASION", PERSUASION, ("plain", *self.framings), self.name)

        def fn(m: nn.Module, split):  # type: ignore[no-untyped-def]
            return {k: kind_scores(ctx, m, split, facts, k, table[k], self.max_new_tokens, self.name) for k in kinds}

        values, per_example, ref, reference = against(ctx, model, task, refs, self.splits, fn, self.name)
        lifts: dict[str, float] = {}
        for split in self.splits:
            for f in self.framings:
                for score in ("prob", "rouge_l"):
                    if f"{split}_{f}_{score}" not in values:  # a split the task lacks, or (no oracle) not the forget split
                        continue
                    own = values[f"{split}_{f}_{score}"] - values[f"{split}_plain_{score}"]
                    other = values[f"{ref}{split}_{f}_{score}"] - values[f"{ref}{split}_plain_{score}"]
                    lifts.update({f"lift_{split}_{f}_{score}": own, f"{ref}lift_{split}_{f}_{score}": other,
                                  f"excess_lift_{split}_{f}_{score}": own - other})
        values = {**values, **lifts}
        best, which = strongest(values, self.framings, self.score, prefix="excess_lift_")
        values["forget_max_excess_lift"] = best
        evidence = (Evidence(key="persuasion_probe.forget_max_excess_lift", value=best, role="robustness", remembers="higher",
                             floor=self.floor, bounds=(-2.0, 2.0)),)
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"strongest": which, "score": self.score, "template_version": TEMPLATE_VERSION,
                                 "max_new_tokens": self.max_new_tokens, **reference, **left_out})
