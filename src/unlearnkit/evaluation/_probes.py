"""Shared pieces of the prompt-level probe metrics (rwku_probes, form_probe, step_probe, persuasion_probe, icl_probe):
the probe prompts of a split rendered from the templates of ``lm.probes``, tokenised with the task's codec, scored on a
model (answer probability of the target, ROUGE-L recall of the greedy answer against it, or the probability of the
right option normalised over the options), and the comparison with the retrained models.

Conventions: a probe split has the same ids and order as the split it is built from; a prompt and target longer than
the model's context, or a generation that would run past it, is refused (never truncated); generations and outputs
are cached per model in the evaluation context, so the probes share them within a battery and with the noise floor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError, TaskError
from ..lm.probes import TEMPLATE_VERSION, TRUE_FALSE_FALSE, Facts, Probe, fields_of, missing_record_fields, render
from ..lm.text import IGNORE, TextCodec, TokenData
from ..references import References
from ..types import Split, Task
from ._lm import answer_prob, finite_mean, greedy, outputs, rouge_l, task_split, text_data
from .base import EvalContext

SCORES = ("rouge_l", "prob")
UNLIMITED = 10**9  # probe prompts are tokenised without the codec's limit, then checked against the model's context


def check_templates(who: str, version: str) -> None:
    """A probe metric's ``templates`` parameter names the template version it was run with (so it enters the run key):
    only this build's ``TEMPLATE_VERSION`` can be run."""
    if version != TEMPLATE_VERSION:
        raise ConfigError(f"{who}: templates version {version!r} is not available; this build has probe templates version "
                          f"{TEMPLATE_VERSION!r}.")


def records_missing(task: Task, *, knowledge: bool = False) -> str | None:
    """Why the task's forget/retain records cannot fill the probe templates, or None (``knowledge``: real-knowledge facts
    fill them too, for the probes whose templates they can fill)."""
    for split in (task.forget, task.retain):
        data = split.data
        if not isinstance(data, TokenData) or not data.records:
            return "needs tokenised question-answer records"
        lacking = missing_record_fields(data.records[0], knowledge=knowledge)
        if lacking:
            return (f"needs records with the profile attributes {lacking} (the profiles data, generator version >= 4); the "
                    f"{split.name} records are {type(data.records[0]).__name__}")
    return None


def facts_of(task: Task) -> Facts:
    """The facts every template of the task is filled from: the records of forget, retain and test (a TaskError
    naming the fields a record lacks)."""
    records = [r for s in (task.forget, task.retain, task.test) if s is not None and isinstance(s.data, TokenData)
               for r in s.data.records]
    return Facts.of(records)


def check_params(who: str, splits: Sequence[str], score: str, max_new_tokens: int, floor: float) -> None:
    from ._lm import check_splits

    check_splits(splits, who)
    if "forget" not in splits:
        raise ConfigError(f"{who}: splits must include 'forget'.")
    if score not in SCORES:
        raise ConfigError(f"{who}: score must be one of {list(SCORES)}, got {score!r}.")
    if max_new_tokens < 1:
        raise ConfigError(f"{who}: max_new_tokens must be >= 1, got {max_new_tokens}.")
    if not 0.0 <= floor <= 1.0:
        raise ConfigError(f"{who}: floor must be in [0, 1], got {floor}.")


def model_context(model: nn.Module, codec: TextCodec) -> int:
    """The model's context (config.max_position_embeddings), else the codec's limit."""
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(ctx) if ctx else int(codec.max_length)


_CODECS: dict[tuple[int, str], TextCodec] = {}


def _unlimited(codec: TextCodec) -> TextCodec:
    key = (id(codec.tokenizer), codec.template)
    if key not in _CODECS:
        _CODECS[key] = TextCodec(codec.tokenizer, max_length=UNLIMITED, template="tags" if codec.tags else codec.template,
                                 name=codec.name, tags=codec.tags)
    return _CODECS[key]


