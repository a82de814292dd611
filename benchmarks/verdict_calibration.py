"""Benchmark: is the verdict calibrated? Retrain N fresh seeds (never used for the noise floor) and
count how often a perfect unlearner — retraining itself — is *not* called "removed" (the false-alarm
rate, target ≤ 5%), with a Clopper–Pearson 95% interval; check that the original model is called
"not forgotten"; and repeat for a one-class forget set.

    python benchmarks/verdict_calibration.py                  # sklearn digits, 50 fresh seeds (~3 min)
    python benchmarks/verdict_calibration.py --fresh 100 --retrain-seeds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", type=int, default=50, help="fresh retrain seeds to judge")
    p.add_argument("--retrain-seeds", type=int, default=3, help="R, retrained seeds behind the noise floor")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args(argv)

    import numpy as np
    from scipy.stats import binomtest
    from tqdm.auto import tqdm

    from unlearnkit.adapters import get_adapter
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.evaluation import EvalContext, assess
    from unlearnkit.models import build_model
    from unlearnkit.runs.references import build_references
    from unlearnkit.train import train_model
    from unlearnkit.seeding import derive_seed
    from unlearnkit.train import TrainConfig

    source = load_dataset("digits")
    config = TrainConfig(epochs=args.epochs, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine")
    print(f"verdict calibration on sklearn digits: MLP 64-64, R = {args.retrain_seeds} retrained seeds for the band, "
          f"{args.fresh} fresh retrain seeds judged\n")
    status = 0
    for spec in (ForgetSpec("random", fraction=0.1), ForgetSpec("classes", classes=(3,))):
        t0 = time.perf_counter()
        task = make_task("digits", source.train, source.test, spec, np.random.default_rng(0), n_classes=10)
        refs = build_references(task, lambda: build_model("mlp", source.input_shape, 10, hidden=(64, 64)), config,
                                retrain_seeds=args.retrain_seeds)
        ctx = EvalContext(task, get_adapter(task))
        original = assess(refs.original, task, refs, ctx=ctx).verdict.label
        labels: Counter[str] = Counter()
        for i in tqdm(range(args.fresh), desc=spec.label(), disable=not sys.stderr.isatty()):
            seed = derive_seed("fresh-calibration-seed", i) % 2**31
            model, _, _ = train_model(refs.fresh_model(seed, by="benchmark"), task.retain, config, adapter=get_adapter(task), seed=seed)
            labels[assess(model, task, refs, ctx=ctx).verdict.label] += 1
        alarms = args.fresh - labels["removed"]
        ci = binomtest(alarms, args.fresh).proportion_ci(0.95, method="exact")
        print(f"forget set {spec.label():10s}: false-alarm rate {alarms}/{args.fresh} = {alarms / args.fresh:.3f} "
              f"(95% CI {ci.low:.3f}–{ci.high:.3f}); verdicts of fresh retrains {dict(labels)}; "
              f"original model: {original}  [{time.perf_counter() - t0:.0f}s]")
        if alarms / args.fresh > 0.05 or original != "not forgotten":
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
