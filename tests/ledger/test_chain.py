"""Hash chain, salted fingerprints and Ed25519 signatures, against hand-computed values."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from unlearnkit.errors import ConfigError, LedgerError
from unlearnkit.ledger import chain


def test_entry_hash_is_sha256_of_the_canonical_json_without_hash_and_signature():
    cert = {"format": "unlearnkit.certificate", "seq": 1, "b": [1, 2], "a": {"y": None, "x": 0.5},
            "previous_entry_hash": chain.GENESIS, "entry_hash": "whatever", "signature": "whatever"}
    text = ('{"a":{"x":0.5,"y":null},"b":[1,2],"format":"unlearnkit.certificate",'
            '"previous_entry_hash":"' + "0" * 64 + '","seq":1}')
    assert chain.entry_hash(cert) == hashlib.sha256(text.encode()).hexdigest()
    assert chain.entry_hash({**cert, "signature": "other", "entry_hash": "x"}) == chain.entry_hash(cert)
    assert chain.entry_hash({**cert, "previous_entry_hash": "1" * 64}) != chain.entry_hash(cert)  # the link is covered


def test_forget_fingerprint_is_salted_and_order_free():
    salt = "00" * 15 + "01"
    expected = hashlib.sha256(bytes(15) + b"\x01" + b"unlearnkit.forget-set.v1" + np.array([2, 7, 9], "<i8").tobytes()).hexdigest()
    assert chain.forget_fingerprint([9, 2, 7], salt) == "sha256:" + expected
    assert chain.forget_fingerprint([2, 7, 9], salt) == chain.forget_fingerprint([7, 9, 2], salt)
    assert chain.forget_fingerprint([2, 7, 9], "00" * 16) != chain.forget_fingerprint([2, 7, 9], salt)
    assert len(chain.new_salt()) == 32 and chain.new_salt() != chain.new_salt()


def test_keygen_modes_fingerprint_and_signatures(tmp_path):
    private, public, fp = chain.keygen(tmp_path / "k")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public == tmp_path / "k.pub"
    key = chain.load_private_key(private)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fp == "ed25519:" + hashlib.sha256(raw).hexdigest()
    pub = chain.load_public_key(public)
    assert chain.key_fingerprint(pub) == fp
    digest = "ab" * 32
    sig = chain.sign(key, digest)
    assert len(base64.b64decode(sig)) == 64
    assert chain.signature_valid(pub, digest, sig)
    assert not chain.signature_valid(pub, "ac" + digest[2:], sig)  # another hash
    assert not chain.signature_valid(pub, digest, sig[:-4] + "AAA=")  # another signature
    assert not chain.signature_valid(pub, digest, "not base64!")
    _, other_pub, _ = chain.keygen(tmp_path / "other")
    assert not chain.signature_valid(chain.load_public_key(other_pub), digest, sig)  # wrong key
    with pytest.raises(ConfigError, match="never replaces"):
        chain.keygen(tmp_path / "k")
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        chain.load_private_key(tmp_path / "junk")


def test_truncated_and_foreign_json_are_not_certificates():
    with pytest.raises(LedgerError, match="truncated or damaged"):
        chain.parse_certificate('{"format": "unlearnkit.certificate", "seq"', "c.json")
    with pytest.raises(LedgerError, match="not an unlearnkit certificate"):
        chain.parse_certificate('{"hello": 1}', "c.json")
    with pytest.raises(LedgerError, match="truncated or damaged"):
        chain.parse_certificate(b"\xff\xfe", "c.json")
