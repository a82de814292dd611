"""Exact (and certified) unlearning by design: training regimes whose deletions are exact or certified and cheap."""

from .base import GUARANTEES, Backbone, ExactModel, Receipt, ids_fingerprint, require_exact
from .dp import DPModel

__all__ = ["GUARANTEES", "Backbone", "DPModel", "ExactModel", "Receipt", "ids_fingerprint", "require_exact"]
