"""Run an experiment: tasks -> references -> methods × seeds -> evidence -> verdict -> store; or a stream of deletion
requests, each applied to the model the previous one left and evaluated against retraining without everything deleted
so far (``ExperimentRunner._run_stream``).

Completed runs are found by their key and reused, so an interrupted experiment resumes where it
stopped; a run is stored only when it is complete (atomic directory rename).

Exact methods (``ExactMethod``: sharded, adapter or analytic-head regimes) return a model of their own architecture, not
the original's: ``unlearn_job`` then returns that module rather than a state dict, and the run record says so
(``model_identity``). Through the process or Ray executors the module crosses a process boundary by pickle, in memory
(never from a file), as every job's arguments and results do.

Longer than 60 lines: the grid of forget sets and the request stream share the job, key and storing code here."""

from __future__ import annotations

import copy
import functools
import platform
from dataclasses import dataclass, field
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..cost import Cost, CostMeter
from ..data.forget import ForgetSpec, draw_public, make_task, request_rng, select_requests, stream_forget_info, task_from_ids
from ..device import resolve_device
from ..data.sources import load_dataset
from ..errors import ConfigError, UnlearnError
from ..evaluation import EvalContext, assess, build_metric
from ..exact.base import ids_fingerprint
from ..experiment import Experiment
from ..io import canonical_json, check_finite_state
from ..methods import build_method, describe_method
from ..methods.base import method_not_applicable
from ..models import build_model
from ..lm.guard import is_guard
from ..models.causal_lm import drop_output_capture, register_output_capture, weights_identity
from ..references import References
from .references import build_references
from ..registry import METRICS
from ..seeding import np_rng, torch_seed
from ..types import MetricResult, Task
from .key import SCHEMA_VERSION, code_version, run_key
from .store import Store

Log = Callable[[str], None]


def environment() -> dict[str, Any]:
    import subprocess

    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
            "cpu": cpu_model(), "unlearnkit": code_version(), "git": git, "threads": torch.get_num_threads()}


def cpu_model() -> str:
    """The processor's model name (floating-point results differ between CPU kernels, e.g. AVX2 and AVX-512), from
    /proc/cpuinfo on Linux, else what ``platform`` reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def split_arrays(results: dict[str, MetricResult]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Results as JSON with per-example arrays moved out (to be stored as .npy)."""
    out: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, result in results.items():
        rec = result.to_json()
        refs = {}
        for key, (ids, values) in result.per_example.items():
            base = f"{name}.{key}"
            arrays[f"{base}.ids"] = np.asarray(ids, dtype=np.int64)
            arrays[f"{base}.values"] = np.asarray(values, dtype=np.float64)
            refs[key] = {"ids": f"{base}.ids", "values": f"{base}.values"}
        rec["per_example"] = refs
        out[name] = rec
    return out, arrays


@dataclass(frozen=True)
class UnlearnJob:
    """One unlearning run (picklable, so any executor can run it). ``start``: the model to unlearn from (None: the
    original); ``request``: the request's index (from 1) in a stream, 0 outside one."""

    method: Any
    refs: References
    task: Task
    seed: int
    device: str
    progress: bool = False
    start: nn.Module | None = None
    request: int = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without transformers' output-capturing hooks (reinstalled on the next forward, here and there)."""
        drop_output_capture(self.start, self.refs.original, *self.refs.retrained_seeds)
        return dict(self.__dict__)


def job_rng(job: UnlearnJob) -> np.random.Generator:
    """The method's generator: from its name and seed (so a stream's first request draws as a plain run does), and the
    request's index for the later requests of a stream."""
    if job.request <= 1:
        return np_rng("method", job.method.name, job.seed)
    return np_rng("method", job.method.name, job.seed, "request", job.request)


