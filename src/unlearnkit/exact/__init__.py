"""Exact (and certified) unlearning by design: training regimes whose deletions are exact or certified and cheap."""

from .acu import AcuModel
from .base import GUARANTEES, Backbone, ExactModel, Receipt, ids_fingerprint, require_exact

__all__ = ["AcuModel", "GUARANTEES", "Backbone", "ExactModel", "Receipt", "ids_fingerprint", "require_exact"]
