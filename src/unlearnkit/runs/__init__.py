"""Run records, run keys (content hashes), the store (directories + SQLite index), executors."""

from .key import code_version, run_key
from .store import Store

__all__ = ["Store", "code_version", "run_key"]
