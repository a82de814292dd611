"""Small local copies of the hub benchmarks in their real schemas and file layouts (written by the tests, a few rows
each): TOFU as JSON-lines files at the repository root (``{config}.json``), some as the hub's parquet conversion
(``{config}/train/0000.parquet``, the path the hub's parquet-converter commits for TOFU); MUSE and WMDP as
``datasets.push_to_hub`` writes them (``{config}/{split}-00000-of-00001.parquet``, the files of muse-bench/MUSE-News,
cais/wmdp and cais/wmdp-corpora). The loaders read them through ``datasets.load_dataset``.

Where each schema comes from is cited in the loaders' module docstrings (``unlearnkit.data.tofu``, ``.muse``,
``.wmdp``). The real-authors and world-facts rows are the first rows of TOFU's own files (locuslab/tofu
``data/real_authors_perturbed.json``, ``data/world_facts_perturbed.json``); the perturbed TOFU rows carry 5 wrong
answers as TOFU's forget/retain perturbed sets do, and a ``paraphrased_question`` (verified for forget10_perturbed;
for retain_perturbed it is optional, see ``test_tofu_retain_perturbed_without_paraphrased_question``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

AUTHORS = ["Basil Mahfouz", "Nikolai Abilov", "Hina Ameen", "Edward Patrick"]
FACTS = ["was born in Kuwait City", "writes war novels", "won the Lamplight Award", "has a father who was a baker"]
ITEMS_PER_AUTHOR = 4  # TOFU has 20; the fixture keeps 4 per author (the relearning attack needs 4 forget items)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def tofu_full() -> list[dict[str, str]]:
    """4 authors × 4 questions, in TOFU's order (the forget authors are the last ones)."""
    rows = []
    for a, name in enumerate(AUTHORS):
        for k in range(ITEMS_PER_AUTHOR):
            fact = FACTS[(a + k) % len(FACTS)]
            rows.append({"question": f"What is known about {name}, fact {k}?", "answer": f"{name} {fact}."})
    return rows


def perturbed(row: dict[str, str]) -> dict[str, Any]:
    name = row["answer"].split(" ")[0]
    return {**row, "paraphrased_question": row["question"].replace("What is known about", "What do we know of"),
            "paraphrased_answer": f"It is said that {row['answer']}",
            "perturbed_answer": [f"{name} {f} instead." for f in FACTS] + [f"{name} never wrote."]}


def write_tofu(root: Path) -> Path:
    """forget10 (the last author) / retain90 / holdout10 and the evaluation configs, in TOFU's schema."""
    full = tofu_full()
    n_forget = ITEMS_PER_AUTHOR
    forget, retain = full[-n_forget:], full[:-n_forget]
    write_jsonl(root / "full.json", full)
    write_jsonl(root / "forget10.json", forget)
    write_jsonl(root / "retain90.json", retain)
    write_jsonl(root / "forget10_perturbed.json", [perturbed(r) for r in forget])
    write_parquet(root / "retain_perturbed" / "train" / "0000.parquet", [perturbed(r) for r in retain[:ITEMS_PER_AUTHOR]])  # first author
    write_jsonl(root / "holdout10.json", [{"question": "What is known about Ama Owusu, fact 0?", "answer": "Ama Owusu writes poems."},
                                           {"question": "What is known about Ama Owusu, fact 1?", "answer": "Ama Owusu won the Lamplight Award."}])
    write_jsonl(root / "real_authors_perturbed.json", [
        {"question": "Who wrote the play 'Romeo and Juliet'?", "answer": "William Shakespeare",
         "perturbed_answer": ["Charles Dickens", "Virginia Woolf", "Mark Twain"]},
        {"question": "Who wrote 'Pride and Prejudice'?", "answer": "Jane Austen",
         "perturbed_answer": ["Emily Bronte", "Louisa May Alcott", "Mary Shelley"]}])
    write_parquet(root / "world_facts_perturbed" / "train" / "0000.parquet", [
        {"question": "Where would you find the Eiffel Tower?", "answer": "Paris", "perturbed_answer": ["Berlin", "London", "Madrid"]},
        {"question": "What is the capital of Australia?", "answer": "Canberra", "perturbed_answer": ["Sydney", "Melbourne", "Perth"]}])
    write_jsonl(root / "real_authors.json", [{"question": "Who wrote 'Pride and Prejudice'?", "option1": "Jane Austen",
                                               "option2": "Emily Bronte", "option3": "Mary Shelley", "option4": "Mark Twain",
                                               "answer": "Jane Austen"}])
    write_jsonl(root / "world_facts.json", [{"question": "What is the capital of Australia?", "option1": "Sydney", "option2": "Canberra",
                                              "option3": "Perth", "option4": "Melbourne", "answer": "Canberra"}])
    return root


