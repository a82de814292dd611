"""Conventions of the field's reference code, each checked on a hand-computed case: the retain NLL averaged over the
batch's answer tokens (Hugging Face's loss, as OpenUnlearning and the NPO code) or per example; the LOSS and zlib
text attacks over the answer tokens with the final EOS (OpenUnlearning's ``evaluate_probability``), zlib over the
decoded answer text; answers with nothing to score left out of a metric with a count and a warning, never a crash;
and the truth ratio's ``prob_mean`` aggregate."""

import dataclasses
import math
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.adapters.causal_lm import CausalLMAdapter
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.profiles import n_perturbed, variant
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import EvalContext, assess, build_metric, default_battery
from unlearnkit.lm.text import IGNORE, TokenData
from unlearnkit.methods import build_method, describe_method, method_params
from unlearnkit.models import build_model
from unlearnkit.objectives import NLL, Ascent
from unlearnkit.references import References
from unlearnkit.train import StepContext
from unlearnkit.types import Split

LN2 = math.log(2.0)


class ConstantLM(nn.Module):
    """The same next-token distribution at every position: p = (1/2, 1/4, 1/4) over a 3-token vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.row = nn.Parameter(torch.log(torch.tensor([0.5, 0.25, 0.25])))

    def forward(self, input_ids, attention_mask=None, **kw):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, 3))


def two_answers() -> dict:
    """Two examples after a one-token prompt: answer A = tokens (0, 1, 1), answer B = token (0)."""
    x = torch.tensor([[2, 0, 1, 1], [2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = torch.tensor([[IGNORE, 0, 1, 1], [IGNORE, 0, IGNORE, IGNORE]])
    return {"x": x, "attention_mask": mask, "labels": labels, "ids": torch.tensor([0, 1])}


def step_ctx(adapter) -> StepContext:
    return StepContext(0, 1, torch.Generator(), adapter)


# ------------------------------------------------------------------------------------------------ retain NLL reduction
def test_token_and_example_reductions_by_hand():
    # NLL(A) = ln 2 + ln 4 + ln 4 = 5 ln 2 over 3 tokens; NLL(B) = ln 2 over 1 token
    adapter, model, batch = CausalLMAdapter(), ConstantLM(), two_answers()
    token = float(adapter.batch_loss(model, batch, "token").detach())
    example = float(adapter.batch_loss(model, batch, "example").detach())
    assert token == pytest.approx((5 * LN2 + LN2) / 4)  # 1.5 ln 2: every answer token weighs the same
    assert example == pytest.approx((5 * LN2 / 3 + LN2) / 2)  # 4/3 ln 2: every answer weighs the same
    ctx = step_ctx(adapter)
    assert float(NLL("retain", "token")(model, {"retain": batch}, ctx).value.detach()) == pytest.approx(token)
    assert float(NLL("retain")(model, {"retain": batch}, ctx).value.detach()) == pytest.approx(example)  # the objective's default
    with pytest.raises(ConfigError, match=r"reduction: must be one of \['token', 'example'\], got 'sum'"):
        NLL("retain", "sum")


def test_token_reduction_is_transformers_own_loss_on_the_tiny_llama(causal_lm_task, profiles_source):
    torch.manual_seed(0)
    model = build_model("tiny_llama", profiles_source.input_shape, profiles_source.n_outputs)
    adapter = get_adapter(causal_lm_task)
    batch = next(iter(causal_lm_task.retain.batches(8)))
    lengths = (batch["labels"] != IGNORE).sum(1)
    assert len(set(lengths.tolist())) > 1  # answers of different lengths, so the reductions differ
    with torch.no_grad():
        hf = model(input_ids=batch["x"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss  # prompt = -100
        ours = adapter.batch_loss(model, batch, "token")
        per_example = adapter.batch_loss(model, batch, "example")
    assert float(ours) == pytest.approx(float(hf), rel=1e-5)
    assert abs(float(per_example) - float(hf)) > 1e-4


def test_classifier_reductions_are_the_same_number(random_task, original):
    adapter = get_adapter(random_task)
    batch = next(iter(random_task.retain.batches(16)))
    token, example = (adapter.batch_loss(original, batch, r) for r in ("token", "example"))
    assert torch.equal(token, example)


@pytest.mark.parametrize("name", ["grad_diff", "npo", "simnpo", "idk_po", "ihl", "finetune"])
def test_retain_reduction_is_a_method_parameter(name):
    default = build_method(name)
    assert default.retain_reduction == "token" and method_params(default)["retain_reduction"] == "token"
    old = build_method(name, {"retain_reduction": "example"})
    nll = [t for _, t in old.objective(None, References()).terms if isinstance(t, NLL)] if name != "finetune" else [old.objective(None, References())]
    assert [t.reduction for t in nll] == ["example"]
    assert describe_method(old) != describe_method(default)  # in the run key
    with pytest.raises(ConfigError, match="retain_reduction: must be one of"):
        build_method(name, {"retain_reduction": "mean"})
    sam = build_method("sam", {"method": name, "params": {"retain_reduction": "example"}})
    assert sam.inner().retain_reduction == "example"



def test_ascent_reduction_by_hand_and_the_ga_methods_default_to_the_token_mean():
    """OpenUnlearning's GradAscent / GradDiff forget term is −outputs.loss, the token mean: −1.5 ln 2 on the hand batch."""
    adapter, model, batch = CausalLMAdapter(), ConstantLM(), two_answers()
    ctx = step_ctx(adapter)
    assert float(Ascent("forget", "token")(model, {"forget": batch}, ctx).value.detach()) == pytest.approx(-1.5 * LN2)
    assert float(Ascent("forget")(model, {"forget": batch}, ctx).value.detach()) == pytest.approx(-4 / 3 * LN2)
    for name in ("grad_ascent", "grad_diff"):
        method = build_method(name)
        ascent = method.objective(None, References())
        ascent = ascent if isinstance(ascent, Ascent) else next(t for _, t in ascent.terms if isinstance(t, Ascent))
        assert method.forget_reduction == ascent.reduction == "token"
        assert build_method(name, {"forget_reduction": "example"}).forget_reduction == "example"
        with pytest.raises(ConfigError, match="forget_reduction: must be one of"):
            build_method(name, {"forget_reduction": "sum"})


