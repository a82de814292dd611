"""The comparator's per-run analysis, computed once and cached in the store (``<store>/analysis/<run_id>/``).

Over 60 lines because it is the whole heavy half of the comparator: rebuilding a run's task and models from its
experiment record, per-class accuracy and prediction matrices on forget / retain / test (the run's, the original's and
each retrained reference's), penultimate features of a fixed seeded sample embedded with PCA, per-example loss and
true-class probability, linear CKA per layer against the original and the retrained references, and the cache itself
(two files written atomically, the JSON last, naming the digest of the arrays and of the run's weights it was made
from, so a changed run or a damaged file is recomputed, never served)."""

from __future__ import annotations

import functools
import struct
import time
import warnings
import zlib
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter
from ..errors import StoreError, UnlearnError
from ..io import load_state, read_json, save_state, write_json
from ..runs.store import RUN_FILES, Store, listed_files, sha256_file
from ..seeding import np_rng
from ..types import Split, Task

ANALYSIS_VERSION = "2"  # 2: the sample's features are kept (for UMAP), language-model and request-stream runs
SPLITS = ("forget", "retain", "test")
SAMPLE_PER_SPLIT = 300  # examples per split in the embedding and CKA sample (same ids for every run of a task)


class AnalysisUnavailable(UnlearnError):
    """This run's analysis cannot be computed (an exact regime's own model, a request stream, a language model)."""


# ------------------------------------------------------------------------------------------ statistics
def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., ICML 2019) of two representations of the same n examples, (n, p) and (n, q):
    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc. 1 for representations equal up to an
    orthogonal transform and isotropic scaling; NaN when either is constant (no variance to compare)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError(f"linear_cka: {len(x)} rows against {len(y)}; both representations must be of the same examples.")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    # in the n×n Gram form when features outnumber examples (conv layers): the same value, smaller matrices
    if x.shape[1] > len(x) or y.shape[1] > len(y):
        kx, ky = x @ x.T, y @ y.T
        cross, nx, ny = float((kx * ky).sum()), float(np.linalg.norm(kx)), float(np.linalg.norm(ky))
    else:
        cross = float(np.linalg.norm(y.T @ x) ** 2)
        nx, ny = float(np.linalg.norm(x.T @ x)), float(np.linalg.norm(y.T @ y))
    if nx == 0.0 or ny == 0.0:
        return float("nan")
    return cross / (nx * ny)


def class_accuracy(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> list[float | None]:
    """Accuracy of each class (None for a class without examples in the split)."""
    total = np.bincount(labels, minlength=n_classes)
    right = np.bincount(labels[labels == preds], minlength=n_classes)
    return [None if total[c] == 0 else float(right[c] / total[c]) for c in range(n_classes)]


def prediction_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> list[list[int]]:
    """Counts of (true class, predicted class)."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m.tolist()


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components of ``features`` and their explained-variance ratios."""
    from sklearn.decomposition import PCA

    n_comp = min(2, features.shape[0], features.shape[1])
    pca = PCA(n_components=n_comp, svd_solver="full", random_state=0)
    coords = pca.fit_transform(np.asarray(features, dtype=np.float64))
    if n_comp < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - n_comp)))
    return coords.astype(np.float32), [float(v) for v in pca.explained_variance_ratio_]


PROJECTIONS = ("pca", "umap")  # the embedding view's 2-D projections (PCA is computed with the analysis; UMAP on demand)
UMAP_SEED = 0