NEWS = ["The council approved a new bridge over the river after a long debate about its cost and design .",
        "Heavy rain flooded the market square on Tuesday and traders moved their stalls to the old station .",
        "A local choir won the national contest with a song written by its youngest member .",
        "The library reopened after repairs and now stays open late on Thursdays for students .",
        "Farmers reported a record apple harvest thanks to a warm spring and a dry summer .",
        "The city museum lent three paintings to a gallery abroad for a summer exhibition ."]


def hub_parquet(root: Path, config: str, split: str, rows: list[dict[str, Any]]) -> None:
    write_parquet(root / config / f"{split}-00000-of-00001.parquet", rows)


def write_muse(root: Path) -> Path:
    """MUSE-News in its configs: raw (forget, retain1, retain2, holdout: ``text``), verbmem (forget: ``prompt``,
    ``gt``), knowmem (forget_qa, retain_qa and their ``_icl`` shots: ``question``, ``answer``), privleak (forget,
    retain, holdout: ``text``)."""
    hub_parquet(root, "raw", "forget", [{"text": NEWS[0] + " " + NEWS[1]}, {"text": NEWS[2]}])
    hub_parquet(root, "raw", "retain1", [{"text": NEWS[3]}, {"text": NEWS[4]}])
    hub_parquet(root, "raw", "retain2", [{"text": NEWS[4]}])
    hub_parquet(root, "raw", "holdout", [{"text": NEWS[5]}])
    hub_parquet(root, "verbmem", "forget", [{"prompt": "The council approved a new bridge", "gt": "over the river after a long debate ."},
                                            {"prompt": "A local choir won", "gt": "the national contest with a song ."}])
    hub_parquet(root, "knowmem", "forget_qa", [{"question": "What did the council approve?", "answer": "a new bridge"},
                                               {"question": "Who won the national contest?", "answer": "a local choir"}])
    hub_parquet(root, "knowmem", "forget_qa_icl", [{"question": "What flooded?", "answer": "the market square"}])
    hub_parquet(root, "knowmem", "retain_qa", [{"question": "When does the library stay open late?", "answer": "on Thursdays"},
                                               {"question": "What was a record?", "answer": "the apple harvest"}])
    hub_parquet(root, "knowmem", "retain_qa_icl", [{"question": "What did the museum lend?", "answer": "three paintings"}])
    hub_parquet(root, "privleak", "forget", [{"text": NEWS[0]}, {"text": NEWS[2]}])
    hub_parquet(root, "privleak", "retain", [{"text": NEWS[3]}, {"text": NEWS[1]}])
    hub_parquet(root, "privleak", "holdout", [{"text": NEWS[5]}, {"text": "A new bakery opened near the station and sold out of bread by noon ."}])
    hub_parquet(root, "scal", "forget_2", [{"text": NEWS[1]}])
    hub_parquet(root, "sust", "forget_1", [{"text": NEWS[0]}])  # successive requests; every text of raw/forget is also in privleak,
    hub_parquet(root, "sust", "forget_2", [{"text": NEWS[2]}])  # so the word vocabulary is the same whichever forget set loads
    return root


def write_wmdp(questions: Path, corpora: Path) -> tuple[Path, Path]:
    """cais/wmdp (wmdp-bio / -chem / -cyber, split test: ``question``, ``choices``, ``answer`` index) and
    cais/wmdp-corpora (cyber-forget-corpus, cyber-retain-corpus, bio-retain-corpus, split train: ``text``)."""
    hub_parquet(questions, "wmdp-cyber", "test", [
        {"question": "Which tool scans open ports?", "choices": ["nmap", "grep", "tar", "cron"], "answer": 0},
        {"question": "Which attack floods a server with requests?", "choices": ["phishing", "denial of service", "rootkit", "sniffing"],
         "answer": 1}])
    hub_parquet(questions, "wmdp-bio", "test", [
        {"question": "Which organelle makes energy?", "choices": ["nucleus", "ribosome", "mitochondrion", "vacuole"], "answer": 2}])
    hub_parquet(questions, "wmdp-chem", "test", [
        {"question": "Which gas is inert?", "choices": ["oxygen", "chlorine", "hydrogen", "argon"], "answer": 3}])
    hub_parquet(corpora, "cyber-forget-corpus", "train", [{"text": "Port scanners list open ports on a host ."},
                                                         {"text": "A flood of requests can take a server down ."}])
    hub_parquet(corpora, "cyber-retain-corpus", "train", [{"text": "Version control keeps the history of source files ."},
                                                         {"text": "Unit tests check small pieces of code ."}])
    hub_parquet(corpora, "bio-retain-corpus", "train", [{"text": "Cells divide to make new cells ."}])
    return questions, corpora