# ------------------------------------------------------------------------------------------------ LOSS and zlib
class FixedLM(nn.Module):
    """The same next-token distribution ``p`` at every position."""

    def __init__(self, p) -> None:
        super().__init__()
        self.row = nn.Parameter(torch.log(torch.as_tensor(p, dtype=torch.float32)))

    def forward(self, input_ids, attention_mask=None, **kw):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, len(self.row)))


@pytest.fixture(scope="module")
def ab():
    """A word-level codec whose vocabulary is <pad> <s> </s> <unk> : Answer Question a b q, three answers to "q" ("a b",
    "b", and the empty one, which is its EOS alone) and a model with p(a) = 1/4, p(b) = 1/8, p(EOS) = 1/4 everywhere."""
    from unlearnkit.lm.text import TextCodec, word_tokenizer

    codec = TextCodec(word_tokenizer(["Question: q\nAnswer:", "a b"]), template="plain")
    vocab = codec.tokenizer.get_vocab()
    p = np.full(len(vocab), (1 - 1 / 4 - 1 / 8 - 1 / 4) / (len(vocab) - 3))
    p[vocab["a"]], p[vocab["b"]], p[codec.tokenizer.eos_token_id] = 1 / 4, 1 / 8, 1 / 4
    answers = ["a b", "b", ""]
    data = TokenData.from_pairs([("q", a) for a in answers], [0, 1, 2], [SimpleNamespace(answer=a) for a in answers], codec)
    return Split.create("answers", data, [10, 11, 12]), FixedLM(p)


