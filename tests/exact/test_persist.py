"""Saving and loading exact models: for SISA, ACU, S3T and DP2Unlearning a loaded model serves the same outputs, live ids
and description, and a deletion after loading equals the same deletion on the model that never left memory (bit for bit
for SISA, S3T and DP on CPU; to 1e-10 for ACU's head); a second round trip keeps the history and the bytes; every damaged,
mismatched or foreign input is refused by name; an interrupted save leaves the previous directory as it was."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch

from unlearnkit.errors import ConfigError, ModelError, TaskError
from unlearnkit.exact import digest, load_exact, save_exact
from unlearnkit.exact import persist as persist_mod
from unlearnkit.io import load_state, save_state
from unlearnkit.methods import build_method
from unlearnkit.models import build_model
from unlearnkit.references import References
from unlearnkit.train import TrainConfig
from unlearnkit.types import Split, TensorData

CFG = TrainConfig(epochs=4, batch_size=64, optimizer="adam", lr=3e-3, schedule="cosine")
PARAMS = {
    "sisa": {"shards": 3, "slices": 2},
    "acu": {"backbone": "random", "buffer": 64},
    "s3t": {"shards": 2, "slices": 2, "rank": 2, "epochs": 1},
    "dp2unlearning": {"dp_epochs": 2, "finetune_epochs": 1},
}


def spec_of(digits, **model):
    return {"model": {"name": "mlp", "params": {"hidden": [32]}, "input_shape": list(digits.input_shape), "n_classes": 10, **model},
            "train": CFG.to_dict(), "dataset": {"name": "digits", "params": {}}, "task": {"modality": "classifier", "n_classes": 10}}


@pytest.fixture(scope="module")
def refs(digits):
    return References(train_config=CFG, model_factory=lambda: build_model("mlp", digits.input_shape, 10, hidden=(32,)))


@pytest.fixture(scope="module")
def built(random_task, refs):
    """One served model per regime (built once; tests work on copies)."""
    if "dp2unlearning" in PARAMS:
        pytest.importorskip("opacus")
    return {name: build_method(name, p).build(random_task, refs, seed=3, device="cpu", progress=False) for name, p in PARAMS.items()}


@pytest.fixture(scope="module")
def saved_sisa(built, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "sisa"
    save_exact(built["sisa"], path, spec=spec_of(digits))
    return path


def outputs(model, split):
    model.eval()
    with torch.no_grad():
        return model(split.data.x)


def request(model, name, task):
    """Ids to delete: for SISA one example of shard 0's first slice (the shard restarts from the factory's fresh
    initialisation) and one of shard 1's last slice (from a checkpoint); else three forget examples."""
    if name == "sisa":
        return np.array([model.data.ids[model.parts[0][0][0]], model.data.ids[model.parts[1][-1][0]]])
    return task.forget.ids[:3]


def assert_same_deletion(name, a, b, ra, rb):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    if name == "acu":
        assert max(float((sa[k].double() - sb[k].double()).abs().max()) for k in ("R", "W")) <= 1e-10
        assert all(torch.equal(sa[k], sb[k]) for k in sa if k not in ("R", "W"))
    else:
        assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]
    ta, tb = dict(ra.touched), dict(rb.touched)
    if name == "dp2unlearning":  # the fine-tune's wall time differs; its work does not
        fa, fb = ta.pop("finetune"), tb.pop("finetune")
        assert (fa["steps"], fa["example_passes"]) == (fb["steps"], fb["example_passes"])
    assert ta == tb
    if name == "sisa":
        assert all(torch.equal(a.checkpoints[k][r][n], b.checkpoints[k][r][n]) for k in range(len(a.parts)) for r in a.checkpoints[k]
                   for n in a.checkpoints[k][r])
    if name == "s3t":
        assert torch.equal(a.valid, b.valid) and rb.touched["deactivated"] > 0


