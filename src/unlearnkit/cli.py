"""Command line: ``unlearnkit demo | run | tune | validate | ls | report | check | serve | keygen | forget | verify | ledger``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnlearnError

DEFAULT_STORE = os.environ.get("UNLEARNKIT_STORE", "unlearnkit-runs")
DEFAULT_LEDGER = os.environ.get("UNLEARNKIT_LEDGER", "unlearnkit-ledger.sqlite")
EXECUTOR_HELP = ("local (default), process (each run in a fresh process: its own memory peak, crashes contained; "
                 "process:N for N at a time), ray (a local Ray instance), ray:auto or ray://host:port")


def _store(path: str):  # noqa: ANN202
    from .runs.store import Store

    return Store(path)


def _write_report(store: Any, record: dict[str, Any], path: str | None) -> Path:
    """Write the HTML report; one at the default place (the experiment's folder) is noted in the experiment record,
    so ``unlearnkit check`` can tell a report that is gone from one never written (by the Python API)."""
    from .report import write_report

    out = write_report(store, record, path)
    if path is None:
        store.save_experiment({**store.load_experiment(record["exp_id"]), "report": out.name})
    return out


def _brief_store_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints a store warning (a damaged entry, discarded to be recomputed) as one line,
    without the line of code that warned; other warnings go to ``show``."""
    from .runs.store import StoreWarning

    def brief(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, StoreWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, *args, **kwargs)

    return brief


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def cmd_run(args: argparse.Namespace, path: Path) -> int:
    from .experiment import load_experiment
    from .runs.runner import run_experiment
    from .runs.summary import format_stream, format_tables, sanity_warning, stream_summary, summarize

    from . import distributed
    from .device import resolve_device
    from .errors import ConfigError
    from .executor import get_executor

    exp = load_experiment(path)
    resolve_device(args.device if args.device != "auto" else exp.device)  # a bad or missing device fails before the store is touched
    if distributed.active() and args.executor != "local":  # the processes of an accelerate launch are the parallelism
        raise ConfigError(f"Under a data-parallel launch ({distributed.world_size()} processes) use --executor local, not {args.executor!r}.")
    store = _store(args.store)
    executor = get_executor(args.executor, progress=_progress(args))
    print(f"Running experiment {exp.name!r} from {path} into {store.root}/ on the {executor.name} executor "
          "(completed runs are reused; Ctrl-C is safe).", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _brief_store_warnings(warnings.showwarning)
            record = run_experiment(exp, store, device=args.device, progress=_progress(args), executor=executor)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    summaries = summarize(store, record)
    print(format_tables(summaries))
    if record.get("stream"):
        print(format_stream(stream_summary(store, record)))
    report = _write_report(store, record, args.report)
    for s in summaries:
        if (warning := sanity_warning(s)) is not None:
            print(f"warning: forget set {s.label}: {warning}", file=sys.stderr)
    print(f"\nexperiment {record['exp_id']}: {record['status']}; HTML report: {report}")
    if record["failures"]:
        print(f"{len(record['failures'])} run(s) failed; see above and the report.", file=sys.stderr)
        return 1
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune one method on each forget setting of an experiment (on validation forget sets drawn from the retain data),
    then evaluate the chosen setting once on the real forget set; prints the Pareto front and the evaluation."""
    from .executor import get_executor
    from .experiment import load_experiment
    from .runs.summary import format_tables, summarize
    from .tuning import tune

    exp = load_experiment(args.file)
    space = None
    if args.space:
        import yaml

        path = Path(args.space)
        if not path.is_file():
            raise ConfigError(f"Search space file {path} does not exist.")
        try:
            space = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}.") from None
    store = _store(args.store)
    executor = get_executor(args.executor, progress=_progress(args))
    parallel = args.parallel if args.parallel is not None else getattr(executor, "workers", 1)
    print(f"Tuning {args.method!r} on experiment {exp.name!r} into {store.root}/: {args.trials} trial(s) per forget setting, "
          f"{parallel} at a time on the {executor.name} executor (a study resumes where it stopped; Ctrl-C is safe).", file=sys.stderr)
    try:
        result = tune(exp, store, args.method, trials=args.trials, budget_seconds=args.budget_seconds, seed=args.seed, space=space,
                      executor=executor, parallel=parallel, device=args.device, progress=_progress(args))
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    for study, record in zip(result.studies, result.experiments):
        if study.get("not_applicable"):
            print(f"\n== {study['label']}: not tuned — {args.method} {study['not_applicable']}")
            continue
        done = [t for t in study["trials"] if t["state"] == "complete"]
        print(f"\n== {study['label']}: study {study['study']} ({len(done)} completed trial(s)"
              + (f"; {study['stopped']}" if study["stopped"] else "") + ")")
        print(f"validation forget set: {study['validation']['label']}, {study['validation']['n_forget']} examples")
        print("Pareto front (distance to the retrain band in half-widths vs example passes):")
        for t in sorted((t for t in done if t["number"] in study["pareto"]), key=lambda t: t["example_passes"]):
            mark = " <- chosen" if study["chosen"] and t["number"] == study["chosen"]["number"] else ""
            print(f"  trial {t['number']:3d}: distance {t['band_distance']:.3f}, {t['example_passes']} passes, {t['verdict']}, "
                  f"{t['params']}{mark}")
        if record is not None:
            print(format_tables(summarize(store, record)))
            report = _write_report(store, record, None)
            print(f"experiment {record['exp_id']}: {record['status']}; HTML report: {report}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .data.forget import request_rng, select_forget, select_requests
    from .data.sources import load_dataset
    from .experiment import load_experiment
    from .runs.runner import check_oracle, stream_public
    from .seeding import np_rng

    exp = load_experiment(args.file)
    sets = " and ".join(([f"{len(exp.forget)} forget set(s)"] if exp.forget else []) +
                        ([f"a stream of {len(exp.requests)} deletion request(s)"] if exp.requests else []))
    print(f"{args.file}: experiment {exp.name!r} — {len(exp.methods)} method(s) × {len(exp.seeds)} seed(s) × {sets}; "
          f"metrics {'the standard battery of the data' if exp.metrics is None else [m.name for m in exp.metrics]}; "
          f"{exp.retrain_seeds} retrained reference seed(s).")
    if not args.no_data:
        source = load_dataset(exp.dataset.name, **exp.dataset.params)
        check_oracle(exp, source)
        for spec in exp.forget:
            ids = select_forget(source.train, spec, np_rng("validate"), source.n_classes)
            source.train.positions_of(ids)
            print(f"  forget {spec.label()}: {len(ids)} of {len(source.train)} training examples")
        if exp.requests:  # drawn as the run draws them, so a request that clashes with an earlier one fails here
            rngs = [request_rng(exp.task_seed, i, spec) for i, spec in enumerate(exp.requests)]
            deleted = 0
            public = stream_public(exp, source)
            if public is not None:
                print(f"  public (non-deletable): {len(public)} of {len(source.train)} training examples")
            for k, (spec, ids) in enumerate(zip(exp.requests, select_requests(source.train, exp.requests, rngs, source.n_classes,
                                                                               public=public))):
                deleted += len(ids)
                print(f"  request {k + 1}/{len(exp.requests)} {spec.label()}: {len(ids)} examples ({deleted} of {len(source.train)} "
                      "deleted in all)")
        print(f"  model {exp.model.name}: {_check_model(exp, source)}")
    print("OK")
    return 0


def _check_model(exp: Any, source: Any) -> str:
    """Build the experiment's model for the data's shapes on the meta device (no memory, no weights), so bad model
    parameters fail at validation, not at run time. Models that load pretrained weights are built at run time only."""
    import torch

    from .models import build_model
    from .models.causal_lm import weights_identity

    if exp.model.name in ("smollm2", "causal_lm") or weights_identity(exp.model.name, exp.model.params):
        return "pretrained weights, loaded at run time"
    with torch.device("meta"):
        model = build_model(exp.model.name, tuple(source.input_shape), source.n_outputs, **exp.model.params)
    return f"{sum(p.numel() for p in model.parameters()):,} parameters"


def cmd_ls(args: argparse.Namespace) -> int:
    from .registry import DATASETS, METHODS, METRICS, MODELS

    def first_line(obj: object) -> str:
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        return doc[0] if doc else ""

    if args.what == "methods":
        for name, cls in METHODS.items():
            print(f"{name:20s} {getattr(cls, 'kind', ''):9s} {first_line(cls)}")
    elif args.what == "metrics":
        for name, cls in METRICS.items():
            print(f"{name:20s} needs {sorted(getattr(cls, 'needs', ())) or '-'!s:28s} {first_line(cls)}")
    elif args.what == "tasks":
        for name, fn in DATASETS.items():
            print(f"{name:20s} {first_line(fn)}")
        print("\nforget sets: {kind: random, fraction|count}, {kind: classes, classes: [...]}, {kind: ids, ids|file}, "
              "{kind: corrupted, fraction} (poisoned data), {kind: profiles, fraction|ids} (whole people or chapters), "
              "{kind: benchmark} (the benchmark's own forget set: tofu, muse, wmdp)")
    elif args.what == "models":
        for name, fn in MODELS.items():
            print(f"{name:20s} {first_line(fn)}")
    elif args.what == "runs":
        store = _store(args.store)
        rows = store.runs()
        if not rows:
            print(f"No runs in {store.root}.")
        for r in rows:
            print(f"{r['run_id']}  {r['experiment'] or '-':28s} {r['forget'] or '-':14s} {r['method']:16s} seed {r['seed']!s:4s} {r['verdict'] or '-'}")
    elif args.what == "experiments":
        store = _store(args.store)
        for e in store.experiments():
            reasons = f"  ({'; '.join(e['reasons'])})" if e["reasons"] else ""
            print(f"{e['exp_id']:40s} {e['status']:12s} {e['n_runs']} runs{reasons}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .errors import StoreError

    store = _store(args.store)
    try:
        record = store.load_experiment(args.run)
    except StoreError as as_experiment:
        try:
            run = store.load_run(args.run)  # a run id: report its experiment
        except StoreError as as_run:
            raise StoreError(f"{args.run!r} matches no single experiment ({as_experiment}) and no single run ({as_run})") from None
        if not run.get("experiment"):
            raise as_experiment from None
        record = store.load_experiment(run["experiment"])
    path = _write_report(store, record, args.output)
    print(f"HTML report: {path}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .errors import StoreError
    from .report import write_report
    from .runs.check import check_store, format_check, repair
    from .runs.store import Store

    if not (Path(args.store) / "runs").is_dir():
        raise StoreError(f"No run store at {args.store} (no runs/ folder there; --store or $UNLEARNKIT_STORE names the store).")
    store = Store(args.store, tidy=False)  # as found: opening it normally would fix some problems silently
    result = check_store(store)
    print(format_check(result))
    if not result.problems:
        return 0
    if not args.repair:
        print("`unlearnkit check --repair` fixes them: damaged entries are removed (the next `unlearnkit run` recomputes "
              "them), the index and experiment records are made to agree with the directories, reports are re-written.")
        return 1
    done, left = repair(store, result, lambda record: write_report(store, record))
    print("\nrepaired:\n" + "\n".join(f"  {line}" for line in done))
    if left:
        print("left:\n" + "\n".join(f"  {line}" for line in left))
    return 1 if left else 0


# ---------------------------------------------------------------------------------------------- the deletion ledger
def cmd_serve(args: argparse.Namespace) -> int:
    """Start the comparator (``unlearnkit.web``) on the store with uvicorn; 127.0.0.1 unless ``--host`` is given."""
    try:
        import uvicorn

        from .web import create_app
        app = create_app(args.store)
    except ImportError as exc:
        raise ConfigError(f"`unlearnkit serve` needs the web extra ({exc}): pip install 'unlearnkit[web]'.") from None
    print(f"unlearnkit comparator on {args.store}: open http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from .ledger import keygen

    private, public, fingerprint = keygen(args.path)
    print(f"private key: {private} (mode 0600; keep it secret)\npublic key:  {public}\nfingerprint: {fingerprint}")
    return 0


def _ledger(args: argparse.Namespace, *, key: str | None = None, create: bool = False):  # noqa: ANN202
    from .ledger import Ledger

    return Ledger(args.ledger, key=key, files=args.files, create=create)


def cmd_forget(args: argparse.Namespace) -> int:
    import json

    from .device import resolve_device
    from .errors import ConfigError

    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params must be a JSON object, e.g. '{{\"epochs\": 2}}': {exc}") from None
    device = resolve_device(args.device)
    with _ledger(args, key=args.key, create=True) as ledger:
        cert = ledger.forget(args.model, args.ids, method=args.method, params=params, requester=args.requester,
                             request_id=args.request_id, evidence=args.evidence, store=args.store, device=device,
                             progress=_progress(args))
        path = ledger.cert_path(cert["entry_hash"])
    g = cert["guarantee"]
    verdict = f", verdict {g['verdict']}" if g.get("verdict") else ""
    print(f"entry {cert['seq']}: request {cert['request']['id']} deleted {cert['forget_set']['n']} example(s) with "
          f"{cert['method']['name']} (guarantee: {g['type']}{verdict})\nmodel after: {cert['model']['after']}\ncertificate: {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .ledger import ledger_of

    if args.ledger is None:
        if args.cert is None:
            raise ConfigError("Give a certificate to verify, or --ledger L to verify a whole ledger.")
        args.ledger = ledger_of(args.cert)
        if args.ledger is None:
            raise ConfigError(f"{args.cert} is not inside a ledger's files folder; name its ledger with --ledger.")
    with _ledger(args) as ledger:
        result = ledger.verify(args.cert, public_key=args.public_key, deep=args.deep, device=args.device)
    print(result.text())
    return 0 if result.ok else 1


def cmd_ledger(args: argparse.Namespace) -> int:
    import json

    with _ledger(args) as ledger:
        if args.action == "show":
            if args.ref is None:
                from .errors import ConfigError

                raise ConfigError("`unlearnkit ledger show` needs an entry: its number, request id or entry hash.")
            print(json.dumps(ledger.certificate(args.ref), indent=2, sort_keys=True))
            return 0
        rows = ledger.entries()
        if not rows:
            print(f"No entries in ledger {args.ledger}.")
        for r in rows:
            print(f"{r['seq']:4d}  {r['time']}  {r['request_id']:28s} {r['requester'] or '-':12s} {r['method']:14s} "
                  f"n={r['n']:<5d} {r['guarantee']:22s} {r['state']}")
        orphans = ledger.orphans()
        if orphans:
            print(f"{len(orphans)} orphan file(s) of requests that did not complete (harmless; resubmitting the request reuses them):")
            for p in orphans:
                print(f"  {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unlearnkit", description="Make a model forget chosen data, and prove it against retraining.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--store", default=DEFAULT_STORE, help=f"run store folder (default {DEFAULT_STORE}, or $UNLEARNKIT_STORE)")

    demo = sub.add_parser("demo", help="run the bundled quickstart experiment (Fashion-MNIST)")
    common(demo)
    demo.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto")
    demo.add_argument("--report", default=None, help="where to write the HTML report")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--executor", default="local", help=EXECUTOR_HELP)

    run = sub.add_parser("run", help="run an experiment file")
    run.add_argument("file")
    common(run)
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: the file's, else auto)")
    run.add_argument("--report", default=None, help="where to write the HTML report")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--executor", default="local", help=EXECUTOR_HELP)

    tn = sub.add_parser("tune", help="tune a method's hyperparameters on a validation forget set drawn from the retain data "
                                     "(never the real one), then evaluate the chosen setting once on the real forget set")
    tn.add_argument("file", help="the experiment file (its data, model, references, metrics and forget settings)")
    tn.add_argument("--method", required=True, help="the method to tune (its declared search space, or --space)")
    tn.add_argument("--trials", type=int, default=20, help="trials per forget setting (default 20)")
    tn.add_argument("--budget-seconds", type=float, default=None, help="stop starting new trials after this many seconds")
    tn.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    tn.add_argument("--space", default=None, help="a YAML search space replacing the declared one: {param: {low:, high:, log:}, "
                                                   "param: {options: [...]}}")
    tn.add_argument("--parallel", type=int, default=None, help="trials run at once (default: the executor's workers, else 1)")
    common(tn)
    tn.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: the file's, else auto)")
    tn.add_argument("--no-progress", action="store_true")
    tn.add_argument("--executor", default="local", help=EXECUTOR_HELP)

    val = sub.add_parser("validate", help="check an experiment file without running it")
    val.add_argument("file")
    val.add_argument("--no-data", action="store_true", help="do not load the dataset to check the forget sets")

    ls = sub.add_parser("ls", help="list methods, metrics, tasks, models, runs or experiments")
    ls.add_argument("what", choices=["methods", "metrics", "tasks", "models", "runs", "experiments"])
    common(ls)

    rep = sub.add_parser("report", help="write the HTML report of a stored experiment (or of the experiment of a run id)")
    rep.add_argument("run", help="experiment id or run id (a unique prefix is enough)")
    common(rep)
    rep.add_argument("-o", "--output", default=None)

    chk = sub.add_parser("check", help="check the store: digests of every run and reference, the index, experiment records, reports")
    common(chk)
    chk.add_argument("--repair", action="store_true", help="fix what can be fixed safely (damaged entries are removed, to be recomputed)")

    srv = sub.add_parser("serve", help="start the comparator: a web app to look inside the store's runs, side by side")
    common(srv)
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")

    def ledger_args(sp: argparse.ArgumentParser, default: str | None = DEFAULT_LEDGER) -> None:
        sp.add_argument("--ledger", default=default, help=f"SQLite file or postgresql:// URL (default {DEFAULT_LEDGER}, or $UNLEARNKIT_LEDGER)")
        sp.add_argument("--files", default=None, help="folder of the ledger's models and certificates (default: <ledger>-files; "
                                                      "required for PostgreSQL)")

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing certificates (private key 0600, public key PATH.pub)")
    kg.add_argument("path", help="where to write the private key")

    fg = sub.add_parser("forget", help="carry out a deletion request and record it in a ledger with a certificate")
    ledger_args(fg)
    fg.add_argument("--model", required=True, help="a model directory (model.json + weights), a run id (with --store), or a "
                                                   "model digest of the ledger; requests apply to the newest model of its lineage")
    fg.add_argument("--store", default=None, help="run store holding the --model run")
    fg.add_argument("--ids", required=True, help="id file: JSON list, {\"ids\": [...], \"train_fingerprint\": ...}, or one id per line")
    fg.add_argument("--method", required=True, help="a registered method (`unlearnkit ls methods`)")
    fg.add_argument("--params", default=None, help="method parameters as a JSON object")
    fg.add_argument("--requester", default=None, help="who asked for the deletion")
    fg.add_argument("--request-id", default=None, help="the request's id (resubmitting it is idempotent); default: a hash of the request")
    fg.add_argument("--evidence", default="none", choices=["none", "outputs", "retrain"], help="evidence tier (default none)")
    fg.add_argument("--key", default=None, help="Ed25519 private key to sign the certificate (`unlearnkit keygen`)")
    fg.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps or auto")
    fg.add_argument("--no-progress", action="store_true")

    vf = sub.add_parser("verify", help="verify a certificate (signature, chain, model files) or a whole ledger")
    vf.add_argument("cert", nargs="?", default=None, help="certificate file (default: the whole --ledger)")
    ledger_args(vf, default=None)
    vf.add_argument("--public-key", default=None, help="the public key the certificates must be signed with (default: the ledger's)")
    vf.add_argument("--deep", action="store_true", help="replay the deletion from the stored model and compare bytes")
    vf.add_argument("--device", default="cpu")

    lg = sub.add_parser("ledger", help="list the entries of a ledger (ls) or show one certificate (show REF)")
    lg.add_argument("action", choices=["ls", "show"])
    lg.add_argument("ref", nargs="?", default=None, help="entry number, request id or entry hash (show)")
    ledger_args(lg)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "demo":
            from .experiment import bundled_experiment

            rc = cmd_run(args, bundled_experiment("quickstart"))
            print(f"Compare the runs side by side: unlearnkit serve --store {args.store}  (needs the web extra)")
            return rc
        if args.cmd == "run":
            return cmd_run(args, Path(args.file))
        if args.cmd == "tune":
            return cmd_tune(args)
        if args.cmd == "validate":
            return cmd_validate(args)
        if args.cmd == "ls":
            return cmd_ls(args)
        if args.cmd == "report":
            return cmd_report(args)
        if args.cmd == "check":
            return cmd_check(args)
        if args.cmd == "serve":
            return cmd_serve(args)
        if args.cmd == "keygen":
            return cmd_keygen(args)
        if args.cmd == "forget":
            return cmd_forget(args)
        if args.cmd == "verify":
            return cmd_verify(args)
        if args.cmd == "ledger":
            return cmd_ledger(args)
    except UnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: completed runs are stored; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