def test_loss_and_zlib_average_over_the_answer_with_its_eos_by_hand(causal_lm_task, ab):
    split, model = ab
    ctx = EvalContext(causal_lm_task, CausalLMAdapter())
    refs = References()
    # mean log p with the final EOS: "a b</s>" = (−2 − 3 − 2)/3 · ln 2; "b</s>" = (−3 − 2)/2 · ln 2; "</s>" = −2 ln 2
    want = np.array([-7 / 3, -5 / 2, -2.0]) * LN2
    assert build_metric("loss_mia").scores(ctx, model, split, refs) == pytest.approx(want, rel=1e-6)
    # zlib: over the compressed size of the decoded answer text, special tokens skipped (the empty answer: b"")
    zbytes = np.array([len(zlib.compress(t)) for t in (b"a b", b"b", b"")])
    assert build_metric("zlib").scores(ctx, model, split, refs) == pytest.approx(want / zbytes, rel=1e-6)
    total = np.array([-7.0, -5.0, -2.0]) * LN2 / zbytes  # numerator "total": the summed NLL, EOS included
    assert build_metric("zlib", {"numerator": "total"}).scores(ctx, model, split, refs) == pytest.approx(total, rel=1e-6)
    # Min-K% keeps leaving the EOS out (OpenUnlearning's tokenwise_logprobs): "a b" → min of (−2, −3) ln 2; "" → nothing
    mink = build_metric("min_k").scores(ctx, model, split, refs)
    assert mink[:2] == pytest.approx([-3 * LN2, -3 * LN2], rel=1e-6) and np.isnan(mink[2])


# ------------------------------------------------------------------------------------------------ answers with nothing to score
def emptied(split: Split, which: set) -> Split:
    """``split`` with the items ``which`` given an empty answer, paraphrased answer and first perturbed answer."""
    d = split.data
    recs = [dataclasses.replace(r, answer="", paraphrased_answer="", perturbed_answers=("", *r.perturbed_answers[1:]))
            if r.item_id in which else r for r in d.records]
    return Split.create(split.name, TokenData.from_pairs([(r.question, r.answer) for r in recs], [r.profile_id for r in recs], recs,
                                                          d.codec), split.ids)


@pytest.fixture(scope="module")
def empty_task(profiles_source, causal_lm_task):
    """The fixture task with one forget, one retain and one holdout item whose answers are empty (the EOS alone)."""
    s = profiles_source
    forget, retain = set(causal_lm_task.forget.ids.tolist()), set(causal_lm_task.retain.ids.tolist())
    which = {min(forget), min(retain), int(s.test.ids[0])}
    task = make_task("profiles", emptied(s.train, which), emptied(s.test, which), ForgetSpec("profiles", fraction=0.1),
                     np.random.default_rng(0), n_classes=None, modality=s.modality, probes=s.probes)
    assert set(task.forget.ids.tolist()) == forget
    return task


def test_an_empty_answer_is_left_out_with_a_count_never_a_crash(empty_task, causal_lm_refs):
    refs, task = causal_lm_refs, empty_task
    ctx = EvalContext(task, get_adapter(task))
    with pytest.warns(UserWarning, match=r"min_k: 1 of 12 (forget|test) items have no score"):
        mk = build_metric("min_k").compute(refs.original, task, refs, ctx)
    assert mk.info["n_excluded"] == {"forget": 1, "test": 1} and mk.info["retrained_n_excluded"] == {"forget": 1, "test": 1}
    ids, scores = mk.per_example["score.forget"]
    assert np.isnan(scores[list(ids).index(min(ids))]) and 0.0 <= mk.values["auc"] <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the EOS alone is a scored answer for LOSS, zlib, the reference attack, answer_prob
        for name in ("loss_mia", "zlib", "reference_mia", "answer_prob", "truth_ratio", "forget_quality"):
            r = build_metric(name).compute(refs.original, task, refs, ctx)
            assert all(v == 0 for v in r.info["n_excluded"].values()), name
    expected = {"min_k_plus_plus": {"forget": 1, "test": 1}, "grad_norm_mia": {"forget": 1, "test": 1},
                "privleak": {"forget": 1, "test": 1}, "rouge_l": {"forget": 1, "retain": 1, "neighbours": 0},
                "exact_memorization": {"forget": 1, "retain": 1}, "extraction_strength": {"forget": 1, "retain": 1}}
    for name, counts in expected.items():
        with pytest.warns(UserWarning, match="have no score"):
            r = build_metric(name).compute(refs.original, task, refs, ctx)
        assert r.info["n_excluded"] == counts, name
        assert all(math.isfinite(v) for v in r.values.values()), name
    with pytest.warns(UserWarning, match="have no score"):
        pp = build_metric("paraphrase_probe").compute(refs.original, task, refs, ctx)
    assert pp.info["n_excluded"]["forget rouge_l"] == 1 and math.isfinite(pp.values["forget_rouge_l"])
    with pytest.warns(UserWarning, match="have no score"):
        mu = build_metric("model_utility").compute(refs.original, task, refs, ctx)
    assert mu.info["n_excluded"]["retain rouge_l"] == 1 and math.isfinite(mu.values["model_utility"])
    with pytest.warns(UserWarning):
        result = assess(refs.original, task, refs, default_battery("causal_lm"), ctx=ctx)
    assert not result.missing and result.verdict.label  # the whole battery runs and decides


