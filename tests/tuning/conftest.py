"""Shared fixtures of the tuning tests."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.types import Split


@pytest.fixture
def touched(monkeypatch) -> list[np.ndarray]:
    """The ids of every split iterated over (``Split.batches``) while the test runs, in order: the no-peeking recorder."""
    seen: list[np.ndarray] = []
    batches = Split.batches

    def recording(self, *args, **kwargs):
        seen.append(np.asarray(self.ids))
        return batches(self, *args, **kwargs)

    monkeypatch.setattr(Split, "batches", recording)
    return seen
