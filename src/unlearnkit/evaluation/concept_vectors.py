"""concept_vectors: are the MLP value vectors that wrote a forgotten fact's answer still in the weights? Located on the
original model by their vocabulary projection, read on the model under test at the same places, next to the
retrained models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelError, TaskError
from ..lm.guard import bare_model, is_guard
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from ._lm import text_data
from ._lm_weights import compare, effective_weight, text_split_missing
from .base import EvalContext, Metric, register_metric

EPS = 1e-12


def concept_tokens(split: Split) -> list[list[int]]:
    """Per item, the concept's tokens: those of the record's short ``value`` (profiles) or, without one, of its ``answer``,
    tokenised as the answer is in context (a leading space under the plain template); special tokens and tokens without a
    letter or digit (punctuation) are dropped, repeats kept once."""
    data = text_data(split)
    tok = data.codec.tokenizer
    special = set(tok.all_special_ids)
    out = []
    for r in data.records:
        text = (getattr(r, "value", "") or r.answer).strip()
        ids = tok(" " + text if data.codec.template == "plain" else text, add_special_tokens=False)["input_ids"]
        keep = [int(i) for i in ids if int(i) not in special and any(c.isalnum() for c in tok.decode([int(i)]))]
        out.append(list(dict.fromkeys(keep)))
    return out


def nan_to_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def down_projections(model: nn.Module) -> list[torch.Tensor]:
    """Per decoder block, the MLP's output projection (hidden × intermediate; LoRA merged): its columns are the block's
    value vectors, the directions each MLP neuron writes into the residual stream."""
    from ..models.causal_lm import decoder_layers

    try:
        layers = decoder_layers(model)
    except ModelError:
        raise ModelError(f"concept_vectors: cannot find the decoder blocks of {type(model).__name__}.") from None
    out = []
    for i, layer in enumerate(layers):
        proj = getattr(getattr(layer, "mlp", None), "down_proj", None)
        if proj is None:
            raise ModelError(f"concept_vectors: decoder block {i} of {type(model).__name__} has no mlp.down_proj (a Llama-style MLP).")
        out.append(effective_weight(proj))
    return out


def final_norm_weight(model: nn.Module) -> torch.Tensor:
    """The elementwise weight of the model's final RMSNorm (``…model.norm``)."""
    for name, module in model.named_modules():
        if name.endswith("model.norm") and getattr(module, "weight", None) is not None:
            return module.weight.detach().double()
    raise ModelError(f"concept_vectors: {type(model).__name__} has no final norm (…model.norm); use final_norm: false.")


@dataclass(frozen=True)
class Lens:
    """The vocabulary projection of one model: U (vocab × hidden, float64; with the final norm's weight folded in when
    asked), its mean row ū and second-moment matrix G = UᵀU / vocab, so that the mean and variance over the vocabulary of
    the logits l = Uv of any vector v are ū·v and vᵀGv − (ū·v)² without forming l."""

    unembedding: torch.Tensor
    mean_row: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, final_norm: bool) -> Lens:
        head = model.get_output_embeddings()
        if head is None:
            raise ModelError(f"concept_vectors: {type(model).__name__} has no output embedding (unembedding) to project onto.")
        u = effective_weight(head)
        if final_norm:
            u = u * final_norm_weight(model)[None]
        return cls(u, u.mean(0), u.T @ u / u.shape[0])

    def scores(self, tokens: list[int], vectors: torch.Tensor) -> torch.Tensor:
        """Per column v of ``vectors`` (hidden × n): the mean over ``tokens`` of their logits standardised over the
        vocabulary, (U[t]·v − ū·v) / sd_vocab(Uv); 0 for a vector whose logits are all equal (e.g. the zero vector)."""
        if vectors.shape[0] != self.unembedding.shape[1]:
            raise ModelError(f"concept_vectors: value vectors of width {vectors.shape[0]} but an unembedding of width "
                             f"{self.unembedding.shape[1]}.")
        mean = self.mean_row @ vectors
        var = ((self.gram @ vectors) * vectors).sum(0) - mean**2
        sd = var.clamp(min=0).sqrt()
        z = (self.unembedding[tokens] @ vectors - mean) / torch.where(sd > EPS, sd, torch.ones_like(sd))
        return torch.where(sd > EPS, z.mean(0), torch.zeros_like(sd))


