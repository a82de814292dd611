"""Memorisation of the forget answers: exact memorisation and extraction strength (teacher-forced argmax), and
verbatim memorisation (greedy continuation of a prefix, ROUGE-L F1) of the answers or of a text corpus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..references import References
from ..types import Evidence, MetricResult, Task
from ._lm import (check_splits, exact_memorization, extraction_strength, finite_mean, greedy, outputs, prompts_and_answers, rouge_l,
                  task_split, text_data, token_rows)
from .base import EvalContext, Metric, register_metric


def token_memorization(metric: ExactMemorization | ExtractionStrength, score: Callable[[np.ndarray], float], model: nn.Module,
                       task: Task, ctx: EvalContext) -> MetricResult:
    """A teacher-forced argmax memorisation score, ``score(correct)`` per item, on each of ``metric.splits``; the forget
    mean is the evidence. An item with no answer token besides the final EOS has no score (NaN): it is left out of the
    mean, counted in info["n_excluded"] and warned about."""
    values: dict[str, float] = {}
    per_example = {}
    excluded: dict[str, int] = {}
    for name in metric.splits:
        split = task_split(task, name, required=name in ("forget", "retain", "test"))
        if split is None:
            continue
        rows = token_rows(outputs(ctx, model, split), "token_correct", split, drop_eos=True)
        s = np.asarray([score(c) for c in rows], dtype=np.float64)
        values[name] = finite_mean(s, metric.name, name, excluded)
        per_example[f"score.{name}"] = (split.ids, s)
    evidence = ()
    if "forget" in values:
        evidence = (Evidence(key=f"{metric.name}.forget", value=values["forget"], role="forget", remembers="higher", floor=metric.floor, bounds=(0.0, 1.0)),)
    return metric.result(values, per_example=per_example, evidence=evidence, info={"n_excluded": excluded})


@register_metric
@dataclass(frozen=True)
class ExactMemorization(Metric):
    """Exact memorisation (Tirumala et al., NeurIPS 2022; OpenUnlearning's EM): per item the fraction of answer
    positions where the teacher-forced argmax equals the label, mean over items. The final EOS position is
    excluded (OpenUnlearning PR #101)."""

    splits: tuple[str, ...] = ("forget", "retain")
    floor: float = 0.05  # smallest band half-width (tens of items per split)

    name = "exact_memorization"
    paper = "Tirumala et al., NeurIPS 2022"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, self.name)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return token_memorization(self, exact_memorization, model, task, ctx)


@register_metric
@dataclass(frozen=True)
class ExtractionStrength(Metric):
    """Extraction strength (Carlini et al., ICLR 2023 as used by OpenUnlearning's ES): per item 1 − k*/|y|, k* the
    smallest k such that the teacher-forced argmax equals the labels on the whole suffix y[k:]; k* = |y| when even
    the last token is wrong, so ES is exactly 0 then (OpenUnlearning's loop stops at |y|−1 and never reaches 0) and
    1 when every token is right. The final EOS position is excluded."""

    splits: tuple[str, ...] = ("forget", "retain")
    floor: float = 0.05  # smallest band half-width (tens of items per split)

    name = "extraction_strength"
    paper = "Carlini et al., ICLR 2023"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, self.name)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        return token_memorization(self, extraction_strength, model, task, ctx)


def corpus_passages(path: str | Path, codec: Any, passage_tokens: int, max_passages: int) -> list[list[int]]:
    """The first ``max_passages`` consecutive passages of ``passage_tokens`` tokens of a plain-text file (tokenised
    line by line with the codec's tokenizer, no special tokens; a trailing partial passage is dropped)."""
    p = Path(path)
    if passage_tokens + 1 > codec.max_length:
        raise ConfigError(f"verbatim_memorization: passage_tokens ({passage_tokens}) + BOS exceed the model context used here "
                          f"({codec.max_length}).")
    if not p.is_file():
        raise ConfigError(f"verbatim_memorization: corpus_path {str(p)!r} is not a file.")
    tok = codec.tokenizer
    passages: list[list[int]] = []
    buf: list[int] = []
    with p.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            text = " " + line if (buf or passages) else line
            buf += list(tok(text, add_special_tokens=False)["input_ids"])
            while len(buf) >= passage_tokens and len(passages) < max_passages:
                passages.append(buf[:passage_tokens])
                buf = buf[passage_tokens:]
            if len(passages) >= max_passages:
                break
    if not passages:
        raise ConfigError(f"verbatim_memorization: {str(p)!r} has fewer than {passage_tokens} tokens; no passage to test.")
    return passages


