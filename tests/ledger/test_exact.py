"""Exact regimes in the ledger: a deletion from an exact model goes through ``ExactModel.delete`` and certifies the
regime's guarantee; another method on it is refused; stored exact models (``exact.persist``) are deleted from, verified
and replayed byte for byte (``--deep``: SISA retrains the affected shard from its stored checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.data.forget import task_from_ids
from unlearnkit.data.sources import load_dataset
from unlearnkit.errors import ConfigError, TaskError
from unlearnkit.ledger import Ledger, load_model_dir, make_spec, train_model_dir
from unlearnkit.ledger.models import Loaded, live_split
from unlearnkit.ledger.request import execute
from unlearnkit.methods import build_method
from unlearnkit.models import build_model
from unlearnkit.references import References
from unlearnkit.train import TrainConfig

from .conftest import MODEL, TRAIN

ACU = {"backbone": "random", "buffer": 64}


@pytest.fixture(scope="module")
def acu_loaded():
    source = load_dataset("digits")
    spec = make_spec(model=MODEL, dataset={"name": "digits"}, train=TRAIN, seed=0, kind="exact")
    refs = References(model_factory=lambda: build_model("mlp", source.input_shape, 10, hidden=[32]), train_config=TrainConfig.from_dict(TRAIN))
    task = task_from_ids("digits", source.train, source.test, source.train.ids[:1], forget_info={"kind": "ids"}, forget_label="build",
                         n_classes=10)
    model = build_method("acu", ACU).build(task, refs, seed=0, device="cpu", progress=False)
    return Loaded(spec, model, source, live_split(source, []))


def test_exact_deletion_certifies_the_regimes_guarantee(acu_loaded):
    out = execute(acu_loaded, np.array([5, 6]), build_method("acu", ACU), evidence="outputs", seed=1, device="cpu", progress=False)
    assert out.exact and out.module is acu_loaded.module
    assert out.guarantee["type"] == "exact_above_backbone" and out.guarantee["backbone"]["source"].startswith("random")
    assert out.info["receipt"]["ids"] == [5, 6] and not np.isin([5, 6], out.module.live_ids()).any()
    assert out.evidence["tier"] == "outputs" and "accuracy" in out.evidence["metrics"]
    with pytest.raises(ConfigError, match="delete from it with --method acu"):
        execute(acu_loaded, np.array([7]), build_method("finetune", {"epochs": 1}), evidence="none", seed=1, device="cpu", progress=False)
    with pytest.raises(TaskError, match="already deleted"):  # the regime's own request checks
        execute(acu_loaded, np.array([5]), build_method("acu", ACU), evidence="none", seed=1, device="cpu", progress=False)


SISA = {"shards": 2, "slices": 2}


@pytest.fixture(scope="module")
def sisa_dir(tmp_path_factory):
    return train_model_dir(tmp_path_factory.mktemp("sisa") / "sisa", dataset={"name": "digits"}, model=MODEL, train=TRAIN, seed=0,
                           method="sisa", params=SISA)


def test_stored_sisa_model_deleted_verified_and_replayed(sisa_dir, tmp_path):
    assert load_model_dir(sisa_dir).spec["kind"] == "exact"
    with Ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(ConfigError, match="--method sisa"):
            ledger.forget(sisa_dir, [5], method="finetune", params={"epochs": 1})
        cert = ledger.forget(sisa_dir, [5, 6], method="sisa", params=SISA, request_id="s1")
        assert cert["guarantee"]["type"] == "exact" and cert["model"]["kind"] == "exact"
        assert cert["guarantee"]["touched"]  # which shards were retrained
        after = load_model_dir(ledger.model_path(cert["model"]["after"]))
        assert not np.isin([5, 6], after.module.live_ids()).any() and after.spec["excluded_ids"] == [5, 6]
        cert2 = ledger.forget(sisa_dir, [7], method="sisa", params=SISA, request_id="s2")  # from the stored model after s1
        assert cert2["model"]["before"] == cert["model"]["after"]
        result = ledger.verify(ledger.cert_path(cert2["entry_hash"]), deep=True)
        assert result.ok and any("bit-identical" in c and "checkpoints" in c for c in result.checked), result.text()
        # a shard's weights changed in the stored model: named by the digest check
        weights = ledger.model_path(cert2["model"]["after"]) / "exact" / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0x01
        weights.write_bytes(bytes(data))
        result = ledger.verify()
        assert (2, "model.after") in {(p.entry, p.field) for p in result.problems} and "exact/weights.safetensors" in result.text()


OTHER = {"acu": {"backbone": "public", "buffer": 64}, "s3t": {"shards": 2, "slices": 2, "steps": 5},
         "dp2unlearning": {"epsilon": 8.0, "dp_epochs": 1, "finetune_epochs": 1}}
GUARANTEE = {"acu": "exact_above_backbone", "s3t": "exact_above_backbone", "dp2unlearning": "certified_dp"}


@pytest.mark.parametrize("method", sorted(OTHER))
def test_every_stored_exact_regime_is_deleted_from_certified_and_replayed(method, tmp_path):
    """ACU, S3T and DP2Unlearning saved by exact.persist: a request goes through the regime, the certificate states its
    guarantee (the backbone's provenance; ε and δ), and ``--deep`` replays the deletion to the same bytes."""
    pytest.importorskip("opacus") if method == "dp2unlearning" else None
    folder = train_model_dir(tmp_path / method, dataset={"name": "digits"}, model=MODEL, train=TRAIN, seed=0, method=method,
                             params=OTHER[method])
    loaded = load_model_dir(folder)
    protected = loaded.module.backbone.protected_ids if loaded.module.backbone is not None else np.zeros(0, dtype=np.int64)
    ids = [int(i) for i in np.setdiff1d(loaded.module.live_ids(), protected)[:3]]
    with Ledger(tmp_path / "l.sqlite") as ledger:
        if len(protected):
            with pytest.raises(Exception, match="frozen backbone was trained on"):
                ledger.forget(folder, [int(protected[0])], method=method, params=OTHER[method], request_id="refused")
            assert ledger.entries() == []
        cert = ledger.forget(folder, ids, method=method, params=OTHER[method], request_id="r1")
        assert cert["guarantee"]["type"] == GUARANTEE[method]
        if method == "dp2unlearning":
            g = cert["guarantee"]  # group privacy for the 3 records deleted: (3ε, 3·e^(2ε)·δ)
            assert g["per_record_epsilon"] <= 8.0 + 1e-6 and g["epsilon"] == pytest.approx(3 * g["per_record_epsilon"])
            assert g["delta"] == pytest.approx(min(1.0, 3 * np.exp(2 * g["per_record_epsilon"]) * g["per_record_delta"]))  # vacuous here
        else:
            assert cert["guarantee"]["backbone"]["n_protected"] == len(protected) > 0
        after = load_model_dir(ledger.model_path(cert["model"]["after"]))
        assert not np.isin(ids, after.module.live_ids()).any()
        result = ledger.verify(ledger.cert_path(cert["entry_hash"]), deep=True)
        assert result.ok and any("bit-identical" in c for c in result.checked), result.text()
