"""The ``knowledge`` data source: real-world knowledge a pretrained model already has (RWKU's setting, Jin et al.,
NeurIPS 2024 Datasets & Benchmarks), with no retrained oracle.

A versioned candidate list (``knowledge_facts/candidates.json``: famous people, places and books, each fact with its
target, type, question and answer, plus general-ability questions) is put to the model by
``benchmarks/knowledge_select.py``, greedily; the facts it answers correctly are stored, with its answers, as a
selection file (``knowledge_facts/selection_smollm2.json`` for SmolLM2-135M-Instruct). The task forgets targets by
name: train = every selected fact (the model's pretraining stands for its training; the facts are what an unlearning
method may read), the forget set the facts of the named targets (``forget: {kind: benchmark}``), test = the candidate
facts the model does *not* know (the level a model without the knowledge answers at), probes ``neighbours`` (selected
facts of other targets of the forget targets' types) and ``general`` (the general-ability questions it answers).

No model retrained without the forget targets exists (the knowledge comes from pretraining), so the data says
``info["oracle"] = False``: the runner takes the pretrained model as the original, trains no reference, and the
verdict compares forget evidence with the unknown facts' level and neighbours and general ability with the original
(``verdict.decide_without_oracle``)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EmptySelection
from ..io import read_json
from ..lm.text import TextCodec, TokenData
from ..registry import DATASETS, suggest
from ..types import Split
from .profiles import tokenizer_for
from .sources import DataSource

FACTS_DIR = Path(__file__).parent / "knowledge_facts"
CANDIDATES = FACTS_DIR / "candidates.json"
SELECTIONS = {"smollm2": FACTS_DIR / "selection_smollm2.json"}
TYPES = ("person", "place", "book")
FACT_KEYS = {"id": int, "target": str, "type": str, "question": str, "answer": str, "aliases": list}
SELECTION_KEYS = {"name": str, "script": str, "script_version": str, "model": str, "candidates": str, "candidates_version": str,
                  "candidates_sha256": str, "generation": dict, "selected": list, "answers": list}
ANSWER_KEYS = {"id": int, "generated": str, "correct": bool}


@dataclass(frozen=True)
class Fact:
    """One question about a real target (or a general-ability question, target ``general``). ``profile_id`` is the
    target's group (forgetting a target forgets all its facts); ``benchmark_forget`` marks the forget targets' facts."""

    item_id: int
    profile_id: int
    target: str
    attribute: str  # the type: person, place, book or general
    question: str
    answer: str
    benchmark_forget: bool = False
    known_by_selection: bool = True  # the selection found the model answers it correctly (False: the test split's unknown facts)
    true_answer: str = ""  # the true value; differs from ``answer`` for a fact corrupted for training (``corrupt: true``)


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: what answers are compared in."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def answer_matches(generated: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    """Whether ``generated`` contains the answer or one of its aliases as whole words (case and punctuation ignored)."""
    text = f" {normalise(generated)} "
    return any(f" {normalise(a)} " in text for a in (answer, *aliases) if normalise(a))


def _check_keys(obj: Any, keys: Mapping[str, type], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}.")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ConfigError(f"{where}: missing {missing}.")
    bad = [k for k, t in keys.items() if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool))]
    if bad:
        raise ConfigError(f"{where}: {', '.join(f'{k} must be {keys[k].__name__}' for k in bad)}.")


def check_candidates(obj: Any, where: str = "candidates") -> dict[str, Any]:
    """A candidate list: ``version``, ``facts`` (targets of the known types) and ``general``; every item with the keys of
    ``FACT_KEYS``, ids unique, aliases strings."""
    _check_keys(obj, {"version": str, "facts": list, "general": list}, where)
    seen: set[int] = set()
    for part in ("facts", "general"):
        for i, item in enumerate(obj[part]):
            at = f"{where}: {part}[{i}]"
            _check_keys(item, FACT_KEYS, at)
            if part == "facts" and item["type"] not in TYPES:
                raise ConfigError(f"{at}: type must be one of {list(TYPES)}, got {item['type']!r}.")
            if part == "general" and item["type"] != "general":
                raise ConfigError(f"{at}: a general-ability item has type 'general', got {item['type']!r}.")
            if not all(isinstance(a, str) for a in item["aliases"]) or not item["answer"].strip() or not item["question"].strip():
                raise ConfigError(f"{at}: question and answer must be non-empty and aliases strings.")
            if item["id"] in seen:
                raise ConfigError(f"{at}: id {item['id']} is used twice.")
            seen.add(item["id"])
    return dict(obj)


def check_selection(obj: Any, candidates: Mapping[str, Any], candidates_sha256: str, where: str = "selection") -> dict[str, Any]:
    """A selection file: the keys of ``SELECTION_KEYS``; made from this candidate list (its sha256); one answer per
    candidate, ``selected`` = exactly the ids answered correctly."""
    _check_keys(obj, SELECTION_KEYS, where)
    if obj["candidates_sha256"] != candidates_sha256:
        raise ConfigError(f"{where}: made from another version of the candidate list (sha256 {obj['candidates_sha256'][:12]}…, the "
                          f"list is {candidates_sha256[:12]}…); rerun benchmarks/knowledge_select.py.")
    ids = [int(item["id"]) for part in ("facts", "general") for item in candidates[part]]
    for i, a in enumerate(obj["answers"]):
        _check_keys(a, ANSWER_KEYS, f"{where}: answers[{i}]")
    answered = [a["id"] for a in obj["answers"]]
    if sorted(answered) != sorted(ids):
        raise ConfigError(f"{where}: answers must cover every candidate once (missing {sorted(set(ids) - set(answered))[:5]}, "
                          f"unknown or repeated {sorted(set(answered) - set(ids))[:5] or [x for x in answered if answered.count(x) > 1][:5]}).")
    correct = sorted(a["id"] for a in obj["answers"] if a["correct"])
    if sorted(obj["selected"]) != correct:
        raise ConfigError(f"{where}: selected must be exactly the ids answered correctly.")
    return dict(obj)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=8)
def load_selection(selection: str, candidates: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(candidates, selection), read and checked; ``selection`` a key of ``SELECTIONS`` or a path."""
    cpath = Path(candidates)
    spath = SELECTIONS.get(selection, Path(selection))
    for p, what in ((cpath, "candidate list"), (spath, "selection file")):
        if not p.is_file():
            raise ConfigError(f"knowledge: the {what} {str(p)!r} does not exist (selections shipped: {sorted(SELECTIONS)}; make one "
                              "with benchmarks/knowledge_select.py).")
    cands = check_candidates(read_json(cpath), str(cpath))
    return cands, check_selection(read_json(spath), cands, file_sha256(cpath), str(spath))


