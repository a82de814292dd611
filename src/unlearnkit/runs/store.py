"""The run store: one directory per run (run.json + safetensors + .npy), an SQLite index over the
run.json files, reference-model cache, experiment records. Every write is atomic (temp + rename):
an interrupted run leaves no half-written record, and a later start removes its temp folder once its
writer is provably gone (see ``_abandoned``). An entry counts as present only when complete (see ``_complete``),
and is reused only when its files still match the sha256 digests written with it (see ``_intact``). One writer per
entry: a second process that needs an entry being written waits for it and reuses it (see ``Store._lock``)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .. import distributed
from ..errors import StoreError
from ..lm.guard import is_guard, load_guard
from ..io import check_finite_state, load_array, load_model_weights, load_state, read_json, save_array, save_state, write_json
from ..io import sha256_file as io_sha256_file

try:
    import fcntl
except ImportError:  # Windows: no write locks; two writers of one key then both compute it and the first commit wins
    fcntl = None  # type: ignore[assignment]

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, experiment TEXT, task TEXT, task_fingerprint TEXT, forget TEXT,
  method TEXT, params TEXT, seed INTEGER, kind TEXT, verdict TEXT, status TEXT, created REAL, path TEXT
);
CREATE TABLE IF NOT EXISTS experiments (
  exp_id TEXT PRIMARY KEY, name TEXT, status TEXT, created REAL, n_runs INTEGER, path TEXT
);
CREATE INDEX IF NOT EXISTS runs_task ON runs(task_fingerprint);
CREATE INDEX IF NOT EXISTS runs_exp ON runs(experiment);
"""


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


COMPLETE = ".complete"  # completion marker: JSON {file: sha256 hex digest} of the entry's files, written last, just before the commit
# Entries written before markers existed: the files an interrupted old write lost first (weights are written first,
# so an old entry whose temp folder was removed mid-write lacks them). Such an entry with them present is complete;
# an old run saved without weights (the runner always saves them) counts as missing and is simply recomputed.
RUN_FILES, REFERENCE_FILES, MODELS_FILES = ("run.json", "model.safetensors"), ("meta.json", "model.safetensors"), ("meta.json", "models.safetensors")
STALE_TMP_SECONDS = 24 * 3600  # a temp folder whose writer cannot be checked is abandoned after this long


def _host_id() -> str:
    """This host as seen by pids: host name plus pid namespace (containers sharing a volume may share a host name)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return _safe_name(f"{socket.gethostname()}_{namespace}")


_HOST = _host_id()
_HELD: dict[Path, int] = {}  # write locks this process holds: lock file -> its descriptor (see ``Store._lock``)


RECORD_FILES = ("run.json", "meta.json", "experiment.json")  # the JSON record of a run, reference or model set, experiment


class StoreWarning(UserWarning):
    """A stored entry's files no longer match their digests: it was discarded, to be recomputed."""


def _tmp_name(key: str, pid: int | None = None) -> str:
    """``.tmp-<key>@<host>@<pid>@<ns>``: names the writer, so other processes can tell whether it is still alive
    (``@`` never occurs in ``_safe_name`` output, so the name splits unambiguously from the right)."""
    return f".tmp-{_safe_name(key)}@{_HOST}@{os.getpid() if pid is None else pid}@{time.monotonic_ns()}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows: only the age rule applies there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # PermissionError: it exists but belongs to another user
    return True


def _writer_gone(host: str | None, pid: int | None, path: Path) -> bool:
    """Whether the process ``pid`` on ``host`` that wrote ``path`` is gone. On this host exactly when the pid is dead
    (a live pid, even a reused one, counts as alive). Writers on other hosts, or unnamed (older versions), cannot be
    checked: they count as gone after ``STALE_TMP_SECONDS`` without changes to ``path``, far longer than any write takes."""
    if host == _HOST and pid is not None:
        return not _pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime > STALE_TMP_SECONDS
    except OSError:
        return False


def _abandoned(tmp: Path) -> bool:
    """Whether the temp folder ``tmp`` can be removed without harming a writer. Opening a store (``unlearnkit ls``,
    a second experiment, a benchmark sharing the reference cache, an executor's child process) must never delete a
    live writer's folder: it is abandoned when the writer named in it is gone (``_writer_gone``)."""
    parts = tmp.name.rsplit("@", 3)
    named = len(parts) == 4 and parts[2].isdigit()
    return _writer_gone(parts[1] if named else None, int(parts[2]) if named else None, tmp)


