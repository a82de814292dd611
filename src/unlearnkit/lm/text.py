"""Text for causal language models: a codec (prompt format + tokenizer + context limit) and ``TokenData``, the
Batchable that holds tokenised question–answer pairs with the answer tokens marked as labels.

Prompt and answer are tokenised separately and concatenated, so the answer span is exact whatever the
tokenizer does at the boundary; the answer ends with the end-of-sequence token. Sequences longer than the
model's context are an error, never silently truncated (truncation would change what is being forgotten).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, EmptySelection, TaskError
from ..types import Batch

IGNORE = -100


# OpenUnlearning's prompt tags for models used without their chat template (its model configs' ``template_args``)
TAG_KEYS = ("system_prompt_with_special_tokens", "user_start_tag", "user_end_tag", "asst_start_tag", "asst_end_tag")
REQUIRED_TAGS = TAG_KEYS[1:]


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Prompt tags as OpenUnlearning's model configs write them: the four ``*_tag`` keys are required, the system
    prefix ``system_prompt_with_special_tokens`` is optional; every value a string."""
    if not isinstance(tags, Mapping):
        raise ConfigError(f"tags must be a mapping of {list(TAG_KEYS)}, got {tags!r}.")
    unknown = sorted(set(tags) - set(TAG_KEYS))
    missing = [k for k in REQUIRED_TAGS if k not in tags]
    if unknown or missing:
        raise ConfigError(f"tags: {'unknown key(s) ' + str(unknown) if unknown else 'missing ' + str(missing)}; give "
                          f"{list(REQUIRED_TAGS)} and optionally 'system_prompt_with_special_tokens' (OpenUnlearning's template_args).")
    bad = [k for k, v in tags.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"tags: {bad} must be strings.")
    return {k: str(tags.get(k, "")) for k in TAG_KEYS}