def same_architecture(model: nn.Module, original: nn.Module | None) -> bool:
    """Whether ``model``'s weights load into the original's architecture (same class, same state names and shapes)."""
    if original is None or type(model) is not type(original):
        return False
    a, b = model.state_dict(), original.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def model_identity(model: nn.Module, original: nn.Module | None) -> dict[str, Any]:
    """What a run's stored weights are: the original's architecture, or an exact regime's own model (its class, regime
    and guarantee), which only its method can rebuild (``Store.load_run_model`` refuses it)."""
    out: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                           "original_architecture": same_architecture(model, original)}
    for attr in ("regime", "guarantee"):
        if getattr(model, attr, None) is not None:
            out[attr] = str(getattr(model, attr))
    if is_guard(model):  # an inference-time guard: the original's weights, untouched, and the guard's own state
        out.update({"guard": model.guard_name, "original_architecture": False, "weights": "the original's (untouched)"})
    return out


def unlearn_job(job: UnlearnJob) -> dict[str, Any]:
    """Run the method on a copy of the original (or of ``job.start``) and measure its cost; errors of the method are
    returned, not raised, so one failing run does not stop the grid.

    An exact method (one with ``serve``) first gets its served model, built by its regime from the task's training data
    (or the ``start`` model itself, when that is already its served model: a stream's later requests): that training is
    metered apart, as ``info["training_cost"]``, and the run's cost is the deletion's alone. Both draw from one
    generator, in the order ``unlearn`` alone would. The result holds the state dict when the output has the original's
    architecture, else the output module itself (``"model"``)."""
    register_output_capture(job.start, job.refs.original, *job.refs.retrained_seeds)  # unpickled in a spawned worker
    model = copy.deepcopy(job.start if job.start is not None else job.refs.original)
    rng = job_rng(job)
    training: dict[str, Any] | None = None
    try:
        serve = getattr(job.method, "serve", None)
        if callable(serve):
            with CostMeter(job.device) as train_meter:
                served = serve(model, job.task, job.refs, rng=rng, device=job.device, progress=job.progress)
            assert train_meter.cost is not None
            training = {"training_cost": train_meter.cost.to_json() if served is not model else None,
                        "served": "built for this run" if served is not model else "the model the previous request left"}
            model = served
        with CostMeter(job.device) as meter:
            out = job.method.unlearn(model, job.task, job.refs, rng=rng, device=job.device, progress=job.progress)
        check_finite_state(out.model.state_dict(), f"the model produced by method {job.method.name!r}")
    except UnlearnError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    assert meter.cost is not None
    result: dict[str, Any] = {"info": {**out.info, **(training or {})}, "cost": meter.cost.to_json()}
    if same_architecture(out.model, job.refs.original):
        result["state"] = {k: v.detach().cpu() for k, v in out.model.state_dict().items()}
    else:
        drop_output_capture(out.model)  # sent back to the parent: picklable
        result["model"] = out.model
    return result


def result_model(out: Mapping[str, Any], original: nn.Module) -> nn.Module:
    """The model of an ``unlearn_job`` result: its module, or its state loaded into a copy of the original."""
    if "model" in out:
        return out["model"]
    model = copy.deepcopy(original)
    model.load_state_dict(out["state"])
    return model


HEADLINES = (("retrain_gap", "avg_gap", "avg gap"), ("regression_gap", "avg_gap", "avg gap"), ("forget_quality", "statistic", "KS stat"))


def headline(results: dict[str, Any]) -> str:
    """The one number a progress line shows: the average gap to retrain, or the forget-quality KS statistic for LMs."""
    for metric, key, label in HEADLINES:
        value = results.get(metric, {}).get("values", {}).get(key)
        if value is not None:
            return f"{label} {value:.4f}"
    return "no headline metric"


def model_spec(model: Any, source: Any) -> dict[str, Any]:
    """The reference models' identity in cache and run keys: the experiment's model entry, the data's input shape and
    classes, and the files of pretrained weights it loads (``weights_identity``), so a model folder rewritten in place
    never reuses references trained from its earlier content."""
    return {**model.to_dict(), "input_shape": list(source.input_shape), "n_classes": source.n_classes,
            **weights_identity(model.name, model.params)}


