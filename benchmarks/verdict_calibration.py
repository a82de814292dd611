"""Benchmark: is the verdict calibrated, and does each piece of evidence have power?

Calibration: retrain N fresh seeds (never used for the bands) and count how often a perfect unlearner — retraining
itself — is *not* called "removed" (the family-wise false-alarm rate, target ≤ 5%), with a Clopper–Pearson 95%
interval, and how often each evidence alone is outside its band in a direction that changes the verdict.

Power: planted cases with a known answer, over several instances (originals trained with different seeds):
(a) the original model -> not forgotten; (b) class forgetting only: the original with the forgotten class's output
bias pushed down just past every forget example's margin (every other weight intact: outputs look forgotten, a few
relearning steps restore them, the features still hold the class) -> suppressed; (c) a fresh retrained model pushed
further by gradient ascent on the forget set -> over-forgotten; (d) the original fine-tuned a little more on the
forget set -> not forgotten. Reported: each evidence's detection rate (outside its band in the direction the case
predicts) and the labels.

Settings: sklearn digits (MLP 64-64, random 10% and class 3 forget sets) with the full affordable classifier battery,
and the tiny fictitious-profiles task with the tiny Llama (the causal_lm default battery), as in tests/conftest.py.

    python benchmarks/verdict_calibration.py                  # ~10 min on 2 cores; writes docs/results/verdict_calibration.md
    python benchmarks/verdict_calibration.py --quick --output ''   # toy size
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# the default classifier battery plus every strong evidence affordable per model on digits (see LEFT_OUT)
CLASSIFIER_BATTERY = ("accuracy", "retrain_gap", "threshold_mia", "mia_efficacy", "relearn", "hidden_probe", "privacy_score",
                      "label_only", "lira", "mia_nn", "noise_floor")
LEFT_OUT = {
    "u_lira": "without a method under test its shadows are not unlearned and it is LiRA itself (same AUC as lira); with "
              "one it unlearns all 16 shadows per method",
}
FLIPS = (
    "Cross-machine flips of docs/results/classifiers.md (machine A: the file at 3b20f7a; machine B: f47eb05, where 3b20f7a's "
    "code gave B's table, so the machine moved them, not the code). (a) concept_poison, class 0: over-forgotten on A "
    "(retain 0.955, test 0.804) → removed on B (0.974, 0.825). The poisoned label is chosen once, from the original model's "
    "concept attributions, and for T-shirt/top it is a near-tie: on an original trained here with one torch thread, Dress "
    "(cosine 0.343) against Shirt (0.316). The original's bits depend on the machine's kernels and thread count, so the "
    "choice can flip; forcing each target on that original gives retain/test 0.961/0.811 (Dress) and 0.973/0.825 (Shirt) "
    "(two seeds each, sd ≤ 0.002) — the two machines' rows. Method seeds cannot move the choice, so the ± over 3 seeds "
    "(0.001) hides it: an instability of the method, which each verdict judged correctly. (b) salun and random_label, "
    "random 10% (over-forgotten → not forgotten) and (c) finetune and l1_sparse, class 0 (suppressed → not forgotten): these "
    "models fail on two sides on both machines — the tables now say \"not forgotten 3/3; also: forgets past retraining, "
    "utility below retraining\" and \"not forgotten 3/3; also: recovers faster than retraining\" — and the label's "
    "precedence (not forgotten first) turned on one forget-side evidence near its band edge. The label now comes with every "
    "failing aspect, its agreement over seeds and a borderline mark, so such a flip shows as a change of emphasis, not of "
    "finding. Machine A's stored runs are not available (the run store is not in the repository), so (b) and (c) were "
    "compared on the tables only.")
NO_ORACLE_NOTE = (
    "Without a retrained oracle (the real-knowledge task, experiments/knowledge_smollm2.yaml: SmolLM2-135M-Instruct "
    "as pretrained, forget the 10 facts of three targets, 41 candidate facts it does not know) the verdict compares forget "
    "evidence with the original on the facts it does not know. There is no fresh retrain to calibrate with, but there is a "
    "null the model itself provides: facts it never knew. A null draw takes n of those facts as the forget facts of a model "
    "that forgot perfectly (its forget values are the original's on them) and the remaining unknown facts as the level; "
    "the verdict, run through the whole path (evaluation.no_oracle_verdict), should be \"inconclusive\" (nothing "
    "outside). Planted cases put 1, half or all of the n forget facts back among the facts the original knows (its values "
    "there). What changed: the forget band was the level ± the evidence's floor (ROUGE-L ± 0.15 whatever the number of "
    "facts), which raised false alarms on small forget sets (rate below per size, \"before\"); it is now the band of a "
    "permutation test that the forget facts' per-fact values are exchangeable with the unknown facts' (verdict.Band.from_pool: "
    "quantiles of the mean of as many facts, drawn from both; Bonferroni over the forget evidence; at least ± the floor — a "
    "bootstrap band resampling the unknown facts alone, tried first, ignores that their own mean is uncertain and so "
    "raises more false alarms than nominal with a few dozen of them), and forget evidence on which the original does not score the facts it knows "
    "above those it does not (one-sided Mann–Whitney, verdict.no_oracle_power) is reported only: answer_prob.forget here "
    "(the pretrained model's answers run on past the short reference answers, so the answer probability of known facts is "
    "no higher than of unknown ones). Utility evidence (neighbours, general questions) is the original's own value ± its "
    "floor: the null model is the original itself, inside by construction, so it has no sampling null to calibrate here."
)
CASES = {"original": "not forgotten", "suppressed bias": "suppressed", "gradient ascent past retraining": "over-forgotten",
         "fine-tuned on forget": "not forgotten"}
ALPHA = 0.05
CHANGES = (
    "What this benchmark changed, and why. (1) hidden_probe (version 2): its half-data probe AUC saturates — retrained "
    "models' features separate a digit from the other classes almost perfectly too (class 3: original 0.996, retrained "
    "0.96 ± 0.004; class 0: 0.995 inside [0.946, 1.003]) — so the original sat inside its band; its evidence is now the "
    "few-shot probe's AUC (5 labelled examples per side, mean over 20 draws), where retrained models read class 3 at "
    "≈ 0.875 ± 0.018 and the original at ≈ 0.98. In membership mode (random forget sets) it has no power on any planted "
    "case (the original's 0.499 sits in the retrain band) and is reported only. (2) privacy_score (version 2) is reported "
    "only: it is direction-blind (a low score means the forget outputs are distinguishable from retraining's either way), "
    "so the planted over-forgotten models (gradient ascent past retraining) came out \"not forgotten\" through it on every "
    "instance. (3) Evidence.reported_only: decide() shows such evidence with its band (status \"reported only\"), keeps it "
    "out of the Bonferroni family and the roles, and states the reason. (4) Bands need R: with R = 3 retrained seeds the "
    "prediction band's t quantile is ≈ 14 for a family of 10 (t_{1−0.05/20}(2)), so only gross differences leave a band; "
    "the classifier settings here use R = 8 (t ≈ 4.0), which the few-shot probe needs to separate the original. "
    "(5) Band draws: a prediction band's false-alarm rate is α on average over the draws of its R retrained seeds, not for "
    "every draw. The previous version judged all 30 fresh retrains against one draw and found accuracy.test outside in 2/30 "
    "on digits random 10%: that draw's 8 retrains had test accuracy 0.9705 ± 0.0026 while 30 fresh retrains had "
    "0.9555–0.9733 (sd ≈ 0.0045) — a tight, high draw, not a miscalibrated rule. Fresh retrains are now judged against "
    "several independent draws (column \"per band draw\"). (6) Reported only where measured powerless: label_only (no "
    "planted case detected in either setting, the original included), and on class forgetting threshold_mia, lira, u_lira and "
    "mia_nn, which compare forget examples with unseen examples of the same class and so measure the generalisation gap on "
    "that class, not whether it is forgotten. (7) epsilon_score and klom (version 4) are method-level: they score N runs "
    "of the method under test against two retrained ensembles, so they are calibrated with retrain as the method (sections "
    "\"method-level evidence\": each draw a fresh metric seed, so fresh reference ensembles and a fresh third ensemble for "
    "retrain) and their power measured on planted methods. Before, retrain's unlearned ensemble was the reference's second "
    "ensemble, so its excess was exactly 0 and it could not fail; judged with an independent third ensemble, KLoM's "
    "per-example standard error proved too small (tests' noise task, N = 6: retrain's excess −1.07 against a null sd of "
    "0.33, z = 3.3), because which N models were drawn moves every example's KL together. Its null sd now comes from "
    "random splits of the unlearned and second retrained ensembles (200 permutations). (8) answer_prob.neighbours and "
    "model_utility had no power on the tiny Llama: it is trained from scratch and does not know the real-world neighbour "
    "facts, so every model sits at chance on them and the harmonic mean is pinned near its neighbour components. Neighbour "
    "evidence now decides only when the original model knows the facts (ranks the true answer first on more items than "
    "chance, one-sided binomial test at 0.05); otherwise it is reported only and model utility decides on its retain "
    "components (model_utility.retain_utility). (9) The planted \"suppressed bias\" case comes out \"not forgotten\", "
    "not \"suppressed\", on the method-level sections, and that verdict is kept: the case lowers the forgotten class's "
    "output bias only as far as needed to stop predicting it (1 logit past the largest forget margin), so its forget "
    "margins stay a few logits below zero where retrained models, which never saw the class, sit far lower (class 3, "
    "logit-confidence margin median: original 6.5, suppressed −6.5, two retrained models −17.0 and −20.8). "
    "epsilon_score and klom compare those margin distributions with retraining's and see them on the remembering side "
    "(3/3): its outputs do not look forgotten to an output-level test finer than accuracy, and \"not forgotten\" "
    "outranks \"suppressed\" by the label's precedence. Relearning and the few-shot probe detect the recovery too "
    "(3/3 each), and the verdict lists every failing aspect; \"suppressed\" is the answer for a battery whose output "
    "evidence is accuracy-level. (10) The method-level sections judge their model-level evidence against independent "
    "band draws (--method-bands, default 5), as the model-level settings do (5): with one draw, accuracy.test had put 2 "
    "of 20 fresh retrains outside its band on random 10% (the previous version of this file), that draw's luck again."
)


@dataclass
class Setting:
    """What one setting measured: the fresh retrains' verdicts and statuses, and each planted case's."""

    name: str
    retrain_seeds: int
    fresh: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (label, key -> status) per fresh retrain
    fresh_band: list[int] = field(default_factory=list)  # which band draw judged each fresh retrain
    bands: int = 1
    planted: dict[str, list[tuple[str, dict[str, str]]]] = field(default_factory=dict)
    seconds: float = 0.0
    train_seconds: float = 0.0
    note: str = ""
    passing: str = "removed"  # the label a null model should get ("inconclusive" without an oracle: it never says removed)
    cases: dict[str, str] = field(default_factory=lambda: dict(CASES))  # planted case -> its known answer

    def alarms(self) -> int:
        return sum(label != self.passing for label, _ in self.fresh)

    def keys(self) -> list[str]:
        keys = {k: None for _, st in self.fresh for k in st}
        for runs in self.planted.values():
            keys.update({k: None for _, st in runs for k in st})
        return list(keys)


def alarm(status: str, role: str) -> bool:
    """An evidence's status that changes the verdict on its own (utility above its band is no failure)."""
    return status in ("more", "less") and not (role == "utility" and status == "more")


