"""Benchmark: MUSE's six questions (Shi et al. 2024) on a book, through the runner: experiments/muse_book.yaml (the KJV,
a tiny Llama) — verbatim memorisation, privacy leakage, utility on retained passages, scalability (forget 1/5/10/25%)
and sustainability (four 5% requests one after another). Knowledge memorisation needs a question set about the forget
text, which the KJV lacks: the table says so rather than inventing one.

    python benchmarks/muse.py                    # ~10 min on 2 CPU cores -> docs/results/muse.md
    python benchmarks/muse.py --quick            # the same file shrunk (12 chapters, 2 scalability sizes, 2 requests): ~1 min

Each cell: the method's value, with the mean of the retrained models (the target) in brackets; the verdict is the runner's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# (column, metric, value key, evidence key for the retrain mean)
COLUMNS = (("VerbMem forget ↓", "verbatim_memorization", "forget", "verbatim_memorization.forget"),
           ("PrivLeak →0", "privleak", "privleak", "privleak.privleak"),
           ("answer prob forget", "answer_prob", "forget", "answer_prob.forget"),
           ("utility: ROUGE-L retain ↑", "rouge_l", "retain", "rouge_l.retain"),
           ("utility: answer prob retain ↑", "answer_prob", "retain", "answer_prob.retain"))


def quick(spec: dict[str, Any]) -> dict[str, Any]:
    """The experiment shrunk for a smoke run (and the test): fewer chapters, two forget sizes, two requests, fewer epochs."""
    spec = dict(spec)
    spec["dataset"] = {"name": "book", "params": {**spec["dataset"]["params"], "chapters": 12, "holdout_chapters": 4,
                                                  "passages_per_chapter": 3}}
    spec["forget"] = [{"kind": "random", "fraction": 0.05}, {"kind": "random", "fraction": 0.25}]
    spec["requests"] = [{"kind": "random", "fraction": 0.1, "repeat": 2}]
    spec["train"] = {**spec["train"], "epochs": 8}
    spec["methods"] = [{"name": "npo", "params": {"epochs": 2, "batch_size": 8, "lr": 0.001}}]
    return spec


def cell(run: dict[str, Any], metric: str, key: str, ev_key: str) -> str:
    value = run["results"].get(metric, {}).get("values", {}).get(key)
    if value is None:
        return "–"
    ref = next((r.get("retrain_mean") for r in run["verdict"].get("rows", []) if r["key"] == ev_key), None)
    return f"{value:.3f}" + (f" [{ref:.3f}]" if ref is not None else "")


def table(store: Any, record: dict[str, Any], which: str) -> list[str]:
    head = "| forget | model | " + " | ".join(c[0] for c in COLUMNS) + " | verdict |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for task in record["tasks"]:
        if ("stream_request" in task) != (which == "stream"):
            continue
        label = task["label"]
        rows = [("original", task["original_run"])] + [(name, rid) for name, ids in task["runs"].items() for rid in ids]
        for name, rid in rows:
            run = store.load_run(rid)
            cells = " | ".join(cell(run, m, k, e) for _, m, k, e in COLUMNS)
            lines.append(f"| {label} ({task['task']['splits']['forget']['n']} passages) | {name} | {cells} | "
                         f"{run['verdict']['label']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "muse_book.yaml")
    parser.add_argument("--quick", action="store_true", help="a shrunk version (about a minute)")
    parser.add_argument("--store", type=Path, default=None, help="run store (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "results" / "muse.md")
    args = parser.parse_args(argv)

    import yaml

    from unlearnkit.experiment import Experiment
    from unlearnkit.io import write_generated
    from unlearnkit.runs.runner import run_experiment
    from unlearnkit.runs.store import Store

    spec = yaml.safe_load(args.experiment.read_text())
    if args.quick:
        spec = quick(spec)
    exp = Experiment.from_dict(spec, source=str(args.experiment))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or Path(tmp) / "store")
        t0 = time.perf_counter()
        record = run_experiment(exp, store, device="cpu", progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
        wall = time.perf_counter() - t0
        data = spec["dataset"]["params"]
        body = [
            f"Model: **tiny Llama** (randomly initialised, {spec['model']['name']}), word-level tokenizer; data: the King James Bible "
            f"(Debian bible-kjv), {data['chapters']} trained chapters and {data['holdout_chapters']} never-trained ones, "
            f"{data['passages_per_chapter']} passages of ~{data['words']} words each, prefix → continuation. Target: trained on all "
            f"passages; oracle: retrained without the forget passages ({exp.retrain_seeds} seeds). Methods: "
            f"{', '.join(m['name'] for m in spec['methods'])}. Whole experiment (references, unlearning, evaluation): {wall:.0f} s on "
            f"this CPU{' (--quick)' if args.quick else ''}.",
            "",
            "MUSE's six questions, and where each is answered:",
            "1. **Verbatim memorisation**: VerbMem = ROUGE-L F1 of the greedy continuation of each forget passage's prefix.",
            "2. **Knowledge memorisation**: *not measured on the book* — the KJV has no question set about its passages (MUSE's "
            "knowmem_forget). On the profiles it is the QA metrics on the forget answers (rouge_l, answer_prob: "
            "experiments/profiles_tiny.yaml, docs/results/lm_tiny.md).",
            "3. **Privacy leakage**: PrivLeak (Min-40%, forget vs never-trained chapters, relative to the retrained model; 0 = as "
            "the retrained model, negative = the forget passages still recognisable).",
            "4. **Utility**: ROUGE-L recall and answer probability on the retained passages.",
            "5. **Scalability**: the table below, one forget set per size, each unlearned from the target.",
            "6. **Sustainability**: the second table, requests applied one after another, each evaluated against a model "
            "retrained without everything deleted so far.",
            "",
            "Each cell: the model's value [the retrained models' mean]. Verdict: the runner's (retrain band, Bonferroni).",
            "",
            "## Scalability: forget sets of growing size",
            "",
            *table(store, record, "forget"),
            "",
            "## Sustainability: sequential requests",
            "",
            *table(store, record, "stream"),
        ]
        if record["failures"]:
            body += ["", "Failures: " + "; ".join(f"{f['task']} {f['method']}: {f['error']}" for f in record["failures"])]
        write_generated(args.output, "MUSE's six questions on a book (KJV)", "muse.py", argv if argv is not None else sys.argv[1:], body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