def listed_files(folder: Path, old_files: tuple[str, ...]) -> dict[str, str | None] | None:
    """The files the completion marker of the entry in ``folder`` lists, with their sha256 digests, or None when the
    marker is unreadable. Entries written before digests existed (a marker listing names only, or no marker: then
    ``old_files``) stay usable: their digests are None, meaning unverified, not corrupt."""
    try:
        listed = read_json(folder / COMPLETE)
    except FileNotFoundError:
        listed = old_files
    except (OSError, ValueError):
        return None
    if isinstance(listed, list | tuple):
        listed = dict.fromkeys(listed)
    if not isinstance(listed, dict) or not all(d is None or isinstance(d, str) for d in listed.values()):
        return None
    return listed


def read_manifest(folder: Path, old_files: tuple[str, ...]) -> dict[str, str | None] | None:
    """The files of the entry in ``folder`` with their digests (``listed_files``), or None when the entry is not complete:
    a listed file is missing or the marker is unreadable."""
    listed = listed_files(folder, old_files)
    return listed if listed is not None and all((folder / f).is_file() for f in listed) else None


def _complete(folder: Path, old_files: tuple[str, ...]) -> bool:
    """Whether ``folder`` holds a finished entry (``read_manifest``). A partial entry reads as missing and the next
    save replaces it (``_commit_dir``) instead of failing on it forever."""
    return read_manifest(folder, old_files) is not None


def sha256_file(path: Path) -> str:
    try:
        return io_sha256_file(path)
    except OSError as exc:
        raise StoreError(f"Cannot read {path} to check its digest: {exc}") from None


def damaged_files(folder: Path, manifest: Mapping[str, str | None]) -> list[str]:
    """The files of an entry whose content differs from the digest stored when they were written."""
    return [name for name, digest in manifest.items() if digest is not None and sha256_file(folder / name) != digest]


def _lock_holder(fd: int) -> str:
    """Who holds a write lock, as its lock file says (``host pid``, written by the holder)."""
    host, _, pid = os.pread(fd, 512, 0).decode("utf-8", "replace").partition(" ")
    if not pid.strip():
        return "another process"
    return f"process {pid.strip()}" + ("" if host == _HOST else f" on {host}")


