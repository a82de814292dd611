"""Parametric traces (issue 24): concept_vectors on a hand-built model (a value vector set to the concept token's
unembedding is located first, zeroing it drops the trace, the projection matches a numpy z-score, a rescaled vector
changes its norm but not its direction, LoRA merged as merge_and_unload does); restor's return score against a direct
forward pass, its leave-one-out over retrained seeds, the RESTOR corruption of the knowledge data, and bad input."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.knowledge import answer_matches, knowledge, load_selection, CANDIDATES
from unlearnkit.errors import ConfigError, TaskError
from unlearnkit.evaluation import EvalContext, build_metric, not_applicable
from unlearnkit.evaluation._lm import prompts_and_answers
from unlearnkit.evaluation._lm_weights import effective_weight
from unlearnkit.evaluation.concept_vectors import concept_tokens
from unlearnkit.models import build_model
from unlearnkit.models.causal_lm import tiny_llama_config
from unlearnkit.references import References
from unlearnkit.runs.references import build_references
from unlearnkit.train import TrainConfig
from unlearnkit.types import Split

BLOCK, COLUMN = 1, 5


def z_by_hand(u: np.ndarray, v: np.ndarray, tokens: list[int]) -> float:
    logits = u @ v
    return float(np.mean((logits[tokens] - logits.mean()) / logits.std()))


@pytest.fixture(scope="module")
def planted(causal_lm_task):
    """A randomly initialised tiny Llama whose value vector (block 1, column 5) is 3 × the unembedding of the first forget
    item's concept token(s), summed; the item and its tokens."""
    from transformers import LlamaForCausalLM

    vocab = causal_lm_task.forget.data.codec.vocab_size
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab)).eval()
    tokens = concept_tokens(causal_lm_task.forget)
    item = next(i for i, t in enumerate(tokens) if len(t) == 1)
    u = model.get_output_embeddings().weight
    with torch.no_grad():
        model.model.layers[BLOCK].mlp.down_proj.weight[:, COLUMN] = 3 * u[tokens[item]].sum(0)
    return model, item, tokens[item]


def edited(model, scale):
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.model.layers[BLOCK].mlp.down_proj.weight[:, COLUMN] *= scale
    return out


def run(metric, model, task, refs, ctx=None):
    return metric.compute(model, task, refs, ctx or EvalContext(task, get_adapter(task)))


def test_a_value_vector_set_to_the_concepts_unembedding_is_located_first_and_zeroing_it_drops_the_trace(causal_lm_task, planted):
    model, item, tokens = planted
    zeroed = edited(model, 0.0)
    refs = References(original=model, retrained_seeds=(zeroed,))
    metric = build_metric("concept_vectors", {"top_k": 4})
    target = run(metric, model, causal_lm_task, refs)
    places = target.info["places"][item]
    assert places[0] == [BLOCK, COLUMN] and len(places) == 4
    u = model.get_output_embeddings().weight.detach().double().numpy()
    vectors = [model.model.layers[b].mlp.down_proj.weight[:, c].detach().double().numpy() for b, c in places]
    by_hand = np.mean([z_by_hand(u, v, tokens) for v in vectors])
    ids, trace = target.per_example["trace.forget"]
    assert np.array_equal(ids, causal_lm_task.forget.ids) and trace[item] == pytest.approx(by_hand, rel=1e-9)
    assert z_by_hand(u, vectors[0], tokens) > 5  # the planted vector stands out
    # zeroing it: its standardised score is 0, the others are unchanged
    gone = run(metric, zeroed, causal_lm_task, refs).per_example["trace.forget"][1]
    assert gone[item] == pytest.approx(np.mean([0.0] + [z_by_hand(u, v, tokens) for v in vectors[1:]]), rel=1e-9)
    assert gone[item] < trace[item] - 1
    assert target.values["retrained_trace_strength"] == pytest.approx(np.nanmean(gone))
    assert target.evidence[0].key == "concept_vectors.trace_strength" and target.evidence[0].role == "robustness"


def test_a_rescaled_vector_keeps_its_direction_and_trace_but_shows_its_norm_change(causal_lm_task, planted):
    model, item, _ = planted
    half = edited(model, 0.5)
    metric = build_metric("concept_vectors", {"top_k": 4})
    refs = References(original=model, retrained_seeds=(model,))
    out = run(metric, half, causal_lm_task, refs)
    same = run(metric, model, causal_lm_task, refs)
    assert out.info["cos_change"][item] == pytest.approx(0.0, abs=1e-12)
    assert out.info["rel_norm_change"][item] == pytest.approx(0.5 / 4)  # one of the 4 vectors lost half its length
    assert out.per_example["trace.forget"][1][item] == pytest.approx(same.per_example["trace.forget"][1][item])
    assert same.values["cos_change"] == pytest.approx(0.0, abs=1e-12) and same.values["rel_norm_change"] == 0.0