def statuses(verdict: Any) -> dict[str, str]:
    """key -> 'inside' / 'more' / 'less' / 'uninformative' / 'reported only', with the role folded into the status
    of utility evidence above its band ('inside': it is no failure)."""
    return {row["key"]: ("inside" if row["role"] == "utility" and row["status"] == "more" else row["status"])
            for row in verdict.rows}


def detects(answer: str, status: str) -> bool:
    """Is ``status`` the evidence pointing at a case's known ``answer``?"""
    return status == ("less" if answer == "over-forgotten" else "more")


# ------------------------------------------------------------------------------------------------ planted models
def suppress_bias(model: Any, task: Any, adapter: Any, margin: float = 1.0) -> Any:
    """The model with only the forgotten classes' output biases lowered, just far enough that no forget example is
    predicted as its class (by ``margin`` logits past the largest margin of any forget example)."""
    import numpy as np
    import torch

    out = copy.deepcopy(model).eval()
    classes = task.whole_classes()
    logits = adapter.outputs(out, task.forget)["logits"]
    own = logits[np.arange(len(logits)), task.forget.labels]
    others = logits.copy()
    others[np.arange(len(logits)), task.forget.labels] = -np.inf
    shift = float(np.max(own - others.max(1))) + margin
    with torch.no_grad():
        out.head.bias[classes] -= max(shift, 0.0)
    return out