@register_metric
@dataclass(frozen=True)
class ConceptVectors(Metric):
    """Parametric knowledge traces (Hong et al., Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces
    (ConceptVectors), arXiv 2406.11614; value vectors read through the vocabulary: Geva et al., EMNLP 2022): for each
    forget item the concept tokens are its answer's (the record's short ``value`` when it has one); on the *original*
    model, every MLP value vector v (a column of a block's down_proj, LoRA merged) is projected onto the vocabulary,
    l = Uv (U the unembedding; the final norm omitted, as a value vector's logit lens, unless ``final_norm``), and scored
    by the mean over the concept tokens c of the standardised logit z_c(v) = (l_c − mean(l)) / sd(l); the ``top_k``
    highest are the item's concept vectors.

    Per item: (a) trace strength = the mean z_c of the model's own vectors at those places, read through its own
    unembedding — the forgotten knowledge still written in the weights; (b) change from the original: 1 − cos(v, v₀) and
    ‖v − v₀‖ / ‖v₀‖, averaged over the k vectors. Evidence (robustness, "higher" remembers): ``concept_vectors.trace_strength``,
    the mean of (a) (per example ``trace.forget``); the noise floor bands it with the retrained models' vectors at the same
    places. A model whose answers look forgotten while its concept vectors still project onto the answer is "suppressed"
    (the paper's finding for gradient-based unlearning). For retrained models trained from scratch the same places are
    unrelated neurons (their band is that of any neuron), for ones fine-tuned from a shared pretrained model they are the
    same neurons. Inferred: standardised logits (scale-free, so a rescaled vector keeps its score; (b) shows rescaling),
    punctuation dropped from the concept tokens, k = 10."""

    top_k: int = 10
    final_norm: bool = False
    floor: float = 0.5

    name = "concept_vectors"
    needs = frozenset({"original", "retrained"})
    paper = "Hong et al., Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces, arXiv 2406.11614"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if not (isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 1):
            raise ConfigError(f"concept_vectors: top_k must be an integer >= 1, got {self.top_k!r}.")
        if not isinstance(self.final_norm, bool):
            raise ConfigError(f"concept_vectors: final_norm must be true or false, got {self.final_norm!r}.")
        if not (isinstance(self.floor, (int, float)) and self.floor >= 0):
            raise ConfigError(f"concept_vectors: floor must be a number >= 0, got {self.floor!r}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return text_split_missing(task, ("answer",))

    def lens(self, ctx: EvalContext, model: nn.Module) -> tuple[Lens, list[torch.Tensor]]:
        return ctx.memo(model, ("concept_vectors.lens", self.final_norm), lambda: (Lens.of(model, self.final_norm), down_projections(model)))

    def locate(self, ctx: EvalContext, original: nn.Module, split: Split) -> list[np.ndarray]:
        """Per item, the (block, column) pairs of its ``top_k`` concept vectors on the original, best first (ties: lower
        block, then lower column); an empty array for an item without concept tokens."""

        def run() -> list[np.ndarray]:
            lens, weights = self.lens(ctx, original)
            width = weights[0].shape[1]
            if any(w.shape[1] != width for w in weights):
                raise ModelError("concept_vectors: decoder blocks with MLPs of different widths are not supported.")
            out = []
            for tokens in concept_tokens(split):
                if not tokens:
                    out.append(np.zeros((0, 2), dtype=np.int64))
                    continue
                score = torch.cat([lens.scores(tokens, w) for w in weights]).numpy()
                flat = np.argsort(-score, kind="stable")[: self.top_k]
                out.append(np.stack([flat // width, flat % width], 1))
            return out

        return ctx.memo(original, ("concept_vectors.locate", self.top_k, self.final_norm, split.fingerprint), run)

    def scores(self, ctx: EvalContext, model: nn.Module, original: nn.Module, task: Task) -> dict[str, np.ndarray]:
        """Per forget item: trace strength on ``model`` and its vectors' change from the original's (NaN: no concept token)."""

        def run() -> dict[str, np.ndarray]:
            split = task.forget
            places = self.locate(ctx, original, split)
            lens, weights = self.lens(ctx, bare_model(model))  # the weights: a guard's inner model
            _, weights0 = self.lens(ctx, original)
            if [tuple(w.shape) for w in weights] != [tuple(w.shape) for w in weights0]:
                raise ModelError(f"concept_vectors: the model's MLPs {[tuple(w.shape) for w in weights]} differ from the original's "
                                 f"{[tuple(w.shape) for w in weights0]}; the same places cannot be read.")
            n = len(split)
            out = {k: np.full(n, np.nan) for k in ("trace_strength", "cos_change", "rel_norm_change")}
            for i, (tokens, at) in enumerate(zip(concept_tokens(split), places)):
                if not len(at):
                    continue
                v = torch.stack([weights[b][:, c] for b, c in at], 1)
                v0 = torch.stack([weights0[b][:, c] for b, c in at], 1)
                out["trace_strength"][i] = float(lens.scores(tokens, v).mean())
                cos = (v * v0).sum(0) / (v.norm(dim=0) * v0.norm(dim=0)).clamp(min=EPS)
                out["cos_change"][i] = float((1 - cos).mean())
                out["rel_norm_change"][i] = float(((v - v0).norm(dim=0) / v0.norm(dim=0).clamp(min=EPS)).mean())
            return out

        return ctx.memo(model, ("concept_vectors", self, id(original)), run)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        self.require_needs(refs)
        original = refs.original
        items = concept_tokens(task.forget)
        if not any(items):
            raise TaskError("concept_vectors: no forget item's answer has a token with a letter or digit to look for.")
        own = self.scores(ctx, model, original, task)
        ref_scores = [self.scores(ctx, r, original, task) for r in refs.retrained_seeds]
        values, excluded = compare(self.name, own, ref_scores)
        values["original_trace_strength"] = float(np.nanmean(self.scores(ctx, original, original, task)["trace_strength"]))
        values["trace_excess"] = values["trace_strength"] - values["retrained_trace_strength"]
        evidence = (Evidence(key="concept_vectors.trace_strength", value=values["trace_strength"], role="robustness", remembers="higher",
                             floor=self.floor, strong=True),)
        places = self.locate(ctx, original, task.forget)
        return self.result(values, per_example={"trace.forget": (task.forget.ids, own["trace_strength"])}, evidence=evidence,
                           info={"top_k": self.top_k, "final_norm": self.final_norm, "n_retrained": len(refs.retrained_seeds),
                                 "cos_change": nan_to_none(own["cos_change"]), "rel_norm_change": nan_to_none(own["rel_norm_change"]),
                                 "places": [p.tolist() for p in places], "n_concept_tokens": [len(t) for t in items], **excluded,
                                 **({"measured_on": "the guard's bare weights (its inner model)"} if is_guard(model) else {})})
