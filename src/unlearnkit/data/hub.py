"""Benchmark data from the Hugging Face hub, through the ``datasets`` library: the rows of one (config, split) of a
hub dataset, read by ``datasets.load_dataset(repo, config, split=split)`` — or, for offline copies and tests, the
same files from a local folder laid out as on the hub (or listed explicitly), read by ``datasets.load_dataset`` with
``data_files`` — and checked against the columns the benchmark defines.

Where a (config, split) lives in a copy of a hub repository (``LAYOUTS``, tried in this order):

* ``{config}/{split}-*.parquet`` — the layout ``datasets.push_to_hub`` writes (MUSE, WMDP);
* ``{config}/{split}/*.parquet`` — the hub's automatic parquet conversion (branch ``refs/convert/parquet``), which
  every public dataset has;
* ``{config}.json`` / ``{config}.jsonl`` (split ``train``) — JSON-lines files at the repository root (TOFU);
* ``{config}/{split}.json`` / ``.jsonl`` — per-split JSON files (MUSE's original upload).

A dataset without named configs (``config=None``) is looked up as config ``default``, and also as
``data/{split}-*.parquet`` (``push_to_hub``'s layout without a config).

``datasets`` is imported when data is loaded, so ``import unlearnkit`` never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataUnavailable, TaskError
from ..registry import suggest

LAYOUTS = ("{config}/{split}-*.parquet", "{config}/{split}/*.parquet", "{config}.json", "{config}.jsonl", "{config}/{split}.json",
           "{config}/{split}.jsonl")
ROOT_FILES = ("{config}.json", "{config}.jsonl")  # these hold the config's only split, "train"


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark's data comes from.

    ``repo``: the hub dataset id (``locuslab/TOFU``), read with ``datasets.load_dataset(repo, config, split=split,
    revision=revision)``. Or ``local``: a folder holding the same files (a ``huggingface-cli download --repo-type
    dataset`` copy, or files written in the same layout; see ``LAYOUTS``). Or ``data_files``: explicit files per
    ``"config"`` or ``"config/split"`` (a path or a list of paths; ``.parquet``, ``.json`` or ``.jsonl``), which win
    over ``local``. ``cache_dir``: the ``datasets`` cache (default: its own)."""

    repo: str
    local: str | None = None
    data_files: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    revision: str | None = None
    cache_dir: str | None = None

    @classmethod
    def of(cls, repo: str, local: str | None = None, data_files: Mapping[str, Any] | None = None, revision: str | None = None,
           cache_dir: str | None = None) -> HubSource:
        """Checked construction from user parameters (a data source's ``source``/``local``/``data_files``/...)."""
        if not isinstance(repo, str) or not repo:
            raise ConfigError(f"The hub dataset id must be a non-empty string like 'locuslab/TOFU', got {repo!r}.")
        if local is not None and not isinstance(local, (str, os.PathLike)):
            raise ConfigError(f"local must be a folder path, got {local!r}.")
        files = dict(data_files or {})
        for key, value in files.items():
            paths = [value] if isinstance(value, (str, os.PathLike)) else value
            if not isinstance(key, str) or not isinstance(paths, Sequence) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
                raise ConfigError(f"data_files maps 'config' or 'config/split' to a file path or a list of paths; got {key!r}: {value!r}.")
        return cls(repo, None if local is None else str(local), files, revision, cache_dir)

    def describe(self) -> dict[str, Any]:
        """What goes into the data source's info (and so into run keys)."""
        out: dict[str, Any] = {"repo": self.repo}
        if self.local is not None:
            out["local"] = self.local
        if self.data_files:
            out["data_files"] = {k: (str(v) if isinstance(v, (str, os.PathLike)) else [str(p) for p in v]) for k, v in self.data_files.items()}
        if self.revision is not None:
            out["revision"] = self.revision
        return out

    def files(self, config: str | None, split: str) -> list[Path] | None:
        """The local files of (config, split), or None when this source reads the hub."""
        config = config or "default"
        for key in (f"{config}/{split}", config):
            if key in self.data_files:
                value = self.data_files[key]
                paths = [Path(value)] if isinstance(value, (str, os.PathLike)) else [Path(p) for p in value]
                missing = [str(p) for p in paths if not p.is_file()]
                if missing:
                    raise DataUnavailable(f"{self.repo} {config}/{split}: data_files[{key!r}] names missing file(s) {missing}.")
                return paths
        if self.local is None:
            return None
        root = Path(self.local).expanduser()
        if not root.is_dir():
            raise DataUnavailable(f"{self.repo}: the local copy {root} is not a folder.")
        layouts = LAYOUTS + (("data/{split}-*.parquet",) if config == "default" else ())
        for pattern in layouts:
            if pattern in ROOT_FILES and split != "train":
                continue
            found = sorted(root.glob(pattern.format(config=config, split=split)))
            if found:
                return found
        tried = ", ".join(p.format(config=config, split=split) for p in layouts)
        raise DataUnavailable(f"{self.repo} {config}/{split} is not in the local copy {root} (looked for {tried}). Download the "
                              f"dataset there (huggingface-cli download {self.repo} --repo-type dataset --local-dir {root}), or leave "
                              "local unset to read the hub (needs internet).")


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency of the lm extra
        raise ConfigError("Hub benchmarks (TOFU, MUSE, WMDP) need the datasets package: pip install 'unlearnkit[lm]' "
                          "(or pip install datasets).") from None
    return datasets