@dataclass(eq=False)
class _Chain:
    """One method × seed along a stream: its run ids in request order, the model its last step left (None when that
    step was reused from the store, or the stream failed), and whether a step failed."""

    method: Any
    label: str
    mdesc: dict[str, Any]
    seed: int
    runs: list[str] = field(default_factory=list)
    model: nn.Module | None = None
    failed: bool = False

    def done(self, k: int, run_id: str, model: nn.Module | None) -> None:
        assert len(self.runs) == k, (self.label, k, self.runs)
        self.runs.append(run_id)
        self.model = model


def oracle_info(source: Any) -> dict[str, Any]:
    """``{"oracle": False}`` for data without a retrained oracle (the ``knowledge`` source), carried into its tasks' info so
    that ``assess`` gives the verdict without an oracle; nothing otherwise (the tasks of other data are unchanged)."""
    return {"oracle": False} if source.info.get("oracle", True) is False else {}


def check_oracle(exp: Experiment, source: Any) -> bool:
    """Whether the data has a retrained oracle; a ConfigError when ``references.retrain_seeds`` does not match it (0 is for
    data without one, the ``knowledge`` source, and only for it)."""
    oracle = source.info.get("oracle", True) is not False
    if oracle != (exp.retrain_seeds > 0):
        raise ConfigError(f"references.retrain_seeds: {exp.retrain_seeds} for data {source.name!r}, which "
                          + ("has a retrained oracle: give at least 2 retrained seeds (3 recommended)." if oracle else
                             "has no retrained oracle (real knowledge from pretraining): give retrain_seeds: 0."))
    return oracle