_SPLITS: dict[tuple, Split] = {}
_TARGETS: dict[str, list[str]] = {}  # probe split fingerprint -> the target texts


def probe_split(split: Split, facts: Facts, kind: str, probe: Probe, *, language: str = "fr",
                targets: Sequence[str] | None = None) -> Split:
    """The split's items (same ids and order) as the probe's (prompt, target) pairs, tokenised with the task's codec;
    ``targets`` replaces the probe's target per item (e.g. each multiple-choice option in turn)."""
    data = text_data(split)
    key = (split.fingerprint, data.records_fingerprint, kind, probe, language, None if targets is None else tuple(targets), TEMPLATE_VERSION)
    if key not in _SPLITS:
        codec = _unlimited(data.codec)
        encoded, golds = [], []
        for i, r in enumerate(data.records):
            prompt, target, shots = render(probe, facts.fields(r, language=language))
            target = target if targets is None else targets[i]
            encoded.append(codec.encode_pair(prompt, target, shots))
            golds.append(target)
        if len(_SPLITS) > 256:
            _SPLITS.clear()
            _TARGETS.clear()
        out = Split.create(f"{split.name}:{kind}", TokenData.from_encoded(encoded, data.y.tolist(), data.records, data.codec), split.ids)
        _SPLITS[key] = out
        _TARGETS[out.fingerprint] = golds
    return _SPLITS[key]


def _prompts(split: Split) -> tuple[list[list[int]], list[int]]:
    data = text_data(split)
    lengths = data.attention_mask.sum(1).tolist()
    prompts = [data.x[i, : int((data.labels[i, : lengths[i]] == IGNORE).sum())].tolist() for i in range(len(data))]
    return prompts, [int(n) for n in lengths]


def check_context(split: Split, model: nn.Module, max_new_tokens: int, who: str) -> None:
    """Refuse a probe whose prompt and target, or prompt and generation, would not fit the model's context."""
    data = text_data(split)
    context = model_context(model, data.codec)
    prompts, lengths = _prompts(split)
    longest = max(lengths)
    if longest > context:
        raise TaskError(f"{who}: a probe prompt and its answer take {longest} tokens ({split.name}), more than the model's context "
                        f"({context}); it is refused, never truncated. Shorten the templates or use a model with a longer context.")
    prompt = max(len(p) for p in prompts)
    if prompt + max_new_tokens > context:
        raise ConfigError(f"{who}: max_new_tokens={max_new_tokens} after a probe prompt of {prompt} tokens ({split.name}) would "
                          f"overflow the model's context ({context}); lower max_new_tokens to at most {context - prompt} (generations "
                          "are never truncated silently).")


def plain_scores(ctx: EvalContext, model: nn.Module, split: Split, max_new_tokens: int, who: str) -> dict[str, np.ndarray]:
    """P̄(target | prompt) and the ROUGE-L recall of the greedy answer to the prompt against the target."""
    check_context(split, model, max_new_tokens, who)
    prompts, _ = _prompts(split)
    codec = text_data(split).codec
    gen = greedy(ctx, model, prompts, split.fingerprint, max_new_tokens)
    golds = _TARGETS[split.fingerprint]  # the texts: a word-level tokenizer may not spell them
    return {"prob": answer_prob(outputs(ctx, model, split)), "rouge_l": rouge_l(golds, [codec.decode(g) for g in gen], "recall")}


