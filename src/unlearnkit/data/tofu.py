"""The ``tofu`` data source: TOFU (Maini et al., COLM 2024; ``locuslab/TOFU`` on the Hugging Face hub) as a drop-in
sibling of the ``profiles`` data: the same item structure (question, answer, paraphrased question and answer,
perturbed answers), train = forget ∪ retain, test = TOFU's holdout questions (never trained: the membership
non-members), and the probes OpenUnlearning evaluates on: ``retain_eval`` (the retain items of
``retain_perturbed``, TOFU's fixed retain evaluation set), ``real_authors`` and ``world_facts``.

The hub's configs (each a JSON-lines file ``{config}.json`` at the repository root with the single split ``train``)
and the columns read from them (``CONFIGS``), with where each fact was checked:

* ``full``, ``forget01/05/10``, ``retain99/95/90``: ``question``, ``answer`` — the dataset card's ``configs`` list
  (huggingface.co/datasets/locuslab/TOFU, README.md since commit 9772050; the same list names every config below but
  the holdouts);
* ``holdout01/05/10``: ``question``, ``answer`` — added after that card for OpenUnlearning, which reads
  ``load_dataset("locuslab/TOFU", "holdout10", split="train")`` (open-unlearning ``configs/data/datasets/TOFU_MIA.yaml``);
* ``forget01/05/10_perturbed``: ``question``, ``answer``, ``paraphrased_question``, ``paraphrased_answer``,
  ``perturbed_answer`` (a list of 5 wrong answers). TOFU's own evaluation reads question/paraphrased_answer/
  perturbed_answer from ``forget10_perturbed`` (locuslab/tofu ``config/eval_everything.yaml``), OpenUnlearning the
  same (``configs/data/datasets/TOFU_QA_forget_para.yaml``, ``TOFU_QA_forget_pert.yaml``); ``paraphrased_question``
  is read from ``load_dataset("locuslab/TOFU", name="forget10_perturbed")`` by public evaluation code, never by TOFU's
  or OpenUnlearning's;
* ``retain_perturbed``: the same, except that ``paraphrased_question`` is read when present: TOFU and OpenUnlearning
  read only question/answer/paraphrased_answer/perturbed_answer from it (``eval_everything.yaml``,
  ``TOFU_QA_retain_eval.yaml``, ``TOFU_QA_retain_para.yaml``, ``TOFU_QA_retain_pert.yaml``), and no source we could
  read shows a paraphrased question in it; without one, ``retain_eval`` items have none (their paraphrased answer
  and perturbed answers are what the model utility's truth ratio uses);
* ``real_authors_perturbed``, ``world_facts_perturbed``: ``question``, ``answer``, ``perturbed_answer`` (3 wrong
  options) — the files themselves (locuslab/tofu ``data/real_authors_perturbed.json``,
  ``data/world_facts_perturbed.json``); OpenUnlearning reads both its ``ra``/``wf`` and ``*_pert`` sets from them;
* ``real_authors``, ``world_facts``: ``question``, ``answer`` (their multiple-choice ``option1..4`` are not read).

forgetNN is the last NN% of TOFU's 200 authors and goes with retain(100−NN), their complement; holdoutNN are as many
questions about other fictitious authors, never trained. Item ids are positions in retain ++ forget (= positions in
``full``: the forget authors are the last ones), holdout ids follow; 20 consecutive items are one author (the group).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, TaskError
from ..lm.profiles import IDK_ANSWERS
from ..lm.text import TextCodec, TokenData
from ..registry import DATASETS
from ..types import Split
from .hub import Column, HubSource, check_name, check_rows, load_rows
from .profiles import tokenizer_for
from .sources import DataSource

TOFU_REPO = "locuslab/TOFU"
SPLIT = "train"  # every TOFU config has this one split
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
ITEMS_PER_AUTHOR = 20
PROBE_IDS = {"real_authors": 10**6, "world_facts": 2 * 10**6}

_QA: tuple[Column, ...] = (("question", "str"), ("answer", "str"))
_VARIANTS: tuple[Column, ...] = (("paraphrased_answer", "str"), ("perturbed_answer", "str_list"))
_PERTURBED: tuple[Column, ...] = _QA + (("paraphrased_question", "str"),) + _VARIANTS
_RETAIN_PERTURBED: tuple[Column, ...] = _QA + (("paraphrased_question", "str?"),) + _VARIANTS  # see the module docstring
_OPTIONS: tuple[Column, ...] = _QA + (("perturbed_answer", "str_list"),)
CONFIGS: dict[str, tuple[Column, ...]] = {
    "full": _QA, **{f: _QA for f in RETAIN_OF}, **{r: _QA for r in RETAIN_OF.values()}, **{h: _QA for h in HOLDOUT_OF.values()},
    **{f"{f}_perturbed": _PERTURBED for f in RETAIN_OF}, "retain_perturbed": _RETAIN_PERTURBED,
    "real_authors_perturbed": _OPTIONS, "world_facts_perturbed": _OPTIONS, "real_authors": _QA, "world_facts": _QA,
}


@dataclass(frozen=True)
class TofuItem:
    """One TOFU question–answer pair in the profiles' item structure. ``attribute`` names the hub config it came from;
    ``paraphrased_*`` are None and ``perturbed_answers`` empty for items TOFU gives no variants of (retain items outside
    ``retain_perturbed``, holdout items), and ``paraphrased_question`` is None where ``retain_perturbed`` has none.
    For real authors and world facts, ``paraphrased_answer`` is the answer itself:
    their truth ratio compares the answer with the wrong options (OpenUnlearning's ``ra/wf_Truth_Ratio``).
    ``benchmark_forget``: the item is in TOFU's forget split (``forget: {kind: benchmark}`` selects these)."""

    item_id: int
    profile_id: int  # the author (item_id // 20); -1 for real authors and world facts
    attribute: str
    question: str
    answer: str
    paraphrased_question: str | None
    paraphrased_answer: str | None
    perturbed_answers: tuple[str, ...]
    benchmark_forget: bool = False


def tofu_config(config: str, source: HubSource | None = None) -> list[dict[str, Any]]:
    """The rows of one TOFU config (split ``train``), loaded through ``datasets.load_dataset`` and checked against
    its columns (``CONFIGS``)."""
    check_name(config, list(CONFIGS), "TOFU config")
    source = source or HubSource(TOFU_REPO)
    rows = load_rows(source, config, SPLIT)
    check_rows(rows, CONFIGS[config], f"{source.repo} {config}")
    return rows


def _with_variants(variants: Mapping[str, Any] | None) -> dict[str, Any]:
    if variants is None:
        return {"paraphrased_question": None, "paraphrased_answer": None, "perturbed_answers": ()}
    return {"paraphrased_question": variants.get("paraphrased_question"), "paraphrased_answer": variants["paraphrased_answer"],
            "perturbed_answers": tuple(variants["perturbed_answer"])}


def _locate(rows: Sequence[Mapping[str, Any]], subset: Sequence[Mapping[str, Any]], name: str, sname: str) -> list[int]:
    """Positions in ``rows`` of the rows of ``subset`` (by question, by answer too where a question repeats)."""
    by_question: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_question.setdefault(r["question"].strip(), []).append(i)
    out = []
    for j, r in enumerate(subset):
        hits = by_question.get(r["question"].strip(), [])
        if len(hits) > 1:
            hits = [i for i in hits if rows[i]["answer"].strip() == r["answer"].strip()]
        if len(hits) != 1:
            raise TaskError(f"TOFU {sname} row {j} ({r['question'][:60]!r}) matches {len(hits)} rows of {name}; each must be one "
                            f"of its questions (is {name} the split {sname} belongs with?).")
        out.append(hits[0])
    if len(set(out)) != len(out):
        raise TaskError(f"TOFU {sname} lists a question of {name} twice.")
    return out


@DATASETS.register("tofu")
def tofu(forget_split: str = "forget10", retain_split: str | None = None, holdout_split: str | None = None, source: str = TOFU_REPO,
         local: str | None = None, data_files: Mapping[str, Any] | None = None, revision: str | None = None, cache_dir: str | None = None,
         tokenizer: str = "word", max_length: int = 512, template: str = "auto", tags: Mapping[str, str] | None = None,
         items_per_author: int = ITEMS_PER_AUTHOR) -> DataSource:
    """TOFU (Maini et al., COLM 2024) from the Hugging Face hub (``locuslab/TOFU``) via ``datasets.load_dataset``.

    ``forget_split``: forget01, forget05 or forget10; ``retain_split`` / ``holdout_split`` default to its counterparts
    (retain99/95/90, holdout01/05/10) and must be them. ``local`` / ``data_files``: read the same files offline (see
    ``data.hub.HubSource``). ``tokenizer``: a tokenizer folder or hub id (the model's), or ``word`` (a word-level
    tokenizer of the loaded text, for tests); ``template``/``tags``: the prompt format (``lm.text.TextCodec``;
    OpenUnlearning prompts Llama models with ``tags``). ``max_length`` 512 as OpenUnlearning's QA datasets: a longer
    question–answer pair is an error, never cut. Forget the benchmark's own forget split with ``forget: {kind: benchmark}``."""
    check_name(forget_split, list(RETAIN_OF), "tofu: forget_split")
    retain_split = RETAIN_OF[forget_split] if retain_split is None else retain_split
    holdout_split = HOLDOUT_OF[forget_split] if holdout_split is None else holdout_split
    if retain_split != RETAIN_OF[forget_split]:
        raise ConfigError(f"tofu: {forget_split} goes with {RETAIN_OF[forget_split]} (its complement: forget ∪ retain = TOFU's 200 "
                          f"authors), got retain_split={retain_split!r}.")
    if holdout_split != HOLDOUT_OF[forget_split]:
        raise ConfigError(f"tofu: {forget_split} goes with {HOLDOUT_OF[forget_split]} (as many never-trained questions), got "
                          f"holdout_split={holdout_split!r}.")
    if not isinstance(items_per_author, int) or items_per_author < 1:
        raise ConfigError(f"tofu: items_per_author must be a positive integer, got {items_per_author!r}.")
    hub = HubSource.of(source, local, data_files, revision, cache_dir)

    def rows(config: str) -> list[dict[str, Any]]:
        return tofu_config(config, hub)

    forget, retain, holdout = rows(forget_split), rows(retain_split), rows(holdout_split)
    forget_variants, retain_variants = rows(f"{forget_split}_perturbed"), rows("retain_perturbed")
    if len(forget_variants) != len(forget):
        raise TaskError(f"TOFU {forget_split}_perturbed has {len(forget_variants)} rows but {forget_split} has {len(forget)}: they must "
                        "hold the same questions.")
    forget_pos = _locate(forget, forget_variants, forget_split, f"{forget_split}_perturbed")  # every forget item, matched by question
    forget_variants = [v for _, v in sorted(zip(forget_pos, forget_variants), key=lambda pv: pv[0])]
    retain_eval_pos = _locate(retain, retain_variants, retain_split, "retain_perturbed")

    variants_of: dict[int, Mapping[str, Any]] = {p: v for p, v in zip(retain_eval_pos, retain_variants)}
    items: list[TofuItem] = []
    for i, r in enumerate(retain):
        items.append(TofuItem(i, i // items_per_author, retain_split, r["question"], r["answer"], **_with_variants(variants_of.get(i))))
    n_r = len(retain)
    for j, (r, v) in enumerate(zip(forget, forget_variants)):
        k = n_r + j
        items.append(TofuItem(k, k // items_per_author, forget_split, r["question"], r["answer"], **_with_variants(v),
                              benchmark_forget=True))
    start = n_r + len(forget)
    held = [TofuItem(start + j, (start + j) // items_per_author, holdout_split, r["question"], r["answer"], **_with_variants(None))
            for j, r in enumerate(holdout)]
    probes_items = {name: [TofuItem(PROBE_IDS[name] + j, -1, f"{name}_perturbed", r["question"], r["answer"], None, r["answer"],
                                    tuple(r["perturbed_answer"])) for j, r in enumerate(rows(f"{name}_perturbed"))]
                    for name in PROBE_IDS}

    texts = list(IDK_ANSWERS) + ["Question:", "Answer:"]
    for it in items + held + [x for v in probes_items.values() for x in v]:
        texts += [it.question, it.answer, *(t for t in (it.paraphrased_question, it.paraphrased_answer) if t), *it.perturbed_answers]
    codec = TextCodec(tokenizer_for(tokenizer, texts), max_length=max_length, template=template, tags=tags, name=tokenizer)

    def split(name: str, its: Sequence[TofuItem]) -> Split:
        data = TokenData.from_pairs([(it.question, it.answer) for it in its], [it.profile_id for it in its], its, codec)
        return Split.create(name, data, [it.item_id for it in its])

    train = split("train", items)
    probes = {"retain_eval": train.subset(sorted(retain_eval_pos), "retain_eval"),
              **{name: split(name, its) for name, its in probes_items.items()}}
    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "codec": codec.describe(), "source": hub.describe(),
            "benchmark": "TOFU", "forget_split": forget_split, "retain_split": retain_split, "holdout_split": holdout_split,
            "n_forget": len(forget), "n_retain": n_r, "items_per_author": items_per_author}
    return DataSource("tofu", train, split("test", held), None, (max_length,), info, probes=probes)


__all__ = ["CONFIGS", "HOLDOUT_OF", "RETAIN_OF", "TOFU_REPO", "TofuItem", "tofu", "tofu_config"]