class Store:
    """A folder of runs. ``Store(path)`` creates it if needed and cleans up interrupted writes.
    ``refs_root`` keeps the reference-model cache elsewhere (e.g. shared by benchmark runs). ``tidy=False`` opens it
    as it is, without that cleanup and without syncing the index (``unlearnkit check`` reports what it would fix)."""

    def __init__(self, root: str | Path, refs_root: str | Path | None = None, *, tidy: bool = True) -> None:
        self.root = Path(root)
        self.refs = Path(refs_root) if refs_root is not None else self.root / "refs"
        for folder in (self.root, self.refs):
            if folder.exists() and not folder.is_dir():
                raise StoreError(f"{folder} is a file, not a store folder; give a folder (it is created if missing).")
        self._held: set[Path] = set()  # entries whose write lock this store took (``_lock``)
        for folder in (self.root / "runs", self.root / "experiments", self.refs):
            folder.mkdir(parents=True, exist_ok=True)
        if tidy:
            for tmp in self.abandoned_temp_folders():
                shutil.rmtree(tmp, ignore_errors=True)
        with self._db() as db:
            db.executescript(INDEX_SCHEMA)
        if tidy:
            self.sync_index()

    # ----------------------------------------------------------------- housekeeping
    def abandoned_temp_folders(self) -> list[Path]:
        """Temp folders of writers that died (other processes may be writing into theirs right now)."""
        return [p for folder in (self.root / "runs", self.root / "experiments", self.refs) for p in sorted(folder.glob(".tmp-*"))
                if _abandoned(p)]

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.root / "index.sqlite", timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the run index {self.root / 'index.sqlite'}: {exc}") from None
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"The run index {self.root / 'index.sqlite'} is damaged ({exc}); delete it and it is rebuilt from run.json files.") from None
        finally:
            db.close()

    def index_drift(self) -> dict[str, tuple[set[str], set[str]]]:
        """Where the index disagrees with the directories: for "runs" and "experiments", (ids indexed without a complete
        directory, complete directories not indexed)."""
        with self._db() as db:
            indexed = {row[0] for row in db.execute("SELECT run_id FROM runs")}
            exps = {row[0] for row in db.execute("SELECT exp_id FROM experiments")}
        on_disk = {p.name for p in (self.root / "runs").iterdir() if not p.name.startswith(".") and _complete(p, RUN_FILES)}
        exp_disk = {p.name for p in (self.root / "experiments").iterdir() if p.is_dir() and (p / "experiment.json").is_file()}
        return {"runs": (indexed - on_disk, on_disk - indexed), "experiments": (exps - exp_disk, exp_disk - exps)}

    def sync_index(self) -> None:
        """Make the index agree with the run directories (the directories are the truth)."""
        drift = self.index_drift()
        with self._db() as db:
            for run_id in drift["runs"][0]:
                db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            for run_id in drift["runs"][1]:
                try:
                    self._index_run(db, read_json(self.root / "runs" / run_id / "run.json"))
                except (OSError, ValueError, KeyError):
                    continue  # unreadable record: leave it out of the index
            for exp_id in drift["experiments"][0]:
                db.execute("DELETE FROM experiments WHERE exp_id = ?", (exp_id,))
            for exp_id in drift["experiments"][1]:
                try:
                    self._index_experiment(db, read_json(self.root / "experiments" / exp_id / "experiment.json"))
                except (OSError, ValueError, KeyError):
                    continue

    def _index_run(self, db: sqlite3.Connection, record: Mapping[str, Any]) -> None:
        db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record["run_id"], record.get("experiment"), record["task"]["name"], record["task"]["fingerprint"],
                record["task"].get("info", {}).get("forget_label"), record["method"]["name"],
                json.dumps(record["method"].get("params", {}), sort_keys=True), record.get("seed"), record.get("kind"),
                (record.get("verdict") or {}).get("label"), record.get("status"), record.get("created"),
                str(self.root / "runs" / record["run_id"]),
            ),
        )

    def _index_experiment(self, db: sqlite3.Connection, record: Mapping[str, Any]) -> None:
        db.execute(
            "INSERT OR REPLACE INTO experiments VALUES (?,?,?,?,?,?)",
            (record["exp_id"], record["name"], record.get("status"), record.get("created"), len(record.get("runs", [])),
             str(self.root / "experiments" / record["exp_id"])),
        )

    @contextmanager
    def _staged(self, final: Path, old_files: tuple[str, ...]) -> Iterator[Path]:
        """Yield a fresh temp folder next to ``final``; when the block ends, write the completion marker and commit
        the folder as ``final``, or remove it on error. Writes into it must pass ``make_parents=False``: if the folder
        vanishes mid-write (removed by another process), the save fails instead of committing a partial entry."""
        tmp = final.parent / _tmp_name(final.name)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            write_json(tmp / COMPLETE, {f: sha256_file(tmp / f) for f in files}, make_parents=False)
            self._commit_dir(tmp, final, old_files)
        except BaseException as exc:
            vanished = not tmp.is_dir()
            shutil.rmtree(tmp, ignore_errors=True)
            if vanished and isinstance(exc, OSError):
                raise StoreError(f"The temporary folder {tmp} vanished while {final} was being written (another process "
                                 "removed it); nothing was committed. Run again.") from None
            raise

    def _commit_dir(self, tmp: Path, final: Path, old_files: tuple[str, ...]) -> None:
        """Rename the finished ``tmp`` to ``final``. A complete ``final`` wins (another writer of the same key was
        first; keys are content hashes) and ``tmp`` is dropped. An incomplete one (older versions, damage by hand)
        is moved aside under a temp name of ours (so it is cleaned up even if we die here) and replaced."""
        if final.exists() and not _complete(final, old_files):
            self.remove_entry(final)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a complete entry is there (commits are renames of finished folders)

    def remove_entry(self, folder: Path) -> None:
        """Remove a stored entry: first moved aside under a temp name of ours (so readers never see it half-removed,
        and it is cleaned up even if we die here), then deleted. A run also leaves the index."""
        aside = folder.parent / _tmp_name(folder.name)
        with suppress(FileNotFoundError):  # another process may have moved it first
            os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
        if folder.parent == self.root / "runs":
            with self._db() as db:
                db.execute("DELETE FROM runs WHERE run_id = ?", (folder.name,))

    def _intact(self, folder: Path, old_files: tuple[str, ...], what: str) -> bool:
        """Whether the entry in ``folder`` is complete and its files match the digests written with it. A mismatch
        (a file corrupted or replaced since) warns naming the file and removes the entry, so it is recomputed."""
        manifest = read_manifest(folder, old_files)
        if manifest is None:
            return False
        damaged = damaged_files(folder, manifest)
        if damaged:
            warnings.warn(f"{what}: {', '.join(str(folder / f) for f in damaged)} does not match the sha256 digest stored when it was "
                          "written (corrupted or replaced); the entry is discarded and recomputed.", StoreWarning, stacklevel=3)
            self.remove_entry(folder)
            return False
        for record in RECORD_FILES:  # entries written before digests are unverified: at least their record must read
            if (folder / record).is_file():
                try:
                    read_json(folder / record)
                except StoreError as exc:
                    warnings.warn(f"{what}: {exc} The entry is discarded and recomputed.", StoreWarning, stacklevel=3)
                    self.remove_entry(folder)
                    return False
        return True

    # ----------------------------------------------------------------- write locks
    def _lock(self, final: Path, what: str) -> None:
        """Take the write lock of entry ``final``: ``fcntl.flock`` on a lock file in ``.locks/`` beside it, which the
        kernel releases when its holder dies, so a crashed writer never blocks anyone. If another process holds it,
        wait for it (so its entry is reused, not computed twice), unless this process holds other locks: waiting then
        could deadlock (two writers, each waiting for a key the other holds), so the caller computes the entry too and
        the first commit wins, as without locks. Released by saving the entry or by ``release_locks``. In a
        data-parallel launch only rank 0 locks (it alone writes, ``distributed.main_writes``); the other ranks compute
        what it computes."""
        if fcntl is None or final in self._held or final.resolve() in _HELD or not distributed.is_main():
            return
        path = final.parent / ".locks" / f"{final.name}.lock"
        path.parent.mkdir(exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if _HELD:
                        os.close(fd)
                        return
                    print(f"Waiting for {_lock_holder(fd)}, which is writing {what} into {self.root} ...", file=sys.stderr, flush=True)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                with suppress(FileNotFoundError):
                    if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not a file its last holder already unlinked
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, f"{_HOST} {os.getpid()}".encode(), 0)
                        _HELD[final.resolve()] = fd
                        self._held.add(final)
                        return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _unlock(self, final: Path) -> None:
        if final not in self._held:
            return
        self._held.discard(final)
        fd = _HELD.pop(final.resolve())
        with suppress(FileNotFoundError):
            os.unlink(final.parent / ".locks" / f"{final.name}.lock")  # while holding it: a waiter then retries on a new file
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def release_locks(self) -> None:
        """Release the write locks this store still holds (of entries not saved: a failed or interrupted computation)."""
        for final in list(self._held):
            self._unlock(final)

    # ----------------------------------------------------------------- runs
    def has_run(self, run_id: str) -> bool:
        """Whether run ``run_id`` is stored completely (a partial directory counts as missing)."""
        return _complete(self.root / "runs" / run_id, RUN_FILES)

    def reusable_run(self, run_id: str) -> bool:
        """Whether run ``run_id`` is stored intact, to be reused: complete, its files matching their digests (else it is
        discarded with a warning naming the file). While another process writes it, waits for that run (``_lock``).
        When False, this store holds the run's write lock until the run is saved (or ``release_locks``)."""
        final, what = self.root / "runs" / run_id, f"run {run_id}"
        if self._intact(final, RUN_FILES, what):
            return True
        self._lock(final, what)
        if self._intact(final, RUN_FILES, what):
            self._unlock(final)
            return True
        return False

    @distributed.main_writes
    def save_run(self, record: dict[str, Any], model: nn.Module | None = None, arrays: Mapping[str, np.ndarray] | None = None) -> Path:
        """Write a run directory atomically and index it. ``record['run_id']`` names it."""
        run_id = record["run_id"]
        final = self.root / "runs" / run_id
        with self._staged(final, RUN_FILES) as tmp:
            if model is not None and is_guard(model):  # a guard has no unlearned weights: its own state (classifier, strength, ...)
                tensors, meta = model.guard_state()
                save_state(tmp / "model.safetensors", tensors, {"run_id": run_id, **meta}, make_parents=False)
            elif model is not None:
                save_state(tmp / "model.safetensors", model.state_dict(), {"run_id": run_id}, make_parents=False)
            names = {}
            if arrays:
                (tmp / "arrays").mkdir()
            for key, arr in (arrays or {}).items():
                fname = f"{_safe_name(key)}.npy"
                save_array(tmp / "arrays" / fname, arr, make_parents=False)
                names[key] = f"arrays/{fname}"
            record = {**record, "arrays": names, "created": record.get("created", time.time())}
            write_json(tmp / "run.json", record, make_parents=False)
        with self._db() as db:
            self._index_run(db, read_json(final / "run.json"))
        self._unlock(final)
        return final

    def load_run(self, run_id: str) -> dict[str, Any]:
        path = self.root / "runs" / self.resolve_run(run_id) / "run.json"
        try:
            return read_json(path)
        except (OSError, ValueError) as exc:
            raise StoreError(f"Cannot read run record {path}: {exc}") from None

    def load_run_array(self, run_id: str, key: str) -> np.ndarray:
        record = self.load_run(run_id)
        rel = record.get("arrays", {}).get(key)
        if rel is None:
            raise StoreError(f"Run {run_id} has no array {key!r} (has {sorted(record.get('arrays', {}))[:10]}).")
        return load_array(self.root / "runs" / record["run_id"] / rel)

    def load_run_model(self, run_id: str, model: nn.Module) -> nn.Module:
        """The weights of run ``run_id`` loaded into ``model`` (the experiment's architecture). A run of an exact method
        stored its regime's own model (shards, adapters, an analytic head), whose weights do not fit that architecture:
        refused with the reason (its record's ``model`` says what it is)."""
        run_id = self.resolve_run(run_id)
        identity = self.load_run(run_id).get("model") or {}
        if identity.get("guard"):
            raise StoreError(f"Run {run_id} is an inference-time guard ({identity['guard']!r}): it has no unlearned weights. Its model's "
                             "weights are the original's, untouched; the run stored the guard's own state (prompt classifier, "
                             "threshold, strength or forbidden tokens). Load it around the original with "
                             "Store.load_run_guard(run_id, original, codec).")
        if identity.get("original_architecture") is False:
            regime = f" (regime {identity['regime']!r})" if identity.get("regime") else ""
            raise StoreError(f"Run {run_id} stored the weights of a {identity.get('class')}{regime}, an exact-unlearning regime's "
                             f"own model, not of the experiment's architecture; they cannot be loaded into a {type(model).__name__}. "
                             "Its state is more than its weights (which examples each part depends on): run its method again "
                             "(the run is reproducible from its record) to get the model.")
        return load_model_weights(model, self.root / "runs" / run_id / "model.safetensors")

    def load_run_guard(self, run_id: str, original: nn.Module, codec: Any = None) -> nn.Module:
        """The inference-time guard of run ``run_id`` rebuilt around ``original`` (the untouched model it guarded) from its
        stored state; ``codec`` (the task's text codec) is needed by guards that decode tokens (GUARD's semantic
        matching). A StoreError for a run that is not a guard's."""
        from safetensors import safe_open

        run_id = self.resolve_run(run_id)
        identity = self.load_run(run_id).get("model") or {}
        if not identity.get("guard"):
            raise StoreError(f"Run {run_id} is not an inference-time guard's; load its weights with Store.load_run_model.")
        path = self.root / "runs" / run_id / "model.safetensors"
        tensors = load_state(path)
        check_finite_state(tensors, f"guard state in {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_guard(original, tensors, meta, codec)

    def resolve_run(self, prefix: str) -> str:
        if self.has_run(prefix):
            return prefix
        matches = [p.name for p in (self.root / "runs").glob(f"{_safe_name(prefix)}*") if _complete(p, RUN_FILES)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"No run {prefix!r} in {self.root}. `unlearnkit ls runs` lists them.")
        raise StoreError(f"Run id prefix {prefix!r} is ambiguous: {sorted(matches)[:5]}.")

    def runs(self, **where: Any) -> list[dict[str, Any]]:
        """Index rows (dicts) of the runs whose directories are complete, filtered by equality on any column, newest first."""
        cols = ["run_id", "experiment", "task", "task_fingerprint", "forget", "method", "params", "seed", "kind", "verdict", "status", "created", "path"]
        bad = [k for k in where if k not in cols]
        if bad:
            raise StoreError(f"Unknown run column(s) {bad}; columns: {cols}.")
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(f"{k} = ?" for k in where) if where else "") + " ORDER BY created DESC"
        with self._db() as db:
            rows = [dict(zip(cols, row)) for row in db.execute(sql, tuple(where.values()))]
        return [r for r in rows if self.has_run(r["run_id"])]  # a directory deleted since it was indexed is gone

    # ----------------------------------------------------------------- experiments
    @distributed.main_writes
    def save_experiment(self, record: dict[str, Any]) -> Path:
        """Write an experiment record (atomically) and index it. It names its writer (host and pid), so a "running"
        record whose writer died can be told from a live one (``experiment_gaps``)."""
        exp_id = record["exp_id"]
        folder = self.root / "experiments" / exp_id
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "experiment.json", {**record, "created": record.get("created", time.time()),
                                                "writer": {"host": _HOST, "pid": os.getpid()}})
        with self._db() as db:
            self._index_experiment(db, read_json(folder / "experiment.json"))
        return folder

    def experiments(self) -> list[dict[str, Any]]:
        """Index rows of the experiments whose records are there, newest first, with the status their directories bear
        out (``experiment_status``) and the reasons where it differs from the recorded one."""
        cols = ["exp_id", "name", "status", "created", "n_runs", "path"]
        with self._db() as db:
            rows = [dict(zip(cols, row)) for row in db.execute("SELECT * FROM experiments ORDER BY created DESC")]
        shown = []
        for row in rows:
            try:
                row["status"], row["reasons"] = self.experiment_status(read_json(self.root / "experiments" / row["exp_id"] / "experiment.json"))
            except FileNotFoundError:
                continue  # deleted since it was indexed
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not JSON, or not an experiment record
                row["status"], row["reasons"] = "unreadable", ["`unlearnkit check` lists it"]
            shown.append(row)
        return shown

    @staticmethod
    def experiment_runs(record: Mapping[str, Any]) -> list[str]:
        """The run ids an experiment record refers to: the original model's run of each task, then the method runs."""
        return [t["original_run"] for t in record.get("tasks", []) if t.get("original_run")] + list(record.get("runs", []))

    def experiment_gaps(self, record: Mapping[str, Any], bad: Collection[str] = ()) -> tuple[list[str], bool, bool]:
        """What the directories say against an experiment record: (its runs that are gone or in ``bad``, whether its
        report was written but is gone, whether it is marked running but its writer is gone)."""
        runs = [r for r in self.experiment_runs(record) if r in bad or not self.has_run(r)]
        folder = self.root / "experiments" / record["exp_id"]
        report_gone = bool(record.get("report")) and not (folder / record["report"]).is_file()
        writer = record.get("writer") or {}
        stale = record.get("status") == "running" and _writer_gone(writer.get("host"), writer.get("pid"), folder / "experiment.json")
        return runs, report_gone, stale

    def experiment_status(self, record: Mapping[str, Any]) -> tuple[str, list[str]]:
        """(status, reasons): the recorded status, except "incomplete" for a complete experiment whose runs or report
        are gone, and "interrupted" for a running one whose process is gone."""
        gone, report_gone, stale = self.experiment_gaps(record)
        if stale:
            return "interrupted", ["its process is gone"]
        if record.get("status") != "complete" or not (gone or report_gone):
            return record.get("status") or "-", []
        reasons = [f"{len(gone)} run{'s' if len(gone) != 1 else ''} gone"] if gone else []
        return "incomplete", reasons + (["report gone"] if report_gone else [])

    def load_experiment(self, exp_id: str) -> dict[str, Any]:
        folder = self.root / "experiments" / exp_id
        if not (folder / "experiment.json").is_file():
            matches = [p.name for p in (self.root / "experiments").glob(f"{_safe_name(exp_id)}*") if (p / "experiment.json").is_file()]
            if len(matches) != 1:
                raise StoreError(f"No unique experiment {exp_id!r} in {self.root} (matches: {matches[:5]}).")
            folder = self.root / "experiments" / matches[0]
        return read_json(folder / "experiment.json")

    def experiment_dir(self, exp_id: str) -> Path:
        return self.root / "experiments" / exp_id

    # ----------------------------------------------------------------- references
    def load_reference(self, key: str, factory: Callable[[], nn.Module], device: str = "cpu", *,
                       claim: bool = False) -> tuple[nn.Module, dict[str, Any]] | None:
        """The stored reference model ``key`` and its metadata, or None when it is missing or damaged (``_intact``).
        ``claim=True``: while another process writes it, wait for it; on None this store holds its write lock until
        ``save_reference`` (or ``release_locks``)."""
        folder, what = self.refs / key, f"reference model {key}"
        if not self._intact(folder, REFERENCE_FILES, what):
            if not claim:
                return None
            self._lock(folder, what)
            if not self._intact(folder, REFERENCE_FILES, what):
                return None
            self._unlock(folder)
        model = load_model_weights(factory(), folder / "model.safetensors").to(device)
        model.eval()
        return model, read_json(folder / "meta.json")

    def load_models(self, key: str, factory: Callable[[], nn.Module], device: str = "cpu") -> tuple[list[nn.Module], dict[str, np.ndarray], dict[str, Any]] | None:
        """A cached bundle of models (an ensemble or shadow set) with its arrays and metadata, or None."""
        folder = self.refs / key
        if not self._intact(folder, MODELS_FILES, f"model set {key}"):
            return None
        meta = read_json(folder / "meta.json")
        state = load_state(folder / "models.safetensors")
        models = []
        for k in range(int(meta["n_models"])):
            model = factory()
            own = {name[len(f"{k}/"):]: t for name, t in state.items() if name.startswith(f"{k}/")}
            check_finite_state(own, f"cached model {k} of {key}")
            model.load_state_dict(own)
            models.append(model.to(device).eval())
        arrays = {p.stem: load_array(p) for p in sorted((folder / "arrays").glob("*.npy"))}
        return models, arrays, meta

    @distributed.main_writes
    def save_models(self, key: str, models: list[nn.Module], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        with self._staged(self.refs / key, MODELS_FILES) as tmp:
            state = {f"{k}/{name}": t for k, m in enumerate(models) for name, t in m.state_dict().items()}
            save_state(tmp / "models.safetensors", state, {"key": key}, make_parents=False)
            if arrays:
                (tmp / "arrays").mkdir()
            for name, arr in arrays.items():
                save_array(tmp / "arrays" / f"{_safe_name(name)}.npy", arr, make_parents=False)
            write_json(tmp / "meta.json", {**meta, "n_models": len(models)}, make_parents=False)

    @distributed.main_writes
    def save_reference(self, key: str, model: nn.Module, meta: Mapping[str, Any]) -> None:
        with self._staged(self.refs / key, REFERENCE_FILES) as tmp:
            save_state(tmp / "model.safetensors", model.state_dict(), {"key": key}, make_parents=False)
            write_json(tmp / "meta.json", meta, make_parents=False)
        self._unlock(self.refs / key)

    def entries(self) -> list[tuple[str, str, Path, tuple[str, ...]]]:
        """Every stored entry as (kind, key, folder, the files an entry of older versions needs): "run", "reference"
        or "model set" (``save_models``: its weights file is ``models.safetensors``)."""
        found = [("run", p.name, p, RUN_FILES) for p in sorted((self.root / "runs").iterdir()) if p.is_dir() and not p.name.startswith(".")]
        for p in sorted(self.refs.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                is_set = MODELS_FILES[1] in (listed_files(p, ()) or ()) or (p / MODELS_FILES[1]).is_file()
                found.append(("model set", p.name, p, MODELS_FILES) if is_set else ("reference", p.name, p, REFERENCE_FILES))
        return found