def option_scores(ctx: EvalContext, model: nn.Module, split: Split, facts: Facts, kind: str, probe: Probe, max_new_tokens: int, who: str,
                  language: str = "fr") -> dict[str, np.ndarray]:
    """Multiple choice: P̄(right option) / Σ_options P̄(option) under the prompt listing them, and the greedy answer's
    ROUGE-L recall of the right option."""
    from ..lm.probes import N_OPTIONS

    base = probe_split(split, facts, kind, probe, language=language)
    out = plain_scores(ctx, model, base, max_new_tokens, who)
    records = text_data(split).records
    options = [facts.fields(r, language=language).option_values() for r in records]
    probs = []
    for j in range(N_OPTIONS):
        variant = probe_split(split, facts, kind, probe, language=language, targets=[o[j] for o in options])
        check_context(variant, model, 1, who)
        probs.append(answer_prob(outputs(ctx, model, variant)))
    right = np.asarray([o.index(facts.fields(r, language=language)["value"]) for o, r in zip(options, records)])
    p = np.stack(probs)
    out["prob"] = p[right, np.arange(len(right))] / p.sum(0)
    return out


def true_false_scores(ctx: EvalContext, model: nn.Module, split: Split, facts: Facts, probe: Probe, max_new_tokens: int, who: str,
                      language: str = "fr") -> dict[str, np.ndarray]:
    """True/false: per item the mean, over the true statement and a false one (another person's value), of the right
    label's probability normalised over the two labels, and of the greedy answer's ROUGE-L recall of the right label."""
    false_probe = TRUE_FALSE_FALSE["true_false"]
    probs, rouges = [], []
    for p, right, wrong in ((probe, probe.target, false_probe.target), (false_probe, false_probe.target, probe.target)):
        s = probe_split(split, facts, f"tf_{right}", p, language=language)
        sc = plain_scores(ctx, model, s, max_new_tokens, who)
        other = probe_split(split, facts, f"tf_{right}_as_{wrong}", dataclasses.replace(p, target=wrong), language=language)
        p_other = answer_prob(outputs(ctx, model, other))
        probs.append(sc["prob"] / (sc["prob"] + p_other))
        rouges.append(sc["rouge_l"])
    return {"prob": np.mean(probs, 0), "rouge_l": np.mean(rouges, 0)}


def kind_scores(ctx: EvalContext, model: nn.Module, split: Split, facts: Facts, kind: str, probe: Probe, max_new_tokens: int, who: str,
                language: str = "fr") -> dict[str, np.ndarray]:
    """The scores of one probe kind: multiple choice when the prompt lists options, true/false for a literal "True"
    target, else the plain answer probability and ROUGE-L."""
    if "options" in fields_of(probe.prompt, kind):
        return option_scores(ctx, model, split, facts, kind, probe, max_new_tokens, who, language)
    if probe.literal and probe.target == "True":
        return true_false_scores(ctx, model, split, facts, probe, max_new_tokens, who, language)
    return plain_scores(ctx, model, probe_split(split, facts, kind, probe, language=language), max_new_tokens, who)


ScoreFn = Callable[[nn.Module, Split], Mapping[str, Mapping[str, np.ndarray]]]


def compare(ctx: EvalContext, model: nn.Module, task: Task, refs: References, splits: Sequence[str], fn: ScoreFn, who: str
            ) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, dict[str, int]]]:
    """Per split and probe kind, the mean of every score on ``model`` (``{split}_{kind}_{score}``), the mean of the
    retrained models' means (``retrained_…``) and the excess (``excess_…``); per-example arrays ``{score}.{kind}.{split}``.
    Items without a score are left out of the means and counted (the third value: the model's and the retrained
    models' exclusions)."""
    refs.require("retrained", by=f"metric {who!r}")
    values: dict[str, float] = {}
    per_example: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    excluded: dict[str, int] = {}
    ref_excluded: dict[str, int] = {}
    for name in splits:
        split = task_split(task, name, required=name in ("forget", "retain", "test"))
        if split is None:
            continue
        own = fn(model, split)
        theirs = [fn(r, split) for r in refs.retrained_seeds]
        for kind, scores in own.items():
            for score, arr in scores.items():
                key = f"{name}_{kind}_{score}"
                values[key] = finite_mean(arr, who, f"{name} {kind} {score}", excluded)
                values[f"retrained_{key}"] = float(np.mean([finite_mean(t[kind][score], who, f"{name} {kind} {score}", ref_excluded)
                                                            for t in theirs]))
                values[f"excess_{key}"] = values[key] - values[f"retrained_{key}"]
                per_example[f"{score}.{kind}.{name}"] = (split.ids, np.asarray(arr, dtype=np.float64))
    return values, per_example, {"model": excluded, "retrained": ref_excluded}


