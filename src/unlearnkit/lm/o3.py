"""O3's inference-time model (Gao et al., On Large Language Model Continual Unlearning, ICLR 2025): an untouched causal LM
plus, per unlearning request, a LoRA delta and an in-distribution detector that decides, per input, how much of that
request's delta to apply.

Per request k and target linear layer i the delta is (α/r)·B_{k,i}·A_{k,i}·x (A: r × in, B: out × r). The detector of
request k scores a prompt by the Mahalanobis distance of its features (the inner model's hidden state ``layer``,
averaged over the prompt's tokens, adapters off) to the request's forget prompts (mean and Ledoit–Wolf shrunk
covariance), turned into p_k = σ(a_k·dist + b_k) by a one-dimensional logistic calibration. The gate of request k is
p_k·1[p_k ≥ t_k] (``soft``: the detector decides whether to load the adapter and its score to what extent, as in the
paper) or 1[p_k ≥ t_k] (``hard``). A row's forward is the inner model with every
target layer's output increased by Σ_k gate_k·(α/r)·B_k A_k x; a row whose gates are all 0 gets exactly the bare
model's output. As in the other guards, the prompt of a row ends at the task's prompt-end marker, so teacher-forced
scoring and generation (prompt first, then one token at a time with the key/value cache) see the same gates.

The stored state is the guard's buffers (adapters, detectors, the ids each request deleted) and a JSON config, never
the inner weights; ``bare_model`` is the untouched original (what weight-level attacks measure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, EmptySelection, ModelError
from .guard import GuardedLM, GuardedOutput, check_threshold, choose_threshold, register_guard
from .text import pad_batch

GATINGS = ("soft", "hard")


def lora_targets(inner: nn.Module, suffixes: Sequence[str]) -> list[str]:
    """Names of the inner model's linear layers (modules with ``in_features`` and ``out_features``) whose last name
    component is one of ``suffixes``; PEFT's own adapter layers are skipped. A ConfigError when there are none."""
    names = []
    for name, module in inner.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in suffixes and hasattr(module, "in_features") and hasattr(module, "out_features") and ".lora_" not in name:
            names.append(name)
    if not names:
        raise ConfigError(f"o3: the model has no linear layer named {list(suffixes)} to put a LoRA adapter on.")
    return names


# ------------------------------------------------------------------------------------------------ the detector
@dataclass(frozen=True)
class Detector:
    """One request's in-distribution detector: features' mean and precision (Ledoit–Wolf), the calibration
    p = σ(a·dist + b) and the hard-gating threshold on p; ``info`` is what was fitted and its held-out rates."""

    mean: np.ndarray
    precision: np.ndarray
    a: float
    b: float
    threshold: float
    info: dict[str, Any]

    def distance(self, x: np.ndarray) -> np.ndarray:
        d = np.asarray(x, np.float64) - self.mean
        return np.sqrt(np.clip(np.einsum("nd,de,ne->n", d, self.precision, d), 0, None))

    def proba(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * self.distance(x) + self.b)))


