"""Integrity of a finished store: digests verified on reuse, `unlearnkit check [--repair]` against random damage,
and two `unlearnkit run`s of one experiment on one store at once computing each entry once."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from unlearnkit.cli import main
from unlearnkit.experiment import Experiment
from unlearnkit.runs import Store
from unlearnkit.runs.runner import run_experiment
from unlearnkit.runs.store import StoreWarning, _HOST
from tests.runs.test_runner import SPEC

CHEAP = {**SPEC, "name": "cheap", "methods": [{"name": "finetune", "params": {"steps": 10}}, {"name": "ssd"}]}
ROOT = Path(__file__).resolve().parents[2]


def cli_run(exp_file: Path, store: Path) -> int:
    return main(["run", str(exp_file), "--store", str(store), "--device", "cpu", "--no-progress"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished store of CHEAP, written by `unlearnkit run` (with its report), and its experiment file."""
    root = tmp_path_factory.mktemp("finished")
    exp_file = root / "cheap.yaml"
    exp_file.write_text(yaml.safe_dump(CHEAP))
    assert cli_run(exp_file, root / "store") == 0
    return root / "store", exp_file


def numbers(store: Path) -> dict[str, tuple]:
    """What must not change when damage is repaired and recomputed: every run's results and verdict, and the digest of
    every weights file (retraining the same way gives the same bytes)."""
    out = {}
    for folder in sorted([*(store / "runs").iterdir(), *(store / "refs").iterdir()]):
        if folder.name.startswith("."):
            continue
        digests = json.loads((folder / ".complete").read_text())
        weights = {f: d for f, d in digests.items() if f.endswith(".safetensors")}
        record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        out[folder.name] = (record.get("results"), record.get("verdict"), weights)
    return out


