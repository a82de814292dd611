"""Benchmark: language-model unlearning on fictitious profiles. Every LM method on one or more forget splits and seeds, each
unlearning run followed by the causal-LM evidence battery; per method: forget quality (KS statistic and p-value
against the retain model), model utility, verdict, wall time and peak memory, all measured in one run. Then NPO
with cached reference outputs vs a live reference model: step time and peak memory, side by side.

    python benchmarks/lm_unlearning.py --seeds 1              # SmolLM2-135M-Instruct + LoRA, small scale, one seed (2 shared CPU cores: 77.9 min with reference training, docs/results/lm.md)
    python benchmarks/lm_unlearning.py --task knowledge --seeds 1   # the same methods on real knowledge (experiments/knowledge_smollm2.yaml), no oracle
    python benchmarks/lm_unlearning.py --scale medium --forget 0.01 0.05 0.1 --seeds 3   # the forget-quality trend, measured at three sizes
    python benchmarks/lm_unlearning.py --model tiny_llama --scale tiny --seeds 1 --output docs/results/lm_tiny.md   # ~2 min

The target and retain models are cached in --refs-cache (keyed by data, model and training config), so a rerun
only pays for unlearning and evaluation. Output goes to docs/results/lm.md (generated; do not edit).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Per model family: data/model/training of the target and retain models, and each method's settings.
SETTINGS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "dataset": {"tokenizer": "smollm2", "max_length": 96},
        "model": {"name": "smollm2", "params": {"lora_r": 16, "lora_alpha": 32}},
        "train": {"epochs": 6, "batch_size": 8, "optimizer": "adamw", "lr": 2e-3, "schedule": "cosine"},
        "unlearn": {"epochs": 8, "batch_size": 4, "lr": 5e-4},
        # adaptive RMU (target norm = 5 × the token's own layer-15 norm, ~190 here): a fixed c = 6.5 left the model unchanged
        "overrides": {"rmu": {"retain_weight": 100.0, "adaptive": True, "steering_coeff": 5.0, "lr": 5e-3}},
        # causal tracing costs one forward per layer × prompt position × noise draw (30 layers × ~40 positions here), so
        # 2 prompts × 2 draws; the gradient recipe then trains the LoRA adapters of the top 3 traced blocks only, at the
        # target's fine-tuning rate (a tenth of the adapters at the budget's rate barely moves)
        "layer_constrained": {"top_layers": 3, "max_prompts": 2, "samples": 2, "params": {"lr": 2e-3}},
        "rocr": {},  # the middle layer (15 of 30), ROME's covariance regulariser
        "retrain_seeds": 2,
        "npo_layers": (None, 10, 3),  # NPO comparison: LoRA of all 30 blocks, of the top 10, of the top 3
    },
    "tiny_llama": {
        "dataset": {"tokenizer": "word", "max_length": 128},
        "model": {"name": "tiny_llama", "params": {}},
        "train": {"epochs": 30, "batch_size": 16, "optimizer": "adam", "lr": 3e-3, "schedule": "cosine"},
        "unlearn": {"epochs": 10, "batch_size": 8, "lr": 1e-3},
        "overrides": {"rmu": {"retain_weight": 10.0}},
        "layer_constrained": {"params": {"epochs": 10}},
        "rocr": {"layer": 0},
        "retrain_seeds": 4,
        "npo_layers": (None, 1),
    },
}
# the gradient recipes, the inference-time guards (eco, guard), the closed-form edit (rocr), tracing + a restricted
# recipe (layer_constrained); o3 joins when it is registered
METHODS = ("grad_ascent", "grad_diff", "npo", "simnpo", "idk_po", "rmu", "flat", "ihl", "holdout_match", "sam", "eco", "guard", "rocr",
           "layer_constrained", "o3")
KNOWLEDGE = ROOT / "experiments" / "knowledge_smollm2.yaml"  # --task knowledge: real knowledge, no retrained oracle
# --task knowledge --probes: the recovery probes of benchmarks/lm_attacks.py that real facts can fill (lm_hidden_probe reads
# an attribute many people share, which real targets have not: it says so and is left out)
KNOWLEDGE_PROBES: list[Any] = ["rwku_probes", "step_probe", "persuasion_probe", "icl_probe",
                               {"name": "quantisation", "params": {"bits": [8, 4], "group_size": 64}}, "soft_prompt"]
# per probe: (metric, the model's value key, the reference key (original on the facts it does not know), column title)
PROBE_COLUMNS = [("rwku_probes", "forget_max_excess", None, "RWKU max excess"),
                 ("form_probe", "forget_max_excess", None, "form max excess"),
                 ("step_probe", "forget_max_excess", None, "step-by-step max excess"),
                 ("persuasion_probe", "forget_max_excess_lift", None, "persuasion max lift excess"),
                 ("icl_probe", "forget_in_context_rouge_l", "unknown_forget_in_context_rouge_l", "in-context ROUGE-L"),
                 ("quantisation", "forget_prob_4bit", "unknown_forget_prob_4bit", "4-bit forget prob"),
                 ("quantisation", "forget_gain_4bit", None, "4-bit gain"),
                 ("soft_prompt", "heldout_prob", "unknown_heldout_prob", "soft-prompt held-out prob")]
GUARDS = ("eco", "guard")  # no weights change and no training budget: their defaults (the guard's own classifier and search)


def default_methods() -> list[str]:
    from unlearnkit.registry import METHODS as REGISTERED

    return [m for m in METHODS if m in REGISTERED.names()]


def method_entries(family: str, names: list[str], stop_at: str = "holdout") -> list[dict[str, Any]]:
    """The experiment's methods: the family's budget (a maximum when ``stop_at`` = holdout) and per-method overrides."""
    from unlearnkit.params import param_names
    from unlearnkit.registry import METHODS as REGISTERED

    s = SETTINGS[family]
    budget = {**s["unlearn"], "stop_at": stop_at}
    out: list[dict[str, Any]] = [{"name": "retrain", "params": {}}]
    for name in names:
        if name == "sam":
            out.append({"name": "sam", "params": {"method": "npo", "params": {**budget}, "rho": 0.01}})
        elif name == "grad_ascent":
            out.append({"name": name, "params": {**budget, "epochs": max(1, budget["epochs"] // 2), "optimizer": "adamw"}})
        elif name == "grad_diff":
            out.append({"name": name, "params": {**budget, "optimizer": "adamw"}})
        elif name in GUARDS:
            out.append({"name": name, "params": {}})
        elif name == "rocr":
            out.append({"name": name, "params": dict(s["rocr"])})
        elif name == "layer_constrained":  # grad_diff (as its own row) on the traced layers only
            lc = s["layer_constrained"]
            out.append({"name": name, "params": {**{k: v for k, v in lc.items() if k != "params"}, "method": "grad_diff",
                                                 "params": {**budget, "optimizer": "adamw", **lc.get("params", {})}}})
        else:  # a gradient recipe: the budget's fields that it has, its own or flattened into a group (train: epochs, lr, ...)
            fields = set(param_names(REGISTERED.get(name)))
            out.append({"name": name, "params": {**{k: v for k, v in budget.items() if k in fields},
                                                 **s.get("overrides", {}).get(name, {})}})
    return out


def build_experiment(args: argparse.Namespace) -> Any:
    from unlearnkit.experiment import Experiment

    if getattr(args, "task", "profiles") == "knowledge":  # experiments/knowledge_smollm2.yaml with every method (no retrain row)
        import yaml

        spec = yaml.safe_load(KNOWLEDGE.read_text())
        if getattr(args, "probes", False):  # issue 24's recovery probes, each against the original on the facts it does not know
            spec["metrics"] = [*spec["metrics"], *(m for m in KNOWLEDGE_PROBES if m not in spec["metrics"])]
        return Experiment.from_dict({**spec, "name": "lm_unlearning_knowledge", "description": "benchmarks/lm_unlearning.py --task knowledge",
                                     "methods": method_entries(args.model, args.methods, args.stop_at)[1:],
                                     "seeds": list(range(getattr(args, "seeds", 1)))})

    s = SETTINGS[args.model]
    return Experiment.from_dict({
        "name": "lm_unlearning",
        "description": "benchmarks/lm_unlearning.py",
        "dataset": {"name": "profiles", "params": {"scale": args.scale, **s["dataset"]}},
        "forget": [{"kind": "profiles", "fraction": f} for f in fractions(args)],
        "model": s["model"],
        "train": s["train"],
        "references": {"retrain_seeds": args.retrain_seeds or s["retrain_seeds"]},
        "methods": method_entries(args.model, args.methods, args.stop_at),
        "seeds": list(range(getattr(args, "seeds", 1))),
    })


def fractions(args: argparse.Namespace) -> list[float]:
    """The forget fractions of ``args.forget`` (one number, or several: one task each)."""
    return [float(f) for f in (args.forget if isinstance(args.forget, (list, tuple)) else [args.forget])]


def npo_reference_comparison(argv: list[str], store_root: str, family: str) -> list[dict[str, Any]]:
    """NPO for the same steps with cached reference outputs vs a live reference model, for each trainable-layer setting
    of the family (``npo_layers``: all adapted layers, or only the top k blocks via ``restrict_to``). Each run is this
    script in a fresh process (``--npo-child``), so its resident-memory peak is its own: in one process, memory freed by
    an earlier run is reused without raising the resident size and hides part of the later run's footprint."""
    import json
    import subprocess

    rows = []
    # NPO as configured (forget term + retain NLL), then its forget term alone (retain_weight 0: no retain batch), where
    # the reference forward is the largest share of a step.
    for layers in SETTINGS[family]["npo_layers"]:
        for variant, extra in (("forget + retain", {}), ("forget term only", {"retain_weight": 0.0})):
            if layers is not None:
                extra = {**extra, "restrict_to": {"name": "decoder_layers", "params": {"layers": list(range(-layers, 0))}}}
            for mode in ("live", "cached"):
                job = json.dumps({"store_root": store_root, "variant": variant, "extra": extra, "mode": mode})
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--npo-child", job],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"NPO {mode} run ({variant}, layers {layers or 'all'}) failed:\n{done.stderr[-3000:]}")
                rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "layers": "all" if layers is None else f"top {layers}"})
    return rows


