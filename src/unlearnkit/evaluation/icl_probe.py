"""icl_probe: the forgotten fact given back in the prompt, then a question that needs it — can the model use it as
a retrained one does (utility), and how much does it lift recall (reported)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..lm.probes import ICL, TEMPLATE_VERSION
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._probes import against, check_params, check_templates, facts_of, kind_scores, records_missing, table_for
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class IclProbe(Metric):
    """In-context reintroduction (Shumailov et al., "UnUnlearning: Unlearning is not sufficient for content regulation
    in advanced generative AI", 2024): the forgotten fact's answer sentence in the prompt, then the paraphrased
    question (target: the value), and the same question without it (``lm.probes.ICL``). Per kind: ROUGE-L recall of
    the greedy answer and P̄(value | prompt), and the lift in − without context, on the model and on the retrained
    models.

    Evidence role: **utility** ("higher" is better): the forget facts' in-context score. A retrained model reads the
    fact from the prompt; a removed model should too, so a value below the band (a model that refuses or garbles a
    fact even when given it) is over-forgetting. This is not leakage evidence: a fact given in context is answered
    by any competent model, which is UnUnlearning's point — unlearning cannot stop it. Both directions are reported:
    ``excess_forget_in_context_{score}`` (positive: uses the context more than retraining) and the lift's excess
    ``excess_lift_forget_{score}``.

    On real knowledge (``lm.probes.KNOWLEDGE_ICL``: 'Read this: the answer to "<question>" is <answer>', then the question)
    without a retrained oracle, the in-context score is read against the original model's in-context score on the facts it
    does not know (``info["no_oracle_levels"]``, which the no-oracle verdict bands this evidence around): a model that
    forgot the facts should still read them from the prompt as well as the original reads facts it never knew."""

    score: str = "rouge_l"
    splits: tuple[str, ...] = ("forget",)
    max_new_tokens: int = 32
    floor: float = 0.05
    templates: str = TEMPLATE_VERSION

    name = "icl_probe"
    needs = frozenset({"retrained"})
    higher_is_better = True
    paper = "Shumailov et al., UnUnlearning, arXiv 2407.00106"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_params(self.name, self.splits, self.score, self.max_new_tokens, self.floor)
        check_templates(self.name, self.templates)

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task, knowledge=True)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        facts = facts_of(task)
        table, kinds, left_out = table_for(task, "ICL", ICL, tuple(ICL), self.name)

        def fn(m: nn.Module, split):  # type: ignore[no-untyped-def]
            return {k: kind_scores(ctx, m, split, facts, k, table[k], self.max_new_tokens, self.name) for k in kinds}

        values, per_example, ref, reference = against(ctx, model, task, refs, self.splits, fn, self.name)
        lifts: dict[str, float] = {}
        for split in self.splits:
            for score in ("prob", "rouge_l"):
                if f"{split}_in_context_{score}" not in values:
                    continue
                own = values[f"{split}_in_context_{score}"] - values[f"{split}_without_context_{score}"]
                other = values[f"{ref}{split}_in_context_{score}"] - values[f"{ref}{split}_without_context_{score}"]
                lifts.update({f"lift_{split}_{score}": own, f"{ref}lift_{split}_{score}": other, f"excess_lift_{split}_{score}": own - other})
        values = {**values, **lifts}
        evidence = (Evidence(key="icl_probe.forget_in_context", value=values[f"forget_in_context_{self.score}"], role="utility",
                             remembers="higher", floor=self.floor, bounds=(0.0, 1.0)),)
        # without an oracle, the level a model that never knew the facts reaches when given them: the original's in-context
        # score on the facts it does not know (its score on the facts it knows is higher, and would fail a perfect unlearner)
        levels = {"no_oracle_levels": {evidence[0].key: values[f"unknown_forget_in_context_{self.score}"]}} if ref == "unknown_" else {}
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"score": self.score, "template_version": TEMPLATE_VERSION, "max_new_tokens": self.max_new_tokens,
                                 **reference, **left_out, **levels})