def push(model: Any, task: Any, adapter: Any, *, ascent: bool, steps: int, lr: float, seed: int, batch_size: int = 32) -> Any:
    """A copy of ``model`` trained ``steps`` Adam steps on the forget set: gradient ascent (past retraining) or plain
    fine-tuning (remembering more)."""
    from unlearnkit.objectives import NLL, Ascent
    from unlearnkit.seeding import np_rng
    from unlearnkit.train import TrainConfig, fit

    out = copy.deepcopy(model)
    fit(out, Ascent("forget") if ascent else NLL("forget"), {"forget": task.forget},
        TrainConfig(steps=steps, batch_size=batch_size, optimizer="adam", lr=lr), adapter=adapter,
        rng=np_rng("verdict-calibration-push", seed), loss_limit=float("inf"))
    return out.eval()


# ------------------------------------------------------------------------------------------------ one setting
def trainer(refs: Any, config: Any, adapter: Any, out: Setting) -> Any:
    """``train(split, seed)``: a fresh model of ``refs``' architecture trained on ``split`` under ``config``, in eval mode;
    its training time is added to ``out.train_seconds``."""
    from unlearnkit.train import train_model

    def train(split: Any, seed: int) -> Any:
        t = time.perf_counter()
        model, _, _ = train_model(refs.fresh_model(seed, by="benchmark"), split, config, adapter=adapter, seed=seed)
        out.train_seconds += time.perf_counter() - t
        return model.eval()

    return train


def band_draws(refs: Any, task: Any, bands: int, train: Any) -> list[Any]:
    """``refs`` and ``bands - 1`` more sets of its R retrained seeds (``train(split, seed)``; disjoint seeds, the same
    original): independent draws of the bands, so that a setting measures the rule's false-alarm rate on average over
    draws rather than one draw's luck."""
    from unlearnkit.seeding import derive_seed

    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}.")
    draws = [refs]
    for b in range(1, bands):
        seeds = [derive_seed("calibration-band", b, j) % 2**31 for j in range(len(refs.retrained_seeds))]
        draws.append(replace(refs, retrained_seeds=tuple(train(task.retain, seed) for seed in seeds)))
    return draws


