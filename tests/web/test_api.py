"""The comparator's API on a small digits store: every endpoint, its numbers against independent computations (per-class
accuracy and confidences from the models' own outputs, PCA by scikit-learn, CKA by the centred-Gram formula, TPR/FPR
and AUC by scikit-learn), the per-run cache computed once, 404s for bad ids, refused writes, and the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from scipy.stats import pearsonr
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve

from unlearnkit.data.sources import load_dataset
from unlearnkit.models import build_model
from unlearnkit.runs import Store
from unlearnkit.web import analysis as an
from unlearnkit.web import create_app

from .conftest import SPEC

ROOT = Path(__file__).resolve().parents[2]


def net() -> torch.nn.Module:
    return build_model("mlp", (64,), 10, hidden=SPEC["model"]["params"]["hidden"])


def model_of(store_dir: Path, run_id: str) -> torch.nn.Module:
    return Store(store_dir, tidy=False).load_run_model(run_id, net()).eval()


def outputs(model: torch.nn.Module, split_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, softmax probabilities) of the digits training examples ``split_ids``, straight from the model."""
    train = load_dataset("digits").train
    part = train.select_ids(split_ids)
    with torch.no_grad():
        probs = torch.softmax(model(part.data.x.float()), dim=1).numpy()
    return part.labels, probs


# ------------------------------------------------------------------------------------------ screening, runs, compare
def test_screening_lists_every_run_with_verdict_cost_ratio_and_evidence(client, store_dir, ids):
    rows = {r["run_id"]: r for r in client.get("/api/runs").json()["runs"]}
    store = Store(store_dir, tidy=False)
    assert set(rows) == {r["run_id"] for r in store.runs()} and len(rows) == 6
    retrain, finetune = rows[ids["retrain"]], rows[ids["finetune"]]
    assert retrain["cost_ratio"]["example_passes"] == pytest.approx(1.0)
    passes = store.load_run(ids["finetune"])["cost"]["example_passes"] / store.load_run(ids["retrain"])["cost"]["example_passes"]
    assert finetune["cost_ratio"]["example_passes"] == pytest.approx(passes)
    assert finetune["params"]["steps"] == 20 and finetune["seed"] == 0 and finetune["task"] == "class 3"
    assert finetune["verdict"] == store.load_run(ids["finetune"])["verdict"]["label"]
    assert finetune["evidence"]["forget acc"] == pytest.approx(store.load_run(ids["finetune"])["results"]["accuracy"]["values"]["forget"])


def test_run_and_compare(client, ids):
    rec = client.get(f"/api/runs/{ids['finetune']}").json()
    assert rec["run_id"] == ids["finetune"] and rec["method"]["name"] == "finetune"
    assert client.get(f"/api/runs/{ids['finetune'][:8]}").json()["run_id"] == ids["finetune"]  # a unique prefix
    cmp = client.get(f"/api/compare?a={ids['finetune']}&b={ids['retrain']}").json()
    assert cmp["a"]["run_id"] == ids["finetune"] and cmp["b"]["run_id"] == ids["retrain"]
    assert cmp["evidence"]["forget acc"]["b"] == pytest.approx(rec_value(client, ids["retrain"]))
    bad = client.get(f"/api/compare?a={ids['finetune']}&b={ids['other']}")
    assert bad.status_code == 400 and "different tasks" in bad.json()["error"]
    assert client.get(f"/api/runs/{ids['finetune']}/confidence-changes?against={ids['other']}").status_code == 400


def rec_value(client, run_id):
    return client.get(f"/api/runs/{run_id}").json()["results"]["accuracy"]["values"]["forget"]


