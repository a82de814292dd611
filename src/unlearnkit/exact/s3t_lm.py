"""S3T on causal language models: the pretrained model as the frozen backbone (nothing of the task protected), slice
adapters on the attention projections, and a served model that behaves like a Hugging Face causal LM — ``logits`` are the
log of the shards' aggregated next-token probabilities, and the key/value cache of generation is kept per shard.

Longer than 60 lines: the backbone's provenance and the per-shard cache of generation.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from .backbone import freeze
from .base import Backbone
from .s3t import S3tModel

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
CACHE_KEYS = ("cache", "past_key_values")  # the key/value cache's keyword and output field, new and old transformers


def weights_digest(model: nn.Module) -> str:
    """A digest of every tensor of the model's state (names, dtypes, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def pretrained_backbone(model: nn.Module, *, device: str = "cpu") -> tuple[nn.Module, Backbone]:
    """``model`` (e.g. ``refs.fresh_model``: the pretrained weights with fresh LoRA adapters) frozen as the backbone: PEFT
    adapters are merged into the weights and removed (fresh ones are zero, so the weights are unchanged), and the
    provenance names the model and the digest of its weights. It saw none of the task's data, so nothing is protected."""
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model = freeze(model.to(device))
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return model, Backbone(f"pretrained:{name}", f"pretraining data outside the task; weights {weights_digest(model)}")


class ShardCaches(tuple):  # type: ignore[type-arg]
    """One key/value cache per shard, handed back to the caller as one object and split again on the next call."""


class S3tCausalLM(S3tModel):
    """The served S3T language model: ``forward(input_ids=..., attention_mask=..., ...)`` runs every shard's served
    chain and returns the last shard's output object with ``logits`` = log of the mean next-token probabilities (or vote
    shares) and, when a cache is asked for, a ``ShardCaches`` of every shard's cache; hidden states, when asked for, are
    the last shard's (all of them with one shard, the default for language models)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        key = next((k for k in CACHE_KEYS if isinstance(kwargs.get(k), ShardCaches)), None)
        caches = kwargs.pop(key) if key is not None else None
        outs = []
        for s in range(self.plan.shards):
            c, p = self.served(s)
            kw = kwargs if caches is None else {**kwargs, key: caches[s]}
            with self.routed(self.chain(s, c), p) as net:
                outs.append(net(*args, **kw))
        out = outs[-1]
        out.logits = self.aggregate([o.logits for o in outs])
        name = next((k for k in CACHE_KEYS if getattr(out, k, None) is not None), None)  # one may alias the other
        if name is not None:
            setattr(out, name, ShardCaches([getattr(o, name) for o in outs]))
        return out

    @property
    def config(self) -> Any:
        return self.net.config

    def get_input_embeddings(self) -> nn.Module:
        return self.net.get_input_embeddings()

    def get_base_model(self) -> nn.Module:
        """The backbone's model class, read by the causal-LM adapter for the keywords it accepts (``logits_to_keep``,
        the cache's name); calls always go through this model's ``forward``."""
        return self.net
