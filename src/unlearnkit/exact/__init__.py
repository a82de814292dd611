"""Exact (and certified) unlearning by design: training regimes whose deletions are exact or certified and cheap."""

from .base import GUARANTEES, Backbone, ExactModel, Receipt, ids_fingerprint, require_exact
from .s3t import S3tModel

__all__ = ["GUARANTEES", "Backbone", "ExactModel", "Receipt", "ids_fingerprint", "require_exact", "S3tModel"]