def copy_of(finished, tmp_path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(finished[0], store)
    return store


def test_check_on_a_clean_store_exits_0(finished, tmp_path, capsys):
    store = copy_of(finished, tmp_path)
    assert main(["check", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "Checked" in out and "3 runs, 3 references, 1 experiment" in out and "No problems found." in out
    assert main(["check", "--store", str(tmp_path / "nowhere")]) == 2
    assert "No run store at" in capsys.readouterr().err


def test_corrupt_model_is_recomputed_with_the_same_numbers(finished, tmp_path):
    store_dir = copy_of(finished, tmp_path)
    before = numbers(store_dir)
    exp = Experiment.from_dict(CHEAP)
    record = Store(store_dir).load_experiment(exp.exp_id())
    finetune = record["tasks"][0]["runs"]["finetune"][0]
    weights = store_dir / "runs" / finetune / "model.safetensors"
    weights.write_bytes(random.Random(0).randbytes(weights.stat().st_size))  # random bytes of the same size
    reference = next(p for p in (store_dir / "refs").iterdir() if not p.name.startswith("."))
    torch.save({"w": torch.zeros(3)}, reference / "model.safetensors")  # a pickle renamed to it: never loaded
    logs: list[str] = []
    with pytest.warns(StoreWarning) as warned:
        again = run_experiment(exp, Store(store_dir), device="cpu", progress=False, log=logs.append)
    messages = [str(w.message) for w in warned]
    assert any(f"run {finetune}: {weights} does not match" in m for m in messages)
    assert any(f"reference model {reference.name}: {reference / 'model.safetensors'} does not match" in m for m in messages)
    assert again["runs"] == record["runs"]
    assert sum("cached run" in line for line in logs) == 1  # ssd reused; finetune recomputed
    assert numbers(store_dir) == before


def damage(store: Path, seed: int) -> dict[str, list[str]]:
    """Random (seeded) damage of each kind to different entries of a finished store; returns what `check` must list
    under each heading."""
    rng = random.Random(seed)
    runs = sorted(p for p in (store / "runs").iterdir() if not p.name.startswith("."))
    refs = sorted(p for p in (store / "refs").iterdir() if not p.name.startswith("."))
    exp_dir = next((store / "experiments").iterdir())
    truncated, scrambled, gone = rng.sample(runs, 3)
    ref = rng.choice(refs)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: rng.randrange(1, weights.stat().st_size)])
    victim = rng.choice(sorted(p for p in scrambled.rglob("*") if p.is_file() and p.name != ".complete"))
    victim.write_bytes(rng.randbytes(victim.stat().st_size))
    torch.save({"w": torch.zeros(2)}, ref / "model.safetensors")  # a pickle renamed to the weights file
    shutil.rmtree(gone)
    (exp_dir / "report.html").unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = json.loads((exp_dir / "experiment.json").read_text())
    killed.update(exp_id="cheap-killed", status="running", writer={"host": _HOST, "pid": dead.pid})  # like a SIGKILLed run
    (store / "experiments" / "cheap-killed").mkdir()
    (store / "experiments" / "cheap-killed" / "experiment.json").write_text(json.dumps(killed))
    tmp = store / "refs" / f".tmp-{ref.name}@{_HOST}@{dead.pid}@1"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    return {
        "corrupt": [f"run {truncated.name}", f"run {scrambled.name}", f"reference {ref.name}"],
        "temporary folders": [tmp.name],
        "index rows whose directory is gone": [f"run {gone.name}"],
        "directories missing from the index": ["experiment cheap-killed"],
        "marked running": ["experiment cheap-killed"],
        "marked complete whose runs are gone": [f"experiment {exp_dir.name}"],
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_store_is_checked_repaired_and_recomputed(finished, tmp_path, capsys, seed):
    store = copy_of(finished, tmp_path)
    before = numbers(store)
    expected = damage(store, seed)
    assert main(["check", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    sections = out.split("\n\n")
    for heading, names in expected.items():
        section = next(s for s in sections if heading in s.splitlines()[0])
        assert all(name in section for name in names), (heading, section)
    assert f"{sum(map(len, expected.values()))} problem(s) found." in out and "--repair" in out
    assert "report gone" in out  # of the experiment whose runs are gone

    assert main(["check", "--store", str(store), "--repair"]) == 0
    assert "marked experiment cheap-killed interrupted" in capsys.readouterr().out
    assert main(["check", "--store", str(store)]) == 0
    assert Store(store).load_experiment("cheap-killed")["status"] == "interrupted"
    shutil.rmtree(store / "experiments" / "cheap-killed")
    assert main(["ls", "experiments", "--store", str(store)]) == 0
    assert " incomplete " in capsys.readouterr().out
    assert cli_run(finished[1], store) == 0
    assert numbers(store) == before
    assert main(["check", "--store", str(store)]) == 0
    assert "No problems found." in capsys.readouterr().out


def test_a_missing_report_is_rewritten(finished, tmp_path, capsys):
    store = copy_of(finished, tmp_path)
    report = next((store / "experiments").iterdir()) / "report.html"
    report.unlink()
    assert main(["check", "--store", str(store)]) == 1
    assert "reports that were written and are gone: 1" in capsys.readouterr().out
    assert main(["check", "--store", str(store), "--repair"]) == 0
    assert "re-wrote the report" in capsys.readouterr().out and "data:image/png;base64" in report.read_text()


def test_deleted_run_directory_is_not_listed(finished, tmp_path, capsys):
    store = copy_of(finished, tmp_path)
    assert main(["ls", "runs", "--store", str(store)]) == 0
    listed = capsys.readouterr().out.split()
    gone = next(p for p in (store / "runs").iterdir() if not p.name.startswith("."))
    assert gone.name in listed
    shutil.rmtree(gone)
    assert main(["ls", "runs", "--store", str(store)]) == 0
    assert gone.name not in capsys.readouterr().out
    assert main(["ls", "experiments", "--store", str(store)]) == 0
    assert "incomplete   2 runs  (1 run gone)" in capsys.readouterr().out


DRIVER = """
import os, sys, time
from pathlib import Path
import unlearnkit.runs.references as references
from unlearnkit.cli import main
from unlearnkit.runs.store import Store

counter, ready, go, exp_file, store = sys.argv[1:]
train, save_run, save_reference = references.train_reference_job, Store.save_run, Store.save_reference

def note(what):
    with open(counter, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")

def slow_train(job):
    time.sleep(1)  # keeps the first writer busy while the other arrives
    return train(job)

references.train_reference_job = slow_train
Store.save_run = lambda self, record, *a, **k: (note(f"run {record['run_id']}"), save_run(self, record, *a, **k))[1]
Store.save_reference = lambda self, key, *a, **k: (note(f"reference {key}"), save_reference(self, key, *a, **k))[1]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
sys.exit(main(["run", exp_file, "--store", store, "--device", "cpu", "--no-progress"]))
"""


def test_two_writers_on_one_store_compute_each_entry_once(tmp_path):
    exp_file, store, counter, go = tmp_path / "cheap.yaml", tmp_path / "store", tmp_path / "saved.txt", tmp_path / "go"
    exp_file.write_text(yaml.safe_dump(CHEAP))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(counter), str(tmp_path / f"ready{i}"), str(go), str(exp_file), str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    saved = [line.rsplit(" ", 1)[0] for line in counter.read_text().splitlines()]
    assert len(saved) == len(set(saved)) == 6  # 3 references (original, 2 retrained), 3 runs (original, 2 methods): once each
    entries = {f"{kind} {folder.name}" for kind, sub in (("run", "runs"), ("reference", "refs"))
               for folder in (store / sub).iterdir() if not folder.name.startswith(".")}
    assert set(saved) == entries
    assert outs[0][0] == outs[1][0]  # identical tables, verdicts and report path
    assert any("Waiting for process" in err for _, err in outs)  # the second writer waited for the first
    assert main(["check", "--store", str(store)]) == 0
