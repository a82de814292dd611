"""The ledger's command line: keygen → forget → ledger ls/show → verify → tamper → verify fails; exit codes; two
concurrent ``forget`` processes serialised; kill -9 at random points during ``forget``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from unlearnkit.cli import main
from unlearnkit.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "unlearnkit.cli", *args]


def test_worked_example_through_the_cli(model_dir, tmp_path, capsys):
    key, ledger, ids = tmp_path / "operator", tmp_path / "ledger.sqlite", tmp_path / "ids.txt"
    assert main(["keygen", str(key)]) == 0
    ids.write_text("# customer 4711\n17\n42\n")
    args = ["forget", "--ledger", str(ledger), "--model", str(model_dir), "--ids", str(ids), "--method", "finetune",
            "--params", '{"epochs": 1}', "--requester", "dpo@example.com", "--request-id", "4711", "--key", str(key), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    cert = Path(out.split("certificate: ")[1].strip())
    assert cert.is_file() and json.loads(cert.read_text())["request"]["requester"] == "dpo@example.com"
    assert main(args) == 0  # idempotent: the same certificate, no second entry
    assert str(cert) in capsys.readouterr().out
    assert main(["ledger", "ls", "--ledger", str(ledger)]) == 0
    listing = capsys.readouterr().out
    assert "4711" in listing and "complete" in listing and len(listing.strip().splitlines()) == 1
    assert main(["ledger", "show", "4711", "--ledger", str(ledger)]) == 0
    assert json.loads(capsys.readouterr().out)["entry_hash"] == cert.stem
    assert main(["verify", str(cert), "--public-key", f"{key}.pub"]) == 0  # the ledger is found from the certificate's place
    assert "VERIFIED" in capsys.readouterr().out
    text = cert.read_text()
    cert.write_text(text.replace("dpo@example.com", "someone@else.org"))
    assert main(["verify", str(cert)]) == 1
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "request.requester" in out
    cert.write_text(text)
    assert main(["verify", "--ledger", str(ledger), "--deep"]) == 0
    assert "bit-identical" in capsys.readouterr().out


def test_cli_errors_exit_2_and_record_nothing(model_dir, tmp_path, capsys):
    ledger, ids = tmp_path / "ledger.sqlite", tmp_path / "ids.txt"
    ids.write_text("")
    assert main(["forget", "--ledger", str(ledger), "--model", str(model_dir), "--ids", str(ids), "--method", "finetune"]) == 2
    assert "holds no ids" in capsys.readouterr().err
    ids.write_text("1\n")
    assert main(["forget", "--ledger", str(ledger), "--model", str(model_dir), "--ids", str(ids), "--method", "finetune",
                 "--params", "{epochs: 1}"]) == 2
    assert "--params must be a JSON object" in capsys.readouterr().err
    assert main(["forget", "--ledger", str(ledger), "--model", str(tmp_path), "--ids", str(ids), "--method", "finetune"]) == 2
    assert "no model.json" in capsys.readouterr().err
    assert main(["verify", str(ids)]) == 2
    assert "not inside a ledger" in capsys.readouterr().err
    with Ledger(ledger) as opened:
        assert opened.entries() == []


def test_two_concurrent_forget_processes_are_serialised(model_dir, tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    procs = []
    for name, ids in (("a", "[10, 11]"), ("b", "[20, 21]")):
        (tmp_path / f"{name}.json").write_text(ids)
        procs.append(subprocess.Popen(_cli("forget", "--ledger", str(ledger), "--model", str(model_dir), "--ids", str(tmp_path / f"{name}.json"),
                                           "--method", "retrain", "--request-id", name, "--no-progress"),
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with Ledger(ledger) as opened:
        first, second = (opened.certificate(i) for i in (1, 2))
        assert {first["request"]["id"], second["request"]["id"]} == {"a", "b"}
        assert second["model"]["before"] == first["model"]["after"]  # the second saw the first's result: never interleaved
        assert second["forget_set"]["n"] == 2 and opened.verify().ok
        last = opened.model_path(second["model"]["after"])
    assert json.loads((last / "model.json").read_text())["excluded_ids"] == [10, 11, 20, 21]


def _invariants(ledger_path: Path) -> int:
    """The ledger opens, every entry is complete (certificate and models on disk, digests matching) and the chain verifies."""
    with Ledger(ledger_path, create=False) as ledger:
        result = ledger.verify()
        assert result.ok, result.text()
        rows = ledger.entries()
        assert all(r["state"] == "complete" for r in rows)
        return len(rows)


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_entries_complete_or_absent(model_dir, tmp_path):
    ledger = tmp_path / "ledger.sqlite"
    rng = np.random.default_rng(20261205)
    base = ["--ledger", str(ledger), "--model", str(model_dir), "--method", "retrain", "--no-progress"]
    # one uninterrupted request first: how long a request takes from process start to exit
    (tmp_path / "ids0.json").write_text("[0]")
    start = time.perf_counter()
    subprocess.run(_cli("forget", *base, "--ids", str(tmp_path / "ids0.json"), "--request-id", "q0"), env=_env(), check=True,
                   capture_output=True, timeout=120)
    full = time.perf_counter() - start
    assert _invariants(ledger) == 1
    kills, orphaned, seen, k = 0, 0, set(), 0
    while kills < 20 and k < 30:  # until 20 processes were killed mid-request (a kill after a request finished does not count)
        k += 1
        ids = [2 * k + 1, 2 * k + 2]
        (tmp_path / f"ids{k}.json").write_text(json.dumps(ids))
        proc = subprocess.Popen(_cli("forget", *base, "--ids", str(tmp_path / f"ids{k}.json"), "--request-id", f"q{k}"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.2, 1.0)) * full)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        n = _invariants(ledger)
        assert n in (k, k + 1)  # this request's entry is either absent or complete
        with Ledger(ledger) as opened:
            found = {p for p in opened.orphans() if p.parent.name in ("models", "certs")}
            orphaned += bool(found - seen)  # killed after its model folder or certificate was written, before its commit
            seen |= found  # resubmitting the request finishes it (or returns it, when it had completed)
            cert = opened.forget(model_dir, ids, method="retrain", request_id=f"q{k}")
            assert cert["seq"] == k + 1 and cert["forget_set"]["n"] == 2
        assert _invariants(ledger) == k + 1
    print(f"kill -9: {kills} of {k} requests killed, {orphaned} of them after writing their model folder or certificate "
          "but before committing")
    assert kills >= 20, f"only {kills} of {k} processes were still running when killed (a request took {full:.1f}s)"
    with Ledger(ledger) as opened:
        last = opened.model_path(opened.certificate(k + 1)["model"]["after"])
        assert len(json.loads((last / "model.json").read_text())["excluded_ids"]) == 2 * k + 1
        assert opened.verify(deep=False).ok


KILL_AT = '''
import os, signal, sys
from unlearnkit.ledger import ledger as L
from unlearnkit.cli import main

point = sys.argv[1]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "staged model":  # the new model copied into staging, not yet renamed to its content address
    real_rename = os.rename
    os.rename = lambda src, dst: die() if "models" in str(dst) and "copy-" in str(src) else real_rename(src, dst)
elif point == "model stored":  # the new model at its content address, no certificate yet
    real_store = L.Ledger._store_dir
    def store(self, folder, digest, staging):
        real_store(self, folder, digest, staging)
        if folder.name == "new-model":
            die()
    L.Ledger._store_dir = store
elif point == "certificate written":  # model and certificate on disk, the entry not committed
    L.Ledger._commit = die
elif point == "inside the transaction":  # the entry inserted, the transaction not committed
    real_commit = L.Ledger._commit
    def commit(self, *args):
        from sqlalchemy import event
        event.listen(self.db.engine, "commit", die)
        real_commit(self, *args)
    L.Ledger._commit = commit
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("point", ["staged model", "model stored", "certificate written", "inside the transaction"])
def test_kill_9_at_each_write_of_a_request(model_dir, tmp_path, point):
    """kill -9 at the worst moments (a random kill rarely lands there): the entry is absent, the chain verifies, the files
    written so far are orphans, and resubmitting the request completes it (reusing the stored model folder)."""
    ledger = tmp_path / "ledger.sqlite"
    (tmp_path / "ids.json").write_text("[8, 9]")
    with Ledger(ledger) as opened:
        opened.forget(model_dir, [1], method="finetune", params={"epochs": 1}, request_id="before")
    args = ["forget", "--ledger", str(ledger), "--model", str(model_dir), "--ids", str(tmp_path / "ids.json"), "--method", "finetune",
            "--params", '{"epochs": 1}', "--request-id", "victim", "--no-progress"]
    done = subprocess.run([sys.executable, "-c", KILL_AT, point, *args], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _invariants(ledger) == 1
    with Ledger(ledger) as opened:
        orphans = {p.parent.name for p in opened.orphans()}
        assert "staging" in orphans
        assert ("models" in orphans) == (point != "staged model")
        assert ("certs" in orphans) == (point in ("certificate written", "inside the transaction"))
        stored = sorted(p.name for p in (opened.files / "models").iterdir())
        cert = opened.forget(model_dir, [8, 9], method="finetune", params={"epochs": 1}, request_id="victim")
        assert cert["seq"] == 2 and opened.verify().ok
        if point != "staged model":  # the deletion is deterministic: the orphaned model folder is the one committed now
            assert sorted(p.name for p in (opened.files / "models").iterdir()) == stored
    assert _invariants(ledger) == 2
