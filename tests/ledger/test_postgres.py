"""The same ledger code on PostgreSQL: a throwaway server in tmp_path (skipped where initdb is missing), the chain,
idempotency, a tampered middle entry, and the advisory lock that serialises requests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("psycopg")

from unlearnkit.ledger import Ledger  # noqa: E402

from .conftest import CHEAP  # noqa: E402

INITDB = shutil.which("initdb") or "/usr/local/bin/initdb"
PG_CTL = shutil.which("pg_ctl") or "/usr/local/bin/pg_ctl"


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: run it as nobody then (through runuser), or skip."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start a PostgreSQL server")
    return [runuser, "-u", "nobody", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    if not (Path(INITDB).is_file() and Path(PG_CTL).is_file()):
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    prefix = _as_server_user()
    # the server user must reach its folder: pytest's tmp_path is private to root, so a world-traversable one in /tmp
    root = Path(tempfile.mkdtemp(prefix="unlearnkit-pg-")) if prefix else tmp_path_factory.mktemp("pg")
    os.chmod(root, 0o777)
    data, port = root / "data", _free_port()
    for cmd in ([INITDB, "-D", str(data), "-U", "ledger", "--auth=trust", "-E", "UTF8"],
                [PG_CTL, "-D", str(data), "-o", f"-k {root} -p {port} -c listen_addresses=''", "-l", str(root / "log"), "-w", "start"]):
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode:
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"{cmd[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
    try:
        yield f"postgresql://ledger@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*prefix, PG_CTL, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_chain_idempotency_and_tampering_on_postgres(pg_url, model_dir, keys, tmp_path):
    with Ledger(pg_url, key=keys[0], files=tmp_path / "files") as ledger:
        c1 = ledger.forget(model_dir, [1, 2], **CHEAP, request_id="p1")
        c2 = ledger.forget(model_dir, [3], method="retrain", request_id="p2")
        c3 = ledger.forget(model_dir, [4], **CHEAP, request_id="p3")
        assert c2["previous_entry_hash"] == c1["entry_hash"] and c3["previous_entry_hash"] == c2["entry_hash"]
        assert c2["model"]["before"] == c1["model"]["after"]
        assert ledger.forget(model_dir, [3], method="retrain", request_id="p2") == c2 and len(ledger.entries()) == 3
        assert ledger.verify().ok and ledger.verify(ledger.cert_path(c2["entry_hash"]), public_key=keys[1]).ok
        tampered = {**c2, "request": {**c2["request"], "requester": "mallory"}}
        sa = ledger.db.sa
        with ledger.db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE entries SET certificate = :c WHERE seq = 2"), {"c": json.dumps(tampered)})
        named = {(p.entry, p.field) for p in ledger.verify().problems}
        assert (2, "request.requester") in named and {e for e, _ in named} == {2}


def test_advisory_lock_serialises_requests(pg_url, tmp_path):
    with Ledger(pg_url, files=tmp_path / "files") as one, Ledger(pg_url, files=tmp_path / "files") as two:
        probe = "SELECT pg_try_advisory_lock(:k)"
        from unlearnkit.ledger.db import LOCK_KEY

        with one.db.lock("test"):
            with two.db.engine.connect() as conn:
                assert conn.execute(two.db.sa.text(probe), {"k": LOCK_KEY}).scalar() is False
        with two.db.engine.connect() as conn:
            assert conn.execute(two.db.sa.text(probe), {"k": LOCK_KEY}).scalar() is True
            conn.execute(two.db.sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
