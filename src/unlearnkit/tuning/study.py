"""Fair hyperparameter tuning: an Optuna study (multi-objective TPE) over a method's declared search space, on a
validation forget set drawn from the retain data (``validation``), minimising the distance of the evidence to the
retrain band and the method's example passes; then one evaluation of the chosen setting on the real forget set.

The study lives in the run store (``<store>/tuning/<study>/journal.log``, Optuna's journal storage), so an interrupted
study resumes: finished trials are kept, trials cut off mid-run are marked failed and asked again with the same
setting. Trials run in batches of ``parallel`` through an executor (local, process, Ray)."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.forget import ForgetSpec
from ..data.sources import load_dataset
from ..errors import ConfigError
from ..experiment import Experiment
from ..io import canonical_json, read_json, write_json
from ..methods import build_method, method_params
from ..methods.base import method_not_applicable
from ..registry import METHODS
from ..runs.runner import ExperimentRunner, Log, model_spec, run_experiment
from ..runs.store import Store
from ..searchspace import Choice, Dimension, FloatRange, IntRange, check_space, declared_space, space_to_json
from ..seeding import np_rng
from ..types import Task
from ..version import code_version
from .objective import OBJECTIVES, TrialJob, run_trial
from .validation import PROTOCOL, validation_task

clock = time.monotonic  # the time budget's clock (a test replaces it)
STUDY_VERSION = "1"  # part of a study's name: bump when trials of an older study would no longer compare


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("Tuning needs Optuna: pip install 'unlearnkit[tune]' (or pip install optuna).") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distribution(dim: Dimension) -> Any:
    """The Optuna distribution of a search dimension."""
    dists = _optuna().distributions
    if isinstance(dim, FloatRange):
        return dists.FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    if isinstance(dim, IntRange):
        return dists.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    assert isinstance(dim, Choice)
    return dists.CategoricalDistribution(list(dim.options))


def check_budget(trials: Any, budget_seconds: Any, parallel: Any) -> None:
    """Refuse a trial count, time budget or batch size that cannot work, naming it."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"tune: trials must be a whole number >= 1 (the study's size), got {trials!r}.")
    if budget_seconds is not None and (isinstance(budget_seconds, bool) or not isinstance(budget_seconds, (int, float))
                                       or not budget_seconds > 0):
        raise ConfigError(f"tune: budget_seconds must be a number > 0 (or None for no time limit), got {budget_seconds!r}.")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ConfigError(f"tune: parallel must be a whole number >= 1 (trials run at once), got {parallel!r}.")


def choose(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chosen trial: among the completed ones, the nearest to the retrain band, then the cheapest, then the first."""
    done = [t for t in trials if t["state"] == "complete"]
    return min(done, key=lambda t: (t["band_distance"], t["example_passes"], t["number"])) if done else None


def pareto(trials: list[dict[str, Any]]) -> list[int]:
    """Numbers of the completed trials no other completed trial beats on both objectives (<= on both, < on one)."""
    done = [t for t in trials if t["state"] == "complete"]

    def beaten(t: dict[str, Any]) -> bool:
        return any(o["band_distance"] <= t["band_distance"] and o["example_passes"] <= t["example_passes"]
                   and (o["band_distance"] < t["band_distance"] or o["example_passes"] < t["example_passes"]) for o in done)

    return sorted(t["number"] for t in done if not beaten(t))


@dataclass
class TuneResult:
    """Per forget setting of the experiment: the study record (``studies``) and the experiment record of the chosen
    setting's evaluation on the real forget set (``experiments``; None when the study has no completed trial or
    ``evaluate`` was off)."""

    studies: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any] | None] = field(default_factory=list)


class Tuner:
    """Tunes one method of an experiment (it need not be listed there; if it is, its parameters there are the base the
    search varies) on each of the experiment's forget settings. ``run()`` returns a ``TuneResult``."""

    def __init__(self, exp: Experiment, store: Store, method: str, *, trials: int = 20, budget_seconds: float | None = None,
                 seed: int = 0, space: Mapping[str, Any] | None = None, executor: Any = None, parallel: int = 1,
                 device: str = "auto", progress: bool = True, log: Log | None = None, evaluate: bool = True) -> None:
        check_budget(trials, budget_seconds, parallel)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"tune: seed must be an integer, got {seed!r}.")
        if exp.requests:
            raise ConfigError("tune: the experiment is a stream of deletion requests; tuning works on forget sets (forget:).")
        if method not in METHODS:
            raise ConfigError(f"tune: {METHODS.unknown_message(method)}")
        cls = METHODS.get(method)
        self.exp = exp
        self._source: Any = None
        if space is None:  # the method's own space for this data's modality (classifier or causal LM)
            modality = self.source.modality
            space = declared_space(cls, modality)
            if space is None:
                tunable = sorted(n for n in METHODS.names() if modality in getattr(METHODS.get(n), "modalities", ())
                                 and declared_space(METHODS.get(n), modality) is not None)
                raise ConfigError(f"tune: method {method!r} declares no search space for {modality!r} tasks; give one "
                                  f"(space=...) or tune one that does: {tunable}.")
            self.space_declared = True
        else:
            self.space_declared = False
        self.space = check_space(cls, space, f"method {method!r}")
        self.base = next((dict(m.params) for m in exp.methods if m.name == method), {})
        build_method(method, self.base)  # the base parameters are valid
        self.exp, self.store, self.method = exp, store, method
        self.trials, self.budget_seconds, self.seed, self.parallel, self.evaluate = trials, budget_seconds, seed, parallel, evaluate
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.runner = ExperimentRunner(exp, store, device=device, progress=progress, log=self.log, executor=executor)
        self.executor = self.runner.executor

    # ------------------------------------------------------------------------------------------ the pieces
    @property
    def source(self) -> Any:
        if self._source is None:
            self._source = load_dataset(self.exp.dataset.name, **self.exp.dataset.params)
        return self._source

    def validation(self, spec: ForgetSpec) -> tuple[Task, Any, Task]:
        """(validation task, its references, real task) of one forget setting; the references are trained once and cached."""
        real = self.runner.build_task(self.source, spec)
        vtask = validation_task(real, spec, self.source.test, np_rng("tune-validation", self.exp.task_seed, spec.to_dict()),
                                info={"dataset": self.exp.dataset.to_dict()})
        self.log(f"[{spec.label()}] validation forget set: {vtask.info['forget_label']}, {len(vtask.forget)} examples, retain "
                 f"{len(vtask.retain)} (drawn from the {len(real.retain)} retained); training or loading its references ...")
        return vtask, self.runner.references(vtask, self.source), real

    def study_name(self, spec: ForgetSpec, vtask: Task) -> str:
        """The study's identity: method, base parameters, space, validation task, references, metrics, seed, code."""
        blob = canonical_json({"v": STUDY_VERSION, "method": self.method, "base": self.base, "space": space_to_json(self.space),
                               "task": vtask.fingerprint, "forget": spec.to_dict(), "train": self.exp.train.to_dict(),
                               "model": model_spec(self.exp.model, self.source), "retrain_seeds": self.exp.retrain_seeds,
                               "metrics": [m.to_dict() for m in self.exp.metrics_for(vtask.modality)], "seed": self.seed,
                               "method_seed": self.exp.seeds[0], "code": code_version()})
        return f"{self.method}-{spec.slug()}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def study_dir(self, name: str) -> Path:
        return self.store.root / "tuning" / name

    def open_study(self, name: str) -> Any:
        optuna = _optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        folder = self.study_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(folder / "journal.log")))
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=max(2, min(10, self.trials // 3)), constant_liar=True)
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=["minimize", "minimize"],
                                   load_if_exists=True)

    def search(self, spec: ForgetSpec, vtask: Task, vrefs: Any) -> dict[str, Any]:
        """Run (or resume) the study of one forget setting on its validation task; returns the study record."""
        from optuna.trial import TrialState
        from tqdm.auto import tqdm

        name = self.study_name(spec, vtask)
        study = self.open_study(name)
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # cut off by an interruption
            study.tell(stale.number, state=TrialState.FAIL)
            study.enqueue_trial(dict(stale.params), user_attrs={"retry_of": stale.number})
        finished = len(self._finished(study))
        if finished:
            self.log(f"[{spec.label()}] resuming study {name}: {finished} trial(s) finished before")
        dists = {key: distribution(dim) for key, dim in self.space.items()}
        metrics = self.exp.metrics_for(vtask.modality)
        t0, stopped = clock(), None
        bar = tqdm(total=self.trials, initial=min(finished, self.trials), desc=f"tuning {self.method} ({spec.label()})",
                   disable=not self.progress, leave=False)
        try:
            while finished < self.trials:
                if self.budget_seconds is not None and clock() - t0 >= self.budget_seconds:
                    stopped = f"time budget of {self.budget_seconds:g} s reached after {finished} trial(s)"
                    break
                asked = [study.ask(dists) for _ in range(min(self.parallel, self.trials - finished))]
                jobs = [TrialJob(t.number, self.method, {**self.base, **t.params}, vtask, vrefs, metrics, self.exp.seeds[0],
                                 self.exp.task_seed, self.runner.device) for t in asked]
                for i, out in self.executor.imap(run_trial, jobs, desc="tuning trials"):
                    trial = asked[i]
                    if "error" in out:
                        trial.set_user_attr("error", out["error"])
                        study.tell(trial, state=TrialState.FAIL)
                        self.log(f"  trial {trial.number}: {trial.params} failed: {out['error']}")
                    else:
                        for key in ("optimizer_steps", "wall_seconds", "verdict", "per_evidence"):
                            trial.set_user_attr(key, out[key])
                        study.tell(trial, [out["band_distance"], out["example_passes"]])
                        self.log(f"  trial {trial.number}: {canonical_json(trial.params)} -> {out['verdict']}, distance "
                                 f"{out['band_distance']:.3f} half-widths, {out['example_passes']} example passes")
                    finished += 1
                    bar.update(1)
        finally:
            bar.close()
        return self.study_record(spec, vtask, vrefs, study, name, stopped)

    @staticmethod
    def _finished(study: Any) -> list[Any]:
        """Trials that count towards the study's size: completed, or failed by the method (not cut off by an interruption)."""
        from optuna.trial import TrialState

        return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
                or (t.state == TrialState.FAIL and "error" in t.user_attrs)]

    def study_record(self, spec: ForgetSpec, vtask: Task, vrefs: Any, study: Any, name: str, stopped: str | None) -> dict[str, Any]:
        from optuna.trial import TrialState

        trials = []
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                trials.append({"number": t.number, "state": "complete", "params": dict(t.params), "band_distance": float(t.values[0]),
                               "example_passes": int(t.values[1]), **{k: t.user_attrs.get(k) for k in
                                                                       ("optimizer_steps", "wall_seconds", "verdict", "per_evidence")}})
            elif t.state == TrialState.FAIL:
                trials.append({"number": t.number, "state": "failed" if "error" in t.user_attrs else "interrupted",
                               "params": dict(t.params), "error": t.user_attrs.get("error")})
        chosen = choose(trials)
        retrain_passes = [c["example_passes"] for c in vrefs.info["costs"].get("retrain", [])]
        record = {
            "study": name, "method": self.method, "base_params": self.base, "forget": spec.to_dict(), "label": spec.label(),
            "space": space_to_json(self.space), "space_source": "declared by the method" if self.space_declared else "given",
            "objectives": list(OBJECTIVES), "seed": self.seed, "n_trials": self.trials, "budget_seconds": self.budget_seconds,
            "stopped": stopped, "validation": {"protocol": PROTOCOL, "forget": vtask.info["forget"], "label": vtask.info["forget_label"],
                                               "n_forget": len(vtask.forget), "n_retain": len(vtask.retain), "fingerprint": vtask.fingerprint,
                                               "retrain_example_passes": sum(retrain_passes) / len(retrain_passes) if retrain_passes else None,
                                               "references": vrefs.info["keys"]},
            "trials": trials, "pareto": pareto(trials),
            "chosen": None if chosen is None else {"number": chosen["number"], "params": {**self.base, **chosen["params"]},
                                                   "band_distance": chosen["band_distance"], "example_passes": chosen["example_passes"],
                                                   "verdict": chosen["verdict"]},
        }
        write_json(self.study_dir(name) / "study.json", record)
        return record

    def evaluate_chosen(self, spec: ForgetSpec, study: dict[str, Any]) -> dict[str, Any]:
        """Run the chosen setting once on the real forget set (against the real references), next to the method's
        default (or the experiment's) setting, as an experiment in the store whose record keeps the study."""
        chosen = build_method(self.method, study["chosen"]["params"])
        default = build_method(self.method, self.base)
        tuned_entry = {"name": self.method, "params": dict(study["chosen"]["params"])}
        same = method_params(chosen) == method_params(default)
        entries = [tuned_entry] if same else [{"name": self.method, "params": self.base}, tuned_entry]
        spec_dict = {**self.exp.to_dict(), "name": f"{self.exp.name} tuned {self.method} ({spec.label()})", "forget": [spec.to_dict()],
                     "methods": entries, "device": self.exp.device,
                     "description": f"{self.method} tuned by `unlearnkit tune` (study {study['study']}), then evaluated once here"}
        exp = Experiment.from_dict(spec_dict, source=self.exp.source)
        labels = exp.method_labels()
        study = {**study, "evaluation": {"experiment": exp.exp_id(), "tuned_label": labels[-1],
                                         "default_label": labels[0] if len(labels) > 1 else labels[-1]}}
        self.log(f"[{spec.label()}] evaluating the chosen setting {canonical_json(study['chosen']['params'])} once on the real forget set ...")
        record = run_experiment(exp, self.store, device=self.runner.device, progress=self.progress, log=self.log, executor=self.executor)
        record = {**self.store.load_experiment(record["exp_id"]), "tuning": study}
        self.store.save_experiment(record)
        write_json(self.study_dir(study["study"]) / "study.json", study)
        return record

    def run(self) -> TuneResult:
        result = TuneResult()
        for spec in self.exp.forget:
            reason = method_not_applicable(build_method(self.method, self.base), self.runner.build_task(self.source, spec))
            if reason is not None:  # e.g. a class method on a random forget set: nothing to tune, no references trained
                self.log(f"[{spec.label()}] {self.method} not tuned: it {reason}")
                result.studies.append({"method": self.method, "label": spec.label(), "forget": spec.to_dict(), "not_applicable": reason,
                                       "trials": [], "pareto": [], "chosen": None, "validation": None})
                result.experiments.append(None)
                continue
            vtask, vrefs, _ = self.validation(spec)
            study = self.search(spec, vtask, vrefs)
            record = None
            if study["chosen"] is None:
                self.log(f"[{spec.label()}] no trial completed; nothing to evaluate.")
            elif self.evaluate:
                record = self.evaluate_chosen(spec, study)
                study = record["tuning"]
            result.studies.append(study)
            result.experiments.append(record)
        return result


def tune(exp: Experiment, store: Store, method: str, **kwargs: Any) -> TuneResult:
    """Tune ``method`` on each forget setting of ``exp`` (see ``Tuner``) and evaluate the chosen settings once."""
    return Tuner(exp, store, method, **kwargs).run()


def load_study(store: Store, name: str) -> dict[str, Any]:
    """The record of a finished study in ``store``."""
    path = store.root / "tuning" / name / "study.json"
    if not path.is_file():
        raise ConfigError(f"No tuning study {name!r} in {store.root}.")
    return read_json(path)
