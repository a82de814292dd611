"""The package version, and the code version that every run and reference key carries."""

from __future__ import annotations

__version__ = "0.1.0"


def code_version() -> str:
    """The package version; part of every run key (bump it when numbers move)."""
    return __version__
