"""Where a causal LM holds a fact: the subject of each question (found in the text, then in the tokens), the MLP keys
of a subject at one layer (the input of that layer's down projection, as ROME reads them), their second moment on
other text, and causal tracing (Meng et al., Locating and Editing Factual Associations in GPT, NeurIPS 2022).

The subject of a group of questions (one profile's, one TOFU author's) is, unless given, the longest run of words that
every question of the group contains and no question of another group does: the person's name, for the profiles. It is
located in the prompt text and mapped to tokens through the tokenizer's character offsets, so a subword tokenizer gets
every token that overlaps the name. A subject that cannot be found in a prompt's tokens is a ``TaskError``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError, TaskError
from ..lm.text import IGNORE, pad_batch
from ..types import Split

_WORD = re.compile(r"\w+|[^\w\s]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _contains(words: Sequence[str], gram: Sequence[str]) -> bool:
    n = len(gram)
    return any(list(words[i : i + n]) == list(gram) for i in range(len(words) - n + 1))


def derive_subjects(questions: Sequence[str], groups: Sequence[int], others: Sequence[str] = ()) -> dict[int, str]:
    """Per group, the longest run of words found in every question of the group and in no question of another group
    (nor in ``others``, e.g. the retain set's questions); ties go to the earliest run of the group's first question. A group
    without one is a TaskError naming it (give ``subjects`` explicitly)."""
    by_group: dict[int, list[list[str]]] = {}
    for q, g in zip(questions, groups):
        by_group.setdefault(int(g), []).append(_words(q))
    out: dict[int, str] = {}
    for g, qs in by_group.items():
        rest = [_words(q) for q in others] + [w for h, ws in by_group.items() if h != g for w in ws]
        first, found = qs[0], None
        for n in range(len(first), 0, -1):
            for i in range(len(first) - n + 1):
                gram = first[i : i + n]
                if not any(c.isalnum() for w in gram for c in w):
                    continue
                if all(_contains(q, gram) for q in qs[1:]) and not any(_contains(q, gram) for q in rest):
                    found = gram
                    break
            if found:
                break
        if not found:
            raise TaskError(f"No subject shared by every question of group {g} and absent from the others' (e.g. {' '.join(first)!r}); "
                            "give the subjects explicitly.")
        out[g] = " ".join(found)
    return out


def _subject_regex(subject: str) -> re.Pattern[str]:
    words = _words(subject)
    if not words:
        raise ConfigError(f"A subject must contain a word, got {subject!r}.")
    return re.compile(r"(?<!\w)" + r"\s*".join(re.escape(w) for w in words) + r"(?!\w)")


def subject_span(codec: Any, question: str, subject: str) -> tuple[list[int], tuple[int, int]]:
    """The prompt ids of ``question`` (``codec.encode_prompt``) and the [start, end) token positions of the last
    occurrence of ``subject`` in it; a TaskError when the subject is not in the prompt's tokens."""
    text = codec.prompt(question)
    ids = codec.encode_prompt(question)
    found = list(_subject_regex(subject).finditer(text))
    if not found:
        raise TaskError(f"The subject {subject!r} cannot be located in the tokens of the prompt {question!r}.")
    a, b = found[-1].span()
    enc = codec.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    shift = len(ids) - len(enc["input_ids"])
    if shift < 0 or list(enc["input_ids"]) != ids[shift:]:
        raise TaskError(f"The prompt {question!r} tokenises differently alone than in the codec; its subject cannot be located.")
    pos = [shift + k for k, (s, e) in enumerate(enc["offset_mapping"]) if s < b and e > a and e > s]
    if not pos:
        raise TaskError(f"The subject {subject!r} cannot be located in the tokens of the prompt {question!r}.")
    return ids, (pos[0], pos[-1] + 1)


@dataclass(frozen=True)
class Located:
    """One example of a split with its subject: full ids (prompt + answer), prompt length, subject token span."""

    index: int
    group: int
    subject: str
    ids: list[int]
    n_prompt: int
    span: tuple[int, int]
    labels: list[int]


def subjects_for(split: Split, subjects: Sequence[str] | None = None, others: Sequence[Split] = ()) -> dict[int, str]:
    """The subject of each group of ``split``: found (``derive_subjects``, against the questions of ``others`` too) or,
    with ``subjects``, the first given subject that occurs in every question of the group."""
    data = split.data
    records = getattr(data, "records", None)
    if records is None or not all(hasattr(r, "question") for r in records):
        raise TaskError(f"Split {split.name!r} has no questions to find subjects in.")
    groups = [int(g) for g in data.y.tolist()]
    questions = [r.question for r in records]
    if subjects is None:
        other_q = [r.question for s in others for r in getattr(s.data, "records", []) if hasattr(r, "question")]
        return derive_subjects(questions, groups, other_q)
    out: dict[int, str] = {}
    for g in dict.fromkeys(groups):
        qs = [q for q, h in zip(questions, groups) if h == g]
        match = [s for s in subjects if all(_subject_regex(s).search(q) for q in qs)]
        if not match:
            raise TaskError(f"None of the subjects {list(subjects)} occurs in every question of group {g} (e.g. {qs[0]!r}).")
        out[g] = match[0]
    return out


def item_subjects(split: Split, derive: bool = True) -> list[str | None]:
    """Per item of ``split``, the entity it is about, read from the item itself (an oracle named-entity recogniser): a
    profile item's ``subject`` (the person's name), a knowledge fact's ``target`` (none for its general-ability
    questions); for records that carry neither (TOFU's), their group's subject as ``subjects_for`` derives it (when
    ``derive``: quadratic in the split's questions). None where there is no subject."""
    records = getattr(split.data, "records", None) or []
    if not records or not all(hasattr(r, "question") for r in records):
        return [None] * len(records)

    def own(r: Any) -> str | None:
        name = getattr(r, "subject", "") or ("" if getattr(r, "attribute", "") == "general" else getattr(r, "target", ""))
        return name or None

    if any(hasattr(r, "subject") or hasattr(r, "target") for r in records):
        return [own(r) for r in records]
    if not derive:
        return [None] * len(records)
    try:
        derived = subjects_for(split)
    except TaskError:
        return [None] * len(records)
    return [derived.get(int(g)) for g in split.data.y.tolist()]


def edit_subjects(split: Split, given: Sequence[str] | None = None, others: Sequence[Split] = ()) -> list[str]:
    """Per item of ``split``, the subject an edit or a trace keys on: with ``given``, the first given subject found in
    every question of the item's group (``subjects_for``); else the item's own entity where every item names one
    (``item_subjects``: a profile's person, a knowledge fact's target); else its group's derived subject."""
    if given is None:
        own = item_subjects(split, derive=False)
        if own and all(own):
            return [str(s) for s in own]
    groups = subjects_for(split, given, others)
    return [groups[int(g)] for g in split.data.y.tolist()]


def locate(split: Split, subjects: Mapping[int, str] | Sequence[str], *, skip_unnamed: bool = False) -> list[Located]:
    """Every example of ``split`` with its subject located in its prompt tokens (checked against the stored ids).
    ``subjects`` maps each group to its subject, or gives one subject per item. With ``skip_unnamed``, an item whose
    prompt does not name its subject is left out (``locate_named`` reports them); otherwise it is a TaskError."""
    data = split.data
    codec = data.codec
    per_item = isinstance(subjects, Sequence) and not isinstance(subjects, str)
    if per_item and len(subjects) != len(data.records):
        raise ConfigError(f"locate: {len(subjects)} subjects for the {len(data.records)} items of split {split.name!r}.")
    out = []
    for i, r in enumerate(data.records):
        g = int(data.y[i])
        subject = subjects[i] if per_item else subjects[g]  # type: ignore[index]
        if skip_unnamed and not _subject_regex(subject).search(codec.prompt(r.question)):
            continue
        n = int(data.attention_mask[i].sum())
        row = data.x[i, :n].tolist()
        labels = data.labels[i, :n].tolist()
        n_prompt = next((k for k, v in enumerate(labels) if v != IGNORE), n)
        ids, span = subject_span(codec, r.question, subject)
        if ids != row[:n_prompt]:
            raise TaskError(f"The stored tokens of item {int(split.ids[i])} do not start with its prompt {r.question!r}; "
                            "its subject cannot be located.")
        out.append(Located(i, g, subject, row, n_prompt, span, labels))
    return out


def locate_named(split: Split, subjects: Sequence[str], who: str) -> tuple[list[Located], dict[str, Any]]:
    """The items of ``split`` whose prompt names their subject (``locate`` with ``skip_unnamed``), and a summary of the
    ones left out: a subject-keyed edit or trace cannot reach a fact asked without naming its subject ("Who wrote
    Hamlet?" for Shakespeare). None named at all is a TaskError saying so."""
    located = locate(split, subjects, skip_unnamed=True)
    kept = {ex.index for ex in located}
    records = split.data.records
    unnamed = [i for i in range(len(records)) if i not in kept]
    if not located:
        i = unnamed[0]
        raise TaskError(f"{who}: none of the {len(records)} questions of split {split.name!r} names its subject (e.g. "
                        f"{records[i].question!r} about {subjects[i]!r}); {who} keys on the subject's tokens in the prompt, "
                        "so it cannot reach facts asked without naming their subject.")
    summary = {"named": len(located), "unnamed": len(unnamed),
               "unnamed_examples": [{"id": int(split.ids[i]), "subject": subjects[i], "question": records[i].question}
                                    for i in unnamed[:5]]}
    return located, summary


def substitute(question: str, subject: str, target: str) -> str:
    """``question`` with every occurrence of ``subject`` replaced by ``target``."""
    return _subject_regex(subject).sub(lambda _m: target, question)


# ------------------------------------------------------------------------------------------------ MLP keys
class _Stop(Exception):
    pass


def down_proj(model: nn.Module, layer: int) -> nn.Module:
    """The MLP down projection of decoder layer ``layer`` (a Llama-style block: ``mlp.down_proj``)."""
    from ..models.causal_lm import decoder_layers

    block = decoder_layers(model)[layer]
    module = getattr(getattr(block, "mlp", None), "down_proj", None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"Decoder layer {layer} ({type(block).__name__}) has no mlp.down_proj to edit.")
    return module


@torch.no_grad()
def mlp_keys(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The keys (n, L, d_ff) of decoder layer ``layer``: the input of its MLP down projection at every position. The
    forward pass stops there."""
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: Any) -> None:
        store.append(args[0].detach())
        raise _Stop

    handle = down_proj(model, layer).register_forward_pre_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    cost.record(passes=len(input_ids))
    return store[0]


def subject_keys(model: nn.Module, prompts: Sequence[Sequence[int]], last: Sequence[int], layer: int, *, pad: int,
                 device: Any = "cpu", batch_size: int = 16) -> torch.Tensor:
    """The key at position ``last[i]`` (the last subject token) of each prompt: (n, d_ff)."""
    out = []
    for s in range(0, len(prompts), batch_size):
        ids, mask = pad_batch(prompts[s : s + batch_size], pad, device)
        k = mlp_keys(model, ids, mask, layer)
        out.append(k[torch.arange(len(ids), device=k.device), torch.as_tensor(list(last[s : s + batch_size]), device=k.device)])
    return torch.cat(out)


def key_second_moment(model: nn.Module, split: Split, layer: int, *, device: Any = "cpu", batch_size: int = 16) -> tuple[torch.Tensor, int]:
    """E[k kᵀ] (float64, d_ff × d_ff) over the keys of every attended token of ``split`` at ``layer``, and their number."""
    total, count = None, 0
    for batch in split.batches(batch_size, device=device):
        k = mlp_keys(model, batch["x"], batch["attention_mask"], layer)
        flat = k[batch["attention_mask"].bool()].double()
        total = flat.T @ flat if total is None else total + flat.T @ flat
        count += len(flat)
    if total is None or count == 0:
        raise TaskError(f"Split {split.name!r} has no tokens to estimate the key covariance from.")
    return total / count, count


# ------------------------------------------------------------------------------------------------ causal tracing
CATEGORIES = ("before subject", "first subject token", "middle subject tokens", "last subject token", "first subsequent token",
              "further tokens", "last token")
SUBJECT_CATEGORIES = (1, 2, 3)


def category(t: int, span: tuple[int, int], n_prompt: int) -> int:
    """The position class of prompt token ``t`` (ROME's aggregate: subject tokens, the token after, the last token)."""
    a, b = span
    if t == b - 1:
        return 3
    if t == a:
        return 1
    if a < t < b:
        return 2
    if t == n_prompt - 1:
        return 6
    if t == b:
        return 4
    return 5 if t > b else 0


def _answer_prob(logits: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: exp(mean log-probability of the answer tokens), teacher-forced."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = labels[1:]
    keep = target != IGNORE
    tok = logp[:, keep].gather(-1, target[keep].expand(len(logits), -1)[..., None])[..., 0]
    return tok.mean(-1).exp()


def _layer_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def trace_example(model: nn.Module, ex: Located, *, noise: float, samples: int, generator: torch.Generator,
                  device: Any = "cpu") -> dict[str, Any]:
    """Causal tracing of one example: the answer probability clean, with Gaussian noise (std ``noise``) added to the
    subject tokens' embeddings (``samples`` draws), and with each decoder layer's clean output restored at each prompt
    position in turn under the same noise. Returns p_clean, p_corrupt and ``restored`` (layers × prompt positions)."""
    from ..models.causal_lm import decoder_layers

    blocks = decoder_layers(model)
    ids = torch.as_tensor(ex.ids, device=device)[None]
    labels = torch.as_tensor(ex.labels, device=device)
    embed = model.get_input_embeddings()
    clean: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: clean.append(_layer_output(o).detach())) for b in blocks]
    try:
        p_clean = float(_answer_prob(model(input_ids=ids).logits, ids[0], labels)[0])
    finally:
        for h in hooks:
            h.remove()
    a, b = ex.span
    base = embed(ids)  # (1, n, d)
    eps = torch.randn((samples, b - a, base.shape[-1]), generator=generator).to(device=device, dtype=base.dtype) * noise
    corrupt = base.expand(samples, -1, -1).clone()
    corrupt[:, a:b] += eps
    p_corrupt = float(_answer_prob(model(inputs_embeds=corrupt).logits, ids[0], labels).mean())
    P = ex.n_prompt
    rows = torch.arange(P * samples, device=device)
    where = rows // samples  # the restored position of each row of the batch
    batch = corrupt.repeat(P, 1, 1)  # row r: noise draw r % samples
    restored = np.zeros((len(blocks), P))
    for layer, block in enumerate(blocks):
        def restore(_m: nn.Module, _i: Any, o: Any, layer: int = layer) -> Any:
            h = _layer_output(o).clone()
            h[rows, where] = clean[layer][0, where].to(h.dtype)
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handle = block.register_forward_hook(restore)
        try:
            p = _answer_prob(model(inputs_embeds=batch).logits, ids[0], labels)
        finally:
            handle.remove()
        restored[layer] = p.view(P, samples).mean(1).cpu().numpy()
    cost.record(passes=1 + samples * (1 + P * len(blocks)))
    return {"p_clean": p_clean, "p_corrupt": p_corrupt, "restored": restored}


def causal_trace(model: nn.Module, examples: Sequence[Located], *, noise: float = 3.0, samples: int = 3, seed: int = 0,
                 device: Any = "cpu", progress: bool = False) -> dict[str, Any]:
    """Causal tracing over ``examples``: the noise std is ``noise`` × the std of the model's token embeddings (ROME's 3σ).
    The result (JSON-ready): ``matrix`` (layers × ``CATEGORIES``: the mean over examples of the indirect effect
    p_restored − p_corrupt, averaged over the positions of each class; None where no example has such a position),
    ``layer_scores`` (per layer, the largest effect over the subject-token classes), the mean clean and corrupted answer
    probabilities, and the first example's full layer × position matrix with its tokens."""
    if not examples:
        raise TaskError("Causal tracing needs at least one prompt.")
    if not (np.isfinite(noise) and noise > 0) or samples < 1:
        raise ConfigError(f"Causal tracing needs noise > 0 and samples >= 1, got {noise} and {samples}.")
    was_training = model.training
    model.eval()
    std = float(model.get_input_embeddings().weight.detach().float().std())
    generator = torch.Generator().manual_seed(int(seed))
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    traced, first = [], None
    try:
        from tqdm.auto import tqdm

        for ex in tqdm(examples, desc="causal tracing", disable=not progress, leave=False):
            t = trace_example(model, ex, noise=noise * std, samples=samples, generator=generator, device=device)
            effect = t["restored"] - t["p_corrupt"]
            n_layers = effect.shape[0]
            if sums is None:
                sums, counts = np.zeros((n_layers, len(CATEGORIES))), np.zeros(len(CATEGORIES))
                first = {"tokens": ex.ids[: ex.n_prompt], "subject_span": list(ex.span), "effect": effect.tolist()}
            assert counts is not None
            for c in range(len(CATEGORIES)):
                cols = [p for p in range(ex.n_prompt) if category(p, ex.span, ex.n_prompt) == c]
                if cols:
                    sums[:, c] += effect[:, cols].mean(1)
                    counts[c] += 1
            traced.append((t["p_clean"], t["p_corrupt"]))
    finally:
        model.train(was_training)
    assert sums is not None and counts is not None
    matrix = [[None if counts[c] == 0 else float(sums[l, c] / counts[c]) for c in range(len(CATEGORIES))] for l in range(len(sums))]
    scores = [max(matrix[l][c] for c in SUBJECT_CATEGORIES if matrix[l][c] is not None) for l in range(len(sums))]
    return {"categories": list(CATEGORIES), "matrix": matrix, "layer_scores": [float(s) for s in scores],
            "p_clean": float(np.mean([a for a, _ in traced])), "p_corrupt": float(np.mean([b for _, b in traced])),
            "n_prompts": len(examples), "noise": float(noise), "noise_std": noise * std, "samples": int(samples), "example": first}


__all__ = ["CATEGORIES", "Located", "causal_trace", "category", "derive_subjects", "down_proj", "item_subjects", "key_second_moment", "locate",
           "mlp_keys", "subject_keys", "subject_span", "subjects_for", "substitute", "trace_example"]
