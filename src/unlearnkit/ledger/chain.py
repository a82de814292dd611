"""The hash chain and the signatures of certificates.

A certificate is a JSON object. Its ``entry_hash`` is the sha256 of the canonical JSON (sorted keys, no spaces) of
every other field except ``signature``; one of those fields is ``previous_entry_hash``, so each hash covers its entry
and, through the previous hash, the whole chain before it. The signature (Ed25519, ``cryptography``) is over the ASCII
entry hash; the signer's public-key fingerprint sits inside the hashed fields, so it cannot be swapped either.

The forget set enters a certificate only as a salted hash: sha256 over a per-request random salt (kept in the ledger,
never in the certificate) and the sorted ids, so nobody holding the certificate can test guesses of who was deleted,
while the operator can prove which ids a certificate covers by revealing the salt.

Longer than 60 lines: hashing, key generation, loading and signing belong together (all the cryptography is here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, LedgerError
from ..io import atomic_write_bytes, canonical_json, to_jsonable

GENESIS = "0" * 64  # the previous hash of the first entry
UNHASHED = ("entry_hash", "signature")  # the fields an entry hash does not cover
INSTALL = "pip install 'unlearnkit[ledger]' (sqlalchemy and cryptography)"


def entry_hash(cert: Mapping[str, Any]) -> str:
    """sha256 hex of the certificate's canonical JSON without ``entry_hash`` and ``signature``."""
    body = {k: v for k, v in cert.items() if k not in UNHASHED}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def normalised(cert: Mapping[str, Any]) -> dict[str, Any]:
    """``cert`` as plain JSON types, exactly as it reads back from its file (so its hash survives a round trip)."""
    return json.loads(json.dumps(to_jsonable(cert)))


def new_salt() -> str:
    return os.urandom(16).hex()


def forget_fingerprint(ids: Sequence[int] | np.ndarray, salt: str) -> str:
    """The salted, order-free fingerprint of a forget set: sha256(salt ‖ tag ‖ sorted int64 ids)."""
    arr = np.unique(np.asarray(ids, dtype=np.int64))
    digest = hashlib.sha256(bytes.fromhex(salt) + b"unlearnkit.forget-set.v1" + arr.astype("<i8").tobytes())
    return "sha256:" + digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- keys
def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError(f"Signing certificates needs the 'cryptography' package: {INSTALL}.") from None
    return serialization, ed25519


def key_fingerprint(public_key: Any) -> str:
    """``ed25519:`` + sha256 hex of the raw 32-byte public key."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Any) -> str:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` (refusing to replace one) with ``mode``, atomically."""
    atomic_write_bytes(path, data, make_parents=False, mode=mode, exclusive=True)


def keygen(path: str | Path) -> tuple[Path, Path, str]:
    """A new Ed25519 key pair: the private key (PKCS#8 PEM, file mode 0600) at ``path``, the public key at
    ``path.pub``. Existing files are never replaced. Returns (private path, public path, public-key fingerprint)."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    for p in (path, pub):
        if p.exists():
            raise ConfigError(f"{p} exists; keygen never replaces a key (a certificate signed by it could no longer be checked). "
                              "Choose another path or move the old key away.")
    if not path.parent.is_dir():
        raise ConfigError(f"Cannot write the key to {path}: folder {path.parent} does not exist.")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_new(path, private, 0o600)
    _write_new(pub, public_pem(key.public_key()).encode("ascii"), 0o644)
    return path, pub, key_fingerprint(key.public_key())


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in the PEM file ``path``; a ConfigError naming the problem otherwise."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the signing key {path}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key ({exc}); `unlearnkit keygen` makes one.") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; `unlearnkit keygen` makes one.")
    return key


def load_public_key(source: str | Path | bytes) -> Any:
    """An Ed25519 public key from a PEM file path or PEM bytes/text."""
    serialization, ed25519 = _crypto()
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data = source.encode("ascii")
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read the public key {source}: {exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"Not a PEM public key ({exc}); `unlearnkit keygen` writes one as <key>.pub.") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"The public key is a {type(key).__name__}, not Ed25519.")
    return key


def sign(private_key: Any, digest: str) -> str:
    """The base64 Ed25519 signature of the ASCII hex ``digest``."""
    return base64.b64encode(private_key.sign(digest.encode("ascii"))).decode("ascii")


def signature_valid(public_key: Any, digest: str, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError):
        return False
    try:
        public_key.verify(raw, digest.encode("ascii"))
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_certificate(text: str | bytes, where: str) -> dict[str, Any]:
    """A certificate's JSON object, or a LedgerError naming why it is not one (truncated, damaged, not an object)."""
    try:
        cert = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{where} is not valid JSON ({exc}): the certificate is truncated or damaged.") from None
    if not isinstance(cert, dict) or cert.get("format") != "unlearnkit.certificate":
        raise LedgerError(f"{where} is JSON but not an unlearnkit certificate (its 'format' is not 'unlearnkit.certificate').")
    return cert
