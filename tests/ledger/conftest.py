"""Ledger fixtures: a small digits model directory (trained once per session) and a ledger with three entries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("cryptography")

from unlearnkit.ledger import Ledger, keygen, train_model_dir  # noqa: E402

MODEL = {"name": "mlp", "params": {"hidden": [32]}}
TRAIN = {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 0.003}
CHEAP = {"method": "finetune", "params": {"epochs": 1}}  # a real approximate method, well under a second on digits


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return train_model_dir(tmp_path_factory.mktemp("model") / "digits-mlp", dataset={"name": "digits"}, model=MODEL, train=TRAIN, seed=0)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private, public, _ = keygen(folder / "signer")
    return private, public


@pytest.fixture(scope="session")
def built_ledger(tmp_path_factory, model_dir, keys) -> Path:
    """A signed ledger of three requests on the digits model: retrain (outputs evidence), then two fine-tunes."""
    folder = tmp_path_factory.mktemp("ledger")
    with Ledger(folder / "ledger.sqlite", key=keys[0]) as ledger:
        ledger.forget(model_dir, [3, 14, 15], method="retrain", requester="alice", request_id="r1", evidence="outputs")
        ledger.forget(model_dir, [92, 65], **CHEAP, requester="bob", request_id="r2")
        ledger.forget(model_dir, [35, 89, 79], **CHEAP, requester="carol", request_id="r3")
    return folder


@pytest.fixture()
def ledger_copy(built_ledger, tmp_path) -> Path:
    """A private copy of ``built_ledger`` (its SQLite file and files folder) to tamper with; returns the SQLite path."""
    shutil.copy(built_ledger / "ledger.sqlite", tmp_path / "ledger.sqlite")
    shutil.copytree(built_ledger / "ledger-files", tmp_path / "ledger-files")
    return tmp_path / "ledger.sqlite"
