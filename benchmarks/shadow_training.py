"""Benchmark: K shadow MLPs on Fashion-MNIST trained together in one vectorised pass (torch.func) vs one after
another in a plain loop — same models, same batch plans, same epochs, measured side by side in this run.
Prints wall time, speed-up (goal ≥ 5×), peak memory of each and their ratio, and checks that both give the
same models (max |Δθ|).

    python benchmarks/shadow_training.py                  # K = 16, 2 epochs, full Fashion-MNIST pool (~5 min on 2 cores)
    python benchmarks/shadow_training.py --shadows 8 --epochs 1 --pool 20000
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shadows", type=int, default=16)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--pool", type=int, default=None, help="use a random subset of the 70k-example pool")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from unlearnkit.cost import CostMeter
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.ensembles import balanced_memberships, pool_of, train_ensemble
    from unlearnkit.models import build_model
    from unlearnkit.train import TrainConfig

    source = load_dataset("fashion_mnist")
    pool = pool_of(source.train, source.test)
    if args.pool:
        pool = pool.subset(np.sort(np.random.default_rng(0).choice(len(pool), args.pool, replace=False)), "pool")
    members = balanced_memberships(args.shadows, len(pool), seed=0)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=1e-3, schedule="cosine")

    def factory() -> torch.nn.Module:
        return build_model("mlp", source.input_shape, 10, hidden=tuple(args.hidden))

    print(f"shadow_training: {args.shadows} MLPs {784}-{'-'.join(map(str, args.hidden))}-10, pool {len(pool)} examples "
          f"(each shadow ~{int(members.sum(1).mean())}), {args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} threads")
    results = {}
    models = {}
    for name, vectorized in (("vectorised", True), ("loop", False)):
        with CostMeter(args.device) as meter:
            models[name] = train_ensemble(factory, pool, members, config, seed=1, device=args.device, vectorized=vectorized,
                                          progress=sys.stderr.isatty(), desc=name)
        results[name] = meter.cost
        c = meter.cost
        print(f"  {name:10s}: {c.wall_seconds:8.1f} s, {c.optimizer_steps} optimizer steps, peak memory +{c.peak_memory_mb:.0f} MB")
    diff = max(float((a - b).abs().max()) for ma, mb in zip(models["vectorised"], models["loop"])
               for a, b in zip(ma.state_dict().values(), mb.state_dict().values()))
    v, loop = results["vectorised"], results["loop"]
    print(f"speed-up of the vectorised pass: {loop.wall_seconds / v.wall_seconds:.2f}× (goal ≥ 5×)")
    print(f"peak memory ratio vectorised / loop: {v.peak_memory_mb / max(loop.peak_memory_mb, 1e-9):.2f}")
    print(f"same models: max |θ_vectorised − θ_loop| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