@register_metric
@dataclass(frozen=True)
class VerbatimMemorization(Metric):
    """Verbatim memorisation (MUSE VerbMem, Shi et al. 2024): the model is given the question plus the first
    ⌊``prefix_fraction``·|y|⌋ tokens of each forget answer (EOS excluded), greedily continues for as many tokens as
    the true continuation has (cut at EOS), and scores ROUGE-L F1 (rouge_score; stemmer off as in MUSE) against the
    true continuation; mean over items with a non-empty prefix and continuation (others NaN).

    With ``corpus_path`` (a plain-text file, e.g. a book) it also does MUSE's book setting: the first
    ``max_passages`` passages of ``passage_tokens`` tokens, prefix = BOS + the first ``prefix_fraction`` of the
    passage, continuation = the rest; reported as ``corpus`` with per-passage scores in the curves (passages are not task examples).
    On the ``book`` data source, whose prompt already is the passage's prefix, ``prefix_fraction=0`` scores the whole
    continuation (MUSE's verbmem exactly). Inferred: MUSE generates 128 tokens against a 128-token ground truth;
    here the budget is the continuation's own length. The Debian package bible-kjv-text ships the KJV only in the
    ``bible`` program's compressed format (/usr/lib/bible.data), not as plain text: export it with that program
    (``bible -f Gen1:1-Rev22:21 > kjv.txt``, package bible-kjv) or use the ``book`` data source (corpus kjv)."""

    splits: tuple[str, ...] = ("forget",)
    prefix_fraction: float = 0.5
    use_stemmer: bool = False
    corpus_path: str | None = None
    passage_tokens: int = 64
    max_passages: int = 100
    floor: float = 0.05  # smallest band half-width (tens of items per split)

    name = "verbatim_memorization"
    paper = "Shi et al., MUSE, arXiv 2407.06460"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        check_splits(self.splits, self.name)
        if not 0.0 <= self.prefix_fraction < 1.0:
            raise ConfigError(f"verbatim_memorization: prefix_fraction must be in [0, 1), got {self.prefix_fraction}.")
        if self.passage_tokens < 2 or self.max_passages < 1:
            raise ConfigError("verbatim_memorization: passage_tokens must be >= 2 and max_passages >= 1.")

    def continuations(self, ctx: EvalContext, model: nn.Module, codec: Any, prompts: list[list[int]], answers: list[list[int]],
                      key: Any) -> np.ndarray:
        """ROUGE-L F1 of the greedy continuation of prompt + answer prefix against the rest of the answer (NaN if either
        part is empty)."""
        cut = [int(len(a) * self.prefix_fraction) for a in answers]
        ok = [0 <= c < len(a) and (c > 0 or self.prefix_fraction == 0.0) for c, a in zip(cut, answers)]
        idx = [i for i, good in enumerate(ok) if good]
        out = np.full(len(answers), np.nan)
        if not idx:
            return out
        budget = max(len(answers[i]) - cut[i] for i in idx)
        gen = greedy(ctx, model, [prompts[i] + answers[i][: cut[i]] for i in idx], ("verbmem", key, self.prefix_fraction), budget)
        golds = [codec.decode(answers[i][cut[i]:]) for i in idx]
        preds = [codec.decode(g[: len(answers[i]) - cut[i]]) for g, i in zip(gen, idx)]
        out[idx] = rouge_l(golds, preds, "fmeasure", use_stemmer=self.use_stemmer)
        return out

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        values: dict[str, float] = {}
        per_example = {}
        curves = {}
        codec = None
        for name in self.splits:
            split = task_split(task, name, required=name in ("forget", "retain", "test"))
            if split is None:
                continue
            codec = text_data(split).codec
            prompts, answers = prompts_and_answers(split)
            f1 = self.continuations(ctx, model, codec, prompts, answers, split.fingerprint)
            values[name] = float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")
            per_example[f"rouge_l_f1.{name}"] = (split.ids, f1)
        if self.corpus_path is not None:
            codec = codec or text_data(task.forget).codec
            passages = corpus_passages(self.corpus_path, codec, self.passage_tokens, self.max_passages)
            bos = codec.tokenizer.bos_token_id
            head = [int(bos)] if bos is not None and bos != codec.tokenizer.eos_token_id else []
            key = ("corpus", self.corpus_path, self.passage_tokens, self.max_passages)
            f1 = self.continuations(ctx, model, codec, [head] * len(passages), passages, key)
            values["corpus"] = float(np.nanmean(f1))
            curves["corpus"] = {"passage": [float(i) for i in range(len(f1))], "rouge_l_f1": f1.tolist()}
        evidence = ()
        if "forget" in values:
            evidence = (Evidence(key="verbatim_memorization.forget", value=values["forget"], role="forget", remembers="higher", floor=self.floor, bounds=(0.0, 1.0)),)
        info = {"prefix_fraction": self.prefix_fraction, "use_stemmer": self.use_stemmer}
        if self.corpus_path is not None:
            info["corpus"] = {"path": str(self.corpus_path), "passages": len(curves["corpus"]["passage"]),
                              "passage_tokens": self.passage_tokens}
        return self.result(values, per_example=per_example, curves=curves, evidence=evidence, info=info)