@pytest.mark.parametrize("bad", ["nope", "0" * 20, "a" * 300, "..", "x.y", "%00", "%2e%2e"])
def test_bad_ids_are_404_with_a_clear_message(client, ids, bad):
    for path in (f"/api/runs/{bad}", f"/api/runs/{bad}/classes", f"/api/runs/{bad}/attack", f"/api/compare?a={bad}&b={ids['retrain']}",
                 f"/api/runs/{ids['retrain']}/confidence-changes?against={bad}"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "error" in r.json() and "Traceback" not in r.text


def test_bad_parameters_are_400(client, ids):
    rid = ids["finetune"]
    for path in (f"/api/runs/{rid}/attack?threshold=nan", f"/api/runs/{rid}/attack?threshold=inf", f"/api/runs/{rid}/attack?threshold=abc",
                 f"/api/runs/{rid}/confidence-changes?against={ids['retrain']}&split=holdout",
                 f"/api/runs/{rid}/confidence-changes?against={ids['retrain']}&k=0", "/api/compare?a=" + rid):
        r = client.get(path)
        assert r.status_code == 400 and r.json()["error"], (path, r.text)


# ------------------------------------------------------------------------------------------ class level
def test_class_accuracy_and_matrix_equal_the_models_own_outputs(client, store_dir, ids):
    store = Store(store_dir, tidy=False)
    for method in ("finetune", "original"):
        body = client.get(f"/api/runs/{ids[method]}/classes").json()
        for split in ("forget", "retain"):
            split_ids = store.load_run_array(ids[method], f"accuracy.correct.{split}.ids")
            labels, probs = outputs(model_of(store_dir, ids[method]), split_ids)
            pred = probs.argmax(1)
            s = body["splits"][split]
            for c in range(10):
                want = None if not (labels == c).any() else float((pred[labels == c] == c).mean())
                assert s["class_accuracy"][c] == (None if want is None else pytest.approx(want)), (method, split, c)
                assert s["matrix"][c] == [int(((labels == c) & (pred == j)).sum()) for j in range(10)]
            stored = store.load_run(ids[method])["results"]["accuracy"]["values"][split]
            assert s["accuracy"] == pytest.approx(stored)
    # the retrain band: min and max over the retrained references, each loaded from the store's cache
    exp = store.load_experiment(store.load_run(ids["finetune"])["experiment"])
    keys = exp["tasks"][0]["references"]["keys"]["retrain"]
    split_ids = store.load_run_array(ids["finetune"], "accuracy.correct.retain.ids")
    accs = []
    for key in keys:
        model, _ = store.load_reference(key, net)
        labels, probs = outputs(model.eval(), split_ids)
        accs.append([float((probs.argmax(1)[labels == c] == c).mean()) if (labels == c).any() else None for c in range(10)])
    band = client.get(f"/api/runs/{ids['finetune']}/classes").json()["splits"]["retain"]["retrain_band"]
    assert band[3] is None  # class 3 is the forget set: none of it is retained
    for c in (0, 1, 2, 4, 5, 6, 7, 8, 9):
        assert band[c]["min"] == pytest.approx(min(a[c] for a in accs)) and band[c]["max"] == pytest.approx(max(a[c] for a in accs))


# ------------------------------------------------------------------------------------------ instance level
def test_embedding_is_the_pca_of_the_penultimate_features_of_a_shared_sample(client, store_dir, ids):
    a = client.get(f"/api/runs/{ids['finetune']}/embedding").json()
    b = client.get(f"/api/runs/{ids['retrain']}/embedding").json()
    key = lambda body: [(p["split"], p["id"]) for p in body["points"]]  # noqa: E731
    assert key(a) == key(b)  # the same examples in A and B: linked selection by id
    assert {s for s, _ in key(a)} == {"forget", "retain", "test"} and len(a["points"]) == 134 + 300 + 300
    source = load_dataset("digits")
    x = []
    for split, i in key(a):
        part = source.test if split == "test" else source.train
        x.append(part.data.x[part.positions_of([i])[0]])
    model = model_of(store_dir, ids["finetune"])
    with torch.no_grad():
        feats = model.features(torch.stack(x).float()).numpy()
    want = PCA(n_components=2, svd_solver="full").fit(feats.astype(np.float64))
    coords = want.transform(feats.astype(np.float64))
    got = np.array([[p["x"], p["y"]] for p in a["points"]])
    for k in range(2):  # principal axes are defined up to sign
        assert min(np.abs(got[:, k] - coords[:, k]).max(), np.abs(got[:, k] + coords[:, k]).max()) < 1e-3
    assert a["explained_variance"] == pytest.approx(list(want.explained_variance_ratio_), abs=1e-6)


def test_confidence_changes_are_the_largest_differences_of_true_class_probability(client, store_dir, ids):
    body = client.get(f"/api/runs/{ids['finetune']}/confidence-changes?against={ids['original']}&split=forget&k=5").json()
    split_ids = Store(store_dir, tidy=False).load_run_array(ids["finetune"], "accuracy.correct.forget.ids")
    labels, pa = outputs(model_of(store_dir, ids["finetune"]), split_ids)
    _, pb = outputs(model_of(store_dir, ids["original"]), split_ids)
    delta = pa[np.arange(len(labels)), labels] - pb[np.arange(len(labels)), labels]
    order = np.argsort(-np.abs(delta), kind="stable")[:5]
    assert [r["id"] for r in body["rows"]] == [int(split_ids[i]) for i in order]
    assert [r["delta"] for r in body["rows"]] == pytest.approx([float(delta[i]) for i in order], abs=1e-5)


# ------------------------------------------------------------------------------------------ layer level
def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA through the centred Gram matrices, tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)): an independent formula."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float(np.trace(k @ l) / np.sqrt(np.trace(k @ k) * np.trace(l @ l)))


