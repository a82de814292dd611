"""Adapters: one per modality; how to get per-example losses and outputs from a model and a batch.
Each registers a factory ``(task) -> adapter`` under its modality name in ``ADAPTERS``."""

from __future__ import annotations

from typing import Any

from ..registry import ADAPTERS, import_submodules
from ..types import Task
from .classifier import ClassifierAdapter

import_submodules(__name__)


def get_adapter(task: Task) -> Any:
    """The adapter for a task's modality (``ADAPTERS`` lists them)."""
    return ADAPTERS.get(task.modality)(task)


__all__ = ["ClassifierAdapter", "get_adapter"]
