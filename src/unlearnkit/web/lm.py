"""The comparator's per-run analysis of a language-model run (causal_lm tasks: fictitious profiles, TOFU-style QA).

Over 60 lines because it is the language-model half of ``web.analysis``: per item of forget / retain / holdout the
answer probability (teacher forcing), the greedy answer and its ROUGE-L recall, the answer NLL and the Min-K% score
(the membership scores of the attack view), aggregated per profile for the run, the original and each retrained
reference; the mean hidden state of a middle decoder block for the embedding; and linear CKA of every decoder
block's mean hidden state against the original and the retrained references. The same helpers as the LM metrics
(``evaluation._lm``) compute the numbers, so they equal the stored metrics' per-example arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..evaluation._lm import min_k, prompts_and_answers, rouge_l, task_split, text_data, token_rows
from ..seeding import np_rng
from ..types import Split, Task

LM_SPLITS = ("forget", "retain", "test")
SPLIT_LABELS = {"forget": "forget profiles", "retain": "retained profiles", "test": "holdout profiles (never trained)"}
MAX_NEW_TOKENS = 32  # as the rouge_l metric's default
MIN_K = 0.4  # as the min_k metric's default (MUSE / OpenUnlearning)


def lm_splits(task: Task) -> dict[str, Split]:
    """forget, retain (the task's fixed retain evaluation subset when it has one, as the LM metrics score) and test
    (the holdout profiles, the membership non-members)."""
    return {name: task_split(task, name) for name in LM_SPLITS}


def sample_positions(task: Task, name: str, n: int, size: int) -> np.ndarray:
    k = min(size, n)
    return np.sort(np_rng("comparator-sample", task.fingerprint, name).choice(n, size=k, replace=False))


@torch.no_grad()
def block_states(model: nn.Module, split: Split, positions: np.ndarray, device: str, batch_size: int = 16) -> list[np.ndarray]:
    """Per decoder block, its output hidden state averaged over each item's tokens (question and answer, padding
    left out): a list of (n, hidden) arrays, block 1 first. Eval mode, restored."""
    sub = split.subset(positions)
    blocks: list[list[np.ndarray]] = []
    was_training = model.training
    model.eval()
    try:
        for b in sub.batches(batch_size, device=device):
            hidden = model(input_ids=b["x"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states[1:]
            mask = b["attention_mask"].float()[..., None]
            pooled = [((h.float() * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy() for h in hidden]
            if not blocks:
                blocks = [[] for _ in pooled]
            for i, p in enumerate(pooled):
                blocks[i].append(p)
    finally:
        model.train(was_training)
    return [np.concatenate(b) for b in blocks]


def item_scores(model: nn.Module, split: Split, adapter: Any, device: str) -> dict[str, Any]:
    """Per item: answer NLL (mean over the answer tokens, EOS included), answer probability exp(−NLL), Min-K% NLL
    (minus the mean of the lowest 40% answer-token log-probabilities, EOS excluded: higher = less member-like, like the
    loss), the greedy answer (at most 32 new tokens) and its ROUGE-L recall against the gold answer."""
    out = adapter.outputs(model, split, device=device)
    codec = text_data(split).codec
    prompts, answers = prompts_and_answers(split)
    generated = [codec.decode(g) for g in adapter.generate(model, prompts, max_new_tokens=MAX_NEW_TOKENS, device=device)]
    gold = [codec.decode(a) for a in answers]
    return {"nll": np.asarray(out["nll"], np.float64), "p": np.exp(-np.asarray(out["nll"], np.float64)),
            "min_k": -np.asarray([min_k(r, MIN_K) for r in token_rows(out, "token_logp", split)], np.float64),
            "rouge": rouge_l(gold, generated, "recall"), "generated": generated, "gold": gold}


def per_group(values: np.ndarray, groups: np.ndarray, order: np.ndarray) -> list[float | None]:
    """Mean of ``values`` per group (in ``order``), over its finite entries; None for a group with none."""
    out: list[float | None] = []
    for g in order:
        v = values[(groups == g) & np.isfinite(values)]
        out.append(float(v.mean()) if len(v) else None)
    return out


def compute_lm_analysis(store: Any, run_id: str, ctx: Any, *, sample_size: int, cka: Any, project: Any,
                        device: str = "cpu") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The analysis of the language-model run ``run_id`` as (JSON summary, arrays), in the classifier analysis's
    layout where they share a meaning (``<split>.ids``, ``.loss``, ``.p_true``, ``sample.*``)."""
    record = store.load_run(run_id)
    model = store.load_run_model(run_id, ctx.factory()).to(device).eval()
    task, adapter = ctx.task, get_adapter(ctx.task)
    splits = lm_splits(task)
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"modality": "causal_lm", "unit": "profile", "split_labels": SPLIT_LABELS, "splits": {}, "retrain": {},
                               "original": {}, "texts": {},
                               "scores": {"answer_prob": "answer probability exp(−mean answer-token NLL), teacher forcing",
                                          "rouge_l": f"ROUGE-L recall of the greedy answer (≤ {MAX_NEW_TOKENS} new tokens) against the gold answer",
                                          "loss": "answer NLL (nats per token, EOS included)",
                                          "min_k": f"Min-K% NLL: −mean of the lowest {int(MIN_K * 100)}% answer-token log-probabilities"}}

    def grouped(sc: dict[str, Any], groups: np.ndarray, order: np.ndarray) -> dict[str, list[float | None]]:
        return {"answer_prob": per_group(sc["p"], groups, order), "rouge_l": per_group(sc["rouge"], groups, order)}

    for name, split in splits.items():
        groups = np.asarray(split.labels, dtype=np.int64)
        order = np.unique(groups)
        sc = item_scores(model, split, adapter, device)
        arrays[f"{name}.ids"] = np.asarray(split.ids, dtype=np.int64)
        arrays[f"{name}.labels"] = groups
        arrays[f"{name}.loss"], arrays[f"{name}.p_true"] = sc["nll"], sc["p"]
        arrays[f"{name}.rouge_l"], arrays[f"{name}.min_k"] = sc["rouge"], sc["min_k"]
        summary["splits"][name] = {"n": int(len(groups)), "label": SPLIT_LABELS[name], "groups": order.tolist(),
                                   "group_names": [f"profile {int(g)}" for g in order],
                                   "n_items": [int((groups == g).sum()) for g in order], **grouped(sc, groups, order),
                                   "mean": {"answer_prob": _nanmean(sc["p"]), "rouge_l": _nanmean(sc["rouge"])}}
        summary["texts"][name] = {"question": [str(getattr(r, "question", "")) for r in text_data(split).records],
                                  "gold": sc["gold"], "generated": sc["generated"]}
        summary["retrain"][name] = [grouped(item_scores(r, split, adapter, device), groups, order) for r in ctx.retrained]
        summary["original"][name] = grouped(item_scores(ctx.original, split, adapter, device), groups, order) if ctx.original is not None else None

    feats, cka_parts, layer_names = [], {}, []
    mid = None
    for name, split in splits.items():
        pos = sample_positions(task, name, len(split), sample_size)
        states = block_states(model, split, pos, device)
        mid = (len(states) - 1) // 2
        feats.append(states[mid])
        arrays[f"sample.{name}.pos"] = pos.astype(np.int64)
        layer_names = [f"block {i + 1}" for i in range(len(states))]
        refs = {"original": [block_states(ctx.original, split, pos, device)] if ctx.original is not None else [],
                "retrain": [block_states(r, split, pos, device) for r in ctx.retrained]}
        cka_parts[name] = {layer: {kind: [cka(states[i], other[i]) for other in reps] for kind, reps in refs.items()}
                           for i, layer in enumerate(layer_names)}
    features = np.concatenate(feats).astype(np.float32)
    coords, variance = project(features)
    arrays["sample.coords"], arrays["sample.features"] = coords, features
    summary["embedding"] = {"method": "PCA", "explained_variance": variance, "feature_dim": int(features.shape[1]),
                            "features": f"mean hidden state of decoder block {(mid or 0) + 1} of {len(layer_names)} over each item's tokens"}
    summary["cka"] = {"layers": layer_names, "per_split": cka_parts, "n_sample": {s: int(len(arrays[f"sample.{s}.pos"])) for s in LM_SPLITS},
                      "representation": "each decoder block's output hidden state, mean over the item's tokens"}
    summary["references"] = {"original": ctx.original is not None, "retrained": len(ctx.retrained), "keys": ctx.reference_keys}
    summary["run_id"] = record["run_id"]
    return summary, arrays


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


__all__ = ["LM_SPLITS", "block_states", "compute_lm_analysis", "item_scores", "lm_splits", "per_group"]