def test_linear_cka_on_hand_cases():
    x = np.array([[0.0], [1.0], [2.0], [4.0]])
    y = np.array([[1.0], [0.0], [3.0], [2.0]])
    assert an.linear_cka(x, y) == pytest.approx(pearsonr(x[:, 0], y[:, 0])[0] ** 2)  # one feature each: r²
    # a hand computation: centred x = (-1.75, -.75, .25, 2.25), y = (-.5, -1.5, 1.5, .5); r = 3.5 / sqrt(8.75 * 5)
    assert an.linear_cka(x, y) == pytest.approx(3.5 ** 2 / (8.75 * 5.0))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert an.linear_cka(a, 3.0 * a @ q + 7.0) == pytest.approx(1.0)  # invariant to rotation, scale and shift
    wide = rng.normal(size=(6, 20))  # more features than examples: the Gram branch
    other = rng.normal(size=(6, 3))
    assert an.linear_cka(wide, other) == pytest.approx(hsic_cka(wide - wide.mean(0), other - other.mean(0)))
    narrow = rng.normal(size=(12, 2))  # fewer features than examples: the feature branch
    assert an.linear_cka(a, narrow) == pytest.approx(hsic_cka(a - a.mean(0), narrow - narrow.mean(0)))
    assert np.isnan(an.linear_cka(np.ones((4, 2)), y))


def test_cka_endpoint(client, ids):
    orig = client.get(f"/api/runs/{ids['original']}/cka").json()
    assert orig["layers"] == ["body.1", "body.3", "head"]
    for split in ("forget", "retain", "test"):
        for row in orig["splits"][split]:
            assert row["original"] == pytest.approx(1.0)  # the original against itself
            assert row["retrain_mean"] == pytest.approx(float(np.mean(row["retrain"]))) and len(row["retrain"]) == 2
            assert all(0.0 <= v <= 1.0 + 1e-9 for v in row["retrain"])
    ft = client.get(f"/api/runs/{ids['finetune']}/cka").json()
    assert all(row["original"] < 1.0 for row in ft["splits"]["forget"])


# ------------------------------------------------------------------------------------------ attack
def test_attack_rates_match_sklearn_roc_curve(client, store_dir, ids):
    rid = ids["finetune"]
    base = client.get(f"/api/runs/{rid}/attack").json()
    forget = np.array([x["loss"] for x in base["instances"]["forget"]])
    test = np.array([x["loss"] for x in base["instances"]["test"]])
    store = Store(store_dir, tidy=False)
    assert forget == pytest.approx(store.load_run_array(rid, "accuracy.loss.forget.values"), abs=1e-5)  # the metric's own losses
    # class forgetting: the non-members are the test examples of the forgotten class, not every test example
    assert base["non_members"] == "test examples of the forgotten class(es) [3]" and base["n"]["test"] == len(test) < 100
    y = np.r_[np.ones(len(forget)), np.zeros(len(test))]
    fpr, tpr, thr = roc_curve(y, -np.r_[forget, test])
    picks = np.unique(np.linspace(1, len(thr) - 1, 12).astype(int))
    for i in picks:
        r = client.get(f"/api/runs/{rid}/attack", params={"threshold": repr(float(-thr[i]))}).json()
        assert (r["tpr"], r["fpr"]) == (pytest.approx(tpr[i]), pytest.approx(fpr[i])), i
    assert base["auc"] == pytest.approx(roc_auc_score(y, -np.r_[forget, test]))
    assert base["tpr"] - base["fpr"] == pytest.approx(float(np.max(tpr - fpr)))  # the default: Youden's threshold
    stored = store.load_run(rid)["results"]["privacy_score"]["values"]["score"]
    assert base["privacy_score"]["values"]["score"] == pytest.approx(stored)
    assert sum(base["histogram"]["forget"]) == len(forget) and sum(base["histogram"]["test"]) == len(test)


def test_evidence_is_the_stored_verdict_with_its_bands_and_strong_evidence(client, store_dir, ids):
    body = client.get(f"/api/runs/{ids['finetune']}/evidence").json()
    record = Store(store_dir, tidy=False).load_run(ids["finetune"])
    assert body["label"] == record["verdict"]["label"] and body["rows"] == record["verdict"]["rows"]
    assert body["bands"]["accuracy.forget"]["hi"] == pytest.approx(record["verdict"]["bands"]["accuracy.forget"]["hi"])
    assert {"relearn", "privacy_score"} <= set(body["strong"])
    assert body["strong"]["relearn"]["curves"]["relearn"]["retrained"] == record["results"]["relearn"]["curves"]["relearn"]["retrained"]


