"""Benchmark: what each piece of evidence costs, relative to one retraining, measured side by side in this run.

Tier 0 needs only the model's outputs; tier 1 the retrained references (noise floor, relearning, probes); tier 2
shadow models (LiRA, U-LiRA, label-only); tier 3 ensembles of retrained and unlearned models (ε-score, KLoM).
The first call of a tier-2/3 metric trains its shadows/ensembles (cached afterwards, per task), so both the first
and a repeated call are timed. The method under test is `finetune` (its runs are part of U-LiRA, ε-score, KLoM).

    python benchmarks/evaluation_cost.py                     # Fashion-MNIST subset of 12k train / 3k test (~3 min on 2 cores)
    python benchmarks/evaluation_cost.py --train-subset 6000 --shadows 8 --ensemble 8 --output ''

The output (everything printed) also goes to docs/results/evaluation_cost.md (generated; do not edit).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIERS = (
    (0, ["accuracy", "threshold_mia", "mia_efficacy", "nomus"]),
    (1, ["retrain_gap", "relearn", "hidden_probe", "privacy_score", "noise_floor"]),
    (2, ["lira", "u_lira", "label_only"]),
    (3, ["epsilon_score", "klom"]),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-subset", type=int, default=12000)
    p.add_argument("--test-subset", type=int, default=3000)
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--ensemble", type=int, default=16)
    p.add_argument("--epochs", type=float, default=20.0, help="training budget of the original, retrained and shadow models")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "evaluation_cost.md"), help="markdown copy ('' for none)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from unlearnkit import METRICS
    from unlearnkit.adapters import get_adapter
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.evaluation import EvalContext, build_metric
    from unlearnkit.io import Transcript, write_generated
    from unlearnkit.methods import build_method
    from unlearnkit.models import build_model
    from unlearnkit.runs.references import build_references
    from unlearnkit.train import train_model
    from unlearnkit.runs.runner import cpu_model
    from unlearnkit.train import TrainConfig

    source = load_dataset("fashion_mnist", train_subset=args.train_subset, test_subset=args.test_subset)
    task = make_task("fashion_mnist", source.train, source.test, ForgetSpec("random", fraction=0.1), np.random.default_rng(0), n_classes=10)
    config = TrainConfig(epochs=args.epochs, batch_size=128, optimizer="adam", lr=1e-3, schedule="cosine")

    def factory():  # noqa: ANN202
        return build_model("mlp", source.input_shape, 10, hidden=(256, 256))

    refs = build_references(task, factory, config, retrain_seeds=3, device=args.device)
    _, retrain_cost, _ = train_model(refs.fresh_model(99, by="benchmark"), task.retain, config, adapter=get_adapter(task), seed=99,
                                     device=args.device)
    method = build_method("finetune")
    model = method.unlearn(copy.deepcopy(refs.original), task, refs, rng=np.random.default_rng(0), device=args.device).model
    ctx = EvalContext(task, get_adapter(task), device=args.device, method=method)
    sizes = {"lira": {"n_shadows": args.shadows}, "u_lira": {"n_shadows": args.shadows}, "label_only": {"n_shadows": args.shadows},
             "epsilon_score": {"n_models": args.ensemble}, "klom": {"n_models": args.ensemble}}
    ctx.battery = [build_metric(n, sizes.get(n)) for _, names in TIERS for n in names if n in METRICS]
    out = Transcript()
    say = out.say
    say(f"evaluation_cost: Fashion-MNIST {len(task.train)} train / {len(task.test)} test, MLP 784-256-256-10, epochs {args.epochs:g}, "
        f"{args.shadows} shadows, ensembles of {args.ensemble}, method under test finetune; {torch.get_num_threads()} threads on "
        f"{cpu_model()}; one retraining = {retrain_cost.wall_seconds:.1f} s ({retrain_cost.optimizer_steps} steps)")
    say()
    say("| tier | metric | first call (s) | × retrain | again (s) | × retrain |")
    say("|---|---|---|---|---|---|")
    totals: dict[int, float] = {}
    for tier, names in TIERS:
        for name in names:
            if name not in METRICS:
                say(f"| {tier} | {name} | not registered | | | |")
                continue
            metric = build_metric(name, sizes.get(name))
            t0 = time.perf_counter()
            metric.compute(model, task, refs, ctx)
            first = time.perf_counter() - t0
            ctx._outputs.clear()  # re-evaluate outputs too, but keep trained shadows/ensembles (their cache is ctx.shared)
            t0 = time.perf_counter()
            metric.compute(model, task, refs, ctx)
            again = time.perf_counter() - t0
            totals[tier] = totals.get(tier, 0.0) + first
            say(f"| {tier} | {name} | {first:.3f} | {first / retrain_cost.wall_seconds:.3f} | {again:.3f} | "
                f"{again / retrain_cost.wall_seconds:.3f} |")
    say()
    say("First calls by tier, summed (lira trains the shadows that u_lira then unlearns; epsilon_score trains two retrained "
        "ensembles and unlearns the original N times; klom reuses those two ensembles and trains and unlearns N originals): " + ", ".join(
        f"tier {tier} {total:.1f} s = {total / retrain_cost.wall_seconds:.2f}× a retraining" for tier, total in totals.items()) + ".")
    if args.output:
        write_generated(args.output, "What each piece of evidence costs, relative to one retraining", "evaluation_cost.py",
                        sys.argv[1:] if argv is None else argv, out.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
