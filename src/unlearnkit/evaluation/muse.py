"""MUSE's four per-model metrics (Shi et al., 2024), as OpenUnlearning computes them: VerbMem on the forget set,
KnowMem on the forget and on the retain set, and PrivLeak. They read the probes of the ``muse`` data source and
compose the shared LM pieces (greedy answers, ROUGE-L, Min-K%, the ROC summary, privleak's formula).

MUSE's other two criteria are protocols over several models, not metrics of one: **scalability** re-runs the four
metrics after unlearning forget sets of growing size (MUSE-News ``scal/forget_1..4``: one task per size, data source
parameter ``forget_config: scal``), **sustainability** after successive requests (``sust/forget_1..4``, each
unlearning run starting from the previous run's model). README "TOFU, MUSE and WMDP" gives the commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from ._lm import greedy_answers, rouge_l
from .base import EvalContext, Metric, register_metric, roc_summary
from .text_mia import MinK, check_k, privleak_value

KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")  # OpenUnlearning's knowmem stop words (and MUSE's)


def muse_probe(task: Task, name: str) -> Split:
    split = task.splits().get(f"probe:{name}")
    if split is None:
        raise ConfigError(f"Task {task.name!r} has no MUSE set {name!r} (probe:{name}); use the muse data source.")
    return split


def missing_probes(task: Task, names: Sequence[str]) -> str | None:
    lacking = [n for n in names if f"probe:{n}" not in task.splits()]
    return f"needs MUSE's {', '.join(lacking)} (use the muse data source)" if lacking else None


def cut_at(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of ``stops``, stripped (OpenUnlearning's stop-word cut)."""
    for word in stops:
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()


def rouge_f1_of(ctx: EvalContext, model: nn.Module, split: Split, max_new_tokens: int, stops: Sequence[str],
                use_stemmer: bool) -> tuple[np.ndarray, list[str], list[str]]:
    """Per item, ROUGE-L F1 of the greedy continuation (cut at ``stops``) against the gold text; and both texts."""
    gen, gold = greedy_answers(ctx, model, split, max_new_tokens)
    gen = [cut_at(g, stops) for g in gen]
    return rouge_l(gold, gen, "fmeasure", use_stemmer=use_stemmer), gen, gold


@dataclass(frozen=True)
class _RougeSpec:
    probe: str
    max_new_tokens: int
    stops: tuple[str, ...]


def _rouge_result(metric: Any, spec: _RougeSpec, model: nn.Module, task: Task, ctx: EvalContext, role: str, remembers: str) -> MetricResult:
    split = muse_probe(task, spec.probe)
    r, gen, gold = rouge_f1_of(ctx, model, split, spec.max_new_tokens, spec.stops, metric.use_stemmer)
    value = float(np.mean(r))
    evidence = (Evidence(key=f"{metric.name}.rouge_l_f1", value=value, role=role, remembers=remembers, floor=metric.floor,  # type: ignore[arg-type]
                         bounds=(0.0, 1.0)),)
    return metric.result({"rouge_l_f1": value}, per_example={f"rouge_l_f1.{spec.probe}": (split.ids, r)}, evidence=evidence,
                         info={"max_new_tokens": spec.max_new_tokens, "use_stemmer": metric.use_stemmer,
                               "examples": [{"gold": g, "generated": p} for g, p in zip(gold[:3], gen[:3])]})


def _check_tokens(name: str, n: int) -> None:
    if n < 1:
        raise ConfigError(f"{name}: max_new_tokens must be >= 1, got {n}.")


@register_metric
@dataclass(frozen=True)
class MuseVerbMem(Metric):
    """VerbMem (MUSE, Shi et al., 2024): mean ROUGE-L F1 of the greedy continuation of each forget passage's prompt vs its true text.

    Greedy, ``max_new_tokens`` = 128 new tokens (MUSE and OpenUnlearning), against the ground-truth continuation
    ``gt`` of ``verbmem/forget``; ROUGE with the stemmer as OpenUnlearning (MUSE's own code: without, ``use_stemmer:
    false``). Lower = less verbatim memorisation; the retrained model's value is the target. MUSE reports ×100."""

    max_new_tokens: int = 128
    use_stemmer: bool = True
    floor: float = 0.05

    name = "muse_verbmem"
    higher_is_better = False
    paper = "Shi et al., MUSE: Machine Unlearning Six-Way Evaluation for Language Models, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        _check_tokens(self.name, self.max_new_tokens)

    def why_not_applicable(self, task: Task) -> str | None:
        return missing_probes(task, ["verbmem_forget"])

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return _rouge_result(self, _RougeSpec("verbmem_forget", self.max_new_tokens, ()), model, task, ctx, "forget", "higher")


