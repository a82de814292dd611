"""Inference-time guards (ECO, GUARD; method kind ``guard``): weights bit-identical after ``unlearn``; the guard is what
scoring and generation (greedy and sampled) use; the prompt classifier against scikit-learn and hand cases; ECO's
corruption and zeroth-order strength; GUARD's exact and semantic matching (fake and real MiniLM encoders); guard state
stored and reloaded, weights refused; weight-level relearning on the bare model gives "suppressed"; bad input."""

import copy

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, EmptySelection, ModelError, StoreError
from unlearnkit.lm.guard import (
    CharTrigramEncoder,
    EmbeddingCorruptionGuard,
    ForbiddenTokenGuard,
    GuardedLM,
    bare_model,
    check_threshold,
    prompt_end_marker,
)
from unlearnkit.methods import build_method
from unlearnkit.methods._guards import choose_threshold, prompt_features, split_prompts, train_prompt_classifier
from unlearnkit.references import References


def forget_prob(model, task, split=None):
    return float(np.exp(-get_adapter(task).outputs(model, split or task.forget)["nll"]).mean())


@pytest.fixture(scope="module")
def eco_out(causal_lm_task, causal_lm_refs):
    return build_method("eco", {"zo_steps": 4}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, causal_lm_refs,
                                                        rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def guard_out(causal_lm_task, causal_lm_refs):
    return build_method("guard", {"encoder": "char3"}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(),
                                                                rng=np.random.default_rng(0))


def contains(seq, sub):
    return any(tuple(seq[i:i + len(sub)]) == tuple(sub) for i in range(len(seq) - len(sub) + 1))


# ------------------------------------------------------------------------------------------------ the wrapper
@pytest.mark.parametrize("which", ["eco_out", "guard_out"])
def test_weights_bit_identical_and_the_guard_is_what_scoring_and_generation_use(which, request, causal_lm_task, causal_lm_refs):
    out = request.getfixturevalue(which)
    original = causal_lm_refs.original
    assert isinstance(out.model, GuardedLM) and bare_model(out.model) is out.model.inner
    inner, ref = out.model.inner.state_dict(), original.state_dict()
    assert inner.keys() == ref.keys() and all(torch.equal(inner[k], ref[k]) for k in ref)  # every weight tensor bit-identical
    assert out.changed.count() == 0 and set(out.changed) == {n for n, _ in out.model.named_parameters()}
    # scoring: the forget answers are less likely through the guard, the retain answers (classifier silent) unchanged
    # (ECO corrupts only the name: the question still says which attribute is asked, and the tiny model's answer
    # probability with the name destroyed levels off near 0.58 of 0.84, however strong the noise)
    assert forget_prob(out.model, causal_lm_task) < 0.75 * forget_prob(original, causal_lm_task)
    assert forget_prob(out.model, causal_lm_task, causal_lm_task.retain) == pytest.approx(forget_prob(original, causal_lm_task, causal_lm_task.retain), abs=1e-5)
    # generation: forget answers change; prompts the classifier lets through generate exactly what the bare model does
    adapter = get_adapter(causal_lm_task)
    fp, rp = split_prompts(causal_lm_task.forget), split_prompts(causal_lm_task.retain)[:16]
    assert adapter.generate(out.model, fp, max_new_tokens=12) != adapter.generate(original, fp, max_new_tokens=12)
    assert adapter.generate(out.model, rp, max_new_tokens=12) == adapter.generate(original, rp, max_new_tokens=12)
    overhead = out.info["overhead"]
    assert overhead["bare_ms_per_token"] > 0 and overhead["guarded_ms_per_token"] > 0 and overhead["overhead_ratio"] > 0
    c = out.info["classifier"]
    assert {"fpr_retain", "fpr_retain_heldout", "fpr_neighbours", "tpr_forget_heldout"} <= set(c) and 0.0 <= c["fpr_neighbours"] <= 1.0


def test_prompt_end_is_found_in_scoring_rows_and_generation_rows():
    assert prompt_end_marker([[1, 5, 9, 7, 8], [1, 6, 7, 8]]) == [7, 8]
    with pytest.raises(ConfigError, match="share no final token"):
        prompt_end_marker([[1, 2], [1, 3]])
    g = GuardedLM.__new__(GuardedLM)
    torch.nn.Module.__init__(g)
    g.register_buffer("marker", torch.tensor([7, 8]))
    ids = torch.tensor([[1, 5, 7, 8, 3, 7, 8, 0], [0, 0, 1, 6, 7, 8, 4, 2], [1, 2, 3, 4, 5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    assert g.prompt_ends(ids, mask).tolist() == [4, 6, 8]  # the first marker (right or left padding); none: the whole row


def test_classifier_equals_scikit_learn_and_the_guard_computes_it_in_its_forward(causal_lm_task, eco_out):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    pos, neg = rng.normal(1.0, 1.0, (20, 5)), rng.normal(0.0, 1.0, (40, 5))
    clf = train_prompt_classifier(pos, neg, rng=np.random.default_rng(0), threshold=None, holdout_fraction=0.3, C=0.5, who="t")
    hold_f, hold_r = clf.heldout
    fit_f, fit_r = np.setdiff1d(np.arange(20), hold_f), np.setdiff1d(np.arange(40), hold_r)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, class_weight="balanced", max_iter=5000))
    ref.fit(np.r_[pos[fit_f], neg[fit_r]], np.r_[np.ones(len(fit_f)), np.zeros(len(fit_r))])
    x = np.r_[pos, neg]
    np.testing.assert_allclose(clf.proba(x), ref.predict_proba(x)[:, 1], atol=1e-6)
    assert 0 < clf.threshold < 1
    # the guard's in-forward probability (from its own hidden states) = the classifier's on the prompt features
    guard = eco_out.model
    prompts = split_prompts(causal_lm_task.forget)[:3] + split_prompts(causal_lm_task.retain)[:3]
    feats = prompt_features(guard.inner, prompts, device="cpu")
    expect = 1 / (1 + np.exp(-(feats @ guard.clf_weight.double().numpy() + float(guard.clf_bias))))
    get_adapter(causal_lm_task).generate(guard, prompts, max_new_tokens=1)
    np.testing.assert_allclose(guard._session["probs"].numpy(), expect, atol=1e-4)


def test_threshold_on_held_out_prompts_hand_case():
    # scores 0.1 0.2 0.8 0.85 0.9; firing at >= t: t in (0.2, 0.8] catches both positives and no negative but 0.85 -> J = 2/3
    # t in (0.85, 0.9]: J = 1/2 - 0; so the best is (0.2, 0.8]'s midpoint candidate 0.5
    assert choose_threshold(np.array([0.8, 0.9]), np.array([0.1, 0.2, 0.85])) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------ ECO
def test_eco_corruption_hand_computed():
    g = EmbeddingCorruptionGuard.__new__(EmbeddingCorruptionGuard)
    torch.nn.Module.__init__(g)
    g.corruption = "noise"
    for name, v in {"strength": torch.tensor([2.0]), "dims": torch.tensor([2]), "noise": torch.arange(12.0).reshape(3, 4),
                    "emb_scale": torch.tensor([0.5])}.items():
        g.register_buffer(name, v)
    e = torch.ones(2, 4)
    out = g.corrupt(e, torch.tensor([1, 4]))  # position 4 wraps to noise row 1
    assert torch.equal(out, torch.tensor([[1 + 4.0, 1 + 5.0, 1, 1], [1 + 4.0, 1 + 5.0, 1, 1]]))
    g.corruption = "zero"
    g.strength.fill_(0.5)
    out = g.corrupt(torch.tensor([[3.0, -5.0, 7.0, 9.0]]), torch.tensor([0]))  # round(0.5·2) = 1 of the first 2 dims: the largest |·|
    assert torch.equal(out, torch.tensor([[3.0, 0.0, 7.0, 9.0]]))


def embeddings_seen_by_the_inner_model(guard, run):
    """The input embeddings the guard hands its inner model during ``run()`` (first call: the prompt or scored row)."""
    seen = []
    handle = guard.inner.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw.get("inputs_embeds")), with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return next(e for e in seen if e is not None)


def word_positions(codec, ids, words):
    """Independently of the guard: the positions whose (word-level) token is one of ``words``."""
    return [p for p, t in enumerate(ids) if codec.decode([t]).strip() in words]


def test_eco_entity_positions_corrupt_exactly_the_subjects_tokens_in_scoring_and_generation(causal_lm_task, eco_out):
    guard = eco_out.model
    assert guard.positions == "entity" and eco_out.info["entities"]["positions"] == "entity"
    codec = causal_lm_task.forget.data.codec
    records = causal_lm_task.forget.data.records
    prompts = split_prompts(causal_lm_task.forget)
    adapter = get_adapter(causal_lm_task)
    guard.force = True
    try:
        for i in (0, len(prompts) - 1):
            ids = torch.tensor([prompts[i]])
            expected = word_positions(codec, prompts[i], records[i].subject.split())
            assert len(expected) == len(records[i].subject.split()) >= 2  # first and last name
            bare = guard.inner.get_input_embeddings()(ids)
            # scoring (teacher-forced row: prompt + answer) and greedy generation (left-padded prompt, key/value cache)
            row = causal_lm_task.forget.data.x[i : i + 1, : int(causal_lm_task.forget.data.attention_mask[i].sum())]
            scored = embeddings_seen_by_the_inner_model(guard, lambda: guard(input_ids=row))
            generated = embeddings_seen_by_the_inner_model(guard, lambda: adapter.generate(guard, [prompts[i]], max_new_tokens=2))
            for embeds in (scored[:, : ids.shape[1]], generated[:, -ids.shape[1]:]):
                differs = (embeds != bare).any(-1)[0]
                assert torch.nonzero(differs)[:, 0].tolist() == expected
            assert torch.equal(scored[:, ids.shape[1]:], guard.inner.get_input_embeddings()(row)[:, ids.shape[1]:])  # answer untouched
    finally:
        guard.force = None
    assert guard.entity_fallbacks == 0


def test_eco_without_an_entity_in_the_question_and_with_positions_all_corrupts_every_question_token(causal_lm_task, causal_lm_refs,
                                                                                                     eco_out):
    g = eco_out.model
    codec = causal_lm_task.forget.data.codec
    nameless = codec.encode_prompt("Where was the writer born?")
    named = split_prompts(causal_lm_task.forget)[0]
    question = lambda p: list(range(len(p) - len(g.marker)))  # noqa: E731 - every real token before the prompt end
    everything = EmbeddingCorruptionGuard(g.inner, g.marker.tolist(), g.clf_weight, float(g.clf_bias), float(g.threshold),
                                          strength=float(g.strength), corruption="noise", dims=int(g.dims), noise=g.noise,
                                          emb_scale=float(g.emb_scale), entities=None)
    for guard, prompt, fallbacks in [(g, nameless, 1), (everything, named, 0)]:
        guard.force, guard.entity_fallbacks = True, 0
        try:
            ids = torch.tensor([prompt])
            seen = embeddings_seen_by_the_inner_model(guard, lambda: guard(input_ids=ids))
        finally:
            guard.force = None
        assert torch.nonzero((seen != g.inner.get_input_embeddings()(ids)).any(-1)[0])[:, 0].tolist() == question(prompt)
        assert guard.entity_fallbacks == fallbacks
    out = build_method("eco", {"positions": "all", "zo_steps": 0}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task,
                                                                          causal_lm_refs, rng=np.random.default_rng(0))
    assert out.model.positions == "all" and out.info["entities"] == {"positions": "all"}
    ent = eco_out.info["entities"]
    assert ent["not_found"] == 0 and ent["forget_prompts"] == 2 * len(causal_lm_task.forget.data.records)
    assert "entity not found in 0 of" in ent["note"] and "oracle NER" in ent["source"]


def test_eco_zeroth_order_search_moves_toward_the_retrained_forget_probability(eco_out):
    s = eco_out.info["strength"]
    first = s["search"][0]
    assert first["strength"] == 1.0 and s["evaluations"] == 1 + 2 * 4
    assert abs(s["forget_prob"] - s["target_forget_prob"]) == min(e["gap"] for e in s["search"]) < first["gap"]
    assert s["forget_prob"] < s["forget_prob_uncorrupted"]


# ------------------------------------------------------------------------------------------------ GUARD
def test_guard_exact_matching_hand_case():
    g = ForbiddenTokenGuard.__new__(ForbiddenTokenGuard)
    g.forbidden = [(5, 6, 9), (7,)]
    assert g.exact_banned([]) == {5, 7}
    assert g.exact_banned([3, 5]) == {5, 7, 6}
    assert g.exact_banned([5, 6]) == {5, 7, 9}


def sample(model, prompt, n_new, gen):
    """Ancestral sampling with the key/value cache, through ``model``'s forward (the decoding a server would run)."""
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    cache, new = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values, []
    mask = torch.ones_like(ids)
    for _ in range(n_new):
        tok = int(torch.multinomial(torch.softmax(out.logits[0, -1].float(), -1), 1, generator=gen))
        new.append(tok)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
        out = model(input_ids=torch.tensor([[tok]]), attention_mask=mask, cache=cache, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    return new


def test_guard_blocks_forbidden_tokens_in_greedy_and_sampled_generation(causal_lm_task, causal_lm_refs, guard_out):
    guard, original = guard_out.model, causal_lm_refs.original
    adapter = get_adapter(causal_lm_task)
    fp = split_prompts(causal_lm_task.forget)
    seqs = guard.forbidden
    bare = adapter.generate(original, fp, max_new_tokens=16)
    assert sum(any(contains(g, s) for s in seqs) for g in bare) >= 6  # the bare model says the facts
    assert not any(contains(g, s) for g in adapter.generate(guard, fp, max_new_tokens=16) for s in seqs)
    gen_b, gen_g = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    leaked_bare = leaked_guard = 0
    for p in fp[:6]:
        for _ in range(3):
            leaked_bare += any(contains(sample(original, p, 12, gen_b), s) for s in seqs)
            leaked_guard += any(contains(sample(guard, p, 12, gen_g), s) for s in seqs)
    assert leaked_bare >= 6 and leaked_guard == 0


def test_guard_semantic_matching_alone_blocks_the_fact(causal_lm_task, causal_lm_refs, guard_out):
    """No exact sequence at all: the fake (character-trigram) encoder's similarity to the forbidden word blocks it."""
    original = causal_lm_refs.original
    codec = causal_lm_task.forget.data.codec
    word = guard_out.model.phrases[0]
    token = codec.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    emb = CharTrigramEncoder().encode([word])
    g = guard_out.model
    semantic = ForbiddenTokenGuard(copy.deepcopy(original), g.marker.tolist(), g.clf_weight, float(g.clf_bias), float(g.threshold),
                                   forbidden=[], phrases=[word], phrase_emb=emb, penalty=20.0, top_k=5, sim_threshold=0.7, window=0,
                                   encoder="char3", codec=codec)
    adapter = get_adapter(causal_lm_task)
    fp = split_prompts(causal_lm_task.forget)
    assert any(contains(x, token) for x in adapter.generate(original, fp, max_new_tokens=16))
    assert not any(contains(x, token) for x in adapter.generate(semantic, fp, max_new_tokens=16))
    assert semantic.last_hits["semantic"] > 0 and semantic.last_hits["exact"] == 0


@pytest.mark.slow
def test_guard_with_the_real_minilm_encoder_offline(causal_lm_task, causal_lm_refs):
    from unlearnkit.lm.guard import get_encoder

    enc = get_encoder("all-MiniLM-L6-v2")
    e = enc.encode(["Garubrook", "Garubrok", "Paris"])
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5) and e[0] @ e[1] > 0.7 > e[0] @ e[2]
    out = build_method("guard", {}).unlearn(copy.deepcopy(causal_lm_refs.original), causal_lm_task, References(), rng=np.random.default_rng(0))
    fp = split_prompts(causal_lm_task.forget)
    gen = get_adapter(causal_lm_task).generate(out.model, fp, max_new_tokens=16)
    assert not any(contains(g, s) for g in gen for s in out.model.forbidden)
    assert out.model.phrase_emb.shape[1] == 384


# ------------------------------------------------------------------------------------------------ state
@pytest.mark.parametrize("which", ["eco_out", "guard_out"])
def test_guard_state_is_stored_without_weights_and_reloads(which, request, tmp_path, causal_lm_task, causal_lm_refs):
    from unlearnkit.io import load_state
    from unlearnkit.runs.runner import model_identity
    from unlearnkit.runs.store import Store

    guard = request.getfixturevalue(which).model
    store = Store(tmp_path)
    record = {"run_id": "r1", "task": {"name": "t", "fingerprint": "f"}, "method": {"name": guard.guard_name},
              "model": model_identity(guard, causal_lm_refs.original)}
    store.save_run(record, model=guard)
    saved = load_state(tmp_path / "runs" / "r1" / "model.safetensors")
    assert saved and not any(k.startswith("inner.") for k in saved) and "clf_weight" in saved and "threshold" in saved
    with pytest.raises(StoreError, match="no unlearned weights"):
        store.load_run_model("r1", copy.deepcopy(causal_lm_refs.original))
    back = store.load_run_guard("r1", copy.deepcopy(causal_lm_refs.original), causal_lm_task.forget.data.codec)
    assert type(back) is type(guard) and getattr(back, "positions", None) == getattr(guard, "positions", None)
    a = get_adapter(causal_lm_task).outputs(guard, causal_lm_task.forget)["nll"]
    b = get_adapter(causal_lm_task).outputs(back, causal_lm_task.forget)["nll"]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_a_continuation_without_the_prompt_is_refused(guard_out):
    with pytest.raises(ModelError, match="did not start"):
        guard_out.model(input_ids=torch.tensor([[3]]), cache=object(), use_cache=True)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ["eco", "guard"])
