"""Language-model metrics: formulas checked by hand on a bigram language model whose log-probabilities are known
(answer probability, truth ratio, ROUGE-L of greedy answers, Min-K%, Min-K%++, zlib, gradient norm, verbatim
continuations), the edge cases peers got wrong (EOS in memorisation scores, extraction strength never reaching 0,
privleak against a 0.5 fallback), and the expected behaviour on the tiny-Llama fixture (target vs retain model)."""

import dataclasses
import math
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.stats import hmean, ks_2samp
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.data.profiles import n_perturbed, variant
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import EvalContext, assess, build_metric, default_battery
from unlearnkit.evaluation._lm import extraction_strength, min_k, min_k_pp_z, rouge_l, truth_ratio_from_nll
from unlearnkit.evaluation.relearn import Relearn
from unlearnkit.evaluation.text_mia import privleak_value
from unlearnkit.evaluation.truth_ratio import ks_pvalue_at
from unlearnkit.references import References
from unlearnkit.types import Split


# ------------------------------------------------------------------------------------------------ a model with known log-probs
class BigramLM(nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: log p(x_t | x_<t) = log_softmax(table[x_{t-1}])[x_t], by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None, **kw):
        return SimpleNamespace(logits=self.table[input_ids], past_key_values=None)


class ScriptedLM(nn.Module):
    """Teacher-forced argmax scripted from the input: ``fn(input_ids) -> predicted next ids`` (one-hot logits)."""

    def __init__(self, vocab: int, fn) -> None:
        super().__init__()
        self.vocab, self.fn = vocab, fn
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, **kw):
        logits = torch.nn.functional.one_hot(self.fn(input_ids), self.vocab).float() * 10.0 + self.w
        return SimpleNamespace(logits=logits, past_key_values=None)


def rows(split):
    """(ids, number of prompt tokens) of every example, straight from the tokenised data."""
    d = split.data
    out = []
    for i in range(len(d)):
        n = int(d.attention_mask[i].sum())
        out.append((d.x[i, :n].tolist(), int((d.labels[i, :n] == -100).sum())))
    return out


@pytest.fixture(scope="module")
def bigram(causal_lm_task):
    """A count-based bigram LM of the training text (so greedy answers overlap the gold ones), ties broken by noise."""
    codec = causal_lm_task.forget.data.codec
    v = codec.vocab_size
    counts = np.full((v, v), 0.1)
    for split in (causal_lm_task.forget, causal_lm_task.retain):
        for ids, _ in rows(split):
            for a, b in zip(ids[:-1], ids[1:]):
                counts[a, b] += 1
    table = torch.tensor(np.log(counts) + 1e-2 * np.random.default_rng(0).standard_normal((v, v)), dtype=torch.float32)
    model = BigramLM(table)
    logp = torch.log_softmax(table.double(), -1).numpy()
    return model, logp


def token_logps(logp, ids, n_prompt):
    """log p of every answer token (EOS last), by hand from the bigram table."""
    return np.array([logp[ids[t - 1], ids[t]] for t in range(n_prompt, len(ids))])


def ctx_for(task):
    return EvalContext(task, get_adapter(task))


def compute(name, model, task, refs=None, ctx=None, **params):
    return build_metric(name, params).compute(model, task, refs or References(), ctx or ctx_for(task))


# ------------------------------------------------------------------------------------------------ pure formulas
def test_truth_ratio_and_aggregates_by_hand():
    tr = truth_ratio_from_nll(np.array([1.0, 2.0]), np.array([[2.0, 1.0], [4.0, 3.0]]))  # 2 perturbed answers, 2 items
    assert tr == pytest.approx([math.exp(1.0 - 3.0), math.exp(2.0 - 2.0)])  # geometric mean of the perturbed probabilities
    assert float(np.mean(np.minimum(tr, 1 / tr))) == pytest.approx((math.exp(-2) + 1) / 2)


