"""Run an experiment: tasks -> references -> methods × seeds -> evidence -> verdict -> store.

Completed runs are found by their key and reused, so an interrupted experiment resumes where it
stopped; a run is stored only when it is complete (atomic directory rename)."""

from __future__ import annotations

import copy
import functools
import platform
from dataclasses import dataclass
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..cost import Cost, CostMeter
from ..data.forget import make_task
from ..device import resolve_device
from ..data.sources import load_dataset
from ..errors import UnlearnError
from ..evaluation import EvalContext, assess, build_metric
from ..experiment import Experiment
from ..io import check_finite_state
from ..methods import build_method, describe_method
from ..methods.base import method_not_applicable
from ..models import build_model
from ..models.causal_lm import weights_identity
from ..references import References
from .references import build_references
from ..registry import METRICS
from ..seeding import np_rng
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
    """One unlearning run (picklable, so any executor can run it)."""

    method: Any
    refs: References
    task: Task
    seed: int
    device: str
    progress: bool = False


def unlearn_job(job: UnlearnJob) -> dict[str, Any]:
    """Run the method on a copy of the original and measure its cost; errors of the method are returned,
    not raised, so one failing run does not stop the grid."""
    model = copy.deepcopy(job.refs.original)
    try:
        with CostMeter(job.device) as meter:
            out = job.method.unlearn(model, job.task, job.refs, rng=np_rng("method", job.method.name, job.seed), device=job.device,
                                     progress=job.progress)
        check_finite_state(out.model.state_dict(), f"the model produced by method {job.method.name!r}")
    except UnlearnError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    assert meter.cost is not None
    return {"state": {k: v.detach().cpu() for k, v in out.model.state_dict().items()}, "info": out.info, "cost": meter.cost.to_json()}


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

    def build_task(self, source: Any, spec: Any) -> Task:
        return make_task(
            self.exp.dataset.name, source.train, source.test, spec, np_rng("forget", self.exp.task_seed, spec.to_dict()),
            n_classes=source.n_classes, info={"dataset": self.exp.dataset.to_dict()}, modality=source.modality,
            probes=getattr(source, "probes", None) or None, eval_retain_groups=source.info.get("eval_retain_groups"),
        )

    def references(self, task: Task, source: Any) -> References:
        model = self.exp.model
        factory = functools.partial(build_model, model.name, tuple(source.input_shape), source.n_outputs, **model.params)  # picklable
        spec = model_spec(model, source)
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
                model = copy.deepcopy(refs.original)
                model.load_state_dict(out["state"])
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

    def _evaluate_and_store(self, task: Task, refs: References, ctx: EvalContext, metrics: list[Any], kind: str, mdesc: dict[str, Any],
                            seed: int, model: nn.Module, cost: Any, info: dict[str, Any], *, exp_id: str, method: Any = None) -> str:
        parts = self.key_parts(task, refs, kind, mdesc, seed)
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
            "unlearn_info": info, "environment": environment(), "status": "complete",
        }
        self.store.save_run(record, model=model, arrays=arrays)
        return run_id


def run_experiment(exp: Experiment, store: Store, *, device: str = "auto", progress: bool = True, log: Log | None = None,
                   executor: Any = None) -> dict[str, Any]:
    """Run (or resume) ``exp`` into ``store``; unlearning runs and reference trainings go through ``executor``
    (default: in this process). Returns the experiment record."""
    return ExperimentRunner(exp, store, device=device, progress=progress, log=log, executor=executor).run()
