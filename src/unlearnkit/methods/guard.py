"""guard: GUARD — a prompt classifier and, at decoding, penalties on forbidden tokens derived from the forget answers
(exact token matching and sentence-embedding matching); no weight changes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..errors import ConfigError
from ..lm.guard import ENCODERS, ForbiddenTokenGuard, get_encoder, prompt_end_marker
from ..references import References
from ..types import Mask, Task, Unlearned
from ._guards import check_guard_params, fit_classifier, measure_overhead, split_prompts
from .base import ALL_FORGET_KINDS, check_forget_kind, register_method

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)


def words(text: str) -> list[str]:
    """The words of ``text`` (letters, digits, apostrophes, hyphens), punctuation dropped."""
    return _WORD.findall(text)


def forbidden_words(forget: list[tuple[str, str]], retain_answers: list[str], max_retain_share: float) -> list[str]:
    """Words of the forget answers that are the answers' content: not in the item's own question, and found in at most
    ``max_retain_share`` of the retain answers (case-insensitive). In first-seen order, each once."""
    share: dict[str, int] = {}
    for a in retain_answers:
        for w in {w.lower() for w in words(a)}:
            share[w] = share.get(w, 0) + 1
    limit = max_retain_share * max(len(retain_answers), 1)
    out: dict[str, None] = {}
    for question, answer in forget:
        asked = {w.lower() for w in words(question)}
        for w in words(answer):
            if w.lower() not in asked and share.get(w.lower(), 0) <= limit:
                out.setdefault(w, None)
    return list(out)


@register_method
@dataclass(frozen=True)
class GUARD:
    """GUARD (Deng et al., GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection, arXiv 2505.13312, 2025).

    A guard (kind ``guard``): the model's weights are untouched; the returned model is a ``ForbiddenTokenGuard``
    wrapping it, which the metrics score and generate with (teacher-forced scoring, greedy and sampled decoding all
    read its penalised logits).

    1. Prompt classifier as ECO's (logistic regression on the model's mean prompt hidden state, threshold chosen on
       held-out prompts unless ``threshold`` is given; rates in ``info["classifier"]``). GUARD's paper uses an MLP.
    2. Forbidden tokens: the words of the forget answers that are not in their question and occur in at most
       ``max_retain_share`` of the retain answers (the facts, not the template: "Garubrook", not "born"); each as the
       token sequences of the word with and without a leading space.
    3. At every answer position of a flagged prompt: ``penalty`` is subtracted from the logit of each token that
       continues a forbidden sequence matched so far (exact matching), and from each of the ``top_k`` most likely
       remaining candidates whose text (the previous ``window`` tokens and the candidate, decoded) has cosine
       similarity ≥ ``sim_threshold`` to a forbidden word's sentence embedding (semantic matching; ``encoder``
       all-MiniLM-L6-v2 offline, or ``char3``, hashed character trigrams).

    Approximations (stated): GUARD extracts forbidden tokens with an LLM and matches continuations with a
    retrieval-and-scoring step over candidate tokens; here the forbidden words come from the forget answers by the rule
    in 2, and a finite logit penalty plays the filter. ``info["overhead"]``: latency per generated token vs the bare
    model (greedy, measured).
    """

    threshold: float | None = None
    holdout_fraction: float = 0.3
    C: float = 1.0
    penalty: float = 20.0
    top_k: int = 5
    sim_threshold: float = 0.7
    window: int = 1
    encoder: str = "all-MiniLM-L6-v2"
    max_retain_share: float = 0.0
    latency_tokens: int = 16

    name: ClassVar[str] = "guard"
    kind: ClassVar[str] = "guard"
    paper: ClassVar[str] = "Deng et al., GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection, arXiv 2505.13312, 2025"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset()
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS

    def __post_init__(self) -> None:
        check_guard_params(self)
        if not (isinstance(self.penalty, (int, float)) and math.isfinite(self.penalty) and self.penalty > 0):
            raise ConfigError(f"guard: penalty must be a finite number > 0, got {self.penalty!r}.")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise ConfigError(f"guard: top_k must be an integer >= 0 (0 turns semantic matching off), got {self.top_k!r}.")
        if not (isinstance(self.sim_threshold, (int, float)) and -1.0 <= self.sim_threshold <= 1.0):
            raise ConfigError(f"guard: sim_threshold is a cosine similarity, in [-1, 1]; got {self.sim_threshold!r}.")
        if not (isinstance(self.window, int) and self.window >= 0):
            raise ConfigError(f"guard: window must be an integer >= 0, got {self.window!r}.")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"guard: encoder must be one of {sorted(ENCODERS)}, got {self.encoder!r}.")
        if not (isinstance(self.max_retain_share, (int, float)) and 0.0 <= self.max_retain_share < 1.0):
            raise ConfigError(f"guard: max_retain_share must be in [0, 1), got {self.max_retain_share!r}.")

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        data = task.forget.data
        codec = data.codec
        records = getattr(data, "records", None) or []
        if not records or not hasattr(records[0], "answer"):
            raise ConfigError("guard: derives forbidden tokens from the forget answers; this task's forget records have no answers "
                              "(question-answer items are needed).")
        retain_answers = [r.answer for r in (getattr(task.retain.data, "records", None) or [])]
        phrases = forbidden_words([(getattr(r, "question", ""), r.answer) for r in records], retain_answers, self.max_retain_share)
        if not phrases:
            raise ConfigError(f"guard: no word of the forget answers is both absent from its question and in at most "
                              f"{self.max_retain_share:.0%} of the retain answers, so there is nothing to forbid; raise max_retain_share.")
        seqs: dict[tuple[int, ...], None] = {}
        for w in phrases:
            for text in (" " + w, w):
                ids = tuple(int(t) for t in codec.tokenizer(text, add_special_tokens=False)["input_ids"])
                if ids:
                    seqs.setdefault(ids, None)
        marker = prompt_end_marker(split_prompts(task.forget) + split_prompts(task.retain))
        clf, report = fit_classifier(model, task, rng=rng, threshold=self.threshold, holdout_fraction=self.holdout_fraction, C=self.C,
                                     who="guard", device=device, pad_id=codec.pad_id)
        emb = get_encoder(self.encoder).encode(phrases) if self.top_k > 0 else np.zeros((len(phrases), 1), np.float32)
        guard = ForbiddenTokenGuard(model, marker, torch.as_tensor(clf.weight), clf.bias, clf.threshold, forbidden=list(seqs),
                                    phrases=phrases, phrase_emb=emb, penalty=self.penalty, top_k=self.top_k,
                                    sim_threshold=self.sim_threshold, window=self.window, encoder=self.encoder, codec=codec,
                                    config={"method": "guard"})
        info: dict[str, Any] = {
            "guard": {"guard": "guard", "threshold": clf.threshold, "encoder": self.encoder},
            "classifier": report, "prompt_end": codec.decode(marker) or str(marker),
            "forbidden": {"words": phrases, "n_words": len(phrases), "n_token_sequences": len(seqs)},
            "overhead": measure_overhead(guard, task, adapter, device=device, max_new_tokens=self.latency_tokens),
            "weights": "unchanged (inference-time guard: weight-level evidence is measured on the bare model)",
        }
        return Unlearned(guard, Mask.full(guard, False), info)
