"""Benchmark: every LM unlearning method under every recovery probe of issue 24 (prompt-level: paraphrase, RWKU's
adversarial types, question forms, step-by-step, persuasion, in-context reintroduction; weight-level: quantisation, soft
prompt, hidden-state probe, relearning) on fictitious profiles, each value beside the retrained seeds' band; the verdict
on the standard LM evidence and with the probes' evidence added (both decided from the same run record); each probe's
evaluation time; and, computed from the numbers, which of the issue's seed claims the table supports.

    python benchmarks/lm_attacks.py --retrain-seeds 4 --store S   # SmolLM2-135M + LoRA, small scale, every LM method:
                                                                 # 149.5 min (docs/results/lm_attacks.md); S resumes a cut-off run
    python benchmarks/lm_attacks.py --model tiny_llama --scale tiny --output docs/results/lm_attacks_tiny.md   # 2.8 min

The methods and their settings are benchmarks/lm_unlearning.py's (``SETTINGS``, ``method_entries``); references are
cached in --refs-cache (share it with that benchmark: each reference is trained once). Output: docs/results/lm_attacks.md
(generated; do not edit).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_unlearning  # noqa: E402  (the LM benchmark's methods and settings, reused)

# the probes beyond the standard battery, per model family (the tiny Llama's profession is read from its embeddings,
# layer 0: its middle block reads nothing even on the target, see experiments/profiles_attacks.yaml)
PROBES: dict[str, list[dict[str, Any]]] = {
    family: [{"name": "rwku_probes"}, {"name": "form_probe"}, {"name": "step_probe"}, {"name": "persuasion_probe"}, {"name": "icl_probe"},
             {"name": "quantisation", "params": {"bits": [8, 4], "group_size": 64}}, {"name": "soft_prompt"},
             {"name": "lm_hidden_probe", "params": {"attribute": "profession", **({"layer": 0} if family == "tiny_llama" else {})}}]
    for family in lm_unlearning.SETTINGS
}
STANDARD_PROBES = ("paraphrase_probe", "relearn")  # recovery probes already in the standard LM battery
SEED_METHODS = ("grad_ascent", "grad_diff", "npo")  # the quantisation claim's methods: a --methods subset must keep them


def standard_metrics() -> list[str]:
    from unlearnkit.evaluation import default_battery

    return list(default_battery("causal_lm"))


def build_experiment(args: argparse.Namespace) -> Any:
    """lm_unlearning's experiment (data, model, training, methods) with the standard battery plus every probe."""
    from unlearnkit.experiment import Experiment

    spec = lm_unlearning.build_experiment(args).to_dict()
    standard = standard_metrics()
    metrics = [m for m in standard if m != "noise_floor"] + PROBES[args.model] + ["noise_floor"]
    return Experiment.from_dict({**spec, "name": "lm_attacks", "description": "benchmarks/lm_attacks.py", "metrics": metrics})


def redecide(run: dict[str, Any], metrics: list[str]) -> Any:
    """The verdict ``run`` would get from the evidence of ``metrics`` alone, decided from its stored results: the noise
    floor is cut to those metrics' evidence, so the Bonferroni family is theirs (as if only they had been run)."""
    from unlearnkit.types import MetricResult
    from unlearnkit.verdict import decide

    # the stored per-example arrays are file references (not needed here): read values, evidence and info only
    results = {name: MetricResult.from_json({**r, "per_example": {}}) for name, r in run["results"].items()}
    evidence = [e for name in metrics if name in results and name != "noise_floor" for e in results[name].evidence]
    keys = {e.key for e in evidence}
    floor = results.get("noise_floor")
    if floor is not None:
        info = dict(floor.info)
        info["seed_values"] = {k: v for k, v in info["seed_values"].items() if k in keys}
        info["floors"] = {k: v for k, v in info["floors"].items() if k in keys}
        floor = replace(floor, info=info)
    missing = [f"{k}: {v}" for k, v in (run.get("missing") or {}).items() if k in metrics]
    return decide(evidence, floor, missing=missing, tests=run["verdict"].get("tests") or {},
                  weights_untouched=(run.get("method") or {}).get("kind") == "guard")


def probe_keys(run: dict[str, Any], probes: list[str]) -> list[tuple[str, str]]:
    """(metric, evidence key) of every probe's evidence in ``run``, in probe order."""
    return [(name, e["key"]) for name in probes for e in run["results"].get(name, {}).get("evidence", [])]


