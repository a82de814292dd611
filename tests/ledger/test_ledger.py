"""The ledger: certificates, the chain, tampering of any field / a middle entry / a model file, idempotency, lineage,
bad input (each a clear error with no entry), and the deep replay."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest

from unlearnkit.errors import ConfigError, EmptySelection, LedgerError, TaskError, UnknownName
from unlearnkit.ledger import Ledger, chain, load_model_dir
from unlearnkit.ledger.models import dir_digest

from .conftest import CHEAP


def _entries(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, request_id, entry_hash, prev_hash, model_before, model_after, certificate, ids, salt FROM entries "
                          "ORDER BY seq").fetchall()


def test_certificates_chain_and_carry_no_raw_ids(built_ledger, keys):
    rows = _entries(built_ledger / "ledger.sqlite")
    assert [r[1] for r in rows] == ["r1", "r2", "r3"]
    certs = [json.loads(r[6]) for r in rows]
    prev = chain.GENESIS
    for cert, row in zip(certs, rows):
        body = {k: v for k, v in cert.items() if k not in ("entry_hash", "signature")}
        recomputed = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        assert cert["entry_hash"] == recomputed == row[2]
        assert cert["previous_entry_hash"] == prev == row[3]
        prev = recomputed
        ids = json.loads(row[7])
        assert cert["forget_set"] == {**cert["forget_set"], "n": len(ids), "fingerprint": chain.forget_fingerprint(ids, row[8])}
        assert set(cert["forget_set"]) == {"n", "fingerprint", "salt"} and row[8] not in row[6]  # neither the ids nor the salt
        assert json.dumps(sorted(ids)) not in json.dumps(cert) and json.dumps(ids) not in json.dumps(cert)
        assert chain.signature_valid(chain.load_public_key(keys[1]), cert["entry_hash"], cert["signature"])
        assert cert["signer"]["public_key_fingerprint"] == chain.key_fingerprint(chain.load_public_key(keys[1]))
    assert sorted(json.loads(rows[0][7])) == [3, 14, 15]
    # each request applied to what the previous one left (one lineage)
    assert certs[1]["model"]["before"] == certs[0]["model"]["after"] and certs[2]["model"]["before"] == certs[1]["model"]["after"]
    assert certs[0]["guarantee"]["type"] == "exact" and certs[1]["guarantee"]["type"] == "none"
    assert certs[0]["evidence"]["tier"] == "outputs" and 0 <= certs[0]["evidence"]["metrics"]["accuracy"]["test"] <= 1
    assert certs[0]["method"]["name"] == "retrain" and certs[1]["method"]["params"]["epochs"] == 1
    assert certs[0]["code_version"] == "0.1.0" and certs[0]["request"]["time"].endswith("Z")


def test_stored_models_exclude_every_deleted_id(built_ledger):
    with Ledger(built_ledger / "ledger.sqlite") as ledger:
        last = ledger.certificate("r3")["model"]["after"]
        loaded = load_model_dir(ledger.model_path(last))
    assert loaded.spec["excluded_ids"] == sorted([3, 14, 15, 92, 65, 35, 89, 79])
    assert not np.isin([3, 92, 79], loaded.live.ids).any() and len(loaded.live) == len(loaded.source.train) - 8


def test_the_whole_ledger_and_each_certificate_verify(built_ledger, keys):
    with Ledger(built_ledger / "ledger.sqlite") as ledger:
        assert ledger.verify().ok
        for r in ("r1", "r2", "r3"):
            result = ledger.verify(ledger.cert_path(ledger.certificate(r)["entry_hash"]), public_key=keys[1])
            assert result.ok, result.text()
        assert ledger.orphans() == []


FIELDS = [("request.requester", "mallory"), ("request.time", "2020-01-01T00:00:00Z"), ("request.id", "r9"),
          ("forget_set.fingerprint", "sha256:" + "1" * 64), ("forget_set.n", 7), ("model.after", "sha256:" + "2" * 64),
          ("model.before", "sha256:" + "3" * 64), ("method.name", "retrain"), ("method.params", {"epochs": 9}),
          ("guarantee.type", "exact"), ("evidence.tier", "retrain"), ("code_version", "9.9"), ("previous_entry_hash", "4" * 64),
          ("signer.public_key_fingerprint", "ed25519:" + "5" * 64), ("ledger_id", "x"), ("deletion_seconds", 0.0)]


@pytest.mark.parametrize(("field", "value"), FIELDS, ids=[f for f, _ in FIELDS])
def test_tampering_any_field_of_a_certificate_is_named(built_ledger, field, value):
    with Ledger(built_ledger / "ledger.sqlite") as ledger:
        cert = ledger.certificate("r2")
        obj = cert
        *parents, leaf = field.split(".")
        for p in parents:
            obj = obj[p]
        obj[leaf] = value
        result = ledger.verify(cert)
    assert not result.ok
    assert any(f == field or f.startswith(field + ".") for f in result.fields()), result.text()
    assert "entry_hash" in result.fields()  # the content no longer matches its hash


def test_flipped_byte_and_truncated_certificate_fail(ledger_copy):
    with Ledger(ledger_copy) as ledger:
        path = ledger.cert_path(ledger.certificate("r2")["entry_hash"])
        original = path.read_bytes()
        rng = np.random.default_rng(0)
        for pos in rng.choice(len(original), 12, replace=False):
            flipped = bytearray(original)
            flipped[pos] ^= 0x01
            path.write_bytes(bytes(flipped))
            result = ledger.verify(path)
            assert not result.ok, f"flip at byte {pos} went unnoticed"
        path.write_bytes(original[: len(original) // 2])
        result = ledger.verify(path)
        assert result.fields() == {"certificate"} and "truncated" in result.text()
        path.write_bytes(original)
        assert ledger.verify(path).ok


def test_wrong_signing_key(built_ledger, keys, tmp_path):
    _, other, _ = chain.keygen(tmp_path / "other")
    with Ledger(built_ledger / "ledger.sqlite") as ledger:
        result = ledger.verify(ledger.cert_path(ledger.certificate("r1")["entry_hash"]), public_key=other)
        assert "signer" in result.fields() and "wrong signing key" in result.text()
        cert = ledger.certificate("r1")
        cert["signature"] = chain.sign(chain.load_private_key(tmp_path / "other"), cert["entry_hash"])  # re-signed by another key
        assert ledger.verify(cert).fields() == {"signature"}


def _update(path, seq, **cols):
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE entries SET {', '.join(f'{k} = ?' for k in cols)} WHERE seq = ?", (*cols.values(), seq))


def test_tampered_middle_entry_is_named(ledger_copy):
    cert = json.loads(_entries(ledger_copy)[1][6])
    cert["request"]["requester"] = "mallory"
    _update(ledger_copy, 2, certificate=json.dumps(cert))
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify()
    named = {(p.entry, p.field) for p in result.problems}
    assert (2, "request.requester") in named and {e for e, _ in named} == {2}, result.text()  # (its signature fails too)


def test_middle_entry_rewritten_with_a_consistent_hash_breaks_the_next_link(ledger_copy):
    cert = json.loads(_entries(ledger_copy)[1][6])
    cert["request"]["requester"] = "mallory"
    cert["entry_hash"] = chain.entry_hash(cert)
    _update(ledger_copy, 2, certificate=json.dumps(cert), entry_hash=cert["entry_hash"])
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify()
    named = {(p.entry, p.field) for p in result.problems}
    assert (2, "signature") in named and (3, "previous_entry_hash") in named, result.text()


def test_removed_middle_entry_is_named(ledger_copy):
    with sqlite3.connect(ledger_copy) as db:
        db.execute("DELETE FROM entries WHERE seq = 2")
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify()
    assert {(p.entry, p.field) for p in result.problems} >= {(3, "seq"), (3, "previous_entry_hash")}


def test_tampered_model_file_is_named(ledger_copy):
    with Ledger(ledger_copy) as ledger:
        for ref in ("r1", "r3"):
            weights = ledger.model_path(ledger.certificate(ref)["model"]["after"]) / "model.safetensors"
            data = bytearray(weights.read_bytes())
            data[-3] ^= 0x10
            weights.write_bytes(bytes(data))
        result = ledger.verify()
        named = {(p.entry, p.field) for p in result.problems}
        assert named == {(1, "model.after"), (2, "model.before"), (3, "model.after")}, result.text()
        assert "model.safetensors changed" in result.text()
        with pytest.raises(LedgerError, match="no longer matches its digest"):  # nothing is deleted from a damaged model
            ledger.forget(ledger.certificate("r1")["model"]["lineage"], [5], **CHEAP)


def test_idempotent_resubmission_and_reused_id(ledger_copy, model_dir):
    with Ledger(ledger_copy) as ledger:
        before = ledger.certificate("r2")
        again = ledger.forget(model_dir, [65, 92], **CHEAP, requester="bob", request_id="r2")
        assert again == before and len(ledger.entries()) == 3
        with pytest.raises(LedgerError, match="different request"):
            ledger.forget(model_dir, [65, 93], **CHEAP, request_id="r2")
        with pytest.raises(LedgerError, match=r"differs in \['method'\]"):
            ledger.forget(model_dir, [65, 92], method="retrain", request_id="r2")
        assert len(ledger.entries()) == 3


@pytest.mark.parametrize("case", ["unknown method", "unknown parameter", "bad parameter", "unknown ids", "test ids", "empty",
                                  "already deleted", "repeated", "other task", "exact-only on a usual model", "bad tier",
                                  "a guard has no weights"])
def test_bad_requests_are_clear_errors_and_leave_no_entry(ledger_copy, model_dir, tmp_path, case):
    loaded = load_model_dir(model_dir)
    test_id = int(loaded.source.test.ids[0])
    ids_file = tmp_path / "ids.json"
    kwargs = dict(CHEAP)
    ids: object = [5, 6]
    expect: tuple = ()
    if case == "unknown method":
        kwargs, expect = {"method": "gradient_asent"}, (UnknownName, "Did you mean")
    elif case == "unknown parameter":
        kwargs, expect = {"method": "finetune", "params": {"epochz": 1}}, (ConfigError, "epochz")
    elif case == "bad parameter":
        kwargs, expect = {"method": "finetune", "params": {"epochs": -1}}, (ConfigError, "epochs")
    elif case == "unknown ids":
        ids, expect = [5, 10**6], (TaskError, "never in the model's training data")
    elif case == "test ids":
        ids, expect = [test_id], (TaskError, "test examples")
    elif case == "empty":
        ids_file.write_text("# no ids\n")
        ids, expect = ids_file, (EmptySelection, "holds no ids")
    elif case == "already deleted":
        ids, expect = [3, 5], (TaskError, "already deleted")
    elif case == "repeated":
        ids, expect = [5, 5], (TaskError, "repeats")
    elif case == "other task":
        ids_file.write_text(json.dumps({"ids": [5], "train_fingerprint": "f" * 32}))
        ids, expect = ids_file, (TaskError, "different task")
    elif case == "exact-only on a usual model":
        kwargs, expect = {"method": "sisa"}, (ConfigError, "exact-unlearning regime")
    elif case == "bad tier":
        kwargs, expect = {**CHEAP, "evidence": "vibes"}, (ConfigError, "evidence tier")
    elif case == "a guard has no weights":
        kwargs, expect = {"method": "guard"}, (ConfigError, "inference-time guard: it changes no weight, so it has no unlearned weights")
    with Ledger(ledger_copy) as ledger:
        models = sorted(p.name for p in (ledger.files / "models").iterdir())
        with pytest.raises(expect[0], match=expect[1]):
            ledger.forget(model_dir, ids, **kwargs)
        assert len(ledger.entries()) == 3 and ledger.verify().ok
        assert sorted(p.name for p in (ledger.files / "models").iterdir()) == models and ledger.orphans() == []


def test_not_a_ledger(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not a database\n" * 10)
    with pytest.raises(LedgerError, match="not an SQLite database"):
        Ledger(tmp_path / "notes.txt")
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE runs (x INTEGER)")
    with pytest.raises(LedgerError, match="not a ledger"):
        Ledger(tmp_path / "other.sqlite")
    with pytest.raises(LedgerError, match="No ledger"):
        Ledger(tmp_path / "missing.sqlite", create=False)


def test_files_folder_of_another_ledger_is_refused(tmp_path):
    Ledger(tmp_path / "a.sqlite", files=tmp_path / "shared").close()
    with pytest.raises(LedgerError, match="another ledger"):
        Ledger(tmp_path / "b.sqlite", files=tmp_path / "shared")


def test_deep_verification_replays_bit_for_bit(ledger_copy):
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify(ledger.certificate("r2"), deep=True)
        assert result.ok and any("bit-identical" in c for c in result.checked), result.text()
    rows = _entries(ledger_copy)
    request = json.loads(sqlite3.connect(ledger_copy).execute("SELECT request FROM entries WHERE seq = 3").fetchone()[0])
    request["seed"] += 1  # a different seed recorded: the replay no longer reproduces the stored bytes
    _update(ledger_copy, 3, request=json.dumps(request))
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify(json.loads(rows[2][6]), deep=True)
    assert ("model.after" in result.fields()) and "replaying" in result.text()


def test_model_digest_covers_every_file(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    d = dir_digest(copy)
    (copy / "extra.txt").write_text("x")
    assert dir_digest(copy) != d
    (copy / "extra.txt").unlink()
    assert dir_digest(copy) == d


def test_package_imports_without_the_ledger_extras(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['sqlalchemy'] = None; sys.modules['cryptography'] = None\n"
            "import unlearnkit as uk\nfrom unlearnkit.errors import ConfigError\n"
            "try:\n    uk.ledger.Ledger(sys.argv[1])\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "l.sqlite")], capture_output=True, text=True, check=True)
    assert "pip install 'unlearnkit[ledger]'" in out.stdout, out.stderr


def test_verifying_a_certificate_reruns_its_outputs_evidence(ledger_copy):
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify(ledger.certificate("r1"))
        assert result.ok and any("outputs evidence re-run" in c for c in result.checked), result.text()
    # the evidence rewritten (with a consistent hash, unsigned): the numbers no longer match the model
    cert = json.loads(_entries(ledger_copy)[0][6])
    cert["evidence"]["metrics"]["accuracy"]["forget"] = 0.0
    cert["signer"], cert["signature"] = None, None
    cert["entry_hash"] = chain.entry_hash(cert)
    _update(ledger_copy, 1, certificate=json.dumps(cert), entry_hash=cert["entry_hash"])
    with Ledger(ledger_copy) as ledger:
        result = ledger.verify(cert)
    assert (1, "evidence.metrics") in {(p.entry, p.field) for p in result.problems}, result.text()
    assert "accuracy.forget" in result.text()


def _open_ledger(path: str) -> str:
    with Ledger(path) as opened:
        return opened.id


def test_processes_creating_one_ledger_at_once_all_open_the_same_one(tmp_path):
    """Creating a ledger is serialised: without the opening lock, a process that looked while another was creating the
    tables saw a half-made database and called it 'not a ledger'."""
    import multiprocessing

    path = str(tmp_path / "new.sqlite")
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        ids = pool.map(_open_ledger, [path] * 12)
    assert len(set(ids)) == 1
