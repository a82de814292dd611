"""The ``muse`` data source: MUSE (Shi et al., 2024; ``muse-bench/MUSE-News`` and ``muse-bench/MUSE-Books`` on the
Hugging Face hub) as OpenUnlearning runs it: train on the raw forget corpus ∪ the retain corpus (``raw/retain1``)
cut into chunks of 2,048 tokens, test = the raw holdout corpus (never trained), and the evaluation sets as probes.

The hub's configs, splits and columns read (``CONFIGS``), as the two dataset cards' ``dataset_info`` list them
(huggingface.co/datasets/muse-bench/MUSE-News and .../MUSE-Books, README.md on ``main``; files
``{config}/{split}-00000-of-00001.parquet``):

* ``raw``: ``forget``, ``retain1`` (what unlearning may use), ``retain2``, ``holdout`` — ``text`` (News 889 / 1,777 /
  1,778 / 3,043 articles, Books 4 / 12 / 13 / 3 books);
* ``verbmem``: ``forget`` — ``prompt``, ``gt`` (the passage's continuation; 100 rows);
* ``knowmem``: ``forget_qa``, ``retain_qa`` (100 each) and their in-context examples ``forget_qa_icl``,
  ``retain_qa_icl`` (10 each) — ``question``, ``answer``. Revisions before the cards' last update name the retain
  splits ``retain2_qa`` / ``retain2_qa_icl`` (and privleak's ``retain2``); this loader reads the current names;
* ``privleak``: ``forget``, ``retain``, ``holdout`` — ``text`` (100 each);
* News only (the Books card lists five configs, raw, verbmem, knowmem, privleak and train): ``scal``
  (``forget_1``..``forget_4``, growing forget sets of 889 to 3,554 articles) and ``sust`` (``forget_1``..``forget_4``,
  successive requests of 889 / 889 / 889 / 887) — ``text``.

The cards' ``train`` config (raw/retain1, raw/retain2 and, for News, scal/forget_4 as ``forget``) is not read. The
configs OpenUnlearning reads are the same (open-unlearning ``configs/data/datasets/MUSE_forget.yaml``: raw/forget;
``MUSE_retain.yaml``: raw/retain1; ``MUSE_forget_knowmem.yaml``: knowmem/forget_qa with forget_qa_icl shots;
``MUSE_forget_verbmem.yaml``: verbmem/forget, prompt + " " + gt; ``MUSE_MIA.yaml``: privleak/forget and holdout;
``MUSE_forget_scal.yaml``: scal/forget_4; ``MUSE_forget_sust.yaml``: sust/forget_1).

Probes: ``verbmem_forget`` (prompt → gt), ``knowmem_forget`` / ``knowmem_retain`` (question → answer, prompted after
the ``*_qa_icl`` examples), ``privleak_forget`` / ``privleak_retain`` / ``privleak_holdout`` (documents). The four
per-model MUSE metrics read them (``evaluation.muse``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..lm.text import TextCodec, TokenData
from ..registry import DATASETS
from ..types import Split
from .hub import Column, HubSource, check_name, check_rows, load_rows
from .profiles import tokenizer_for
from .sources import DataSource

MUSE_REPOS = {"News": "muse-bench/MUSE-News", "Books": "muse-bench/MUSE-Books"}
_TEXT: tuple[Column, ...] = (("text", "str"),)
_QA: tuple[Column, ...] = (("question", "str"), ("answer", "str"))
_STEPS = ("forget_1", "forget_2", "forget_3", "forget_4")
CONFIGS: dict[str, tuple[tuple[str, ...], tuple[Column, ...]]] = {
    "raw": (("forget", "retain1", "retain2", "holdout"), _TEXT),
    "verbmem": (("forget",), (("prompt", "str"), ("gt", "str"))),
    "knowmem": (("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"), _QA),
    "privleak": (("forget", "retain", "holdout"), _TEXT),
    "scal": (_STEPS, _TEXT),
    "sust": (_STEPS, _TEXT),
}
NEWS_ONLY = ("scal", "sust")
FORGET_CORPORA = {"raw": ("forget",), "scal": _STEPS, "sust": _STEPS}
PROBE_IDS = {"verbmem_forget": 1, "knowmem_forget": 2, "knowmem_retain": 3, "privleak_forget": 4, "privleak_retain": 5,
             "privleak_holdout": 6}  # probe ids start at k·10**6


@dataclass(frozen=True)
class MuseText:
    """One MUSE example: a corpus chunk or document (``question`` empty, ``answer`` the text), a verbatim-memorisation
    passage (``question`` the prompt, ``answer`` the ground-truth continuation) or a knowledge question. ``attribute``
    names its config/split; ``benchmark_forget`` marks the forget corpus (``forget: {kind: benchmark}``)."""

    item_id: int
    profile_id: int
    attribute: str
    question: str
    answer: str
    benchmark_forget: bool = False


def muse_config(corpus: str, config: str, split: str, source: HubSource | None = None) -> list[dict[str, Any]]:
    """The rows of one MUSE (config, split), loaded through ``datasets.load_dataset`` and checked against its columns."""
    check_name(corpus, list(MUSE_REPOS), "MUSE corpus")
    check_name(config, list(CONFIGS), "MUSE config")
    if corpus != "News" and config in NEWS_ONLY:
        raise ConfigError(f"MUSE config {config!r} exists for MUSE-News only, not MUSE-{corpus}.")
    check_name(split, list(CONFIGS[config][0]), f"MUSE {config} split")
    source = source or HubSource(MUSE_REPOS[corpus])
    rows = load_rows(source, config, split)
    check_rows(rows, CONFIGS[config][1], f"{source.repo} {config}/{split}")
    return rows


@DATASETS.register("muse")
def muse(corpus: str = "News", forget_config: str = "raw", forget_split: str = "forget", retain_split: str = "retain1",
         source: str | None = None, local: str | None = None, data_files: Mapping[str, Any] | None = None, revision: str | None = None,
         cache_dir: str | None = None, tokenizer: str = "word", chunk_tokens: int = 2048, max_length: int = 4096, template: str = "auto",
         tags: Mapping[str, str] | None = None) -> DataSource:
    """MUSE (Shi et al., 2024) News or Books from the Hugging Face hub via ``datasets.load_dataset``, as OpenUnlearning runs it.

    Train = the forget corpus (``forget_config``/``forget_split``: raw/forget, or for News the scalability and
    sustainability sets scal|sust/forget_1..4) ∪ the retain corpus (raw/``retain_split``, retain1 as OpenUnlearning),
    each joined with blank lines and cut into ``chunk_tokens``-token chunks (2,048 as OpenUnlearning's pretraining
    datasets); test = raw/holdout chunks. Verbatim-memorisation continuations and privleak documents keep at most
    ``chunk_tokens`` tokens (OpenUnlearning's cut). Knowledge questions are prompted after their in-context examples
    with the codec's template (``tags``: OpenUnlearning's Llama-2 tags ``Question: `` / ``Answer: ``). ``local`` /
    ``data_files``: read the same files offline (``data.hub.HubSource``). Forget with ``forget: {kind: benchmark}``."""
    check_name(corpus, list(MUSE_REPOS), "muse: corpus")
    check_name(forget_config, list(FORGET_CORPORA), "muse: forget_config")
    if corpus != "News" and forget_config in NEWS_ONLY:
        raise ConfigError(f"muse: forget_config {forget_config!r} (MUSE's scalability/sustainability sets) exists for corpus News only.")
    check_name(forget_split, list(FORGET_CORPORA[forget_config]), f"muse: forget_split of {forget_config}")
    check_name(retain_split, ["retain1", "retain2"], "muse: retain_split")
    if chunk_tokens < 1 or max_length < chunk_tokens + 1:
        raise ConfigError(f"muse: need chunk_tokens >= 1 and max_length >= chunk_tokens + 1 (BOS), got {chunk_tokens} and {max_length}.")
    hub = HubSource.of(source or MUSE_REPOS[corpus], local, data_files, revision, cache_dir)

    def rows(config: str, split: str) -> list[dict[str, Any]]:
        return muse_config(corpus, config, split, hub)

    forget_docs = [r["text"] for r in rows(forget_config, forget_split)]
    retain_docs = [r["text"] for r in rows("raw", retain_split)]
    holdout_docs = [r["text"] for r in rows("raw", "holdout")]
    verbmem = rows("verbmem", "forget")
    knowmem = {k: rows("knowmem", k) for k in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")}
    privleak = {k: [r["text"] for r in rows("privleak", k)] for k in ("forget", "retain", "holdout")}

    vocab_texts = ["Question:", "Answer:"] + forget_docs + retain_docs + holdout_docs + [t for ts in privleak.values() for t in ts]
    vocab_texts += [r[k] for r in verbmem for k in ("prompt", "gt")] + [r[k] for rs in knowmem.values() for r in rs for k in ("question", "answer")]
    codec = TextCodec(tokenizer_for(tokenizer, vocab_texts), max_length=max_length, template=template, tags=tags, name=tokenizer)

    def chunks(name: str, parts: Sequence[tuple[str, Sequence[str], bool]], start: int = 0) -> Split:
        """Each (attribute, documents, forget?) corpus cut into chunks; ids from ``start``; a chunk is its own group."""
        encoded: list[tuple[list[int], int]] = []
        recs: list[MuseText] = []
        for attribute, docs, forget in parts:
            for ids, n_prompt in codec.encode_corpus(docs, chunk_tokens):
                k = start + len(encoded)
                encoded.append((ids, n_prompt))
                recs.append(MuseText(k, k, attribute, "", codec.decode(ids[n_prompt:]), forget))
        return Split.create(name, TokenData.from_encoded(encoded, [r.profile_id for r in recs], recs, codec), [r.item_id for r in recs])

    forget_name = f"{forget_config}/{forget_split}"
    train = chunks("train", [(forget_name, forget_docs, True), (f"raw/{retain_split}", retain_docs, False)])
    test = chunks("test", [("raw/holdout", holdout_docs, False)], start=len(train))

    def probe(name: str, items: list[tuple[list[int], int]], recs_: list[MuseText]) -> Split:
        return Split.create(name, TokenData.from_encoded(items, [-1] * len(items), recs_, codec), [r.item_id for r in recs_])

    probes: dict[str, Split] = {}
    base = PROBE_IDS["verbmem_forget"] * 10**6
    recs_v = [MuseText(base + i, -1, "verbmem/forget", r["prompt"], r["gt"]) for i, r in enumerate(verbmem)]
    probes["verbmem_forget"] = probe("verbmem_forget", [codec.encode_continuation(r.question, r.answer, max_continuation_tokens=chunk_tokens)
                                                        for r in recs_v], recs_v)
    for side in ("forget", "retain"):
        base = PROBE_IDS[f"knowmem_{side}"] * 10**6
        shots = [(r["question"], r["answer"]) for r in knowmem[f"{side}_qa_icl"]]
        recs_k = [MuseText(base + i, -1, f"knowmem/{side}_qa", r["question"], r["answer"]) for i, r in enumerate(knowmem[f"{side}_qa"])]
        probes[f"knowmem_{side}"] = probe(f"knowmem_{side}", [codec.encode_pair(r.question, r.answer, shots) for r in recs_k], recs_k)
    for side, docs in privleak.items():
        base = PROBE_IDS[f"privleak_{side}"] * 10**6
        recs_p = [MuseText(base + i, -1, f"privleak/{side}", "", d) for i, d in enumerate(docs)]
        probes[f"privleak_{side}"] = probe(f"privleak_{side}", [codec.encode_document(d, max_tokens=chunk_tokens) for d in docs], recs_p)

    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "codec": codec.describe(), "source": hub.describe(), "benchmark": "MUSE",
            "corpus": corpus, "forget": forget_name, "retain": f"raw/{retain_split}", "chunk_tokens": chunk_tokens,
            "n_forget_chunks": sum(r.benchmark_forget for r in train.data.records), "n_train_chunks": len(train),
            "icl_shots": {side: len(knowmem[f"{side}_qa_icl"]) for side in ("forget", "retain")}}
    return DataSource("muse", train, test, None, (max_length,), info, probes=probes)


__all__ = ["CONFIGS", "MUSE_REPOS", "MuseText", "muse", "muse_config"]
