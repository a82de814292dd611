"""The deletion ledger: requests in, models and signed certificates out, and verification anyone can run.

``Ledger(path_or_url, key=...)`` opens (or creates) a ledger: an SQLite file (or a PostgreSQL URL) and a files folder
beside it (``<name>-files/``; give ``files=`` for PostgreSQL) holding content-addressed model directories
(``models/<sha256>/``) and certificates (``certs/<entry hash>.json``).

``forget`` carries out one request under the ledger's lock, in this order, so that a process killed at any point
leaves the ledger consistent: (1) the request id is looked up (a completed one returns its certificate: idempotent);
(2) the model is loaded from the lineage's newest version (a lineage starts at the first model a request named; each
request applies to what the previous one left); (3) the method runs; (4) the new model directory is written in a
staging folder and renamed to its digest; (5) the certificate file is written atomically; (6) the entry is inserted in
one transaction. Files of a request killed before (6) are orphans: harmless, listed by ``orphans()``, and reused when
the request is resubmitted (a deletion is deterministic: its seed derives from the request id).

Longer than 60 lines: the request's life cycle and the verification of every entry, field by field, share the
layout and the lookups here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, LedgerError
from ..io import atomic_write_text, canonical_json, write_json
from . import chain
from .db import Database, is_url, sqlite_path
from .models import REQUEST_RECORDS, dir_digest, file_digests, load_model_dir, read_spec, run_spec, save_model_dir
from .request import EVIDENCE_TIERS, check_ids, execute, prepare_method, read_ids

CERT_FORMAT = "unlearnkit.certificate"


@dataclass
class Problem:
    """One failed check: the entry (its number and request id, when known), the field, and what is wrong."""

    field: str
    message: str
    entry: int | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        where = f"entry {self.entry}" + (f" ({self.request_id})" if self.request_id else "") if self.entry is not None else "certificate"
        return f"{where}: {self.field}: {self.message}"


@dataclass
class Verification:
    """What ``Ledger.verify`` found: the problems (none: verified) and what was checked."""

    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fields(self) -> set[str]:
        return {p.field for p in self.problems}

    def text(self) -> str:
        lines = [f"  ok: {c}" for c in self.checked] + [f"  FAILED: {p}" for p in self.problems]
        return "\n".join([("VERIFIED" if self.ok else f"NOT VERIFIED ({len(self.problems)} problem(s))"), *lines])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def diff_fields(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the fields where ``a`` and ``b`` differ (added, removed or changed)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(path)
            else:
                out.extend(diff_fields(a[k], b[k], path))
        return out
    return [] if canonical_json(a) == canonical_json(b) else [prefix or "(whole certificate)"]


class Ledger:
    """A deletion ledger. ``target``: an SQLite file path (created if missing) or a database URL (``postgresql://...``,
    through psycopg); ``key``: an Ed25519 private key file (``unlearnkit keygen``) to sign certificates; ``files``: the
    folder of models and certificates (default ``<sqlite file stem>-files`` beside the file; required for PostgreSQL)."""

    def __init__(self, target: str | Path, *, key: str | Path | None = None, files: str | Path | None = None, create: bool = True) -> None:
        target = str(target)
        self.target = target
        self.db = Database(target, create=create)
        self.id = self.db.info["ledger_id"]
        path = sqlite_path(target)
        if files is not None:
            self.files = Path(files)
        elif path is not None:
            self.files = path.with_name(f"{path.stem}-files")
        else:
            raise ConfigError("A ledger in a database server needs a folder for its models and certificates: pass files=DIR (--files).")
        self._init_files(path)
        self.key = chain.load_private_key(key) if key is not None else None
        self.key_fingerprint = chain.key_fingerprint(self.key.public_key()) if self.key is not None else None

    def _init_files(self, path: Path | None) -> None:
        for sub in ("models", "certs", "staging"):
            (self.files / sub).mkdir(parents=True, exist_ok=True)
        marker = self.files / "ledger.json"
        if marker.is_file():
            try:
                found = json.loads(marker.read_text(encoding="utf-8")).get("ledger_id")
            except (OSError, ValueError, AttributeError):
                found = None
            if found != self.id:
                raise LedgerError(f"{self.files} holds the files of another ledger ({found}); this ledger is {self.id}. Give files=.")
        else:
            where = path.name if path is not None else _without_password(self.target)
            write_json(marker, {"ledger_id": self.id, "ledger": where, "format": "unlearnkit.ledger-files"})

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ reading
    def _rows(self, conn: Any = None) -> list[Any]:
        sa, e = self.db.sa, self.db.entries
        query = sa.select(e).order_by(e.c.seq)
        if conn is not None:
            return list(conn.execute(query))
        with self.db.engine.connect() as c:
            return list(c.execute(query))

    def _row(self, ref: str | int) -> Any:
        """The entry named by its number, request id, or (a unique prefix of) its entry hash."""
        rows = self._rows()
        s = str(ref)
        for r in rows:
            if (s.isdigit() and r.seq == int(s)) or r.request_id == s or r.entry_hash == s:
                return r
        found = [r for r in rows if len(s) >= 6 and r.entry_hash.startswith(s)]
        if len(found) == 1:
            return found[0]
        raise LedgerError(f"No entry {s!r} in ledger {self.target} (give an entry number, a request id or an entry hash).")

    def certificate(self, ref: str | int) -> dict[str, Any]:
        return json.loads(self._row(ref).certificate)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry: number, request id, time, requester, method, guarantee, size, models, and its state ("complete";
        "files missing: ..." when its certificate file or a model folder is gone)."""
        out = []
        for r in self._rows():
            cert = json.loads(r.certificate)
            missing = [what for what, p in (("certificate", self.cert_path(r.entry_hash)), ("model before", self.model_path(r.model_before)),
                                            ("model after", self.model_path(r.model_after))) if not p.exists()]
            out.append({"seq": r.seq, "request_id": r.request_id, "time": cert["request"]["time"], "requester": cert["request"]["requester"],
                        "method": cert["method"]["name"], "guarantee": cert["guarantee"]["type"], "n": cert["forget_set"]["n"],
                        "model_before": r.model_before, "model_after": r.model_after, "entry_hash": r.entry_hash,
                        "state": "complete" if not missing else f"files missing: {', '.join(missing)}"})
        return out

    def model_path(self, digest: str) -> Path:
        return self.files / "models" / _hex(digest)

    def cert_path(self, entry_hash: str) -> Path:
        return self.files / "certs" / f"{entry_hash}.json"

    def orphans(self) -> list[Path]:
        """Files no entry refers to: left by requests killed before their entry was committed (harmless; a resubmitted
        request reuses its model folder), and staging folders of requests that died."""
        rows = self._rows()
        models = {_hex(d) for r in rows for d in (r.model_before, r.model_after)}
        certs = {r.entry_hash for r in rows}
        found = [p for p in sorted((self.files / "models").iterdir()) if p.name not in models]
        found += [p for p in sorted((self.files / "certs").iterdir()) if p.suffix != ".json" or p.stem not in certs]
        return found + sorted((self.files / "staging").iterdir())

    # ------------------------------------------------------------------------------------------------ requests
    def forget(self, model: str | Path, ids: Any, *, method: str, params: dict[str, Any] | None = None, requester: str | None = None,
               request_id: str | None = None, evidence: str = "none", store: Any = None, device: str = "cpu", progress: bool = False,
               train_fingerprint: str | None = None) -> dict[str, Any]:
        """Carry out a deletion request and return its certificate (see the module docstring for the order of writes).

        ``model``: a model directory, a model digest stored in this ledger, or (with ``store``, a run store or its folder)
        a run id; ``ids``: the example ids, or an id file (``request.read_ids``); ``method``/``params``: any registered
        method (an exact regime's model is deleted from by its own regime); ``evidence``: none, outputs or retrain.
        Every bad input is an error before anything is written."""
        from ..exact.base import ids_fingerprint
        from ..methods import describe_method
        from ..seeding import derive_seed

        built = prepare_method(method, params)
        if evidence not in EVIDENCE_TIERS:
            raise ConfigError(f"Unknown evidence tier {evidence!r}; choose one of {list(EVIDENCE_TIERS)}.")
        if isinstance(ids, (str, Path)):
            ids, named = read_ids(ids)
            train_fingerprint = train_fingerprint or named
        ids = np.asarray(ids)
        if ids.size == 0:
            raise check_empty()
        if requester is not None and not isinstance(requester, str):
            raise ConfigError(f"requester must be a string, got {requester!r}.")
        if request_id is not None and not (isinstance(request_id, str) and 0 < len(request_id) <= 200):
            raise ConfigError(f"A request id must be a non-empty string of at most 200 characters, got {request_id!r}.")
        staging = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.files / "staging"))
        try:
            root = self._resolve(model, store, staging)
            root_digest = dir_digest(root)
            request = {"model": root_digest, "method": describe_method(built), "evidence": evidence,
                       "ids": ids_fingerprint(np.asarray(ids, dtype=np.int64)) if ids.dtype.kind in "iu" else None}
            request_id = request_id or "req-" + hashlib.sha256(canonical_json(request).encode()).hexdigest()[:20]
            with self.db.lock(f"request {request_id}"):
                done = self._existing(request_id, request)
                if done is not None:
                    return done
                return self._carry_out(root, root_digest, ids, built, request, request_id, requester, evidence, staging,
                                       train_fingerprint=train_fingerprint, seed=derive_seed("ledger request", request_id),
                                       device=device, progress=progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _resolve(self, model: str | Path, store: Any, staging: Path) -> Path:
        """The folder of the model a request names: a model directory, a digest stored here, or a stored run (written as a
        model directory in ``staging``)."""
        text = str(model)
        if text.startswith("sha256:"):
            folder = self.model_path(text)
            if not folder.is_dir():
                raise ConfigError(f"No model {text} in ledger {self.target}.")
            return folder
        if store is not None:
            from ..runs.store import Store

            st = store if isinstance(store, Store) else Store(store)
            spec, net = run_spec(st, text)
            return save_model_dir(staging / "run-model", net, spec)
        folder = Path(model)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a model directory (a folder with model.json); give one, a stored run "
                              "(with --store) or a model digest of this ledger.")
        read_spec(folder)
        return folder

    def _existing(self, request_id: str, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The certificate of the completed request ``request_id``, or None; a different request under the same id is refused."""
        sa, e = self.db.sa, self.db.entries
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(e).where(e.c.request_id == request_id)).first()
        if row is None:
            return None
        before = json.loads(row.request)
        differs = [k for k in ("model", "method", "evidence", "ids") if canonical_json(before.get(k)) != canonical_json(request.get(k))]
        differs = [k for k in differs if not (k == "model" and request["model"] in (row.lineage, row.model_before, row.model_after))]
        if differs:
            raise LedgerError(f"Request id {request_id!r} was already used (entry {row.seq}) for a different request: it differs in "
                              f"{differs}. Give a new request id.")
        return json.loads(row.certificate)

    def _lineage(self, digest: str) -> tuple[str, str]:
        """(lineage, head): the lineage a model belongs to (the first model of its chain of requests) and its newest version."""
        rows = self._rows()
        lineage = next((r.lineage for r in rows if digest in (r.model_after, r.model_before, r.lineage)), digest)
        mine = [r for r in rows if r.lineage == lineage]
        return lineage, (mine[-1].model_after if mine else digest)

    def _store_dir(self, folder: Path, digest: str, staging: Path) -> None:
        """Put the model directory ``folder`` (digest ``digest``) at its content address, atomically (copy, then rename)."""
        final = self.model_path(digest)
        if final.is_dir():
            if dir_digest(final) != digest:
                raise LedgerError(f"The stored model {final} no longer matches its digest {digest}: its files were changed. "
                                  "`unlearnkit verify` names the entries that depend on it.")
            return
        if folder.resolve() == final.resolve():
            return
        tmp = staging / f"copy-{_hex(digest)[:16]}"
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns(".*"))
        _fsync_tree(tmp)
        if dir_digest(tmp) != digest:
            raise LedgerError(f"The model directory {folder} changed while it was being copied into the ledger; try again.")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final.is_dir() and dir_digest(final) == digest):
                raise

    def _carry_out(self, root: Path, root_digest: str, ids: np.ndarray, method: Any, request: dict[str, Any], request_id: str,
                   requester: str | None, evidence: str, staging: Path, *, train_fingerprint: str | None, seed: int, device: str,
                   progress: bool) -> dict[str, Any]:
        from ..version import code_version

        lineage, head = self._lineage(root_digest)
        if head == root_digest:
            self._store_dir(root, root_digest, staging)
        folder = self.model_path(head)
        if dir_digest(folder) != head:
            raise LedgerError(f"The newest model of this lineage ({folder}) no longer matches its digest {head}: its files were changed; "
                              "nothing was deleted. `unlearnkit verify` names the damage.")
        loaded = load_model_dir(folder, device=device)
        arr = check_ids(ids, loaded, train_fingerprint=train_fingerprint)
        outcome = execute(loaded, arr, method, evidence=evidence, seed=seed, device=device, progress=progress)
        spec = {**loaded.spec, "kind": "exact" if outcome.exact else "weights",
                "excluded_ids": sorted(set(loaded.spec["excluded_ids"]) | {int(i) for i in arr})}
        out_dir = save_model_dir(staging / "new-model", outcome.module.cpu() if not outcome.exact else outcome.module, spec,
                                 source=loaded.source)
        _fsync_tree(out_dir)
        after = dir_digest(out_dir)
        self._store_dir(out_dir, after, staging)
        salt = chain.new_salt()
        with self.db.engine.connect() as conn:
            rows = self._rows(conn)
        prev = rows[-1].entry_hash if rows else chain.GENESIS
        seq = rows[-1].seq + 1 if rows else 1
        cert = chain.normalised({
            "format": CERT_FORMAT, "version": 1, "ledger_id": self.id, "seq": seq,
            "request": {"id": request_id, "requester": requester, "time": _now()},
            "forget_set": {"n": int(len(arr)), "fingerprint": chain.forget_fingerprint(arr, salt),
                           "salt": "per request, kept in the ledger (reveal it to prove which ids this certificate covers)"},
            "model": {"lineage": lineage, "before": head, "after": after, "kind": spec["kind"], "architecture": spec["model"],
                      "dataset": spec["dataset"], "files_before": file_digests(folder), "files_after": file_digests(self.model_path(after))},
            "method": {**request["method"], "kind": getattr(method, "kind", ""), "paper": getattr(method, "paper", "")},
            "guarantee": outcome.guarantee, "evidence": outcome.evidence, "deletion_seconds": round(outcome.seconds, 6),
            "code_version": code_version(),
            "signer": None if self.key is None else {"algorithm": "ed25519", "public_key_fingerprint": self.key_fingerprint},
            "previous_entry_hash": prev,
        })
        cert["entry_hash"] = chain.entry_hash(cert)
        cert["signature"] = None if self.key is None else chain.sign(self.key, cert["entry_hash"])
        atomic_write_text(self.cert_path(cert["entry_hash"]), json.dumps(cert, indent=2, sort_keys=True) + "\n")
        self._commit(cert, request_id, lineage, head, after, arr, salt, {**request, "seed": seed})
        return cert

    def _commit(self, cert: dict[str, Any], request_id: str, lineage: str, before: str, after: str, ids: np.ndarray, salt: str,
                request: dict[str, Any]) -> None:
        sa, e, keys = self.db.sa, self.db.entries, self.db.keys
        with self.db.engine.begin() as conn:
            last = conn.execute(sa.select(e.c.seq, e.c.entry_hash).order_by(e.c.seq.desc()).limit(1)).first()
            if (last.entry_hash if last else chain.GENESIS) != cert["previous_entry_hash"]:
                raise LedgerError("The ledger changed while this request held its lock (another writer without the lock?); "
                                  "nothing was committed. Submit the request again.")
            if self.key is not None and conn.execute(sa.select(keys.c.fingerprint).where(keys.c.fingerprint == self.key_fingerprint)).first() is None:
                conn.execute(keys.insert().values(fingerprint=self.key_fingerprint, pem=chain.public_pem(self.key.public_key())))
            conn.execute(e.insert().values(
                seq=cert["seq"], request_id=request_id, entry_hash=cert["entry_hash"], prev_hash=cert["previous_entry_hash"],
                lineage=lineage, model_before=before, model_after=after, created=cert["request"]["time"],
                certificate=canonical_json(cert), ids=json.dumps([int(i) for i in ids]), salt=salt, request=canonical_json(request)))

    # ------------------------------------------------------------------------------------------------ verifying
    def public_key(self, fingerprint: str) -> Any:
        sa, keys = self.db.sa, self.db.keys
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(keys).where(keys.c.fingerprint == fingerprint)).first()
        return None if row is None else chain.load_public_key(row.pem)

    def verify(self, cert: str | Path | Mapping[str, Any] | None = None, *, public_key: Any = None, deep: bool = False,
               device: str = "cpu") -> Verification:
        """Verify a certificate (a file, or its dict) against this ledger, or (``cert`` None) the whole ledger: the
        certificate's own hash and signature, its place in the chain (every entry up to it re-hashed and linked), the
        model files of every entry against their digests, and with ``deep`` the deletion replayed from the stored model
        before it (deterministic methods and exact regimes: the new model must come out byte for byte). ``public_key``
        (a PEM file or loaded key) is the key the signatures must come from; default: the keys the ledger recorded."""
        result = Verification()
        if public_key is not None and not hasattr(public_key, "verify"):
            public_key = chain.load_public_key(public_key)
        target_row = None
        if cert is not None:
            parsed = self._check_certificate(cert, result, public_key)
            if parsed is None:
                return result
            target_row = self._find(parsed)
            if target_row is None:
                result.problems.append(Problem("entry_hash", f"the ledger {self.target} has no entry for this certificate's request"))
                return result
            stored = json.loads(target_row.certificate)
            for name in diff_fields(stored, parsed):
                result.problems.append(Problem(name, f"differs from the ledger's entry {target_row.seq}: certificate has "
                                                     f"{_short(_get(parsed, name))}, the ledger {_short(_get(stored, name))}",
                                               target_row.seq, target_row.request_id))
        self._check_chain(result, public_key, upto=None if target_row is None else target_row.seq)
        rows = self._rows() if target_row is None else [target_row]
        for row in rows if (deep or target_row is not None) else []:
            self._recheck_evidence(row, result, device)
        if deep:
            for row in rows:
                self._replay(row, result, device)
        return result

    def _recheck_evidence(self, row: Any, result: Verification, device: str) -> None:
        """Recompute the cheap evidence (tier ``outputs``: accuracy and loss on forget / retain / test) of the stored model
        after the entry and compare it with the certificate's numbers."""
        from .request import assess_evidence, build_task

        cert = json.loads(row.certificate)
        recorded = (cert.get("evidence") or {}).get("metrics")
        if (cert.get("evidence") or {}).get("tier") != "outputs" or not isinstance(recorded, Mapping):
            return
        where = dict(entry=row.seq, request_id=row.request_id)
        try:
            before = load_model_dir(self.model_path(row.model_before), device="cpu")
            after = load_model_dir(self.model_path(row.model_after), device=device, source=before.source)
            request = json.loads(row.request)
            task = build_task(before, np.asarray(json.loads(row.ids), dtype=np.int64))
            again = assess_evidence(after.module, task, before, "outputs", device=device, seed=int(request["seed"]), progress=False)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be evaluated fails the check, named
            result.problems.append(Problem("evidence", f"re-running the outputs evidence failed: {type(exc).__name__}: {exc}", **where))
            return
        now = json.loads(json.dumps(again["metrics"]))
        bad = [f"{m}.{k}" for m, values in recorded.items() for k, v in (values or {}).items()
               if not (isinstance(v, (int, float)) and isinstance(now.get(m, {}).get(k), (int, float)) and abs(now[m][k] - v) <= 1e-6)]
        if bad:
            result.problems.append(Problem("evidence.metrics", f"re-running the outputs evidence gave other values for {', '.join(bad)}", **where))
        else:
            result.checked.append(f"entry {row.seq}: outputs evidence re-run on the stored model, same values")

    def _find(self, cert: Mapping[str, Any]) -> Any:
        """The entry a (possibly tampered) certificate stands for: by its entry hash, else its number, else its request id."""
        request = cert.get("request") if isinstance(cert.get("request"), Mapping) else {}
        for ref in (cert.get("entry_hash"), cert.get("seq"), request.get("id")):
            if isinstance(ref, (str, int)) and not isinstance(ref, bool) and str(ref):
                try:
                    return self._row(ref)
                except LedgerError:
                    continue
        return None

    def _check_certificate(self, cert: Any, result: Verification, public_key: Any) -> dict[str, Any] | None:
        where = "the certificate"
        if isinstance(cert, (str, Path)):
            where = str(cert)
            try:
                raw = Path(cert).read_bytes()
            except OSError as exc:
                result.problems.append(Problem("certificate", f"cannot read {cert}: {exc}"))
                return None
            try:
                cert = chain.parse_certificate(raw, where)
            except LedgerError as exc:
                result.problems.append(Problem("certificate", str(exc)))
                return None
        cert = dict(cert)
        if cert.get("ledger_id") != self.id:
            result.problems.append(Problem("ledger_id", f"the certificate names ledger {cert.get('ledger_id')!r}, this is {self.id}"))
        recomputed = chain.entry_hash(cert)
        if recomputed != cert.get("entry_hash"):
            result.problems.append(Problem("entry_hash", f"{where}'s content does not match its entry_hash (some field was changed); "
                                                         "the fields that differ from the ledger are named below", cert.get("seq")))
        else:
            result.checked.append(f"{where}: its entry_hash covers its content")
        self._check_signature(cert, recomputed, result, public_key, cert.get("seq"), (cert.get("request") or {}).get("id"))
        return cert

    def _check_signature(self, cert: Mapping[str, Any], digest: str, result: Verification, public_key: Any, seq: Any, rid: Any) -> None:
        signer = cert.get("signer")
        if signer is None:
            if public_key is not None:
                result.problems.append(Problem("signature", "the certificate is unsigned, but a signing key was expected", seq, rid))
            return
        fp = signer.get("public_key_fingerprint") if isinstance(signer, Mapping) else None
        if public_key is not None:
            expected = chain.key_fingerprint(public_key)
            if fp != expected:
                result.problems.append(Problem("signer", f"signed by key {fp}, but the expected key is {expected} (wrong signing key)", seq, rid))
                return
            key = public_key
        else:
            key = self.public_key(fp) if isinstance(fp, str) else None
            if key is None:
                result.problems.append(Problem("signer", f"signed by key {fp}, which this ledger does not know", seq, rid))
                return
        if not chain.signature_valid(key, digest, cert.get("signature") or ""):
            result.problems.append(Problem("signature", "the Ed25519 signature does not match the certificate's content", seq, rid))

    def _check_chain(self, result: Verification, public_key: Any, upto: int | None) -> None:
        prev, n = chain.GENESIS, 0
        for expected, row in enumerate(self._rows(), 1):
            if upto is not None and row.seq > upto:
                break
            n += 1
            where = dict(entry=row.seq, request_id=row.request_id)
            if row.seq != expected:
                result.problems.append(Problem("seq", f"entry numbers jump from {expected - 1} to {row.seq}: an entry was removed", **where))
            try:
                cert = json.loads(row.certificate)
            except ValueError:
                result.problems.append(Problem("certificate", "the stored certificate is not valid JSON", **where))
                continue
            recomputed = chain.entry_hash(cert)
            if recomputed != row.entry_hash or cert.get("entry_hash") != row.entry_hash:
                changed = self._changed_fields(row, cert)
                result.problems.append(Problem(changed or "entry_hash", "the entry's content no longer matches the hash it was "
                                               "recorded with (it was changed after it was recorded)", **where))
            if cert.get("previous_entry_hash") != prev or row.prev_hash != prev:
                result.problems.append(Problem("previous_entry_hash", f"names {str(cert.get('previous_entry_hash'))[:16]}…, but the "
                                               f"entry before it hashes to {prev[:16]}… (the entry before it was changed or replaced)", **where))
            for col, name in (("request_id", "request.id"), ("model_before", "model.before"), ("model_after", "model.after")):
                if getattr(row, col) != _get(cert, name):
                    result.problems.append(Problem(name, f"the ledger's index says {getattr(row, col)!r}, the certificate {_get(cert, name)!r}", **where))
            self._check_signature(cert, recomputed, result, public_key, row.seq, row.request_id)
            self._check_models(row, cert, result)
            prev = row.entry_hash  # the recorded hash: a changed entry is named above, not again at the next link
        result.checked.append(f"chain of {n} entr{'y' if n == 1 else 'ies'}: hashes, links, signatures and model files")

    def _changed_fields(self, row: Any, cert: Mapping[str, Any]) -> str:
        """The fields of a changed entry, found against its certificate file (written when the entry was recorded)."""
        try:
            original = json.loads(self.cert_path(row.entry_hash).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        if chain.entry_hash(original) != row.entry_hash:
            return ""
        return ", ".join(diff_fields(original, cert))

    def _check_models(self, row: Any, cert: Mapping[str, Any], result: Verification) -> None:
        for which in ("before", "after"):
            digest = getattr(row, f"model_{which}")
            folder = self.model_path(digest)
            where = dict(entry=row.seq, request_id=row.request_id)
            if not folder.is_dir():
                result.problems.append(Problem(f"model.{which}", f"the model folder {folder} is missing", **where))
                continue
            if dir_digest(folder) == digest:
                continue
            listed = (cert.get("model") or {}).get(f"files_{which}") or {}
            found = file_digests(folder)
            bad = sorted(k for k in set(listed) | set(found) if listed.get(k) != found.get(k))
            result.problems.append(Problem(f"model.{which}", f"the model files in {folder} do not match digest {digest}: "
                                                             f"{', '.join(bad) or 'unknown files'} changed", **where))

    def _replay(self, row: Any, result: Verification, device: str) -> None:
        """Run the entry's deletion again from the stored model before it and compare the new model's bytes."""
        where = dict(entry=row.seq, request_id=row.request_id)
        request = json.loads(row.request)
        staging = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-replay-", dir=self.files / "staging"))
        try:
            loaded = load_model_dir(self.model_path(row.model_before), device=device)
            method = prepare_method(request["method"]["name"], request["method"]["params"])
            ids = np.asarray(json.loads(row.ids), dtype=np.int64)
            outcome = execute(loaded, ids, method, evidence="none", seed=int(request["seed"]), device=device, progress=False)
            spec = {**loaded.spec, "kind": "exact" if outcome.exact else "weights",
                    "excluded_ids": sorted(set(loaded.spec["excluded_ids"]) | {int(i) for i in ids})}
            out = save_model_dir(staging / "replay", outcome.module.cpu() if not outcome.exact else outcome.module, spec,
                                 source=loaded.source)
        except Exception as exc:  # noqa: BLE001 - any failure to replay is a verification failure, named
            result.problems.append(Problem("deep", f"replaying the deletion failed: {type(exc).__name__}: {exc}", **where))
            return
        try:
            stored = file_digests(self.model_path(row.model_after)) if self.model_path(row.model_after).is_dir() else {}
            got = file_digests(out)
            skip = REQUEST_RECORDS if outcome.exact else ()
            bad = sorted(k for k in set(stored) | set(got) if k not in skip and stored.get(k) != got.get(k))
            if bad:
                result.problems.append(Problem("model.after", f"replaying the deletion ({request['method']['name']}) gave different "
                                                              f"bytes in {', '.join(bad)}", **where))
            else:
                what = (f"{len(got) - len(skip)} files (weights, checkpoints, partition, live ids; not its cost records "
                        f"{', '.join(skip)})" if outcome.exact else "every file")
                result.checked.append(f"entry {row.seq}: deletion replayed from the stored model before it, bit-identical in {what}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def check_empty() -> Exception:
    from ..errors import EmptySelection

    return EmptySelection("The deletion request is empty: it must name at least one example. Nothing was recorded.")


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _without_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}@{host}"


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk (so a rename after it never exposes
    a half-written model after a power loss)."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ledger_of(cert_path: str | Path) -> str | None:
    """The ledger a certificate file sits in (``<files>/certs/<hash>.json`` with ``<files>/ledger.json`` naming it), or None."""
    files = Path(cert_path).resolve().parent.parent
    try:
        named = json.loads((files / "ledger.json").read_text(encoding="utf-8")).get("ledger")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(named, str):
        return None
    return named if is_url(named) else str(files.parent / named)


__all__ = ["Ledger", "Problem", "Verification", "diff_fields", "ledger_of"]
