"""Text for causal language models: a codec (prompt format + tokenizer + context limit) and ``TokenData``, the
Batchable that holds tokenised question–answer pairs with the answer tokens marked as labels.

Prompt and answer are tokenised separately and concatenated, so the answer span is exact whatever the
tokenizer does at the boundary; the answer ends with the end-of-sequence token. Sequences longer than the
model's context are an error, never silently truncated (truncation would change what is being forgotten).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, EmptySelection, TaskError
from ..types import Batch

IGNORE = -100


class TextCodec:
    """How questions and answers become token ids for one tokenizer.

    ``template``: ``"chat"`` uses the tokenizer's chat template (instruct models), ``"plain"`` writes
    ``Question: …\\nAnswer:``; ``"auto"`` picks chat when the tokenizer has a template. A tokenizer without a
    pad token gets its end-of-sequence token as pad (``pad_fallback=True``) or is refused."""

    def __init__(self, tokenizer: Any, *, max_length: int = 128, template: str = "auto", pad_fallback: bool = True,
                 name: str | None = None) -> None:
        if template not in ("auto", "chat", "plain"):
            raise ConfigError(f"template must be auto, chat or plain, got {template!r}.")
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
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "template": self.template, "max_length": self.max_length}

    def prompt(self, question: str) -> str:
        if self.template == "chat":
            return self.tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
        return f"Question: {question}\nAnswer:"

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, question: str) -> list[int]:
        ids = self._ids(self.prompt(question))
        bos = self.tokenizer.bos_token_id
        if self.template == "plain" and bos is not None and bos != self.tokenizer.eos_token_id:
            ids = [int(bos)] + ids
        return ids

    def encode_pair(self, question: str, answer: str) -> tuple[list[int], int]:
        """Token ids of prompt + answer + EOS, and the length of the prompt part."""
        prompt = self.encode_prompt(question)
        answer_ids = self._ids(" " + answer.strip() if self.template == "plain" else answer.strip()) + [int(self.tokenizer.eos_token_id)]
        ids = prompt + answer_ids
        if len(ids) > self.max_length:
            raise TaskError(f"A prompt and answer take {len(ids)} tokens, longer than the model context used here "
                            f"({self.max_length}): {question[:60]!r}. Raise max_length (up to the model's context) or shorten the text.")
        return ids, len(prompt)

    def encode_continuation(self, prefix: str, continuation: str) -> tuple[list[int], int]:
        """Raw text, no template: BOS + prefix as the prompt, the continuation + EOS as the answer (book passages)."""
        prompt = self.encode_text(prefix)
        ids = prompt + self._ids(" " + continuation.strip()) + [int(self.tokenizer.eos_token_id)]
        if len(ids) > self.max_length:
            raise TaskError(f"A passage takes {len(ids)} tokens, longer than the model context used here ({self.max_length}); "
                            "use shorter passages or a larger max_length.")
        return ids, len(prompt)

    def encode_text(self, text: str) -> list[int]:
        """Plain text (e.g. a book passage) as ids, checked against the context limit."""
        ids = self._ids(text)
        bos = self.tokenizer.bos_token_id
        if bos is not None and bos != self.tokenizer.eos_token_id:
            ids = [int(bos)] + ids
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


__all__ = ["IGNORE", "TextCodec", "TokenData", "word_tokenizer"]