def test_extraction_strength_reaches_both_ends():
    assert extraction_strength(np.ones(5)) == 1.0
    assert extraction_strength(np.array([1, 1, 1, 1, 0])) == 0.0  # no suffix matches: exactly 0 (peers: 1/|y|)
    assert extraction_strength(np.array([0, 1, 1, 1])) == 0.75
    assert extraction_strength(np.array([1, 0, 1, 1])) == 0.5
    assert math.isnan(extraction_strength(np.array([])))


def test_min_k_and_min_k_pp_by_hand():
    v = np.array([-1.0, -5.0, -2.0, -0.5, -3.0])
    assert min_k(v, 0.4) == pytest.approx(-4.0)  # the lowest int(0.4·5) = 2 values: -5, -3
    assert min_k(np.array([-1.0, -2.0]), 0.4) == -2.0  # at least one token
    assert min_k(v, 1.0) == pytest.approx(v.mean())
    p = np.array([0.5, 0.25, 0.25])
    mu = float((p * np.log(p)).sum())
    sd = math.sqrt(float((p * np.log(p) ** 2).sum()) - mu**2)
    assert min_k_pp_z(np.log([0.5]), [mu], [sd]) == pytest.approx([(math.log(0.5) - mu) / sd])
    assert min_k_pp_z([0.0], [0.0], [0.0]) == [0.0]  # a point mass: 0, not NaN


def test_rouge_l_recall_and_f1_match_rouge_score():
    from rouge_score import rouge_scorer

    gold, pred = "Paris is the capital of France", "the capital is Paris"
    assert rouge_l([gold], [pred], "recall")[0] == pytest.approx(2 / 6)  # LCS "the capital" over 6 gold words
    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(gold, pred)["rougeL"]
    assert rouge_l([gold], [pred], "recall")[0] == ref.recall and rouge_l([gold], [pred], "fmeasure")[0] == ref.fmeasure
    assert rouge_l(["she runs home"], ["she running home"], "recall", use_stemmer=True)[0] == 1.0
    assert rouge_l(["she runs home"], ["she running home"], "recall", use_stemmer=False)[0] == pytest.approx(2 / 3)


