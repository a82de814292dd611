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


def mlp():
    return build_model("mlp", (4,), 3, hidden=(5,))


def test_only_abandoned_temp_folders_are_cleaned(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from unlearnkit.runs.store import _tmp_name

    Store(tmp_path)
    runs, refs = tmp_path / "runs", tmp_path / "refs"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        mine, child = runs / _tmp_name("r1"), refs / _tmp_name("ens-a", sleeper.pid)  # live writers on this host
        dead = runs / _tmp_name("r2", gone.pid)
        other_host, other_host_old = refs / ".tmp-k@elsewhere_1@123@4", refs / ".tmp-k@elsewhere_1@123@5"
        old_code, old_code_old = runs / ".tmp-x-1-2", runs / ".tmp-y-1-3"  # names from older versions: no host
        folders = [mine, child, dead, other_host, other_host_old, old_code, old_code_old]
        for folder in folders:
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(b"being written")
        two_days_ago = time.time() - 2 * 24 * 3600
        for folder in (other_host_old, old_code_old):
            os.utime(folder, (two_days_ago, two_days_ago))
        Store(tmp_path)  # e.g. `unlearnkit ls` while those writers are busy
        assert [f for f in folders if f.exists()] == [mine, child, other_host, old_code]
        assert (child / "model.safetensors").read_bytes() == b"being written"
    finally:
        sleeper.kill()
        sleeper.wait()
    Store(tmp_path)
    assert not child.exists() and mine.exists()


def test_second_store_opened_mid_write_leaves_the_write_intact(tmp_path, monkeypatch):
    """The reviewer's race: another process opens the store while this one is writing a run."""
    import subprocess
    import sys

    import unlearnkit.runs.store as store_mod

    store, real, fired = Store(tmp_path), store_mod.save_array, []

    def second_process_opens_store(*args, **kw):
        if not fired:
            fired.append(1)
            subprocess.run([sys.executable, "-c", f"from unlearnkit.runs import Store; Store({str(tmp_path)!r})"], check=True)
        real(*args, **kw)

    monkeypatch.setattr(store_mod, "save_array", second_process_opens_store)
    model = mlp()
    store.save_run(record("r1"), model=model, arrays={"a": np.zeros(3), "b": np.ones(3)})
    other = store.load_run_model("r1", mlp())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_incomplete_entries_read_as_missing_and_are_replaced(tmp_path):
    store = Store(tmp_path)
    model = mlp()
    run_dir = tmp_path / "runs" / "r1"
    store.save_run(record("r1"), model=model, arrays={"x": np.zeros(3)})
    (run_dir / "model.safetensors").unlink()
    assert not store.has_run("r1")
    with pytest.raises(StoreError, match="No run 'r1'"):
        store.load_run_model("r1", mlp())
    assert Store(tmp_path).runs() == []  # the index forgets it too
    store.save_run(record("r1"), model=model, arrays={"x": np.zeros(3)})
    assert store.has_run("r1") and [r["run_id"] for r in store.runs()] == ["r1"]
    store.load_run_model("r1", mlp())
    # a run committed by older versions has no completion marker: it needs its record and its weights
    (run_dir / ".complete").unlink()
    assert store.has_run("r1")
    (run_dir / "model.safetensors").unlink()
    assert not store.has_run("r1")
    store.save_run(record("r1"), model=model, arrays={"x": np.zeros(3)})
    assert store.has_run("r1") and (run_dir / ".complete").is_file()

    refs = tmp_path / "refs"
    store.save_models("ens-k", [mlp(), mlp()], {"memberships": np.ones((2, 3), bool)}, {"kind": "shadow"})
    (refs / "ens-k" / "models.safetensors").unlink()
    assert store.load_models("ens-k", mlp) is None  # not a ModelError on every later attempt
    store.save_models("ens-k", [mlp(), mlp()], {"memberships": np.ones((2, 3), bool)}, {"kind": "shadow"})
    models, arrays, meta = store.load_models("ens-k", mlp)
    assert len(models) == 2 and arrays["memberships"].shape == (2, 3) and meta["kind"] == "shadow"
    (refs / "ens-k" / "arrays" / "memberships.npy").unlink()  # any listed file counts, not just the weights
    assert store.load_models("ens-k", mlp) is None

    store.save_reference("ref-k", model, {"kind": "retrain"})
    (refs / "ref-k" / "model.safetensors").unlink()
    assert store.load_reference("ref-k", mlp) is None
    store.save_reference("ref-k", model, {"kind": "retrain"})
    assert store.load_reference("ref-k", mlp)[1] == {"kind": "retrain"}
    assert [p.name for p in refs.iterdir() if p.name.startswith(".")] == []  # the partial entries moved aside are gone


@pytest.mark.parametrize("what", ["run", "models", "reference"])
def test_temp_folder_vanishing_mid_write_fails_and_commits_nothing(tmp_path, monkeypatch, what):
    import shutil
    from pathlib import Path

    import unlearnkit.runs.store as store_mod

    store, real = Store(tmp_path), store_mod.save_state

    def save_then_folder_vanishes(path, *args, **kw):
        real(path, *args, **kw)
        shutil.rmtree(Path(path).parent)  # as another process's cleanup (older versions) did

    monkeypatch.setattr(store_mod, "save_state", save_then_folder_vanishes)
    with pytest.raises(StoreError, match=r"temporary folder .*\.tmp-.* vanished"):
        if what == "run":
            store.save_run(record("r1"), model=mlp(), arrays={"x": np.zeros(3)})
        elif what == "models":
            store.save_models("ens-k", [mlp()], {"memberships": np.ones((1, 3), bool)}, {})
        else:
            store.save_reference("ref-k", mlp(), {})
    monkeypatch.undo()
    assert list((tmp_path / "runs").iterdir()) == [] and list((tmp_path / "refs").iterdir()) == []
    assert not store.has_run("r1") and store.load_models("ens-k", mlp) is None and store.load_reference("ref-k", mlp) is None


def test_atomic_write_can_refuse_to_create_folders(tmp_path):
    from unlearnkit.io import write_json

    with pytest.raises(FileNotFoundError, match="gone"):
        write_json(tmp_path / "gone" / "meta.json", {}, make_parents=False)
    assert not (tmp_path / "gone").exists()
    write_json(tmp_path / "made" / "meta.json", {})  # the default still creates the folder
    assert (tmp_path / "made" / "meta.json").is_file()


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


def test_every_file_is_digested_and_checked_on_reuse(tmp_path):
    import hashlib
    import json
    import warnings

    from unlearnkit.runs.store import StoreWarning

    store = Store(tmp_path)
    run_dir, refs = tmp_path / "runs" / "r1", tmp_path / "refs"
    store.save_run(record("r1"), model=mlp(), arrays={"x": np.zeros(3)})
    manifest = json.loads((run_dir / ".complete").read_text())
    assert set(manifest) == {"run.json", "model.safetensors", "arrays/x.npy"}
    assert all(manifest[f] == hashlib.sha256((run_dir / f).read_bytes()).hexdigest() for f in manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact run is reused silently
        assert store.reusable_run("r1")
    torch.save(mlp().state_dict(), run_dir / "model.safetensors")  # a pickle renamed to the weights file
    assert store.has_run("r1")  # complete: only the digests tell
    with pytest.warns(StoreWarning, match=r"run r1: .*runs/r1/model\.safetensors does not match"):
        assert not store.reusable_run("r1")
    assert not run_dir.exists() and store.runs() == []  # discarded, to be recomputed
    store.release_locks()

    store.save_reference("ref-k", mlp(), {"kind": "retrain"})
    (refs / "ref-k" / "meta.json").write_text('{"kind": "original"}')
    with pytest.warns(StoreWarning, match=r"ref-k/meta\.json"):
        assert store.load_reference("ref-k", mlp) is None
    store.save_models("ens-k", [mlp(), mlp()], {"memberships": np.ones((2, 3), bool)}, {"kind": "shadow"})
    array = refs / "ens-k" / "arrays" / "memberships.npy"
    array.write_bytes(array.read_bytes()[:-1] + b"\x00")
    with pytest.warns(StoreWarning, match=r"model set ens-k: .*memberships\.npy"):
        assert store.load_models("ens-k", mlp) is None
    assert [p.name for p in refs.iterdir() if not p.name.startswith(".")] == []


def test_entries_written_before_digests_stay_usable_unverified(tmp_path):
    """Old completion markers list file names only, older entries have none: reused as before, not treated as corrupt."""
    import json
    import warnings

    from unlearnkit.runs.check import check_store

    store = Store(tmp_path)
    store.save_run(record("listed"), model=mlp())
    store.save_run(record("unmarked"), model=mlp())
    store.save_reference("ref-k", mlp(), {"kind": "retrain"})
    for folder in (tmp_path / "runs" / "listed", tmp_path / "refs" / "ref-k"):
        (folder / ".complete").write_text(json.dumps(sorted(json.loads((folder / ".complete").read_text()))))
    (tmp_path / "runs" / "unmarked" / ".complete").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.reusable_run("listed") and store.reusable_run("unmarked")
        assert store.load_reference("ref-k", mlp)[1] == {"kind": "retrain"}
    result = check_store(Store(tmp_path, tidy=False))
    assert result.problems == [] and result.unverified == 3


def test_listing_checks_the_directories(tmp_path):
    import shutil

    store = Store(tmp_path)
    store.save_run(record("r1"))
    store.save_run(record("r2"))
    store.save_experiment({"exp_id": "e", "name": "e", "status": "complete", "tasks": [{"original_run": "r1"}], "runs": ["r2"],
                           "report": "report.html"})
    (tmp_path / "experiments" / "e" / "report.html").write_text("<html>")
    assert store.experiments()[0]["status"] == "complete"
    shutil.rmtree(tmp_path / "runs" / "r2")  # deleted by hand while the store is open: the index still has it
    assert [r["run_id"] for r in store.runs()] == ["r1"]
    (tmp_path / "experiments" / "e" / "report.html").unlink()
    row = store.experiments()[0]
    assert row["status"] == "incomplete" and row["reasons"] == ["1 run gone", "report gone"]


def _hold_lock(tmp_path, then):
    """A child process that takes run r1's write lock (it is missing), says so, then does ``then``."""
    import subprocess
    import sys

    code = ("import sys, time\nfrom unlearnkit.runs import Store\n"
            f"store = Store({str(tmp_path)!r})\nassert not store.reusable_run('r1')\nprint('held', flush=True)\n{then}\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_writer_waits_for_the_first_and_reuses_its_run(tmp_path, capfd):
    import time

    store = Store(tmp_path)
    child = _hold_lock(tmp_path, "time.sleep(1.5)\nstore.save_run({'run_id': 'r1', 'kind': 'unlearn', 'task': {'name': 't', "
                                 "'fingerprint': 'fp'}, 'method': {'name': 'm'}, 'status': 'complete'})")
    t0 = time.monotonic()
    assert store.reusable_run("r1")  # waited for the child's run instead of computing it
    assert time.monotonic() - t0 > 0.5 and child.wait(timeout=60) == 0
    assert f"Waiting for process {child.pid}, which is writing run r1" in capfd.readouterr().err
    assert not store._held and not list((tmp_path / "runs" / ".locks").iterdir())


def test_a_dead_lock_holder_blocks_nobody(tmp_path):
    import time

    store = Store(tmp_path)
    child = _hold_lock(tmp_path, "time.sleep(60)")
    child.kill()
    child.wait()
    t0 = time.monotonic()
    assert not store.reusable_run("r1") and store._held  # missing, and now ours to write
    assert time.monotonic() - t0 < 5
    store.save_run(record("r1"))
    assert not store._held and store.reusable_run("r1")


def test_no_waiting_while_holding_another_lock(tmp_path):
    """Two writers each holding a key the other needs would wait for ever: a writer that holds a lock computes instead."""
    store = Store(tmp_path)
    assert not store.reusable_run("r0")  # this process now holds r0's lock
    child = _hold_lock(tmp_path, "time.sleep(60)")
    try:
        assert not store.reusable_run("r1")  # busy, not waited for
        assert store._held == {tmp_path / "runs" / "r0"}
    finally:
        child.kill()
        child.wait()
    store.release_locks()
    assert not store._held


def test_an_unverified_entry_whose_record_does_not_read_is_recomputed_and_a_file_is_no_store(tmp_path):
    """An entry written before digests with an empty meta.json (or run.json) is discarded with a warning naming the
    file, not a raw JSONDecodeError; a file given as the store's folder is a StoreError naming it."""
    import json

    store = Store(tmp_path / "s")
    store.save_reference("ref-k", mlp(), {"kind": "retrain"})
    store.save_run(record("r1"), model=mlp())
    for folder, name in ((tmp_path / "s" / "refs" / "ref-k", "meta.json"), (tmp_path / "s" / "runs" / "r1", "run.json")):
        (folder / ".complete").write_text(json.dumps(sorted(json.loads((folder / ".complete").read_text()))))  # the old marker
        (folder / name).write_text("")
    with pytest.warns(UserWarning, match=r"meta.json is not valid JSON .*discarded and recomputed"):
        assert store.load_reference("ref-k", mlp) is None
    with pytest.warns(UserWarning, match=r"run.json is not valid JSON"):
        assert not store.reusable_run("r1")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a store folder"):
        Store(tmp_path / "file")
