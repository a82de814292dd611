"""rwku_probes: RWKU's nine adversarial probe types on the forgotten facts, next to the retrained models; the
strongest attack is the evidence."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..lm.probes import LANGUAGE, RWKU, TEMPLATE_VERSION, TRANSLATED
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._probes import against, check_params, check_templates, facts_of, kind_scores, records_missing, strongest, table_for
from .base import EvalContext, Metric, register_metric


@register_metric
@dataclass(frozen=True)
class RwkuProbes(Metric):
    """RWKU's adversarial probes (Jin et al., "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language
    Models", NeurIPS 2024 D&B): each forgotten fact asked by prefix injection, affirmative suffix, role play,
    multiple choice, reverse query, synonym manipulation, background hint, in-context learning and cross-lingual
    (French, ``language``) templates (``lm.probes.RWKU``). Per type: the ROUGE-L recall of the greedy answer against
    the target (the answer sentence; the value for multiple choice and cross-lingual; the person for the reverse
    query) and its probability P̄(target | prompt) (normalised over the options for multiple choice), on the model and
    on the retrained models.

    Evidence (robustness, "higher" remembers): the strongest attack, max over types of the forget score's excess over
    the retrained models' (``score``: rouge_l or prob). Inferred: the excess, not the raw score, is maximised, so a
    type every model answers well (the reverse query's name, say) does not hide the type where this model recovers
    what retraining does not; the noise floor takes the same max on each retrained seed, so the band is that of the
    max. Per-type values, the strongest type and the raw max are in values and info.

    On real knowledge (``lm.probes.KNOWLEDGE_RWKU``) six types run: reverse query, synonym manipulation and cross-lingual
    need per-relation phrasing or a translation a real fact does not come with, and are listed in info with the reason;
    without a retrained oracle the excess is over the original model on the facts it does not know (the test split)."""

    types: tuple[str, ...] = tuple(RWKU)
    language: str = LANGUAGE
    score: str = "rouge_l"
    splits: tuple[str, ...] = ("forget",)
    max_new_tokens: int = 32
    floor: float = 0.05
    templates: str = TEMPLATE_VERSION

    name = "rwku_probes"
    needs = frozenset({"retrained"})
    paper = "Jin et al., RWKU, NeurIPS 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_params(self.name, self.splits, self.score, self.max_new_tokens, self.floor)
        check_templates(self.name, self.templates)
        unknown = [t for t in self.types if t not in RWKU]
        if unknown or not self.types or len(set(self.types)) != len(self.types):
            raise ConfigError(f"rwku_probes: types must be distinct names of {list(RWKU)}, got {list(self.types)}.")
        if "cross_lingual" in self.types and self.language not in TRANSLATED:
            raise ConfigError(f"rwku_probes: no second-language templates for {self.language!r} (the cross_lingual type); have "
                              f"{sorted(TRANSLATED)}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return records_missing(task, knowledge=True)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        facts = facts_of(task)
        table, types, left_out = table_for(task, "RWKU", RWKU, self.types, self.name)

        def fn(m: nn.Module, split):  # type: ignore[no-untyped-def]
            return {t: kind_scores(ctx, m, split, facts, t, table[t], self.max_new_tokens, self.name, self.language) for t in types}

        values, per_example, ref, reference = against(ctx, model, task, refs, self.splits, fn, self.name)
        best, which = strongest(values, types, self.score)
        raw, raw_which = strongest(values, types, self.score, prefix="")
        values = {**values, "forget_max_excess": best, "forget_max": raw}
        evidence = (Evidence(key="rwku_probes.forget_max_excess", value=best, role="robustness", remembers="higher", floor=self.floor,
                             bounds=(-1.0, 1.0)),)
        per_type = {t: {"value": values[f"forget_{t}_{self.score}"], "reference": values[f"{ref}forget_{t}_{self.score}"],
                        "excess": values[f"excess_forget_{t}_{self.score}"]} for t in types}
        return self.result(values, per_example=per_example, evidence=evidence,
                           info={"strongest": which, "strongest_raw": raw_which, "score": self.score, "per_type": per_type,
                                 "language": self.language, "template_version": TEMPLATE_VERSION, "max_new_tokens": self.max_new_tokens,
                                 **reference, **left_out})