class TextCodec:
    """How questions and answers become token ids for one tokenizer.

    ``template``: ``"chat"`` uses the tokenizer's chat template (instruct models), ``"plain"`` writes
    ``Question: …\\nAnswer:``; ``"auto"`` picks chat when the tokenizer has a template. ``tags`` (OpenUnlearning's
    ``template_args`` without ``apply_chat_template``) writes ``system + user_start + question + user_end +
    asst_start`` and the answer right after it, as OpenUnlearning does for models it prompts without their chat
    template (template ``"tags"``). Prompts may carry in-context examples (``shots``: question–answer pairs before
    the question). A tokenizer without a pad token gets its end-of-sequence token as pad (``pad_fallback=True``) or
    is refused."""

    def __init__(self, tokenizer: Any, *, max_length: int = 128, template: str = "auto", pad_fallback: bool = True,
                 name: str | None = None, tags: Mapping[str, str] | None = None) -> None:
        if template not in ("auto", "chat", "plain", "tags"):
            raise ConfigError(f"template must be auto, chat, plain or tags, got {template!r}.")
        if template == "tags" and tags is None:
            raise ConfigError("template 'tags' needs tags (the prompt tags, OpenUnlearning's template_args).")
        if tags is not None and template not in ("auto", "tags"):
            raise ConfigError(f"tags are a prompt template of their own; give template 'tags' (or 'auto') with them, not {template!r}.")
        self.tags = check_tags(tags) if tags is not None else None
        if tokenizer.eos_token_id is None:
            raise ConfigError("The tokenizer has no end-of-sequence token; answers could not be terminated.")
        if tokenizer.pad_token_id is None:
            if not pad_fallback:
                raise ConfigError("The tokenizer has no pad token. Set tokenizer.pad_token (e.g. to tokenizer.eos_token) or "
                                  "build the codec with pad_fallback=True.")
            tokenizer.pad_token = tokenizer.eos_token
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise ConfigError("template='chat' but the tokenizer has no chat template; use template='plain'.")
        self.tokenizer = tokenizer
        if self.tags is not None:
            self.template = "tags"
        else:
            self.template = "chat" if template == "chat" or (template == "auto" and has_chat) else "plain"
        self.max_length = int(max_length)
        self.name = name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        out = {"tokenizer": self.name, "vocab_size": self.vocab_size, "template": self.template, "max_length": self.max_length}
        if self.tags is not None:
            out["tags"] = dict(self.tags)
        return out

    def prompt(self, question: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt text of ``question``, after the in-context examples ``shots`` (question, answer) if any."""
        if self.template == "chat":
            messages = [m for q, a in shots for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
            return self.tokenizer.apply_chat_template(messages + [{"role": "user", "content": question}], tokenize=False,
                                                      add_generation_prompt=True)
        if self.template == "tags":
            t = self.tags or {}
            turns = [t["user_start_tag"] + q + t["user_end_tag"] + t["asst_start_tag"] + a + t["asst_end_tag"] for q, a in shots]
            return t["system_prompt_with_special_tokens"] + "".join(turns) + t["user_start_tag"] + question + t["user_end_tag"] + t["asst_start_tag"]
        return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots) + f"Question: {question}\nAnswer:"

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def bos_ids(self) -> list[int]:
        """[BOS] when the tokenizer has its own beginning-of-sequence token, else []."""
        bos = self.tokenizer.bos_token_id
        return [int(bos)] if bos is not None and bos != self.tokenizer.eos_token_id else []

    def encode_prompt(self, question: str, shots: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Prompt ids; the plain and tags templates start with BOS (the tokenizer's special tokens, as OpenUnlearning
        tokenises tagged prompts), the chat template writes its own."""
        ids = self._ids(self.prompt(question, shots))
        return self.bos_ids() + ids if self.template in ("plain", "tags") else ids

    def encode_pair(self, question: str, answer: str, shots: Sequence[tuple[str, str]] = ()) -> tuple[list[int], int]:
        """Token ids of prompt + answer + EOS, and the length of the prompt part."""
        prompt = self.encode_prompt(question, shots)
        answer_ids = self._ids(" " + answer.strip() if self.template == "plain" else answer.strip()) + [int(self.tokenizer.eos_token_id)]
        ids = prompt + answer_ids
        if len(ids) > self.max_length:
            raise TaskError(f"A prompt and answer take {len(ids)} tokens, longer than the model context used here "
                            f"({self.max_length}): {question[:60]!r}. Raise max_length (up to the model's context) or shorten the text.")
        return ids, len(prompt)

    def encode_continuation(self, prefix: str, continuation: str, *, max_continuation_tokens: int | None = None) -> tuple[list[int], int]:
        """Raw text, no template: BOS + prefix as the prompt, the continuation + EOS as the answer (book passages).
        ``max_continuation_tokens`` keeps that many continuation tokens (a benchmark's own cut, e.g. MUSE's), else
        the whole continuation."""
        prompt = self.encode_text(prefix)
        rest = self._ids(" " + continuation.strip())
        if max_continuation_tokens is not None:
            rest = rest[:max_continuation_tokens]
        ids = prompt + rest + [int(self.tokenizer.eos_token_id)]
        if len(ids) > self.max_length:
            raise TaskError(f"A passage takes {len(ids)} tokens, longer than the model context used here ({self.max_length}); "
                            "use shorter passages or a larger max_length.")
        return ids, len(prompt)

    def encode_document(self, text: str, *, max_tokens: int | None = None) -> tuple[list[int], int]:
        """A document as language-modelling data: BOS (if the tokenizer has one) + the text's tokens, every token after
        the first a label, no EOS (a corpus chunk, as OpenUnlearning's pretraining datasets). ``max_tokens`` keeps
        that many text tokens (a benchmark's own cut), else all; longer than the context is an error."""
        ids = self._ids(text)
        if max_tokens is not None:
            ids = ids[:max_tokens]
        ids = self.bos_ids() + ids
        if len(ids) < 2:
            raise TaskError(f"A document of {len(ids)} token(s) has nothing to predict: {text[:60]!r}.")
        if len(ids) > self.max_length:
            raise TaskError(f"A document of {len(ids)} tokens is longer than the model context used here ({self.max_length}); "
                            "raise max_length or cut the documents (max_tokens).")
        return ids, 1

    def encode_corpus(self, texts: Sequence[str], chunk_tokens: int, *, separator: str = "\n\n") -> list[tuple[list[int], int]]:
        """A corpus as language-modelling chunks, as OpenUnlearning's pretraining datasets cut MUSE's and WMDP's
        corpora: the texts joined by ``separator``, tokenised once, cut into consecutive pieces of ``chunk_tokens``
        tokens (the last one shorter); each piece BOS + tokens, every token after the first a label, no EOS."""
        if chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be >= 1, got {chunk_tokens}.")
        ids = self._ids(separator.join(texts))
        chunks = [self.bos_ids() + ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
        out = [(c, 1) for c in chunks if len(c) >= 2]
        if not out:
            raise TaskError("The corpus has no tokens to train on.")
        longest = max(len(c) for c, _ in out)
        if longest > self.max_length:
            raise TaskError(f"Corpus chunks of {longest} tokens are longer than the model context used here ({self.max_length}); "
                            "lower chunk_tokens or raise max_length.")
        return out

    def encode_text(self, text: str) -> list[int]:
        """Plain text (e.g. a book passage) as ids, checked against the context limit."""
        ids = self.bos_ids() + self._ids(text)
        if len(ids) > self.max_length:
            raise TaskError(f"A text of {len(ids)} tokens is longer than the model context used here ({self.max_length}).")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True)).strip()