@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.5, float("nan")])
def test_threshold_outside_0_1_is_refused(name, threshold):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        build_method(name, {"threshold": threshold})
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        check_threshold(threshold, name)


def test_empty_forget_prompt_set_is_refused():
    with pytest.raises(EmptySelection, match="forget-prompt set is empty"):
        train_prompt_classifier(np.zeros((0, 4)), np.ones((5, 4)), rng=np.random.default_rng(0), threshold=0.5, holdout_fraction=0.3,
                                C=1.0, who="eco")


def test_other_bad_parameters_are_refused():
    for name, params, match in [("eco", {"corruption": "blur"}, "corruption"), ("eco", {"zo_mu": 0}, "zo_mu"),
                                ("eco", {"positions": "subject"}, "positions"),
                                ("guard", {"encoder": "bert"}, "encoder"), ("guard", {"penalty": -1}, "penalty"),
                                ("guard", {"holdout_fraction": 1.0}, "holdout_fraction")]:
        with pytest.raises(ConfigError, match=match):
            build_method(name, params)


# ------------------------------------------------------------------------------------------------ verdict honesty
@pytest.mark.slow
def test_a_guard_that_hides_the_answers_is_suppressed_by_relearning_its_bare_weights(profiles_source, causal_lm_task):
    """Five retrained seeds (so the relearning band decides something): the GUARD model's answers look forgotten (forget
    evidence inside the retrain band), but relearning its bare weights recovers the answers faster than relearning a
    retrained model does: "suppressed". Relearning through the guard would have hidden that."""
    from tests.conftest import LM_CONFIG, tiny_llama_factory
    from unlearnkit.evaluation import assess
    from unlearnkit.runs.references import build_references

    refs = build_references(causal_lm_task, tiny_llama_factory(profiles_source), LM_CONFIG, retrain_seeds=5)
    out = build_method("guard", {"encoder": "char3"}).unlearn(copy.deepcopy(refs.original), causal_lm_task, References(),
                                                             rng=np.random.default_rng(0))
    a = assess(out.model, causal_lm_task, refs, ["answer_prob", "relearn", "noise_floor"])
    rows = {r["key"]: r for r in a.verdict.rows}
    assert rows["answer_prob.forget"]["status"] == "inside"
    assert rows["relearn.auc"]["status"] == "more"
    assert a.results["relearn"].info["measured_on"].startswith("the guard's bare weights")
    assert a.verdict.label == "suppressed", a.verdict.reasons
    assert a.verdict.weights_untouched and any(r.startswith("a guard: its weights are the original's") for r in a.verdict.reasons)


