"""The benchmark metrics on hand cases (TOFU's harmonic-mean model utility with known components, MUSE's ROUGE-L F1
after the stop-word cut, privleak from hand-computed Min-40% AUCs, WMDP's accuracy from hand-computed letter
log-likelihoods), their agreement with the metrics they compose, and TOFU as a drop-in for the profiles data: every
language-model method and the standard battery run on it (tiny Llama, local copies of the hub files)."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from unlearnkit import METHODS
from unlearnkit.adapters import get_adapter
from unlearnkit.data.profiles import variant
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import TaskError
from unlearnkit.evaluation import EvalContext, assess, build_metric, default_battery, evaluate
from unlearnkit.evaluation import muse as muse_metrics
from unlearnkit.evaluation.tofu_utility import COMPONENTS, harmonic_utility
from unlearnkit.evaluation.wmdp import mc_accuracy
from unlearnkit.methods import build_method


def run(names, model, task, refs, ctx=None):
    ctx = ctx or EvalContext(task, get_adapter(task))
    results, missing = evaluate(model, task, refs, [build_metric(n) if isinstance(n, str) else n for n in names], ctx)
    assert not missing
    return results


# ------------------------------------------------------------------------------------------------ TOFU model utility
def test_harmonic_utility_of_known_components():
    comps = dict(zip(COMPONENTS, [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 1.0, 1.0, 1.0]))
    assert harmonic_utility(comps) == pytest.approx(9 / (3 * 2 + 3 * 4 + 3 * 1))  # 9 / Σ 1/x = 0.428571...
    assert harmonic_utility({**comps, "wf_Truth_Ratio": 0.0}) == 0.0  # one component at 0 makes the utility 0
    with pytest.raises(TaskError, match=r"needs all nine components; missing \['ra_Q_A_ROUGE'\]"):
        harmonic_utility({k: v for k, v in comps.items() if k != "ra_Q_A_ROUGE"})
    with pytest.raises(TaskError, match=r"components must be in \[0, 1\]"):
        harmonic_utility({**comps, "retain_Q_A_Prob": 1.5})


def test_tofu_model_utility_composes_the_tofu_pieces(tofu_task, tofu_refs):
    model = tofu_refs.original
    ctx = EvalContext(tofu_task, get_adapter(tofu_task))
    res = run(["tofu_model_utility", build_metric("answer_prob", {"splits": ["retain"]}),
               build_metric("rouge_l", {"splits": ["retain", "real_authors", "world_facts"], "max_new_tokens": 200}),
               build_metric("truth_ratio", {"splits": ["retain", "real_authors", "world_facts"]})], model, tofu_task, tofu_refs, ctx)
    v, rouge, tr = res["tofu_model_utility"].values, res["rouge_l"].values, res["truth_ratio"].values
    assert v["retain_Q_A_Prob"] == res["answer_prob"].values["retain"]
    assert (v["retain_Q_A_ROUGE"], v["ra_Q_A_ROUGE"], v["wf_Q_A_ROUGE"]) == (rouge["retain"], rouge["real_authors"], rouge["world_facts"])
    assert (v["retain_Truth_Ratio"], v["ra_Truth_Ratio"], v["wf_Truth_Ratio"]) == (tr["retain"], tr["real_authors"], tr["world_facts"])
    adapter = get_adapter(tofu_task)
    for prefix, name in (("ra", "real_authors"), ("wf", "world_facts")):  # P(a) / (P(a) + Σ_j P(pert_j)), by hand
        split = tofu_task.probes[name]
        p = np.exp(-adapter.outputs(model, split)["nll"])
        wrong = sum(np.exp(-adapter.outputs(model, variant(split, "perturbed", j))["nll"]) for j in range(3))
        assert v[f"{prefix}_Q_A_Prob_normalised"] == pytest.approx(float(np.mean(p / (p + wrong))), rel=1e-9)
    comps = [v[c] for c in COMPONENTS]
    assert v["model_utility"] == (0.0 if min(comps) == 0 else pytest.approx(float(hmean(comps))))
    assert res["tofu_model_utility"].per_example["prob.retain"][0].tolist() == tofu_task.probes["retain_eval"].ids.tolist()  # retain_perturbed


def test_tofu_model_utility_is_not_applicable_without_tofus_sets(causal_lm_task):
    reason = build_metric("tofu_model_utility").why_not_applicable(causal_lm_task)
    assert "probe:real_authors, probe:world_facts missing; use the tofu data source" in reason


# ------------------------------------------------------------------------------------------------ MUSE
def test_muse_rouge_metrics_on_scripted_answers(muse_task, muse_refs, monkeypatch):
    """With the greedy answers fixed, VerbMem / KnowMem are the mean ROUGE-L F1 after the stop-word cut, by hand."""
    script = {"knowmem_forget": (["a new bridge\n\nQuestion: what", "the choir\nQuestion: x"], ["a new bridge", "a local choir"]),
              "knowmem_retain": (["on Thursdays Question: more", "apples"], ["on Thursdays", "the apple harvest"]),
              "verbmem_forget": (["over the river", "the national contest with a song ."],
                                 ["over the river after a long debate .", "the national contest with a song ."])}
    monkeypatch.setattr(muse_metrics, "greedy_answers", lambda ctx, model, split, n: script[split.name])
    res = run(["muse_knowmem_forget", "muse_knowmem_retain", "muse_verbmem"], muse_refs.original, muse_task, muse_refs)
    # knowmem_forget: "a new bridge" = gold (F1 1); "the choir" vs "a local choir": LCS 1, P 1/2, R 1/3 -> F1 0.4
    assert res["muse_knowmem_forget"].values["rouge_l_f1"] == pytest.approx((1.0 + 0.4) / 2)
    # knowmem_retain: cut at "Question:" -> "on Thursdays" (1); "apples" and "apple" both stem to "appl": P 1, R 1/3 -> 0.5
    assert res["muse_knowmem_retain"].values["rouge_l_f1"] == pytest.approx((1.0 + 0.5) / 2)
    # verbmem: 3 of the gold's 7 words (P 1, R 3/7 -> F1 0.6), then an exact continuation (1); no stop words
    assert res["muse_verbmem"].values["rouge_l_f1"] == pytest.approx((0.6 + 1.0) / 2)
    assert muse_metrics.cut_at("Paris\n\nQuestion: next", muse_metrics.KNOWMEM_STOP) == "Paris"


def test_muse_privleak_from_hand_computed_min_k(muse_task, muse_refs):
    adapter = get_adapter(muse_task)

    def auc(model):
        def scores(split):
            out = adapter.outputs(model, split)
            rows = [r[~np.isnan(r)] for r in out["token_logp"]]  # documents end without EOS: every label token counts
            return [float(np.sort(r)[: max(1, int(len(r) * 0.4))].mean()) for r in rows]

        m, n = scores(muse_task.probes["privleak_forget"]), scores(muse_task.probes["privleak_holdout"])
        return roc_auc_score([1] * len(m) + [0] * len(n), m + n)

    s, r = auc(muse_refs.original), auc(muse_refs.retrained)
    values = run(["muse_privleak"], muse_refs.original, muse_task, muse_refs)["muse_privleak"].values
    assert (values["auc"], values["retrained_auc"]) == (pytest.approx(s), pytest.approx(r))
    assert values["privleak"] == pytest.approx(((1 - s) - (1 - r)) / (1 - r) * 100)
    assert run(["muse_privleak"], muse_refs.retrained, muse_task, muse_refs)["muse_privleak"].values["privleak"] == 0.0


# ------------------------------------------------------------------------------------------------ WMDP
def test_wmdp_accuracy_from_hand_computed_letter_logliks(wmdp_task, wmdp_refs):
    model, codec = wmdp_refs.original, wmdp_task.probes["wmdp_cyber"].data.codec
    hits = []
    for name in ("wmdp_bio", "wmdp_chem", "wmdp_cyber"):
        for r in wmdp_task.probes[name].data.records:
            ids = torch.tensor([codec.encode_text(r.question)])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            letters = [codec.tokenizer(x, add_special_tokens=False)["input_ids"] for x in "ABCD"]
            assert all(len(t) == 1 for t in letters)  # one token per letter with the word tokenizer
            hits.append(int(np.argmax([float(logp[t[0]]) for t in letters]) == r.answer_index))
    values = run(["wmdp_accuracy"], model, wmdp_task, wmdp_refs)["wmdp_accuracy"].values
    assert values["all"] == pytest.approx(np.mean(hits)) and values["wmdp_cyber"] == pytest.approx(np.mean(hits[2:]))
    assert mc_accuracy(np.array([[0.0, -1.0, -2.0, -3.0], [-5.0, -1.0, -0.5, -9.0]]), np.array([0, 1])).tolist() == [1.0, 0.0]


# ------------------------------------------------------------------------------------------------ TOFU is a drop-in for profiles
LM_METHODS = [n for n in METHODS.names() if "causal_lm" in getattr(METHODS.get(n), "modalities", ())]


@pytest.mark.parametrize("name", LM_METHODS)
def test_every_lm_method_runs_on_tofu(name, tofu_task, tofu_refs):
    special = {"sam": {"method": "npo", "params": {"steps": 2}}, "retrain": {}, "dp2unlearning": {"dp_epochs": 1, "finetune_epochs": 1},
               "eco": {"zo_steps": 1}, "guard": {"encoder": "char3", "max_retain_share": 0.5},
               "layer_constrained": {"params": {"steps": 2}, "max_prompts": 2}, "rocr": {}}  # guards train nothing (no steps); every fact of
    # this toy TOFU also sits in some retain answer, so GUARD forbids the words found in at most half of them
    params = special.get(name, {"steps": 2})
    method = build_method(name, params)
    out = method.unlearn(copy.deepcopy(tofu_refs.original), tofu_task, tofu_refs, rng=np.random.default_rng(0))
    assert all(torch.isfinite(p).all() for p in out.model.parameters())


def test_the_standard_battery_runs_on_tofu(tofu_task, tofu_refs):
    assessment = assess(tofu_refs.original, tofu_task, tofu_refs, list(default_battery("causal_lm")) + ["tofu_model_utility"])
    assert not assessment.missing, assessment.missing
    assert set(assessment.results) == set(default_battery("causal_lm")) | {"tofu_model_utility"}


# ------------------------------------------------------------------------------------------------ MUSE sustainability, the protocol
def sustainability(params, refs, method, metrics, steps=(1, 2, 3, 4)):
    """MUSE's sustainability protocol (README "TOFU, MUSE and WMDP"): unlearn the successive requests sust/forget_k,
    each starting from the model the previous one left, and evaluate after each."""
    import unlearnkit as uk

    model, rows = refs.original, []
    for k in steps:
        source = uk.load_dataset("muse", forget_config="sust", forget_split=f"forget_{k}", **params)
        task = uk.make_task("muse", source.train, source.test, uk.ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                            modality=source.modality, probes=source.probes)
        model = uk.build_method(*method).unlearn(copy.deepcopy(model), task, refs, rng=np.random.default_rng(k)).model
        rows.append({"request": k, **uk.assess(model, task, refs, metrics).summary()})
    return rows


def test_muse_sustainability_protocol_runs_successive_requests(benchmark_files, muse_source, muse_refs):
    from tests.conftest import BENCH_PARAMS

    params = {**BENCH_PARAMS["muse"](benchmark_files), "cache_dir": benchmark_files["cache"]}
    sust = load_dataset("muse", forget_config="sust", forget_split="forget_2", **params)  # the same tokens as the references'
    assert sust.train.data.codec.tokenizer.get_vocab() == muse_source.train.data.codec.tokenizer.get_vocab()
    rows = sustainability(params, muse_refs, ("npo", {"steps": 2}), ["muse_verbmem", "muse_knowmem_retain", "muse_privleak"], steps=(1, 2))
    assert [r["request"] for r in rows] == [1, 2]
    assert all({"muse_verbmem.rouge_l_f1", "muse_knowmem_retain.rouge_l_f1", "muse_privleak.privleak"} <= set(r) for r in rows)