# ------------------------------------------------------------------------------------------ cache, writes, CLI
def test_the_analysis_is_computed_once_and_read_from_the_store_after(store_dir, tmp_path, monkeypatch, ids):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store_dir, root, ignore=shutil.ignore_patterns("analysis"))
    calls = []
    real = an.compute_analysis
    monkeypatch.setattr(an, "compute_analysis", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    client = TestClient(create_app(root))
    rid = ids["grad_ascent"]
    assert client.get(f"/api/runs/{rid}/classes").status_code == 200
    cached = root / "analysis" / rid / "analysis.json"
    mtime = cached.stat().st_mtime_ns
    for path in ("classes", "embedding", "cka", "attack", "attack?threshold=0.1"):
        assert client.get(f"/api/runs/{rid}/{path}").status_code == 200
    assert calls == [rid]
    fresh = TestClient(create_app(root))  # a new app (a restarted server) reads the cache from the store
    assert fresh.get(f"/api/runs/{rid}/embedding").status_code == 200 and calls == [rid]
    assert cached.stat().st_mtime_ns == mtime
    assert fresh.get("/api/runs").json()["runs"][0]["analysed"] in (True, False)
    assert {r["run_id"]: r["analysed"] for r in fresh.get("/api/runs").json()["runs"]}[rid] is True
    # a damaged cache file is recomputed, never served
    arrays = root / "analysis" / rid / "arrays.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:-8] + b"\0" * 8)
    assert fresh.get(f"/api/runs/{rid}/classes").status_code == 200 and calls == [rid, rid]


def test_writes_are_refused_unless_read_only_is_off(client, store_dir, tmp_path, ids):
    rid = ids["retrain"]
    for method, path in (("post", "/api/runs"), ("put", f"/api/runs/{rid}"), ("delete", f"/api/runs/{rid}"),
                         ("post", f"/api/runs/{rid}/analysis"), ("patch", f"/api/runs/{rid}/classes"), ("post", "/static/app.js"),
                         ("post", "/")):
        r = getattr(client, method)(path)
        assert r.status_code == 405, (method, path, r.status_code)
        assert "read-only" in r.json()["error"]
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store_dir, root)
    writable = TestClient(create_app(root, read_only=False))
    r = writable.post(f"/api/runs/{rid}/analysis")
    assert r.status_code == 200 and r.json()["seconds"] > 0


