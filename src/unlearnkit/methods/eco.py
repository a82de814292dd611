"""eco: Embedding-COrrupted prompts — a prompt classifier and, on flagged prompts, corrupted prompt embeddings whose
strength is tuned by zeroth-order search so the forget answers score as on the retrained model; no weight changes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..analysis.locate import item_subjects, subject_span
from ..errors import ConfigError, TaskError
from ..lm.guard import EmbeddingCorruptionGuard, prompt_end_marker
from ..lm.text import pad_batch
from ..references import References
from ..seeding import torch_gen
from ..types import Mask, Task, Unlearned
from ._guards import check_guard_params, fit_classifier, measure_overhead, paraphrased_prompts, split_prompts
from .base import ALL_FORGET_KINDS, check_forget_kind, register_method


@register_method
@dataclass(frozen=True)
class ECO:
    """Embedding-Corrupted Prompts (Liu, Yao, Jia, Casper, Baracaldo & Liu, Large Language Model Unlearning via Embedding-Corrupted Prompts, NeurIPS 2024).

    A guard (kind ``guard``): the model's weights are untouched; the returned model is an ``EmbeddingCorruptionGuard``
    wrapping it, which the metrics score and generate with.

    1. Prompt classifier: logistic regression on the model's own mean last hidden state over the prompt tokens,
       forget prompts vs retain prompts, fitted on all but ``holdout_fraction`` of each; the threshold is
       ``threshold`` or, when None, the one maximising TPR − FPR on the held-out prompts. ``info["classifier"]``
       reports its rates, including the false-positive rate on retain and on neighbour prompts.
    2. Corrupted positions (``positions``): ``entity`` (ECO's choice) — only the tokens of the named entity the prompt
       asks about. No NER model is available offline, so the entity comes from the items themselves (oracle NER,
       ``analysis.locate.item_subjects``: a profile item's ``subject``, a knowledge fact's ``target``, TOFU forget
       authors' names derived from their questions): it is located in each prompt's tokens of every split (question and
       paraphrase) by ``analysis.locate.subject_span``, and the guard stores those token sequences and corrupts
       wherever one occurs in a flagged question, whatever the prompt. A flagged question containing none (a paraphrase
       that drops the name, or any prompt of data whose items name no entity, e.g. MUSE's passages) has every question
       token corrupted, counted in ``info["entities"]``. ``all``: every question token.
    3. Corruption of the chosen embeddings (``corruption``): ``noise`` adds σ·s·ε (s the embedding
       matrix's s.d., ε fixed Gaussian noise per position, drawn from the run's generator) on the first ``dims``
       dimensions (None = all; ECO's ``rand_noise_first_n``); ``zero`` zeroes the round(σ·dims) largest-magnitude
       ones (ECO's ``zero_out_top_k``).
    4. Strength σ by zeroth-order optimisation of f(σ) = |P̄_forget(σ) − P̄_forget(retrained)|, P̄ the mean
       length-normalised answer probability of the forget set with every forget prompt corrupted, and the
       retrained models' mean as target (ECO matches the corrupted model's forget metrics to the retain model's; on a
       task with no retrained oracle, ``task.info["oracle"] is False``, the original's P̄ on the test split, the facts
       it does not know: the level a model without the knowledge answers at):
       ``zo_steps`` two-point estimates g = (f(e^{s+μu}) − f(e^{s−μu}))/(2μ)·u, u = ±1, in s = log σ, each followed
       by a signed step s ← s − η_k·sign(g), η_k = ``zo_lr``·0.7^k; the best σ evaluated is kept.

    Approximations (stated): ECO's TOFU classifier is a fine-tuned RoBERTa and its entity tokens are chosen by a NER
    model; here the classifier reads the model's own hidden states and the entities are the items' subject fields
    (oracle NER: exact for the data's own entities, blind to any other name). ECO's ZO search is over σ against its unlearning objective; we use the signed two-point estimator with a
    decaying step on log σ, and the retrained models' forget answer probability as the objective's target.
    ``info["overhead"]``: latency per generated token of the guard vs the bare model (greedy, measured).
    """

    threshold: float | None = None
    holdout_fraction: float = 0.3
    C: float = 1.0
    corruption: Literal["noise", "zero"] = "noise"
    positions: Literal["entity", "all"] = "entity"
    dims: int | None = None
    zo_steps: int = 12
    zo_init: float = 1.0
    zo_mu: float = 0.3
    zo_lr: float = 1.0
    latency_tokens: int = 16

    name: ClassVar[str] = "eco"
    kind: ClassVar[str] = "guard"
    paper: ClassVar[str] = "Liu et al., Large Language Model Unlearning via Embedding-Corrupted Prompts, NeurIPS 2024"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"retrained"})
    modalities: ClassVar[tuple[str, ...]] = ("causal_lm",)
    forget_kinds: ClassVar[tuple[str, ...]] = ALL_FORGET_KINDS

    def __post_init__(self) -> None:
        check_guard_params(self)
        if self.corruption not in ("noise", "zero"):
            raise ConfigError(f"eco: corruption must be 'noise' or 'zero', got {self.corruption!r}.")
        if self.positions not in ("entity", "all"):
            raise ConfigError(f"eco: positions must be 'entity' (the named entity's tokens) or 'all' (every question token), got {self.positions!r}.")
        if self.dims is not None and not (isinstance(self.dims, int) and self.dims >= 1):
            raise ConfigError(f"eco: dims must be None (all) or an integer >= 1, got {self.dims!r}.")
        if not (isinstance(self.zo_steps, int) and self.zo_steps >= 0):
            raise ConfigError(f"eco: zo_steps must be an integer >= 0, got {self.zo_steps!r}.")
        for field in ("zo_init", "zo_mu", "zo_lr"):
            v = getattr(self, field)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"eco: {field} must be a finite number > 0, got {v!r}.")
        if self.corruption == "zero" and self.zo_init > 1:
            raise ConfigError(f"eco: with corruption 'zero', zo_init is the fraction of dimensions zeroed, in (0, 1]; got {self.zo_init}.")

    def unlearn(self, model: nn.Module, task: Task, refs: References, *, rng: np.random.Generator, device: str = "cpu",
                progress: bool = False) -> Unlearned:
        check_forget_kind(self, task)
        no_oracle = task.info.get("oracle") is False and not refs.retrained_seeds
        if not no_oracle:
            refs.require("retrained", by="method 'eco'")
        elif len(task.test) == 0:
            raise ConfigError("eco: a task without a retrained oracle needs test examples (facts the model does not know) "
                              "for the search's target level; the task has none.")
        adapter = get_adapter(task)
        adapter.check(model, task, device)
        codec = task.forget.data.codec
        width = int(model.get_input_embeddings().weight.shape[1])
        if self.dims is not None and self.dims > width:
            raise ConfigError(f"eco: dims={self.dims} but the model's embeddings have {width} dimensions.")
        marker = prompt_end_marker(split_prompts(task.forget) + split_prompts(task.retain))
        clf, report = fit_classifier(model, task, rng=rng, threshold=self.threshold, holdout_fraction=self.holdout_fraction, C=self.C,
                                     who="eco", device=device, pad_id=codec.pad_id)
        longest = max(int(s.data.attention_mask.sum(1).max()) for s in task.splits().values())
        noise = torch.randn(longest, width, generator=torch_gen(rng))
        emb_scale = float(model.get_input_embeddings().weight.detach().float().std())
        entities = entity_sequences(task) if self.positions == "entity" else None
        guard = EmbeddingCorruptionGuard(model, marker, torch.as_tensor(clf.weight), clf.bias, clf.threshold, strength=self.zo_init,
                                         corruption=self.corruption, dims=self.dims or width, noise=noise, emb_scale=emb_scale,
                                         entities=entities, config={"method": "eco"})

        def forget_prob_on(m: nn.Module, split: Any) -> float:
            return float(np.exp(-adapter.outputs(m, split, device=device)["nll"]).mean())

        def forget_prob(m: nn.Module) -> float:
            return forget_prob_on(m, task.forget)

        if no_oracle:  # the level a model without the knowledge answers at: the original on the facts it does not know
            target, target_source = forget_prob_on(model, task.test), "original model on the test split (facts it does not know; no retrained oracle)"
        else:
            target, target_source = float(np.mean([forget_prob(r) for r in refs.retrained_seeds])), "retrained models' mean"
        guard.force = True
        evaluated: list[dict[str, float]] = []

        def f(s: float) -> float:
            sigma = min(math.exp(s), 1.0) if self.corruption == "zero" else math.exp(s)
            guard.strength.fill_(sigma)
            p = forget_prob(guard)
            evaluated.append({"strength": sigma, "forget_prob": p, "gap": abs(p - target)})
            return abs(p - target)

        s = math.log(self.zo_init)
        f(s)
        for k in range(self.zo_steps):
            u = float(rng.choice([-1.0, 1.0]))
            g = (f(s + self.zo_mu * u) - f(s - self.zo_mu * u)) / (2 * self.zo_mu) * u
            if g == 0:
                continue
            s -= self.zo_lr * 0.7**k * math.copysign(1.0, g)
            s = min(max(s, math.log(1e-3)), math.log(1e3))
        best = min(evaluated, key=lambda e: e["gap"])
        guard.strength.fill_(best["strength"])
        guard.force = None
        entity_info = {"positions": self.positions}
        if entities is not None:
            forget = split_prompts(task.forget) + paraphrased_prompts(task.forget)
            missing = entity_misses(guard, forget, codec.pad_id)
            entity_info.update({"source": "the items' subject field (oracle NER; no NER model offline)", "sequences": len(entities),
                                "forget_prompts": len(forget), "not_found": missing,
                                "note": f"entity not found in {missing} of {len(forget)} forget prompts (questions and paraphrases): "
                                        "every question token corrupted for them"})
        guard.entity_fallbacks = 0
        info: dict[str, Any] = {
            "entities": entity_info, "guard": guard.describe(), "classifier": report, "prompt_end": codec.decode(marker) or str(marker),
            "strength": {"value": best["strength"], "corruption": self.corruption, "dims": self.dims or width,
                         "target_forget_prob": target, "target": target_source, "forget_prob": best["forget_prob"],
                         "forget_prob_uncorrupted": forget_prob(guard.inner), "evaluations": len(evaluated),
                         "search": evaluated},
            "overhead": measure_overhead(guard, task, adapter, device=device, max_new_tokens=self.latency_tokens),
            "weights": "unchanged (inference-time guard: weight-level evidence is measured on the bare model)",
        }
        return Unlearned(guard, Mask.full(guard, False), info)


def entity_sequences(task: Task) -> list[list[int]]:
    """The token sequences of the named entities of every split's items (``item_subjects``; derived subjects for the
    forget split only), each as ``subject_span`` locates it in the item's prompt and in its paraphrased prompt: one name
    can tokenise differently after different words. Sorted, without repeats."""
    seqs: set[tuple[int, ...]] = set()
    for name, split in task.splits().items():
        records = getattr(split.data, "records", None) or []
        codec = getattr(split.data, "codec", None)
        if codec is None:
            continue
        for record, subject in zip(records, item_subjects(split, derive=name == "forget")):
            if subject is None:
                continue
            for question in (record.question, getattr(record, "paraphrased_question", None)):
                if not question:
                    continue
                try:
                    ids, (a, b) = subject_span(codec, question, subject)
                except TaskError:  # not in this wording of the question
                    continue
                seqs.add(tuple(ids[a:b]))
    return [list(s) for s in sorted(seqs)]


@torch.no_grad()
def entity_misses(guard: EmbeddingCorruptionGuard, prompts: list[list[int]], pad_id: int, batch_size: int = 64) -> int:
    """How many of ``prompts``, if flagged, contain none of the guard's entities (every question token corrupted)."""
    missed = 0
    for s in range(0, len(prompts), batch_size):
        ids, mask = pad_batch(prompts[s : s + batch_size], pad_id, guard.marker.device)
        ends = guard.prompt_ends(ids, mask)
        missed += int(guard.corrupted_positions(ids, mask, ends, torch.ones(len(ids), dtype=torch.bool, device=ids.device))[1].sum())
    return missed
