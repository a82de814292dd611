"""Shared fixtures: sklearn digits tasks and reference models, built once per session."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from tests.benchmark_files import ITEMS_PER_AUTHOR
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.sources import load_dataset
from unlearnkit.models import build_model
from unlearnkit.runs.references import build_references
from unlearnkit.train import TrainConfig

# tiny models: one thread is as fast and does not spin-contend on a shared CPU (override: UNLEARNKIT_TEST_THREADS)
torch.set_num_threads(int(os.environ.get("UNLEARNKIT_TEST_THREADS", "1")))

REF_CONFIG = TrainConfig(epochs=40, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine")
HIDDEN = (64, 64)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def model_factory(source):
    return lambda: build_model("mlp", source.input_shape, source.n_classes, hidden=HIDDEN)


def _task(source, spec):
    return make_task("digits", source.train, source.test, spec, np.random.default_rng(0), n_classes=10)


@pytest.fixture(scope="session")
def random_task(digits):
    return _task(digits, ForgetSpec("random", fraction=0.1))


@pytest.fixture(scope="session")
def class_task(digits):
    return _task(digits, ForgetSpec("classes", classes=(3,)))


@pytest.fixture(scope="session")
def random_refs(digits, random_task):
    return build_references(random_task, model_factory(digits), REF_CONFIG, retrain_seeds=3)


@pytest.fixture(scope="session")
def classifier_task(random_task):
    return random_task


@pytest.fixture(scope="session")
def classifier_refs(random_refs):
    return random_refs


@pytest.fixture(scope="session")
def class_refs(digits, class_task):
    return build_references(class_task, model_factory(digits), REF_CONFIG, retrain_seeds=3)


@pytest.fixture()
def original(random_refs):
    """A fresh copy of the original digits model (safe to modify)."""
    return copy.deepcopy(random_refs.original)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------- regression (diabetes)
REGRESSION_CONFIG = TrainConfig(epochs=100, batch_size=512, optimizer="adam", lr=0.02, schedule="cosine")  # full batch: ~1 s for 4 models
REGRESSION_HIDDEN = (64, 64)


@pytest.fixture(scope="session")
def diabetes():
    return load_dataset("diabetes")


def regressor_factory(source):
    return lambda: build_model("mlp", source.input_shape, 1, hidden=REGRESSION_HIDDEN)


@pytest.fixture(scope="session")
def regression_task(diabetes):
    """Diabetes, random 10% forget set, as a task of modality "regression" (n_classes None)."""
    import dataclasses

    spec = ForgetSpec("random", fraction=0.1)
    task = make_task("diabetes", diabetes.train, diabetes.test, spec, np.random.default_rng(0), n_classes=None)
    return dataclasses.replace(task, modality="regression")


@pytest.fixture(scope="session")
def regression_refs(diabetes, regression_task):
    """An MLP regressor (64, 64) that memorises its training set, and 3 retrained seeds."""
    return build_references(regression_task, regressor_factory(diabetes), REGRESSION_CONFIG, retrain_seeds=3)


# ---------------------------------------------------------------------------- causal LM (fictitious profiles, tiny Llama)
LM_CONFIG = TrainConfig(epochs=30, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine")  # memorises in ~5 s per model


@pytest.fixture(scope="session")
def profiles_source():
    """20 fictitious profiles (+2 holdout), word-level tokenizer; no download."""
    return load_dataset("profiles", scale="tiny")


def tiny_llama_factory(source):
    return lambda: build_model("tiny_llama", source.input_shape, source.n_outputs)


@pytest.fixture(scope="session")
def causal_lm_task(profiles_source):
    """Forget 10% of the profiles (2 people, 12 question-answer items)."""
    s = profiles_source
    return make_task("profiles", s.train, s.test, ForgetSpec("profiles", fraction=0.1), np.random.default_rng(0), n_classes=None,
                     modality=s.modality, probes=s.probes)


@pytest.fixture(scope="session")
def causal_lm_refs(profiles_source, causal_lm_task):
    """Target (fine-tuned on all profiles) and two retain models (the oracle), tiny Llama."""
    return build_references(causal_lm_task, tiny_llama_factory(profiles_source), LM_CONFIG, retrain_seeds=2)


# ---------------------------------------------------------------------------- hub benchmarks (TOFU, MUSE, WMDP), local copies
BENCH_CONFIG = TrainConfig(epochs=20, batch_size=8, optimizer="adam", lr=3e-3, schedule="cosine")  # a second or two per model


@pytest.fixture(scope="session")
def benchmark_files(tmp_path_factory):
    """A few rows of TOFU, MUSE-News and WMDP in their hub schemas and layouts (tests/benchmark_files.py)."""
    from tests.benchmark_files import write_muse, write_tofu, write_wmdp

    root = tmp_path_factory.mktemp("hub")
    questions, corpora = write_wmdp(root / "wmdp", root / "wmdp-corpora")
    return {"tofu": write_tofu(root / "TOFU"), "muse": write_muse(root / "MUSE-News"), "wmdp": questions, "wmdp_corpora": corpora,
            "cache": str(root / "datasets-cache")}


BENCH_PARAMS = {
    "tofu": lambda f: {"local": str(f["tofu"]), "items_per_author": ITEMS_PER_AUTHOR},
    "muse": lambda f: {"local": str(f["muse"]), "chunk_tokens": 16, "max_length": 64},
    "wmdp": lambda f: {"local": str(f["wmdp"]), "corpora_local": str(f["wmdp_corpora"]), "chunk_tokens": 4, "max_length": 64},
}


def _bench_source(name, files):
    return load_dataset(name, cache_dir=files["cache"], **BENCH_PARAMS[name](files))


def _bench_task(source):
    return make_task(source.name, source.train, source.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                     modality=source.modality, probes=source.probes)


@pytest.fixture(scope="session")
def tofu_source(benchmark_files):
    return _bench_source("tofu", benchmark_files)


@pytest.fixture(scope="session")
def tofu_task(tofu_source):
    return _bench_task(tofu_source)


@pytest.fixture(scope="session")
def tofu_refs(tofu_source, tofu_task):
    return build_references(tofu_task, tiny_llama_factory(tofu_source), BENCH_CONFIG, retrain_seeds=2)


@pytest.fixture(scope="session")
def muse_source(benchmark_files):
    return _bench_source("muse", benchmark_files)


@pytest.fixture(scope="session")
def muse_task(muse_source):
    return _bench_task(muse_source)


@pytest.fixture(scope="session")
def muse_refs(muse_source, muse_task):
    return build_references(muse_task, tiny_llama_factory(muse_source), BENCH_CONFIG, retrain_seeds=2)


@pytest.fixture(scope="session")
def wmdp_source(benchmark_files):
    return _bench_source("wmdp", benchmark_files)


@pytest.fixture(scope="session")
def wmdp_task(wmdp_source):
    return _bench_task(wmdp_source)


@pytest.fixture(scope="session")
def wmdp_refs(wmdp_source, wmdp_task):
    return build_references(wmdp_task, tiny_llama_factory(wmdp_source), BENCH_CONFIG, retrain_seeds=2)