def mark(row: dict[str, Any] | None) -> str:
    """A verdict row's value, bold and arrowed when outside its band (↑ remembers more than retraining, ↓ less)."""
    if row is None:
        return "—"
    v = f"{row['value']:.3f}"
    return {"more": f"**{v}↑**", "less": f"**{v}↓**"}.get(row["status"], v)


def value(run: dict[str, Any], metric: str, key: str) -> float | None:
    v = run["results"].get(metric, {}).get("values", {}).get(key)
    return None if v is None or not math.isfinite(v) else float(v)


def claims(runs: dict[str, dict[str, Any]], after: dict[str, Any], before: dict[str, Any], keys: list[tuple[str, str]],
           spread: dict[str, Any]) -> list[str]:
    """One line per seed claim of issue 24, each decided from the table's numbers."""
    unlearned = [m for m in runs if m != "retrain"]
    out = []
    # 1. most methods recover under at least one probe: a probe's robustness evidence above the retrained seeds' band
    probe_set = {k for _, k in keys}
    rec = {m: [r["key"] for r in after[m].rows if r["key"] in probe_set and r["role"] == "robustness" and r["status"] == "more"]
           for m in unlearned}
    hit = [m for m in unlearned if rec[m]]
    passed = [m for m in hit if before[m].label != "not forgotten"]
    ok = len(hit) > len(unlearned) / 2
    # a band that spans its metric's whole range flags nothing: say how many of the probes' bands can flag at all
    rows0 = next(iter(after.values())).rows
    blind = sorted({r["key"] for r in rows0 if r["key"] in probe_set and r["status"] == "uninformative"})
    informative = len(probe_set) - len(blind)
    out.append(f"- **Most methods recover under at least one probe: {'supported' if ok else 'not supported'}"
               + (f" — but only {informative} of {len(probe_set)} probe bands can flag anything at this number of retrained seeds "
                  f"(the others span their metric's whole range: {', '.join(blind)}), so this is weak evidence against the claim"
                  if blind and not ok else "") + ".** "
               f"{len(hit)} of {len(unlearned)} unlearned models have at least one probe above the retrained band"
               + (": " + "; ".join(f"{m} ({', '.join(rec[m])})" for m in hit) if hit else "")
               + f". Of these, {len(passed)} ({', '.join(passed) or 'none'}) were not 'not forgotten' on the standard evidence, "
               "i.e. a probe found what the standard battery did not.")
    # 2. quantisation restores GA/GD-forgotten knowledge more than NPO's (gain = quantised − full-precision forget prob)
    lines = []
    verdicts = []
    for bits in (4, 8):
        key = f"forget_gain_{bits}bit"
        gains = {m: value(runs[m], "quantisation", key) for m in SEED_METHODS if m in runs}
        if len(gains) < 3 or any(g is None for g in gains.values()):
            lines.append(f"{bits}-bit: needs grad_ascent, grad_diff and npo")
            continue
        sd = (spread.get(f"quantisation.{key}") or {}).get("sd", 0.0)
        diffs = [gains["grad_ascent"] - gains["npo"], gains["grad_diff"] - gains["npo"]]
        v = "supported" if min(diffs) > sd else "direction only (within the retrained seeds' sd)" if min(diffs) > 0 else "not supported"
        verdicts.append((bits, v))
        lines.append(f"{bits}-bit gain GA {gains['grad_ascent']:+.3f}, GD {gains['grad_diff']:+.3f}, NPO {gains['npo']:+.3f} "
                     f"(retrained seeds' sd of the gain {sd:.3f}): {v}")
    head = verdicts[0][1] if verdicts else "not tested"
    out.append(f"- **Quantisation restores GA/GD-forgotten knowledge more than NPO's: {head} at 4 bits (Zhang et al.'s setting).** "
               + "; ".join(lines) + ".")
    # 3. in-context reintroduction works on unlearned models: given the fact in the prompt, an unlearned model answers it
    # (lift over no context above the probe's floor) as well as a retrained model does (not below the band)
    works, fails = [], []
    for m in unlearned:
        lift = value(runs[m], "icl_probe", "lift_forget_rouge_l")
        row = next((r for r in after[m].rows if r["key"] == "icl_probe.forget_in_context"), None)
        if lift is None or row is None:
            continue
        (works if lift > 0.05 and row["status"] != "less" else fails).append(f"{m} {lift:+.2f}")
    ok = len(works) > len(unlearned) / 2
    out.append(f"- **In-context reintroduction works on unlearned models: {'supported' if ok else 'not supported'}.** "
               f"{len(works)} of {len(unlearned)} answer the forgotten fact once it is in the prompt (ROUGE-L lift over no context "
               f"> 0.05 and the in-context score not below the retrained band): {', '.join(works) or 'none'}"
               + (f"; not: {', '.join(fails)}" if fails else "") + ".")
    return out