def fit_detector(forget: np.ndarray, retain: np.ndarray, *, rng: np.random.Generator, holdout_fraction: float,
                 threshold: float | None) -> Detector:
    """Fit the Mahalanobis detector on all but ``holdout_fraction`` of the forget features; calibrate the logistic map
    (scikit-learn, balanced) of the distance on the held-out forget features (1) vs the held-out fraction of the retain
    features (0); the threshold is ``threshold`` or the held-out Youden-optimal one (``guard.choose_threshold``)."""
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression

    if len(forget) == 0:
        raise EmptySelection("o3: the request has no forget prompts; its detector needs them to learn what to gate.")
    if len(retain) == 0:
        raise EmptySelection("o3: the task has no retain prompts; the detector's calibration needs prompts to let through.")
    n_hold = [int(round(holdout_fraction * len(s))) for s in (forget, retain)]
    if min(n_hold) < 1 or len(forget) - n_hold[0] < 2:
        raise ConfigError(f"o3: the detector needs at least 2 forget prompts to fit and 1 forget and 1 retain prompt held out to "
                          f"calibrate (holdout_fraction={holdout_fraction} of {len(forget)} forget and {len(retain)} retain prompts "
                          f"holds out {n_hold}); give more prompts or another holdout_fraction.")
    pf, pr = rng.permutation(len(forget)), rng.permutation(len(retain))
    hold_f, fit_f, hold_r = pf[: n_hold[0]], pf[n_hold[0]:], pr[: n_hold[1]]
    lw = LedoitWolf().fit(forget[fit_f])
    mean, precision = lw.location_.astype(np.float64), lw.precision_.astype(np.float64)
    tmp = Detector(mean, precision, 0.0, 0.0, 0.5, {})
    dist = np.r_[tmp.distance(forget[hold_f]), tmp.distance(retain[hold_r])]
    y = np.r_[np.ones(len(hold_f)), np.zeros(len(hold_r))]
    scale = float(dist.std()) or 1.0
    lr = LogisticRegression(class_weight="balanced", max_iter=5000).fit((dist / scale)[:, None], y)
    a, b = float(lr.coef_[0, 0] / scale), float(lr.intercept_[0])
    det = Detector(mean, precision, a, b, 0.5, {})
    p_f, p_r = det.proba(forget[hold_f]), det.proba(retain[hold_r])
    t = check_threshold(threshold, "o3") if threshold is not None else choose_threshold(p_f, p_r)
    info = {"features": "inner model's hidden state, mean over the prompt tokens",
            "score": "Mahalanobis distance to the forget prompts (Ledoit-Wolf covariance), logistic calibration",
            "shrinkage": float(lw.shrinkage_), "calibration": {"a": a, "b": b},
            "n_fit": int(len(fit_f)), "n_heldout": {"forget": int(len(hold_f)), "retain": int(len(hold_r))},
            "threshold": t, "threshold_from": "given" if threshold is not None else "held-out prompts (max TPR - FPR)",
            "tpr_forget_heldout": float((p_f >= t).mean()), "fpr_retain_heldout": float((p_r >= t).mean()),
            "mean_p_forget_heldout": float(p_f.mean()), "mean_p_retain_heldout": float(p_r.mean())}
    return Detector(mean, precision, a, b, t, info)