class ExperimentRunner:
    """Runs one experiment against a store. ``run()`` returns the experiment record."""

    def __init__(self, exp: Experiment, store: Store, *, device: str = "auto", progress: bool = True, log: Log | None = None,
                 executor: Any = None) -> None:
        from ..executor import LocalExecutor

        self.exp = exp
        self.store = store
        self.device = resolve_device(device if device != "auto" else exp.device)
        self.progress = progress
        self.executor = executor or LocalExecutor()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.public: np.ndarray | None = None  # a request stream's declared non-deletable ids (public:)

    def build_task(self, source: Any, spec: Any) -> Task:
        return make_task(
            self.exp.dataset.name, source.train, source.test, spec, np_rng("forget", self.exp.task_seed, spec.to_dict()),
            n_classes=source.n_classes, info={"dataset": self.exp.dataset.to_dict(), **oracle_info(source)}, modality=source.modality,
            probes=getattr(source, "probes", None) or None, eval_retain_groups=source.info.get("eval_retain_groups"),
        )

    def references(self, task: Task, source: Any) -> References:
        model = self.exp.model
        factory = functools.partial(build_model, model.name, tuple(source.input_shape), source.n_outputs, **model.params)  # picklable
        spec = model_spec(model, source)
        if not check_oracle(self.exp, source):  # the pretrained model is the original: nothing is trained, nothing retrained
            with torch_seed(self.exp.original_seed):
                original = factory().to(self.device).eval()
            return References(original=original, retrained_seeds=(), train_config=self.exp.train, model_factory=factory,
                              info={"original_seed": self.exp.original_seed, "retrain_seeds": [], "costs": {}, "keys": {}, "model": spec,
                                    "oracle": "none: the pretrained model is the original, no model is retrained"})
        return build_references(task, factory, self.exp.train, retrain_seeds=self.exp.retrain_seeds, original_seed=self.exp.original_seed,
                                model_spec=spec, store=self.store, device=self.device, progress=self.progress, executor=self.executor)

    def key_parts(self, task: Task, refs: References, kind: str, method: dict[str, Any], seed: int) -> dict[str, Any]:
        return {
            "kind": kind,
            "method": method,
            # the forget spec too: metrics read it (e.g. class forgetting), and two specs can select the same examples
            "task": {"fingerprint": task.fingerprint, "version": task.version, "forget": task.info.get("forget")},
            "references": {"model": refs.info["model"], "train": self.exp.train.to_dict(), "original_seed": refs.info["original_seed"],
                           "retrain_seeds": refs.info["retrain_seeds"]},
            "metrics": [{**m.to_dict(), "version": METRICS.get(m.name).version} for m in self.exp.metrics_for(task.modality)],
            "seed": seed,
            "eval_seed": self.exp.task_seed,  # the evaluation context's seed (attack splits, relearning, probes)
            "device": torch.device(self.device).type,
        }

    def run(self) -> dict[str, Any]:
        exp = self.exp
        exp_id = exp.exp_id()
        record: dict[str, Any] = {"schema": SCHEMA_VERSION, "exp_id": exp_id, "name": exp.name, "spec": exp.to_dict(), "source": exp.source,
                                  "status": "running", "device": self.device, "tasks": [], "runs": [], "failures": [],
                                  "environment": environment(), "started": time.time()}
        self.store.save_experiment(record)
        try:
            self.log(f"Loading dataset {exp.dataset.name} ...")
            source = load_dataset(exp.dataset.name, **exp.dataset.params)
            if exp.requests:
                self._run_stream(source, record)
            for spec in exp.forget:
                self._run_task(source, spec, record)
            record["status"] = "failed" if record["failures"] else "complete"
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            raise
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record["finished"] = time.time()
            self.store.save_experiment(record)
            self.store.release_locks()
        return record

    def _run_task(self, source: Any, spec: Any, record: dict[str, Any]) -> None:
        exp = self.exp
        task = self.build_task(source, spec)
        self.log(f"[{spec.label()}] forget {len(task.forget)} / retain {len(task.retain)} / test {len(task.test)} examples; "
                 f"training or loading the original and {exp.retrain_seeds} retrained reference(s) on {self.device} ...")
        refs = self.references(task, source)
        adapter = get_adapter(task)
        metrics = [build_metric(m.name, m.params) for m in exp.metrics_for(task.modality)]
        ctx = EvalContext(task, adapter, device=self.device, seed=exp.task_seed, store=self.store, progress=self.progress,
                          executor=self.executor)
        task_rec = {"label": spec.label(), "forget": spec.to_dict(), "task": task.describe(), "references": refs.info, "runs": {}}
        record["tasks"].append(task_rec)

        # the original model, evaluated like any method (it must come out "not forgotten")
        orig_id = self._evaluate_and_store(task, refs, ctx, metrics, "reference", {"name": "original", "params": {}}, exp.original_seed,
                                           refs.original, None, {}, exp_id=record["exp_id"])
        task_rec["original_run"] = orig_id
        pending, meta, plan = [], [], []  # plan: run ids in experiment order (executors may finish out of order)
        for comp, label in zip(exp.methods, exp.method_labels()):
            method = build_method(comp.name, comp.params)
            mdesc = describe_method(method)
            reason = method_not_applicable(method, task)
            if reason is not None:
                self.log(f"  {label:16s} skipped: {reason}")
                record.setdefault("skipped", []).append({"task": spec.label(), "method": label, "reason": reason})
                continue
            for seed in exp.seeds:
                run_id = run_key(self.key_parts(task, refs, "unlearn", mdesc, seed))
                plan.append(run_id)
                if self.store.reusable_run(run_id):  # verified against its digests; waits for another process writing it
                    rec = self.store.load_run(run_id)
                    self.log(f"  {label:16s} seed {seed}: {rec['verdict']['label']:15s} (cached run {run_id})")
                    task_rec["runs"].setdefault(label, []).append(run_id)
                    record["runs"].append(run_id)
                    continue
                pending.append(UnlearnJob(method, refs, task, seed, self.device, self.progress and self.executor.name == "local"))
                meta.append((method, label, mdesc, seed))
        bar = None
        if self.progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc=f"methods [{spec.label()}]", dynamic_ncols=True)
        try:
            for i, out in self.executor.imap(unlearn_job, pending, desc="unlearning runs"):
                method, label, mdesc, seed = meta[i]
                if bar is not None:
                    bar.update(1)
                if "error" in out:
                    self.log(f"[{spec.label()}] {label} seed {seed} failed: {out['error']}")
                    record["failures"].append({"task": spec.label(), "method": label, "seed": seed, "error": out["error"]})
                    continue
                model = result_model(out, refs.original)
                cost = Cost.from_json(out["cost"])
                run_id = self._evaluate_and_store(task, refs, ctx, metrics, "unlearn", mdesc, seed, model, cost, out["info"],
                                                  exp_id=record["exp_id"], method=method)
                rec = self.store.load_run(run_id)
                self.log(f"  {label:16s} seed {seed}: {rec['verdict']['label']:15s} {headline(rec['results'])}, {cost.wall_seconds:.1f}s")
                task_rec["runs"].setdefault(label, []).append(run_id)
                record["runs"].append(run_id)
                self.store.save_experiment(record)
        finally:
            if bar is not None:
                bar.close()
            rank = {r: i for i, r in enumerate(plan)}
            mine = [r for r in record["runs"] if r in rank]
            rest = [r for r in record["runs"] if r not in rank]
            record["runs"] = rest + sorted(mine, key=rank.__getitem__)
            for name, ids in task_rec["runs"].items():
                task_rec["runs"][name] = sorted(ids, key=lambda r: rank.get(r, -1))

    # ------------------------------------------------------------------------------------------ request streams
    def stream_task(self, source: Any, specs: tuple[ForgetSpec, ...], requests: list[np.ndarray], k: int, *, for_method: bool) -> Task:
        """Step ``k`` (0-based) of a stream. The method's task: forget request k, train everything not deleted before it
        (so retain is everything not deleted after it). The evaluation's task: forget everything requests 1..k+1 deleted,
        train the whole training set (what the original saw), so its references are retrained without all of it."""
        train, n = source.train, len(specs)
        common = {"n_classes": source.n_classes, "modality": source.modality, "probes": getattr(source, "probes", None) or None,
                  "eval_retain_groups": source.info.get("eval_retain_groups"), "public_ids": self.public}
        deleted = np.sort(np.concatenate(requests[: k + 1]))
        info = {"dataset": self.exp.dataset.to_dict(), **oracle_info(source), "stream": {"request": k + 1, "of": n, "deleted": int(len(deleted)),
                                                                  "deleted_fingerprint": ids_fingerprint(deleted)}}
        if for_method:
            before = np.concatenate(requests[:k]) if k else np.zeros(0, dtype=np.int64)
            left = train.subset(np.flatnonzero(~np.isin(train.ids, before)), train.name)
            return task_from_ids(self.exp.dataset.name, left, source.test, requests[k], forget_info=specs[k].to_dict(),
                                 forget_label=f"request {k + 1}/{n}: {specs[k].label()}", info=info, **common)
        return task_from_ids(self.exp.dataset.name, train, source.test, deleted, forget_info=stream_forget_info(specs[: k + 1], deleted),
                             forget_label=f"requests 1-{k + 1} of {n}" if k else f"request 1 of {n}", info=info, **common)

    def _run_stream(self, source: Any, record: dict[str, Any]) -> None:
        """Apply the experiment's requests in order. Every request is drawn (and checked) before anything is trained. At
        step k each method (× seed) unlearns request k from the model it left at step k-1 (the original at the first);
        the result is evaluated against references retrained without everything deleted so far, and stored as a run
        whose key holds the request's index and the fingerprints of the requests so far. A failed step ends that
        method's stream; a method that cannot take one of the requests is skipped."""
        exp = self.exp
        specs, n = exp.requests, len(exp.requests)
        self.public = stream_public(exp, source)
        requests = select_requests(source.train, specs, [request_rng(exp.task_seed, i, s) for i, s in enumerate(specs)], source.n_classes,
                                   public=self.public)
        method_tasks = [self.stream_task(source, specs, requests, k, for_method=True) for k in range(n)]
        deleted = 0
        stream: dict[str, Any] = {"requests": [], "runs": {}}
        if self.public is not None:
            stream["public"] = {"fraction": exp.public_fraction, "n": int(len(self.public)), "fingerprint": ids_fingerprint(self.public)}
        for k, (spec, ids) in enumerate(zip(specs, requests)):
            deleted += len(ids)
            stream["requests"].append({"request": k + 1, "label": spec.label(), "spec": spec.to_dict(), "n": int(len(ids)),
                                       "fingerprint": ids_fingerprint(ids), "deleted": deleted,
                                       "retained": int(len(source.train) - deleted)})
        record["stream"] = stream
        chains: list[_Chain] = []
        for comp, label in zip(exp.methods, exp.method_labels()):
            method = build_method(comp.name, comp.params)
            reason = next((f"request {k + 1}: {why}" for k, t in enumerate(method_tasks) if (why := method_not_applicable(method, t))), None)
            if reason is not None:
                self.log(f"  {label:16s} skipped: {reason}")
                record.setdefault("skipped", []).append({"task": "request stream", "method": label, "reason": reason})
                continue
            for seed in exp.seeds:
                chains.append(_Chain(method, label, describe_method(method), seed))
                stream["runs"].setdefault(label, {})[str(seed)] = chains[-1].runs
        for k in range(n):
            self._stream_step(source, specs, requests, method_tasks, k, chains, record)
        for c in chains:
            c.model = None

    def _stream_step(self, source: Any, specs: tuple[ForgetSpec, ...], requests: list[np.ndarray], method_tasks: list[Task], k: int,
                     chains: list[_Chain], record: dict[str, Any]) -> None:
        exp, n = self.exp, len(specs)
        task = self.stream_task(source, specs, requests, k, for_method=False)
        where = f"request {k + 1}/{n}"
        self.log(f"[{where}] {specs[k].label()}: deletes {len(requests[k])}, {len(task.forget)} deleted in all, retain {len(task.retain)}; "
                 f"training or loading the original and {exp.retrain_seeds} retrained reference(s) on {self.device} ...")
        refs = self.references(task, source)
        metrics = [build_metric(m.name, m.params) for m in exp.metrics_for(task.modality)]
        ctx = EvalContext(task, get_adapter(task), device=self.device, seed=exp.task_seed, store=self.store, progress=self.progress,
                          executor=self.executor)
        task_rec = {"label": f"{where}: {specs[k].label()}", "forget": task.info["forget"], "task": task.describe(), "references": refs.info,
                    "runs": {}, "stream_request": k + 1}
        record["tasks"].append(task_rec)
        task_rec["original_run"] = self._evaluate_and_store(task, refs, ctx, metrics, "reference", {"name": "original", "params": {}},
                                                            exp.original_seed, refs.original, None, {}, exp_id=record["exp_id"])
        extra = {"stream": {"request": k + 1, "requests": [ids_fingerprint(r) for r in requests[: k + 1]],
                            "deleted": ids_fingerprint(task.forget.ids)}}
        pending, meta, plan = [], [], []
        for c in chains:
            if c.failed:
                continue
            run_id = run_key({**self.key_parts(task, refs, "unlearn", c.mdesc, c.seed), **extra})
            plan.append(run_id)
            if self.store.reusable_run(run_id):
                rec = self.store.load_run(run_id)
                self.log(f"  {c.label:16s} seed {c.seed}: {rec['verdict']['label']:15s} (cached run {run_id})")
                c.done(k, run_id, None)
                task_rec["runs"].setdefault(c.label, []).append(run_id)
                record["runs"].append(run_id)
                continue
            try:
                start = self._stream_start(c, k, source, specs, requests, method_tasks, refs)
            except UnlearnError as exc:
                self._stream_failed(c, k, f"{type(exc).__name__}: {exc}", record)
                continue
            pending.append(UnlearnJob(c.method, refs, method_tasks[k], c.seed, self.device, self.progress and self.executor.name == "local",
                                      start=start, request=k + 1))
            meta.append(c)
        try:
            for i, out in self.executor.imap(unlearn_job, pending, desc=f"unlearning runs ({where})"):
                c = meta[i]
                if "error" in out:
                    self._stream_failed(c, k, out["error"], record)
                    continue
                model = result_model(out, refs.original)
                cost = Cost.from_json(out["cost"])
                run_id = self._evaluate_and_store(task, refs, ctx, metrics, "unlearn", c.mdesc, c.seed, model, cost, out["info"],
                                                  exp_id=record["exp_id"], method=c.method, extra_key=extra)
                c.done(k, run_id, model)
                self.log(self._stream_line(c, self.store.load_run(run_id), out["info"]))
                task_rec["runs"].setdefault(c.label, []).append(run_id)
                record["runs"].append(run_id)
                self.store.save_experiment(record)
        finally:
            rank = {r: i for i, r in enumerate(plan)}
            for name, ids in task_rec["runs"].items():
                task_rec["runs"][name] = sorted(ids, key=lambda r: rank.get(r, -1))

    def _stream_failed(self, c: _Chain, k: int, error: str, record: dict[str, Any]) -> None:
        self.log(f"[request {k + 1}/{len(self.exp.requests)}] {c.label} seed {c.seed} failed: {error}; its stream stops here")
        record["failures"].append({"task": f"request {k + 1}/{len(self.exp.requests)}", "method": c.label, "seed": c.seed, "error": error})
        c.failed, c.model = True, None

    def _stream_start(self, c: _Chain, k: int, source: Any, specs: tuple[ForgetSpec, ...], requests: list[np.ndarray],
                      method_tasks: list[Task], refs: References) -> nn.Module | None:
        """The model request ``k`` starts from: None (the original) at the first; the model the previous step left; or, when
        that step was reused from the store, its stored weights, or (an exact regime's model, whose state is more than its
        weights) the method's steps so far run again, in this process, against their stored references."""
        if k == 0:
            return None
        if c.model is not None:
            return c.model
        prev = self.store.load_run(c.runs[k - 1])
        if (prev.get("model") or {}).get("original_architecture", True):
            return self.store.load_run_model(prev["run_id"], copy.deepcopy(refs.original))
        self.log(f"  {c.label:16s} seed {c.seed}: rebuilding its model of request {k} (requests 1-{k} again: an exact regime's "
                 "state is more than its stored weights) ...")
        model: nn.Module | None = None
        for j in range(k):
            refs_j = self.references(self.stream_task(source, specs, requests, j, for_method=False), source)
            out = unlearn_job(UnlearnJob(c.method, refs_j, method_tasks[j], c.seed, self.device, False, start=model, request=j + 1))
            if "error" in out:
                raise UnlearnError(f"rebuilding request {j + 1}: {out['error']}")
            model = result_model(out, refs_j.original)
        return model

    def _stream_line(self, c: _Chain, rec: dict[str, Any], info: Mapping[str, Any]) -> str:
        """One log line of a step: verdict, headline, the deletion's cost and the stream's cumulative cost; for an exact
        regime, what the deletion touched, and the one-time training when it was built."""
        runs = [self.store.load_run(r) for r in c.runs]
        wall = sum(r["cost"]["wall_seconds"] for r in runs if r.get("cost"))
        passes = sum(r["cost"]["example_passes"] for r in runs if r.get("cost"))
        cost = rec["cost"]
        line = (f"  {c.label:16s} seed {c.seed}: {rec['verdict']['label']:15s} {headline(rec['results'])}, {cost['wall_seconds']:.2f}s, "
                f"{cost['example_passes']} example passes (stream so far: {wall:.2f}s, {passes} passes)")
        receipt = info.get("receipt")
        if receipt:
            touched = canonical_json(receipt.get("touched", {}))
            line += f"; {rec['model'].get('regime', 'exact')}: deleted {receipt['n']}, touched {touched[:80]}"
            if info.get("training_cost"):
                line += f"; served model trained once: {info['training_cost']['wall_seconds']:.2f}s"
        return line

    def _evaluate_and_store(self, task: Task, refs: References, ctx: EvalContext, metrics: list[Any], kind: str, mdesc: dict[str, Any],
                            seed: int, model: nn.Module, cost: Any, info: dict[str, Any], *, exp_id: str, method: Any = None,
                            extra_key: Mapping[str, Any] | None = None) -> str:
        parts = {**self.key_parts(task, refs, kind, mdesc, seed), **dict(extra_key or {})}
        run_id = run_key(parts)
        if self.store.reusable_run(run_id):
            return run_id
        t0 = time.perf_counter()
        ctx.method = method  # attacks that re-run the method under test (U-LiRA, ε-score, KLoM) read it; None = the original
        assessment = assess(model, task, refs, metrics, ctx=ctx)
        eval_seconds = time.perf_counter() - t0
        results_json, arrays = split_arrays(assessment.results)
        record = {
            "schema": SCHEMA_VERSION, "run_id": run_id, "kind": kind, "experiment": exp_id, "key": parts,
            "task": task.describe(),
            "method": {**mdesc, "kind": getattr(method, "kind", "reference"), "paper": getattr(method, "paper", "")},
            "seed": seed, "results": results_json, "missing": assessment.missing, "verdict": assessment.verdict.to_json(),
            "cost": cost.to_json() if cost is not None else None, "eval_seconds": eval_seconds,
            "metric_seconds": assessment.seconds,
            "unlearn_info": info, "environment": environment(), "status": "complete",
            "model": model_identity(model, refs.original),
        }
        self.store.save_run(record, model=model, arrays=arrays)
        return run_id


