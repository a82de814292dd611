import numpy as np
import pytest
import torch

from unlearnkit.errors import ModelError, StoreError
from unlearnkit.io import load_model_weights, load_state, save_state
from unlearnkit.models import build_model
from unlearnkit.runs import Store, run_key


def record(run_id, **kw):
    return {"run_id": run_id, "kind": "unlearn", "experiment": "e", "task": {"name": "t", "fingerprint": "fp", "info": {}},
            "method": {"name": "m", "params": {"a": 1}}, "seed": 0, "verdict": {"label": "removed"}, "status": "complete", **kw}


def test_save_load_run_with_arrays_and_model(tmp_path):
    store = Store(tmp_path)
    model = build_model("mlp", (4,), 3, hidden=(5,))
    store.save_run(record("abc123"), model=model, arrays={"accuracy.correct.forget.values": np.array([1.0, 0.0])})
    assert store.has_run("abc123")
    assert store.load_run("abc")["method"]["name"] == "m"  # unique prefix
    assert np.array_equal(store.load_run_array("abc123", "accuracy.correct.forget.values"), [1.0, 0.0])
    other = store.load_run_model("abc123", build_model("mlp", (4,), 3, hidden=(5,)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert [r["run_id"] for r in store.runs(method="m")] == ["abc123"]


def test_index_is_rebuilt_from_run_directories(tmp_path):
    store = Store(tmp_path)
    store.save_run(record("r1"))
    store.save_run(record("r2"))
    (tmp_path / "index.sqlite").unlink()
    assert {r["run_id"] for r in Store(tmp_path).runs()} == {"r1", "r2"}
    import shutil

    shutil.rmtree(tmp_path / "runs" / "r1")
    assert {r["run_id"] for r in Store(tmp_path).runs()} == {"r2"}


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path)
    import unlearnkit.runs.store as store_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        store.save_run(record("r1"), arrays={"x": np.zeros(3)})
    monkeypatch.undo()
    assert not store.has_run("r1")
    assert not list((tmp_path / "runs").iterdir())  # the temp folder is gone
    assert Store(tmp_path).runs() == []


def test_stale_temp_folders_are_cleaned(tmp_path):
    Store(tmp_path)
    (tmp_path / "runs" / ".tmp-x-1-2").mkdir()
    Store(tmp_path)
    assert not (tmp_path / "runs" / ".tmp-x-1-2").exists()


def test_unknown_run(tmp_path):
    with pytest.raises(StoreError, match="No run 'nope'"):
        Store(tmp_path).load_run("nope")


def test_run_key_is_content_hash():
    parts = {"method": {"name": "m", "params": {"lr": 0.1}}, "seed": 0}
    assert run_key(parts) == run_key(dict(parts))
    assert run_key(parts) != run_key({**parts, "seed": 1})
    assert run_key(parts) != run_key({**parts, "method": {"name": "m", "params": {"lr": 0.2}}})


def test_weight_files_are_checked(tmp_path):
    model = build_model("mlp", (4,), 3, hidden=(5,))
    good = tmp_path / "w.safetensors"
    save_state(good, model.state_dict())
    load_model_weights(build_model("mlp", (4,), 3, hidden=(5,)), good)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ModelError, match="only loads safetensors"):
        load_state(corrupt)
    pickled = tmp_path / "model.pt"
    torch.save(model.state_dict(), pickled)  # a pickle: must be refused, never unpickled
    with pytest.raises(ModelError, match="Cannot read"):
        load_state(pickled)
    with pytest.raises(ModelError, match="do not fit the model"):
        load_model_weights(build_model("mlp", (4,), 3, hidden=(6, 6)), good)
    state = model.state_dict()
    state["head.bias"] = torch.tensor([float("nan"), 0.0, 0.0])
    save_state(tmp_path / "nan.safetensors", state)
    with pytest.raises(ModelError, match="NaN/inf"):
        load_model_weights(build_model("mlp", (4,), 3, hidden=(5,)), tmp_path / "nan.safetensors")


def test_atomic_writes_get_normal_file_modes(tmp_path):
    import os
    import stat

    from unlearnkit.io import NEW_FILE_MODE, atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    new = tmp_path / "report.md"
    atomic_write_text(new, "x")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~mask == NEW_FILE_MODE  # not mkstemp's 0600
    kept = tmp_path / "private.md"
    kept.write_text("old")
    kept.chmod(0o600)
    atomic_write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
