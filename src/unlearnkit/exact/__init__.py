"""Exact (and certified) unlearning by design: training regimes whose deletions are exact or certified and cheap."""

from .acu import AcuModel
from .base import GUARANTEES, Backbone, ExactModel, Receipt, delete, ids_fingerprint, require_exact
from .dp import DPModel
from .persist import digest, load_exact, save_exact
from .s3t import S3tModel
from .sisa import SisaModel, train_sisa

__all__ = ["GUARANTEES", "AcuModel", "Backbone", "DPModel", "ExactModel", "Receipt", "S3tModel", "SisaModel",
           "delete", "digest", "ids_fingerprint", "load_exact", "require_exact", "save_exact", "train_sisa"]