class RebuildError(ConfigError):
    """A stored run whose task cannot be rebuilt from its experiment (no experiment, a request stream, changed data)."""


def rebuild_run_task(store: Store, record: Mapping[str, Any]) -> tuple[Experiment, Any, Task]:
    """The experiment, data source and task of the stored run ``record``, rebuilt from its experiment record and checked
    against the task fingerprint it recorded; a RebuildError naming the run for a run without an experiment, of a
    request stream (its tasks depend on the requests before it), or whose rebuilt task differs (the data or code changed)."""
    where = f"run {record['run_id']}"
    task_rec = record.get("task") or {}
    if (task_rec.get("info") or {}).get("stream") or task_rec.get("public"):
        raise RebuildError(f"{where} belongs to a request stream; its task depends on the requests before it and is not rebuilt "
                           "on its own.")
    if not record.get("experiment"):
        raise RebuildError(f"{where} has no experiment record, so its task (and training data) cannot be rebuilt.")
    exp = Experiment.from_dict(store.load_experiment(record["experiment"])["spec"])
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    runner = ExperimentRunner(exp, store, device="cpu", progress=False, log=lambda _: None)
    task = runner.build_task(source, ForgetSpec.from_dict(task_rec["info"]["forget"]))
    if task.fingerprint != task_rec.get("fingerprint"):
        raise RebuildError(f"{where}: its task rebuilt from experiment {record['experiment']} has fingerprint {task.fingerprint[:12]}…, "
                           f"the record says {str(task_rec.get('fingerprint'))[:12]}… (the data or code changed); refusing to guess "
                           "its training data.")
    return exp, source, task


def stream_public(exp: Experiment, source: Any) -> np.ndarray | None:
    """The ids a request stream declares public (``public: {fraction}``), drawn from the task seed (whole profiles for
    language-model data), or None."""
    if exp.public_fraction is None:
        return None
    return draw_public(source.train, exp.public_fraction, np_rng("public", exp.task_seed), by_group=source.modality != "classifier")


def run_experiment(exp: Experiment, store: Store, *, device: str = "auto", progress: bool = True, log: Log | None = None,
                   executor: Any = None) -> dict[str, Any]:
    """Run (or resume) ``exp`` into ``store``; unlearning runs and reference trainings go through ``executor``
    (default: in this process). Returns the experiment record."""
    return ExperimentRunner(exp, store, device=device, progress=progress, log=log, executor=executor).run()