# a model whose noise_floor took longer computed it (every metric on each retrained seed: far above this even for the tiny
# Llama, 3.4 s); later models in the same process look it up from the evaluation context (~1e-4 s)
NOISE_FLOOR_PAID_S = 0.05


def first_in_process(run: dict[str, Any]) -> bool:
    """Whether ``run`` was the first model evaluated in its process: that one computes the noise floor (every metric on
    each retrained seed) and the retrained seeds' side of each probe, which later models in the same process reuse. A
    resumed benchmark (runs reused from the store) has one such model per process, not necessarily the original."""
    return (run.get("metric_seconds") or {}).get("noise_floor", 0.0) >= NOISE_FLOOR_PAID_S


def runs_seconds(everyone: dict[str, dict[str, Any]]) -> tuple[float, float]:
    """The runs' own time, whichever process made them: the method runs' wall seconds (``kind == "unlearn"``: the retrain
    row's fine-tune among them; the original and the bands' retrained seeds are cached references, not counted) and the
    evaluation's wall seconds (every model)."""
    unlearn = sum((r.get("cost") or {}).get("wall_seconds", 0.0) for r in everyone.values() if r.get("kind") == "unlearn")
    return unlearn, sum(r.get("eval_seconds") or 0.0 for r in everyone.values())


def timing_section(everyone: dict[str, dict[str, Any]], metrics: list[str], probes: list[str]) -> list[str]:
    """Per-metric evaluation seconds: on the first model evaluated in each process (it also pays the retrained seeds'
    share that the probes cache, and the noise floor) and on every later model."""
    timed = {m: r for m, r in everyone.items() if r.get("metric_seconds")}
    firsts = {m: r for m, r in timed.items() if first_in_process(r)}
    later = [r for m, r in timed.items() if m not in firsts]
    lines = ["## Evaluation cost", "",
             "Wall seconds per metric (`metric_seconds` in each run record). The first model evaluated in a process also "
             "computes the retrained seeds' side of each probe, which later models in that process reuse, and the noise floor "
             "(every metric on each retrained seed, leave-one-out); it is recognised by the noise floor's time (over "
             f"{NOISE_FLOOR_PAID_S:g} s; later models reuse it in well under a second). First models here: "
             f"{', '.join(firsts) or 'none'}. Later models: mean and max over the rest.", "",
             "| metric | probe | first model mean s | later models mean s | max s |", "|---|---|---|---|---|"]

    def stats(rs: list[dict[str, Any]], name: str) -> tuple[float | None, float | None]:
        vals = [r["metric_seconds"][name] for r in rs if name in r["metric_seconds"]]
        return (sum(vals) / len(vals), max(vals)) if vals else (None, None)

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    tot_first = tot_mean = tot_max = 0.0
    for name in metrics:
        f, _ = stats(list(firsts.values()), name)
        mean, mx = stats(later, name)
        if name in probes:
            tot_first += f or 0.0
            tot_mean += mean or 0.0
            tot_max += mx or 0.0
        lines.append(f"| {name} | {'yes' if name in probes else ''} | {fmt(f)} | {fmt(mean)} | {fmt(mx)} |")
    lines += [f"| **probe battery** | | **{tot_first:.1f}** | **{tot_mean:.1f}** | **{tot_max:.1f}** |", ""]
    nf, _ = stats(list(firsts.values()), "noise_floor")
    lines.append(f"The whole probe battery on one model: {tot_mean / 60:.1f} min (mean over later models; max {tot_max / 60:.1f} min), "
                 f"{tot_first / 60:.1f} min on a process's first model with the retrained seeds' share"
                 + (f"; the noise floor once per process: {nf / 60:.1f} min" if nf is not None else "")
                 + f". Goal: under 10 min per model — {'met' if later and tot_max < 600 else 'not met' if later else 'not measured (no later model)'}.")
    return lines + [""]


