"""The ``wmdp`` data source: WMDP (Li et al., ICML 2024) — the multiple-choice questions of ``cais/wmdp`` (configs
``wmdp-bio``, ``wmdp-chem``, ``wmdp-cyber``, split ``test``: ``question``, ``choices`` (4 strings), ``answer`` (the
index of the right one)) and the unlearning corpora where public: ``cais/wmdp-corpora`` (configs
``cyber-forget-corpus``, ``cyber-retain-corpus``, ``bio-retain-corpus``, split ``train``: ``text``) and, for the bio
forget corpus, the gated ``cais/wmdp-bio-forget-corpus`` (split ``train``: ``text``; request access on the hub).

Where the schema was checked: the ``cais/wmdp`` card (huggingface.co/datasets/cais/wmdp, README.md: one split,
``test``, per config — 1,273 bio, 408 chem, 1,987 cyber questions since the 2024-04-23 update; files
``wmdp-*/test-00000-of-00001.parquet``; the ``train`` files of the first upload were deleted on 2024-03-08, so
OpenUnlearning's ``configs/data/datasets/WMDP_QA_*.yaml``, which name split ``train``, do not load the current
hub). The ``cais/wmdp-corpora`` card (README.md: 60,887 /
1,000 / 4,473 ``text`` rows in split ``train``, as OpenUnlearning's ``WMDP_Corpora_*.yaml`` read them); the bio
forget corpus is requested through the card's form, and public code reads it as
``load_dataset("cais/wmdp-bio-forget-corpus", split="train")["text"]`` (it also has ``title`` and ``abstract``).

Train = the ``domain``'s forget corpus ∪ its retain corpus, chunked as OpenUnlearning's WMDP experiment does
(blank-line joined, 2,048-token chunks); test = a seeded ``test_fraction`` of the retain chunks, held out of
training. Probes ``wmdp_bio`` / ``wmdp_chem`` / ``wmdp_cyber``: each question as lm-evaluation-harness prompts it
zero-shot (``question\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:``) with the right letter as the answer; ``choice_split``
gives the same prompts with the k-th letter, for ``wmdp_accuracy``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, TaskError
from ..lm.text import TextCodec, TokenData
from ..registry import DATASETS
from ..types import Split
from .hub import Column, HubSource, check_name, check_rows, load_rows
from .profiles import tokenizer_for
from .sources import DataSource

WMDP_REPO = "cais/wmdp"
CORPORA_REPO = "cais/wmdp-corpora"
BIO_FORGET_REPO = "cais/wmdp-bio-forget-corpus"  # gated
SUBSETS = ("wmdp-bio", "wmdp-chem", "wmdp-cyber")
CORPORA = ("cyber-forget-corpus", "cyber-retain-corpus", "bio-retain-corpus")
DOMAINS = ("bio", "cyber")
QUESTION_COLUMNS: tuple[Column, ...] = (("question", "str"), ("choices", "str_list"), ("answer", "int"))
TEXT_COLUMNS: tuple[Column, ...] = (("text", "str"),)


@dataclass(frozen=True)
class WmdpItem:
    """A corpus chunk (``question`` empty, ``answer`` the text) or a multiple-choice question (``question`` the
    lm-evaluation-harness prompt, ``answer`` the right letter, ``choices`` and ``answer_index`` as on the hub)."""

    item_id: int
    profile_id: int
    attribute: str
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    answer_index: int = -1
    benchmark_forget: bool = False


def mc_prompt(question: str, choices: Sequence[str]) -> str:
    """lm-evaluation-harness's zero-shot WMDP prompt: the question, the lettered choices, then ``Answer:``."""
    return question.strip() + "".join(f"\n{string.ascii_uppercase[k]}. {c}" for k, c in enumerate(choices)) + "\nAnswer:"


