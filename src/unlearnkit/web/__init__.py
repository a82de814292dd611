"""The comparator: a web app to look inside unlearned models side by side (``unlearnkit serve``). The app itself needs
the ``web`` extra (FastAPI, uvicorn); the per-run analysis (``web.analysis``) needs only the core."""

from __future__ import annotations

from typing import Any


def create_app(store_dir: Any, *, read_only: bool = True) -> Any:
    """The FastAPI app over the run store ``store_dir`` (see ``unlearnkit.web.app.create_app``)."""
    from .app import create_app as _create

    return _create(store_dir, read_only=read_only)


__all__ = ["create_app"]