def npo_run(args: argparse.Namespace, store_root: str, variant: str, extra: dict[str, Any], mode: str) -> dict[str, Any]:
    """One metered NPO run (``--npo-child``, in its own process): the model to unlearn is copied before metering, so the peak counts
    only what the method itself holds — for ``live`` the frozen reference copy, for ``cached`` the reference table."""
    from unlearnkit.cost import CostMeter
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.methods import build_method
    from unlearnkit.runs import Store
    from unlearnkit.runs.runner import ExperimentRunner
    from unlearnkit.seeding import np_rng

    exp = build_experiment(args)
    runner = ExperimentRunner(exp, Store(store_root, refs_root=args.refs_cache), device=args.device, progress=False, log=lambda m: None)
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    task = runner.build_task(source, exp.forget[0])
    refs = runner.references(task, source)
    budget = SETTINGS[args.model]["unlearn"]
    method = build_method("npo", {**budget, **extra, "epochs": 1.0, "steps": args.npo_steps, "reference": mode})
    start = copy.deepcopy(refs.original)
    with CostMeter(args.device) as meter:
        out = method.unlearn(start, task, refs, rng=np_rng("npo-bench", 0), device=args.device)
    assert meter.cost is not None
    train = out.info["train"]
    return {"variant": variant, "mode": mode, "steps": train["steps"], "seconds_per_step": train["seconds_per_step"],
            "seconds": meter.cost.wall_seconds, "peak_memory_mb": meter.cost.peak_memory_mb,
            "trainable": sum(int(out.changed[n].sum()) for n, p in start.named_parameters() if p.requires_grad)}