def umap_2d(features: np.ndarray, seed: int = UMAP_SEED) -> tuple[np.ndarray, dict[str, Any]]:
    """UMAP (McInnes et al. 2018, ``umap-learn``) of ``features`` to 2-D, seeded (``random_state``: single-threaded and
    deterministic), PCA-initialised; 15 neighbours (fewer for a tiny sample), min_dist 0.1."""
    try:
        import umap
    except ImportError:
        raise AnalysisUnavailable("The UMAP projection needs umap-learn (pip install 'unlearnkit[web]'); PCA works without it.") from None
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 5:
        raise AnalysisUnavailable(f"UMAP needs at least 5 examples in the sample, got {len(x)}; use PCA.")
    neighbours = int(min(15, len(x) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, min_dist=0.1, random_state=seed, init="pca")
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": deterministic is what we ask for
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        coords = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    return coords, {"method": "UMAP", "n_neighbors": neighbours, "min_dist": 0.1, "seed": seed, "explained_variance": None,
                    "feature_dim": int(x.shape[1])}


def cached_projection(store: Store, run_id: str, name: str, features: np.ndarray, base: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``name`` projection (``umap``) of the cached sample features of ``run_id``, from
    ``<store>/analysis/<run_id>/projection-<name>.json`` when it was made from the same analysis arrays and seed, else
    computed and written there (atomically)."""
    if name != "umap":
        raise AnalysisUnavailable(f"Unknown projection {name!r}; known: {list(PROJECTIONS)}.")
    meta = _meta(store, run_id) or {}
    digest = meta.get("arrays_sha256")
    path = cache_dir(store, run_id) / f"projection-{name}.json"
    with suppress(OSError, StoreError, KeyError, TypeError, ValueError):
        cached = read_json(path)
        if (cached.get("version") == ANALYSIS_VERSION and cached.get("arrays_sha256") == digest and digest is not None
                and cached.get("seed") == UMAP_SEED and len(cached["coords"]) == len(features)):
            return np.asarray(cached["coords"], dtype=np.float32).reshape(-1, 2), cached["meta"]
    coords, info = umap_2d(features)
    info = {**info, "features": base.get("features", "penultimate features")}
    if digest is not None:
        write_json(path, {"version": ANALYSIS_VERSION, "run_id": run_id, "arrays_sha256": digest, "seed": UMAP_SEED,
                          "coords": coords.astype(np.float64).tolist(), "meta": info})
    return coords, info


# ------------------------------------------------------------------------------------------ example images
IMAGE_SHAPES = {"digits": (8, 8), "fashion_mnist": (28, 28)}  # greyscale image datasets (stored flat or as 1×H×W)


def image_shape(dataset: str) -> tuple[int, int] | None:
    """(height, width) of the examples of ``dataset`` when they are greyscale images, else None (tabular, text)."""
    return IMAGE_SHAPES.get(dataset)


def png_grey(pixels: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of ``pixels`` (H×W, any real values), scaled so that the image's minimum is black and its
    maximum white (a constant image is mid-grey). Written by hand (zlib + CRC): no imaging library needed."""
    v = np.asarray(pixels, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"png_grey: expected an H×W array, got shape {v.shape}.")
    lo, hi = float(v.min()), float(v.max())
    grey = np.full(v.shape, 128, np.uint8) if hi <= lo else np.rint((v - lo) / (hi - lo) * 255.0).astype(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in grey)  # filter type 0 (none) per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", v.shape[1], v.shape[0], 8, 0, 0, 0, 0)  # width, height, 8-bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def example_png(task: Task, split: str, example_id: int) -> bytes:
    """The PNG of example ``example_id`` of ``split`` of an image task (read from the rebuilt task's own data)."""
    shape = image_shape(task.name)
    if shape is None:
        raise AnalysisUnavailable(f"Task {task.name!r} is not an image dataset; its examples have no picture.")
    part = task.splits()[split]
    pos = part.positions_of([example_id])  # an unknown id raises, naming it
    x = part.data.subset(pos).x[0].detach().float().cpu().numpy()
    if x.size != shape[0] * shape[1]:
        raise AnalysisUnavailable(f"Task {task.name!r}: an example has {x.size} values, not a {shape[0]}×{shape[1]} image.")
    return png_grey(x.reshape(shape))


# ------------------------------------------------------------------------------------------ models
def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers CKA compares: every module holding parameters of its own (linear, convolution, normalisation), in
    definition order."""
    return [(name, m) for name, m in model.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def last_linear(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AnalysisUnavailable(f"{type(model).__name__} has neither features(x) nor a Linear layer: no penultimate features.")
    return linears[-1]


@torch.no_grad()
def representations(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Penultimate features (``model.features`` if present, else the input of the last Linear) and the output of every
    layer of ``layer_modules``, for inputs ``x``, in eval mode (mode restored)."""
    layers = layer_modules(model)
    outs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    feats: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: outs[name].append(o.detach().float().flatten(1).cpu()))
             for name, m in layers]
    has_features = callable(getattr(model, "features", None))
    if not has_features:
        hooks.append(last_linear(model).register_forward_hook(lambda _m, i, _o: feats.append(i[0].detach().float().flatten(1).cpu())))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            model(xb)
            if has_features:
                feats.append(model.features(xb).detach().float().flatten(1).cpu())
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return torch.cat(feats).numpy(), {name: torch.cat(v).numpy() for name, v in outs.items() if v}