class TokenData:
    """Tokenised examples: ``x`` (n, L) input ids right-padded, ``attention_mask``, ``labels`` (answer tokens, else
    -100), ``y`` a group id per example (the profile), and the source records (questions, answers, variants)."""

    def __init__(self, x: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, y: torch.Tensor, records: Sequence[Any],
                 codec: TextCodec, *, fingerprint: str | None = None) -> None:
        if not (x.shape == attention_mask.shape == labels.shape) or len(y) != len(x) or len(records) != len(x):
            raise TaskError(f"TokenData: mismatched shapes {tuple(x.shape)}, {tuple(attention_mask.shape)}, {tuple(labels.shape)}, "
                            f"{len(y)} groups, {len(records)} records.")
        self.x, self.attention_mask, self.labels, self.y = x, attention_mask, labels, y
        self.records = list(records)
        self.codec = codec
        self._fingerprint = fingerprint

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]], groups: Sequence[int], records: Sequence[Any], codec: TextCodec) -> TokenData:
        if len(pairs) == 0:
            raise EmptySelection("No question-answer pairs to tokenise.")
        encoded = [codec.encode_pair(q, a) for q, a in pairs]
        return cls.from_encoded(encoded, groups, records, codec)

    @classmethod
    def from_encoded(cls, encoded: Sequence[tuple[list[int], int]], groups: Sequence[int], records: Sequence[Any],
                     codec: TextCodec) -> TokenData:
        n, length = len(encoded), max(len(ids) for ids, _ in encoded)
        x = torch.full((n, length), codec.pad_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE, dtype=torch.long)
        for i, (ids, n_prompt) in enumerate(encoded):
            t = torch.as_tensor(ids, dtype=torch.long)
            x[i, : len(ids)] = t
            mask[i, : len(ids)] = 1
            labels[i, n_prompt : len(ids)] = t[n_prompt:]
        return cls(x, mask, labels, torch.as_tensor(np.asarray(groups, dtype=np.int64)), records, codec)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, positions: torch.Tensor) -> Batch:
        positions = positions.to(self.x.device)
        mask = self.attention_mask[positions]
        width = max(1, int(mask.sum(1).max())) if len(positions) else 1  # trim the batch to its longest example
        return {"x": self.x[positions, :width], "attention_mask": mask[:, :width], "labels": self.labels[positions, :width],
                "y": self.y[positions]}

    def subset(self, positions: np.ndarray) -> TokenData:
        pos = np.asarray(positions, dtype=np.int64)
        p = torch.as_tensor(pos, device=self.x.device)
        fp = hashlib.blake2b(f"subset|{self.fingerprint}|".encode() + pos.tobytes(), digest_size=16).hexdigest()
        return TokenData(self.x[p], self.attention_mask[p], self.labels[p], self.y[p], [self.records[i] for i in pos], self.codec,
                         fingerprint=fp)

    @classmethod
    def concat(cls, parts: Sequence[TokenData]) -> TokenData:
        codec = parts[0].codec
        encoded, groups, records = [], [], []
        for part in parts:
            for i in range(len(part)):
                n = int(part.attention_mask[i].sum())
                n_prompt = int((part.labels[i, :n] == IGNORE).sum())
                encoded.append((part.x[i, :n].tolist(), n_prompt))
            groups += part.y.tolist()
            records += part.records
        return cls.from_encoded(encoded, groups, records, codec)

    @property
    def records_fingerprint(self) -> str:
        """A hash of the records (the texts behind the tokens: paraphrases, perturbed answers, …). Not part of
        ``fingerprint``, which keys trained models by the tokens they saw; a task's fingerprint (run keys) adds it, so
        evaluation results are recomputed when only the evaluation texts change."""
        cached = getattr(self, "_records_fingerprint", None)
        if cached is None:
            h = hashlib.blake2b(digest_size=16)
            for r in self.records:
                h.update(repr(r).encode())
                h.update(b"\0")
            cached = self._records_fingerprint = h.hexdigest()
        return cached

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(self.codec.name.encode())
            h.update(self.codec.template.encode())
            for t in (self.x, self.attention_mask, self.labels, self.y):
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def to(self, device: str | torch.device) -> TokenData:
        return TokenData(self.x.to(device), self.attention_mask.to(device), self.labels.to(device), self.y.to(device), self.records,
                         self.codec, fingerprint=self.fingerprint)


def pad_batch(rows: Sequence[Sequence[int]], pad: int, device: Any = "cpu", *, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one (input_ids, attention_mask) batch padded with ``pad`` to the longest row, on the ``right``
    (scoring, features) or the ``left`` (generation: every prompt ends at the last position)."""
    if side not in ("right", "left"):
        raise ConfigError(f"pad_batch: side must be 'right' or 'left', got {side!r}.")
    if not rows:
        raise EmptySelection("pad_batch: no token rows.")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        span = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, span] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def word_tokenizer(texts: Sequence[str]) -> Any:
    """A small word-level tokenizer built from ``texts`` (for tests and the tiny model; no download): words and
    punctuation, with <pad>, <s>, </s> and <unk>. Deterministic (vocabulary sorted)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


__all__ = ["IGNORE", "TAG_KEYS", "TextCodec", "TokenData", "check_tags", "word_tokenizer"]