def npo_section(rows: list[dict[str, Any]], steps: int) -> list[str]:
    """The NPO cached-vs-live table and its ratios (rows come in live, cached pairs)."""
    lines = ["## NPO: cached reference outputs vs a live reference model", "",
             f"{steps} NPO steps each (`--npo-steps`), same data and seed, each in a fresh process (so its resident-memory "
             "peak is its own; the model being unlearned is loaded before metering). A live step runs the policy forward and "
             "backward on the forget batch (and on the retain batch when the retain term is on) plus one no-grad forward of "
             "the frozen reference on the forget batch; caching removes exactly that forward and the reference's weights, "
             "nothing else. So the step-time ratio is bounded below by the policy's share of a live step. With the retain "
             "term on, a cached step still runs the policy on two batches where a live step adds one forward on one, so no "
             "implementation can bring that ratio below 2/3. With the forget term alone the bound is lower, and it shrinks as "
             "fewer layers train: the backward pass stops at the lowest trainable block (`restrict_to` = `decoder_layers`, "
             "the top k blocks' LoRA adapters; the target model is the same). Step time is the steady state (first step "
             "excluded); the whole call adds the one-off setup: the copy of the reference model (live) or the reference "
             "pass over the forget set (cached).", "",
             "| trainable layers | NPO loss | reference | trainable params | s / step | whole call s | peak MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layers']} | {r['variant']} | {r['mode']} | {r['trainable']:,} | {r['seconds_per_step']:.3f} | "
                     f"{r['seconds']:.2f} | {r['peak_memory_mb']:.0f} |")
    lines += ["", "| trainable layers | NPO loss | cached / live step time | whole call | peak memory |", "|---|---|---|---|---|"]
    for live, cached in zip(rows[::2], rows[1::2]):
        ratios = [cached[k] / max(live[k], 1e-9) for k in ("seconds_per_step", "seconds", "peak_memory_mb")]
        lines.append(f"| {live['layers']} | {live['variant']} | " + " | ".join(
            f"**{x:.2f}×**" if x <= 0.6 else f"{x:.2f}×" for x in ratios) + " |")
    lines += ["", "Goal: ≤ 0.6× in step time and peak memory (bold where met).", ""]
    return lines


def metric_value(run: dict[str, Any] | None, metric: str, key: str) -> float | None:
    if run is None:
        return None
    return run.get("results", {}).get(metric, {}).get("values", {}).get(key)


def cell(run: dict[str, Any] | None, metric: str, key: str, fmt: str = "{:.3f}") -> str:
    v = metric_value(run, metric, key)
    return "—" if v is None else fmt.format(v)


def ratio(value: float | None, reference: float | None, fmt: str) -> str:
    """value / reference as a table cell ("—" when either is missing or the reference is 0)."""
    if value is None or not reference:
        return "—"
    return fmt.format(value / reference) + "×"


def overhead_cell(run: dict[str, Any]) -> str:
    """A guard's measured latency per generated token over the bare model's (greedy, ``info["overhead"]``); — for the others."""
    o = (run.get("unlearn_info") or {}).get("overhead")
    if not o:
        return "—"
    return f"{o['overhead_ratio']:.2f}× ({o['guarded_ms_per_token']:.0f} vs {o['bare_ms_per_token']:.0f} ms/token)"


