"""The ``book`` data source: passages of a book as prefix → continuation pairs, for verbatim memorisation (MUSE's
"Books" setting, Shi et al. 2024). Default book: the King James Bible from Debian's ``bible-kjv`` /
``bible-kjv-text`` packages (public domain); any UTF-8 text file works. Groups are chapters (or blocks of
paragraphs for a plain file), so ``forget: {kind: profiles, fraction: ...}`` forgets whole chapters; holdout
passages come from chapters never trained."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..lm.text import TextCodec, TokenData
from ..registry import DATASETS
from ..types import Split
from .profiles import tokenizer_for
from .sources import DataSource


@dataclass(frozen=True)
class Passage:
    item_id: int
    profile_id: int  # the chapter (group)
    question: str  # the prefix the model is prompted with
    answer: str  # the continuation it should (not) reproduce
    source: str


def kjv_verses() -> list[tuple[str, str]]:
    """(chapter reference, verse text) for the whole KJV, from the ``bible`` command (Debian bible-kjv)."""
    exe = shutil.which("bible")
    if exe is None:
        raise ConfigError("The KJV book needs the Debian packages bible-kjv and bible-kjv-text: "
                          "sudo apt-get install -y bible-kjv bible-kjv-text (make test/demo install them), "
                          "or pass corpus: /path/to/book.txt.")
    text = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\w+?\d+):\d+ (.*)$", line.strip())
        if m:
            out.append((m.group(1), m.group(2)))
    if not out:
        raise ConfigError("The bible command printed no verses.")
    return out


def file_paragraphs(path: Path, per_group: int = 5) -> list[tuple[str, str]]:
    if not path.is_file():
        raise ConfigError(f"Book file {path} does not exist.")
    paras = [p.strip().replace("\n", " ") for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return [(f"block{i // per_group}", p) for i, p in enumerate(paras)]


@functools.lru_cache(maxsize=4)
def _units(corpus: str) -> tuple[tuple[str, str], ...]:
    return tuple(kjv_verses() if corpus == "kjv" else file_paragraphs(Path(corpus)))


def passages(corpus: str, words: int) -> list[tuple[str, str]]:
    """Consecutive verses/paragraphs joined into passages of about ``words`` words, never crossing a chapter."""
    out: list[tuple[str, str]] = []
    group, buf = None, []
    for g, text in _units(corpus):
        if g != group or sum(len(b.split()) for b in buf) >= words:
            if buf and sum(len(b.split()) for b in buf) >= words // 2:
                out.append((str(group), " ".join(buf)))
            group, buf = g, []
        buf.append(text)
    if buf:
        out.append((str(group), " ".join(buf)))
    return out


@DATASETS.register("book")
def book(corpus: str = "kjv", chapters: int = 24, holdout_chapters: int = 4, passages_per_chapter: int = 4, words: int = 40,
         prefix_fraction: float = 0.5, tokenizer: str = "word", max_length: int = 160, seed: int = 0) -> DataSource:
    """Passages of a book (the KJV by default) as prefix → continuation pairs, for verbatim memorisation.

    ``chapters`` trained chapters and ``holdout_chapters`` never trained, up to
    ``passages_per_chapter`` passages of ~``words`` words each; the first ``prefix_fraction`` of a passage's words is
    the prompt, the rest the continuation."""
    if not 0.0 < prefix_fraction < 1.0:
        raise ConfigError(f"book: prefix_fraction must be in (0, 1), got {prefix_fraction}.")
    all_passages = passages(corpus, words)
    by_group: dict[str, list[str]] = {}
    for g, text in all_passages:
        by_group.setdefault(g, []).append(text)
    groups = [g for g, ps in by_group.items() if len(ps) >= 1]
    need = chapters + holdout_chapters
    if len(groups) < need:
        raise ConfigError(f"book: the corpus has {len(groups)} chapters, fewer than the {need} asked for.")
    rng = np.random.default_rng([seed, 4242])
    picked = rng.choice(len(groups), size=need, replace=False)  # a random draw in random order: the holdout is random too,
    chosen = [groups[i] for i in (*sorted(picked[:chapters]), *sorted(picked[chapters:]))]  # not the book's last chapters
    records: list[Passage] = []
    for gi, g in enumerate(chosen):
        for j, text in enumerate(by_group[g][:passages_per_chapter]):
            w = text.split()
            k = max(1, int(round(prefix_fraction * len(w))))
            records.append(Passage(gi * 64 + j, gi, " ".join(w[:k]), " ".join(w[k:]), g))
    texts = [r.question for r in records] + [r.answer for r in records]

    codec = TextCodec(tokenizer_for(tokenizer, texts), max_length=max_length, template="plain", name=f"{tokenizer}:{corpus}")

    def split(name: str, recs: list[Passage]) -> Split:
        data = TokenData.from_encoded([codec.encode_continuation(r.question, r.answer) for r in recs], [r.profile_id for r in recs],
                                      recs, codec)
        return Split.create(name, data, [r.item_id for r in recs])

    train = split("train", [r for r in records if r.profile_id < chapters])
    test = split("test", [r for r in records if r.profile_id >= chapters])
    info = {"modality": "causal_lm", "vocab_size": codec.vocab_size, "codec": codec.describe(), "corpus": corpus,
            "chapters": [c for c in chosen], "kind": "book"}
    return DataSource("book", train, test, None, (max_length,), info)


__all__ = ["Passage", "book", "kjv_verses", "passages"]