def compare_unknown(ctx: EvalContext, model: nn.Module, task: Task, refs: References, fn: ScoreFn, who: str
                    ) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, dict[str, int]]]:
    """``compare`` for a task without a retrained oracle (real knowledge): the model's scores on the forget facts against
    the original model's on the facts it does not know (the test split: the level of a model that never learned a fact,
    as the no-oracle verdict bands forget evidence). Keys ``forget_{kind}_{score}``, ``unknown_forget_{kind}_{score}`` and
    ``excess_forget_{kind}_{score}``; per-example arrays ``{score}.{kind}.forget``."""
    original = refs.require("original", by=f"metric {who!r} on a task without a retrained oracle")
    if task.test is None or len(task.test) == 0:
        raise TaskError(f"{who}: a task without a retrained oracle needs a test split of facts the model does not know.")
    values: dict[str, float] = {}
    per_example: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    excluded: dict[str, int] = {}
    ref_excluded: dict[str, int] = {}
    own, theirs = fn(model, task.forget), fn(original, task.test)
    for kind, scores in own.items():
        for score, arr in scores.items():
            key = f"forget_{kind}_{score}"
            values[key] = finite_mean(arr, who, f"forget {kind} {score}", excluded)
            values[f"unknown_{key}"] = finite_mean(theirs[kind][score], who, f"unknown facts {kind} {score}", ref_excluded)
            values[f"excess_{key}"] = values[key] - values[f"unknown_{key}"]
            per_example[f"{score}.{kind}.forget"] = (task.forget.ids, np.asarray(arr, dtype=np.float64))
    return values, per_example, {"model": excluded, "unknown": ref_excluded}


def no_oracle(task: Task, refs: References) -> bool:
    """A task without a retrained oracle (real knowledge: ``task.info["oracle"] is False``) and no retrained models."""
    return task.info.get("oracle") is False and refs.retrained is None


def against(ctx: EvalContext, model: nn.Module, task: Task, refs: References, splits: Sequence[str], fn: ScoreFn, who: str
            ) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]], str, dict[str, Any]]:
    """``compare`` with the retrained models or, on a task without an oracle, ``compare_unknown``: (values, per-example
    arrays, the prefix of the reference values — ``retrained_`` or ``unknown_`` — and info saying what the reference is and
    how many items it left out)."""
    if no_oracle(task, refs):
        values, per_example, excluded = compare_unknown(ctx, model, task, refs, fn, who)
        return values, per_example, "unknown_", {"against": "the original model on the facts it does not know (test split)",
                                                 "n_excluded": excluded["model"], "unknown_n_excluded": excluded["unknown"]}
    refs.require("retrained", by=f"metric {who!r}")
    values, per_example, excluded = compare(ctx, model, task, refs, splits, fn, who)
    return values, per_example, "retrained_", {"n_retrained": len(refs.retrained_seeds), "n_excluded": excluded["model"],
                                               "retrained_n_excluded": excluded["retrained"]}


