"""A store fsck (``unlearnkit check``): every run, reference model and model set against the sha256 digests written
with it, the SQLite index against the directories, experiment records against their runs, reports and writers, and
temp folders of writers that died. ``repair`` fixes what it safely can, with the store's atomic writes; it removes
only entries that are damaged (they are recomputed by the next run), never a valid one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnlearnError
from ..io import read_json
from .store import COMPLETE, Store, damaged_files, listed_files, read_manifest

# kind -> heading of its section in the listing, in the order they are listed (and repaired)
KINDS = {
    "corrupt": "corrupt: files that differ from the digest stored when they were written, or unreadable records",
    "incomplete": "incomplete entries: a listed file or the completion marker is missing or unreadable",
    "temp": "temporary folders left by writers that died",
    "stale_row": "index rows whose directory is gone",
    "unindexed": "directories missing from the index",
    "stale_running": "experiments marked running whose process is gone",
    "incomplete_experiment": "experiments marked complete whose runs are gone",
    "missing_report": "reports that were written and are gone",
}


@dataclass(frozen=True)
class Problem:
    kind: str  # a key of KINDS
    name: str  # what it concerns: "run <id>", "reference <key>", "experiment <id>", ...
    detail: str
    path: Path


@dataclass
class CheckResult:
    root: Path
    checked: Counter[str] = field(default_factory=Counter)  # entries checked, by kind
    unverified: int = 0  # entries written before digests existed: complete, but nothing to verify them against
    problems: list[Problem] = field(default_factory=list)


def _record_readable(folder: Path, kind: str) -> bool:
    try:
        record = read_json(folder / ("run.json" if kind == "run" else "meta.json"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict)


def _missing(folder: Path, old_files: tuple[str, ...]) -> str:
    """Why an entry is incomplete: the files its completion marker (or, without one, its version) lists that are gone."""
    listed = listed_files(folder, old_files)
    if listed is None:
        return f"its completion marker {COMPLETE} is unreadable"
    gone = [f for f in listed if not (folder / f).is_file()]
    return "missing " + ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")


def check_store(store: Store) -> CheckResult:
    """Every problem of ``store`` (open it with ``tidy=False`` to see what opening it normally would fix silently)."""
    result = CheckResult(store.root)
    add = result.problems.append
    bad: set[str] = set()  # damaged runs and experiment records (run ids and experiment ids never collide)
    for kind, key, folder, old_files in store.entries():
        result.checked[kind] += 1
        manifest = read_manifest(folder, old_files)
        if manifest is None:
            add(Problem("incomplete", f"{kind} {key}", _missing(folder, old_files), folder))
        elif damaged := damaged_files(folder, manifest):
            add(Problem("corrupt", f"{kind} {key}", ", ".join(damaged), folder))
        elif not _record_readable(folder, kind):
            add(Problem("corrupt", f"{kind} {key}", "its record is not readable JSON", folder))
        else:
            result.unverified += all(d is None for d in manifest.values())
            continue
        if kind == "run":
            bad.add(key)
    for folder in sorted(p for p in (store.root / "experiments").iterdir() if (p / "experiment.json").is_file()):
        result.checked["experiment"] += 1
        try:
            record = read_json(folder / "experiment.json")
            gone, report_gone, stale = store.experiment_gaps(record, bad)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            add(Problem("corrupt", f"experiment {folder.name}", "experiment.json is not a readable record", folder))
            bad.add(folder.name)
            continue
        name = f"experiment {record['exp_id']}"
        if stale:
            add(Problem("stale_running", name, "its writer " + _writer(record) + " is gone", folder))
        elif record.get("status") == "complete" and gone:
            shown = ", ".join(r[:12] for r in gone[:3]) + (" ..." if len(gone) > 3 else "")
            add(Problem("incomplete_experiment", name, f"{len(gone)} of {len(store.experiment_runs(record))} runs gone ({shown})"
                        + ("; report gone" if report_gone else ""), folder))
        elif record.get("status") == "complete" and report_gone:
            add(Problem("missing_report", name, f"{record['report']} gone", folder))
    for tmp in store.abandoned_temp_folders():
        add(Problem("temp", f"temp folder {tmp.name}", f"in {tmp.parent.name}/", tmp))
    for table, (rows, dirs) in store.index_drift().items():
        what = table[:-1]  # run, experiment
        for name in sorted(rows - bad):  # damaged entries leave the index when they are removed
            add(Problem("stale_row", f"{what} {name}", "indexed, but its directory is gone or incomplete", store.root / table / name))
        for name in sorted(dirs - bad):
            add(Problem("unindexed", f"{what} {name}", "complete, but not in the index", store.root / table / name))
    result.problems.sort(key=lambda p: list(KINDS).index(p.kind))
    return result


def _writer(record: Mapping[str, Any]) -> str:
    writer = record.get("writer") or {}
    return f"(pid {writer['pid']})" if writer.get("pid") else "(unnamed: older record, unchanged for a day)"


def format_check(result: CheckResult) -> str:
    """The problems, one section per kind, and a summary line."""
    checked = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in result.checked.items()) or "nothing"
    lines = [f"Checked {result.root}: {checked}."]
    if result.unverified:
        lines.append(f"{result.unverified} entr{'ies' if result.unverified != 1 else 'y'} written before digests existed "
                     "(complete, not verifiable; not a problem).")
    by_kind = Counter(p.kind for p in result.problems)
    for kind, heading in KINDS.items():
        if by_kind[kind]:
            lines.append(f"\n{heading}: {by_kind[kind]}")
            lines += [f"  {p.name:36s} {p.detail}" for p in result.problems if p.kind == kind]
    if result.problems:
        lines.append(f"\n{len(result.problems)} problem(s) found.")
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def repair(store: Store, result: CheckResult, write_report: Callable[[dict[str, Any]], Path] | None = None) -> tuple[list[str], list[str]]:
    """Fix the problems of ``result``: remove damaged entries and temp folders of dead writers, make the index agree
    with the directories, mark stale running experiments "interrupted" and complete ones whose runs are gone
    "incomplete", re-write reports with ``write_report`` (the report layer's). Returns (what was done, what is left)."""
    done: list[str] = []
    left: list[str] = []
    for p in result.problems:
        if p.kind == "corrupt" and p.name.startswith("experiment "):
            (p.path / "experiment.json").unlink(missing_ok=True)  # unreadable: nothing to keep; its report, if any, stays
            done.append(f"removed the unreadable record of {p.name}")
        elif p.kind in ("corrupt", "incomplete"):
            store.remove_entry(p.path)
            done.append(f"removed {p.kind} {p.name} (the next run recomputes it)")
        elif p.kind == "temp":
            store.remove_entry(p.path)
            done.append(f"removed {p.name}")
    if any(p.kind in ("corrupt", "incomplete", "stale_row", "unindexed") for p in result.problems):
        store.sync_index()
        rows = sum(p.kind in ("stale_row", "unindexed") for p in result.problems)
        if rows:
            done.append(f"made the index agree with the directories ({rows} row(s))")
    for p in result.problems:
        if p.kind not in ("stale_running", "incomplete_experiment", "missing_report"):
            continue
        record = read_json(p.path / "experiment.json")
        if p.kind == "stale_running":
            store.save_experiment({**record, "status": "interrupted"})
            done.append(f"marked {p.name} interrupted")
        elif p.kind == "incomplete_experiment":
            store.save_experiment({**record, "status": "incomplete"})
            source = f" `unlearnkit run {record['source']}`" if record.get("source") else ""
            done.append(f"marked {p.name} incomplete; run it again{source} to recompute its runs and report")
        elif write_report is None:
            left.append(f"{p.name}: report gone; `unlearnkit report {record['exp_id']}` writes it")
        else:
            try:
                done.append(f"re-wrote the report of {p.name}: {write_report(record)}")
            except UnlearnError as exc:
                left.append(f"{p.name}: cannot re-write its report ({exc}); `unlearnkit report {record['exp_id']}` after a rerun")
    return done, left