@pytest.mark.parametrize("name", list(PARAMS))
def test_round_trip_serves_and_deletes_as_the_model_in_memory(name, built, random_task, digits, tmp_path):
    model = copy.deepcopy(built[name])
    spec = spec_of(digits)
    first = save_exact(model, tmp_path / "m", spec=spec)
    assert first == digest(tmp_path / "m") and sorted(os.listdir(tmp_path)) == ["m"]  # no temporary or backup folder left
    loaded = load_exact(tmp_path / "m")  # the training data comes from the spec's dataset (digits' train split)
    assert type(loaded) is type(model) and loaded is not model
    assert torch.equal(outputs(loaded, random_task.test), outputs(model, random_task.test))
    assert np.array_equal(loaded.live_ids(), model.live_ids()) and loaded.describe() == model.describe()
    assert loaded.train_fingerprint == random_task.train.fingerprint

    ids = request(model, name, random_task)
    ra, rb = model.delete(ids), loaded.delete(ids)
    assert_same_deletion(name, model, loaded, ra, rb)
    assert torch.equal(outputs(loaded, random_task.test), outputs(model, random_task.test))

    # second round trip, after the deletion: the history comes back, and saving what was loaded gives the same bytes
    after = save_exact(loaded, tmp_path / "m", spec=spec)
    assert after != first
    again = load_exact(tmp_path / "m", data=random_task.train)
    assert [r.to_json() for r in again.history] == [r.to_json() for r in loaded.history] and len(again.history) == 1
    assert again.history[0].ids == tuple(int(i) for i in sorted(ids)) and again.describe() == loaded.describe()
    assert not np.isin(ids, again.live_ids()).any()
    assert save_exact(again, tmp_path / "m2", spec=spec) == after
    with pytest.raises(TaskError, match="already deleted"):
        again.delete(ids)


def test_acu_additions_survive_a_round_trip(built, random_task, digits, tmp_path):
    model = copy.deepcopy(built["acu"])
    extra = digits.test.subset(np.arange(20), "extra")  # ids outside the training data; they are in no dataset's train split
    model.add(extra)
    save_exact(model, tmp_path / "m", spec=spec_of(digits))
    loaded = load_exact(tmp_path / "m")
    assert len(loaded.data) == len(random_task.train) + 20 and loaded.describe() == model.describe()
    assert torch.equal(outputs(loaded, random_task.test), outputs(model, random_task.test))
    ids = extra.ids[:4]  # deleting added examples needs their stored features
    ra, rb = model.delete(ids), loaded.delete(ids)
    assert_same_deletion("acu", model, loaded, ra, rb)


# ------------------------------------------------------------------------------------------------ the spec
def test_a_spec_that_does_not_rebuild_the_model_is_refused_before_writing(built, digits, tmp_path):
    model = built["sisa"]
    with pytest.raises(ConfigError, match="shard factory"):  # the method built its shards through References.fresh_model
        save_exact(model, tmp_path / "m", spec=spec_of(digits, init="direct"))
    with pytest.raises(ConfigError, match="does not fit"):
        save_exact(model, tmp_path / "m", spec={**spec_of(digits), "model": {**spec_of(digits)["model"], "params": {"hidden": [16]}}})
    with pytest.raises(ConfigError, match="model 'name'"):
        save_exact(model, tmp_path / "m", spec={"train": CFG.to_dict()})
    with pytest.raises(ConfigError, match="unknown spec key"):
        save_exact(model, tmp_path / "m", spec={**spec_of(digits), "extra": 1})
    with pytest.raises(ConfigError, match="ClassifierAdapter"):
        save_exact(model, tmp_path / "m", spec={**spec_of(digits), "task": {"modality": "classifier", "n_classes": 9}})
    assert not (tmp_path / "m").exists() and os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------ bad input
def copy_of(saved, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(saved, out)
    return out


def rewrite(path, change):
    """Apply ``change`` to the manifest and make it self-consistent again (files' sha256, checksum): what a forger or a
    buggy writer would produce, so that the check under test is the one that fires."""
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    manifest["files"] = {rel: persist_mod._sha256(f) for rel, f in persist_mod._files(path) if rel != "manifest.json"}
    manifest["checksum"] = persist_mod._checksum(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_truncated_weights_are_refused(saved_sisa, tmp_path):
    path = copy_of(saved_sisa, tmp_path)
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="weights.safetensors is damaged"):
        load_exact(path)
    rewrite(path, lambda m: None)  # even with a manifest that agrees, the file does not parse
    with pytest.raises(ModelError, match="Cannot read .*weights.safetensors as safetensors"):
        load_exact(path)


def test_a_flipped_byte_in_the_manifest_is_named(saved_sisa, tmp_path):
    path = copy_of(saved_sisa, tmp_path)
    raw = bytearray((path / "manifest.json").read_bytes())
    raw[0] ^= 0x01  # "{" becomes "z"
    (path / "manifest.json").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"manifest.json is not valid JSON \(JSONDecodeError"):
        load_exact(path)
    raw[0] ^= 0x01
    at = raw.index(b'"aggregation": "vote"') + len('"aggregation": "v')
    raw[at] ^= 0x01  # "vote" becomes "vnte": still JSON, no longer what was written
    (path / "manifest.json").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="was modified after it was written"):
        load_exact(path)