def table_for(task: Task, name: str, table: Mapping[str, Probe], chosen: Sequence[str], who: str
              ) -> tuple[Mapping[str, Probe], tuple[str, ...], dict[str, Any]]:
    """The probe set a metric runs on ``task``: on profiles ``table`` and the ``chosen`` kinds; on real-knowledge facts its
    knowledge variant (``lm.probes.knowledge_table``), the chosen kinds it has, and info listing the kinds left out and
    why (a ConfigError if none of the chosen kinds is left)."""
    from ..lm.probes import is_knowledge, knowledge_table

    records = getattr(task.forget.data, "records", None) or ()
    if not records or not is_knowledge(records[0]):
        return table, tuple(chosen), {}
    ktable, reasons = knowledge_table(name)
    kept = tuple(k for k in chosen if k in ktable)
    if not kept:
        raise ConfigError(f"{who}: on real-knowledge facts the kinds {list(ktable)} can be asked; the chosen {list(chosen)} are none of "
                          f"them ({'; '.join(f'{k}: {reasons[k]}' for k in chosen if k in reasons)}).")
    return ktable, kept, {"kinds_left_out": {k: reasons.get(k, "not chosen") for k in chosen if k not in ktable}}


def strongest(values: Mapping[str, float], kinds: Sequence[str], score: str, split: str = "forget", prefix: str = "excess_"
              ) -> tuple[float, str]:
    """The largest ``{prefix}{split}_{kind}_{score}`` over the kinds with a finite value, and that kind (NaN, "" if none)."""
    best, which = float("nan"), ""
    for kind in kinds:
        v = values.get(f"{prefix}{split}_{kind}_{score}", float("nan"))
        if np.isfinite(v) and not (np.isfinite(best) and v <= best):
            best, which = float(v), kind
    return best, which


__all__ = ["SCORES", "against", "check_context", "check_params", "compare", "compare_unknown", "facts_of", "kind_scores", "model_context",
           "no_oracle", "option_scores", "plain_scores", "probe_split", "check_templates", "records_missing", "strongest", "table_for",
           "true_false_scores"]


def check_kinds(who: str, field: str, chosen: Sequence[str], table: Mapping[str, Probe]) -> None:
    """``chosen`` must be distinct names of ``table``'s probes (a probe metric's ``forms`` / ``kinds`` parameter)."""
    unknown = [k for k in chosen if k not in table]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(f"{who}: {field} must be distinct names of {list(table)}, got {list(chosen)}.")


def max_excess_result(metric: Any, ctx: EvalContext, model: nn.Module, task: Task, refs: References, table_name: str,
                      table: Mapping[str, Probe], chosen: Sequence[str], *, info: Mapping[str, Any] | None = None) -> Any:
    """The body of a probe metric whose evidence is the largest excess over the retrained models among the kinds
    ``chosen`` of ``table`` (form_probe, step_probe): per-kind scores of the model and the retrained models, the
    strongest kind, robustness evidence ``<name>.forget_max_excess``. On real-knowledge facts the probe set is
    ``table_name``'s knowledge variant (``table_for``); on a task without a retrained oracle the excess is over the
    original model's score on the facts it does not know (``against``)."""
    from ..types import Evidence

    facts = facts_of(task)
    table, chosen, left_out = table_for(task, table_name, table, chosen, metric.name)

    def fn(m: nn.Module, split):  # type: ignore[no-untyped-def]
        return {k: kind_scores(ctx, m, split, facts, k, table[k], metric.max_new_tokens, metric.name) for k in chosen}

    values, per_example, ref, reference = against(ctx, model, task, refs, metric.splits, fn, metric.name)
    best, which = strongest(values, chosen, metric.score)
    values = {**values, "forget_max_excess": best}
    evidence = (Evidence(key=f"{metric.name}.forget_max_excess", value=best, role="robustness", remembers="higher", floor=metric.floor,
                         bounds=(-1.0, 1.0)),)
    per_kind = {k: {"value": values[f"forget_{k}_{metric.score}"], "reference": values[f"{ref}forget_{k}_{metric.score}"],
                    "excess": values[f"excess_forget_{k}_{metric.score}"]} for k in chosen}
    return metric.result(values, per_example=per_example, evidence=evidence,
                         info={"strongest": which, "score": metric.score, "template_version": TEMPLATE_VERSION, "per_kind": per_kind,
                               "max_new_tokens": metric.max_new_tokens, **reference, **left_out, **dict(info or {})})
