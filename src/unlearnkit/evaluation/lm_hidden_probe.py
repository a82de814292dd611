"""lm_hidden_probe: can a forgotten attribute (e.g. a profile's profession) still be read linearly from a middle layer
of the language model? A probe trained on the retain profiles reads the forget profiles, next to the retrained models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError, TaskError
from ..lm.guard import bare_model, is_guard
from ..lm.profiles import GENRES, PROFESSIONS
from ..lm.text import IGNORE
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from ._lm_weights import compare, text_split_missing
from .base import EvalContext, Metric, register_metric

RECORD_FIELDS = ("profile_id", "attribute", "answer")


def attribute_labels(split: Split, item_attribute: str, values: tuple[str, ...]) -> np.ndarray:
    """Per item of ``split``, the attribute value of its profile (an index into ``values``; −1 when the profile has no
    item ``item_attribute`` or its answer names none of the values): read from the answer of the profile's
    ``item_attribute`` item, the longest value the answer contains."""
    records = split.data.records
    lacking = [f for f in RECORD_FIELDS if not hasattr(records[0], f)]
    if lacking:
        raise TaskError(f"lm_hidden_probe: the {split.name} records ({type(records[0]).__name__}) have no field(s) {', '.join(lacking)}; "
                        "the probe reads a profile's attribute from its question-answer records (the profiles data).")
    by_profile: dict[int, int] = {}
    longest_first = sorted(range(len(values)), key=lambda i: -len(values[i]))
    for r in records:
        if r.attribute == item_attribute:
            hit = next((i for i in longest_first if values[i] in r.answer), -1)
            by_profile[int(r.profile_id)] = hit
    return np.asarray([by_profile.get(int(r.profile_id), -1) for r in records], dtype=np.int64)


@torch.no_grad()
def prompt_features(model: nn.Module, split: Split, layer: int, *, batch_size: int, device: str) -> np.ndarray:
    """Per item, the hidden state after block ``layer`` (``hidden_states[layer]``; 0 = the embeddings) averaged over the
    question's tokens: what the model holds about the question before any answer token."""
    was_training = model.training
    model.eval()
    rows = []
    try:
        for b in split.batches(batch_size, device=device):
            hidden = model(input_ids=b["x"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states
            if not 0 <= layer < len(hidden):
                raise ModelError(f"lm_hidden_probe: layer {layer} does not exist; the model has hidden states 0..{len(hidden) - 1}.")
            prompt = ((b["labels"] == IGNORE) & (b["attention_mask"] > 0)).float()[..., None]
            rows.append(((hidden[layer].float() * prompt).sum(1) / prompt.sum(1).clamp(min=1)).cpu().double().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(rows)


@register_metric
@dataclass(frozen=True)
class LMHiddenProbe(Metric):
    """Linear probe on a language model's hidden states (probing: Alain & Bengio, arXiv 1610.01644; as an unlearning check
    on LMs: Patil et al., Can Sensitive Information Be Deleted From LLMs?, ICLR 2024, and RWKU's hidden-state analysis):
    features = the hidden state after block ``layer`` (default the middle block) averaged over the question tokens of every
    item about a profile; label = the profile's ``attribute`` (``profession``: the profession it worked in; ``genre``:
    its genre; ``parent_profession``), read from the profile's own answer. A standardised multinomial logistic regression
    (``C``) is trained on the retain profiles' items and reads the forget profiles'; the holdout (never trained)
    profiles give the chance level of a person the model never saw.

    Evidence (robustness, "higher" remembers): ``lm_hidden_probe.forget_true_prob``, the probe's mean probability of the
    forget items' true attribute (per example: ``true_prob.forget``, the readable items); also accuracy (and both on the holdout profiles
    when some holdout value occurs among the retain profiles). A model whose answers look
    forgotten while its middle layer still tells the attribute is "suppressed". Items whose attribute no retain profile
    has cannot be read by a probe trained on retain profiles: they are left out and counted (``n_unseen``).
    Inferred: question tokens only (the answer would give the attribute away), mean pooling, C = 1."""

    attribute: str = "profession"
    layer: int | None = None
    C: float = 1.0
    floor: float = 0.05

    ATTRIBUTES: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "profession": ("profession", PROFESSIONS), "genre": ("works", GENRES), "parent_profession": ("family", PROFESSIONS)}

    name = "lm_hidden_probe"
    needs = frozenset({"retrained"})
    paper = "Alain & Bengio, arXiv 1610.01644 (linear probes); Patil et al., ICLR 2024"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if self.attribute not in self.ATTRIBUTES:
            raise ConfigError(f"lm_hidden_probe: attribute must be one of {sorted(self.ATTRIBUTES)}, got {self.attribute!r}.")
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 0):
            raise ConfigError(f"lm_hidden_probe: layer must be an integer >= 0 (0 = the embeddings) or null, got {self.layer!r}.")
        if not (isinstance(self.C, (int, float)) and np.isfinite(self.C) and self.C > 0):
            raise ConfigError(f"lm_hidden_probe: C (inverse regularisation strength) must be > 0, got {self.C!r}.")

    def why_not_applicable(self, task: Task) -> str | None:
        from ..lm.probes import is_knowledge

        records = getattr(task.forget.data, "records", None) or ()
        if records and is_knowledge(records[0]):
            return ("reads an attribute that many people share (profession, genre) from the profiles data; real-knowledge facts "
                    "have none to train a probe on (each target's facts are its own, and their type — person, place, book — is in "
                    "the question's words)")
        return text_split_missing(task, RECORD_FIELDS)

    def labelled(self, task: Task) -> dict[str, tuple[Split, np.ndarray]]:
        """forget / retain / holdout items whose profile's attribute is known, with their labels."""
        item_attribute, values = self.ATTRIBUTES[self.attribute]
        out = {}
        for name, split in (("forget", task.forget), ("retain", task.retain), ("holdout", task.test)):
            if len(split) == 0:
                continue
            y = attribute_labels(split, item_attribute, values)
            keep = np.flatnonzero(y >= 0)
            if len(keep):
                out[name] = (split.subset(keep, f"lm_hidden_probe_{name}"), y[keep])
        for need in ("forget", "retain"):
            if need not in out:
                raise TaskError(f"lm_hidden_probe: no {need} item has a known {self.attribute!r} (no {item_attribute!r} item naming one of "
                                f"{len(values)} values).")
        if len(np.unique(out["retain"][1])) < 2:
            raise TaskError(f"lm_hidden_probe: the retain profiles have fewer than 2 distinct {self.attribute!r} values to train a probe on.")
        return out

    def middle(self, model: nn.Module) -> int:
        if self.layer is not None:
            return self.layer
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if n is None:
            raise ModelError(f"lm_hidden_probe: {type(model).__name__} has no config.num_hidden_layers; give layer explicitly.")
        return max(1, int(n) // 2)

    def scores(self, ctx: EvalContext, model: nn.Module, task: Task) -> dict[str, np.ndarray]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        def run() -> dict[str, np.ndarray]:
            sets = self.labelled(task)
            weights = bare_model(model)  # the hidden states the weights compute: a guard's inner model
            layer = self.middle(weights)
            feats = {k: prompt_features(weights, s, layer, batch_size=min(ctx.batch_size, 32), device=ctx.device) for k, (s, _) in sets.items()}
            y_train = sets["retain"][1]
            scale = StandardScaler().fit(feats["retain"])
            probe = LogisticRegression(C=self.C, max_iter=5000).fit(scale.transform(feats["retain"]), y_train)
            classes = {int(c): i for i, c in enumerate(probe.classes_)}
            out: dict[str, np.ndarray] = {}
            for k in ("forget", "holdout"):
                if k not in sets:
                    continue
                proba = probe.predict_proba(scale.transform(feats[k]))
                y = sets[k][1]
                seen = np.asarray([int(c) in classes for c in y])
                if k == "holdout" and not seen.any():  # no holdout profile's value was trained on: nothing to compare
                    continue
                true = np.asarray([proba[i, classes[int(c)]] if s else np.nan for i, (c, s) in enumerate(zip(y, seen))])
                out[f"{k}_true_prob"] = true
                out[f"{k}_accuracy"] = np.where(seen, (probe.classes_[proba.argmax(1)] == y).astype(np.float64), np.nan)
            return out

        return ctx.memo(model, ("lm_hidden_probe", self), run)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        refs.require("retrained", by="metric 'lm_hidden_probe'")
        own = self.scores(ctx, model, task)
        ref_scores = [self.scores(ctx, r, task) for r in refs.retrained_seeds]
        n_unseen = int(np.isnan(own["forget_true_prob"]).sum())
        if n_unseen == len(own["forget_true_prob"]):
            raise TaskError(f"lm_hidden_probe: no forget profile's {self.attribute!r} occurs among the retain profiles, so a probe trained "
                            "on them cannot read any; choose another attribute or a larger task.")
        values, excluded = compare(self.name, own, ref_scores)
        values["forget_excess_true_prob"] = values["forget_true_prob"] - values["retrained_forget_true_prob"]
        forget = self.labelled(task)["forget"][0]
        evidence = (Evidence(key="lm_hidden_probe.forget_true_prob", value=values["forget_true_prob"], role="robustness", remembers="higher",
                             floor=self.floor, strong=True, bounds=(0.0, 1.0)),)
        readable = np.isfinite(own["forget_true_prob"])  # the items a probe trained on the retain profiles can read
        return self.result(values, per_example={"true_prob.forget": (forget.ids[readable], own["forget_true_prob"][readable])}, evidence=evidence,
                           info={"attribute": self.attribute, "layer": self.middle(bare_model(model)), "n_forget": len(forget), "n_unseen": n_unseen,
                                 "n_retrained": len(refs.retrained_seeds), **excluded,
                                 **({"measured_on": "the guard's bare weights (its inner model)"} if is_guard(model) else {})})
