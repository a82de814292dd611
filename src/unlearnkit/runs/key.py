"""The run id: a hash of everything that can change a number."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ..io import canonical_json
from ..version import code_version

SCHEMA_VERSION = 1


def run_key(parts: Mapping[str, Any]) -> str:
    """Hex id of ``parts`` (method + params, task fingerprint + version, references, metrics + params,
    seed, code version, schema). Equal parts give equal ids; any change gives a new id."""
    payload = {"schema": SCHEMA_VERSION, "code": code_version(), **dict(parts)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:20]