# ------------------------------------------------------------------------------------------ rebuilding a run
@dataclass
class TaskContext:
    """A stored task rebuilt from its experiment: the task, its model factory, the original and retrained references."""

    task: Task
    factory: Any
    original: nn.Module | None
    retrained: list[nn.Module]
    reference_keys: dict[str, list[str]]


def experiment_task(store: Store, record: Mapping[str, Any]) -> dict[str, Any]:
    """The task entry of the run's experiment record (the one with the run's task fingerprint)."""
    where = f"run {record['run_id']}"
    if not record.get("experiment"):
        raise AnalysisUnavailable(f"{where} has no experiment record, so its task cannot be rebuilt.")
    exp_record = store.load_experiment(record["experiment"])
    fp = record["task"]["fingerprint"]
    for t in exp_record.get("tasks", []):
        if t.get("task", {}).get("fingerprint") == fp:
            return {"experiment": exp_record, "task": t}
    raise AnalysisUnavailable(f"{where}: its experiment {record['experiment']} lists no task with fingerprint {fp[:12]}….")


def rebuild_stream_task(store: Store, record: Mapping[str, Any]) -> tuple[Any, Any, Task]:
    """The experiment, data source and evaluation task of a request-stream run: step k's task forgets everything the
    requests 1..k deleted (drawn again from the experiment's seed, exactly as the runner drew them) and is checked
    against the fingerprint the run recorded."""
    from ..data.forget import request_rng, select_requests
    from ..data.sources import load_dataset
    from ..experiment import Experiment
    from ..runs.runner import ExperimentRunner, stream_public

    where = f"run {record['run_id']}"
    if not record.get("experiment"):
        raise AnalysisUnavailable(f"{where} has no experiment record, so its request stream cannot be rebuilt.")
    exp = Experiment.from_dict(store.load_experiment(record["experiment"])["spec"])
    k = int(((record["task"].get("info") or {}).get("stream") or {}).get("request", 0)) - 1
    if not exp.requests or not 0 <= k < len(exp.requests):
        raise AnalysisUnavailable(f"{where}: its experiment {record['experiment']} has no request {k + 1}.")
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    runner = ExperimentRunner(exp, store, device="cpu", progress=False, log=lambda _: None)
    runner.public = stream_public(exp, source)
    specs = exp.requests
    requests = select_requests(source.train, specs, [request_rng(exp.task_seed, i, s) for i, s in enumerate(specs)], source.n_classes,
                               public=runner.public)
    task = runner.stream_task(source, specs, requests, k, for_method=False)
    if task.fingerprint != record["task"].get("fingerprint"):
        raise AnalysisUnavailable(f"{where}: request {k + 1} of its stream rebuilt with fingerprint {task.fingerprint[:12]}…, the record "
                                  f"says {str(record['task'].get('fingerprint'))[:12]}… (the data or code changed).")
    return exp, source, task


