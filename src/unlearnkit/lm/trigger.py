"""Tokens placed in front of a question, at position 0 (the attention-sink position, Shang et al., arXiv 2510.17021):
the trigger of a backdoored unlearning and the place a soft prompt is optimised."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError
from ..types import Batch
from .text import IGNORE, TokenData


def check_token_ids(ids: Sequence[int], vocab_size: int, who: str) -> list[int]:
    """``ids`` as ints, each a token of a vocabulary of ``vocab_size``; a clear error otherwise."""
    out = [int(t) for t in ids]
    if not out:
        raise ConfigError(f"{who}: needs at least one trigger token.")
    bad = [t for t in out if not 0 <= t < vocab_size]
    if bad:
        raise ConfigError(f"{who}: token ids {bad} are outside the tokenizer's vocabulary (0..{vocab_size - 1}).")
    return out


def prefix_batch(batch: Batch, ids: Sequence[int]) -> Batch:
    """``batch`` with the tokens ``ids`` in front of every sequence (positions 0..k−1, attended, never scored)."""
    x = batch["x"]
    k = len(ids)
    head = torch.as_tensor(list(ids), dtype=x.dtype, device=x.device).expand(len(x), k)
    return {**batch, "x": torch.cat([head, x], 1),
            "attention_mask": torch.cat([torch.ones_like(head, dtype=batch["attention_mask"].dtype), batch["attention_mask"]], 1),
            "labels": torch.cat([torch.full_like(head, IGNORE, dtype=batch["labels"].dtype), batch["labels"]], 1)}


def prefixed(data: TokenData, ids: Sequence[int]) -> TokenData:
    """The same examples (records, groups, codec) with the tokens ``ids`` in front of every sequence."""
    b = prefix_batch({"x": data.x, "attention_mask": data.attention_mask, "labels": data.labels}, ids)
    return TokenData(b["x"], b["attention_mask"], b["labels"], data.y, data.records, data.codec)


__all__ = ["check_token_ids", "prefix_batch", "prefixed"]