def test_privleak_formula_and_guard():
    assert privleak_value(0.5, 0.5) == 0.0
    assert privleak_value(1.0, 0.5) == pytest.approx(-100.0)  # forget perfectly recognised: MUSE's target-like -100
    assert privleak_value(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning: positive
    assert math.isnan(privleak_value(0.7, 0.995))  # AUC'_retain = 0.005: no ratio, and no silent 0.5 fallback
    assert math.isnan(privleak_value(0.7, 1.0, min_reference=0.0))


def test_ks_pvalue_at_other_sizes_is_scipys_asymptotic_pvalue():
    a = np.arange(40.0)
    b = a + 12  # D = 12/40 = 0.3 with 40 items each
    res = ks_2samp(a, b, method="asymp")
    assert res.statistic == pytest.approx(0.3)
    assert ks_pvalue_at(0.3, 40) == pytest.approx(res.pvalue)
    assert ks_pvalue_at(0.3, 10) > ks_pvalue_at(0.3, 40) > ks_pvalue_at(0.3, 400)


# ------------------------------------------------------------------------------------------------ the metrics on known log-probs
def test_answer_prob_and_truth_ratio_by_hand(causal_lm_task, bigram):
    model, logp = bigram
    task = causal_lm_task
    ctx = ctx_for(task)
    r = compute("answer_prob", model, task, ctx=ctx)
    want = np.array([math.exp(token_logps(logp, ids, n).mean()) for ids, n in rows(task.forget)])  # EOS included
    ids, got = r.per_example["p.forget"]
    assert np.array_equal(ids, task.forget.ids) and got == pytest.approx(want, rel=1e-4)
    assert r.values["forget"] == pytest.approx(want.mean(), rel=1e-4)
    assert set(r.values) == {"forget", "retain", "test", "neighbours"}

    t = compute("truth_ratio", model, task, ctx=ctx)
    nll = lambda s: np.array([-token_logps(logp, i, n).mean() for i, n in rows(s)])  # noqa: E731
    para = nll(variant(task.forget, "paraphrased_answer"))
    pert = np.stack([nll(variant(task.forget, "perturbed", j)) for j in range(n_perturbed(task.forget))])
    tr = np.exp(para - pert.mean(0))
    assert t.per_example["tr.forget"][1] == pytest.approx(tr, rel=1e-4)
    assert t.values["forget"] == pytest.approx(np.mean(np.minimum(tr, 1 / tr)), rel=1e-4)
    tr_r = t.per_example["tr.retain"][1]
    assert t.values["retain"] == pytest.approx(np.mean(np.maximum(0, 1 - tr_r)))


def hand_greedy(logp, prompt, max_new, eos):
    out, last = [], prompt[-1]
    for _ in range(max_new):
        nxt = int(np.argmax(logp[last]))
        if nxt == eos:
            break
        out.append(nxt)
        last = nxt
    return out


def test_rouge_l_and_model_utility_by_hand(causal_lm_task, bigram):
    model, logp = bigram
    task = causal_lm_task
    codec = task.forget.data.codec
    eos = codec.tokenizer.eos_token_id
    ctx = ctx_for(task)
    r = compute("rouge_l", model, task, ctx=ctx, max_new_tokens=12)
    gen = [codec.decode(hand_greedy(logp, ids[:n], 12, eos)) for ids, n in rows(task.forget)]
    gold = [codec.decode(ids[n:-1]) for ids, n in rows(task.forget)]
    assert r.per_example["recall.forget"][1] == pytest.approx(rouge_l(gold, gen, "recall"))
    assert 0 < r.values["retain"] < 1

    mu = compute("model_utility", model, task, ctx=ctx, max_new_tokens=12)
    ap = compute("answer_prob", model, task, ctx=ctx)
    tr = compute("truth_ratio", model, task, ctx=ctx)
    comps = mu.values
    assert comps["retain_prob"] == ap.values["retain"] and comps["retain_rouge_l"] == r.values["retain"]
    assert comps["retain_truth_ratio"] == tr.values["retain"] and comps["neighbours_truth_ratio"] == tr.values["neighbours"]
    assert comps["neighbours_rouge_l"] == r.values["neighbours"]
    neighbours = task.probes["neighbours"]
    p = lambda s: np.array([math.exp(token_logps(logp, i, n).mean()) for i, n in rows(s)])  # noqa: E731
    wrong = sum(p(variant(neighbours, "perturbed", j)) for j in range(n_perturbed(neighbours)))
    assert comps["neighbours_prob_normalised"] == pytest.approx(np.mean(p(neighbours) / (p(neighbours) + wrong)), rel=1e-4)
    six = [v for k, v in comps.items() if k != "model_utility"]
    assert len(six) == 6 and comps["model_utility"] == pytest.approx(hmean(six))


def test_text_mia_scores_by_hand(causal_lm_task, bigram):
    model, logp = bigram
    task = causal_lm_task
    ctx = ctx_for(task)
    with_eos = [token_logps(logp, ids, n) for ids, n in rows(task.forget)]  # LOSS and zlib: OpenUnlearning's avg_loss, EOS in
    hand = [h[:-1] for h in with_eos]  # Min-K%, Min-K%++: the final EOS excluded
    tok = task.forget.data.codec.tokenizer
    texts = [tok.decode(ids[n:-1], skip_special_tokens=True) for ids, n in rows(task.forget)]  # the decoded answer tokens
    loss = compute("loss_mia", model, task, ctx=ctx)
    assert loss.per_example["score.forget"][1] == pytest.approx([h.mean() for h in with_eos], rel=1e-4)
    z = compute("zlib", model, task, ctx=ctx)
    zbytes = [len(zlib.compress(t.encode("utf-8"))) for t in texts]
    want = [h.mean() / zb for h, zb in zip(with_eos, zbytes)]  # −NLL̄ / zlib bytes (log-perplexity over zlib entropy)
    assert z.per_example["score.forget"][1] == pytest.approx(want, rel=1e-4)
    total = compute("zlib", model, task, ctx=ctx, numerator="total")
    assert total.per_example["score.forget"][1] == pytest.approx([h.sum() / zb for h, zb in zip(with_eos, zbytes)], rel=1e-4)
    mk = compute("min_k", model, task, ctx=ctx)
    want = [np.sort(h)[: max(1, int(0.4 * len(h)))].mean() for h in hand]
    assert mk.per_example["score.forget"][1] == pytest.approx(want, rel=1e-4)
    mkpp = compute("min_k_plus_plus", model, task, ctx=ctx)
    want = []
    for ids, n in rows(task.forget):
        zs = []
        for t in range(n, len(ids) - 1):
            row = logp[ids[t - 1]]
            mu = (np.exp(row) * row).sum()
            sd = math.sqrt((np.exp(row) * row**2).sum() - mu**2)
            zs.append((row[ids[t]] - mu) / sd)
        want.append(np.sort(zs)[: max(1, int(0.4 * len(zs)))].mean())
    assert mkpp.per_example["score.forget"][1] == pytest.approx(want, rel=1e-3)
    for r in (loss, z, mk, mkpp):
        assert set(r.per_example["score.test"][0]) == set(task.test.ids)
        assert math.isnan(r.values["retrained_auc"])  # no retain model given: NaN, not a made-up 0.5


def test_grad_norm_by_hand_and_capped(causal_lm_task, bigram):
    model, logp = bigram
    task = causal_lm_task
    r = compute("grad_norm_mia", model, task, max_examples=5)
    ids, scores = r.per_example["score.forget"]
    assert len(ids) == 5 and set(ids) <= set(task.forget.ids)
    assert np.array_equal(ids, compute("grad_norm_mia", model, task, max_examples=5).per_example["score.forget"][0])
    p = np.exp(logp)
    by_id = dict(zip(task.forget.ids.tolist(), rows(task.forget)))
    for i, score in zip(ids, scores):
        seq, n = by_id[int(i)]
        steps = [(seq[t - 1], seq[t]) for t in range(n, len(seq) - 1)]  # EOS excluded
        grad = np.zeros_like(p)
        for a, b in steps:  # d(−mean log softmax(table[a])[b]) / d table[a] = (softmax − onehot) / |y|
            grad[a] += p[a] / len(steps)
            grad[a, b] -= 1 / len(steps)
        assert -score == pytest.approx(np.linalg.norm(grad), rel=1e-3)


class TwoTableBigramLM(BigramLM):
    """The bigram LM with its table split into two summed tensors: both receive the same gradient g."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table)
        self.zero = nn.Parameter(torch.zeros_like(table))

    def forward(self, input_ids, attention_mask=None, **kw):
        return SimpleNamespace(logits=self.table[input_ids] + self.zero[input_ids], past_key_values=None)


def test_grad_norm_global_vs_per_tensor_mean(causal_lm_task, bigram):
    """Two parameter tensors with the same gradient g: the global norm is √2‖g‖, the per-tensor mean (OpenUnlearning's
    GradNorm) is ‖g‖, the one-tensor model's score."""
    model, _ = bigram
    two = TwoTableBigramLM(model.table.detach())
    one = compute("grad_norm_mia", model, causal_lm_task, max_examples=4).per_example["score.forget"][1]
    both = compute("grad_norm_mia", two, causal_lm_task, max_examples=4).per_example["score.forget"][1]
    mean = compute("grad_norm_mia", two, causal_lm_task, max_examples=4, norm="tensor_mean").per_example["score.forget"][1]
    assert both == pytest.approx(math.sqrt(2) * one, rel=1e-5) and mean == pytest.approx(one, rel=1e-5)
    with pytest.raises(ConfigError, match=r"norm: must be one of \['global', 'tensor_mean'\]"):
        build_metric("grad_norm_mia", {"norm": "max"})


def test_memorisation_excludes_eos(causal_lm_task):
    task = causal_lm_task
    codec = task.forget.data.codec
    v, eos = codec.vocab_size, codec.tokenizer.eos_token_id
    always_eos = ScriptedLM(v, lambda x: torch.full_like(x, eos))  # right only where the label is EOS
    for name in ("exact_memorization", "extraction_strength"):
        r = compute(name, always_eos, task)
        assert r.values["forget"] == 0.0 and (r.per_example["score.forget"][1] == 0).all(), name
    next_token = lambda x: torch.cat([x[:, 1:], x[:, -1:]], 1)  # noqa: E731  (teacher-forced oracle: always right)
    oracle = ScriptedLM(v, next_token)
    assert compute("exact_memorization", oracle, task).values["forget"] == 1.0
    assert compute("extraction_strength", oracle, task).values["forget"] == 1.0

    def wrong_at_start(x):  # wrong on the first answer token only: EM = 1 − 1/|y|, ES = 1 − 1/|y|
        pred = next_token(x)
        lab = task.forget.data.labels
        for i in range(len(x)):
            first = int(torch.nonzero(lab[i, : x.shape[1]] != -100)[0]) - 1
            pred[i, first] = eos if pred[i, first] != eos else 0
        return pred

    lengths = np.array([len(ids) - n - 1 for ids, n in rows(task.forget)])  # answer tokens without EOS
    em = compute("exact_memorization", ScriptedLM(v, wrong_at_start), task, splits=("forget",))
    es = compute("extraction_strength", ScriptedLM(v, wrong_at_start), task, splits=("forget",))
    assert em.per_example["score.forget"][1] == pytest.approx(1 - 1 / lengths)
    assert es.per_example["score.forget"][1] == pytest.approx(1 - 1 / lengths)


def test_verbatim_memorisation_by_hand_and_on_a_corpus(causal_lm_task, bigram, tmp_path):
    model, logp = bigram
    task = causal_lm_task
    codec = task.forget.data.codec
    eos = codec.tokenizer.eos_token_id
    text = "\n".join(r.answer for r in task.retain.data.records[:30])
    path = tmp_path / "book.txt"
    path.write_text(text)
    r = compute("verbatim_memorization", model, task, corpus_path=str(path), passage_tokens=10, max_passages=4)
    want = []
    for ids, n in rows(task.forget):
        answer = ids[n:-1]
        cut = len(answer) // 2
        cont = answer[cut:]
        gen = hand_greedy(logp, ids[:n] + answer[:cut], len(cont), eos)[: len(cont)]
        want.append(rouge_l([codec.decode(cont)], [codec.decode(gen)], "fmeasure", use_stemmer=False)[0])
    assert r.per_example["rouge_l_f1.forget"][1] == pytest.approx(want)
    assert len(r.curves["corpus"]["rouge_l_f1"]) == 4 and 0.0 <= r.values["corpus"] <= 1.0
    passage = codec.tokenizer(text, add_special_tokens=False)["input_ids"][:10]
    gen = hand_greedy(logp, [codec.tokenizer.bos_token_id] + passage[:5], 5, eos)
    first = rouge_l([codec.decode(passage[5:])], [codec.decode(gen)], "fmeasure", use_stemmer=False)[0]
    assert r.curves["corpus"]["rouge_l_f1"][0] == pytest.approx(first)
    with pytest.raises(ConfigError, match="not a file"):
        compute("verbatim_memorization", model, task, corpus_path=str(tmp_path / "missing.txt"))
    shared = ctx_for(task)  # generations are cached per context: a different passage count must not reuse them
    for n in (2, 4):
        again = compute("verbatim_memorization", model, task, ctx=shared, corpus_path=str(path), passage_tokens=10, max_passages=n)
        assert again.curves["corpus"]["rouge_l_f1"] == pytest.approx(r.curves["corpus"]["rouge_l_f1"][:n])


def test_grad_norm_of_an_empty_answer_is_nan_not_a_perfect_member(causal_lm_task, bigram):
    from unlearnkit.evaluation.text_mia import grad_norms
    from unlearnkit.lm.text import IGNORE, TokenData

    model, _ = bigram
    d = causal_lm_task.forget.data
    labels = d.labels[:3].clone()
    answer = torch.nonzero(labels[0] != IGNORE).flatten()
    labels[0, answer[:-1]] = IGNORE  # the first answer shrinks to its final EOS, which the score leaves out
    data = TokenData(d.x[:3], d.attention_mask[:3], labels, d.y[:3], d.records[:3], d.codec)
    norms = grad_norms(ctx_for(causal_lm_task), model, Split.create("three", data, causal_lm_task.forget.ids[:3]))
    assert np.isnan(norms[0]) and np.isfinite(norms[1:]).all() and (norms[1:] > 0).all()


# ------------------------------------------------------------------------------------------------ the fixture: target vs retain model
@pytest.fixture(scope="module")
def lm_ctx(causal_lm_task):
    return ctx_for(causal_lm_task)


def test_answer_prob_separates_target_and_retain_model(causal_lm_task, causal_lm_refs, lm_ctx):
    target = compute("answer_prob", causal_lm_refs.original, causal_lm_task, causal_lm_refs, lm_ctx).values
    oracle = compute("answer_prob", causal_lm_refs.retrained, causal_lm_task, causal_lm_refs, lm_ctx).values
    assert target["forget"] > 0.7 and oracle["forget"] < 0.2 and target["retain"] > 0.7 and oracle["retain"] > 0.7
    assert abs(target["test"] - oracle["test"]) < 0.1  # the holdout profiles: never trained by either


def test_forget_quality_against_itself_and_for_the_target(causal_lm_task, causal_lm_refs, lm_ctx):
    refs = causal_lm_refs
    same = compute("forget_quality", refs.retrained, causal_lm_task, refs, lm_ctx).values
    assert same["statistic"] == 0.0 and same["p_value"] == pytest.approx(1.0) and same["signed_statistic"] == 0.0
    target = compute("forget_quality", refs.original, causal_lm_task, refs, lm_ctx).values
    assert target["p_value"] < 0.05 and target["statistic"] > 0.4 and target["signed_statistic"] > 0  # remembers
    assert target["n"] == len(causal_lm_task.forget)
    assert target["p_value_at_n10"] > target["p_value_at_n40"] > target["p_value_at_n400"]
    assert 0 <= target["retrained_statistic"] < target["statistic"]


def test_text_mias_and_privleak_on_the_fixture(causal_lm_task, causal_lm_refs, lm_ctx):
    refs = causal_lm_refs
    for name in ("loss_mia", "zlib", "min_k", "min_k_plus_plus", "reference_mia", "grad_norm_mia"):
        target = compute(name, refs.original, causal_lm_task, refs, lm_ctx)
        oracle = compute(name, refs.retrained_seeds[1], causal_lm_task, refs, lm_ctx)
        assert target.values["auc"] > 0.8, name
        assert 0.2 < oracle.values["auc"] < 0.85, name
        assert 0.2 < target.values["retrained_auc"] < 0.85, name
        assert target.evidence[0].key == f"{name}.auc" and target.evidence[0].role == "forget"
    same = compute("privleak", refs.retrained, causal_lm_task, refs, lm_ctx).values
    assert same["privleak"] == 0.0 and same["auc_gap"] == 0.0  # the retain model scored against itself
    target = compute("privleak", refs.original, causal_lm_task, refs, lm_ctx).values
    mk = compute("min_k", refs.original, causal_lm_task, refs, lm_ctx).values
    assert target["auc"] == mk["auc"] and target["retrained_auc"] == mk["retrained_auc"]
    assert target["privleak"] == pytest.approx(((1 - mk["auc"]) - (1 - mk["retrained_auc"])) / (1 - mk["retrained_auc"]) * 100)
    assert target["privleak"] < -50


def test_paraphrase_probe_and_verbatim_on_the_fixture(causal_lm_task, causal_lm_refs, lm_ctx):
    refs = causal_lm_refs
    target = compute("paraphrase_probe", refs.original, causal_lm_task, refs, lm_ctx)
    v = target.values
    assert v["forget_prob"] > v["retrained_forget_prob"] + 0.2 and v["forget_excess_prob"] > 0.2
    assert v["forget_plain_prob"] > v["forget_prob"]  # the plain question is the trained form
    assert target.evidence[0].role == "robustness"
    oracle = compute("paraphrase_probe", refs.retrained, causal_lm_task, refs, lm_ctx).values
    assert abs(oracle["forget_excess_prob"]) < 0.05
    assert compute("verbatim_memorization", refs.original, causal_lm_task, refs, lm_ctx).values["forget"] > 0.9
    assert compute("verbatim_memorization", refs.retrained, causal_lm_task, refs, lm_ctx).values["forget"] < 0.7


def test_relearn_on_a_language_model(causal_lm_task, causal_lm_refs, lm_ctx):
    metric = Relearn()
    assert metric.setting(causal_lm_task, "retain_mix") == 0.0 and metric.setting(causal_lm_task, "min_examples") == 4
    classifier = SimpleNamespace(modality="classifier")
    assert (metric.setting(classifier, "lr"), metric.setting(classifier, "retain_mix"), metric.setting(classifier, "min_examples")) == \
        (3e-4, 1.0, 16)  # the classifier defaults are unchanged
    assert Relearn(lr=1e-3).setting(causal_lm_task, "lr") == 1e-3
    attack, heldout, mix = metric.slices(causal_lm_task, 0)
    assert len(attack) == 4 and len(heldout) == len(causal_lm_task.forget) - 4 and mix is None
    r = metric.compute(causal_lm_refs.original, causal_lm_task, causal_lm_refs, lm_ctx)
    assert len(r.curves["relearn"]["accuracy"]) == metric.n_points()
    assert r.values["start"] > 0.7 and r.values["retrained_start"] < 0.2  # answer probability of the held-out answers
    assert r.info["retain_mix"] == 0.0


def test_default_battery_on_the_target(causal_lm_task, causal_lm_refs, lm_ctx):
    assert default_battery("causal_lm")[-1] == "noise_floor"
    a = assess(causal_lm_refs.original, causal_lm_task, causal_lm_refs, ctx=lm_ctx)
    assert not a.missing
    assert a.verdict.label == "not forgotten"
    keys = {row["key"] for row in a.verdict.rows}
    assert {"answer_prob.forget", "min_k.auc", "relearn.auc", "paraphrase_probe.forget_prob", "model_utility.retain_utility"} <= keys
    # The tiny Llama is trained from scratch: it does not know the real-world neighbour facts, so evidence on them is
    # shown but cannot decide (and model utility decides on the retain components).
    rows = {row["key"]: row for row in a.verdict.rows}
    assert rows["answer_prob.neighbours"]["status"] == "reported only"
    assert "does not know the neighbour facts" in rows["answer_prob.neighbours"]["reported_only"]
    mu = a.results["model_utility"]
    assert mu.values["retain_utility"] == pytest.approx(
        scipy.stats.hmean([v for k, v in mu.values.items() if k.startswith("retain_") and k != "retain_utility"]))


def test_ranks_true_first_is_a_one_sided_binomial_test():
    from unlearnkit.evaluation._lm import ranks_true_first

    wrong = np.array([[0.1, 0.5, 0.2, 0.3], [0.2, 0.1, 0.6, 0.1], [0.3, 0.2, 0.1, 0.05]])  # 3 options × 4 items
    top, n, chance, p = ranks_true_first(np.array([0.4, 0.4, 0.4, 0.4]), wrong)
    assert (top, n, chance) == (2, 4, 0.25)  # items 0 and 3: 0.4 beats 0.3 and 0.3; items 1, 2: 0.5 and 0.6 beat it
    assert p == pytest.approx(scipy.stats.binom.sf(1, 4, 0.25))  # P(K >= 2)
    assert ranks_true_first(np.full(16, 0.9), np.full((3, 16), 0.1))[3] < 1e-9
    with pytest.raises(ConfigError, match="items"):
        ranks_true_first(np.ones(3), np.ones((3, 4)))


def test_missing_and_bad_parameters(causal_lm_task, causal_lm_refs):
    none = dataclasses.replace(causal_lm_refs, retrained_seeds=())
    r = compute("min_k", causal_lm_refs.original, causal_lm_task, none)
    assert math.isnan(r.values["retrained_auc"]) and "note" in r.info
    with pytest.raises(ConfigError, match="splits"):
        build_metric("answer_prob", {"splits": ["forgets"]})
    with pytest.raises(ConfigError, match="k must be"):
        build_metric("min_k", {"k": 0})
    with pytest.raises(ConfigError, match="prefix_fraction"):
        build_metric("verbatim_memorization", {"prefix_fraction": 1.0})


def test_book_passages_skip_the_qa_metrics_and_score_verbatim_continuations(tmp_path):
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.evaluation import evaluate
    from unlearnkit.lm import generate_profiles
    from unlearnkit.models import build_model

    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(" ".join(it.answer for it in p.items) for p in generate_profiles(30, seed=5)))
    s = load_dataset("book", corpus=str(path), chapters=4, holdout_chapters=1, words=20)
    task = make_task("book", s.train, s.test, ForgetSpec("profiles", fraction=0.25), np.random.default_rng(0), n_classes=None,
                     modality=s.modality)
    torch.manual_seed(0)
    model = build_model("tiny_llama", s.input_shape, s.n_outputs)
    metrics = [build_metric(n) for n in ("truth_ratio", "forget_quality", "model_utility", "paraphrase_probe", "answer_prob", "min_k")]
    metrics.append(build_metric("verbatim_memorization", {"prefix_fraction": 0.0}))
    results, missing = evaluate(model, task, References(), metrics, ctx_for(task), strict=False)
    for name in ("truth_ratio", "forget_quality", "model_utility", "paraphrase_probe"):
        assert "needs question-answer records with paraphrased_question" in missing[name], name
    assert set(results) == {"answer_prob", "min_k", "verbatim_memorization"}
    f1 = results["verbatim_memorization"].per_example["rouge_l_f1.forget"][1]
    assert len(f1) == len(task.forget) and np.isfinite(f1).all()  # the whole continuation after the passage's prefix


def test_book_holdout_chapters_are_drawn_at_random_not_the_last_ones(tmp_path):
    from unlearnkit.data.book import passages
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.lm import generate_profiles

    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(" ".join(it.answer for it in p.items) for p in generate_profiles(30, seed=5)))
    order = list(dict.fromkeys(g for g, _ in passages(str(path), 20)))  # chapters in book order
    later = []
    for seed in range(6):
        chosen = load_dataset("book", corpus=str(path), chapters=4, holdout_chapters=2, words=20, seed=seed).info["chapters"]
        trained, held = [order.index(c) for c in chosen[:4]], [order.index(c) for c in chosen[4:]]
        assert trained == sorted(trained) and held == sorted(held) and not set(trained) & set(held)
        later.append(min(held) > max(trained))
    assert not all(later)  # a holdout taken from the end of the book every time would be a different text, not a random one