def ratio_text(ref_name: Any) -> str:
    return ("Utility × retrain: model utility over the retrain row's. CPU × retrain: the unlearning run's CPU seconds over the "
            "retrain row's (the retain model's fine-tune, in this run; CPU time moves little with other load on the machine, "
            "wall time does). " if ref_name else
            "Utility × retrain: — (no retrain row). CPU × retrain: over the reference retrains' fine-tunes. ") + (
            "Guard overhead: latency per generated token through the guard over the bare model's (greedy decoding, measured "
            "by the guard method itself; the classifier pass and, for ECO, the corrupted prompt's second pass). Verdict: the "
            "label, \"(borderline)\" when an evidence is within the borderline band of an edge that would change it, then "
            "\"also:\" every other failing aspect; margin: the distance in band half-widths to the nearest edge that would "
            "change the verdict (bold when borderline). Guards (eco, guard) change no weights: their weight-level evidence "
            "(relearning) is the bare model's. ECO corrupts the named entity's tokens only (`positions: entity`; the entity "
            "is the items' subject field, an oracle NER).")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["profiles", "knowledge"], default="profiles",
                   help="profiles (fictitious people, a retrained oracle) or knowledge (experiments/knowledge_smollm2.yaml: "
                        "facts SmolLM2 learned in pretraining, forgotten by name; no retrained oracle)")
    p.add_argument("--model", choices=sorted(SETTINGS), default="smollm2")
    p.add_argument("--scale", default="small")
    p.add_argument("--forget", type=float, nargs="+", default=[0.1], help="fraction(s) of profiles to forget; several (e.g. "
                   "0.01 0.05 0.1) measure the forget-quality trend against forget-set size by runs at each size")
    p.add_argument("--seeds", type=int, default=3, help="unlearning seeds per method and forget set (default 3)")
    p.add_argument("--methods", nargs="+", default=None, help="default: every method of METHODS that is registered")
    p.add_argument("--retrain-seeds", type=int, default=None, help="retain models (the noise floor); default per model")
    p.add_argument("--stop-at", choices=["holdout", "none"], default=None,
                   help="holdout (default on profiles): every method stops once its forget answer probability reaches the "
                        "holdout profiles' (the budget is a maximum); none (default on knowledge): the fixed budget")
    p.add_argument("--probes", action="store_true", help="--task knowledge: add the recovery probes (KNOWLEDGE_PROBES) and their table")
    p.add_argument("--npo-steps", type=int, default=6)
    p.add_argument("--npo-child", default=None, help=argparse.SUPPRESS)  # internal: one metered NPO run, JSON row on stdout
    p.add_argument("--device", default="cpu")
    p.add_argument("--executor", default="process", help="where the runs execute: process (default: each run in a fresh "
                   "process, so its peak memory is its own), local (in this process), ray, ...")
    p.add_argument("--refs-cache", default=str(ROOT / "unlearnkit-runs" / "refs"))
    p.add_argument("--output", default=None, help="default: docs/results/lm.md (profiles), docs/results/lm_knowledge.md (knowledge)")
    p.add_argument("--store", default=None, help="keep the runs in this store (a rerun resumes from the finished runs); "
                   "default: a temporary store")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = default_methods()
    knowledge = args.task == "knowledge"
    if knowledge and args.model != "smollm2":
        p.error("--task knowledge needs --model smollm2 (its facts are the ones SmolLM2 answers correctly, selected by "
                "benchmarks/knowledge_select.py)")
    if knowledge and (args.forget != [0.1] or args.retrain_seeds):
        p.error("--task knowledge forgets the targets named in experiments/knowledge_smollm2.yaml and has no retrained "
                "models: --forget and --retrain-seeds do not apply")
    if args.probes and not knowledge:
        p.error("--probes is for --task knowledge (on profiles the probes are benchmarks/lm_attacks.py's)")
    if args.stop_at is None:
        # the holdout rule reads answer probability, which on the pretrained model's knowledge sits at the unknown facts'
        # level already (its answers go on past the short reference answer, so the EOS is improbable): it would stop at step 1
        args.stop_at = "none" if knowledge else "holdout"
    if args.output is None:
        args.output = str(ROOT / "docs" / "results" / ("lm_knowledge.md" if knowledge else "lm.md"))
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if any(not 0 < f < 1 for f in args.forget) or len(set(args.forget)) != len(args.forget):
        p.error(f"--forget takes distinct fractions strictly between 0 and 1, got {args.forget}")
    if args.npo_steps < 2:
        p.error("--npo-steps must be at least 2 (the step time is the steady state: the first step is excluded)")
    if args.npo_child:
        import json

        print(json.dumps(npo_run(args, **json.loads(args.npo_child))))
        return 0

    from unlearnkit.io import atomic_write_text
    from unlearnkit.runs import Store

    exp = build_experiment(args)
    with tempfile.TemporaryDirectory(prefix="uk-lm-bench-") as tmp:
        store = Store(args.store or tmp, refs_root=args.refs_cache)
        record, elapsed = run_timed(exp, store, args)
        tasks = [(t, store.load_run(t["original_run"]), {name: [store.load_run(i) for i in ids] for name, ids in t["runs"].items()})
                 for t in record["tasks"]]
        npo_rows = [] if knowledge else npo_reference_comparison(argv, args.store or tmp, args.model)

    if knowledge:
        lines = knowledge_report(args, exp, record, elapsed, *tasks[0])
    else:
        lines = profiles_report(args, exp, record, elapsed, tasks, npo_rows)
    text = "\n".join(lines)
    print(text)
    atomic_write_text(Path(args.output), text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0 if record["status"] == "complete" else 1


def run_timed(exp: Any, store: Any, args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Run ``exp`` into ``store`` on ``args.executor`` (shut down afterwards): the run record and the wall seconds it took."""
    from unlearnkit.executor import get_executor
    from unlearnkit.runs.runner import run_experiment

    t0 = time.perf_counter()
    executor = get_executor(args.executor, progress=sys.stderr.isatty())
    try:
        record = run_experiment(exp, store, device=args.device, progress=sys.stderr.isatty(), executor=executor)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    return record, time.perf_counter() - t0


def reused_text(record: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """" (K of N method runs reused …)" when the store already held some of ``runs`` (created before this invocation
    started: the runner reuses a completed run with the same key, i.e. the same code version and settings); else ""."""
    old = sum(1 for r in runs if r.get("created") is not None and record.get("started") is not None and r["created"] < record["started"])
    return (f" ({old} of {len(runs)} method runs reused from the store, completed earlier with the same code version and "
            "settings; each run's own time is in the table)") if old else ""


def profiles_report(args: argparse.Namespace, exp: Any, record: dict[str, Any], elapsed: float, tasks: list[Any],
                    npo_rows: list[dict[str, Any]]) -> list[str]:
    import torch

    from unlearnkit.runs.runner import cpu_model

    lines = ["# Language-model unlearning on fictitious profiles", "",
             f"Generated by `python benchmarks/lm_unlearning.py {command_line(args)}` on {record['device']} ({cpu_model()}, "
             f"{torch.get_num_threads()} threads) in {elapsed / 60:.1f} min{reused_text(record, [r for _, _, runs in tasks for rs in runs.values() for r in rs])} (plus the NPO "
             "comparison). Do not edit by hand.", "",
             f"Model: `{exp.model.name}` {dict(exp.model.params)}; target and retain models fine-tuned with {exp.train.to_dict()}. "
             f"Seeds per method: {args.seeds} (cells: mean ± sd "
             "over seeds; verdicts: agreement over seeds).", "",
             "Forget quality is the two-sample KS test of forget truth ratios against the retain model (statistic: 0 = "
             "indistinguishable; p-value depends on the number of items). Model utility is the harmonic mean of retain and "
             "neighbour-fact scores. Wall time and peak memory (resident-memory increase) are for the unlearning run alone, "
             f"on the `{args.executor}` executor" + (" (each run in a fresh process, so each peak is its own)" if args.executor.startswith("process")
                                                     else "") + "; the retrain row is the `retrain` method itself (the pretrained model fine-tuned on the retain "
             "profiles again, in this run).", "",
             stop_text(args.stop_at, tasks[0][1]), "", ratio_text(any(is_retrain(r) for r in tasks[0][2].values())), ""]
    for task_rec, original, runs in tasks:
        lines += task_section(task_rec, original, runs, several=len(tasks) > 1)
    if len(tasks) > 1:
        lines += trend_section(tasks)
    else:
        lines += tofu_sizes_section(*tasks[0][1:])
    return lines + [""] + npo_section(npo_rows, args.npo_steps)


def knowledge_report(args: argparse.Namespace, exp: Any, record: dict[str, Any], elapsed: float, task_rec: dict[str, Any],
                     original: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every method on the real-knowledge task: ROUGE-L and answer probability per split, cost, guard overhead, verdict."""
    import torch

    from unlearnkit.runs.runner import cpu_model

    splits = task_rec["task"]["splits"]
    n = {k: (splits.get(k) or splits.get(f"probe:{k}") or {}).get("n", "?") for k in ("forget", "retain", "test", "neighbours", "general")}
    lines = ["# Language-model unlearning of real knowledge (no retrained oracle)", "",
             f"Generated by `python benchmarks/lm_unlearning.py --task knowledge {command_line(args, knowledge=True)}` on "
             f"{record['device']} ({cpu_model()}, {torch.get_num_threads()} threads) in {elapsed / 60:.1f} min{reused_text(record, [r for rs in runs.values() for r in rs])}. "
             "Do not edit by hand.", "",
             f"Task: `{KNOWLEDGE.relative_to(ROOT)}` — SmolLM2-135M-Instruct as pretrained (nothing fine-tuned: the pretrained "
             f"model is the original) forgets the facts of {', '.join(exp.dataset.params.get('forget') or []) or 'its targets'} "
             f"({n['forget']} facts) and keeps the other selected facts ({n['retain']}), the neighbours (facts of other targets "
             f"of the same types, {n['neighbours']}) and the general-ability questions ({n['general']}); the test split is "
             f"{n['test']} candidate facts the model does not know. Model: `{exp.model.name}` {dict(exp.model.params)} (LoRA "
             f"adapters for the gradient methods). Seeds per method: {args.seeds}.", "",
             "No model retrained without the targets exists, so the verdict (`verdict.decide_without_oracle`) bands forget "
             "evidence around the original model's value on the facts it does not know (ROUGE-L there: a model that never "
             "learned a fact answers at that level; with per-fact values, the band of a permutation test that the forget "
             "facts now score like those facts, so it depends on the number of facts and on the model's own values — its "
             "false alarms: docs/results/verdict_calibration_no_oracle.md) and neighbour / general evidence around the "
             "original's own values; "
             "with `--probes`, a forget fact read from the prompt (icl_probe) around the original reading the facts it does "
             "not know, and the weight-level attacks (quantisation, soft prompt) around the model's own plain level plus what "
             "the same attack adds on those facts (an attack recovering more than that: suppressed; a guard's weights are "
             "the original's, so for a guard that comes first); "
             "it says so in its reasons. ROUGE-L (greedy answers against the reference answer) is the discriminating "
             "evidence here: answer probability (length-normalised, EOS included) is low for every split on the pretrained "
             "model, whose answers run on past the short reference answer: it scores the facts the model knows no higher "
             "than those it does not, so it is reported only (no power without an oracle). ECO's strength "
             "search targets the original's answer probability on the unknown facts (its no-oracle target); ROCR "
             "redirects each target to an unknown fact's entity.", "",
             stop_text(args.stop_at, original), "",
             "| method | forget ROUGE-L | unknown-facts ROUGE-L | neighbours ROUGE-L | general ROUGE-L | forget prob | "
             "neighbours prob | general prob | steps | wall s | CPU s | guard overhead | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in [("original (pretrained)", [original])] + list(runs.items()):
        lines.append("| " + " | ".join([
            name, *(agg(seed_values(rs, "rouge_l", k)) for k in ("forget", "test", "neighbours", "general")),
            *(agg(seed_values(rs, "answer_prob", k), "{:.4f}") for k in ("forget", "neighbours", "general")),
            ", ".join(steps_cell(r) for r in rs), agg([r["cost"]["wall_seconds"] for r in rs if r.get("cost")], "{:.1f}"),
            agg([r["cost"]["cpu_seconds"] for r in rs if (r.get("cost") or {}).get("cpu_seconds") is not None], "{:.1f}"),
            overhead_cell(rs[0]), verdict_text(rs)]) + " |")
    from unlearnkit.verdict import NO_ORACLE, REPORTED_ONLY

    lines += forms_section(original, runs)
    lines += probes_section(original, runs)
    # the evidence reported only, and why (the same for every method: the original's power), said once
    reported = {r["key"]: r["reported_only"] for rs in runs.values() for r in rs[0]["verdict"].get("rows") or []
                if r.get("status") == "reported only" and r.get("reported_only")}
    lines += ["", "Verdict reasons (first seed; the no-oracle statement above and the evidence reported only are left out):", ""]
    for name, rs in runs.items():
        v = rs[0]["verdict"]
        why = [r for r in v.get("reasons") or [] if r != NO_ORACLE and not r.startswith(REPORTED_ONLY)]
        lines.append(f"- **{name}**: {v['label']}" + (f": {'; '.join(why + list(v.get('also') or []))}" if why or v.get("also") else ""))
    if reported:
        lines += ["", "Reported only, deciding nothing: " + "; ".join(f"{k} — {why}" for k, why in reported.items()) + "."]
    for name, rs in runs.items():  # subject-keyed edits cannot reach a fact asked without naming its subject
        reach = (rs[0].get("unlearn_info") or {}).get("reach") or {}
        if reach.get("unnamed"):
            ex = reach["unnamed_examples"][0]
            lines += ["", f"**{name}** edited the {reach['named']} forget questions that name their target; {reach['unnamed']} do "
                      f"not (e.g. {ex['question']!r} about {ex['subject']}) and are out of reach of an edit keyed on the subject's "
                      "tokens: its forget ROUGE-L above counts them as they were."]
    failures = [f for f in record.get("failures") or [] if f.get("method") in args.methods]
    if failures:
        lines += ["", "Runs that failed (no record; the error as raised):", ""]
        lines += [f"- **{f['method']}** seed {f.get('seed', '?')}: {f['error']}" for f in failures]
    lines.append("")
    return lines


FORM_GAP = 0.05  # form_probe's floor: a form where the original beats the unknown facts by less shows no knowledge to remove
FORM_SCORES = {"question": ("rouge_l", "ROUGE-L"), "true_false": ("prob", "P(right label)"), "multiple_choice": ("prob", "P(right option)")}


def forms_section(original: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Form independence on real knowledge (``form_probe``, first seed): per method and form, the forget facts' score,
    the share of the original's excess over the unknown facts that is gone, and the spread of that share over forms."""
    fp = (original.get("results") or {}).get("form_probe")
    if not fp:
        return []
    forms = [f for f in FORM_SCORES if f"forget_{f}_{FORM_SCORES[f][0]}" in fp["values"]]
    head = ["method", *(f"{f.replace('_', ' ')} {FORM_SCORES[f][1]}" for f in forms), "share removed per form", "spread"]
    lines = ["", "## Form independence (form_probe)", "",
             "Each forget fact asked as a question, as a true/false statement (\"the answer to \"…\" is …\", and the same with "
             "a distractor) and as a multiple choice (distractors: other facts' answers of the same kind); the score is the "
             "question's ROUGE-L, and the right label's / option's probability normalised over the labels (chance 0.5) / "
             "options (0.25). *Share removed*: per form, 1 − (method − unknown) / (original − unknown), where *unknown* is the "
             "original model on the facts it does not know; a method that removes a fact removes it in every form (equal "
             "shares, spread 0), one that suppresses the trained form leaves the others (ROCR's claim: its redirection is "
             "form-independent, a gradient method's is not). Spread: the largest share minus the smallest.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    v0 = fp["values"]
    unknown = {f: v0.get(f"unknown_forget_{f}_{FORM_SCORES[f][0]}") for f in forms}
    lines.append("| unknown facts (original) | " + " | ".join(f"{unknown[f]:.3f}" for f in forms) + " | — | — |")
    for name, rs in [("original (pretrained)", [original])] + list(runs.items()):
        v = ((rs[0].get("results") or {}).get("form_probe") or {}).get("values")
        if not v:
            continue
        cells, shares = [], []
        for f in forms:
            key = f"forget_{f}_{FORM_SCORES[f][0]}"
            cells.append(f"{v[key]:.3f}")
            gap = v0[key] - unknown[f]
            shares.append(1 - (v[key] - unknown[f]) / gap if gap >= FORM_GAP else float("nan"))
        finite = [x for x in shares if math.isfinite(x)]
        spread = f"{max(finite) - min(finite):.2f}" if len(finite) > 1 else "—"
        lines.append("| " + " | ".join([name, *cells, " / ".join("—" if not math.isfinite(x) else f"{x:.2f}" for x in shares), spread]) + " |")
    untestable = [f for f in forms if v0[f"forget_{f}_{FORM_SCORES[f][0]}"] - unknown[f] < FORM_GAP]
    if untestable:
        lines += ["", "Not testable on this model (share —): " + "; ".join(
            f"{f.replace('_', ' ')} (the original scores {v0[f'forget_{f}_{FORM_SCORES[f][0]}']:.3f} on the facts it knows, "
            f"{unknown[f]:.3f} on those it does not)" for f in untestable)
            + f": in these forms it shows the facts no better than unknown ones (gap under {FORM_GAP}), so there is nothing "
            "for a method to remove there and form independence cannot be read from them."]
    return lines


def probes_section(original: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The recovery probes on real knowledge (``--probes``, first seed): per method each probe's value, the original's on the
    facts it does not know beside it; a value above that level by more than the probe's floor is bold (the probe finds
    more than a model that never knew the facts)."""
    res = original.get("results") or {}
    cols = [c for c in PROBE_COLUMNS if c[1] in ((res.get(c[0]) or {}).get("values") or {})]
    if not [c for c in cols if c[0] != "form_probe"]:
        return []
    ref = {c: (res[c[0]]["values"].get(c[2]) if c[2] else 0.0) for c in cols}
    lines = ["", "## Recovery probes (issue 24) on real knowledge", "",
             "The probes of `benchmarks/lm_attacks.py` with their real-knowledge templates (`lm.probes.KNOWLEDGE_*`: reverse "
             "query, synonym, cross-lingual and the indirect step need per-relation phrasing a real fact does not have and are "
             "left out; `lm_hidden_probe` needs an attribute many people share and does not apply). With no retrained oracle "
             "each probe runs the same attack on the original over the facts it does not know: that is the *unknown* row "
             "(for the excess columns, 0 by construction: they are the value minus it). **Bold**: above the unknown level "
             "by more than 0.05, i.e. the probe brings back more than a model that never knew the facts. The weight-level "
             "probes (4-bit quantisation, soft prompt) read a guard's bare weights; they and the in-context score decide "
             "the verdict (band: see above, ± the probe's floor), the prompt-level excesses are reported (a maximum "
             "over kinds, with no retrained seeds to calibrate it).", "",
             "| model | " + " | ".join(c[3] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    lines.append("| unknown facts (original) | " + " | ".join("—" if ref[c] is None or not c[2] else f"{ref[c]:.3f}" for c in cols) + " |")
    for name, rs in [("original (pretrained)", [original])] + list(runs.items()):
        vals = (rs[0].get("results") or {})
        cells = []
        for c in cols:
            v = ((vals.get(c[0]) or {}).get("values") or {}).get(c[1])
            if v is None or not math.isfinite(v):
                cells.append("—")
                continue
            level = ref[c] if c[2] else 0.0
            above = c[1] != "forget_gain_4bit" and level is not None and v - level > 0.05
            cells.append(f"**{v:.3f}**" if above else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    times = {c[0]: (original.get("metric_seconds") or {}).get(c[0]) for c in cols}
    later = [r for rs in runs.values() for r in rs if r.get("metric_seconds")]
    per_model = [sum(r["metric_seconds"].get(m, 0.0) for m in {c[0] for c in cols}) for r in later]
    lines += ["", "Probe seconds on the original (it also runs each attack on the unknown facts): "
              + ", ".join(f"{m} {t:.0f}" for m, t in times.items() if t is not None)
              + (f"; the probes on one unlearned model: {sum(per_model) / len(per_model) / 60:.1f} min on average" if per_model else "") + "."]
    return lines


def command_line(args: argparse.Namespace, knowledge: bool = False) -> str:
    """The benchmark's arguments that shape its numbers (not where it stores them), as a user would type them."""
    parts = ([f"--model {args.model}"] if knowledge else
             [f"--model {args.model}", f"--scale {args.scale}", "--forget " + " ".join(f"{f:g}" for f in fractions(args))]) + [f"--seeds {args.seeds}"]
    if args.retrain_seeds:
        parts.append(f"--retrain-seeds {args.retrain_seeds}")
    if set(args.methods) != set(default_methods()):
        parts.append("--methods " + " ".join(args.methods))
    if args.stop_at != ("none" if knowledge else "holdout"):
        parts.append(f"--stop-at {args.stop_at}")
    if getattr(args, "probes", False):
        parts.append("--probes")
    return " ".join(parts)


def is_retrain(runs: list[dict[str, Any]]) -> bool:
    return bool(runs) and runs[0]["method"]["name"] == "retrain"


def seed_values(runs: list[dict[str, Any]], metric: str, key: str) -> list[float]:
    return [v for v in (metric_value(r, metric, key) for r in runs) if v is not None]


def mean_of(runs: list[dict[str, Any]], metric: str, key: str) -> float | None:
    vals = seed_values(runs, metric, key)
    return sum(vals) / len(vals) if vals else None


def agg(vals: list[float], fmt: str = "{:.3f}") -> str:
    """One value, or the mean ± sd over seeds; — when there is none."""
    import numpy as np

    if not vals:
        return "—"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return f"{fmt.format(float(np.mean(vals)))} ± {fmt.format(float(np.std(vals, ddof=1)))}"


def p_cell(vals: list[float]) -> str:
    """A p-value, or over seeds its median [min, max] (p-values are not averaged)."""
    import numpy as np

    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.2e}"
    return f"{float(np.median(vals)):.2e} [{min(vals):.1e}, {max(vals):.1e}]"


def verdict_text(runs: list[dict[str, Any]]) -> str:
    """The verdict over seeds: agreement, borderline count and every other failing aspect (``MethodRow.verdict``)."""
    from collections import Counter

    from unlearnkit.runs.summary import MethodRow

    return MethodRow(runs[0]["method"]["name"], runs[0]["method"].get("kind", ""), runs,
                     verdicts=Counter(r["verdict"]["label"] for r in runs)).verdict


def margin_text(runs: list[dict[str, Any]]) -> str:
    """Each seed's verdict margin (bold when borderline)."""
    from unlearnkit.verdict import Verdict

    out = []
    for r in runs:
        v = Verdict.from_json(r["verdict"])
        out.append("—" if v.margin is None else (f"**{v.margin:.2f}**" if v.borderline else f"{v.margin:.2f}"))
    return ", ".join(out)


def task_section(task_rec: dict[str, Any], original: dict[str, Any], runs: dict[str, list[dict[str, Any]]], *, several: bool) -> list[str]:
    """One forget setting: its task line and the per-method table (one row per method, over its seeds)."""
    splits = task_rec["task"]["splits"]
    ref = next((r for r in runs.values() if is_retrain(r)), None)
    costs = task_rec["references"].get("costs", {})
    ref_cpu = mean_of_costs(ref or [], "cpu_seconds")
    if ref_cpu is None:  # no retrain row: the reference retrains' fine-tunes, as measured when they were trained
        ref_cpu = mean_of_costs([{"cost": c} for c in costs.get("retrain", [])], "cpu_seconds")
    ref_utility = mean_of(ref or [], "model_utility", "model_utility")
    lines = ([f"## Forget {task_rec['label']}", ""] if several else []) + [
        f"Task: {task_rec['label']} — forget {splits['forget']['n']} / retain {splits['retain']['n']} question-answer items, "
        f"holdout {splits['test']['n']}{retain_eval_text(splits)}; reference costs: {fmt_costs(costs)}.", "",
        "| method | forget prob | retain prob | KS stat | forget quality (p) | model utility | utility × retrain | Min-K AUC | "
        "privleak | steps | wall s | CPU × retrain | peak MB | guard overhead | verdict | margin |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in [("original (target)", [original])] + list(runs.items()):
        utility = mean_of(rs, "model_utility", "model_utility")
        cpu = mean_of_costs(rs, "cpu_seconds")
        lines.append("| " + " | ".join([
            name, agg(seed_values(rs, "answer_prob", "forget")), agg(seed_values(rs, "answer_prob", "retain")),
            agg(seed_values(rs, "forget_quality", "statistic")), p_cell(seed_values(rs, "forget_quality", "p_value")),
            agg(seed_values(rs, "model_utility", "model_utility")), ratio(utility, ref_utility, "{:.2f}"),
            agg(seed_values(rs, "min_k", "auc")), agg(seed_values(rs, "privleak", "privleak"), "{:.1f}"),
            ", ".join(steps_cell(r) for r in rs), agg([r["cost"]["wall_seconds"] for r in rs if r.get("cost")], "{:.1f}"),
            ratio(cpu, ref_cpu, "{:.3f}"), agg([r["cost"]["peak_memory_mb"] for r in rs if r.get("cost")], "{:.0f}"),
            overhead_cell(rs[0]), verdict_text(rs), margin_text(rs)]) + " |")
    return lines + [""]


def mean_of_costs(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r["cost"][key] for r in runs if r.get("cost") and r["cost"].get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def trend_section(tasks: list[tuple[dict[str, Any], dict[str, Any], dict[str, list[dict[str, Any]]]]]) -> list[str]:
    """Forget quality against forget-set size, measured: each method unlearned and tested at each size (its seeds)."""
    sizes = [f"{t['label']} (n = {t['task']['splits']['forget']['n']})" for t, _, _ in tasks]
    lines = ["## Forget quality against forget-set size (measured)", "",
             "Each size is its own forget set, references and unlearning runs (not one run's statistic re-evaluated at other "
             "sizes). Per method and size: the KS statistic D (mean ± sd over seeds), the p-value (median [min, max] over seeds) "
             "and the verdict agreement. With more forget items the same distance D gives a smaller p: a method whose p "
             "falls with size while retraining's stays high is distinguishable from retraining, given enough items.", "",
             "| method | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
    names = ["original (target)"] + [n for n in tasks[0][2] if all(n in t[2] for t in tasks)]
    for name in names:
        cells = []
        for _, original, runs in tasks:
            rs = [original] if name == "original (target)" else runs[name]
            cells.append(f"D {agg(seed_values(rs, 'forget_quality', 'statistic'))}; p {p_cell(seed_values(rs, 'forget_quality', 'p_value'))}; "
                         f"{verdict_text(rs)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def tofu_sizes_section(original: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One forget size only: the p-value each run's D would have at TOFU's sizes (a re-evaluation, not a measurement)."""
    lines = ["## Forget quality at other sizes (re-evaluated, not measured)", "",
             "The KS p-value depends on the number of forget items as much as on the model. Below: each run's KS statistic "
             "D on its n forget items, its p-value, and the p-value the same D would have at TOFU's forget01/05/10 sizes "
             "(40 / 200 / 400 items; scipy's asymptotic kstwo; first seed). This re-evaluates one statistic; the measured trend "
             "comes from runs at each size (`--forget 0.01 0.05 0.1`).", "",
             "| method | n | KS stat | p (n) | p at 40 (1%) | p at 200 (5%) | p at 400 (10%) |", "|---|---|---|---|---|---|---|"]
    for name, run in [("original (target)", original)] + [(n, rs[0]) for n, rs in runs.items()]:
        n = cell(run, "forget_quality", "n", "{:.0f}")
        lines.append("| " + " | ".join([name, n, cell(run, "forget_quality", "statistic"), cell(run, "forget_quality", "p_value", "{:.2e}")]
                                        + [cell(run, "forget_quality", f"p_value_at_n{k}", "{:.2e}") for k in (40, 200, 400)]) + " |")
    return lines + [""]


def retain_eval_text(splits: dict[str, Any]) -> str:
    sub = splits.get("probe:retain_eval")
    return "" if sub is None else f"; retain-side metrics score the fixed evaluation subset of {sub['n']} retain items (the first retained profiles)"


def stop_text(stop_at: str, original: dict[str, Any]) -> str:
    if stop_at == "none":
        return "Every method runs its full budget (`--stop-at none`)."
    return ("Every method's budget is a maximum (`--stop-at holdout`): it stops after the first step at which its forget answer "
            f"probability is at or below the holdout profiles' on the target model ({cell(original, 'answer_prob', 'test')}; "
            "Jang et al.'s forgetting threshold, no retrained model consulted), and keeps that step's weights or, when the "
            "step before was nearer the level, that step's. Steps marked * stopped there (a→b: a steps run, the weights "
            "after step b kept); the others ran their whole budget without reaching it.")


def steps_cell(run: dict[str, Any]) -> str:
    info = run.get("unlearn_info") or {}
    if "train" not in info:
        return "—"
    stop = info.get("early_stop") or {}
    if not stop.get("fired"):
        return str(info["train"]["steps"])
    return f"{info['train']['steps']}*" + ("" if stop.get("restored") is None else f"→{stop['restored'] + 1}")


def fmt_costs(costs: dict[str, Any]) -> str:
    parts = []
    for kind, items in costs.items():
        if items:
            parts.append(f"{kind} {items[0]['wall_seconds'] / 60:.1f} min")
    return ", ".join(parts) or "cached"


if __name__ == "__main__":
    sys.exit(main())