@register_metric
@dataclass(frozen=True)
class MuseKnowMemForget(Metric):
    """KnowMem on the forget set (MUSE, Shi et al., 2024): mean ROUGE-L F1 of greedy answers to ``knowmem/forget_qa`` after the in-context examples.

    The question is prompted after the ``forget_qa_icl`` question–answer examples (the data source's codec
    template); greedy, ``max_new_tokens`` = 32, the answer cut at "\\n\\n", "\\nQuestion" or "Question:"; ROUGE-L F1
    with the stemmer (OpenUnlearning). Lower = less knowledge of the forget set; the retrained model's is the target."""

    max_new_tokens: int = 32
    use_stemmer: bool = True
    floor: float = 0.05

    name = "muse_knowmem_forget"
    higher_is_better = False
    paper = "Shi et al., MUSE: Machine Unlearning Six-Way Evaluation for Language Models, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        _check_tokens(self.name, self.max_new_tokens)

    def why_not_applicable(self, task: Task) -> str | None:
        return missing_probes(task, ["knowmem_forget"])

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return _rouge_result(self, _RougeSpec("knowmem_forget", self.max_new_tokens, KNOWMEM_STOP), model, task, ctx, "forget", "higher")


@register_metric
@dataclass(frozen=True)
class MuseKnowMemRetain(Metric):
    """KnowMem on the retain set (MUSE, Shi et al., 2024): the utility criterion, KnowMem on ``knowmem/retain_qa`` after ``retain_qa_icl``.

    As ``muse_knowmem_forget`` (greedy, 32 new tokens, the same stop words, ROUGE-L F1 with the stemmer) on the
    retain questions. Higher = more utility kept."""

    max_new_tokens: int = 32
    use_stemmer: bool = True
    floor: float = 0.05

    name = "muse_knowmem_retain"
    higher_is_better = True
    paper = "Shi et al., MUSE: Machine Unlearning Six-Way Evaluation for Language Models, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        _check_tokens(self.name, self.max_new_tokens)

    def why_not_applicable(self, task: Task) -> str | None:
        return missing_probes(task, ["knowmem_retain"])

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return _rouge_result(self, _RougeSpec("knowmem_retain", self.max_new_tokens, KNOWMEM_STOP), model, task, ctx, "utility", "higher")


@register_metric
@dataclass(frozen=True)
class MusePrivLeak(Metric):
    """PrivLeak (MUSE, Shi et al., 2024): (AUC'_model − AUC'_retain)/AUC'_retain × 100 of Min-40% on ``privleak/forget`` vs ``privleak/holdout``.

    AUC' = 1 − AUC of the Min-K% Prob attack (``min_k``'s score, k = 0.4, as MUSE and OpenUnlearning) with the
    forget documents as members and the holdout documents as non-members (``privleak_value``); AUC'_retain is the
    retain model's (refs.retrained), computed on the same documents — never MUSE's stored constants, never a 0.5
    fallback (NaN with a note below ``min_reference``). 0 = as the retain model; strongly negative = the forget
    documents are still recognisable; positive = over-unlearning."""

    k: float = 0.4
    min_reference: float = 0.01
    floor: float = 5.0

    name = "muse_privleak"
    needs = frozenset({"retrained"})
    paper = "Shi et al., MUSE: Machine Unlearning Six-Way Evaluation for Language Models, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_k(self.name, self.k)
        if not 0.0 <= self.min_reference < 0.5:
            raise ConfigError(f"muse_privleak: min_reference must be in [0, 0.5), got {self.min_reference}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return missing_probes(task, ["privleak_forget", "privleak_holdout"])

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        retrained = refs.require("retrained", by="metric 'muse_privleak'")
        members, others = muse_probe(task, "privleak_forget"), muse_probe(task, "privleak_holdout")
        attack = MinK(k=self.k)

        def auc(m: nn.Module) -> tuple[float, np.ndarray, np.ndarray]:
            sm, sn = attack.scores(ctx, m, members, refs), attack.scores(ctx, m, others, refs)
            if not (np.isfinite(sm).all() and np.isfinite(sn).all()):
                raise ConfigError("muse_privleak: non-finite Min-K% scores (a document without tokens?).")
            return roc_summary(sm, sn).values["auc"], sm, sn

        auc_u, m, n = auc(model)
        auc_r = auc(retrained)[0]
        privleak = privleak_value(auc_u, auc_r, self.min_reference)
        info: dict[str, Any] = {"attack": f"min_k (k={self.k})", "members": "privleak/forget", "nonmembers": "privleak/holdout"}
        if not np.isfinite(privleak):
            info["note"] = (f"the retain model's AUC' = 1 - {auc_r:.4f} is below min_reference={self.min_reference}: the relative "
                            "difference is undefined or unstable; see auc_gap")
        values = {"privleak": privleak, "auc": auc_u, "retrained_auc": auc_r, "auc_gap": auc_u - auc_r}
        evidence = (Evidence(key="muse_privleak.privleak", value=privleak, role="forget", remembers="lower", floor=self.floor),)
        return self.result(values, per_example={"min_k.privleak_forget": (members.ids, m), "min_k.privleak_holdout": (others.ids, n)},
                           evidence=evidence, info=info)