def wmdp_questions(subset: str, source: HubSource | None = None, split: str = "test") -> list[dict[str, Any]]:
    """The rows of one WMDP question set, through ``datasets.load_dataset``, checked: columns, at least two choices
    (at most 26), and an answer index among them."""
    check_name(subset, list(SUBSETS), "WMDP question set")
    source = source or HubSource(WMDP_REPO)
    rows = load_rows(source, subset, split)
    where = f"{source.repo} {subset}/{split}"
    check_rows(rows, QUESTION_COLUMNS, where)
    for i, r in enumerate(rows):
        if not 2 <= len(r["choices"]) <= 26 or not 0 <= r["answer"] < len(r["choices"]):
            raise TaskError(f"{where}: row {i} has {len(r['choices'])} choices and answer index {r['answer']}; need 2..26 choices and "
                            "an index among them.")
    return rows


def wmdp_corpus(name: str, source: HubSource | None = None) -> list[str]:
    """The documents of one WMDP corpus (``cais/wmdp-corpora`` configs, or ``bio-forget-corpus`` from the gated repo)."""
    check_name(name, list(CORPORA) + ["bio-forget-corpus"], "WMDP corpus")
    gated = name == "bio-forget-corpus"
    source = source or HubSource(BIO_FORGET_REPO if gated else CORPORA_REPO)
    rows = load_rows(source, None if gated else name, "train")
    check_rows(rows, TEXT_COLUMNS, f"{source.repo} {name}")
    return [r["text"] for r in rows]


_CHOICE_CACHE: dict[tuple[str, int], Split] = {}


def choice_split(split: Split, k: int) -> Split:
    """The questions of a ``wmdp_*`` probe (same ids and order) with the k-th letter as the answer."""
    data = split.data
    records = getattr(data, "records", None)
    if not isinstance(data, TokenData) or not records or not all(isinstance(r, WmdpItem) and r.choices for r in records):
        raise ConfigError(f"Split {split.name!r} holds no multiple-choice questions (the wmdp data source's probes do).")
    key = (split.fingerprint, k)
    if key not in _CHOICE_CACHE:
        if any(k >= len(r.choices) for r in records):
            raise ConfigError(f"Split {split.name!r}: a question has fewer than {k + 1} choices.")
        encoded = [data.codec.encode_continuation(r.question, string.ascii_uppercase[k]) for r in records]
        if len(_CHOICE_CACHE) > 64:
            _CHOICE_CACHE.clear()
        _CHOICE_CACHE[key] = Split.create(f"{split.name}:choice{k}", TokenData.from_encoded(encoded, data.y.tolist(), records, data.codec),
                                          split.ids)
    return _CHOICE_CACHE[key]