def run_setting(name: str, task: Any, refs: Any, metrics: Any, config: Any, *, fresh: int, instances: int,
                ascent: tuple[int, float], finetune: tuple[int, float], bands: int = 1, progress: bool = False) -> Setting:
    """Assess ``fresh`` fresh retrains and ``instances`` of every planted case on ``task``, model i against band draw
    i mod ``bands``: ``refs`` and ``bands - 1`` more sets of R retrained seeds (disjoint seeds, the same original).
    A prediction band's false-alarm rate is α on average over the draws of its R retrained seeds, not for every draw:
    judging every model against one draw measures that draw's luck as much as the rule."""
    from tqdm.auto import tqdm

    from unlearnkit.adapters import get_adapter
    from unlearnkit.evaluation import EvalContext, assess
    from unlearnkit.seeding import derive_seed

    t0 = time.perf_counter()
    adapter = get_adapter(task)
    ctx = EvalContext(task, adapter)
    out = Setting(name, len(refs.retrained_seeds))

    def judge(model: Any, against: Any) -> tuple[str, dict[str, str]]:
        verdict = assess(model, task, against, metrics, ctx=ctx).verdict
        return verdict.label, statuses(verdict)

    train = trainer(refs, config, adapter, out)
    draws = band_draws(refs, task, bands, train)
    out.bands = len(draws)
    for r in draws:
        judge(refs.original, r)  # each draw's noise floor runs once, before any timing matters
    retrains = []
    for i in tqdm(range(fresh), desc=f"{name}: fresh retrains", disable=not (progress and sys.stderr.isatty())):
        model = train(task.retain, derive_seed("fresh-calibration-seed", i) % 2**31)
        out.fresh.append(judge(model, draws[i % len(draws)]))
        out.fresh_band.append(i % len(draws))
        if i < instances:
            retrains.append(model)
    cases = {case: [] for case in CASES if case != "suppressed bias" or task.whole_classes() is not None}
    for i in tqdm(range(instances), desc=f"{name}: planted", disable=not (progress and sys.stderr.isatty())):
        original = refs.original if i == 0 else train(task.train, derive_seed("planted-original", i) % 2**31)
        retrained = retrains[i] if i < len(retrains) else train(task.retain, derive_seed("fresh-calibration-seed", i) % 2**31)
        against = draws[i % len(draws)]
        cases["original"].append(judge(original, against))
        if "suppressed bias" in cases:
            cases["suppressed bias"].append(judge(suppress_bias(original, task, adapter), against))
        cases["gradient ascent past retraining"].append(judge(push(retrained, task, adapter, ascent=True, steps=ascent[0],
                                                                   lr=ascent[1], seed=i), against))
        cases["fine-tuned on forget"].append(judge(push(original, task, adapter, ascent=False, steps=finetune[0], lr=finetune[1],
                                                        seed=i), against))
    out.planted = cases
    out.seconds = time.perf_counter() - t0
    return out


def digits_setup(kind: str, *, retrain_seeds: int, epochs: float) -> tuple[Any, Any, Any, str]:
    """(task, references, training recipe, forget-set label) of the digits settings: MLP 64-64, random 10% or class 3."""
    import numpy as np

    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.models import build_model
    from unlearnkit.runs.references import build_references
    from unlearnkit.train import TrainConfig

    source = load_dataset("digits")
    spec = ForgetSpec("random", fraction=0.1) if kind == "random" else ForgetSpec("classes", classes=(3,))
    task = make_task("digits", source.train, source.test, spec, np.random.default_rng(0), n_classes=10)
    config = TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=2e-3, schedule="cosine")
    refs = build_references(task, lambda: build_model("mlp", source.input_shape, 10, hidden=(64, 64)), config,
                            retrain_seeds=retrain_seeds)
    return task, refs, config, spec.label()


def classifier_setting(kind: str, *, retrain_seeds: int, fresh: int, instances: int, epochs: float = 40, bands: int = 1,
                       progress: bool = False) -> Setting:
    """sklearn digits, MLP 64-64 (as tests/conftest.py), random 10% or class 3 forget set, the full affordable battery."""
    task, refs, config, label = digits_setup(kind, retrain_seeds=retrain_seeds, epochs=epochs)
    return run_setting(f"digits, {label}", task, refs, CLASSIFIER_BATTERY, config, fresh=fresh, instances=instances,
                       ascent=(30, 1e-3), finetune=(20, 1e-3), bands=bands, progress=progress)


