"""LM weight edits and localisation: ROCR's closed-form rank-one redirection (rank, exact key mapping, retain keys barely
moved, the ROME solution checked against an independent least-norm solve) and layer_constrained's causal tracing
(hand-checkable effects, subjects located in the tokens, only the traced layers trained, the heatmap in the report),
with their bad inputs."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from unlearnkit.adapters import get_adapter
from unlearnkit.analysis.locate import (
    CATEGORIES,
    category,
    derive_subjects,
    down_proj,
    item_subjects,
    key_second_moment,
    locate,
    mlp_keys,
    subject_keys,
    subject_span,
    subjects_for,
    trace_example,
)
from unlearnkit.data.profiles import variant
from unlearnkit.errors import ConfigError, TaskError
from unlearnkit.methods import build_method
from unlearnkit.methods.rocr import rank_one_update
from unlearnkit.models.causal_lm import decoder_layers
from unlearnkit.references import References


@pytest.fixture
def target(causal_lm_refs):
    return copy.deepcopy(causal_lm_refs.original)


def run(name, params, model, task, seed=0):
    return build_method(name, params).unlearn(model, task, References(), rng=np.random.default_rng(seed))


def one_profile(task):
    """The task with only the first forget profile in its forget set (one concept)."""
    g = int(task.forget.data.y[0])
    keep = np.flatnonzero(task.forget.data.y.numpy() == g)
    from unlearnkit.types import Split

    return dataclasses.replace(task, forget=Split.create(task.forget.name, task.forget.data.subset(keep), task.forget.ids[keep]), train_split=None)


# ------------------------------------------------------------------------------------------------ subjects
def test_subjects_are_the_names_and_are_located_in_the_tokens(causal_lm_task):
    subjects = subjects_for(causal_lm_task.forget, others=[causal_lm_task.retain, causal_lm_task.test])
    codec = causal_lm_task.forget.data.codec
    for ex in locate(causal_lm_task.forget, subjects):
        record = causal_lm_task.forget.data.records[ex.index]
        assert subjects[ex.group] in record.question and subjects[ex.group] in record.answer  # the person's full name
        assert codec.decode(ex.ids[ex.span[0] : ex.span[1]]) == subjects[ex.group]
    # hand-made groups: the longest run in every question of a group and in none of the other's
    got = derive_subjects(["Where was Ann Lee born?", "Who is Ann Lee's parent?", "Where was Bo Kim born?", "Who is Bo Kim's parent?"], [0, 0, 1, 1])
    assert got == {0: "Ann Lee", 1: "Bo Kim"}


def test_item_subjects_read_the_items_subject_field_else_derive_the_groups(causal_lm_task):
    from unlearnkit.data.knowledge import Fact
    from unlearnkit.types import Split

    forget = causal_lm_task.forget
    names = item_subjects(forget)
    assert names == [r.subject for r in forget.data.records] and all(n in r.question for n, r in zip(names, forget.data.records))
    facts = [Fact(0, 0, "Japan", "place", "What is the capital of Japan?", "Tokyo"), Fact(1, 1, "general", "general", "What is 2+2?", "4")]
    two = forget.data.subset(np.arange(2))
    two.records = facts
    assert item_subjects(Split.create("f", two, forget.ids[:2])) == ["Japan", None]  # a fact's target; none for general questions
    # records without a subject field: the group's subject, derived from its questions (as causal tracing does)
    bare = [type("R", (), {"question": r.question})() for r in forget.data.records]
    data = forget.data.subset(np.arange(len(bare)))
    data.records = bare
    assert item_subjects(Split.create("f", data, forget.ids)) == names
    assert item_subjects(Split.create("f", data, forget.ids), derive=False) == [None] * len(bare)


def test_a_subject_missing_from_the_tokens_is_a_clear_error(causal_lm_task, target):
    codec = causal_lm_task.forget.data.codec
    with pytest.raises(TaskError, match="cannot be located in the tokens of the prompt"):
        subject_span(codec, "Where was Nobody Known born?", "Zanquist Orvik")
    with pytest.raises(TaskError, match="None of the subjects"):
        run("layer_constrained", {"subjects": ["Zanquist Orvik"], "params": {"steps": 1}}, target, causal_lm_task)
    with pytest.raises(TaskError, match="No subject shared"):
        derive_subjects(["Where was Ann born?", "Who was Bo?"], [0, 0], others=["Ann was Bo"])


# ------------------------------------------------------------------------------------------------ ROCR
def test_rank_one_update_maps_the_key_and_is_the_least_c_norm_solution():
    """ΔW k = r exactly, rank 1, and equal to an independent solve: min ‖ΔW C^½‖_F s.t. ΔW k = r, i.e. the
    minimum-norm solution of (ΔW C^½)(C^-½ k) = r (numpy's pinv)."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 6, generator=g, dtype=torch.float64)
    cov = A.T @ A / 40
    k, r = torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(5, 1, generator=g, dtype=torch.float64)
    delta = rank_one_update(k, r, cov, 1e-3)
    assert torch.linalg.matrix_rank(delta) == 1 and torch.allclose(delta @ k, r, atol=1e-10)
    c = cov.numpy() + 1e-3 * np.trace(cov.numpy()) / 6 * np.eye(6)
    w, v = np.linalg.eigh(c)
    half, ihalf = v @ np.diag(w ** 0.5) @ v.T, v @ np.diag(w ** -0.5) @ v.T
    x = r.numpy() @ np.linalg.pinv(ihalf @ k.numpy())  # least-Frobenius-norm X with X (C^-½ k) = r
    assert np.allclose(delta.numpy(), x @ ihalf, atol=1e-10)
    assert np.allclose(delta.numpy() @ half, x, atol=1e-10)


def test_rocr_is_rank_one_maps_the_key_and_barely_moves_retain_keys(causal_lm_task, target):
    task = one_profile(causal_lm_task)
    before = copy.deepcopy(target)
    out = run("rocr", {"layer": 0, "value": "mlp"}, target, task)
    name = "model.layers.0.mlp.down_proj.weight"
    assert out.info["parameter"] == name and out.info["rank"] == 1
    delta = (dict(target.named_parameters())[name] - dict(before.named_parameters())[name]).detach().double()
    assert int(torch.linalg.matrix_rank(delta, rtol=1e-4)) == 1
    for n, p in target.named_parameters():  # nothing else moved
        assert torch.equal(p, dict(before.named_parameters())[n]) == (n != name), n
        assert bool(out.changed[n].all()) == (n == name)
    # the concept key (mean last-subject-token key over the forget prompts) now gives the target concept's value
    codec = task.forget.data.codec
    (subject,) = {c["subject"] for c in out.info["concepts"]}
    target_name = out.info["concepts"][0]["target"]
    ex = locate(task.forget, {int(task.forget.data.y[0]): subject})
    k_s = subject_keys(before, [e.ids[: e.n_prompt] for e in ex], [e.span[1] - 1 for e in ex], 0, pad=codec.pad_id).double().mean(0)
    from unlearnkit.analysis.locate import substitute

    swapped = [subject_span(codec, substitute(task.forget.data.records[e.index].question, subject, target_name), target_name) for e in ex]
    k_t = subject_keys(before, [i for i, _ in swapped], [s[1] - 1 for _, s in swapped], 0, pad=codec.pad_id).double().mean(0)
    W0, W1 = dict(before.named_parameters())[name].detach().double(), dict(target.named_parameters())[name].detach().double()
    assert float((W1 @ k_s - W0 @ k_t).norm() / (W0 @ k_t).norm()) < 1e-4  # float32 weights: exact to rounding
    assert float((W0 @ k_s - W0 @ k_t).norm() / (W0 @ k_t).norm()) > 0.05  # and it was not so before
    assert out.info["concepts"][0]["residual"] < 1e-4
    # retain keys: the output moves by far less than the forget key's does (relative to the layer's output)
    batch = next(task.retain.batches(64))
    keys = mlp_keys(before, batch["x"], batch["attention_mask"], 0)[batch["attention_mask"].bool()].double()
    retain_shift = float(((keys @ delta.T).norm(dim=1) / (keys @ W0.T).norm(dim=1)).median())
    forget_shift = float((delta @ k_s).norm() / (W0 @ k_s).norm())
    assert retain_shift < 0.1 * forget_shift
    assert out.info["retain_output_shift"] < 0.2


def test_rocr_default_makes_the_layer_output_at_the_subject_the_target_concepts(causal_lm_task, target):
    """``value: hidden`` (the default): after the edit, decoder layer ℓ's output at the forget subject's last token (mean over
    its prompts) is the unedited model's output for the target concept in the same prompts; earlier layers are untouched."""
    from unlearnkit.analysis.locate import substitute
    from unlearnkit.methods.rocr import layer_output

    task = one_profile(causal_lm_task)
    before = copy.deepcopy(target)
    out = run("rocr", {"layer": 1}, target, task)
    assert build_method("rocr", {}).value == "hidden" and out.info["reach"] == {"named": len(task.forget), "unnamed": 0, "unnamed_examples": []}
    codec = task.forget.data.codec
    (concept,) = out.info["concepts"]
    ex = locate(task.forget, [concept["subject"]] * len(task.forget))
    prompts, last = [e.ids[: e.n_prompt] for e in ex], [e.span[1] - 1 for e in ex]
    swapped = [subject_span(codec, substitute(task.forget.data.records[e.index].question, concept["subject"], concept["target"]), concept["target"])
               for e in ex]
    h_target = layer_output(before, [i for i, _ in swapped], [s[1] - 1 for _, s in swapped], 1, codec.pad_id, "cpu")
    h_before = layer_output(before, prompts, last, 1, codec.pad_id, "cpu")
    h_after = layer_output(target, prompts, last, 1, codec.pad_id, "cpu")
    assert float((h_after - h_target).norm() / h_target.norm()) < 1e-4  # float32: exact to rounding
    assert float((h_before - h_target).norm() / h_target.norm()) > 0.05  # and it was not so before
    assert torch.equal(layer_output(target, prompts, last, 0, codec.pad_id, "cpu"), layer_output(before, prompts, last, 0, codec.pad_id, "cpu"))


def test_rocr_skips_and_reports_questions_that_do_not_name_their_subject():
    """A knowledge fact asked without naming its target ("Who wrote the play Hamlet?" for Shakespeare) has no subject key:
    rocr edits the named ones and reports the rest in info["reach"]; a forget set naming no subject at all is a TaskError."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.knowledge import knowledge
    from unlearnkit.models import build_model

    def task_of(forget):
        src = knowledge(forget=forget, tokenizer="word")
        task = make_task("knowledge", src.train, src.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                         modality=src.modality, probes=src.probes)
        return task, build_model("tiny_llama", src.input_shape, src.n_outputs)

    task, model = task_of(["William Shakespeare", "Japan"])
    records = task.forget.data.records
    unnamed = {r.question for r in records if r.target not in r.question}
    assert len(unnamed) == 3 and all("wrote the play" in q for q in unnamed)  # the shipped selection's Shakespeare plays
    out = run("rocr", {"layer": 0}, model, task)
    reach = out.info["reach"]
    assert reach["named"] == len(records) - 3 and reach["unnamed"] == 3
    assert {e["question"] for e in reach["unnamed_examples"]} == unnamed
    assert {c["subject"] for c in out.info["concepts"]} == {"William Shakespeare", "Japan"}
    keep = np.flatnonzero([r.target not in r.question for r in records])  # only the unnamed questions left
    from unlearnkit.types import Split

    only = dataclasses.replace(task, forget=Split.create(task.forget.name, task.forget.data.subset(keep), task.forget.ids[keep]), train_split=None)
    with pytest.raises(TaskError, match="none of the 3 questions of split 'forget' names its subject.*cannot reach facts asked without naming"):
        run("rocr", {"layer": 0}, model, only)
    # causal tracing keys on the subject's tokens too: it traces the named questions and says how many it could not
    lc = build_method("layer_constrained", {"max_prompts": 2, "samples": 1, "params": {"steps": 1, "batch_size": 4}})
    tracing = lc.trace(model, task, rng=np.random.default_rng(0))
    assert tracing["reach"]["unnamed"] == 3 and len(tracing["item_ids"]) == 2
    with pytest.raises(TaskError, match="layer_constrained tracing: none of the 3 questions"):
        lc.trace(model, only, rng=np.random.default_rng(0))


def test_rocr_edits_every_forget_concept_jointly(causal_lm_task, target):
    out = run("rocr", {"layer": 1, "value": "hidden"}, target, causal_lm_task)
    assert len(out.info["concepts"]) == 2 and out.info["rank"] == 2
    assert all(c["residual"] < 1e-4 for c in out.info["concepts"]) and len({c["target"] for c in out.info["concepts"]}) == 2


def test_rocr_bad_inputs(causal_lm_task, target):
    with pytest.raises(ConfigError, match="cov_reg"):
        build_method("rocr", {"cov_reg": 0.0})
    with pytest.raises(ConfigError, match="value"):
        build_method("rocr", {"value": "logits"})
    with pytest.raises(ConfigError, match="targets must be a non-empty list"):
        build_method("rocr", {"targets": []})
    with pytest.raises(ConfigError, match="need as many distinct target concepts"):
        run("rocr", {"targets": ["Miriwyn Caldell"]}, copy.deepcopy(target), causal_lm_task)
    with pytest.raises(ConfigError, match="out of range"):
        run("rocr", {"layer": 5}, copy.deepcopy(target), causal_lm_task)


FORMS = ("forget", "paraphrase", "paraphrased_answer")


def form_recall(model, task):
    """Mean length-normalised answer probability on each question form of the forget facts."""
    adapter = get_adapter(task)
    splits = {"forget": task.forget, "paraphrase": variant(task.forget, "paraphrase"),
              "paraphrased_answer": variant(task.forget, "paraphrased_answer")}
    return {k: float(np.exp(-adapter.outputs(model, s)["nll"]).mean()) for k, s in splits.items()}


def test_rocr_and_grad_ascent_recall_across_forms(causal_lm_task, target, capsys):
    """Measured (printed, reported): recall after / before on each form. The edit must keep retain recall within 5% and
    leave no form above its start by more than 5% (no form recovered), gradient ascent must drop the trained form."""
    adapter = get_adapter(causal_lm_task)

    def retain_recall(m):
        return float(np.exp(-adapter.outputs(m, causal_lm_task.retain)["nll"]).mean())

    start, retain_start = form_recall(target, causal_lm_task), retain_recall(target)
    ratios = {}
    for name, params in [("rocr", {"layer": 0}), ("grad_ascent", {"epochs": 5, "batch_size": 8, "optimizer": "adamw", "lr": 0.001})]:
        m = copy.deepcopy(target)
        run(name, params, m, causal_lm_task)
        after = form_recall(m, causal_lm_task)
        retain = retain_recall(m)
        ratios[name] = {**{k: after[k] / start[k] for k in FORMS}, "retain": retain / retain_start}
    with capsys.disabled():
        print("\nrecall after/before per form:", {n: {k: round(v, 3) for k, v in r.items()} for n, r in ratios.items()})
    assert ratios["rocr"]["retain"] > 0.95 and all(ratios["rocr"][k] < 1.05 for k in FORMS)
    assert ratios["grad_ascent"]["forget"] < 0.1


# ------------------------------------------------------------------------------------------------ causal tracing
def test_trace_example_against_hand_computed_runs(causal_lm_task, target):
    """Restoring the last layer at the last prompt token gives back the clean probability of the answer's first token
    only through that position, and restoring a layer at every position would give p_clean: checked by running the
    corrupted model with all of layer 0's clean outputs patched in by hand."""
    task = causal_lm_task
    subjects = subjects_for(task.forget, others=[task.retain, task.test])
    ex = locate(task.forget, subjects)[0]
    t = trace_example(target, ex, noise=0.2, samples=2, generator=torch.Generator().manual_seed(0))
    n_layers = len(decoder_layers(target))
    assert t["restored"].shape == (n_layers, ex.n_prompt) and t["p_corrupt"] < t["p_clean"]
    # positions before the subject are untouched by the noise: restoring them changes nothing
    assert np.allclose(t["restored"][:, : ex.span[0]], t["p_corrupt"], atol=1e-6)
    # the last layer's output at a prompt position other than the last one reaches no answer token
    assert np.allclose(t["restored"][-1, : ex.n_prompt - 1], t["p_corrupt"], atol=1e-6)
    # independent computation of one cell: the same noise, layer 0's clean output pasted at the last subject token
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor(ex.ids)[None]
    with torch.no_grad():
        clean = []
        h = decoder_layers(target)[0].register_forward_hook(lambda m, i, o: clean.append(o[0] if isinstance(o, tuple) else o))
        target(input_ids=ids)
        h.remove()
        emb = target.get_input_embeddings()(ids).expand(2, -1, -1).clone()
        emb[:, ex.span[0] : ex.span[1]] += torch.randn((2, ex.span[1] - ex.span[0], emb.shape[-1]), generator=g) * 0.2
        pos = ex.span[1] - 1

        def paste(m, i, o):
            x = (o[0] if isinstance(o, tuple) else o).clone()
            x[:, pos] = clean[0][0, pos]
            return (x, *o[1:]) if isinstance(o, tuple) else x

        h = decoder_layers(target)[0].register_forward_hook(paste)
        logits = target(inputs_embeds=emb).logits
        h.remove()
    labels = torch.tensor(ex.labels)
    logp = torch.log_softmax(logits[:, :-1], -1)
    keep = labels[1:] != -100
    p = logp[:, keep].gather(-1, labels[1:][keep].expand(2, -1)[..., None])[..., 0].mean(-1).exp().mean()
    assert float(p) == pytest.approx(t["restored"][0, pos], rel=1e-5)


def test_position_classes():
    # prompt of 8 tokens, subject at [2, 5)
    assert [CATEGORIES[category(t, (2, 5), 8)] for t in range(8)] == [
        "before subject", "before subject", "first subject token", "middle subject tokens", "last subject token",
        "first subsequent token", "further tokens", "last token"]


def test_layer_constrained_traces_then_trains_only_the_chosen_layers(causal_lm_task, target):
    before = copy.deepcopy(target)
    out = run("layer_constrained", {"params": {"steps": 4, "lr": 1e-3}, "max_prompts": 3, "samples": 2}, target, causal_lm_task)
    tracing = out.info["tracing"]
    n_layers = len(decoder_layers(target))
    assert np.array(tracing["matrix"], dtype=float).shape == (n_layers, len(CATEGORIES)) and tracing["n_prompts"] == 3
    scores = tracing["layer_scores"]
    assert out.info["layers"] == [int(np.argmax(scores))]
    chosen = f"layers.{out.info['layers'][0]}."
    for n, p in target.named_parameters():
        assert torch.equal(p, dict(before.named_parameters())[n]) != (chosen in n), n
    # the same seed traces the same prompts with the same noise
    again = run("layer_constrained", {"params": {"steps": 4, "lr": 1e-3}, "max_prompts": 3, "samples": 2}, copy.deepcopy(before), causal_lm_task)
    assert again.info["tracing"] == tracing
    with pytest.raises(ConfigError, match="restrict_to is set by the tracing"):
        build_method("layer_constrained", {"params": {"restrict_to": "all"}})
    with pytest.raises(ConfigError, match="not a gradient method"):
        build_method("layer_constrained", {"method": "rocr"})
    with pytest.raises(ConfigError, match="top_layers 3 exceeds"):
        run("layer_constrained", {"top_layers": 3}, copy.deepcopy(before), causal_lm_task)
    with pytest.raises(ConfigError, match="samples must be an integer"):
        build_method("layer_constrained", {"samples": 0})


def test_report_plots_the_tracing_heatmap(causal_lm_task, target, tmp_path):
    from unlearnkit.report import plots

    out = run("layer_constrained", {"method": "npo", "params": {"steps": 2, "lr": 1e-3}, "max_prompts": 2, "samples": 1}, target, causal_lm_task)
    png = plots.tracing_heatmap(out.info["tracing"]["matrix"], out.info["tracing"]["categories"], "t")
    import base64

    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    from unlearnkit.report.html import _tracing

    row = type("Row", (), {"method": "layer_constrained", "runs": [{"unlearn_info": out.info}]})()
    other = type("Row", (), {"method": "npo", "runs": [{"unlearn_info": {}}]})()
    html = _tracing(type("S", (), {"rows": [other, row]})())
    assert len(html) == 1 and "Causal tracing: layer_constrained" in html[0] and "data:image/png;base64," in html[0]