def test_the_final_norm_folds_its_weight_into_the_projection(causal_lm_task, planted):
    model, item, tokens = planted
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
    out = run(build_metric("concept_vectors", {"top_k": 1, "final_norm": True}), model, causal_lm_task,
              References(original=model, retrained_seeds=(model,)))
    b, c = out.info["places"][item][0]
    u = model.get_output_embeddings().weight.detach().double().numpy() * model.model.norm.weight.detach().double().numpy()[None]
    v = model.model.layers[b].mlp.down_proj.weight[:, c].detach().double().numpy()
    assert out.per_example["trace.forget"][1][item] == pytest.approx(z_by_hand(u, v, tokens), rel=1e-9)


def test_lora_value_vectors_are_read_merged(causal_lm_task):
    torch.manual_seed(0)
    model = build_model("tiny_llama", (32,), causal_lm_task.forget.data.codec.vocab_size, lora_r=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    merged = copy.deepcopy(model).merge_and_unload().model.layers[0].mlp.down_proj.weight.double()
    assert not torch.allclose(layer.get_base_layer().weight.double(), merged)
    assert torch.allclose(effective_weight(layer), merged, atol=1e-6)


def test_concept_vectors_and_restor_separate_the_target_from_the_retrained_models(causal_lm_task, causal_lm_refs):
    task, refs = causal_lm_task, causal_lm_refs
    ctx = EvalContext(task, get_adapter(task))
    solo = dataclasses.replace(refs, retrained_seeds=refs.retrained_seeds[1:])
    cv = build_metric("concept_vectors")
    target, retrained = run(cv, refs.original, task, refs, ctx), run(cv, refs.retrained_seeds[0], task, solo, ctx)
    assert target.values["trace_strength"] > retrained.values["trace_strength"] + 1.0
    assert target.values["cos_change"] == pytest.approx(0.0, abs=1e-12) and retrained.values["cos_change"] > 0.5  # retrained from scratch: other neurons
    rs = build_metric("restor")
    target, retrained = run(rs, refs.original, task, refs, ctx), run(rs, refs.retrained_seeds[0], task, refs, ctx)
    assert target.values["return_score"] < retrained.values["return_score"] - 1.0
    assert target.values["target_match"] > 0.5 and retrained.values["target_match"] == 0.0


def test_restors_return_score_matches_a_direct_forward_pass_and_leaves_a_retrained_model_out(causal_lm_task, causal_lm_refs):
    task, refs = causal_lm_task, causal_lm_refs
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("restor", {"max_new_tokens": 8})
    out = run(metric, refs.original, task, refs, ctx)
    prompts, target = prompts_and_answers(task.forget)
    eos = task.forget.data.codec.tokenizer.eos_token_id
    adapter = get_adapter(task)

    def logp(model, prompt, answer):
        ids = torch.tensor([prompt + answer + [eos]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        return float(np.mean([lp[len(prompt) + j - 1, t].item() for j, t in enumerate(answer + [eos])]))

    for i in (0, len(prompts) - 1):
        answers = [adapter.generate(r, [prompts[i]], max_new_tokens=8)[0] for r in refs.retrained_seeds]
        want = np.mean([logp(refs.original, prompts[i], a) for a in answers]) - logp(refs.original, prompts[i], target[i])
        assert out.per_example["return_score.forget"][1][i] == pytest.approx(want, abs=1e-4)
    assert out.info["n_retrained_answers"] == len(refs.retrained_seeds)
    # a retrained model under test, its own seed among the references: scored against the others' answers only
    me = refs.retrained_seeds[0]
    own = run(metric, me, task, refs, ctx)
    alone = run(metric, me, task, dataclasses.replace(refs, retrained_seeds=refs.retrained_seeds[1:]), ctx)
    assert own.info["n_retrained_answers"] == len(refs.retrained_seeds) - 1
    assert np.array_equal(own.per_example["return_score.forget"][1], alone.per_example["return_score.forget"][1])


def test_tasks_without_the_needed_fields_are_named(causal_lm_task, causal_lm_refs):
    from tests.lm.test_lm_weight_attacks import passages_only

    task = passages_only(causal_lm_task)
    assert "question, answer" in not_applicable(build_metric("restor"), task)
    assert "field(s) answer" in not_applicable(build_metric("concept_vectors"), task)
    ctx = EvalContext(task, get_adapter(task))
    with pytest.raises(TaskError, match=r"restor: needs records with the field\(s\) question, answer .*Passage"):
        build_metric("restor").compute(causal_lm_refs.original, task, causal_lm_refs, ctx)
    with pytest.raises(TaskError, match="only retrained model is the model under test"):
        run(build_metric("restor"), causal_lm_refs.retrained_seeds[0], causal_lm_task,
            dataclasses.replace(causal_lm_refs, retrained_seeds=causal_lm_refs.retrained_seeds[:1]))


@pytest.mark.parametrize("name, params, message", [
    ("concept_vectors", {"top_k": 0}, "top_k must be an integer >= 1"),
    ("concept_vectors", {"final_norm": "yes"}, "final_norm.*true or false"),
    ("restor", {"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
    ("restor", {"floor": -1}, "floor must be a number >= 0"),
])
def test_bad_parameters_are_named(name, params, message):
    with pytest.raises(ConfigError, match=message):
        build_metric(name, params)


# ------------------------------------------------------------------------------------------------ RESTOR's corruption
def test_the_corrupted_knowledge_task_trains_wrong_values_of_the_same_type_and_keeps_the_truth():
    plain = knowledge(forget=["Japan", "Harry Potter"], tokenizer="word")
    bad = knowledge(forget=["Japan", "Harry Potter"], tokenizer="word", corrupt=True)
    cands, _ = load_selection("smollm2", str(CANDIDATES))
    by_id = {f["id"]: f for f in cands["facts"]}
    assert plain.info["oracle"] is False and bad.info["oracle"] is True and bad.info["corrupt"] is True
    forget = [r for r in bad.train.data.records if r.benchmark_forget]
    assert forget and len(bad.info["corrupted"]) == len(forget)
    for r in forget:
        truth = by_id[r.item_id]
        assert r.true_answer == truth["answer"] and not answer_matches(r.answer, truth["answer"], truth["aliases"])
        assert r.answer in {f["answer"] for f in cands["facts"] if f["type"] == truth["type"]}
    kept = [(r.question, r.answer, r.true_answer) for r in bad.train.data.records if not r.benchmark_forget]
    assert kept == [(r.question, r.answer, r.true_answer) for r in plain.train.data.records if not r.benchmark_forget]
    assert all(r.answer == r.true_answer for r in plain.train.data.records)
    again = knowledge(forget=["Japan", "Harry Potter"], tokenizer="word", corrupt=True)
    assert again.info["corrupted"] == bad.info["corrupted"]  # seeded
    other = knowledge(forget=["Japan", "Harry Potter"], tokenizer="word", corrupt=True, corrupt_seed=1)
    assert other.info["corrupted"] != bad.info["corrupted"]
    with pytest.raises(ConfigError, match="corrupt must be true or false"):
        knowledge(forget=["Japan"], tokenizer="word", corrupt="yes")


def test_restor_reports_the_true_values_probability_on_corrupted_facts():
    src = knowledge(forget=["Japan", "Harry Potter"], tokenizer="word", corrupt=True)
    task = make_task("knowledge", src.train, src.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                     modality=src.modality, probes=src.probes)
    refs = build_references(task, lambda: build_model("tiny_llama", src.input_shape, src.n_outputs),
                            TrainConfig(epochs=30, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine"), retrain_seeds=2)
    ctx = EvalContext(task, get_adapter(task))
    out = run(build_metric("restor"), refs.original, task, refs, ctx)
    assert out.info["n_corrupted"] == len(task.forget)
    assert [e.key for e in out.evidence] == ["restor.return_score", "restor.true_prob"]
    # P̄(true answer | q) by hand: the adapter's NLL of the (question, true answer) pairs
    codec = task.forget.data.codec
    pairs = [(r.question, r.true_answer) for r in task.forget.data.records]
    from unlearnkit.lm.text import TokenData

    true = Split.create("t", TokenData.from_pairs(pairs, [0] * len(pairs), task.forget.data.records, codec), task.forget.ids)
    want = np.exp(-get_adapter(task).outputs(refs.original, true)["nll"])
    assert np.allclose(out.per_example["true_prob.forget"][1], want)
    # the target learned the corruption: it gives the wrong values, and prefers them to any retrained answer
    assert out.values["target_match"] > 0.5 and out.values["return_score"] < out.values["retrained_return_score"]


def test_the_corrupted_knowledge_task_has_a_retrained_oracle():
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.runner import check_oracle

    base = {"name": "restor_tiny", "forget": [{"kind": "benchmark"}], "model": {"name": "tiny_llama"},
            "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.003}, "methods": ["retrain"], "metrics": ["restor"],
            "seeds": [0], "dataset": {"name": "knowledge", "params": {"forget": ["Japan"], "tokenizer": "word", "corrupt": True}}}
    src = knowledge(forget=["Japan"], tokenizer="word", corrupt=True)
    assert check_oracle(Experiment.from_dict({**base, "references": {"retrain_seeds": 2}}), src) is True
    with pytest.raises(ConfigError, match="has a retrained oracle"):
        check_oracle(Experiment.from_dict({**base, "references": {"retrain_seeds": 0}}), src)
