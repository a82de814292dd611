"""The comparator on language-model runs (tiny Llama on fictitious profiles): per-profile answer probability and ROUGE-L
equal to the stored metrics' per-example arrays grouped by profile (and the original's to a by-hand teacher-forced
computation), the embedding equal to scikit-learn's PCA of the middle block's mean hidden state computed here, CKA per
decoder block by the centred-Gram formula, the "changed most" table with the questions, gold and greedy answers, the
membership attack's TPR/FPR against scikit-learn for the loss and Min-K% scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from rouge_score import rouge_scorer
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve

from unlearnkit.data.sources import load_dataset
from unlearnkit.experiment import Experiment
from unlearnkit.models import build_model
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.web import create_app

from .test_api import hsic_cka

pytestmark = pytest.mark.slow  # trains four tiny Llamas (~15 s on an idle CPU) and analyses three runs
LM = {"name": "comparator-lm", "dataset": {"name": "profiles", "params": {"scale": "tiny", "tokenizer": "word"}},
      "forget": [{"kind": "profiles", "fraction": 0.1}], "model": {"name": "tiny_llama"},
      "train": {"epochs": 30, "batch_size": 16, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"},
      "references": {"retrain_seeds": 2}, "metrics": ["answer_prob", "rouge_l", "min_k"],
      "methods": ["retrain", {"name": "grad_ascent", "params": {"epochs": 3, "batch_size": 8, "optimizer": "adamw", "lr": 0.001}}],
      "seeds": [0]}


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("comparator-lm") / "store"
    run_experiment(Experiment.from_dict(LM), Store(root), device="cpu", progress=False, log=lambda m: None)
    return root


@pytest.fixture(scope="module")
def lm(lm_store) -> dict:
    client = TestClient(create_app(lm_store))
    ids = {r["method"]: r["run_id"] for r in client.get("/api/runs").json()["runs"]}
    return {"client": client, "ids": ids, "store": Store(lm_store, tidy=False)}


@pytest.fixture(scope="module")
def source():
    return load_dataset("profiles", scale="tiny", tokenizer="word")


def model_of(store: Store, run_id: str, source) -> torch.nn.Module:
    return store.load_run_model(run_id, build_model("tiny_llama", source.input_shape, source.n_outputs)).eval()


def profile_of(source, ids) -> np.ndarray:
    part = source.train.select_ids(ids) if np.isin(ids, source.train.ids).all() else source.test.select_ids(ids)
    return np.asarray([r.profile_id for r in part.data.records])


def by_profile(values: np.ndarray, profiles: np.ndarray) -> list[float]:
    return [float(values[profiles == p].mean()) for p in np.unique(profiles)]


@torch.no_grad()
def answer_probs_by_hand(model, part) -> np.ndarray:
    """exp(−mean NLL of the answer tokens), straight from the logits (labels shifted by one, -100 ignored)."""
    d = part.data
    logp = torch.log_softmax(model(input_ids=d.x, attention_mask=d.attention_mask).logits.float(), -1)[:, :-1]
    labels = d.labels[:, 1:]
    mask = labels != -100
    tok = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return torch.exp((tok * mask).sum(1) / mask.sum(1)).numpy()


# ------------------------------------------------------------------------------------------ screening, class level
def test_lm_runs_are_listed_and_analysed(lm):
    rows = lm["client"].get("/api/runs").json()["runs"]
    assert {r["method"] for r in rows} == {"original", "retrain", "grad_ascent"}
    assert all(r["modality"] == "causal_lm" and r["stream"] is None for r in rows)
    for method, rid in lm["ids"].items():
        body = lm["client"].get(f"/api/runs/{rid}/classes").json()
        assert body["modality"] == "causal_lm" and body["unit"] == "profile", (method, body)


def test_per_profile_answer_prob_and_rouge_equal_the_stored_metrics(lm, source):
    store, client = lm["store"], lm["client"]
    for method in ("grad_ascent", "retrain"):
        rid = lm["ids"][method]
        body = client.get(f"/api/runs/{rid}/classes").json()
        for split in ("forget", "retain"):
            s = body["splits"][split]
            ids = store.load_run_array(rid, f"answer_prob.p.{split}.ids")
            profiles = profile_of(source, ids)
            assert s["groups"] == np.unique(profiles).tolist() and s["group_names"][0] == f"profile {s['groups'][0]}"
            assert s["answer_prob"] == pytest.approx(by_profile(store.load_run_array(rid, f"answer_prob.p.{split}.values"), profiles), abs=1e-6)
            rouge_ids = store.load_run_array(rid, f"rouge_l.recall.{split}.ids")
            assert np.array_equal(rouge_ids, ids)
            assert s["rouge_l"] == pytest.approx(by_profile(store.load_run_array(rid, f"rouge_l.recall.{split}.values"), profiles), abs=1e-9)
            assert s["mean"]["answer_prob"] == pytest.approx(store.load_run(rid)["results"]["answer_prob"]["values"][split], abs=1e-6)
    # the original's per-profile values: a teacher-forced computation by hand from the original run's model
    body = client.get(f"/api/runs/{lm['ids']['grad_ascent']}/classes").json()
    orig = model_of(store, lm["ids"]["original"], source)
    forget_ids = store.load_run_array(lm["ids"]["grad_ascent"], "answer_prob.p.forget.ids")
    p = answer_probs_by_hand(orig, source.train.select_ids(forget_ids))
    assert body["splits"]["forget"]["original"]["answer_prob"] == pytest.approx(by_profile(p, profile_of(source, forget_ids)), abs=1e-5)
    # the retrain band: min and max over the two retrained references in the store, each computed by hand
    band = body["splits"]["forget"]["retrain_band"]["answer_prob"]
    keys = store.load_experiment(store.load_run(lm["ids"]["grad_ascent"])["experiment"])["tasks"][0]["references"]["keys"]["retrain"]
    per_ref = []
    for key in keys:
        ref, _ = store.load_reference(key, lambda: build_model("tiny_llama", source.input_shape, source.n_outputs))
        per_ref.append(by_profile(answer_probs_by_hand(ref.eval(), source.train.select_ids(forget_ids)), profile_of(source, forget_ids)))
    for g, b in enumerate(band):
        assert b["n"] == 2 and b["min"] == pytest.approx(min(r[g] for r in per_ref), abs=1e-5)
        assert b["max"] == pytest.approx(max(r[g] for r in per_ref), abs=1e-5)
    # the original remembers its forget profiles far better than grad ascent left them
    assert min(body["splits"]["forget"]["original"]["answer_prob"]) > max(body["splits"]["forget"]["answer_prob"])


# ------------------------------------------------------------------------------------------ instance level
def test_lm_embedding_is_the_pca_of_the_middle_blocks_mean_hidden_state(lm, source):
    rid = lm["ids"]["grad_ascent"]
    body = lm["client"].get(f"/api/runs/{rid}/embedding").json()
    pts = body["points"]
    assert [sum(p["split"] == s for p in pts) for s in ("forget", "retain", "test")] == [12, 108, 12]
    assert body["feature_dim"] == 64 and "block 1 of 2" in body["features"] and all(p["pred"] is None for p in pts)
    model = model_of(lm["store"], rid, source)
    feats = []
    with torch.no_grad():
        for split in ("forget", "retain", "test"):
            ids = [p["id"] for p in pts if p["split"] == split]
            d = (source.test if split == "test" else source.train).select_ids(ids).data
            h = model(input_ids=d.x, attention_mask=d.attention_mask, output_hidden_states=True).hidden_states[1]
            m = d.attention_mask.float()[..., None]
            feats.append(((h * m).sum(1) / m.sum(1)).numpy())
    feats = np.concatenate(feats).astype(np.float64)
    want = PCA(n_components=2, svd_solver="full").fit(feats)
    coords = want.transform(feats)
    got = np.array([[p["x"], p["y"]] for p in pts])
    for k in range(2):
        assert min(np.abs(got[:, k] - coords[:, k]).max(), np.abs(got[:, k] + coords[:, k]).max()) < 1e-3
    # p_true is the answer probability the metric stored
    stored = dict(zip(lm["store"].load_run_array(rid, "answer_prob.p.forget.ids").tolist(),
                      lm["store"].load_run_array(rid, "answer_prob.p.forget.values")))
    for p in pts:
        if p["split"] == "forget":
            assert p["p_true"] == pytest.approx(float(stored[p["id"]]), abs=1e-6) and p["group"] == f"profile {p['label']}"


def test_lm_changed_most_table_has_questions_gold_and_both_greedy_answers(lm, source):
    a, b = lm["ids"]["grad_ascent"], lm["ids"]["original"]
    body = lm["client"].get(f"/api/runs/{a}/confidence-changes?against={b}&split=forget&k=5").json()
    store = lm["store"]
    ids = store.load_run_array(a, "answer_prob.p.forget.ids")
    delta = store.load_run_array(a, "answer_prob.p.forget.values") - store.load_run_array(b, "answer_prob.p.forget.values")
    order = np.argsort(-np.abs(delta), kind="stable")[:5]
    assert [r["id"] for r in body["rows"]] == [int(ids[i]) for i in order]
    assert [r["delta"] for r in body["rows"]] == pytest.approx([float(delta[i]) for i in order], abs=1e-5)
    records = {r.item_id: r for r in source.train.select_ids(ids).data.records}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge_a = dict(zip(ids.tolist(), store.load_run_array(a, "rouge_l.recall.forget.values")))
    for row in body["rows"]:
        rec = records[row["id"]]
        assert row["question"] == rec.question and "".join(row["gold"].lower().split()) == "".join(rec.answer.lower().split())
        assert isinstance(row["answer"], str) and isinstance(row["answer_against"], str)
        # the greedy answers shown are the ones the stored ROUGE-L recall was computed from
        assert row["rouge_l"] == pytest.approx(scorer.score(row["gold"], row["answer"])["rougeL"].recall)
        assert row["rouge_l"] == pytest.approx(float(rouge_a[row["id"]]))
        assert row["rouge_l_against"] == pytest.approx(scorer.score(row["gold"], row["answer_against"])["rougeL"].recall)
    # the original recalls most of its forget answers word for word; grad ascent does not
    assert np.mean([r["rouge_l_against"] for r in body["rows"]]) > np.mean([r["rouge_l"] for r in body["rows"]])


# ------------------------------------------------------------------------------------------ layer level
def test_lm_cka_per_decoder_block(lm, source):
    client, store = lm["client"], lm["store"]
    orig = client.get(f"/api/runs/{lm['ids']['original']}/cka").json()
    assert orig["layers"] == ["block 1", "block 2"]
    for split in ("forget", "retain", "test"):
        for row in orig["splits"][split]:
            assert row["original"] == pytest.approx(1.0) and len(row["retrain"]) == 2
            assert all(0.0 <= v <= 1.0 + 1e-9 for v in row["retrain"])
    ga = client.get(f"/api/runs/{lm['ids']['grad_ascent']}/cka").json()
    ids = store.load_run_array(lm["ids"]["grad_ascent"], "answer_prob.p.forget.ids")
    d = source.train.select_ids(ids).data
    m = d.attention_mask.float()[..., None]
    with torch.no_grad():
        states = [[((h * m).sum(1) / m.sum(1)).numpy().astype(np.float64)
                   for h in model_of(store, lm["ids"][k], source)(input_ids=d.x, attention_mask=d.attention_mask,
                                                                   output_hidden_states=True).hidden_states[1:]]
                  for k in ("grad_ascent", "original")]
    for i, row in enumerate(ga["splits"]["forget"]):
        x, y = states[0][i], states[1][i]
        assert row["original"] == pytest.approx(hsic_cka(x - x.mean(0), y - y.mean(0)), abs=1e-4)


# ------------------------------------------------------------------------------------------ attack
@pytest.mark.parametrize("score,stored", [("loss", "answer_prob.p"), ("min_k", "min_k.score")])
def test_lm_attack_rates_match_sklearn(lm, score, stored):
    client, store = lm["client"], lm["store"]
    rid = lm["ids"]["grad_ascent"]
    base = client.get(f"/api/runs/{rid}/attack", params={"score": score}).json()
    assert base["non_members"] == "holdout profiles (never trained)" and base["n"] == {"forget": 12, "test": 12}
    key = "loss" if score == "loss" else "score"
    forget = np.array([x[key] for x in base["instances"]["forget"]])
    test = np.array([x[key] for x in base["instances"]["test"]])
    want = store.load_run_array(rid, f"{stored}.forget.values")
    # the scores are the stored metric's: loss = −log(answer probability); Min-K% NLL = −(stored Min-K% log-prob score)
    assert forget == pytest.approx(-np.log(want) if score == "loss" else -want, abs=1e-5)
    y = np.r_[np.ones(len(forget)), np.zeros(len(test))]
    fpr, tpr, thr = roc_curve(y, -np.r_[forget, test])
    for i in range(1, len(thr)):
        r = client.get(f"/api/runs/{rid}/attack", params={"threshold": repr(float(-thr[i])), "score": score}).json()
        assert (r["tpr"], r["fpr"]) == (pytest.approx(tpr[i]), pytest.approx(fpr[i])), i
    assert base["auc"] == pytest.approx(roc_auc_score(y, -np.r_[forget, test]))
    if score == "min_k":
        assert base["auc"] == pytest.approx(store.load_run(rid)["results"]["min_k"]["values"]["auc"])


def test_lm_bad_parameters_and_no_images(lm):
    client, rid = lm["client"], lm["ids"]["grad_ascent"]
    r = client.get(f"/api/runs/{rid}/attack?score=zlib")
    assert r.status_code == 400 and "min_k" in r.json()["error"]
    r = client.get(f"/api/runs/{rid}/examples/forget/64.png")
    assert r.status_code == 404 and "not images" in r.json()["error"]
    ev = client.get(f"/api/runs/{rid}/evidence").json()
    assert ev["label"] == lm["store"].load_run(rid)["verdict"]["label"]
