"""Causal language-model adapter: teacher-forced answer log-probabilities, the length-normalised answer NLL as the
per-example loss, per-token statistics for text membership attacks, greedy generation, and checks that the model
fits the task's tokenizer and context."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..errors import ConfigError, ModelError
from ..lm.text import IGNORE, pad_batch
from ..registry import ADAPTERS
from ..types import Batch, Split, Task
from .common import AdapterBase


def _forward(model: nn.Module, batch: Batch, **kw: Any) -> Any:
    return model(input_ids=batch["x"], attention_mask=batch["attention_mask"], **kw)


def _takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the model (under a PEFT wrapper, its base model) can compute logits at chosen positions only
    (Hugging Face's ``logits_to_keep``, which also accepts a 1-D tensor of positions)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_accepts(type(base), "logits_to_keep")


def _cache_name(model: nn.Module) -> str:
    """The keyword (and output field) of the key/value cache: ``cache`` in current transformers, ``past_key_values``
    before it was renamed (the old name still works there, with a deprecation warning on every forward pass)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if _forward_accepts(type(base), "cache") else "past_key_values"


@functools.lru_cache(maxsize=64)
def _forward_accepts(cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - forward without an inspectable signature
        return False


def answer_logits(model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits (B, K, V) at the K positions that predict an answer token in some example of the batch, the shifted
    labels there (B, K; IGNORE where that example has none) and the answer mask (B, L−1) over all positions.
    Position p predicts token p+1. Prompt positions are most of a batch's tokens and never read, so the output layer
    (for SmolLM2 a fifth of the forward FLOPs) runs at these K positions only when the model supports it."""
    lab = (batch["labels"] if labels is None else labels)[:, 1:]
    mask = lab != IGNORE
    keep = mask.any(0).nonzero()[:, 0]
    if _takes_logits_to_keep(model):
        logits = _forward(model, batch, logits_to_keep=keep).logits
    else:
        logits = _forward(model, batch).logits[:, keep]
    return logits, lab[:, keep], mask


def answer_logp(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax over the vocabulary at the n answer-predicting entries of ``logits`` (…, V) whose ``labels`` are
    not IGNORE (n, V), and their target ids (n,). Only those entries are normalised."""
    keep = labels != IGNORE
    return torch.log_softmax(logits[keep].float(), dim=-1), labels[keep]


def placed(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-answer-token ``values`` (n,), in row-major order of ``mask``, back at their (B, L−1) positions, 0 elsewhere
    (differentiable)."""
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_scatter(mask, values.float())


class CausalLMAdapter(AdapterBase):
    """Works with any Hugging Face style causal LM: ``model(input_ids=..., attention_mask=...)`` returning ``.logits``."""

    modality = "causal_lm"
    score_name = "answer probability"

    def __init__(self, codec: Any = None) -> None:
        self.codec = codec

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return _forward(model, batch).logits

    def answer_logits(self, model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, K, V) at the answer-predicting positions only, the shifted labels there and the answer mask
        (``answer_logits``)."""
        return answer_logits(model, batch, labels)

    def token_logprobs(self, model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each answer token (n, L-1) and the answer mask (n, L-1)."""
        logits, lab, mask = answer_logits(model, batch, labels)
        logp, target = answer_logp(logits, lab)
        return placed(logp.gather(-1, target[:, None])[:, 0], mask), mask

    def sequence_logprob(self, model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed answer log-probability per example and the number of answer tokens."""
        tok, mask = self.token_logprobs(model, batch, labels)
        return tok.sum(1), mask.sum(1)

    def per_example_loss(self, model: nn.Module, batch: Batch, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Length-normalised answer NLL: −(1/|y|) Σ_t log p(y_t | x, y_<t) (teacher forcing)."""
        total, n = self.sequence_logprob(model, batch, labels)
        return -total / n.clamp(min=1)

    def batch_loss(self, model: nn.Module, batch: Batch, reduction: str = "example", labels: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's answer NLL. ``token``: Σ over every answer token of the batch of −log p(y_t | x, y_<t), divided by
        the number of answer tokens in the batch: Hugging Face's causal-LM loss (``model(..., labels=...).loss``), so a
        long answer weighs in proportion to its length. ``example``: the mean over the examples of the per-example
        length-normalised NLL (``per_example_loss``), so every answer weighs the same."""
        if reduction == "example":
            return self.per_example_loss(model, batch, labels).mean()
        if reduction != "token":
            raise ConfigError(f"reduction must be 'token' or 'example', got {reduction!r}.")
        total, n = self.sequence_logprob(model, batch, labels)
        return -total.sum() / n.sum().clamp(min=1)

    def n_targets(self, batch: Batch) -> int:
        """The batch's answer tokens: what the ``token`` reduction of ``batch_loss`` divides by."""
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def features(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Last hidden state averaged over the answer tokens (the representation a probe reads)."""
        hidden = _forward(model, batch, output_hidden_states=True).hidden_states[-1]
        mask = (batch["labels"] != IGNORE).float()[..., None]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    @torch.no_grad()
    def token_stats(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Per answer-token: log p(y_t), the mean μ_t and s.d. σ_t of log p over the vocabulary under p (Min-K%++),
        whether the argmax is the label; and the answer mask (other positions are 0)."""
        logits, lab, mask = answer_logits(model, batch)
        logp, target = answer_logp(logits, lab)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
        return {"logp": placed(logp.gather(-1, target[:, None])[:, 0], mask), "mu": placed(mu, mask), "sigma": placed(sigma, mask),
                "correct": placed(logp.argmax(-1) == target, mask), "mask": mask.float()}

    def outputs(self, model: nn.Module, split: Split, *, batch_size: int = 16, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
        """Per example: answer NLL (mean over its answer tokens, EOS included; NaN for an example without answer
        tokens), token count, and per-token arrays padded with NaN to the split's longest answer (``token_logp``,
        ``token_mu``, ``token_sigma``, ``token_correct``). In a data-parallel launch each rank computes a contiguous
        shard of the split and every rank receives all rows in the split's order (``distributed.gather_concat``)."""
        batch_size = min(batch_size, 32)
        was_training = model.training
        model.eval()
        rows: dict[str, list[np.ndarray]] = {"logp": [], "mu": [], "sigma": [], "correct": []}
        lengths: list[np.ndarray] = []
        parallel = distributed.active()
        part = split.subset(np.arange(*distributed.shard_positions(len(split)))) if parallel else split
        try:
            for b in part.batches(batch_size, device=device):
                stats = self.token_stats(model, b)
                mask = stats["mask"].bool().cpu()
                lengths.append(mask.sum(1).numpy())
                for k in rows:
                    v = stats[k].float().cpu()
                    rows[k] += [v[i][mask[i]].numpy() for i in range(len(v))]
        finally:
            model.train(was_training)
        if parallel:
            rows = {k: distributed.gather_concat(v) for k, v in rows.items()}
            lengths = distributed.gather_concat(lengths)
        n = len(split)
        width = max((len(r) for r in rows["logp"]), default=0)
        out: dict[str, np.ndarray] = {}
        for k, seqs in rows.items():
            arr = np.full((n, width), np.nan, dtype=np.float64)
            for i, s in enumerate(seqs):
                arr[i, : len(s)] = s
            out[f"token_{k}"] = arr
        n_tok = np.concatenate(lengths) if lengths else np.zeros(0)
        out["n_tokens"] = n_tok.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 = NaN: no answer token, no NLL (never a perfect 0)
            out["nll"] = -np.nansum(out["token_logp"], axis=1) / n_tok
        labels = split.labels
        out["labels"] = labels if labels is not None else np.zeros(n, np.int64)
        return out

    def stats(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """loss = answer NLL; p_true = length-normalised answer probability exp(−NLL); correct = every answer token is
        the greedy argmax (teacher-forced)."""
        correct = np.nan_to_num(out["token_correct"], nan=1.0).min(axis=1) if out["token_correct"].size else np.zeros(len(out["nll"]))
        return {"loss": out["nll"], "p_true": np.exp(-out["nll"]), "correct": correct}

    def score(self, out: dict[str, np.ndarray]) -> np.ndarray:
        """Per-example fit score, higher = better: the length-normalised answer probability."""
        return np.exp(-out["nll"])

    def check(self, model: nn.Module, task: Task, device: str | torch.device = "cpu") -> None:
        """The model's vocabulary covers the tokenizer's, its context covers the longest sequence, and it runs."""
        if not hasattr(model, "get_input_embeddings"):
            raise ModelError(f"{type(model).__name__} is not a causal language model (no get_input_embeddings).")
        vocab = model.get_input_embeddings().weight.shape[0]
        if self.codec is not None and vocab < self.codec.vocab_size:
            raise ModelError(f"The model has {vocab} token embeddings but the task's tokenizer has {self.codec.vocab_size} tokens.")
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        longest = max(int(s.data.attention_mask.sum(1).max()) for s in task.splits().values())
        if context is not None and longest > context:
            raise ModelError(f"The task's longest sequence has {longest} tokens but the model's context is {context}.")
        out, _ = self.trial_output(model, task, device)
        if out.ndim != 3 or out.shape[-1] < vocab:
            raise ModelError(f"The model's logits have shape {tuple(out.shape)}; expected (batch, length, {vocab}).")

    @torch.no_grad()
    def generate(self, model: nn.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32, batch_size: int = 16,
                 device: str | torch.device = "cpu") -> list[list[int]]:
        """Greedy continuations (new token ids, cut at EOS) of left-padded prompts."""
        if self.codec is None:
            raise ModelError("Generation needs the task's text codec.")
        pad, eos = self.codec.pad_id, int(self.codec.tokenizer.eos_token_id)
        was_training = model.training
        model.eval()
        out: list[list[int]] = []
        last_only = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}  # the prompt's other logits are never read
        cache_name = _cache_name(model)
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                ids, mask = pad_batch(chunk, pad, device, side="left")  # every prompt ends at the last position
                done = torch.zeros(len(chunk), dtype=torch.bool, device=ids.device)
                new: list[torch.Tensor] = []
                past = None
                cur_ids, cur_mask = ids, mask
                for _ in range(max_new_tokens):
                    pos = (cur_mask.cumsum(1) - 1).clamp(min=0)
                    o = model(input_ids=cur_ids if past is None else cur_ids[:, -1:], attention_mask=cur_mask,
                              position_ids=pos if past is None else pos[:, -1:], use_cache=True, **{cache_name: past}, **last_only)
                    past = getattr(o, cache_name)
                    nxt = o.logits[:, -1].argmax(-1)
                    nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
                    new.append(nxt)
                    done |= nxt == eos
                    cur_ids = torch.cat([cur_ids, nxt[:, None]], 1)
                    cur_mask = torch.cat([cur_mask, torch.ones_like(nxt)[:, None]], 1)
                    if bool(done.all()):
                        break
                gen = torch.stack(new, 1).cpu().tolist() if new else [[] for _ in chunk]
                for row in gen:
                    out.append(row[: row.index(eos)] if eos in row else row)
        finally:
            model.train(was_training)
        return out


@ADAPTERS.register("causal_lm")
def causal_lm_adapter(task: Task) -> CausalLMAdapter:
    return CausalLMAdapter(getattr(task.retain.data, "codec", None))