def test_eco_entities_under_smollm2_subword_tokenizer():
    """Under SmolLM2's byte-level BPE a name is several subword pieces and tokenises differently after different words
    (with or without a leading space, in a question or its paraphrase). Every forget prompt's name is found, and the
    positions ECO corrupts decode to exactly the subject's name: no piece of it left clean, no other word touched."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.methods.eco import entity_sequences
    from unlearnkit.models import build_model

    source = load_dataset("profiles", scale="tiny", tokenizer="smollm2")
    task = make_task("profiles", source.train, source.test, ForgetSpec("profiles", fraction=0.1), np.random.default_rng(0),
                     n_classes=None, modality=source.modality, probes=source.probes)
    codec = task.forget.data.codec
    records = task.forget.data.records
    entities = entity_sequences(task)
    assert any(len(e) >= 3 for e in entities)  # subword: a two-word name is more than two tokens
    inner = build_model("tiny_llama", source.input_shape, source.n_outputs)  # the guard's mask needs no trained weights
    prompts = split_prompts(task.forget)
    marker = prompt_end_marker(prompts)
    dim = inner.get_input_embeddings().weight.shape[1]
    guard = EmbeddingCorruptionGuard(inner, marker, torch.zeros(dim), 0.0, 0.5, strength=1.0, corruption="noise", dims=dim,
                                     noise=torch.zeros(64, dim), emb_scale=1.0, entities=entities)
    questions = [(r.question, r.subject) for r in records] + [(r.paraphrased_question, r.subject) for r in records
                                                             if getattr(r, "paraphrased_question", None)]
    assert len(questions) > len(records)
    for question, subject in questions:
        ids = codec.encode_prompt(question)
        batch = torch.tensor([ids])
        mask = torch.ones_like(batch)
        sel, fallback = guard.corrupted_positions(batch, mask, guard.prompt_ends(batch, mask), torch.ones(1, dtype=torch.bool))
        assert not fallback.any(), question
        positions = torch.nonzero(sel[0])[:, 0].tolist()
        assert positions == list(range(positions[0], positions[-1] + 1))  # one contiguous run of pieces
        assert codec.decode([ids[p] for p in positions]).strip() == subject, (question, subject)


@pytest.mark.parametrize("metric, params", [("soft_prompt", {"steps": 4}), ("quantisation", {"bits": [8]}),
                                            ("lm_hidden_probe", {"attribute": "profession", "layer": 0}), ("concept_vectors", {})])
def test_weight_level_probes_measure_a_guards_bare_weights(metric, params, causal_lm_task, causal_lm_refs, eco_out):
    """Soft-prompt recovery, quantisation, the hidden-state probe and concept vectors read the weights: on a guard they
    measure its inner model (the untouched original), exactly as on the original itself, and say so."""
    from unlearnkit.evaluation import EvalContext, build_metric

    m = build_metric(metric, params)
    results = [m.compute(model, causal_lm_task, causal_lm_refs, EvalContext(causal_lm_task, get_adapter(causal_lm_task), device="cpu", seed=0))
               for model in (eco_out.model, causal_lm_refs.original)]
    assert results[0].values == pytest.approx(results[1].values, nan_ok=True)
    assert results[0].info["measured_on"] == "the guard's bare weights (its inner model)" and "measured_on" not in results[1].info