def load_rows(source: HubSource, config: str | None, split: str) -> list[dict[str, Any]]:
    """The rows of ``config``/``split`` (``config`` None: the dataset's default) as dicts, through
    ``datasets.load_dataset``: from the hub, or from the local files of ``source`` (``data_files`` of their format)."""
    datasets = _datasets()
    files = source.files(config, split)
    try:
        if files is None:
            ds = datasets.load_dataset(source.repo, config, split=split, revision=source.revision, cache_dir=source.cache_dir)
        else:
            kinds = {"parquet" if f.suffix == ".parquet" else "json" if f.suffix in (".json", ".jsonl") else f.suffix for f in files}
            if len(kinds) != 1 or not kinds <= {"parquet", "json"}:
                raise ConfigError(f"{source.repo} {config}/{split}: files must all be .parquet or all .json/.jsonl, got "
                                  f"{[f.name for f in files]}.")
            ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train", cache_dir=source.cache_dir)
    except (ConfigError, DataUnavailable):
        raise
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        where = "its local files" if files is not None else "the Hugging Face hub (needs internet, and access for gated datasets)"
        raise DataUnavailable(f"Cannot load {source.repo} {config}/{split} from {where}: {exc}") from None
    except ValueError as exc:  # datasets: unknown config or split of a hub dataset
        raise ConfigError(f"Cannot load {source.repo} {config}/{split}: {exc}") from None
    return [dict(row) for row in ds]


Column = tuple[str, str]  # (name, kind): kind "str", "int", "str_list"; "str?" etc.: optional (checked where present)


def check_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], where: str, *, min_rows: int = 1) -> None:
    """Every row has ``columns`` with values of their kind (``str``, ``int``, ``str_list``); a kind ending in ``?`` is
    an optional column, checked only when the table has it. A clear TaskError naming the table, the column and the row
    otherwise."""
    if len(rows) < min_rows:
        raise TaskError(f"{where}: {len(rows)} row(s); need at least {min_rows}.")
    have = set(rows[0]) if rows else set()
    for name, kind in columns:
        if name not in have and not kind.endswith("?"):
            raise TaskError(f"{where}: missing column {name!r} (has {sorted(have)}).{suggest(name, have) if have else ''}")
    columns = [(name, kind.rstrip("?")) for name, kind in columns if name in have]
    for i, row in enumerate(rows):
        for name, kind in columns:
            value = row.get(name)
            ok = (isinstance(value, str) if kind == "str" else
                  isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
                  isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))
            if not ok:
                want = {"str": "a string", "int": "an integer", "str_list": "a list of strings"}[kind]
                raise TaskError(f"{where}: row {i}, column {name!r} must be {want}, got {value!r:.80}.")


def check_name(value: str, known: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``known``, else a ConfigError naming the allowed values (with a suggestion)."""
    if value not in known:
        raise ConfigError(f"{what} must be one of {list(known)}, got {value!r}.{suggest(str(value), set(known))}")
    return value


__all__ = ["LAYOUTS", "HubSource", "check_name", "check_rows", "load_rows"]