def test_an_answer_without_tokens_has_no_probability(causal_lm_task, causal_lm_refs):
    """Hand-built data with an example whose labels are all ignored: NaN (left out), never a perfect probability of 1."""
    d = causal_lm_task.forget.data
    labels = d.labels.clone()
    labels[0] = IGNORE
    forget = Split.create("forget", TokenData(d.x, d.attention_mask, labels, d.y, d.records, d.codec), causal_lm_task.forget.ids)
    task = dataclasses.replace(causal_lm_task, forget=forget)
    out = get_adapter(task).outputs(causal_lm_refs.original, forget)
    assert np.isnan(out["nll"][0]) and np.isfinite(out["nll"][1:]).all()
    with pytest.warns(UserWarning, match="answer_prob: 1 of 12 forget items have no score"):
        r = build_metric("answer_prob").compute(causal_lm_refs.original, task, References(), EvalContext(task, get_adapter(task)))
    p = r.per_example["p.forget"][1]
    assert r.info["n_excluded"]["forget"] == 1 and r.values["forget"] == pytest.approx(p[1:].mean())


# ------------------------------------------------------------------------------------------------ truth ratio: prob_mean
def test_prob_mean_aggregate_by_hand(causal_lm_task):
    """prob_mean = mean_i P_correct / (P_correct + P_wrong), P_correct = P̄(paraphrased answer), P_wrong = the geometric mean
    of the perturbed answers' P̄ (OpenUnlearning's ``prob_mean`` truth-ratio aggregate)."""
    from unlearnkit.evaluation._lm import prob_mean_score, truth_ratio_from_nll

    # item 1: NLL̄(para) = ln 2 (P = 1/2), perturbed NLL̄ ln 2 and 3 ln 2 → P_wrong = exp(−2 ln 2) = 1/4: share (1/2)/(3/4) = 2/3
    # item 2: NLL̄(para) = 2 ln 2 (P = 1/4), perturbed 0 and 2 ln 2 → P_wrong = exp(−ln 2) = 1/2: share (1/4)/(3/4) = 1/3
    tr = truth_ratio_from_nll(np.array([LN2, 2 * LN2]), np.array([[LN2, 0.0], [3 * LN2, 2 * LN2]]))
    assert tr == pytest.approx([0.5, 2.0])
    assert prob_mean_score(tr) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert prob_mean_score(np.array([1.0])) == 0.5 and prob_mean_score(np.array([np.inf])) == 0.0


def test_truth_ratio_reports_prob_mean_per_split(causal_lm_task, causal_lm_refs):
    task, model = causal_lm_task, causal_lm_refs.original
    ctx = EvalContext(task, get_adapter(task))
    r = build_metric("truth_ratio").compute(model, task, References(), ctx)
    for name in ("forget", "retain", "neighbours"):
        split = task.splits()["probe:neighbours"] if name == "neighbours" else (task.forget if name == "forget" else None)
        tr = r.per_example[f"tr.{name}"][1]
        assert r.values[f"{name}_prob_mean"] == pytest.approx(np.mean(1 / (1 + tr)))
        if split is not None:  # from the answer probabilities themselves: P_correct / (P_correct + P_wrong)
            def out(s):
                return get_adapter(task).outputs(model, s)["nll"]

            correct = np.exp(-out(variant(split, "paraphrased_answer")))
            wrong = np.exp(-np.mean([out(variant(split, "perturbed", j)) for j in range(n_perturbed(split))], 0))
            assert r.values[f"{name}_prob_mean"] == pytest.approx(np.mean(correct / (correct + wrong)), rel=1e-6)