def render(args: argparse.Namespace, argv: list[str], record: dict[str, Any], original: dict[str, Any], runs: dict[str, dict[str, Any]],
           elapsed: float, reused: int) -> str:
    import torch

    from unlearnkit.runs.runner import cpu_model
    from unlearnkit.verdict import Verdict

    standard = standard_metrics()
    probes = list(dict.fromkeys([*STANDARD_PROBES, *(p["name"] for p in PROBES[args.model])]))
    metrics = list(dict.fromkeys([*(m for m in standard if m != "noise_floor"), *(p["name"] for p in PROBES[args.model]), "noise_floor"]))
    task_rec = record["tasks"][0]
    everyone = {"original (target)": original, **runs}
    before = {m: redecide(r, standard) for m, r in everyone.items()}
    after = {m: redecide(r, metrics) for m, r in everyone.items()}
    for m, r in everyone.items():  # the full re-decision is the stored verdict: the same evidence, the same bands
        stored = Verdict.from_json(r["verdict"]).label
        if after[m].label != stored:
            raise RuntimeError(f"{m}: re-decided verdict {after[m].label!r} differs from the stored {stored!r}")
    keys = probe_keys(original, probes)
    spread = (original["results"].get("noise_floor", {}).get("info", {}) or {}).get("spread", {})
    band = next(iter(after.values())).bands
    cmd = "python benchmarks/lm_attacks.py " + shlex.join(argv)  # quoted: the line can be pasted back
    unlearn_s, eval_s = runs_seconds(everyone)
    here = f"{cpu_model()}, {torch.get_num_threads()} threads"  # this invocation; reused runs may come from another
    machines = sorted({f"{e['cpu']}, {e['threads']} threads" for r in everyone.values() if (e := r.get("environment")) and "cpu" in e}) or [here]
    selected = [m for m in lm_unlearning.METHODS if m not in args.methods]
    lines = ["# Recovery probes on unlearned language models (fictitious profiles)", "",
             f"Generated by `{cmd.strip()}` on {record['device']} ({here}) in "
             f"{elapsed / 60:.1f} min ({reused} of {len(everyone)} runs reused from the store; the runs' own time, whichever "
             f"process made them: method runs {unlearn_s / 60:.1f} min (the retrain row's fine-tune included) + evaluation "
             f"{eval_s / 60:.1f} min; the cached references' training not included"
             f"{'' if machines == [here] else '; the runs ran on ' + ' and '.join(machines)}). "
             "Do not edit by hand.", "",
             f"Task: {task_rec['label']} — forget {task_rec['task']['splits']['forget']['n']} / retain "
             f"{task_rec['task']['splits']['retain']['n']} question-answer items. Model `{args.model}`, scale `{args.scale}`; "
             f"methods and settings of benchmarks/lm_unlearning.py (`--stop-at {args.stop_at}`), "
             f"{len(task_rec['references'].get('retrain_seeds', []))} retrained seeds for the bands.", ""]
    if selected:
        lines += [f"Methods: {', '.join(args.methods)} (`--methods`); left out: {', '.join(selected)}. "
                  + (args.why or "") , ""]
    lines += ["## Probe values against retraining", "",
              "Each cell is the probe's evidence on that model; **bold ↑** = above the band of the retrained seeds (remembers "
              "more than retraining: the probe recovers the fact), **bold ↓** = below it. The band row is the retrained seeds' "
              "mean and prediction interval for one more retrain (Bonferroni over every band of the full battery, as the "
              "verdict uses it). icl_probe is utility evidence (a model given the fact should answer it); the others are "
              "robustness evidence.", "",
              "| model | " + " | ".join(f"{k.split('.', 1)[1]} ({n})" for n, k in keys) + " |", "|---|" + "---|" * len(keys)]
    lines.append("| retrained seeds: mean [band] | " + " | ".join(
        f"{band[k].mean:.3f} [{band[k].lo:.3f}, {band[k].hi:.3f}]" if k in band else "—" for _, k in keys) + " |")
    for m, r in everyone.items():
        rows = {row["key"]: row for row in after[m].rows}
        lines.append(f"| {m} | " + " | ".join(mark(rows.get(k)) for _, k in keys) + " |")
    lines += ["", "## Verdict before and after the probes", "",
              f"Before: the standard LM evidence ({', '.join(m for m in standard if m != 'noise_floor')}). After: plus "
              f"{', '.join(p['name'] for p in PROBES[args.model])}. Both are decided from the same run record (the stored "
              "evidence and noise floor; before = the noise floor cut to the standard evidence, so its Bonferroni family is "
              "the standard battery's). 'After' equals the verdict stored with the run.", "",
              "| model | before | after | bands before → after | probes outside the band |", "|---|---|---|---|---|"]
    for m in everyone:
        out_keys = [f"{row['key']} {'↑' if row['status'] == 'more' else '↓'}" for row in after[m].rows
                    if row["key"] in {k for _, k in keys} and row["status"] in ("more", "less")]
        changed = before[m].label != after[m].label
        lines.append(f"| {m} | {before[m].display} | {'**' + after[m].display + '**' if changed else after[m].display} | "
                     f"{before[m].family} → {after[m].family} | {', '.join(out_keys) or '—'} |")
    lines += ["", "## Numbers behind the seed claims", "",
              "| model | forget prob | 8-bit | 4-bit | gain 8-bit | gain 4-bit | ICL without context | ICL in context | ICL lift | retrained lift |",
              "|---|---|---|---|---|---|---|---|---|---|"]

    def c(run: dict[str, Any], metric: str, key: str, fmt: str = "{:.3f}") -> str:
        v = value(run, metric, key)
        return "—" if v is None else fmt.format(v)

    for m, r in everyone.items():
        lines.append(f"| {m} | " + " | ".join([
            c(r, "quantisation", "forget_prob"), c(r, "quantisation", "forget_prob_8bit"), c(r, "quantisation", "forget_prob_4bit"),
            c(r, "quantisation", "forget_gain_8bit", "{:+.3f}"), c(r, "quantisation", "forget_gain_4bit", "{:+.3f}"),
            c(r, "icl_probe", "forget_without_context_rouge_l"), c(r, "icl_probe", "forget_in_context_rouge_l"),
            c(r, "icl_probe", "lift_forget_rouge_l", "{:+.3f}"), c(r, "icl_probe", "retrained_lift_forget_rouge_l", "{:+.3f}")]) + " |")
    lines += ["", "Quantisation: the forget answer probability P̄(a|q) at full precision and after round-to-nearest weight "
              "quantisation (group size 64), gain = quantised − full precision. ICL: ROUGE-L recall of the greedy answer to the "
              "paraphrased question, with the fact's sentence in the prompt and without.", "",
              "## Seed claims (decided from the numbers above)", ""]
    lines += claims(runs, after, before, keys, spread) + [""]
    lines += timing_section(everyone, metrics, probes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(lm_unlearning.SETTINGS), default="smollm2")
    p.add_argument("--scale", default="small")
    p.add_argument("--forget", type=float, default=0.1, help="fraction of profiles to forget")
    p.add_argument("--methods", nargs="+", default=list(lm_unlearning.METHODS),
                   help="LM methods (default: every method of benchmarks/lm_unlearning.py); retrain always runs")
    p.add_argument("--why", default=None, help="the reason for a --methods subset, printed in the output")
    p.add_argument("--retrain-seeds", type=int, default=None, help="retrained models (the bands); default per model")
    p.add_argument("--stop-at", choices=["holdout", "none"], default="holdout")
    p.add_argument("--device", default="cpu")
    p.add_argument("--executor", default="process", help="where the unlearning runs execute (process: each in a fresh process)")
    p.add_argument("--refs-cache", default=str(ROOT / "unlearnkit-runs" / "refs"))
    p.add_argument("--store", default=None, help="keep the runs here (a rerun resumes from finished runs); default: a temporary store")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "lm_attacks.md"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods) - set(lm_unlearning.METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(lm_unlearning.METHODS)}")
    if set(args.methods) != set(lm_unlearning.METHODS) and not args.why:
        p.error("--methods selects a subset: say why with --why (it goes into the generated file)")

    from unlearnkit.io import atomic_write_text
    from unlearnkit.runs import Store

    exp = build_experiment(args)
    with tempfile.TemporaryDirectory(prefix="uk-lm-attacks-") as tmp:
        store = Store(args.store or tmp, refs_root=args.refs_cache)
        before_ids = {r["run_id"] for r in store.runs()} if args.store else set()
        record, elapsed = lm_unlearning.run_timed(exp, store, args)
        task_rec = record["tasks"][0]
        original = store.load_run(task_rec["original_run"])
        runs = {name: store.load_run(ids[0]) for name, ids in task_rec["runs"].items()}
    reused = sum(r["run_id"] in before_ids for r in [original, *runs.values()])
    text = render(args, argv, record, original, runs, elapsed, reused)
    print(text)
    atomic_write_text(Path(args.output), text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0 if record["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