def stream_request(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """{"request": k, "of": n, "deleted": count} of a request-stream run, else None."""
    info = ((record.get("task") or {}).get("info") or {}).get("stream")
    return None if not info else {"request": int(info.get("request", 0)), "of": int(info.get("of", 0)), "deleted": info.get("deleted")}


MODALITIES = ("classifier", "causal_lm")  # what the class, instance and layer views cover


def task_context(store: Store, record: Mapping[str, Any], device: str = "cpu") -> TaskContext:
    """Rebuild the task of ``record`` from its experiment (checked against the recorded fingerprint) and load its
    references from the store's cache (never trained here: a missing reference is simply absent)."""
    from ..models import build_model
    from ..runs.runner import RebuildError, rebuild_run_task

    where = f"run {record['run_id']}"
    task_rec = record.get("task") or {}
    modality = task_rec.get("modality", "classifier")
    if modality not in MODALITIES:
        raise AnalysisUnavailable(f"{where} is a {modality} run; the comparator's class, instance and layer views cover "
                                  f"{' and '.join(MODALITIES)} runs in this version.")
    if stream_request(record) is not None:
        exp, source, task = rebuild_stream_task(store, record)
    else:
        try:
            exp, source, task = rebuild_run_task(store, record)
        except RebuildError as exc:
            raise AnalysisUnavailable(f"{exc} The comparator analyses runs whose task it can rebuild.") from None
    found = experiment_task(store, record)
    factory = functools.partial(build_model, exp.model.name, tuple(source.input_shape), source.n_outputs, **exp.model.params)
    keys = {k: list(v) for k, v in (found["task"].get("references", {}).get("keys") or {}).items()}
    loaded = {kind: [m for m in (store.load_reference(k, factory, device) for k in keys.get(kind, [])) if m is not None]
              for kind in ("original", "retrain")}
    original = loaded["original"][0][0] if loaded["original"] else None
    return TaskContext(task, factory, original, [m for m, _ in loaded["retrain"]], keys)


def sample_indices(task: Task, split: str) -> np.ndarray:
    """Positions of the fixed seeded sample of ``split`` (the same for every run of the task), in split order."""
    n = len(task.splits()[split])
    k = min(SAMPLE_PER_SPLIT, n)
    return np.sort(np_rng("comparator-sample", task.fingerprint, split).choice(n, size=k, replace=False))


def _inputs(split: Split, positions: np.ndarray, device: str) -> torch.Tensor:
    sub = split.subset(positions, split.name)
    return torch.cat([b["x"] for b in sub.batches(1024, device=device)])


# ------------------------------------------------------------------------------------------ the analysis
def compute_analysis(store: Store, run_id: str, ctx: TaskContext, *, device: str = "cpu") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The analysis of run ``run_id`` as (JSON summary, arrays); a language-model run's is ``web.lm``'s."""
    if ctx.task.modality == "causal_lm":
        from .lm import compute_lm_analysis

        return compute_lm_analysis(store, run_id, ctx, sample_size=SAMPLE_PER_SPLIT, cka=linear_cka, project=pca_2d, device=device)
    record = store.load_run(run_id)
    model = store.load_run_model(run_id, ctx.factory()).to(device).eval()
    task, adapter = ctx.task, get_adapter(ctx.task)
    n_classes = int(task.n_classes or 0)
    splits = task.splits()
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"modality": "classifier", "n_classes": n_classes, "splits": {}, "retrain": {}, "original": {}}

    def fit(m: nn.Module, split: str) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        out = adapter.outputs(m, splits[split], device=device)
        labels = np.asarray(out["labels"], dtype=np.int64)
        return labels, adapter.stats(out), out["logits"].argmax(1).astype(np.int64)

    for split in SPLITS:
        labels, stats, preds = fit(model, split)
        arrays[f"{split}.ids"] = np.asarray(splits[split].ids, dtype=np.int64)
        arrays[f"{split}.labels"], arrays[f"{split}.pred"] = labels, preds
        arrays[f"{split}.loss"] = stats["loss"].astype(np.float64)
        arrays[f"{split}.p_true"] = stats["p_true"].astype(np.float64)
        summary["splits"][split] = {"n": int(len(labels)), "accuracy": float((labels == preds).mean()) if len(labels) else None,
                                    "class_accuracy": class_accuracy(labels, preds, n_classes),
                                    "class_counts": np.bincount(labels, minlength=n_classes).tolist(),
                                    "matrix": prediction_matrix(labels, preds, n_classes)}
        summary["retrain"][split] = [class_accuracy(*_lp(fit(r, split)), n_classes) for r in ctx.retrained]
        summary["original"][split] = class_accuracy(*_lp(fit(ctx.original, split)), n_classes) if ctx.original is not None else None

    # the embedding and CKA sample: fixed per task, so A and B show the same examples (linked selection by id)
    feats, cka_parts = [], {}
    for split in SPLITS:
        pos = sample_indices(task, split)
        x = _inputs(splits[split], pos, device)
        f, layers = representations(model, x)
        feats.append(f)
        arrays[f"sample.{split}.pos"] = pos.astype(np.int64)
        refs = {"original": [representations(ctx.original, x)[1]] if ctx.original is not None else [],
                "retrain": [representations(r, x)[1] for r in ctx.retrained]}
        cka_parts[split] = {name: {kind: [linear_cka(rep, other[name]) for other in reps]
                                   for kind, reps in refs.items()} for name, rep in layers.items()}
    features = np.concatenate(feats).astype(np.float32)
    coords, variance = pca_2d(features)
    arrays["sample.coords"], arrays["sample.features"] = coords, features
    summary["embedding"] = {"method": "PCA", "explained_variance": variance, "feature_dim": int(feats[0].shape[1])}
    summary["cka"] = {"layers": list(next(iter(cka_parts.values())).keys()), "per_split": cka_parts,
                      "n_sample": {s: int(len(sample_indices(task, s))) for s in SPLITS}}
    summary["references"] = {"original": ctx.original is not None, "retrained": len(ctx.retrained), "keys": ctx.reference_keys}
    summary["run_id"] = record["run_id"]
    return summary, arrays


def _lp(fitted: tuple[np.ndarray, Any, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return fitted[0], fitted[2]


# ------------------------------------------------------------------------------------------ the cache
def cache_dir(store: Store, run_id: str) -> Path:
    return store.root / "analysis" / run_id


def _run_digest(store: Store, run_id: str) -> str | None:
    manifest = listed_files(store.root / "runs" / run_id, RUN_FILES) or {}
    return manifest.get("model.safetensors")


def load_cached(store: Store, run_id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The cached analysis of ``run_id``, or None when it is missing, of another version, made from other weights, or
    its arrays do not match the digest its JSON names."""
    folder = cache_dir(store, run_id)
    meta = _meta(store, run_id)
    if meta is None:
        return None
    if (meta.get("version") != ANALYSIS_VERSION or meta.get("run_model") != _run_digest(store, run_id)
            or not (folder / "arrays.safetensors").is_file()):
        return None
    try:
        if sha256_file(folder / "arrays.safetensors") != meta.get("arrays_sha256"):
            return None
        state = load_state(folder / "arrays.safetensors")
    except UnlearnError:
        return None
    return meta["analysis"], {k: v.numpy() for k, v in state.items()}


def _meta(store: Store, run_id: str) -> dict[str, Any] | None:
    try:
        meta = read_json(cache_dir(store, run_id) / "analysis.json")
    except (OSError, StoreError):
        return None
    return meta if isinstance(meta, dict) else None


def is_cached(store: Store, run_id: str) -> bool:
    """Whether the analysis of ``run_id`` is cached for its current weights (the arrays' digest is checked on load)."""
    meta = _meta(store, run_id)
    return meta is not None and meta.get("version") == ANALYSIS_VERSION and meta.get("run_model") == _run_digest(store, run_id)


def cached_seconds(store: Store, run_id: str) -> float | None:
    """How long the cached analysis of ``run_id`` took to compute."""
    meta = _meta(store, run_id)
    return None if meta is None else meta.get("seconds")


def remove_cached(store: Store, run_id: str) -> None:
    """Drop the cached analysis of ``run_id`` (its JSON first: without it the arrays are never read)."""
    for name in ("analysis.json", "arrays.safetensors", *(f"projection-{p}.json" for p in PROJECTIONS)):
        with suppress(FileNotFoundError):
            (cache_dir(store, run_id) / name).unlink()


def save_cached(store: Store, run_id: str, summary: dict[str, Any], arrays: Mapping[str, np.ndarray], seconds: float) -> None:
    """Write the arrays, then the JSON naming their digest (both atomically): a reader sees the old entry, none, or
    the new one whole."""
    folder = cache_dir(store, run_id)
    save_state(folder / "arrays.safetensors", {k: torch.tensor(np.array(v)) for k, v in arrays.items()},
               {"run_id": run_id, "version": ANALYSIS_VERSION})
    write_json(folder / "analysis.json", {"version": ANALYSIS_VERSION, "run_id": run_id, "run_model": _run_digest(store, run_id),
                                          "arrays_sha256": sha256_file(folder / "arrays.safetensors"), "seconds": seconds,
                                          "created": time.time(), "analysis": summary})


def analysis(store: Store, run_id: str, *, context: Any = None, device: str = "cpu") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The analysis of ``run_id``: from the cache, else computed (``context(record)`` gives its TaskContext, default
    ``task_context``) and cached."""
    cached = load_cached(store, run_id)
    if cached is not None:
        return cached
    record = store.load_run(run_id)
    identity = record.get("model") or {}
    if identity.get("original_architecture") is False:
        raise AnalysisUnavailable(f"run {run_id} stored an exact regime's own model ({identity.get('regime')}), not the "
                                  "experiment's architecture; the comparator cannot load it.")
    t0 = time.perf_counter()
    ctx = (context or (lambda r: task_context(store, r, device)))(record)
    summary, arrays = compute_analysis(store, run_id, ctx, device=device)
    save_cached(store, run_id, summary, arrays, time.perf_counter() - t0)
    return summary, arrays
