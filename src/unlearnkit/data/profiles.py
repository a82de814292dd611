"""The ``profiles`` data source: fictitious people as tokenised question–answer pairs (train = profiles the target
model is fine-tuned on; test = holdout profiles never trained, the membership non-members), with the neighbour
facts (real-world knowledge to keep) as a probe split. Variants of a split (paraphrased, perturbed, "I don't know"
answers) are built from the examples' records by ``variant``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


from ..errors import ConfigError, TaskError
from ..lm.profiles import GENERATOR_VERSION, IDK_ANSWERS, all_items, generate_profiles, neighbour_items
from ..lm.text import TextCodec, TokenData, word_tokenizer
from ..registry import DATASETS
from ..types import Split
from .sources import DataSource

# profiles trained on; "medium" (100 people, 60 forget items at 10%) is the CPU-runnable scale with statistical power for
# forget quality; "full" is TOFU-sized (200 people), for GPU users
SCALES = {"tiny": 20, "small": 24, "medium": 100, "full": 200}
# retained profiles the retain-side metrics score (None = all): a fixed subset, as TOFU scores 400 of its 3600 retain items
EVAL_RETAIN = {"tiny": None, "small": 6, "medium": 10, "full": 20}


def _all_texts(items: Sequence[Any]) -> list[str]:
    out = list(IDK_ANSWERS) + ["Question:", "Answer:"]
    for it in items:
        out += [it.question, it.answer, it.paraphrased_question, it.paraphrased_answer, *it.perturbed_answers]
    return out


def tokenizer_for(name: str, texts: Sequence[str]) -> Any:
    """``word``: a word-level tokenizer of the generated text (tiny models, tests); ``smollm2``: SmolLM2's own
    (offline); anything else: a tokenizer folder or hub id."""
    if name == "word":
        return word_tokenizer(texts)
    from ..models.causal_lm import load_tokenizer, smollm2_path

    if name == "smollm2":
        return load_tokenizer(smollm2_path())
    return load_tokenizer(name)


@functools.lru_cache(maxsize=8)
def _codec(tokenizer: str, n_profiles: int, holdout: int, seed: int, n_perturbed: int, max_length: int, template: str) -> TextCodec:
    profiles = generate_profiles(n_profiles + holdout, seed, n_perturbed=n_perturbed)
    items = all_items(profiles) + neighbour_items(n_perturbed)
    return TextCodec(tokenizer_for(tokenizer, _all_texts(items)), max_length=max_length, template=template, name=tokenizer)


def _split(name: str, items: Sequence[Any], codec: TextCodec) -> Split:
    data = TokenData.from_pairs([(it.question, it.answer) for it in items], [it.profile_id for it in items], items, codec)
    return Split.create(name, data, [it.item_id for it in items])


@DATASETS.register("profiles")
def profiles(scale: str = "small", n_profiles: int | None = None, holdout_profiles: int | None = None, seed: int = 0,
             tokenizer: str = "word", max_length: int = 128, template: str = "auto", n_perturbed: int = 3,
             eval_retain_profiles: int | None = None) -> DataSource:
    """Fictitious author profiles as question–answer pairs (TOFU-style, Maini et al. 2024), generated offline.

    ``scale`` tiny/small/medium/full sets the number of trained profiles (20/24/100/200) unless ``n_profiles`` is given;
    ``holdout_profiles`` (default a tenth,
    at least 2) are never trained. Each profile has 6 question–answer items. ``eval_retain_profiles`` = k: the
    retain-side metrics (utility, retain answer probability, ROUGE-L, truth ratio, paraphrases) score only the k
    retained profiles with the smallest ids, a fixed subset (default per scale: all / 6 / 10 / 20; 0 = all). Training and
    the retain model still use every retained profile."""
    if scale not in SCALES:
        raise ConfigError(f"profiles: scale must be one of {sorted(SCALES)}, got {scale!r}.")
    n = int(n_profiles if n_profiles is not None else SCALES[scale])
    holdout = int(holdout_profiles if holdout_profiles is not None else max(2, n // 10))
    if n < 2 or holdout < 1:
        raise ConfigError(f"profiles: need at least 2 trained and 1 holdout profile, got {n} and {holdout}.")
    codec = _codec(tokenizer, n, holdout, seed, n_perturbed, max_length, template)
    people = generate_profiles(n + holdout, seed, n_perturbed=n_perturbed)
    train = _split("train", all_items(people[:n]), codec)
    test = _split("test", all_items(people[n:]), codec)
    neighbours = _split("neighbours", neighbour_items(n_perturbed), codec)
    k = EVAL_RETAIN[scale] if eval_retain_profiles is None else int(eval_retain_profiles)
    if k is not None and k < 0:
        raise ConfigError(f"profiles: eval_retain_profiles must be >= 0 (0 = all), got {eval_retain_profiles}.")
    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "generator_version": GENERATOR_VERSION, "codec": codec.describe(),
            "n_profiles": n, "holdout_profiles": holdout, "items_per_profile": 6}
    if k:
        info["eval_retain_groups"] = k
    return DataSource("profiles", train, test, None, (max_length,), info, probes={"neighbours": neighbours})


VARIANTS = ("paraphrase", "paraphrased_answer", "perturbed", "idk")


def variant(split: Split, kind: str, k: int = 0) -> Split:
    """The same facts (same ids, same order) in another form, tokenised with the split's codec:
    ``paraphrase`` (paraphrased question and answer), ``paraphrased_answer`` (original question, paraphrased
    answer; TOFU's "correct" answer in the truth ratio), ``perturbed`` (original question, the k-th wrong answer),
    ``idk`` (original question, the k-th "I don't know" answer, cycling)."""
    data = split.data
    if not isinstance(data, TokenData):
        raise ConfigError(f"Split {split.name!r} is not text; variants need question-answer records.")
    if kind not in VARIANTS:
        raise ConfigError(f"Unknown variant {kind!r}; known: {list(VARIANTS)}.")
    return _variant(split, kind, k)


_VARIANT_CACHE: dict[tuple[str, str, str, int], Split] = {}


def _variant(split: Split, kind: str, k: int) -> Split:
    data: TokenData = split.data  # type: ignore[assignment]
    key = (split.fingerprint, data.records_fingerprint, kind, k)  # the tokens and the records the variants are read from
    if key in _VARIANT_CACHE:
        return _VARIANT_CACHE[key]
    pairs = []
    need = {"paraphrase": ("paraphrased_question", "paraphrased_answer"), "paraphrased_answer": ("paraphrased_answer",)}.get(kind, ())
    for i, r in enumerate(data.records):
        lacking = [f for f in need if getattr(r, f, None) is None]
        if lacking:
            raise TaskError(f"Item {r.item_id} of split {split.name!r} has no {' or '.join(lacking)}: its source gives none for it "
                            f"(TOFU has them only for its forget splits and retain_perturbed, the probe retain_eval).")
        if kind == "paraphrase":
            pairs.append((r.paraphrased_question, r.paraphrased_answer))
        elif kind == "paraphrased_answer":
            pairs.append((r.question, r.paraphrased_answer))
        elif kind == "perturbed":
            if k >= len(r.perturbed_answers):
                raise ConfigError(f"Item {r.item_id} has {len(r.perturbed_answers)} perturbed answers; asked for number {k}.")
            pairs.append((r.question, r.perturbed_answers[k]))
        else:
            pairs.append((r.question, IDK_ANSWERS[(i + k) % len(IDK_ANSWERS)]))
    out = Split.create(f"{split.name}:{kind}{k if kind in ('perturbed', 'idk') else ''}",
                       TokenData.from_pairs(pairs, data.y.tolist(), data.records, data.codec), split.ids)
    if len(_VARIANT_CACHE) > 256:
        _VARIANT_CACHE.clear()
    _VARIANT_CACHE[key] = out
    return out


def n_perturbed(split: Split) -> int:
    """The number of perturbed answers every item of ``split`` has (the smallest count); an item with none is an error."""
    data: TokenData = split.data  # type: ignore[assignment]
    n = int(min(len(r.perturbed_answers) for r in data.records))
    if n == 0:
        bare = next(r.item_id for r in data.records if not r.perturbed_answers)
        raise TaskError(f"Item {bare} of split {split.name!r} has no perturbed answers, which the truth ratio and the normalised "
                        "probability need (TOFU has them only for its forget splits, retain_perturbed, real authors and world facts).")
    return n


__all__ = ["SCALES", "VARIANTS", "n_perturbed", "profiles", "tokenizer_for", "variant"]
