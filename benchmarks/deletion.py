"""Benchmark: exact unlearning and request streams, measured side by side in one run (→ docs/results/deletion.md).

Five sections, each timed against retraining on the same machine in the same process:

- sisa:   SISA (S shards × R slices) on Fashion-MNIST, MLP 256-256: mean cost of single-example deletions applied one
          after another, as a fraction of a full (monolithic) retrain (goal ≤ 1/S), and the test accuracy of the shard
          ensemble (vote and mean) next to the monolithic model: the price of sharding. For every S given.
- s3t:    S3T vs SISA at the same S and R, deleting the same single examples one after another: served test accuracy
          after 1, 2, 4 and 8 deletions and the cost of each deletion.
- acu:    ACU (ridge head on a frozen backbone trained on a public 20%) on Fashion-MNIST features: latency of sequential
          requests (single examples, then 1% each; goal < 1 s) and max |ΔW| to a head refitted from scratch (float64).
- stream: a stream of random 1% requests through `unlearnkit run` (the experiment runner, `requests:`) on a Fashion-MNIST
          subset, three inexact methods and the exact ones: the verdict after every request, and the drift (the forget-
          and test-accuracy gap to the models retrained without everything deleted so far) per request.
- dp:     DP2Unlearning: test accuracy of the DP base, the served model and the model after a 1% deletion, at each ε, next
          to non-private training, and the cost of the deletion as a ratio to retraining.

    python benchmarks/deletion.py                          # everything, about 30 min on a 2-core CPU
    python benchmarks/deletion.py --sections sisa acu      # some sections
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("sisa", "s3t", "acu", "stream", "dp")
HIDDEN = (256, 256)
RECIPE = {"epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "schedule": "cosine"}  # the quickstart's


def mean(values: list[float]) -> float:
    return float(statistics.mean(values)) if values else float("nan")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


class Bench:
    """Shared state: the dataset, the recipe, the output lines."""

    def __init__(self, args: argparse.Namespace) -> None:
        import numpy as np

        from unlearnkit.data.sources import load_dataset
        from unlearnkit.models import build_model
        from unlearnkit.references import References
        from unlearnkit.train import TrainConfig

        self.args, self.np = args, np
        params = {k: v for k, v in (("train_subset", args.train_subset), ("test_subset", args.test_subset)) if v}
        self.source = load_dataset("fashion_mnist", **params)
        self.recipe = TrainConfig(**{**RECIPE, "epochs": args.epochs})
        src = self.source
        self.refs = References(train_config=self.recipe, model_factory=lambda: build_model("mlp", src.input_shape, src.n_classes, hidden=HIDDEN))
        from unlearnkit.io import Transcript

        self.transcript = Transcript()
        self._task = None
        self._mono: dict[str, Any] | None = None

    def out(self, line: str = "") -> None:
        self.transcript.say(line)

    def task(self, fraction: float = 0.01):  # noqa: ANN201
        from unlearnkit.data.forget import ForgetSpec, make_task

        if self._task is None:
            s = self.source
            self._task = make_task("fashion_mnist", s.train, s.test, ForgetSpec("random", fraction=fraction), self.np.random.default_rng(0),
                                   n_classes=s.n_classes)
        return self._task

    def acc(self, model: Any, split: Any) -> float:
        from unlearnkit.adapters import get_adapter

        out = get_adapter(self.task()).outputs(model, split, device=self.args.device)
        return float((out["logits"].argmax(1) == out["labels"]).mean())

    def monolithic(self) -> dict[str, Any]:
        """The ordinary model trained on all training data with the recipe: its accuracy and cost (one full retrain)."""
        if self._mono is None:
            from unlearnkit.adapters import get_adapter
            from unlearnkit.cost import CostMeter
            from unlearnkit.train import train_model

            task = self.task()
            with CostMeter(self.args.device) as meter:
                model, _, _ = train_model(self.refs.fresh_model(0, by="benchmark"), task.train, self.recipe, adapter=get_adapter(task), seed=0,
                                          device=self.args.device)
            self._mono = {"model": model, "test": self.acc(model, task.test), "cost": meter.cost}
        return self._mono


# ---------------------------------------------------------------------------------------------------- SISA
def section_sisa(b: Bench) -> dict[int, Any]:
    from unlearnkit.methods import build_method

    a, np = b.args, b.np
    task, mono = b.task(), b.monolithic()
    full = mono["cost"]
    b.out(f"## SISA: {a.requests} single-example deletions, one after another, per shard count (R = {a.slices} slices)\n")
    b.out(f"Monolithic MLP {'-'.join(map(str, HIDDEN))} on all {len(task.train)} examples ({a.epochs:g} epochs, Adam): test accuracy "
          f"{mono['test']:.4f}; one full retrain = {full.example_passes} example passes, {full.wall_seconds:.1f} s wall.\n")
    b.out("| S | build × retrain (wall) | ensemble test acc (vote) | (mean) | Δ vs monolithic (vote) | deletion passes × retrain, mean "
          "(min–max) | deletion wall × retrain, mean | goal 1/S | shards retrained per request |")
    b.out("|---|---|---|---|---|---|---|---|---|")
    models: dict[int, Any] = {}
    rng = np.random.default_rng(1)
    ids = rng.choice(task.train.ids, size=a.requests, replace=False)
    for S in a.shards:
        t0 = time.perf_counter()
        model = build_method("sisa", {"shards": S, "slices": a.slices}).build(task, b.refs, seed=0, device=a.device, progress=a.progress)
        build_wall = time.perf_counter() - t0
        vote = b.acc(model, task.test)
        model.aggregation = "mean"
        mean_acc = b.acc(model, task.test)
        model.aggregation = "vote"
        models[S] = copy.deepcopy(model)  # before any deletion: the S3T comparison replays its own requests
        passes, walls = [], []
        for i in ids:
            r = model.delete([int(i)])
            passes.append(r.cost.example_passes / full.example_passes)
            walls.append(r.cost.wall_seconds / full.wall_seconds)
            assert len(r.touched["shards"]) == 1
        b.out(f"| {S} | {build_wall / full.wall_seconds:.2f} | {vote:.4f} | {mean_acc:.4f} | {vote - mono['test']:+.4f} | {mean(passes):.3f} "
              f"({min(passes):.3f}–{max(passes):.3f}) | {mean(walls):.3f} | {1 / S:.3f} | 1 |")
    R = a.slices
    b.out(f"\nA deletion retrains one shard from the checkpoint before the slice that held the example. Step r trains on slices "
          f"1..r, so a shard's steps cost in proportion to 1, 2, …, R and a deletion from slice j redoes steps j..R: over examples "
          f"spread evenly across slices that is (2R+1)/(3R) = {(2 * R + 1) / (3 * R):.3f} of a shard's training, i.e. an expected "
          f"{(2 * R + 1) / (3 * R):.3f}/S of a full retrain (S = 4: {(2 * R + 1) / (3 * R) / 4:.3f}). Wall-time ratios add the fixed cost "
          "of each training call, which weighs more for small shards.\n")
    return models


# ---------------------------------------------------------------------------------------------------- S3T vs SISA
def section_s3t(b: Bench, sisa_models: dict[int, Any]) -> None:
    from unlearnkit.methods import build_method

    a, np = b.args, b.np
    task, mono = b.task(), b.monolithic()
    S, R = a.s3t_shards, a.slices
    sisa = sisa_models.get(S)
    if sisa is None:
        sisa = build_method("sisa", {"shards": S, "slices": R}).build(task, b.refs, seed=0, device=a.device, progress=a.progress)
    t0 = time.perf_counter()
    s3t = build_method("s3t", {"shards": S, "slices": R}).build(task, b.refs, seed=0, device=a.device, progress=a.progress)
    s3t_build = time.perf_counter() - t0
    deletable = np.setdiff1d(task.train.ids, s3t.backbone.protected_ids)
    counts = [k for k in (1, 2, 4, 8) if k <= a.s3t_deletions]
    ids = np.random.default_rng(2).choice(deletable, size=max(counts), replace=False)
    b.out(f"## S3T vs SISA: served accuracy after 1/2/4/8 single-example deletions (S = {S}, R = {R})\n")
    b.out(f"S3T: frozen backbone trained on a public {s3t.backbone.to_json()['n_protected']} examples (never deletable), rank-4 adapters "
          f"on every linear layer, {s3t.n_orderings} orderings per shard, built in {s3t_build:.1f} s; SISA as above. The same "
          f"{max(counts)} examples (drawn outside S3T's public portion) are deleted from both, one after another. Monolithic model: "
          f"{mono['test']:.4f}.\n")
    b.out("| regime | before | " + " | ".join(f"after {k}" for k in counts) + " | deletion wall ms, mean (max) | deletion passes × retrain, mean |")
    b.out("|---|---|" + "---|" * len(counts) + "---|---|")
    for name, model in (("SISA", sisa), ("S3T", s3t)):
        cells, walls, passes = [f"{b.acc(model, task.test):.4f}"], [], []
        for k, i in enumerate(ids, start=1):
            r = model.delete([int(i)])
            walls.append(r.cost.wall_seconds)
            passes.append(r.cost.example_passes / mono["cost"].example_passes)
            if k in counts:
                cells.append(f"{b.acc(model, task.test):.4f}")
        b.out(f"| {name} | " + " | ".join(cells) + f" | {fmt_ms(mean(walls))} ({fmt_ms(max(walls))}) | {mean(passes):.4f} |")
    served = [s3t.served(k) for k in range(S)]
    b.out(f"\nS3T after {max(counts)} deletions: per shard (ordering, adapters still served of {R}) = {served}. S3T deletes without a "
          "gradient step (it deactivates the adapters trained on or after the deleted slice); SISA retrains one shard.\n")


# ---------------------------------------------------------------------------------------------------- ACU
def section_acu(b: Bench) -> None:
    import torch

    from unlearnkit.methods import build_method

    a, np = b.args, b.np
    task, mono = b.task(), b.monolithic()
    t0 = time.perf_counter()
    model = build_method("acu", {"backbone": "public"}).build(task, b.refs, seed=0, device=a.device, progress=a.progress)
    build = time.perf_counter() - t0
    before = b.acc(model, task.test)
    rng = np.random.default_rng(3)
    deletable = np.setdiff1d(task.train.ids, model.backbone.protected_ids)
    order = rng.permutation(deletable)
    one_pct = max(1, len(task.train) // 100)
    lat: dict[str, list[float]] = {"single": [], "1%": []}
    used = 0
    for kind, size in (("single", 1), ("1%", one_pct)):
        for _ in range(a.acu_requests):
            req = order[used:used + size]
            used += size
            t = time.perf_counter()
            model.delete(req)
            lat[kind].append(time.perf_counter() - t)
    live = model.live_split()
    gram = model.gamma * np.eye(model.dim)
    xty = np.zeros((model.dim, model.n_classes))
    with torch.no_grad():
        for i in range(0, len(live), 4096):
            rows = live.subset(np.arange(i, min(i + 4096, len(live))))
            f = model.head_features(rows.data.x.to(a.device)).double().cpu().numpy()
            gram += f.T @ f
            xty += f.T @ np.eye(model.n_classes)[rows.data.y.numpy()]
    refit = np.linalg.solve(gram, xty)
    dw = float(np.abs(model.W.double().cpu().numpy() - refit).max())
    b.out(f"## ACU: {a.acu_requests} single-example requests, then {a.acu_requests} requests of 1% ({one_pct} examples), on "
          f"{len(task.train)} Fashion-MNIST examples\n")
    b.out(f"Backbone: the MLP recipe trained on a public {len(model.backbone.protected_ids)} examples (protected: a request touching them is "
          f"refused); head: ridge (γ = {model.gamma:g}) on a {model.dim}-dimensional ReLU buffer, float64. Built in {build:.1f} s.\n")
    b.out("| requests | latency median ms | max ms | goal |")
    b.out("|---|---|---|---|")
    for kind in ("single", "1%"):
        b.out(f"| {a.acu_requests} × {kind} | {fmt_ms(float(np.median(lat[kind])))} | {fmt_ms(max(lat[kind]))} | < 1000 |")
    b.out(f"\nAfter all {2 * a.acu_requests} requests: max |W − W_refit| = {dw:.2e} (max |W| = {np.abs(refit).max():.2f}; goal ≤ 1e-6), "
          f"W_refit = (FᵀF + γI)⁻¹FᵀY solved from scratch on the {len(live)} remaining examples. Test accuracy {before:.4f} before, "
          f"{b.acc(model, task.test):.4f} after (monolithic MLP {mono['test']:.4f}).\n")


# ---------------------------------------------------------------------------------------------------- stream
STREAM_METHODS = [
    {"name": "finetune", "params": {"epochs": 3, "lr": 0.05, "schedule": "cosine"}},
    {"name": "grad_diff", "params": {"epochs": 3, "lr": 0.01, "forget_weight": 0.5, "schedule": "cosine"}},
    {"name": "ssd", "params": {"alpha": 10, "lambda_": 1}},
    {"name": "sisa", "params": {"shards": 4, "slices": 4}},
    {"name": "s3t", "params": {"shards": 4, "slices": 4}},
    {"name": "acu", "params": {}},
    {"name": "dp2unlearning", "params": {"epsilon": 8.0}},
]


def section_stream(b: Bench) -> None:
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.runner import run_experiment
    from unlearnkit.runs.store import Store
    from unlearnkit.runs.summary import evidence_row, stream_summary

    a = b.args
    exp = Experiment.from_dict({
        "name": "deletion_stream", "description": "benchmarks/deletion.py: a stream of random 1% requests",
        "dataset": {"name": "fashion_mnist", "params": {"train_subset": a.stream_subset, "test_subset": a.stream_test}},
        "requests": [{"kind": "random", "fraction": 0.01, "repeat": a.stream_requests}],
        "public": {"fraction": a.stream_public},
        "model": {"name": "mlp", "params": {"hidden": list(HIDDEN)}},
        "train": {**RECIPE, "epochs": a.epochs},
        "references": {"retrain_seeds": a.stream_retrain_seeds, "original_seed": 0},
        "methods": STREAM_METHODS if not a.stream_methods else [m for m in STREAM_METHODS if m["name"] in a.stream_methods],
        "metrics": ["accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "noise_floor"],
        "seeds": [0],
    })
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        record = run_experiment(exp, store, device=a.device, progress=a.progress)
        s = stream_summary(store, record)
    assert s is not None
    wall = time.perf_counter() - t0
    n = len(s.steps)
    b.out(f"## A stream of {n} requests (random 1% each) through `unlearnkit run`, {a.stream_subset} Fashion-MNIST examples\n")
    b.out(f"Each step is judged against {a.stream_retrain_seeds} models retrained without everything deleted so far (MUSE's "
          f"sustainability); evidence: accuracy, retrain gap, threshold MIA, MIA efficacy. The stream declares {a.stream_public:.0%} of the "
          f"training data public (`public: {{fraction: {a.stream_public:g}}}`): requests are drawn outside it, and S3T's and ACU's frozen "
          f"backbones are trained on it. The experiment ran in {wall:.0f} s.\n")
    first = s.steps[0].original
    if first is not None:
        b.out(f"The original model's verdict at request 1: **{first['verdict']['label']}** (it must be 'not forgotten' for the "
              "others to mean anything).\n")
    b.out("Verdict after each request:\n")
    b.out("| method | " + " | ".join(str(st.request) for st in s.steps) + " | cumulative passes × retraining after each | one-time training s |")
    b.out("|---|" + "---|" * n + "---|---|")
    retrain_passes = s.retrain_cumulative("example_passes")[-1]
    for c in s.chains:
        labels = [r["verdict"]["label"] for r in c.runs] + ["—"] * (n - len(c.runs))
        passes = c.cumulative("example_passes")
        ratio = f"{passes[-1] / retrain_passes:.3f}" if passes and retrain_passes else "—"
        t = c.training_cost()
        b.out(f"| {c.method} | " + " | ".join(labels) + f" | {ratio} | {t['wall_seconds']:.1f} |" if t else
              f"| {c.method} | " + " | ".join(labels) + f" | {ratio} | — |")
    for key, what in (("accuracy.forget", "forget accuracy"), ("accuracy.test", "test accuracy")):
        b.out(f"\nDrift: {what} minus the retrained models' mean, after each request (band: the retrained models' own spread)\n")
        b.out("| method | " + " | ".join(str(st.request) for st in s.steps) + " |")
        b.out("|---|" + "---|" * n)
        for c in s.chains:
            cells = []
            for r in c.runs:
                row = evidence_row(r, key)
                cells.append("—" if row is None or row.get("value") is None else f"{row['value'] - row['retrain_mean']:+.3f}")
            b.out(f"| {c.method} | " + " | ".join(cells + ["—"] * (n - len(cells))) + " |")
    b.out("\nThe verdict after the last request, and the evidence that decided it:\n")
    b.out("| method | verdict | why (first reason) |")
    b.out("|---|---|---|")
    for c in s.chains:
        if c.runs:
            last = c.runs[-1]["verdict"]
            b.out(f"| {c.method} | {last['label']} | {(last.get('reasons') or ['—'])[0]} |")
    b.out("\nEvery step is judged against retrained *monolithic* models, the common ground of all methods. An exact regime is, by "
          "construction, what training that regime without the deleted data gives; where its verdict is not 'removed', the "
          "evidence measured the regime's difference from the monolithic model, not leftover knowledge: a sharded, "
          "frozen-backbone or DP-fine-tuned model fits its training data less (retain accuracy below the band: "
          "'over-forgotten'), and population MIAs whose bands come from monolithic retrains (threshold MIA, MIA efficacy) misread "
          "a model whose loss and confidence distributions differ from theirs ('not forgotten', here at a band's edge). Judging an exact regime against retrains "
          "of the same regime is the fair test of the regime itself; this table is the price of exactness measured on the "
          "common ground.\n")


# ---------------------------------------------------------------------------------------------------- DP2Unlearning
def section_dp(b: Bench) -> None:
    from unlearnkit.adapters import get_adapter
    from unlearnkit.cost import CostMeter
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.methods import build_method
    from unlearnkit.train import train_model

    a, np = b.args, b.np
    src = load_dataset("fashion_mnist", train_subset=a.dp_subset, **({"test_subset": a.test_subset} if a.test_subset else {}))
    task = make_task("fashion_mnist", src.train, src.test, ForgetSpec("random", fraction=0.01), np.random.default_rng(0), n_classes=src.n_classes)
    adapter = get_adapter(task)
    original, _, _ = train_model(b.refs.fresh_model(0, by="benchmark"), task.train, b.recipe, adapter=adapter, seed=0, device=a.device)
    with CostMeter(a.device) as meter:
        retrained, _, _ = train_model(b.refs.fresh_model(0, by="benchmark"), task.retain, b.recipe, adapter=adapter, seed=0, device=a.device)
    rc = meter.cost
    from unlearnkit.exact.dp import finetune_config

    control, _, _ = train_model(b.refs.fresh_model(0, by="benchmark"), task.retain, finetune_config(b.recipe, float(b.recipe.epochs or 0) / 2),
                                adapter=adapter, seed=0, device=a.device)
    b.out(f"## DP2Unlearning on {len(task.train)} Fashion-MNIST examples: a 1% request ({len(task.forget)} examples)\n")
    b.out(f"Non-private training on all data: test {b.acc(original, task.test):.4f}; retraining without the request: test "
          f"{b.acc(retrained, task.test):.4f}, {rc.example_passes} example passes, {rc.wall_seconds:.1f} s. Control: the deletion's "
          f"fine-tune budget (half the recipe) from a fresh initialisation instead of the DP base: test {b.acc(control, task.test):.4f}.\n")
    b.out("| ε (accountant's) | δ | DP base test | served test | after deletion test | deletion passes × retrain | deletion wall × retrain | "
          "ε for the k deleted (group) | DP build s |")
    b.out("|---|---|---|---|---|---|---|---|---|")
    for eps in a.epsilons:
        t0 = time.perf_counter()
        served = build_method("dp2unlearning", {"epsilon": eps}).build(task, b.refs, seed=0, device=a.device, progress=a.progress)
        build = time.perf_counter() - t0
        base_acc, served_acc = b.acc(served.base_model(), task.test), b.acc(served, task.test)
        r = served.delete(task.forget.ids)
        d = served.describe()
        group = d.get("group_epsilon", d.get("privacy", {}).get("group_epsilon", "—"))
        b.out(f"| {eps:g} ({served.account.epsilon:.3f}) | {served.account.delta:.2e} | {base_acc:.4f} | {served_acc:.4f} | "
              f"{b.acc(served, task.test):.4f} | {r.cost.example_passes / rc.example_passes:.2f} | {r.cost.wall_seconds / rc.wall_seconds:.2f} | "
              f"{group if isinstance(group, str) else f'{group:.1f}'} | {build:.0f} |")
    b.out("\nThe served model is the DP base fine-tuned (non-privately) on all data; a deletion redoes that fine-tune from the stored "
          "base on the remaining data, so its cost is the fine-tune's (half the recipe by default) and the deleted examples reach "
          "the served model only through the (ε, δ)-DP base. The guarantee for k deleted records is group privacy (kε, "
          "k·e^((k−1)ε)·δ): meaningful for one person's few records, vacuous for a 1% request, as the group column shows. "
          "When the control matches the served accuracy, the DP base contributes little beyond an initialisation at this "
          "size.\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--train-subset", type=int, default=None, help="Fashion-MNIST training examples (default: all 60000)")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--epochs", type=float, default=RECIPE["epochs"])
    p.add_argument("--shards", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--requests", type=int, default=20, help="SISA: single-example deletions per shard count")
    p.add_argument("--s3t-shards", type=int, default=8)
    p.add_argument("--s3t-deletions", type=int, default=8)
    p.add_argument("--acu-requests", type=int, default=10)
    p.add_argument("--stream-subset", type=int, default=6000)
    p.add_argument("--stream-test", type=int, default=2000)
    p.add_argument("--stream-requests", type=int, default=10)
    p.add_argument("--stream-retrain-seeds", type=int, default=3)
    p.add_argument("--stream-public", type=float, default=0.2, help="the stream's declared non-deletable fraction (S3T's and ACU's backbone data)")
    p.add_argument("--stream-methods", nargs="*", default=None)
    p.add_argument("--dp-subset", type=int, default=12000)
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--output", type=Path, default=None, help="write the results as markdown here (e.g. docs/results/deletion.md)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from unlearnkit.io import write_generated

    start = time.perf_counter()
    b = Bench(args)
    b.out(f"{torch.get_num_threads()} CPU thread(s), device {args.device}. MLP {'-'.join(map(str, HIDDEN))}, recipe {args.epochs:g} epochs "
          f"Adam lr 1e-3 batch 128 cosine (the quickstart's), seed 0.\n")
    sisa_models: dict[int, Any] = {}
    if "sisa" in args.sections:
        sisa_models = section_sisa(b)
    if "s3t" in args.sections:
        section_s3t(b, sisa_models)
    if "acu" in args.sections:
        section_acu(b)
    if "stream" in args.sections:
        section_stream(b)
    if "dp" in args.sections:
        section_dp(b)
    b.out(f"(whole benchmark: {time.perf_counter() - start:.0f} s)")
    if args.output is not None:
        write_generated(args.output, "Exact unlearning and request streams", "deletion.py", argv if argv is not None else sys.argv[1:],
                        b.transcript.lines)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