def test_no_cors_headers(client):
    r = client.get("/api/runs", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    pre = client.options("/api/runs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 405 and "access-control-allow-origin" not in {k.lower() for k in pre.headers}


def test_front_end_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "unlearnkit comparator" in page.text
    for name in ("app.js", "charts.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_non_store_and_lm_free_imports(tmp_path):
    from unlearnkit.errors import StoreError

    with pytest.raises(StoreError, match="not a run store"):
        create_app(tmp_path)
    code = ("import sys, unlearnkit, unlearnkit.cli, unlearnkit.web, unlearnkit.web.analysis; "
            "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, sorted(sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr


def test_serve_prints_its_address_and_serves(store_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "unlearnkit.cli", "serve", "--store", str(store_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        import httpx

        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and len(r.json()["runs"]) == 6
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ example images
def test_changed_most_rows_show_each_examples_image(client, ids):
    from io import BytesIO

    Image = pytest.importorskip("PIL.Image")
    from sklearn.datasets import load_digits

    body = client.get(f"/api/runs/{ids['finetune']}/confidence-changes?against={ids['original']}&split=forget&k=4").json()
    assert body["images"] is True
    raw = load_digits().images  # 0..16 per pixel; the digits source keeps train positions sorted(perm[449:]) (seed 0)
    train_rows = np.sort(np.random.default_rng(0).permutation(len(raw))[449:])
    for row in body["rows"]:
        assert row["image"] == f"/api/runs/{ids['finetune']}/examples/forget/{row['id']}.png"
        r = client.get(row["image"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(BytesIO(r.content)))
        assert img.shape == (8, 8) and img.dtype == np.uint8
        px = raw[train_rows[row["id"]]]
        want = np.rint((px - px.min()) / (px.max() - px.min()) * 255)
        assert np.array_equal(img, want.astype(np.uint8)), row["id"]


def test_png_encoder_on_a_hand_case():
    from io import BytesIO

    Image = pytest.importorskip("PIL.Image")
    png = an.png_grey(np.array([[0.0, 1.0, 2.0], [4.0, 3.0, 4.0]]))
    assert np.array_equal(np.asarray(Image.open(BytesIO(png))), [[0, 64, 128], [255, 191, 255]])
    assert np.array_equal(np.asarray(Image.open(BytesIO(an.png_grey(np.full((2, 2), 5.0))))), np.full((2, 2), 128))


def test_bad_example_requests_are_404(client, ids, store_dir):
    rid = ids["finetune"]
    test_id = int(Store(store_dir, tidy=False).load_run_array(rid, "accuracy.correct.retain.ids")[0])  # not in forget
    for path in (f"/api/runs/{rid}/examples/holdout/1.png", f"/api/runs/{rid}/examples/forget/abc.png",
                 f"/api/runs/{rid}/examples/forget/-1.png", f"/api/runs/{rid}/examples/forget/999999.png",
                 f"/api/runs/{rid}/examples/forget/{test_id}.png",
                 f"/api/runs/nope/examples/forget/1.png", f"/api/runs/{rid}/examples/..%2f/1.png"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json(), (path, r.status_code, r.text[:200])


def test_tabular_rows_have_no_image(tmp_path):
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.runner import run_experiment

    spec = {"name": "blobs", "dataset": {"name": "gaussian_blobs", "params": {"n_train": 200, "n_test": 100, "n_features": 6}},
            "forget": [{"kind": "random", "fraction": 0.1}], "model": {"name": "mlp", "params": {"hidden": [16]}},
            "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.01}, "references": {"retrain_seeds": 2},
            "metrics": ["accuracy"], "methods": ["retrain"], "seeds": [0]}
    run_experiment(Experiment.from_dict(spec), Store(tmp_path / "s"), device="cpu", progress=False, log=lambda m: None)
    c = TestClient(create_app(tmp_path / "s"))
    rows = {r["method"]: r["run_id"] for r in c.get("/api/runs").json()["runs"]}
    body = c.get(f"/api/runs/{rows['retrain']}/confidence-changes?against={rows['original']}&k=3").json()
    assert body["images"] is False and all(r["image"] is None for r in body["rows"])
    assert c.get(f"/api/runs/{rows['retrain']}/examples/forget/{body['rows'][0]['id']}.png").status_code == 404


# ------------------------------------------------------------------------------------------ UMAP
@pytest.mark.slow
def test_umap_projection_is_seeded_cached_and_equals_umap_learn(store_dir, tmp_path, monkeypatch, ids):
    import shutil

    umap = pytest.importorskip("umap")
    root = tmp_path / "store"
    shutil.copytree(store_dir, root, ignore=shutil.ignore_patterns("analysis"))
    client = TestClient(create_app(root))
    rid = ids["finetune"]
    pca = client.get(f"/api/runs/{rid}/embedding").json()
    assert pca["projection"] == "pca" and pca["method"] == "PCA"
    calls = []
    real = an.umap_2d
    monkeypatch.setattr(an, "umap_2d", lambda f, *a, **k: calls.append(len(f)) or real(f, *a, **k))
    body = client.get(f"/api/runs/{rid}/embedding?projection=umap").json()
    assert body["projection"] == "umap" and body["method"] == "UMAP" and body["seed"] == 0 and calls == [734]
    assert [(p["split"], p["id"]) for p in body["points"]] == [(p["split"], p["id"]) for p in pca["points"]]
    # the same features through umap-learn directly give the same coordinates
    source = load_dataset("digits")
    x = torch.stack([(source.test if p["split"] == "test" else source.train).data.x[
        (source.test if p["split"] == "test" else source.train).positions_of([p["id"]])[0]] for p in body["points"]]).float()
    with torch.no_grad():
        feats = model_of(store_dir, rid).features(x).numpy()
    want = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=0, init="pca").fit_transform(feats)
    got = np.array([[p["x"], p["y"]] for p in body["points"]])
    assert np.allclose(got, want, atol=1e-3)
    # cached per run: a restarted app reads it; the PCA view is unchanged
    again = TestClient(create_app(root)).get(f"/api/runs/{rid}/embedding?projection=umap").json()
    assert calls == [734] and [p["x"] for p in again["points"]] == [p["x"] for p in body["points"]]
    assert (root / "analysis" / rid / "projection-umap.json").is_file()
    assert client.get(f"/api/runs/{rid}/embedding?projection=tsne").status_code == 400
