"""The two objectives of a tuning trial: how far the evidence lies outside the retrain bands (in band half-widths, 0 when
every evidence is inside), and the work the method did (example passes: the same on any machine); and one trial,
run as a picklable job on any executor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..adapters import get_adapter
from ..evaluation import EvalContext, assess, build_metric
from ..methods import build_method
from ..params import Component
from ..references import References
from ..runs.runner import UnlearnJob, result_model, unlearn_job
from ..types import Task

OBJECTIVES = ("band_distance", "example_passes")
"""What a study minimises: the distance of the evidence to the retrain band, and the method's example passes."""


def band_distance(rows: Sequence[Mapping[str, Any]]) -> tuple[float, dict[str, float]]:
    """(distance, per evidence): how far each deciding evidence of a verdict lies outside its band, in band half-widths
    (its margin with the sign turned: 0 inside), and the largest of them — 0 exactly when no evidence fails its band.
    Utility above its band (better than retraining) is no failure; evidence reported only or uninformative decides
    nothing and counts 0."""
    per: dict[str, float] = {}
    for row in rows:
        status, margin = row.get("status"), row.get("margin")
        if status not in ("more", "less") or margin is None or (row.get("role") == "utility" and status == "more"):
            continue
        per[str(row["key"])] = max(0.0, -float(margin))
    return max(per.values(), default=0.0), per


@dataclass(frozen=True)
class TrialJob:
    """One trial: unlearn the validation task's forget set with ``method`` at ``params`` and judge it against the
    validation references with ``metrics`` (picklable, so any executor can run it)."""

    number: int
    method: str
    params: Mapping[str, Any]
    task: Task
    refs: References
    metrics: tuple[Component, ...]
    seed: int
    eval_seed: int
    device: str = "cpu"


_CONTEXTS: dict[tuple[str, str, int, int], EvalContext] = {}


def trial_context(job: TrialJob) -> EvalContext:
    """The evaluation context of the job's validation task, shared by the trials that run in this process (as the
    runner shares one per task), so what depends only on the references (the retrained models' outputs, their
    relearning curves) is computed once per study, not once per trial. One task's context is kept at a time."""
    key = (job.task.fingerprint, str(job.device), job.eval_seed, id(job.refs))
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = EvalContext(job.task, get_adapter(job.task), device=job.device, seed=job.eval_seed)
    return _CONTEXTS[key]


def run_trial(job: TrialJob) -> dict[str, Any]:
    """The trial's objectives and what produced them; ``{"error": ...}`` when the method fails at that setting."""
    method = build_method(job.method, job.params)
    out = unlearn_job(UnlearnJob(method, job.refs, job.task, job.seed, job.device))
    if "error" in out:
        return {"number": job.number, "error": out["error"]}
    model = result_model(out, job.refs.original)
    ctx = trial_context(job)
    ctx.method = method
    assessment = assess(model, job.task, job.refs, [build_metric(m.name, m.params) for m in job.metrics], ctx=ctx)
    distance, per = band_distance(assessment.verdict.rows)
    cost = out["cost"]
    return {"number": job.number, "band_distance": distance, "example_passes": int(cost["example_passes"]),
            "optimizer_steps": int(cost["optimizer_steps"]), "wall_seconds": float(cost["wall_seconds"]),
            "verdict": assessment.verdict.label, "per_evidence": per, "missing": list(assessment.verdict.missing)}
