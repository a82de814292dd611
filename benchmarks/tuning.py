"""Benchmark: fair tuning (issue 26). Each method is tuned with `unlearnkit tune`'s machinery on a validation forget
set drawn from the retain data (never the real one), per forget setting (random 10%, class 0) of Fashion-MNIST (MLP);
then, in one experiment per setting, `retrain`, every method's default setting and its tuned setting run side by side
on the real forget set over several seeds. Writes docs/results/tuning.md: per method default vs tuned (verdict, gap,
cost), the tuned settings, each study's Pareto front on the validation set, and whether the issue's goal was reached
(some method "removed" on every seed at <= 3% of retrain wall time, measured in the same run).

    python benchmarks/tuning.py                                   # reduced scale (12,000 training examples, 10 trials)
    python benchmarks/tuning.py --train-subset 0 --trials 30      # the full Fashion-MNIST training set
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def tunable() -> tuple[list[str], dict[str, str]]:
    """The registered classifier methods that declare a search space (the default --methods), and those left out with why."""
    from unlearnkit.registry import METHODS
    from unlearnkit.searchspace import declared_space

    names, left_out = [], {}
    for name in METHODS.names():
        cls = METHODS.get(name)
        if "classifier" not in getattr(cls, "modalities", ("classifier",)):
            continue
        if declared_space(cls, "classifier") is not None:
            names.append(name)
        elif getattr(cls, "kind", None) == "exact":
            left_out[name] = EXACT
        elif getattr(cls, "wraps", None):
            left_out[name] = "declares no classifier search space (a wrapper: tune its inner method, then wrap it)"
        else:
            left_out[name] = "declares no classifier search space"
    return names, left_out


EXACT = ("exact or certified by construction (their deletion retrains, downdates or refits without the data, so there is no "
         "band to tune towards); what they trade — shard layout, frozen backbone, privacy budget — against accuracy and build "
         "cost is measured in docs/results/deletion.md")


def not_tuned(left_out: dict[str, str]) -> str:
    """The sentence listing the methods the benchmark leaves out, the exact regimes grouped."""
    exact = [m for m, why in left_out.items() if why == EXACT]
    parts = ([f"the exact regimes {', '.join(f'`{m}`' for m in exact)}: {EXACT}"] if exact else []) + [
        f"`{m}`: {why}" for m, why in left_out.items() if why != EXACT]
    return "Not tuned: " + "; ".join(parts) + "."

GOAL_WALL = 0.03  # the budget: at most 3% of retraining's wall time


def base_spec(args: argparse.Namespace) -> dict[str, Any]:
    from unlearnkit.experiment import load_experiment

    quick = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    return {
        "name": "tuning_benchmark",
        "description": "benchmarks/tuning.py",
        "dataset": {"name": args.dataset, "params": {"train_subset": args.train_subset} if args.train_subset and args.dataset == "fashion_mnist" else {}},
        "forget": [{"kind": "random", "fraction": 0.1}, {"kind": "classes", "classes": [0]}],
        "model": quick.model.to_dict(),
        "train": quick.train.to_dict(),
        "references": {"retrain_seeds": args.retrain_seeds},
        "methods": ["retrain"],
        "metrics": [m.to_dict() for m in quick.metrics_for("classifier")],
        "seeds": list(range(args.seeds)),
    }


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def row_cells(row: Any) -> dict[str, Any]:
    gap = row.stats.get("avg gap")
    return {"verdict": row.verdict, "label": row.verdict_label, "removed_all": set(row.verdicts) == {"removed"},
            "gap": None if gap is None else f"{gap[0]:.3f}±{gap[1]:.3f}", "passes": row.ratios.get("example_passes"),
            "wall": row.ratios.get("wall")}


def limits(methods: list[str], studies: dict[str, list[dict[str, Any]]], i: int, rows: dict[str, Any]) -> list[str]:
    """What stands between the methods and the goal on one forget setting, as measured: tuned settings inside the band on
    the validation set that are not "removed" on the real forget set (the validation-to-real transfer), and each method's
    cheapest validation trial inside the band, in example passes × the validation retrain's (the cost floor)."""
    transfer, cheapest = [], []
    for m in methods:
        study, row = studies[m][i], rows.get(m, {})
        chosen, tuned = study["chosen"], row.get("tuned")
        if chosen is not None and chosen["band_distance"] == 0 and tuned and not tuned["removed_all"]:
            transfer.append(f"{m} ({tuned['verdict']})")
        inside = [t["example_passes"] for t in study["trials"] if t["state"] == "complete" and t["band_distance"] == 0]
        unit = (study.get("validation") or {}).get("retrain_example_passes")
        if inside and unit:
            cheapest.append((min(inside) / unit, f"{m} {min(inside) / unit:.3f}"))
    out = ["What limits it here, measured:", ""]
    out.append("- Transfer from the validation forget set to the real one: " + (
        "; ".join(transfer) + " — inside every band on the validation set, not \"removed\" on every seed of the real one."
        if transfer else "no tuned setting that was inside every band on the validation set failed on the real one."))
    out.append("- Cost floor: the cheapest validation trial inside every band, example passes × the validation retrain's: " + (
        ", ".join(c for _, c in sorted(cheapest)) + f" (the goal: ≤ {GOAL_WALL:g} of retrain wall time)." if cheapest else
        "no trial of any method came inside every band on the validation set."))
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None, help="comma-separated (default: every classifier method that declares a search space)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--retrain-seeds", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=12000, help="training examples (0: all 60,000)")
    p.add_argument("--battery", choices=("cheap", "strong"), default="cheap",
                   help="the final evaluation's metrics: the quickstart battery, or plus every strong attack (LiRA, U-LiRA, "
                        "label-only, MIA-NN, ε-score, KLoM, hidden probe, privacy score)")
    p.add_argument("--shadows", type=int, default=8, help="shadow models of LiRA / U-LiRA / label-only (--battery strong)")
    p.add_argument("--ensemble", type=int, default=8, help="models per ensemble of ε-score and KLoM (--battery strong)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (the benchmark), or digits for a smoke run")
    p.add_argument("--store", default=None, help="run store (default: a temporary folder)")
    p.add_argument("--refs-cache", default=str(ROOT / "unlearnkit-runs" / "refs"))
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "tuning.md"))
    args = p.parse_args(argv)

    from unlearnkit.evaluation import strong_battery
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs import Store
    from unlearnkit.runs.runner import run_experiment
    from unlearnkit.runs.summary import summarize
    from unlearnkit.tuning import PROTOCOL, Tuner

    methods, left_out = tunable()
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    spec = base_spec(args)
    exp = Experiment.from_dict(spec)
    # with --battery strong the final runs are judged by every attack of benchmarks/attacks.py (tuning trials always use the
    # quickstart battery: the strong tiers per trial would cost more than the study)
    final_metrics = spec["metrics"] if args.battery == "cheap" else strong_battery(args.shadows, args.ensemble)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="uk-tune-bench-") as tmp:
        store = Store(args.store or tmp, refs_root=args.refs_cache)
        t0 = time.perf_counter()
        studies: dict[str, list[dict[str, Any]]] = {}
        tuning_seconds: dict[str, float] = {}
        for m in methods:
            t = time.perf_counter()
            result = Tuner(exp, store, m, trials=args.trials, seed=0, device=args.device, progress=False, log=log, evaluate=False).run()
            studies[m] = result.studies
            tuning_seconds[m] = time.perf_counter() - t
            log(f"tuned {m} in {tuning_seconds[m]:.0f} s")
        body, goal_hits, summaries_json = [], [], {}
        for i, forget in enumerate(spec["forget"]):
            entries: list[dict[str, Any]] = [{"name": "retrain", "params": {}}]
            which: dict[str, tuple[int, int | None]] = {}
            applicable = [m for m in methods if not studies[m][i].get("not_applicable")]
            for m in applicable:
                chosen = studies[m][i]["chosen"]
                entries.append({"name": m, "params": {}})
                default_at = len(entries) - 1
                tuned_at = None
                if chosen is not None and chosen["params"]:
                    entries.append({"name": m, "params": chosen["params"]})
                    tuned_at = len(entries) - 1
                which[m] = (default_at, tuned_at)
            final = Experiment.from_dict({**spec, "name": f"tuning_benchmark {i}", "forget": [forget], "methods": entries,
                                          "metrics": final_metrics})
            record = run_experiment(final, store, device=args.device, progress=False, log=log)
            store.save_experiment({**store.load_experiment(record["exp_id"]), "tuning": [studies[m][i] for m in applicable]})
            labels = final.method_labels()
            summary = summarize(store, record)[0]
            rows = {r.method: r for r in summary.rows}
            retrain = rows.get("retrain")
            body += [f"## Forget set: {summary.label}", "",
                     f"`retrain`: {retrain.verdict if retrain else '—'}, {fmt(retrain.cost.wall_seconds if retrain and retrain.cost else None, 1)} s "
                     "wall per run (the cost unit below). *passes* and *wall* are ratios to it, measured in this run; *gap* is the "
                     "average accuracy gap to the retrained references (mean ± sd over seeds); *val. distance* is the chosen "
                     "setting's distance to the retrain band on the validation forget set (in band half-widths, 0 = inside).", "",
                     "| method | default verdict | default gap | default passes | default wall | tuned verdict | tuned gap | tuned passes "
                     "| tuned wall | tuned setting | val. distance | trials (done) |",
                     "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            summaries_json[summary.label] = {}
            for m in methods:
                if m not in which:
                    body.append(f"| {m} | not applicable: it {studies[m][i]['not_applicable']} |" + " |" * 10)
                    continue
                d_at, t_at = which[m]
                d = row_cells(rows[labels[d_at]]) if labels[d_at] in rows else None
                tu = row_cells(rows[labels[t_at]]) if t_at is not None and labels[t_at] in rows else None
                study = studies[m][i]
                chosen = study["chosen"]
                done = sum(t["state"] == "complete" for t in study["trials"])
                cells = [m]
                cells += [d["verdict"], d["gap"] or "—", fmt(d["passes"]), fmt(d["wall"])] if d else ["—"] * 4
                cells += [tu["verdict"], tu["gap"] or "—", fmt(tu["passes"]), fmt(tu["wall"])] if tu else ["(as default)"] + ["—"] * 3
                cells += [short(chosen["params"]) if chosen else "none completed", fmt(chosen["band_distance"] if chosen else None, 2),
                          f"{len(study['trials'])} ({done})"]
                body.append("| " + " | ".join(cells) + " |")
                if tu and tu["removed_all"] and tu["wall"] is not None and tu["wall"] <= GOAL_WALL:
                    goal_hits.append(f"{m} on {summary.label} (wall × retrain {tu['wall']:.3f})")
                summaries_json[summary.label][m] = {"default": d, "tuned": tu, "chosen": chosen}
            body += ["", f"Original model: verdict {summary.original['verdict']['label'] if summary.original else '—'}.", ""]
            body += limits(applicable, studies, i, summaries_json[summary.label]) + [
                     "Pareto fronts on the validation forget set (distance to the retrain band in half-widths, example passes, "
                     "validation verdict, setting):", ""]
            for m in applicable:
                study = studies[m][i]
                front = sorted((t for t in study["trials"] if t["number"] in study["pareto"]), key=lambda t: t["example_passes"])
                body.append(f"- **{m}** ({study['validation']['label']}): " + "; ".join(
                    f"{t['band_distance']:.2f} at {t['example_passes']:,} passes ({t['verdict']}; {short(t['params'])})" for t in front))
            body.append("")
        elapsed = time.perf_counter() - t0

    if args.dataset != "fashion_mnist":
        scale = f"dataset {args.dataset}: a smoke run, not the benchmark"
    else:
        scale = f"Fashion-MNIST, {args.train_subset:,} training examples" if args.train_subset else "Fashion-MNIST, all 60,000 training examples"
    reduced = bool(args.train_subset) or args.trials < 20
    header = [
        f"MLP with hidden layers 256-256 ({scale}), the quickstart training recipe; {args.retrain_seeds} retrained reference seeds; "
        f"{args.trials} trials per method and setting (Optuna multi-objective TPE, sampler seed 0); the default and tuned settings "
        f"then run on the real forget set over {args.seeds} seed(s); tuning trials are judged on the standard classifier battery "
        f"(accuracy, retrain gap, threshold MIA, MIA efficacy, relearning, noise floor), the final runs on "
        + ("the same battery" if args.battery == "cheap" else
           f"the full strong battery (plus privacy score, hidden probe, MIA-NN, LiRA / U-LiRA / label-only with {args.shadows} "
           f"shadows, ε-score and KLoM with ensembles of {args.ensemble})") + f"; device {args.device}; total wall time {elapsed / 60:.1f} min "
        f"(tuning: {', '.join(f'{m} {s / 60:.1f}' for m, s in tuning_seconds.items())} min).",
        "",
    ]
    if reduced:
        header += ["**Reduced scale**: a subset of the training data and/or few trials, so that it runs on a shared 2-core CPU (the "
                   "total wall time above includes the machine's other load). The full-scale run is "
                   "`python benchmarks/tuning.py --train-subset 0 --trials 30 --battery strong`."
                   + (" The strong tiers (LiRA/U-LiRA, ε-score, KLoM) were not run; relearning is the strong evidence here."
                      if args.battery == "cheap" else ""), ""]
    if args.methods is None:
        header += [not_tuned(left_out), ""]
    header += [PROTOCOL, "",
               "Objectives, both minimised: the largest distance of any deciding evidence to its retrain band, in band half-widths "
               "(0 when every evidence is inside: \"removed\" on the validation set), and the method's example passes "
               "(machine-independent work). The chosen setting is the completed trial nearest the band, then the cheapest.", "",
               "## The goal (issue 26)", "",
               ("Reached: " + "; ".join(goal_hits) + f" — \"removed\" on every seed at ≤ {GOAL_WALL:.0%} of retrain wall time.")
               if goal_hits else
               (f"Not reached: no tuned method came out \"removed\" on every seed at ≤ {GOAL_WALL:.0%} of retrain wall time in this "
                "run. The measured Pareto fronts (below, per setting) show how close each method gets on the validation set and "
                "at what cost."), ""]
    from unlearnkit.io import write_generated

    write_generated(args.output, "Fair hyperparameter tuning on Fashion-MNIST", "tuning.py", argv if argv is not None else sys.argv[1:],
                    header + body)
    print(json.dumps({"goal": goal_hits, "elapsed_min": round(elapsed / 60, 1), "rows": summaries_json}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