@DATASETS.register("wmdp")
def wmdp(domain: str = "cyber", subsets: Sequence[str] = SUBSETS, source: str = WMDP_REPO, corpora_source: str = CORPORA_REPO,
         bio_forget_source: str = BIO_FORGET_REPO, local: str | None = None, corpora_local: str | None = None,
         bio_forget_local: str | None = None, data_files: Mapping[str, Any] | None = None, revision: str | None = None,
         cache_dir: str | None = None, tokenizer: str = "word", chunk_tokens: int = 2048, max_length: int = 4096,
         test_fraction: float = 0.05, seed: int = 0) -> DataSource:
    """WMDP (Li et al., ICML 2024) from the Hugging Face hub via ``datasets.load_dataset``: a domain's forget and retain corpora and the multiple-choice questions.

    ``domain`` cyber (public corpora) or bio (the forget corpus is gated: request access to ``cais/wmdp-bio-forget-corpus``
    and log in). ``subsets``: the question sets given as probes (default all three). ``local`` / ``corpora_local`` /
    ``bio_forget_local``: offline copies of the three repositories; ``data_files``: explicit files (keys
    ``"wmdp-cyber/test"``, ``"cyber-forget-corpus"``, ... for whichever repository has them). ``test_fraction``: the
    share of retain chunks held out as the test split (seeded by ``seed``). Forget with ``forget: {kind: benchmark}``."""
    check_name(domain, list(DOMAINS), "wmdp: domain")
    subsets = tuple(subsets)
    if not subsets or len(set(subsets)) != len(subsets):
        raise ConfigError(f"wmdp: subsets must be distinct names among {list(SUBSETS)}, got {list(subsets)}.")
    for s in subsets:
        check_name(s, list(SUBSETS), "wmdp: subsets")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"wmdp: test_fraction must be in (0, 1), got {test_fraction}.")
    if chunk_tokens < 1 or max_length < chunk_tokens + 1:
        raise ConfigError(f"wmdp: need chunk_tokens >= 1 and max_length >= chunk_tokens + 1 (BOS), got {chunk_tokens} and {max_length}.")
    files = dict(data_files or {})
    questions_hub = HubSource.of(source, local, files, revision, cache_dir)
    corpora_hub = HubSource.of(corpora_source, corpora_local, files, revision, cache_dir)
    forget_hub = HubSource.of(bio_forget_source, bio_forget_local, files, revision, cache_dir) if domain == "bio" else corpora_hub
    forget_docs = wmdp_corpus(f"{domain}-forget-corpus", forget_hub)
    retain_docs = wmdp_corpus(f"{domain}-retain-corpus", corpora_hub)
    questions = {s: wmdp_questions(s, questions_hub) for s in subsets}

    texts = forget_docs + retain_docs + [mc_prompt(r["question"], r["choices"]) for rows in questions.values() for r in rows]
    texts += list(string.ascii_uppercase[:4])
    codec = TextCodec(tokenizer_for(tokenizer, texts), max_length=max_length, template="plain", name=tokenizer)
    forget_chunks = codec.encode_corpus(forget_docs, chunk_tokens)
    retain_chunks = codec.encode_corpus(retain_docs, chunk_tokens)
    if len(retain_chunks) < 2:
        raise TaskError(f"wmdp: the {domain} retain corpus makes {len(retain_chunks)} chunk(s); need at least 2 (one held out as test).")
    n_test = min(len(retain_chunks) - 1, max(1, int(round(test_fraction * len(retain_chunks)))))
    held = set(np.random.default_rng([seed, 9417]).choice(len(retain_chunks), size=n_test, replace=False).tolist())

    def corpus(name: str, parts: list[tuple[list[int], int, str, bool]], start: int) -> Split:
        recs = [WmdpItem(start + i, start + i, attribute, "", codec.decode(ids[n:]), benchmark_forget=forget)
                for i, (ids, n, attribute, forget) in enumerate(parts)]
        return Split.create(name, TokenData.from_encoded([(ids, n) for ids, n, _, _ in parts], [r.profile_id for r in recs], recs, codec),
                            [r.item_id for r in recs])

    train_parts = [(ids, n, f"{domain}-forget-corpus", True) for ids, n in forget_chunks]
    train_parts += [(ids, n, f"{domain}-retain-corpus", False) for i, (ids, n) in enumerate(retain_chunks) if i not in held]
    train = corpus("train", train_parts, 0)
    test = corpus("test", [(ids, n, f"{domain}-retain-corpus", False) for i, (ids, n) in enumerate(retain_chunks) if i in held], len(train))

    probes = {}
    for j, (s, rows) in enumerate(questions.items()):
        recs = [WmdpItem((j + 1) * 10**6 + i, -1, s, mc_prompt(r["question"], r["choices"]), string.ascii_uppercase[r["answer"]],
                         tuple(r["choices"]), int(r["answer"])) for i, r in enumerate(rows)]
        data = TokenData.from_encoded([codec.encode_continuation(r.question, r.answer) for r in recs], [-1] * len(recs), recs, codec)
        probes[s.replace("-", "_")] = Split.create(s.replace("-", "_"), data, [r.item_id for r in recs])
    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "codec": codec.describe(), "benchmark": "WMDP", "domain": domain,
            "source": {"questions": questions_hub.describe(), "corpora": corpora_hub.describe(), "forget": forget_hub.describe()},
            "subsets": list(subsets), "chunk_tokens": chunk_tokens, "n_forget_chunks": len(forget_chunks), "n_test_chunks": len(test),
            "test_fraction": test_fraction, "seed": seed}
    return DataSource("wmdp", train, test, None, (max_length,), info, probes=probes)


__all__ = ["BIO_FORGET_REPO", "CORPORA", "CORPORA_REPO", "SUBSETS", "WMDP_REPO", "WmdpItem", "choice_split", "mc_prompt", "wmdp",
           "wmdp_corpus", "wmdp_questions"]
