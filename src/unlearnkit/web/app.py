"""The comparator's HTTP side: a FastAPI app over one run store, JSON under ``/api`` and the static front end at ``/``.

Over 60 lines because it holds every endpoint of the first slice (screening, run, compare, classes, embedding,
confidence changes, CKA, attack, evidence) and the guards they share: a run id is looked up in the store's index and
never joined into a path raw, every error is a JSON message (404 for an unknown id or path, 400 for a bad parameter,
422 for a run the comparator cannot analyse), no CORS middleware, GET only unless ``read_only=False``. Heavy work is
the per-run analysis (``web.analysis``), computed once per run and cached in the store; tasks rebuilt for it are kept
in memory (the last few) so the runs of one task share one rebuild."""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import StoreError, TaskError, UnlearnError
from ..runs.store import Store
from ..runs.summary import columns, metric_value, summarize
from ..verdict import Verdict
from . import analysis as an

STATIC = Path(__file__).parent / "static"
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
EXAMPLE_ID = re.compile(r"[0-9]{1,18}")
STRONG = ("u_lira", "lira", "relearn", "epsilon_score", "privacy_score", "klom")  # stored strong evidence shown with the bands
TASK_CACHE = 4  # rebuilt tasks (with their references) kept in memory


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _finite(x: Any) -> Any:
    """``x`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


class Comparator:
    """What the endpoints share: the store, the run index, the analysis cache with its per-run locks."""

    def __init__(self, store_dir: str | Path, *, device: str = "cpu") -> None:
        root = Path(store_dir)
        if not (root / "index.sqlite").is_file() or not (root / "runs").is_dir():
            raise StoreError(f"{root} is not a run store (no index.sqlite and runs/); run an experiment into it first "
                             "(`unlearnkit demo --store DIR`).")
        self.store = Store(root, tidy=False)  # as it is: the app never tidies or repairs someone's store
        self.device = device
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._tasks: OrderedDict[tuple[str, str], an.TaskContext] = OrderedDict()

    # ----------------------------------------------------------------- ids
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.store.runs()]

    def resolve(self, run_id: str, what: str = "run") -> str:
        """``run_id`` as an indexed run id (a unique prefix of one is enough), else a 404 naming it."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise ApiError(404, f"No {what} {run_id!r}: run ids are letters, digits, '-' and '_' (GET /api/runs lists them).")
        ids = self.run_ids()
        if run_id in ids:
            return run_id
        matches = [r for r in ids if r.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ApiError(404, f"Run id prefix {run_id!r} is ambiguous: {sorted(matches)[:5]}.")
        raise ApiError(404, f"No {what} {run_id!r} in this store (GET /api/runs lists them).")

    # ----------------------------------------------------------------- analysis
    def context(self, record: Mapping[str, Any]) -> an.TaskContext:
        key = (record.get("experiment") or "", record["task"]["fingerprint"])
        with self._guard:
            if key in self._tasks:
                self._tasks.move_to_end(key)
                return self._tasks[key]
        ctx = an.task_context(self.store, record, self.device)
        with self._guard:
            self._tasks[key] = ctx
            while len(self._tasks) > TASK_CACHE:
                self._tasks.popitem(last=False)
        return ctx

    def analysis(self, run_id: str, *, force: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with self._guard:
            lock = self._locks.setdefault(run_id, threading.Lock())
        with lock:  # one computation per run, however many requests wait for it
            if force:
                an.remove_cached(self.store, run_id)
            try:
                return an.analysis(self.store, run_id, context=self.context, device=self.device)
            except an.AnalysisUnavailable as exc:
                raise ApiError(422, str(exc)) from None

    def projection(self, run_id: str, name: str, summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        """A cached 2-D projection other than the analysis's PCA (UMAP), computed once per run under the run's lock."""
        with self._guard:
            lock = self._locks.setdefault(run_id, threading.Lock())
        with lock:
            try:
                return an.cached_projection(self.store, run_id, name, arrays["sample.features"], summary.get("embedding") or {})
            except an.AnalysisUnavailable as exc:
                raise ApiError(422, str(exc)) from None

    # ----------------------------------------------------------------- screening
    def screening(self) -> dict[str, Any]:
        """One row per run: experiment, task, method, params, seed, verdict, cost ratio to retraining, key evidence."""
        rows: dict[str, dict[str, Any]] = {}
        experiments = []
        for exp in self.store.experiments():
            try:
                record = self.store.load_experiment(exp["exp_id"])
                summaries = summarize(self.store, record)
            except (UnlearnError, OSError, KeyError, ValueError):
                continue  # an unreadable or incomplete experiment: its runs still appear below, without ratios
            experiments.append({"exp_id": exp["exp_id"], "name": exp["name"], "status": exp["status"], "n_runs": exp["n_runs"]})
            for s in summaries:
                ref = s.retrain_cost
                for run in ([s.original] if s.original is not None else []) + [r for row in s.rows for r in row.runs]:
                    rows[run["run_id"]] = self._row(run, record["name"], s.label, ref, s.modality)
        for r in self.store.runs():
            if r["run_id"] not in rows:
                try:
                    run = self.store.load_run(r["run_id"])
                except StoreError:
                    continue
                rows[r["run_id"]] = self._row(run, None, (run["task"].get("info") or {}).get("forget_label"), None,
                                              run["task"].get("modality", "classifier"))
        return {"runs": sorted(rows.values(), key=lambda r: (r["experiment"] or "", r["task"] or "", r["method"], r["seed"] or 0)),
                "experiments": experiments}

    @staticmethod
    def _row(run: Mapping[str, Any], experiment: str | None, label: str | None, ref: Any, modality: str) -> dict[str, Any]:
        cost = run.get("cost") or {}
        ratio = {"example_passes": None, "cpu_seconds": None}
        if ref is not None and cost:
            if ref.example_passes:
                ratio["example_passes"] = cost.get("example_passes", 0) / ref.example_passes
            if ref.cpu_seconds and cost.get("cpu_seconds") is not None:
                ratio["cpu_seconds"] = cost["cpu_seconds"] / ref.cpu_seconds
        verdict = run.get("verdict") or {}
        return _finite({
            "run_id": run["run_id"], "experiment": experiment, "exp_id": run.get("experiment"), "task": label,
            "task_fingerprint": run["task"]["fingerprint"], "modality": modality, "kind": run.get("kind"),
            "method": run["method"]["name"], "params": run["method"].get("params", {}), "seed": run.get("seed"),
            "verdict": verdict.get("label"), "verdict_display": Verdict.from_json(verdict).display if verdict else None,
            "borderline": bool(verdict.get("borderline")), "cost_ratio": ratio, "wall_seconds": cost.get("wall_seconds"),
            "evidence": {label: metric_value(run, metric, key) for label, metric, key in columns(modality)},
            "analysed": False, "stream": an.stream_request(run),
        })


def _band(values: list[Any]) -> dict[str, Any] | None:
    vals = [v for v in values if v is not None]
    return None if not vals else {"min": min(vals), "max": max(vals), "mean": float(np.mean(vals)), "n": len(vals)}


def _lm_groups(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A language-model run's class level: per profile of each split, answer probability and ROUGE-L recall of the run,
    the original and the min–max band over the retrained references."""
    out: dict[str, Any] = {"modality": "causal_lm", "unit": "profile", "scores": {k: summary["scores"][k] for k in ("answer_prob", "rouge_l")},
                           "splits": {}}
    for split, s in summary["splits"].items():
        seeds = summary["retrain"][split]
        out["splits"][split] = {**s, "original": summary["original"][split],
                                "retrain_band": {key: [_band([seed[key][i] for seed in seeds]) for i in range(len(s["groups"]))]
                                                 for key in ("answer_prob", "rouge_l")},
                                "n_retrained": len(seeds)}
    return out


def _compared_with(summary: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """What the run's views compare it with, in words, and which references the store had when the analysis ran."""
    refs = summary.get("references") or {}
    n_retrained, original = int(refs.get("retrained", 0)), bool(refs.get("original"))
    stream = an.stream_request(record)
    if stream:
        what = (f"the model after request {stream['request']} of {stream['of']} against models retrained without everything requests "
                f"1–{stream['request']} deleted ({stream['deleted']} examples), and against the original (trained on all of it)")
    else:
        what = "this run against the models retrained without its forget set, and against the original"
    notes = []
    if n_retrained == 0:
        notes.append("no retrained reference of this task is in the store: no retrain band and no CKA against retraining")
    if not original:
        notes.append("the original model is not in the store: no original values and no CKA against the original")
    return {"text": what + (f" ({n_retrained} retrained seed{'s' if n_retrained != 1 else ''})" if n_retrained else ""),
            "retrained": n_retrained, "original": original, "missing": notes, "stream": stream}


ATTACK_SCORES = {"classifier": {"loss": "loss (cross-entropy of the true class)"},
                 "causal_lm": {"loss": "loss (answer NLL, nats per token)", "min_k": "Min-K% NLL (−mean of the lowest 40% answer-token log-probs)"}}


def _attack(summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray], threshold: float | None, record: Mapping[str, Any],
            score: str = "loss") -> dict[str, Any]:
    """The score-threshold membership attack of forget (members) vs test (non-members): an example is called a member
    when its score (loss; for language models also Min-K% NLL) is <= the threshold. TPR = members called members, FPR =
    non-members called members. When the task forgets whole classes the non-members are the test examples of those
    classes (as the battery's class-forgetting attacks use them): other classes' test examples would separate from the
    forget set by class, not by membership. A language model's non-members are its holdout profiles; items without a
    score (no answer token) are left out."""
    modality = summary.get("modality", "classifier")
    member, other = arrays[f"forget.{score}"], arrays[f"test.{score}"]
    member_ids, test_ids = arrays["forget.ids"], arrays["test.ids"]
    ok_m, ok_o = np.isfinite(member), np.isfinite(other)
    member, member_ids, other, test_ids = member[ok_m], member_ids[ok_m], other[ok_o], test_ids[ok_o]
    test_labels = arrays["test.labels"][ok_o]
    spec = ((record.get("task") or {}).get("info") or {}).get("forget") or {}
    classes = spec.get("classes") if spec.get("kind") == "classes" and spec.get("fraction") in (None, 1.0) else None
    if classes:
        same = np.isin(test_labels, np.asarray(classes, dtype=np.int64))
        if same.any():
            other, test_ids = other[same], test_ids[same]
    both = np.r_[member, other]
    if threshold is None:  # default: the threshold of the largest TPR − FPR (Youden's J) over every distinct score
        candidates = np.unique(both)  # counts at each candidate by binary search in the sorted scores: O(n log n)
        tpr_all = np.searchsorted(np.sort(member), candidates, side="right") / max(len(member), 1)
        fpr_all = np.searchsorted(np.sort(other), candidates, side="right") / max(len(other), 1)
        threshold = float(candidates[int(np.argmax(tpr_all - fpr_all))])
    tpr, fpr = float((member <= threshold).mean()), float((other <= threshold).mean())
    hi = float(np.quantile(both, 0.99)) if len(both) else 1.0
    edges = np.linspace(0.0, max(hi, 1e-6), 41)
    # rank AUC of "lower loss = member" (ties count half)
    order = np.argsort(np.r_[-member, -other], kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    _, inv = np.unique(np.r_[-member, -other], return_inverse=True)
    ranks = np.bincount(inv, weights=ranks)[inv] / np.bincount(inv)[inv]  # average ranks of ties
    auc = float((ranks[:len(member)].sum() - len(member) * (len(member) + 1) / 2) / (len(member) * len(other))) if len(member) and len(other) else None
    privacy = (record.get("results") or {}).get("privacy_score")
    cap = 2000
    key = "loss" if score == "loss" else "score"
    return _finite({
        "score": ATTACK_SCORES[modality][score], "score_name": score, "rule": f"member when {'loss' if score == 'loss' else 'Min-K% NLL'} <= threshold",
        "threshold": threshold, "tpr": tpr, "fpr": fpr, "advantage": tpr - fpr, "auc": auc,
        "n": {"forget": int(len(member)), "test": int(len(other))},
        "non_members": (f"test examples of the forgotten class(es) {list(classes)}" if classes
                        else "holdout profiles (never trained)" if modality == "causal_lm" else "test examples"),
        "histogram": {"edges": edges.tolist(), "forget": np.histogram(np.clip(member, 0, edges[-1]), edges)[0].tolist(),
                      "test": np.histogram(np.clip(other, 0, edges[-1]), edges)[0].tolist()},
        "instances": {"forget": [{"id": int(i), key: float(v), "member": bool(v <= threshold)}
                                 for i, v in zip(member_ids[:cap], member[:cap])],
                      "test": [{"id": int(i), key: float(v), "member": bool(v <= threshold)}
                               for i, v in zip(test_ids[:cap], other[:cap])],
                      "truncated_to": cap},
        "privacy_score": None if privacy is None else {"values": privacy.get("values"), "strongest_attack": (privacy.get("info") or {}).get("strongest_attack"),
                                                       "paper": "Unlearning Comparator (Lee et al., IEEE TVCG 2026)"},
    })


def create_app(store_dir: str | Path, *, read_only: bool = True, device: str = "cpu") -> FastAPI:
    """The comparator over the run store ``store_dir``. ``read_only`` (default): GET only; the one thing it writes is
    its per-run analysis cache under ``<store>/analysis/``, never a run. ``read_only=False`` adds
    ``POST /api/runs/{id}/analysis`` (recompute a run's analysis now)."""
    comp = Comparator(store_dir, device=device)
    app = FastAPI(title="unlearnkit comparator", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.comparator = comp

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"Not found: {request.url.path!r} (GET /api/runs lists the runs)",
                   405: f"Method {request.method} not allowed: the comparator is read-only"}.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message, "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"Bad parameter: {problems}", "status": 400}, status_code=400)

    @app.exception_handler(UnlearnError)
    async def _unlearn_error(_: Request, exc: UnlearnError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "status": 422}, status_code=422)

    def run_and_analysis(run_id: str) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        rid = comp.resolve(run_id)
        summary, arrays = comp.analysis(rid)
        return rid, summary, arrays

    def same_task(a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]]:
        ra, rb = comp.store.load_run(a), comp.store.load_run(b)
        if ra["task"]["fingerprint"] != rb["task"]["fingerprint"]:
            raise ApiError(400, f"Runs {a} and {b} are of different tasks ({ra['task'].get('info', {}).get('forget_label')} of "
                                f"{ra['task']['name']} vs {rb['task'].get('info', {}).get('forget_label')} of {rb['task']['name']}); "
                                "compare two runs of the same task.")
        return ra, rb

    @app.get("/api/runs")
    def runs() -> Any:
        out = comp.screening()
        for row in out["runs"]:
            row["analysed"] = an.is_cached(comp.store, row["run_id"])
        return out

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> Any:
        return _finite(comp.store.load_run(comp.resolve(run_id)))

    @app.get("/api/compare")
    def compare(a: str = Query(...), b: str = Query(...)) -> Any:
        ia, ib = comp.resolve(a, "run A"), comp.resolve(b, "run B")
        ra, rb = same_task(ia, ib)
        modality = ra["task"].get("modality", "classifier")
        rows = {r["run_id"]: r for r in comp.screening()["runs"] if r["run_id"] in (ia, ib)}
        evidence = {label: {"a": metric_value(ra, metric, key), "b": metric_value(rb, metric, key)} for label, metric, key in columns(modality)}
        bands = (ra.get("verdict") or {}).get("bands") or {}
        return _finite({"a": rows.get(ia), "b": rows.get(ib), "task": ra["task"], "evidence": evidence, "bands": bands})

    @app.get("/api/runs/{run_id}/classes")
    def classes(run_id: str) -> Any:
        rid, summary, _ = run_and_analysis(run_id)
        if summary.get("modality") == "causal_lm":
            return _finite({"run_id": rid, **_lm_groups(summary), "compared_with": _compared_with(summary, comp.store.load_run(rid))})
        out: dict[str, Any] = {"run_id": rid, "modality": "classifier", "n_classes": summary["n_classes"], "splits": {},
                               "compared_with": _compared_with(summary, comp.store.load_run(rid))}
        for split, s in summary["splits"].items():
            seeds = summary["retrain"][split]
            band = []
            for c in range(summary["n_classes"]):
                vals = [v[c] for v in seeds if v[c] is not None]
                band.append(None if not vals else {"min": min(vals), "max": max(vals), "mean": float(np.mean(vals)), "n": len(vals)})
            out["splits"][split] = {**s, "retrain_band": band, "original": summary["original"][split]}
        return _finite(out)

    @app.get("/api/runs/{run_id}/embedding")
    def embedding(run_id: str, projection: str = Query("pca")) -> Any:
        if projection not in an.PROJECTIONS:
            raise ApiError(400, f"projection must be one of {list(an.PROJECTIONS)}, got {projection!r}.")
        rid, summary, arr = run_and_analysis(run_id)
        lm = summary.get("modality") == "causal_lm"
        if projection == "pca":
            coords, meta = arr["sample.coords"], summary["embedding"]
        else:
            coords, meta = comp.projection(rid, projection, summary, arr)
        points = []
        k = 0
        for split in an.SPLITS:
            for pos in arr[f"sample.{split}.pos"]:
                label = int(arr[f"{split}.labels"][pos])
                point = {"id": int(arr[f"{split}.ids"][pos]), "split": split, "label": label,
                         "pred": None if lm else int(arr[f"{split}.pred"][pos]), "p_true": float(arr[f"{split}.p_true"][pos]),
                         "x": float(coords[k, 0]), "y": float(coords[k, 1])}
                if lm:
                    point["group"] = f"profile {label}"
                points.append(point)
                k += 1
        return _finite({"run_id": rid, "modality": summary.get("modality", "classifier"), **meta, "projection": projection,
                        "confidence": "answer probability" if lm else "probability of the true class", "points": points})

    @app.get("/api/runs/{run_id}/confidence-changes")
    def confidence_changes(run_id: str, against: str = Query(...), split: str = Query("forget"), k: int = Query(20, ge=1, le=500)) -> Any:
        if split not in an.SPLITS:
            raise ApiError(400, f"split must be one of {list(an.SPLITS)}, got {split!r}.")
        rid, other = comp.resolve(run_id), comp.resolve(against, "run to compare against")
        record, _ = same_task(rid, other)
        sa, a = run_and_analysis(rid)[1:]
        sb, b = run_and_analysis(other)[1:]
        ids_a, ids_b = a[f"{split}.ids"], b[f"{split}.ids"]
        if not np.array_equal(ids_a, ids_b):
            raise ApiError(422, f"Runs {rid} and {other} list the examples of {split} differently; their analyses do not line up.")
        delta = a[f"{split}.p_true"] - b[f"{split}.p_true"]
        top = np.argsort(-np.abs(np.nan_to_num(delta, nan=0.0)), kind="stable")[:k]
        if sa.get("modality") == "causal_lm":
            ta, tb = sa["texts"][split], sb["texts"][split]
            rows = [{"id": int(ids_a[i]), "label": int(a[f"{split}.labels"][i]), "group": f"profile {int(a[f'{split}.labels'][i])}",
                     "question": ta["question"][i], "gold": ta["gold"][i], "answer": ta["generated"][i], "answer_against": tb["generated"][i],
                     "rouge_l": float(a[f"{split}.rouge_l"][i]), "rouge_l_against": float(b[f"{split}.rouge_l"][i]),
                     "p_true": float(a[f"{split}.p_true"][i]), "p_true_against": float(b[f"{split}.p_true"][i]), "delta": float(delta[i]),
                     "loss": float(a[f"{split}.loss"][i]), "loss_against": float(b[f"{split}.loss"][i])} for i in top]
            return _finite({"run_id": rid, "against": other, "split": split, "modality": "causal_lm",
                            "measure": "answer probability (run − against)", "rows": rows})
        image = an.image_shape(record["task"]["name"]) is not None
        return _finite({"run_id": rid, "against": other, "split": split, "modality": "classifier",
                        "measure": "probability of the true class (run − against)", "images": image,
                        "rows": [{"id": int(ids_a[i]), "label": int(a[f"{split}.labels"][i]), "pred": int(a[f"{split}.pred"][i]),
                                  "pred_against": int(b[f"{split}.pred"][i]), "p_true": float(a[f"{split}.p_true"][i]),
                                  "p_true_against": float(b[f"{split}.p_true"][i]), "delta": float(delta[i]),
                                  "loss": float(a[f"{split}.loss"][i]), "loss_against": float(b[f"{split}.loss"][i]),
                                  "image": f"/api/runs/{rid}/examples/{split}/{int(ids_a[i])}.png" if image else None} for i in top]})

    @app.get("/api/runs/{run_id}/examples/{split}/{example}.png")
    def example_image(run_id: str, split: str, example: str) -> Any:
        """The picture of one example of an image task (digits, Fashion-MNIST), read from the run's rebuilt task: the
        split is one of forget / retain / test and the example an id of that split; nothing else names what is read."""
        rid = comp.resolve(run_id)
        if split not in an.SPLITS:
            raise ApiError(404, f"No split {split!r}: examples are in one of {list(an.SPLITS)}.")
        if not EXAMPLE_ID.fullmatch(example):
            raise ApiError(404, f"No example {example!r}: example ids are non-negative integers.")
        record = comp.store.load_run(rid)
        if an.image_shape(record["task"]["name"]) is None:
            raise ApiError(404, f"Run {rid} is of task {record['task']['name']!r}, whose examples are not images.")
        try:
            png = an.example_png(comp.context(record).task, split, int(example))
        except TaskError:
            raise ApiError(404, f"No example {example} in the {split} split of run {rid}'s task.") from None
        except an.AnalysisUnavailable as exc:
            raise ApiError(422, str(exc)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs/{run_id}/cka")
    def cka(run_id: str) -> Any:
        rid, summary, _ = run_and_analysis(run_id)
        c = summary["cka"]
        per_split = {split: [{"layer": layer, "original": (v["original"] or [None])[0],
                              "retrain_mean": float(np.nanmean(v["retrain"])) if v["retrain"] and not np.all(np.isnan(np.asarray(v["retrain"], dtype=float))) else None,
                              "retrain": v["retrain"]} for layer, v in layers.items()] for split, layers in c["per_split"].items()}
        return _finite({"run_id": rid, "compared_with": _compared_with(summary, comp.store.load_run(rid)),
                        "measure": "linear CKA (Kornblith et al. 2019) of each layer's output on a fixed sample",
                        "retrain": "mean of the CKA against each retrained reference", "layers": c["layers"], "n_sample": c["n_sample"],
                        "splits": per_split})

    @app.get("/api/runs/{run_id}/attack")
    def attack(run_id: str, threshold: float | None = Query(None), score: str = Query("loss")) -> Any:
        if threshold is not None and not math.isfinite(threshold):
            raise ApiError(400, f"threshold must be a finite number, got {threshold}.")
        rid, summary, arr = run_and_analysis(run_id)
        lm = summary.get("modality") == "causal_lm"
        allowed = ("loss", "min_k") if lm else ("loss",)
        if score not in allowed:
            raise ApiError(400, f"score must be one of {list(allowed)} for this run, got {score!r}.")
        return {"run_id": rid, "scores": list(allowed), **_attack(summary, arr, threshold, comp.store.load_run(rid), score)}

    @app.get("/api/runs/{run_id}/evidence")
    def evidence(run_id: str) -> Any:
        rid = comp.resolve(run_id)
        record = comp.store.load_run(rid)
        verdict = record.get("verdict") or {}
        results = record.get("results") or {}
        strong = {name: {"values": results[name].get("values"), "curves": results[name].get("curves"), "info": results[name].get("info")}
                  for name in STRONG if name in results}
        return _finite({"run_id": rid, "label": verdict.get("label"), "display": Verdict.from_json(verdict).display if verdict else None,
                        "reasons": verdict.get("reasons", []), "rows": verdict.get("rows", []), "bands": verdict.get("bands", {}),
                        "family": verdict.get("family"), "method": verdict.get("method"), "strong": strong})

    @app.post("/api/runs/{run_id}/analysis")
    def recompute(run_id: str) -> Any:
        if read_only:
            raise ApiError(405, "POST not allowed: the comparator is read-only (create_app(..., read_only=False) allows recomputing "
                                "a run's analysis).")
        rid = comp.resolve(run_id)
        comp.analysis(rid, force=True)
        return {"run_id": rid, "seconds": an.cached_seconds(comp.store, rid)}

    @app.get("/")
    def index() -> Any:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