def lm_setting(*, retrain_seeds: int, fresh: int, instances: int, epochs: float = 30, bands: int = 1, progress: bool = False) -> Setting:
    """The tiny fictitious-profiles task (forget 10% of the profiles) with the tiny Llama, the causal_lm default battery."""
    import numpy as np

    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.models import build_model
    from unlearnkit.runs.references import build_references
    from unlearnkit.train import TrainConfig

    s = load_dataset("profiles", scale="tiny")
    task = make_task("profiles", s.train, s.test, ForgetSpec("profiles", fraction=0.1), np.random.default_rng(0), n_classes=None,
                     modality=s.modality, probes=s.probes)
    config = TrainConfig(epochs=epochs, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine")
    refs = build_references(task, lambda: build_model("tiny_llama", s.input_shape, s.n_outputs), config, retrain_seeds=retrain_seeds)
    return run_setting("tiny profiles (tiny Llama), forget 10%", task, refs, None, config, fresh=fresh, instances=instances,
                       ascent=(20, 1e-3), finetune=(10, 1e-3), bands=bands, progress=progress)


# ------------------------------------------------------------------------------------------------ no retrained oracle
KNOWLEDGE = ROOT / "experiments" / "knowledge_smollm2.yaml"
NO_ORACLE_CASES = {"every forget fact known (the original)": "not forgotten", "half the forget facts known": "not forgotten",
                   "one forget fact known": "not forgotten"}


def knowledge_original() -> tuple[Any, dict[str, Any]]:
    """The knowledge task of experiments/knowledge_smollm2.yaml and the pretrained original's answer_prob and rouge_l on
    every split (the forget facts, the other facts it knows, the facts it does not know, neighbours, general questions)."""
    import yaml

    from unlearnkit.adapters import get_adapter
    from unlearnkit.data.sources import load_dataset
    from unlearnkit.evaluation import EvalContext, build_metric, evaluate
    from unlearnkit.experiment import Experiment
    from unlearnkit.runs.runner import ExperimentRunner

    spec = yaml.safe_load(KNOWLEDGE.read_text())
    splits = ["forget", "retain", "test", "neighbours", "general"]
    spec["metrics"] = [{"name": m, "params": {"splits": splits}} for m in ("answer_prob", "rouge_l")]
    exp = Experiment.from_dict(spec)
    source = load_dataset(exp.dataset.name, **exp.dataset.params)
    runner = ExperimentRunner(exp, store=None, device="cpu", progress=False)
    task = runner.build_task(source, exp.forget[0])
    refs = runner.references(task, source)
    results, missing = evaluate(refs.original, task, refs, [build_metric(m.name, m.params) for m in exp.metrics_for(task.modality)],
                                EvalContext(task, get_adapter(task)))
    assert not missing, missing
    return task, results


def no_oracle_settings(*, draws: int, instances: int, sizes: tuple[int, ...], progress: bool = False) -> list[Setting]:
    """The no-oracle verdict (``evaluation.no_oracle_verdict``) on the real-knowledge task, calibrated on the pretrained
    original's per-fact values. Null: n facts the original does not know play the forget facts of a model
    that forgot them perfectly (its forget values are those facts' values), and the level and the band come from the other
    unknown facts; the verdict should be "inconclusive" (no forget evidence outside). Power: n forget facts of which
    all, half or one are facts the original knows (the rest unknown) -> not forgotten. Each draw runs the whole path:
    per-fact pools, the power check against the original's real forget facts, the resampled band, the label."""
    import dataclasses

    import numpy as np
    from tqdm.auto import tqdm

    from unlearnkit.evaluation import no_oracle_verdict
    from unlearnkit.types import MetricResult
    from unlearnkit.verdict import decide_without_oracle

    t0 = time.perf_counter()
    task, orig = knowledge_original()
    eval_seconds = time.perf_counter() - t0
    per_fact = {name: next(k[: -len("forget")] for k in r.per_example if k.endswith(".forget")) for name, r in orig.items()}
    values = {name: {split: np.asarray(r.per_example[per_fact[name] + split][1], dtype=np.float64)
                     for split in ("forget", "retain", "test")} for name, r in orig.items()}
    n_unknown = len(values["rouge_l"]["test"])
    rng = np.random.default_rng(20261207)

    def judge(forget_idx: np.ndarray, known_idx: np.ndarray, rest: np.ndarray) -> tuple[tuple[str, dict[str, str]], str]:
        """The verdict of a model whose forget values are unknown facts ``forget_idx`` plus known facts ``known_idx``,
        against the original on the unknown facts ``rest``; and the label under the fixed ± floor band (before)."""
        model, original = {}, {}
        for name, r in orig.items():
            v = values[name]
            known = np.concatenate([v["forget"], v["retain"]])
            fvals = np.concatenate([v["test"][forget_idx], known[known_idx]])
            ids = np.arange(len(fvals))
            ev = tuple(dataclasses.replace(e, value=float(np.nanmean(fvals))) if e.key == f"{name}.forget" else e for e in r.evidence)
            model[name] = MetricResult(name, {**r.values, "forget": float(np.nanmean(fvals))},
                                       per_example={per_fact[name] + "forget": (ids, fvals)}, evidence=ev)
            original[name] = MetricResult(name, {**r.values, "test": float(np.nanmean(v["test"][rest]))},
                                          per_example={per_fact[name] + "forget": (np.arange(len(v["forget"])), v["forget"]),
                                                       per_fact[name] + "test": (rest, v["test"][rest])}, evidence=r.evidence)
        verdict = no_oracle_verdict(model, original, {})
        before = decide_without_oracle([e for r in model.values() for e in r.evidence],
                                       {f"{n}.forget": original[n].values["test"] for n in orig},
                                       {e.key: e.value for r in orig.values() for e in r.evidence if e.role == "utility"})
        return (verdict.label, statuses(verdict)), before.label

    out = []
    for n in sizes:
        st = Setting(f"real knowledge (SmolLM2-135M-Instruct, no oracle), {n} forget facts", 0, passing="inconclusive",
                     cases=dict(NO_ORACLE_CASES))
        before = 0
        for _ in tqdm(range(draws), desc=f"no oracle, {n} facts: null draws", disable=not (progress and sys.stderr.isatty())):
            perm = rng.permutation(n_unknown)
            judged, old = judge(perm[:n], np.array([], dtype=int), perm[n:])
            st.fresh.append(judged)
            st.fresh_band.append(0)
            before += old != "inconclusive"
        n_known = len(values["rouge_l"]["forget"]) + len(values["rouge_l"]["retain"])
        for case, k in zip(NO_ORACLE_CASES, (n, (n + 1) // 2, 1)):
            st.planted[case] = []
            for _ in range(instances):
                perm = rng.permutation(n_unknown)
                label, status = judge(perm[: n - k], rng.choice(n_known, k, replace=False), perm[n - k:])[0]
                # power is the forget evidence's: utility evidence has nothing to detect in these cases
                st.planted[case].append((label, {key: v for key, v in status.items() if key.endswith(".forget")}))
        lo, hi = clopper_pearson(before, draws)
        st.note = (f"Before this change (a fixed band, the unknown-fact level ± each evidence's floor, no power check): "
                   f"{before}/{draws} null draws not \"inconclusive\" ({before / draws:.3f}, 95% CI {lo:.3f}–{hi:.3f}).")
        st.seconds = time.perf_counter() - t0
        st.train_seconds = eval_seconds  # evaluating the original once (nothing is trained)
        out.append(st)
    return out


# ------------------------------------------------------------------------------------------------ method-level evidence
METHOD_LEVEL = ("epsilon_score", "klom")


@dataclass(frozen=True)
class PlantedMethod:
    """A planted case as a method (ε-score and KLoM score N runs of the method under test, not one model): gradient
    ascent on the forget set (``ascent``), fine-tuning on it (``not ascent``), or output-bias suppression (``steps`` 0)."""

    case: str
    ascent: bool = False
    steps: int = 0
    lr: float = 1e-3
    name: str = "planted"

    def unlearn(self, model: Any, task: Any, refs: Any, *, rng: Any, device: str = "cpu") -> Any:
        from types import SimpleNamespace

        from unlearnkit.adapters import get_adapter

        adapter = get_adapter(task)
        if self.steps == 0:
            return SimpleNamespace(model=suppress_bias(model, task, adapter))
        return SimpleNamespace(model=push(model, task, adapter, ascent=self.ascent, steps=self.steps, lr=self.lr,
                                          seed=int(rng.integers(2**31))))


def method_level_setting(kind: str, *, draws: int, instances: int, n_models: int, retrain_seeds: int, epochs: float = 40,
                         bands: int = 1, progress: bool = False) -> Setting:
    """ε-score and KLoM with ``retrain`` as the method under test: each draw uses the metric seed d, so its two reference
    ensembles and retrain's own third ensemble are fresh (3·n_models retrainings per draw). The fresh retrained model is
    judged on the whole classifier battery plus the two method-level metrics, i.e. in the family they decide in; its
    model-level evidence against band draw d mod ``bands`` (as in ``run_setting``: the method-level metrics bring their
    own fresh ensembles, the model-level bands their R retrained seeds). Planted cases are methods: none (N copies of
    the original), gradient ascent and fine-tuning on the forget set, and output-bias suppression (class forgetting)."""
    import numpy as np
    from tqdm.auto import tqdm

    from unlearnkit.adapters import get_adapter
    from unlearnkit.evaluation import EvalContext, assess, build_metric
    from unlearnkit.methods import build_method
    from unlearnkit.seeding import derive_seed

    t0 = time.perf_counter()
    task, refs, config, label = digits_setup(kind, retrain_seeds=retrain_seeds, epochs=epochs)
    adapter = get_adapter(task)
    out = Setting(f"digits, {label} — method-level evidence ({', '.join(METHOD_LEVEL)}, N = {n_models})", retrain_seeds)
    out.note = (f"Each fresh retrain is judged with retrain as the method under test and its own metric seed: fresh reference "
                f"ensembles and a third for retrain, 3 × {n_models} retrainings per draw. Planted methods: instance i uses metric "
                f"seed i; model-level evidence judges one run of the planted method.")

    ctx = EvalContext(task, adapter)  # one context: LiRA's shadows and the retrained ensembles are trained once

    def judge(model: Any, method: Any, d: int) -> tuple[str, dict[str, str]]:
        ctx.method = method
        metrics = [*(m for m in CLASSIFIER_BATTERY if m != "noise_floor" and (m != "mia_nn" or kind == "class")),
                   *(build_metric(m, {"n_models": n_models, "seed": d}) for m in METHOD_LEVEL), "noise_floor"]
        verdict = assess(model, task, bands_of[d % len(bands_of)], metrics, ctx=ctx).verdict
        return verdict.label, statuses(verdict)

    train = trainer(refs, config, adapter, out)
    bands_of = band_draws(refs, task, bands, train)
    out.bands = len(bands_of)
    retrain = build_method("retrain")
    for d in tqdm(range(draws), desc=f"{kind}: method-level draws", disable=not (progress and sys.stderr.isatty())):
        out.fresh.append(judge(train(task.retain, derive_seed("fresh-calibration-seed", d) % 2**31), retrain, d))
        out.fresh_band.append(d % len(bands_of))
    planted = {"original": None,
               "gradient ascent past retraining": PlantedMethod("gradient ascent past retraining", ascent=True, steps=30),
               "fine-tuned on forget": PlantedMethod("fine-tuned on forget", steps=20)}
    if kind == "class":
        planted["suppressed bias"] = PlantedMethod("suppressed bias")
    out.planted = {case: [] for case in planted}
    for i in tqdm(range(instances), desc=f"{kind}: method-level planted", disable=not (progress and sys.stderr.isatty())):
        for case, method in planted.items():
            # model-level evidence judges one run of the planted method; epsilon_score and klom score N runs of it
            model = refs.original if method is None else method.unlearn(refs.original, task, refs, rng=np.random.default_rng(i)).model
            out.planted[case].append(judge(model, method, i))
    out.seconds = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------ tables
def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def calibration_table(s: Setting) -> list[str]:
    n = len(s.fresh)
    lines = ["| evidence | outside its band | rate | 95% CI | per band draw |", "|---|---|---|---|---|"]

    def per_band(bad: list[bool]) -> str:
        return ", ".join(f"{sum(x for x, b in zip(bad, s.fresh_band) if b == d)}/{s.fresh_band.count(d)}" for d in range(s.bands))
    roles = {k: None for k in s.keys()}
    for key in roles:
        seen = [st[key] for _, st in s.fresh if key in st]
        if not seen:
            continue
        outside = [st.get(key) in ("more", "less") for _, st in s.fresh]
        bad = sum(outside)
        lo, hi = clopper_pearson(bad, len(seen))
        note = {"uninformative": " (band spans every value: decides nothing)", "reported only": " (reported only)"}
        extra = next((note[v] for v in seen if v in note), "")
        lines.append(f"| {key}{extra} | {bad}/{len(seen)} | {bad / len(seen):.3f} | {lo:.3f}–{hi:.3f} | {per_band(outside)} |")
    k = s.alarms()
    lo, hi = clopper_pearson(k, n)
    fam = per_band([label != s.passing for label, _ in s.fresh])
    lines.append(f"| **family-wise (verdict not \"{s.passing}\")** | **{k}/{n}** | **{k / n:.3f}** | **{lo:.3f}–{hi:.3f}** | **{fam}** |")
    return lines


def power_table(s: Setting) -> list[str]:
    cases = list(s.planted)
    lines = ["| evidence | " + " | ".join(f"{c} → {s.cases[c]}" for c in cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for key in s.keys():
        cells = []
        for case in cases:
            seen = [st[key] for _, st in s.planted[case] if key in st]
            hit = sum(detects(s.cases[case], v) for v in seen)
            cells.append(f"{hit}/{len(seen)}" if seen else "—")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    labels = []
    for case in cases:
        got = Counter(label for label, _ in s.planted[case])
        right = got[s.cases[case]]
        labels.append(f"**{right}/{sum(got.values())}** " + ", ".join(f"{lab} {n}" for lab, n in got.most_common()))
    lines.append("| **verdict = known answer** | " + " | ".join(labels) + " |")
    return lines


def powerless(s: Setting) -> list[str]:
    """Evidence that detected no planted case (and is not already reported-only or uninformative)."""
    out = []
    for key in s.keys():
        seen = [(case, st[key]) for case in s.planted for _, st in s.planted[case] if key in st]
        if seen and not any(detects(s.cases[c], v) for c, v in seen) and not any(v in ("reported only", "uninformative") for _, v in seen):
            out.append(key)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fresh", type=int, default=50, help="fresh retrain seeds judged per classifier setting")
    p.add_argument("--lm-fresh", type=int, default=20, help="fresh retrain seeds judged in the LM setting")
    p.add_argument("--retrain-seeds", type=int, default=8, help="R, retrained seeds behind the bands (classifiers)")
    p.add_argument("--lm-retrain-seeds", type=int, default=4, help="R for the LM setting")
    p.add_argument("--instances", type=int, default=5, help="instances of every planted case (classifiers)")
    p.add_argument("--lm-instances", type=int, default=3, help="instances of every planted case (LM)")
    p.add_argument("--epochs", type=float, default=40, help="training epochs of every digits model")
    p.add_argument("--bands", type=int, default=3, help="independent draws of the R retrained seeds behind the bands (classifiers)")
    p.add_argument("--lm-bands", type=int, default=2, help="band draws in the LM setting")
    p.add_argument("--method-draws", type=int, default=20, help="draws of the method-level evidence (fresh ensembles each)")
    p.add_argument("--method-bands", type=int, default=5, help="band draws of the model-level evidence in the method-level settings")
    p.add_argument("--method-instances", type=int, default=3, help="instances of every planted method (method-level evidence)")
    p.add_argument("--n-models", type=int, default=16, help="ensemble size N of epsilon_score and klom")
    p.add_argument("--no-oracle-draws", type=int, default=1000, help="null draws per forget-set size (no-oracle setting)")
    p.add_argument("--no-oracle-instances", type=int, default=200, help="instances of every planted case (no-oracle setting)")
    p.add_argument("--no-oracle-sizes", type=int, nargs="+", default=[3, 5, 10, 20], help="forget-set sizes (no-oracle setting)")
    p.add_argument("--settings", default="random,class,lm,method-random,method-class",
                   help="comma-separated subset of random, class, lm, method-random, method-class, no-oracle (the real-knowledge "
                        "task's verdict without a retrained oracle: SmolLM2-135M-Instruct, a few minutes; written apart: "
                        "--settings no-oracle --output docs/results/verdict_calibration_no_oracle.md)")
    p.add_argument("--quick", action="store_true", help="toy size: 3 fresh seeds, 1 instance, R = 3, digits random only (and its "
                   "method-level section with 2 draws of N = 4)")
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "verdict_calibration.md"), help="markdown copy ('' for none)")
    args = p.parse_args(argv)
    if args.quick:
        args.fresh, args.lm_fresh, args.retrain_seeds, args.lm_retrain_seeds = 3, 3, 3, 2
        args.instances, args.lm_instances, args.epochs, args.bands, args.lm_bands = 1, 1, 10, 2, 1
        args.method_draws, args.method_instances, args.n_models, args.method_bands = 2, 1, 4, 2
        if "--settings" not in (argv if argv is not None else sys.argv[1:]):
            args.settings = "random,method-random"

    import torch

    from unlearnkit.io import Transcript, write_generated
    from unlearnkit.runs.runner import cpu_model

    torch.set_num_threads(1)  # tiny models: one thread is as fast and does not spin-contend on a shared CPU
    start = time.perf_counter()
    out = Transcript()
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    settings: list[Setting] = []
    for kind in chosen:
        if kind in ("random", "class"):
            settings.append(classifier_setting(kind, retrain_seeds=args.retrain_seeds, fresh=args.fresh, instances=args.instances,
                                               epochs=args.epochs, bands=args.bands, progress=True))
        elif kind in ("method-random", "method-class"):
            settings.append(method_level_setting(kind.split("-")[1], draws=args.method_draws, instances=args.method_instances,
                                                 n_models=args.n_models, retrain_seeds=args.retrain_seeds, epochs=args.epochs,
                                                 bands=args.method_bands, progress=True))
        elif kind == "lm":
            settings.append(lm_setting(retrain_seeds=args.lm_retrain_seeds, fresh=args.lm_fresh, instances=args.lm_instances,
                                       bands=args.lm_bands, progress=True))
        elif kind == "no-oracle":
            settings.extend(no_oracle_settings(draws=args.no_oracle_draws, instances=args.no_oracle_instances,
                                               sizes=tuple(args.no_oracle_sizes), progress=True))
        else:
            p.error(f"unknown setting {kind!r} (random, class, lm, method-random, method-class, no-oracle)")
    wall = time.perf_counter() - start
    out.say(f"verdict_calibration: {', '.join(s.name for s in settings)}; machine: {cpu_model()}, 1 torch thread; "
            f"wall time {wall / 60:.1f} min; target family-wise false-alarm rate α = {ALPHA}")
    if any(k != "no-oracle" for k in chosen):
        out.say("")
        out.say("Digits: MLP 64-64, 40 epochs, battery " + ", ".join(CLASSIFIER_BATTERY) + " (mia_nn: class forgetting only). "
                "LM: tiny Llama, 30 epochs, the causal_lm default battery. A fresh retrain is a model trained on the retain set "
                "with a seed never used for the bands; \"outside its band\" counts an evidence whose status would change the "
                "verdict on its own (utility above its band is no failure). Power: an evidence detects a planted case when it "
                "is outside its band in the direction of the case's known answer (remembers more for not forgotten and "
                "suppressed, less for over-forgotten).")
        out.say("")
        out.say(CHANGES)
        out.say("")
        out.say(FLIPS)
        out.say("")
        out.say("Left out: " + "; ".join(f"{k} — {v}" for k, v in LEFT_OUT.items()) + ".")
    if "no-oracle" in chosen:
        out.say("")
        out.say(NO_ORACLE_NOTE)
    status = 0
    for s in settings:
        out.say("")
        out.say(f"## {s.name}")
        out.say("")
        if s.retrain_seeds:
            out.say(f"R = {s.retrain_seeds} retrained seeds behind the bands, {s.bands} independent draw(s) of them (fresh retrain "
                    f"and planted instance i judged against draw i mod {s.bands}); {len(s.fresh)} fresh retrains; "
                    f"{max(len(v) for v in s.planted.values())} instance(s) per planted case; {s.seconds:.0f} s "
                    f"({s.train_seconds:.0f} s of it training).")
        else:
            out.say(f"No retrained models: {len(s.fresh)} null draws, {max(len(v) for v in s.planted.values())} instance(s) per "
                    f"planted case; {s.seconds:.0f} s since the start of the setting ({s.train_seconds:.0f} s of it evaluating the "
                    "original once).")
        if s.note:
            out.say(s.note)
        out.say("")
        out.say("Calibration (fresh retrains):" if s.retrain_seeds else "Calibration (null draws):")
        out.say("")
        for line in calibration_table(s):
            out.say(line)
        out.say("")
        out.say("Power (detections / instances, per planted case):")
        out.say("")
        for line in power_table(s):
            out.say(line)
        weak = powerless(s)
        if weak:
            out.say("")
            out.say(f"No power on any planted case here: {', '.join(weak)}.")
        if s.alarms() / len(s.fresh) > ALPHA:
            status = 1
    if args.output:
        write_generated(args.output, "Is the verdict calibrated, and has each evidence power?", "verdict_calibration.py",
                        argv if argv is not None else sys.argv[1:], out.lines)
    return status


if __name__ == "__main__":
    sys.exit(main())
