"""The deletion ledger: deletion requests recorded in a hash chain, signed certificates, and their verification.

Needs the ``ledger`` extra (SQLAlchemy, cryptography); ``ledger-pg`` adds psycopg for a PostgreSQL ledger. Importing
this package works without them; opening a ledger then says how to install them."""

from .chain import forget_fingerprint, keygen, load_public_key
from .ledger import Ledger, Problem, Verification, ledger_of
from .models import dir_digest, load_model_dir, make_spec, save_model_dir, train_model_dir
from .request import EVIDENCE_TIERS, read_ids

__all__ = ["EVIDENCE_TIERS", "Ledger", "Problem", "Verification", "dir_digest", "forget_fingerprint", "keygen", "ledger_of",
           "load_model_dir", "load_public_key", "make_spec", "read_ids", "save_model_dir", "train_model_dir"]