def test_training_data_that_differs_is_refused(saved_sisa, digits, random_task, tmp_path):
    x = digits.train.data.x.clone()
    x[int(random_task.retain.ids[7]), 5] += 1.0  # one pixel of one training example
    changed = Split.create("train", TensorData(x, digits.train.data.y), digits.train.ids)
    with pytest.raises(TaskError, match="differs from the data the model was trained on"):
        load_exact(saved_sisa, data=changed)
    with pytest.raises(TaskError, match=r"lacks \d+ of the model's 1348 training ids"):
        load_exact(saved_sisa, data=random_task.forget)
    path = copy_of(saved_sisa, tmp_path)
    rewrite(path, lambda m: m["spec"].update(dataset={"name": "diabetes", "params": {}}))
    with pytest.raises(TaskError, match="lacks|differs"):
        load_exact(path)
    assert load_exact(saved_sisa, data=digits.train).describe()["live"] == len(random_task.train)  # the source's split, reordered


def test_a_missing_checkpoint_is_refused(saved_sisa, tmp_path):
    path = copy_of(saved_sisa, tmp_path)
    (path / "checkpoints" / "shard001" / "slice002.safetensors").unlink()
    with pytest.raises(ModelError, match="checkpoints/shard001/slice002.safetensors is missing"):
        load_exact(path)
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match="slice002.safetensors"):
        load_exact(path)


def test_unknown_versions_classes_and_mismatched_or_non_finite_weights_are_refused(saved_sisa, tmp_path):
    path = copy_of(saved_sisa, tmp_path)
    rewrite(path, lambda m: m.update(format_version=99))
    with pytest.raises(ModelError, match="format version 99; this unlearnkit .* reads version 1"):
        load_exact(path)
    rewrite(path, lambda m: m.update(format_version=1, **{"class": "Mystery"}))
    with pytest.raises(ModelError, match="model class 'Mystery'"):
        load_exact(path)
    rewrite(path, lambda m: m.update(**{"class": "AcuModel"}))
    with pytest.raises(ModelError, match="regime 'sisa'"):
        load_exact(path)
    rewrite(path, lambda m: m.update(**{"class": "SisaModel"}))
    assert load_exact(path).regime == "sisa"  # the copy is sound again
    rewrite(path, lambda m: m["settings"].pop("slices"))
    with pytest.raises(ModelError, match="malformed \\(KeyError: 'slices'\\)"):
        load_exact(path)
    rewrite(path, lambda m: m["settings"].update(slices=2))

    state = load_state(path / "weights.safetensors")
    name = next(k for k, v in state.items() if v.is_floating_point())
    nan = {**state, name: state[name].clone().fill_(float("nan"))}
    save_state(path / "weights.safetensors", nan)
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match=f"{name}.*NaN"):
        load_exact(path)
    save_state(path / "weights.safetensors", {**state, name: state[name].clone().fill_(float("-inf"))})
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match=f"{name}.*NaN/inf"):
        load_exact(path)
    save_state(path / "weights.safetensors", {k: v for k, v in state.items() if k != name})
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match=f"does not fit the model: missing \\['{name}'\\]"):
        load_exact(path)
    save_state(path / "weights.safetensors", {**state, name: state[name][:1]})
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match=f"'{name}' is torch.float32"):
        load_exact(path)


def test_a_checkpoint_of_other_weights_is_refused(saved_sisa, tmp_path):
    path = copy_of(saved_sisa, tmp_path)
    shutil.copy(path / "checkpoints" / "shard000" / "slice001.safetensors", path / "checkpoints" / "shard000" / "slice002.safetensors")
    rewrite(path, lambda m: None)
    with pytest.raises(ModelError, match="shard 0's weights differ from its checkpoint"):
        load_exact(path)