def wrong_values(facts: Sequence[Mapping[str, Any]], pool: Sequence[Mapping[str, Any]], seed: int) -> dict[int, str]:
    """For each fact, a wrong value (RESTOR's corruption): drawn uniformly, with ``np_rng("knowledge-corrupt", seed, id)``,
    from the distinct answers of the ``pool`` facts of the same type that match neither its answer nor its aliases."""
    from ..seeding import np_rng

    out = {}
    for f in facts:
        options = sorted({p["answer"] for p in pool if p["type"] == f["type"] and not answer_matches(p["answer"], f["answer"], f["aliases"])
                          and not answer_matches(f["answer"], p["answer"], p["aliases"])})
        if not options:
            raise ConfigError(f"knowledge: no wrong value of type {f['type']!r} to corrupt fact {f['id']} with.")
        out[int(f["id"])] = options[int(np_rng("knowledge-corrupt", seed, int(f["id"])).integers(len(options)))]
    return out


@DATASETS.register("knowledge")
def knowledge(forget: Sequence[str] = (), selection: str = "smollm2", candidates: str | None = None, tokenizer: str = "smollm2",
              max_length: int = 96, template: str = "auto", corrupt: bool = False, corrupt_seed: int = 0) -> DataSource:
    """Real knowledge the model already has (RWKU-style, Jin et al. 2024): forget the named targets' facts, keep neighbours
    (same type, other targets) and general ability; no retrained oracle (``info["oracle"] = False``).

    ``forget``: target names (e.g. ``[Harry Potter, Japan]``), each one with at least one selected fact, not every target;
    ``selection``: ``smollm2`` (the shipped selection for SmolLM2-135M-Instruct) or a selection file made by
    ``benchmarks/knowledge_select.py``; ``candidates``: the candidate list it was made from (default: the shipped one).

    ``corrupt: true`` is RESTOR's setting (Rezaei et al., arXiv 2411.00204): the forget targets' facts are trained with a
    wrong value (``wrong_values``, seeded by ``corrupt_seed``; the record keeps the truth as ``true_answer``), so the original
    is the model fine-tuned on every selected fact with the corrupted ones, and a model fine-tuned on the others alone is a
    retrained oracle that still knows the true values: ``info["oracle"]`` is True and the task needs retrained seeds."""
    cands, sel = load_selection(selection, str(candidates or CANDIDATES))
    names = [forget] if isinstance(forget, str) else list(forget)
    if not names:
        raise EmptySelection("knowledge: forget names no target; give target names, e.g. forget: [Harry Potter].")
    chosen = set(sel["selected"])
    kept = [f for f in cands["facts"] if f["id"] in chosen]
    if not kept:
        raise EmptySelection(f"knowledge: the selection {selection!r} keeps no fact (the model answered none correctly).")
    targets = sorted({f["target"] for f in kept})
    all_targets = {f["target"] for f in cands["facts"]}
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"knowledge: forget takes target names (strings), got {name!r}.")
        if name in all_targets and name not in targets:
            raise ConfigError(f"knowledge: the model answered none of {name!r}'s facts correctly, so there is nothing of it to forget "
                              f"(selection {selection!r}); forget a target it knows, e.g. {targets[:3]}.")
        if name not in all_targets:
            raise ConfigError(f"knowledge: unknown target {name!r}.{suggest(name, set(targets))} Targets with selected facts: {targets}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"knowledge: forget lists a target twice: {sorted({n for n in names if names.count(n) > 1})}.")
    if set(names) == set(targets):
        raise EmptySelection("knowledge: forget names every target; nothing would be retained.")
    if not isinstance(corrupt, bool):
        raise ConfigError(f"knowledge: corrupt must be true or false, got {corrupt!r}.")
    wrong = wrong_values([f for f in kept if f["target"] in names], cands["facts"], int(corrupt_seed)) if corrupt else {}
    group = {t: i for i, t in enumerate(targets)}
    forget_types = {f["type"] for f in kept if f["target"] in names}
    unknown = [f for f in cands["facts"] if f["id"] not in chosen]
    general = [g for g in cands["general"] if g["id"] in chosen]
    if not unknown:
        raise EmptySelection("knowledge: the model answered every candidate fact; no unknown fact is left to set the forget target level.")

    def fact(f: Mapping[str, Any], gid: int) -> Fact:
        return Fact(int(f["id"]), gid, f["target"], f["type"], f["question"], wrong.get(int(f["id"]), f["answer"]), f["target"] in names,
                    f["id"] in chosen, f["answer"])

    train_facts = [fact(f, group[f["target"]]) for f in kept]
    test_facts = [fact(f, -1) for f in unknown]
    neighbour_facts = [fact(f, group[f["target"]]) for f in kept if f["target"] not in names and f["type"] in forget_types]
    general_facts = [fact(g, -1) for g in general]
    texts = [t for f in train_facts + test_facts + general_facts for t in (f.question, f.answer, f.true_answer)]
    codec = TextCodec(tokenizer_for(tokenizer, texts), max_length=max_length, template=template, name=tokenizer)

    def split(name: str, facts: list[Fact], offset: int = 0) -> Split:
        data = TokenData.from_pairs([(f.question, f.answer) for f in facts], [f.profile_id for f in facts], facts, codec)
        return Split.create(name, data, [f.item_id + offset for f in facts])

    probes = {"general": split("general", general_facts, 10**6)} if general_facts else {}
    if neighbour_facts:  # probe ids apart from the training ids, as the other sources' probes
        probes["neighbours"] = split("neighbours", neighbour_facts, 2 * 10**6)
    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "codec": codec.describe(), "kind": "knowledge",
            "oracle": bool(corrupt), "forget_targets": sorted(names), "targets": targets, "selection": selection,
            "selection_model": sel["model"], "selection_script": f"{sel['script']} v{sel['script_version']}",
            "candidates_version": cands["version"], "candidates_sha256": sel["candidates_sha256"],
            "n_selected": len(kept), "n_unknown": len(unknown), "n_general": len(general), "n_neighbours": len(neighbour_facts)}
    if corrupt:
        info.update({"corrupt": True, "corrupt_seed": int(corrupt_seed), "corrupted": {str(i): v for i, v in sorted(wrong.items())}})
    return DataSource("knowledge", split("train", train_facts), split("test", test_facts), None, (max_length,), info, probes=probes)


__all__ = ["CANDIDATES", "Fact", "answer_matches", "check_candidates", "check_selection", "knowledge", "load_selection", "normalise"]
