"""Benchmark: DP2Unlearning next to non-private training and retraining, with one recipe. Prints, per ε, the test
accuracy of the DP base, of the served model (base + fine-tune on all data) and after deleting a random 10% forget set,
the forget-set accuracy after deletion, and the cost of that deletion (example passes, wall seconds) as a ratio to
retraining from scratch on the retain set, measured in the same process; then the accuracy after deletion for several
fine-tune budgets (fractions of the recipe's epochs) restarted from the same DP bases.

    python benchmarks/dp2unlearning.py                                   # digits, MLP 64-64, 40 epochs, 3 seeds (~1 min)
    python benchmarks/dp2unlearning.py --dataset fashion_mnist --train-subset 12000 --seeds 2   # the quickstart's recipe
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECIPES = {  # dataset -> (hidden layers, training recipe): the test suite's digits recipe, the quickstart's Fashion-MNIST one
    "digits": ((64, 64), {"epochs": 40, "batch_size": 64, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"}),
    "fashion_mnist": ((256, 256), {"epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}),
}


def stat(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(RECIPES), default="digits")
    p.add_argument("--train-subset", type=int, default=None, help="Fashion-MNIST: train on this many examples")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="fine-tune budgets, fractions of the recipe's epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spin contention on a shared machine)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)

    from unlearnkit.adapters import get_adapter
    from unlearnkit.cost import CostMeter
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.exact.dp import finetune_config
    from unlearnkit.methods import build_method
    from unlearnkit.models import build_model
    from unlearnkit.references import References
    from unlearnkit.train import TrainConfig, train_model

    t_start = time.perf_counter()
    params = {"train_subset": args.train_subset} if args.train_subset and args.dataset != "digits" else {}
    source = load_dataset(args.dataset, **params)
    task = make_task(args.dataset, source.train, source.test, ForgetSpec("random", fraction=0.1), np.random.default_rng(0),
                     n_classes=source.n_classes)
    hidden, recipe_dict = RECIPES[args.dataset]
    recipe = TrainConfig(**recipe_dict)
    refs = References(train_config=recipe, model_factory=lambda: build_model("mlp", source.input_shape, source.n_classes, hidden=hidden))
    adapter = get_adapter(task)

    def acc(model: torch.nn.Module, split) -> float:  # noqa: ANN001
        out = adapter.outputs(model, split, device=args.device)
        return float((out["logits"].argmax(1) == out["labels"]).mean())

    rows: dict[str, dict[str, list[float]]] = {}

    def add(row: str, key: str, value: float) -> None:
        rows.setdefault(row, {}).setdefault(key, []).append(value)

    for seed in range(args.seeds):
        original, _, _ = train_model(refs.fresh_model(seed, by="benchmark"), task.train, recipe, adapter=adapter, seed=seed, device=args.device)
        add("non-private", "test", acc(original, task.test))
        with CostMeter(args.device) as meter:
            retrained, _, _ = train_model(refs.fresh_model(seed, by="benchmark"), task.retain, recipe, adapter=adapter, seed=seed, device=args.device)
        add("retrain", "test", acc(retrained, task.test))
        add("retrain", "forget", acc(retrained, task.forget))
        add("retrain", "passes", meter.cost.example_passes)
        add("retrain", "wall", meter.cost.wall_seconds)
        add("retrain", "cpu", meter.cost.cpu_seconds)
        for f in args.fractions:  # the control: the fine-tune's budget from a fresh initialisation instead of the DP base
            short, _, _ = train_model(refs.fresh_model(seed, by="benchmark"), task.retain, finetune_config(recipe, f * float(recipe.epochs or 0)),
                                      adapter=adapter, seed=seed, device=args.device)
            add("fresh init", f"ft{f:g}", acc(short, task.test))
        for eps in args.epsilons:
            t0 = time.perf_counter()
            served = build_method("dp2unlearning", {"epsilon": eps}).build(task, refs, seed=seed, device=args.device, progress=False)
            row = f"eps={eps:g}"
            add(row, "build_wall", time.perf_counter() - t0)
            add(row, "eps_spent", served.account.epsilon)
            add(row, "sigma", served.account.noise_multiplier)
            add(row, "base_test", acc(served.base_model(), task.test))
            add(row, "served_test", acc(served, task.test))
            receipt = served.delete(task.forget.ids)
            add(row, "test", acc(served, task.test))
            add(row, "forget", acc(served, task.forget))
            add(row, "passes", receipt.cost.example_passes)
            add(row, "wall", receipt.cost.wall_seconds)
            add(row, "cpu", receipt.cost.cpu_seconds)
            base = served.base_model()
            for f in args.fractions:
                tuned, _, _ = train_model(base, task.retain, finetune_config(recipe, f * float(recipe.epochs or 0)), adapter=adapter,
                                          seed=served.finetune_seed, device=args.device)
                add(row, f"ft{f:g}", acc(tuned, task.test))
                base = served.base_model()

    n = len(task.train)
    print(f"# DP2Unlearning on {args.dataset} (n_train={n}, forget {len(task.forget)} random, MLP {'-'.join(map(str, hidden))}, "
          f"{recipe.epochs:g} epochs {recipe.optimizer} lr {recipe.lr:g} batch {recipe.batch_size} {recipe.schedule}; DP-SGD with the "
          f"same recipe, clip 1.0, delta {served.account.delta:g}, accountant rdp; fine-tune {recipe.epochs / 2:g} epochs; "
          f"{args.seeds} seed(s), device {args.device})\n")
    ref = rows["retrain"]
    print(f"non-private (all data): test {stat(rows['non-private']['test'])}")
    print(f"retrain (retain only):  test {stat(ref['test'])}, forget {stat(ref['forget'])}, passes {stat(ref['passes'], 0)}, "
          f"wall {stat(ref['wall'], 2)} s, CPU {stat(ref['cpu'], 2)} s\n")
    print("| ε (spent) | σ | DP base test | served test | after deletion test | after deletion forget | deletion passes × retrain | "
          "deletion CPU × retrain | deletion wall × retrain | build wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for eps in args.epsilons:
        r = rows[f"eps={eps:g}"]
        pr = [a / b for a, b in zip(r["passes"], ref["passes"])]
        wr = [a / b for a, b in zip(r["wall"], ref["wall"])]
        cr = [a / b for a, b in zip(r["cpu"], ref["cpu"])]
        print(f"| {eps:g} ({stat(r['eps_spent'])}) | {stat(r['sigma'])} | {stat(r['base_test'])} | {stat(r['served_test'])} | {stat(r['test'])} | "
              f"{stat(r['forget'])} | {stat(pr)} | {stat(cr, 2)} | {stat(wr, 2)} | {stat(r['build_wall'], 1)} |")
    print("\nFine-tune budget on the retain set, from the DP base or (control) from a fresh initialisation: test accuracy\n")
    print("| start | " + " | ".join(f"{f:g} × epochs" for f in args.fractions) + " |")
    print("|---|" + "---|" * len(args.fractions))
    for row in [f"eps={eps:g}" for eps in args.epsilons] + ["fresh init"]:
        label = f"DP base ε={row[4:]}" if row.startswith("eps=") else row
        print(f"| {label} | " + " | ".join(stat(rows[row][f"ft{f:g}"]) for f in args.fractions) + " |")
    print(f"\n(wall time {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