# ------------------------------------------------------------------------------------------------ atomicity and digest
@pytest.mark.parametrize("which", ["first", "second"])
def test_an_interrupted_save_leaves_the_previous_directory_intact(which, built, random_task, digits, tmp_path, monkeypatch):
    spec = spec_of(digits)
    before = save_exact(built["sisa"], tmp_path / "m", spec=spec)
    changed = copy.deepcopy(built["sisa"])
    changed.delete(random_task.forget.ids[:2])
    real = os.replace

    def failing(src, dst):  # the rename that moves the old directory aside, or the one that puts the new one in place
        moving_old = str(src) == str(tmp_path / "m")
        moving_new = ".m.tmp-" in str(src)
        if (which == "first" and moving_old) or (which == "second" and moving_new):
            raise OSError("simulated crash during the swap")
        return real(src, dst)

    monkeypatch.setattr(persist_mod.os, "replace", failing)
    with pytest.raises(OSError, match="simulated crash"):
        save_exact(changed, tmp_path / "m", spec=spec)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m"] and digest(tmp_path / "m") == before
    assert load_exact(tmp_path / "m").describe() == built["sisa"].describe()


def test_a_crash_between_the_renames_is_recovered(built, random_task, digits, tmp_path):
    spec = spec_of(digits)
    before = save_exact(built["sisa"], tmp_path / "m", spec=spec)
    os.replace(tmp_path / "m", tmp_path / ".m.previous")  # the state a kill -9 between the two renames leaves
    assert digest(tmp_path / "m") == before and load_exact(tmp_path / "m").describe() == built["sisa"].describe()
    changed = copy.deepcopy(built["sisa"])
    changed.delete(random_task.forget.ids[:1])
    after = save_exact(changed, tmp_path / "m", spec=spec)
    assert sorted(os.listdir(tmp_path)) == ["m"] and after != before and load_exact(tmp_path / "m").describe() == changed.describe()


def test_only_a_saved_model_is_ever_replaced(built, digits, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="not a saved exact model"):
        save_exact(built["sisa"], tmp_path / "m", spec=spec_of(digits))
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["m"]
    with pytest.raises(ModelError, match="No saved exact model"):
        load_exact(tmp_path / "nothing")
    with pytest.raises(ModelError, match="manifest.json is missing"):
        load_exact(tmp_path / "m")


def test_the_digest_covers_every_file_in_a_canonical_order(saved_sisa, tmp_path):
    import hashlib

    path = copy_of(saved_sisa, tmp_path)
    d = digest(path)
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256(b"unlearnkit.exact.digest/1\n")
    for rel, p in files:  # recomputed here from the definition
        h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    assert d == h.hexdigest() == digest(saved_sisa)
    ckpt = path / "checkpoints" / "shard002" / "slice001.safetensors"
    raw = bytearray(ckpt.read_bytes())
    raw[-1] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    assert digest(path) != d
    raw[-1] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    (path / "extra.txt").write_text("")
    assert digest(path) != d


# ------------------------------------------------------------------------------------------------ causal LM
@pytest.mark.parametrize("name", ["s3t", "dp2unlearning"])
def test_causal_lm_models_round_trip(name, causal_lm_task, profiles_source, tmp_path):
    """S3T's causal-LM class and DP2Unlearning's tiny Llama come back from the spec (tiny_llama, profiles data): same
    logits, and a profile's deletion after loading equals the same deletion in memory."""
    from tests.conftest import tiny_llama_factory

    if name == "dp2unlearning":
        pytest.importorskip("opacus")
    s = profiles_source
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine")
    lm_refs = References(train_config=cfg, model_factory=tiny_llama_factory(s))
    params = {"s3t": {"slices": 2, "rank": 2, "epochs": 1}, "dp2unlearning": {"dp_epochs": 1, "finetune_epochs": 1}}[name]
    model = build_method(name, params).build(causal_lm_task, lm_refs, seed=1, device="cpu", progress=False)
    spec = {"model": {"name": "tiny_llama", "params": {}, "input_shape": list(s.input_shape), "n_classes": s.n_outputs},
            "train": cfg.to_dict(), "dataset": {"name": "profiles", "params": {"scale": "tiny"}}, "task": {"modality": "causal_lm"}}
    save_exact(model, tmp_path / "m", spec=spec)
    loaded = load_exact(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.describe() == model.describe()
    batch = next(causal_lm_task.test.batches(4))
    with torch.no_grad():
        def logits(m):
            return m(input_ids=batch["x"], attention_mask=batch["attention_mask"]).logits
        assert torch.equal(logits(model.eval()), logits(loaded.eval()))
    ids = causal_lm_task.forget.ids[:2]
    model.delete(ids)
    loaded.delete(ids)
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