# ------------------------------------------------------------------------------------------------ the wrapper
@register_guard
class O3LM(GuardedLM):
    """The untouched ``inner`` LM, the LoRA deltas of the requests so far and their detectors (see the module doc).

    It shares ``GuardedLM``'s prompt-end location, Hugging Face plumbing, stored-state contract and ``force``
    (True/False: every gate 1/0), not its single prompt classifier: each request has its own detector. While a request
    is trained (``begin_request`` … ``end_request``) the forward applies only the new adapter, at gate 1, whose A and B
    are the module's only parameters; afterwards they are buffers like the rest."""

    guard_name = "o3"

    def __init__(self, inner: nn.Module, marker: Sequence[int], *, targets: Sequence[str], rank: int, alpha: float, layer: int,
                 gating: str, config: dict[str, Any] | None = None) -> None:
        nn.Module.__init__(self)  # not GuardedLM's: its single classifier is replaced by one detector per request
        if gating not in GATINGS:
            raise ConfigError(f"o3: gating must be one of {list(GATINGS)}, got {gating!r}.")
        self.inner = inner
        ref = inner.get_input_embeddings().weight
        self.register_buffer("marker", torch.as_tensor(list(marker), dtype=torch.long, device=ref.device))
        modules = dict(inner.named_modules())
        missing = [t for t in targets if t not in modules]
        if missing:
            raise ModelError(f"o3: the model has no module {missing[:3]} (stored adapter targets).")
        self.targets = list(targets)
        self.rank, self.alpha, self.layer, self.gating = int(rank), float(alpha), int(layer), gating
        self.n_requests = 0
        self.trainable: nn.ParameterList | None = None
        self.config_json = {**dict(config or {}), "targets": self.targets, "rank": self.rank, "alpha": self.alpha, "layer": self.layer,
                            "gating": gating}
        self.force: bool | None = None
        self._session: dict[str, Any] | None = None
        self.last_gates: torch.Tensor | None = None  # the gates of the latest prompt forward (b, K), for inspection

    # ------------------------------------------------------------------------------------------- adapters
    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def target_modules(self) -> list[nn.Module]:
        modules = dict(self.inner.named_modules())
        return [modules[t] for t in self.targets]

    def adapter(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Request ``k``'s (0-based) (A, B) per target layer."""
        return [(getattr(self, f"lora_A_{k}_{i}"), getattr(self, f"lora_B_{k}_{i}")) for i in range(len(self.targets))]

    def begin_request(self, generator: torch.Generator) -> None:
        """New trainable A (Kaiming-uniform, as PEFT initialises LoRA) and B (zeros: the delta starts at 0) per target."""
        params = []
        for m in self.target_modules():
            w = m.weight if hasattr(m, "weight") else m.base_layer.weight  # plain or PEFT-wrapped linear
            bound = 1.0 / math.sqrt(m.in_features)
            a = (torch.rand(self.rank, m.in_features, generator=generator) * 2 - 1) * bound
            params += [nn.Parameter(a.to(w.device, torch.float32)), nn.Parameter(torch.zeros(m.out_features, self.rank, device=w.device))]
        self.trainable = nn.ParameterList(params)

    def trainable_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.trainable is None:
            raise ModelError("o3: no request is being trained (begin_request first).")
        p = list(self.trainable)
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(self.targets))]

    def orthogonality_pairs(self) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """Per target layer, the earlier requests' A and the trained request's A (for the orthogonality penalty)."""
        return [([self.adapter(k)[i][0] for k in range(self.n_requests)], a) for i, (a, _) in enumerate(self.trainable_pairs())]

    def end_request(self, det: Detector, ids: np.ndarray, groups: np.ndarray | None) -> None:
        """The trained adapter, its detector and the ids (and groups) it deleted become request ``n_requests``'s buffers."""
        k = self.n_requests
        ref = self.marker.device
        for i, (a, b) in enumerate(self.trainable_pairs()):
            self.register_buffer(f"lora_A_{k}_{i}", a.detach().clone())
            self.register_buffer(f"lora_B_{k}_{i}", b.detach().clone())
        self.trainable = None
        self._add_detector(k, torch.as_tensor(det.mean), torch.as_tensor(det.precision), det.a, det.b, det.threshold, ref)
        self.register_buffer(f"request_ids_{k}", torch.as_tensor(np.array(ids, np.int64), device=ref))
        self.register_buffer(f"request_groups_{k}", torch.as_tensor(np.array([] if groups is None else groups, np.int64), device=ref))
        self.n_requests = k + 1
        self.config_json["n_requests"] = self.n_requests

    def _add_detector(self, k: int, mean: torch.Tensor, precision: torch.Tensor, a: float, b: float, threshold: float,
                      ref: torch.device) -> None:
        self.register_buffer(f"det_mean_{k}", mean.to(ref, torch.float32).reshape(-1))
        self.register_buffer(f"det_precision_{k}", precision.to(ref, torch.float32))
        self.register_buffer(f"det_calibration_{k}", torch.tensor([float(a), float(b)], dtype=torch.float32, device=ref))
        self.register_buffer(f"det_threshold_{k}", torch.tensor([check_threshold(threshold, "o3")], dtype=torch.float32, device=ref))

    def deleted(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per earlier request, the ids and groups (profiles) it deleted."""
        return [(getattr(self, f"request_ids_{k}").cpu().numpy(), getattr(self, f"request_groups_{k}").cpu().numpy())
                for k in range(self.n_requests)]

    # ------------------------------------------------------------------------------------------- detectors
    def features(self, hidden_states: Sequence[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
        h = hidden_states[self.layer].float()
        w = prompt.to(h.dtype)[..., None]
        return (h * w).sum(1) / w.sum(1).clamp(min=1)

    @torch.no_grad()
    def prompt_features_of(self, prompts: Sequence[Sequence[int]], *, pad_id: int, batch_size: int = 16) -> np.ndarray:
        """The detectors' features of whole prompts (n, d), float64: the forward's features of a row that is a prompt."""
        was = self.inner.training
        self.inner.eval()
        out = []
        try:
            for s in range(0, len(prompts), batch_size):
                ids, mask = pad_batch(prompts[s : s + batch_size], pad_id, self.marker.device)
                hs = self.inner(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                out.append(self.features(hs, mask.bool()).cpu().numpy())
        finally:
            self.inner.train(was)
        return np.concatenate(out).astype(np.float64)

    def probabilities(self, feats: torch.Tensor) -> torch.Tensor:
        """p_k(row) (b, K): each request's calibrated in-distribution probability."""
        cols = []
        for k in range(self.n_requests):
            d = feats - getattr(self, f"det_mean_{k}")
            m2 = torch.einsum("nd,de,ne->n", d, getattr(self, f"det_precision_{k}"), d).clamp(min=0)
            a, b = getattr(self, f"det_calibration_{k}")
            cols.append(torch.sigmoid(a * m2.sqrt() + b))
        return torch.stack(cols, 1) if cols else feats.new_zeros(feats.shape[0], 0)

    def gates(self, probs: torch.Tensor) -> torch.Tensor:
        """Each request's gate per row (b, K): p·1[p ≥ t] (soft) or 1[p ≥ t] (hard); ``force`` overrides."""
        if self.force is not None:
            return torch.full_like(probs, float(bool(self.force)))
        t = torch.cat([getattr(self, f"det_threshold_{k}") for k in range(self.n_requests)]) if self.n_requests else probs.new_zeros(0)
        fires = (probs >= t).to(probs.dtype)
        return fires * probs if self.gating == "soft" else fires

    # ------------------------------------------------------------------------------------------- forward
    @contextmanager
    def _deltas(self, gates: torch.Tensor | None) -> Iterator[None]:
        """Forward hooks adding Σ_k gate_k·(α/r)·B_k A_k x to each target layer's output (``gates`` None: the trained
        adapter alone, at gate 1)."""
        handles = []
        scale = self.scale
        for i, m in enumerate(self.target_modules()):
            pairs = [self.trainable_pairs()[i]] if gates is None else [self.adapter(k)[i] for k in range(self.n_requests)]

            def hook(_m: nn.Module, inp: Any, out: torch.Tensor, pairs: list = pairs) -> torch.Tensor:
                x = inp[0]
                delta = out.new_zeros(())
                for k, (a, b) in enumerate(pairs):
                    if gates is not None and not bool(gates[:, k].any()):
                        continue
                    d = (x.to(a.dtype) @ a.T) @ b.T
                    if gates is not None:
                        d = d * gates[:, k].to(d.dtype).reshape(-1, *([1] * (d.dim() - 1)))
                    delta = delta + d
                return out + (scale * delta).to(out.dtype)

            handles.append(m.register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cache: Any = None, past_key_values: Any = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None) -> GuardedOutput:
        cache = cache if cache is not None else past_key_values
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.trainable is not None:  # training a request: its adapter alone, at gate 1
            with self._deltas(None):
                out = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                       use_cache=use_cache, output_hidden_states=output_hidden_states)
            return GuardedOutput(out.logits, self._cache_of(out) if use_cache else None, out.hidden_states if output_hidden_states else None)
        if cache is not None:
            s = self._session
            if s is None or s["cache"] != id(cache):
                raise ModelError("O3LM: a generation step with a key/value cache that this model did not start; pass the prompt first "
                                 "(without a cache) so its detectors can score it.")
            gates = s["gates"]
            with self._deltas(gates):
                out = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                       use_cache=use_cache, output_hidden_states=output_hidden_states)
            new_cache = self._cache_of(out)
            self._session = {**s, "cache": id(new_cache)}
            return GuardedOutput(out.logits, new_cache, out.hidden_states if output_hidden_states else None)
        prompt = self.prompt_mask(attention_mask, self.prompt_ends(input_ids, attention_mask))
        first = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache,
                                 output_hidden_states=True)
        probs = self.probabilities(self.features(first.hidden_states, prompt))
        gates = self.gates(probs)
        out = first
        if bool((gates > 0).any()):
            with self._deltas(gates):
                out = self._inner_call(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache,
                                       output_hidden_states=output_hidden_states)
        new_cache = self._cache_of(out) if use_cache else None
        if use_cache:
            self._session = {"cache": id(new_cache), "gates": gates, "probs": probs}
        self.last_gates = gates.detach()
        return GuardedOutput(out.logits, new_cache, out.hidden_states if output_hidden_states else None)

    # ------------------------------------------------------------------------------------------- state
    def describe(self) -> dict[str, Any]:
        return {"guard": self.guard_name, "requests": self.n_requests,
                "thresholds": [float(getattr(self, f"det_threshold_{k}")) for k in range(self.n_requests)], "config": self.config_json}

    @classmethod
    def from_state(cls, inner: nn.Module, t: dict[str, torch.Tensor], config: dict[str, Any], codec: Any = None) -> O3LM:
        model = cls(inner, t["marker"].tolist(), targets=config["targets"], rank=int(config["rank"]), alpha=float(config["alpha"]),
                    layer=int(config["layer"]), gating=config["gating"],
                    config={k: v for k, v in config.items() if k not in ("targets", "rank", "alpha", "layer", "gating")})
        ref = model.marker.device
        for k in range(int(config.get("n_requests", 0))):
            for i in range(len(model.targets)):
                model.register_buffer(f"lora_A_{k}_{i}", t[f"lora_A_{k}_{i}"].to(ref))
                model.register_buffer(f"lora_B_{k}_{i}", t[f"lora_B_{k}_{i}"].to(ref))
            cal = t[f"det_calibration_{k}"]
            model._add_detector(k, t[f"det_mean_{k}"], t[f"det_precision_{k}"], float(cal[0]), float(cal[1]),
                                float(t[f"det_threshold_{k}"][0]), ref)
            model.register_buffer(f"request_ids_{k}", t[f"request_ids_{k}"].to(ref))
            model.register_buffer(f"request_groups_{k}", t[f"request_groups_{k}"].to(ref))
            model.n_requests = k + 1
        return model


__all__ = ["GATINGS", "Detector", "O3LM", "fit_detector", "lora_targets"]
