"""Benchmark: K shadow MLPs on Fashion-MNIST trained together in one vectorised pass vs one after another in a plain
loop — same models, same batch plans, same epochs, measured side by side in this run. Two vectorised paths: ``stacked``
(one batched matmul per layer over the K models, ``torch.baddbmm``) and ``vmap`` (``torch.func`` over a
``functional_call``). For each architecture it prints wall time, speed-up over the loop (goal ≥ 5×), peak memory and
its ratio, the arithmetic rate reached (GFLOP/s) against this machine's large-matmul rate, and how far each path's
models are from the loop's: max |Δθ| (a batched and a single matrix multiply may round a sum differently, and such
differences grow over thousands of Adam steps) and the share of pool examples on which model k of each path predicts
the same class.

Vectorising removes per-model framework overhead (Python, op dispatch, optimizer launches), never arithmetic: the
loop's GFLOP/s against the machine's matmul rate bounds what any vectorisation can gain, and the table prints that
bound ("ceiling") next to the measured speed-up.

The gain depends on how much of a loop step is overhead: the default runs the quickstart's batch size (128), where a
model step of the wider MLPs is mostly arithmetic, and batch 32, where it is mostly overhead.

    python benchmarks/shadow_training.py                       # K = 16, 2 epochs, full 70k pool, 3 widths × 2 batch sizes (~3 min on 2 cores)
    python benchmarks/shadow_training.py --mlp 256,256 --batch-size 128 --pool 20000 --epochs 1 --output ''

The output (everything printed) also goes to docs/results/shadow_training.md (generated; do not edit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_flops_per_example(sizes: list[int]) -> int:
    """Multiply-adds ×2 of one training pass of an MLP with layer widths ``sizes`` (input first): forward, weight
    gradients, and input gradients of every layer but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    mm = sum(a * b for a, b in pairs)
    return 2 * mm + 2 * mm + 2 * sum(a * b for a, b in pairs[1:])


def matmul_gflops(n: int = 1536, reps: int = 6) -> float:
    """This machine's float32 rate on one large square matmul (the best of ``reps``)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--pool", type=int, default=None, help="use a random subset of the 70k-example pool")
    p.add_argument("--mlp", nargs="+", default=["256,256", "64", "32"],
                   help="hidden widths per architecture, comma-separated (256,256 is the quickstart target's)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[128, 32], help="one run of every width per batch size")
    p.add_argument("--modes", nargs="+", default=["stacked", "vmap", "loop"], choices=["stacked", "vmap", "loop"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "shadow_training.md"), help="markdown copy ('' for none)")
    args = p.parse_args(argv)
    if "loop" not in args.modes:
        p.error("--modes must include loop (the baseline)")

    import numpy as np
    import torch

    from unlearnkit.cost import CostMeter
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.ensembles import balanced_memberships, pool_of, train_ensemble
    from unlearnkit.io import Transcript, write_generated
    from unlearnkit.models import build_model
    from unlearnkit.train import TrainConfig

    source = load_dataset("fashion_mnist")
    pool = pool_of(source.train, source.test)
    if args.pool:
        pool = pool.subset(np.sort(np.random.default_rng(0).choice(len(pool), args.pool, replace=False)), "pool")
    members = balanced_memberships(args.shadows, len(pool), seed=0)
    probe = pool.data.x[:5000].to(args.device)  # type: ignore[union-attr]
    out = Transcript()
    say = out.say
    peak = matmul_gflops()
    say(f"shadow_training: {args.shadows} MLPs on Fashion-MNIST, pool {len(pool)} examples (each shadow ~{int(members.sum(1).mean())}), "
          f"{args.epochs} epochs, Adam, {torch.get_num_threads()} threads; "
          f"this machine's large-matmul rate: {peak:.0f} GFLOP/s")
    summary = []
    for batch, spec in [(b, spec) for b in args.batch_size for spec in args.mlp]:
        config = TrainConfig(epochs=args.epochs, batch_size=batch, optimizer="adam", lr=1e-3, schedule="cosine")
        hidden = tuple(int(h) for h in spec.split(","))
        sizes = [784, *hidden, 10]

        def factory(hidden: tuple[int, ...] = hidden) -> torch.nn.Module:
            return build_model("mlp", source.input_shape, 10, hidden=hidden)

        say(f"\nMLP {'-'.join(map(str, sizes))}, batch {batch}")
        results, models = {}, {}
        for mode in args.modes:  # a few untimed steps first: one-time set-up is not charged to whichever path runs first
            warm = TrainConfig(steps=3, batch_size=batch, optimizer="adam")
            train_ensemble(factory, pool, members, warm, seed=1, device=args.device, mode=mode)
        for mode in args.modes:
            with CostMeter(args.device) as meter:
                models[mode] = train_ensemble(factory, pool, members, config, seed=1, device=args.device, mode=mode,
                                              progress=sys.stderr.isatty(), desc=mode)
            c = results[mode] = meter.cost
            gflops = train_flops_per_example(sizes) * c.example_passes / c.wall_seconds / 1e9
            say(f"  {mode:8s}: {c.wall_seconds:7.1f} s, {c.optimizer_steps} optimizer steps, {gflops:5.1f} GFLOP/s, "
                  f"peak memory +{c.peak_memory_mb:.0f} MB")
        loop = results["loop"]
        loop_rate = train_flops_per_example(sizes) * loop.example_passes / loop.wall_seconds / 1e9
        for mode in args.modes:
            if mode == "loop":
                continue
            v = results[mode]
            diff = max(float((a - b).abs().max()) for ma, mb in zip(models[mode], models["loop"])
                       for a, b in zip(ma.state_dict().values(), mb.state_dict().values()))
            with torch.no_grad():  # rounding differences grow over many Adam steps: how much do the models' decisions differ?
                agree = np.mean([float((ma(probe).argmax(1) == mb(probe).argmax(1)).float().mean())
                                 for ma, mb in zip(models[mode], models["loop"])])
            speedup = loop.wall_seconds / v.wall_seconds
            mem = v.peak_memory_mb / max(loop.peak_memory_mb, 1e-9)
            say(f"  {mode} vs loop: speed-up {speedup:.2f}× (goal ≥ 5×), peak memory ratio {mem:.2f}, max |Δθ| = {diff:.2e}, "
                f"same prediction on {agree:.2%} of {len(probe)} pool examples")
            summary.append((spec, batch, mode, speedup, mem, peak / loop_rate))
        say(f"  ceiling: the loop already reaches {loop_rate:.1f} GFLOP/s, {loop_rate / peak:.0%} of the matmul rate, so no "
              f"vectorisation can exceed {peak / loop_rate:.1f}× here")
    say("")
    say("| MLP hidden | batch | path | speed-up vs loop | peak memory ratio | ceiling (matmul rate / loop rate) |")
    say("|---|---|---|---|---|---|")
    for spec, batch, mode, speedup, mem, ceiling in summary:
        say(f"| {spec} | {batch} | {mode} | {speedup:.2f}× | {mem:.2f} | {ceiling:.1f}× |")
    if args.output:
        log, table = [ln for ln in out.lines if not ln.startswith("|")], [ln for ln in out.lines if ln.startswith("|")]
        write_generated(args.output, "Shadow-model training: vectorised vs a plain loop", "shadow_training.py",
                        sys.argv[1:] if argv is None else argv, ["```", *log, "```", "", *table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
