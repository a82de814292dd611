"""Deletion ledger benchmark: N requests appended to one ledger and verified; time per append and per verification.

Each request is a real deletion: ``finetune`` (one gradient step by default) on the retain set of a small digits MLP,
so the numbers are the ledger's own cost (loading the lineage's newest model, writing the content-addressed model
folder and the signed certificate, committing the entry) plus a near-free method. Printed and written to
docs/results/ledger.md:

    python benchmarks/ledger.py                       # 1,000 requests (about 2-4 minutes on a laptop CPU)
    python benchmarks/ledger.py --requests 20 --output /tmp/ledger.md

Longer than 60 lines: the timed phases and the table of their results belong together.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from unlearnkit.io import Transcript, write_generated  # noqa: E402
from unlearnkit.ledger import Ledger, keygen, train_model_dir  # noqa: E402

MODEL = {"name": "mlp", "params": {"hidden": [32]}}
TRAIN = {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 0.003}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _loads(dataset: dict) -> bool:
    try:
        from unlearnkit.data.sources import load_dataset

        load_dataset(dataset["name"], **dataset["params"])
    except Exception:  # noqa: BLE001 - not installed here: the section falls back to digits
        return False
    return True


def sisa_section(args: argparse.Namespace, work: Path, say: Transcript) -> None:
    """``verify --deep`` of single-example deletions from a stored SISA model (the affected shard retrained from its
    stored checkpoint, bytes compared) against retraining: the monolithic model and the whole SISA ensemble."""
    train = {**TRAIN, "epochs": args.sisa_epochs, "batch_size": 128}
    model = {"name": "mlp", "params": {"hidden": [args.sisa_hidden]}}
    params = {"shards": args.sisa_shards, "slices": args.sisa_slices}
    dataset: dict = {"name": args.sisa_dataset, "params": {}}
    if args.sisa_dataset == "fashion_mnist":
        if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file() and not _loads(dataset):
            dataset = {"name": "digits", "params": {}}
        elif args.sisa_train_subset:
            dataset["params"] = {"train_subset": args.sisa_train_subset}
    t0 = time.perf_counter()
    full = train_model_dir(work / "full", dataset=dataset, model=model, train=train, seed=0)
    full_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    sisa = train_model_dir(work / "sisa", dataset=dataset, model=model, train=train, seed=0, method="sisa", params=params)
    sisa_seconds = time.perf_counter() - t0
    assert full.is_dir()
    ledger = Ledger(work / "sisa-ledger.sqlite")
    from unlearnkit.ledger import load_model_dir

    loaded = load_model_dir(full)
    n_train, shape = len(loaded.source.train), "-".join(str(d) for d in (*loaded.source.input_shape, args.sisa_hidden, loaded.source.n_outputs))
    ids = np.random.default_rng(1).permutation(loaded.source.train.ids)[: args.sisa_requests]
    shallow, deep, deletion = [], [], []
    for k, i in enumerate(ids):
        cert = ledger.forget(sisa, [int(i)], method="sisa", params=params, request_id=f"s{k}")
        deletion.append(cert["deletion_seconds"])
        t0 = time.perf_counter()
        assert ledger.verify(cert).ok
        shallow.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = ledger.verify(cert, deep=True)
        deep.append(time.perf_counter() - t0)
        assert result.ok, result.text()
    ledger.close()
    replay = statistics.mean(deep) - statistics.mean(shallow)
    say.say("")
    say.say(f"`verify --deep` on a stored SISA model (S = {args.sisa_shards}, R = {args.sisa_slices}; {dataset['name']} "
            f"({n_train} training examples), MLP {shape}, {args.sisa_epochs:g} epochs), {args.sisa_requests} single-example requests:")
    say.say("")
    say.say("| measure | seconds | × full retrain |")
    say.say("|---|---|---|")
    for name, value in (("full retrain of the monolithic model (same recipe)", full_seconds),
                        (f"full SISA build ({args.sisa_shards} shards × {args.sisa_slices} slices)", sisa_seconds),
                        ("deletion (mean): affected shard retrained from its checkpoint", statistics.mean(deletion)),
                        ("verify (mean, without --deep)", statistics.mean(shallow)),
                        ("verify --deep (mean)", statistics.mean(deep)),
                        ("of which the replay: load, retrain the shard, save, compare bytes", replay)):
        say.say(f"| {name} | {value:.3f} | {value / full_seconds:.3f} |")
    say.say("")
    say.say(f"The replay retrains the same shard slices as the deletion did ({statistics.mean(deletion):.2f} s); the rest of it is "
            "loading the data source and the stored model before the request, and saving (and re-loading, as persist checks "
            "every save) the replayed model before its bytes are compared.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--ids-per-request", type=int, default=1)
    p.add_argument("--method", default="finetune")
    p.add_argument("--params", default='{"steps": 1}', help="the method's parameters (JSON)")
    p.add_argument("--sisa-shards", type=int, default=4)
    p.add_argument("--sisa-slices", type=int, default=4)
    p.add_argument("--sisa-dataset", default="fashion_mnist", help="fashion_mnist (falls back to digits when not installed) or digits")
    p.add_argument("--sisa-train-subset", type=int, default=None, help="Fashion-MNIST training examples (default: all 60000)")
    p.add_argument("--sisa-hidden", type=int, default=256)
    p.add_argument("--sisa-epochs", type=float, default=5, help="the recipe of the SISA model and of the full retrain")
    p.add_argument("--sisa-requests", type=int, default=5, help="single-example requests whose --deep verification is timed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared CPU)")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "ledger.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = json.loads(args.params)
    say = Transcript()
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        start = time.perf_counter()
        model = train_model_dir(work / "model", dataset={"name": "digits"}, model=MODEL, train=TRAIN, seed=0)
        train_seconds = time.perf_counter() - start
        key, public, _ = keygen(work / "key")
        ledger = Ledger(work / "ledger.sqlite", key=key)
        from unlearnkit.ledger import load_model_dir

        train_ids = load_model_dir(model).source.train.ids
        if args.requests * args.ids_per_request > len(train_ids):
            p.error(f"{args.requests} × {args.ids_per_request} ids exceed the {len(train_ids)} training examples")
        ids = np.random.default_rng(0).permutation(train_ids)[: args.requests * args.ids_per_request]
        appends, methods = [], []
        for k in range(args.requests):
            chunk = ids[k * args.ids_per_request:(k + 1) * args.ids_per_request].tolist()
            t0 = time.perf_counter()
            cert = ledger.forget(model, chunk, method=args.method, params=params, requester="benchmark", request_id=f"b{k}")
            appends.append(time.perf_counter() - t0)
            methods.append(cert["deletion_seconds"])
        t0 = time.perf_counter()
        whole = ledger.verify(public_key=public)
        verify_all = time.perf_counter() - t0
        last = ledger.cert_path(cert["entry_hash"])
        t0 = time.perf_counter()
        one = ledger.verify(last, public_key=public)
        verify_last = time.perf_counter() - t0
        first = ledger.cert_path(ledger.certificate(1)["entry_hash"])
        t0 = time.perf_counter()
        ledger.verify(first, public_key=public)
        verify_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        deep = ledger.verify(ledger.certificate(args.requests), deep=True)
        verify_deep = time.perf_counter() - t0
        assert whole.ok and one.ok and deep.ok, (whole.text(), one.text(), deep.text())
        overhead = [a - m for a, m in zip(appends, methods)]
        n = args.requests
        tenth = max(1, n // 10)
        say.say(f"{n} requests of {args.ids_per_request} id(s) each, method {args.method} {json.dumps(params)}, digits MLP 64-32-10 "
                f"(model directory trained in {train_seconds:.1f}s), SQLite ledger, Ed25519-signed; torch threads {args.threads}")
        say.say("")
        say.say("| measure | value |")
        say.say("|---|---|")
        rows = [
            ("append: mean time per request (all of `forget`)", ms(statistics.mean(appends))),
            ("append: median / 95th percentile", f"{ms(statistics.median(appends))} / {ms(float(np.percentile(appends, 95)))}"),
            ("append: of which the method itself (mean)", ms(statistics.mean(methods))),
            ("append: ledger overhead (mean: load, checks, model folder, certificate, commit)", ms(statistics.mean(overhead))),
            (f"append: mean of the first {tenth} / the last {tenth} requests", f"{ms(statistics.mean(appends[:tenth]))} / "
                                                                               f"{ms(statistics.mean(appends[-tenth:]))}"),
            (f"verify the whole ledger ({n} entries: hashes, links, signatures, {2 * n} model folders)",
             f"{ms(verify_all)} = {ms(verify_all / n)} per entry"),
            ("verify the first certificate (chain up to entry 1)", ms(verify_first)),
            (f"verify the last certificate (chain up to entry {n})", ms(verify_last)),
            ("verify --deep the last certificate (the above, then its deletion replayed and the bytes compared)", ms(verify_deep)),
            ("storage: ledger database / files folder", f"{folder_bytes(work) - folder_bytes(work / 'ledger-files') - folder_bytes(model)} "
                                                        f"bytes / {folder_bytes(work / 'ledger-files') / 1e6:.1f} MB"),
        ]
        for name, value in rows:
            say.say(f"| {name} | {value} |")
        say.say("")
        growth = statistics.mean(appends[-tenth:]) / statistics.mean(appends[:tenth])
        say.say(f"Verifying one certificate re-checks the chain up to it (every earlier entry's hash, link, signature and model "
                f"files), so it grows with its position: the last one costs {verify_last / verify_first:.0f}× the first, about "
                f"the whole ledger's {ms(verify_all)}. `--deep` adds the replay of the deletion to that. Appends read every entry to "
                f"find the lineage's newest model and the previous hash; over {n} requests the mean append changed by a factor "
                f"{growth:.2f} from the first {tenth} to the last {tenth} (the wall times include the shared CPU's noise).")
        ledger.close()
        sisa_section(args, work, say)
        write_generated(args.output, "Deletion ledger: append and verify", "ledger.py", argv if argv is not None else sys.argv[1:],
                        say.lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
