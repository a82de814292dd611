"""The real-knowledge task (RWKU-style): the candidate list and the stored selection (schema, provenance, grading redone
independently), the task builder's refusals, and the verdict without a retrained oracle."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.knowledge import (CANDIDATES, SELECTIONS, answer_matches, check_candidates, check_selection, file_sha256, knowledge,
                                       load_selection)
from unlearnkit.errors import ConfigError, EmptySelection
from unlearnkit.types import Evidence
from unlearnkit.verdict import NO_ORACLE, decide_without_oracle


def _files():
    return json.loads(CANDIDATES.read_text()), json.loads(SELECTIONS["smollm2"].read_text())


def test_shipped_selection_schema_and_provenance():
    cands, sel = _files()
    check_candidates(cands)
    check_selection(sel, cands, file_sha256(CANDIDATES))
    assert sel["script"] == "benchmarks/knowledge_select.py" and sel["script_version"] and "SmolLM2" in sel["model"]
    assert sel["generation"]["decoding"] == "greedy"
    items = {it["id"]: it for part in ("facts", "general") for it in cands[part]}
    for a in sel["answers"]:  # the grading redone with a plain regex, independently of answer_matches
        it = items[a["id"]]
        words = " " + re.sub(r"\W+", " ", a["generated"].lower()).strip() + " "
        hit = any(" " + re.sub(r"\W+", " ", g.lower()).strip() + " " in words for g in [it["answer"], *it["aliases"]])
        assert hit == a["correct"], a
    selected = set(sel["selected"])
    assert len(selected & {f["id"] for f in cands["facts"]}) >= 30  # enough facts for forget targets and their neighbours


def test_answer_matching():
    assert answer_matches("The capital of France is Paris.", "Paris")
    assert answer_matches("It was written by J.K. Rowling!", "J.K. Rowling")
    assert answer_matches("Rowling wrote it", "J.K. Rowling", ["Rowling"])
    assert not answer_matches("Parisian food", "Paris")  # whole words only
    assert not answer_matches("10 minus 3 is 2.", "7", ["seven"])


def test_selection_checks_refuse_bad_files():
    cands, sel = _files()
    sha = file_sha256(CANDIDATES)
    with pytest.raises(ConfigError, match="another version of the candidate list"):
        check_selection(sel, cands, "0" * 64)
    bad = copy.deepcopy(sel)
    bad["selected"] = bad["selected"][1:]
    with pytest.raises(ConfigError, match="exactly the ids answered correctly"):
        check_selection(bad, cands, sha)
    bad = copy.deepcopy(sel)
    bad["answers"] = bad["answers"][1:]
    with pytest.raises(ConfigError, match="cover every candidate once"):
        check_selection(bad, cands, sha)
    bad = copy.deepcopy(sel)
    del bad["model"]
    with pytest.raises(ConfigError, match=r"missing \['model'\]"):
        check_selection(bad, cands, sha)
    bad = copy.deepcopy(cands)
    bad["facts"][0]["type"] = "animal"
    with pytest.raises(ConfigError, match="type must be one of"):
        check_candidates(bad)


def test_task_forgets_targets_by_name_with_neighbours_and_general():
    src = knowledge(forget=["Harry Potter", "Japan"], tokenizer="word")
    cands, sel = load_selection("smollm2", str(CANDIDATES))
    chosen = set(sel["selected"])
    want = {f["id"] for f in cands["facts"] if f["id"] in chosen and f["target"] in ("Harry Potter", "Japan")}
    task = make_task("knowledge", src.train, src.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                     modality=src.modality, probes=src.probes)
    assert set(task.forget.ids.tolist()) == want and len(want) == 6
    assert src.info["oracle"] is False
    neighbours = src.probes["neighbours"].data.records
    assert neighbours and all(r.attribute in ("place", "book") and r.target not in ("Harry Potter", "Japan") for r in neighbours)
    assert {r.item_id for r in src.test.data.records} == {f["id"] for f in cands["facts"]} - chosen  # unknown facts
    assert all(r.attribute == "general" for r in src.probes["general"].data.records)


@pytest.mark.parametrize("forget, error, message", [
    (["Harry Poter"], ConfigError, "unknown target 'Harry Poter'. Did you mean: Harry Potter"),
    (["Marie Curie"], ConfigError, "answered none of 'Marie Curie'"),
    ([], EmptySelection, "forget names no target"),
    (["Japan", "Japan"], ConfigError, "lists a target twice"),
])
def test_task_refuses_bad_target_names(forget, error, message):
    with pytest.raises(error, match=message):
        knowledge(forget=forget, tokenizer="word")


def test_task_refuses_an_empty_selection(tmp_path):
    cands, sel = _files()
    empty = copy.deepcopy(sel)
    empty["selected"] = []
    for a in empty["answers"]:
        a["correct"] = False
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(empty))
    with pytest.raises(EmptySelection, match="keeps no fact"):
        knowledge(forget=["Japan"], selection=str(path), tokenizer="word")


def _ev(key, value, role, remembers="higher", floor=0.05):
    return Evidence(key=key, value=value, role=role, remembers=remembers, floor=floor, bounds=(0.0, 1.0))


def test_verdict_without_oracle():
    levels = {"answer_prob.forget": 0.10}
    orig = {"answer_prob.neighbours": 0.60, "answer_prob.general": 0.50}
    forgotten = [_ev("answer_prob.forget", 0.12, "forget"), _ev("answer_prob.neighbours", 0.58, "utility"),
                 _ev("answer_prob.general", 0.70, "utility")]
    v = decide_without_oracle(forgotten, levels, orig)
    assert v.label == "inconclusive" and NO_ORACLE in v.reasons and "suppression" in v.reasons[0]
    assert any("retrained oracle" in m for m in v.missing)
    assert {r["key"]: r["status"] for r in v.rows} == {"answer_prob.forget": "inside", "answer_prob.neighbours": "inside",
                                                      "answer_prob.general": "inside"}
    assert [r["retrain_mean"] for r in v.rows] == [0.10, 0.60, 0.50]  # the reference levels, where reports read the target
    assert v.bands["answer_prob.forget"].lo == pytest.approx(0.05) and v.bands["answer_prob.forget"].hi == pytest.approx(0.15)
    kept = [_ev("answer_prob.forget", 0.16, "forget")] + forgotten[1:]
    assert decide_without_oracle(kept, levels, orig).label == "not forgotten"
    damaged = [forgotten[0], _ev("answer_prob.neighbours", 0.54, "utility"), forgotten[2]]
    v = decide_without_oracle(damaged, levels, orig)
    assert v.label == "over-forgotten" and "neighbours or general ability lost" in v.reasons[0]
    assert decide_without_oracle([_ev("answer_prob.forget", 0.01, "forget")] + forgotten[1:], levels, orig).label == "over-forgotten"
    v = decide_without_oracle(forgotten[1:], levels, orig)  # no forget evidence
    assert v.label == "inconclusive" and "forget evidence" in v.reasons[0]
    # a level measured on the facts the original does not know (icl_probe: a fact read from the prompt) replaces the
    # original's own: 0.86 is how well a model that never knew the facts reads them, not a loss against the original's 1.0
    icl = forgotten + [_ev("icl_probe.forget_in_context", 0.86, "utility")]
    assert decide_without_oracle(icl, levels, {**orig, "icl_probe.forget_in_context": 1.0}).label == "over-forgotten"
    v = decide_without_oracle(icl, levels, {**orig, "icl_probe.forget_in_context": 0.89},
                              sources={"icl_probe.forget_in_context": "unknown facts"})
    assert v.label == "inconclusive" and v.bands["icl_probe.forget_in_context"].lo == pytest.approx(0.84)
    assert next(r for r in v.rows if r["key"] == "icl_probe.forget_in_context")["band_from"] == "unknown facts"
    # below that level it is its own failing aspect, not "neighbours or general ability"
    poor = forgotten[:2] + [_ev("answer_prob.general", 0.40, "utility"), _ev("icl_probe.forget_in_context", 0.60, "utility")]
    v = decide_without_oracle(poor, levels, {**orig, "icl_probe.forget_in_context": 0.89}, sources={"icl_probe.forget_in_context": "unknown facts"})
    assert v.label == "over-forgotten" and v.reasons[0].startswith("neighbours or general ability lost: answer_prob.general")
    assert v.reasons[1].startswith("a forget fact given back in the prompt is used less than the original uses facts it does "
                                   "not know: icl_probe.forget_in_context")
    kept = decide_without_oracle([_ev("answer_prob.forget", 0.16, "forget")] + poor[1:], levels, {**orig, "icl_probe.forget_in_context": 0.89},
                                 sources={"icl_probe.forget_in_context": "unknown facts"})
    assert kept.label == "not forgotten" and kept.also == [
        "neighbours or general ability below the original (answer_prob.general)",
        "reads a fact given in the prompt less well than the original reads facts it does not know (icl_probe.forget_in_context)"]


def test_verdict_without_oracle_bands_the_weight_level_attacks_and_calls_a_guard_suppressed():
    """A weight-level attack recovering more than from a model that never knew the facts (the same attack on the original
    over the unknown facts) is "suppressed"; recovering less, over-forgotten; robustness evidence without such a level
    stays reported. A guard (weights untouched) is suppressed before its refusals make it over-forgotten."""
    levels = {"answer_prob.forget": 0.10}
    orig = {"answer_prob.neighbours": 0.60}
    quiet = [_ev("answer_prob.forget", 0.11, "forget"), _ev("answer_prob.neighbours", 0.60, "utility")]
    attack = {"soft_prompt.heldout_prob": 0.20}
    recovers = quiet + [_ev("soft_prompt.heldout_prob", 0.54, "robustness"), _ev("rwku_probes.forget_max_excess", 0.7, "robustness")]
    v = decide_without_oracle(recovers, levels, orig, robustness_levels=attack)
    assert v.label == "suppressed" and v.reasons[0].startswith("outputs of a model without the knowledge, but an attack recovers more")
    row = next(r for r in v.rows if r["key"] == "soft_prompt.heldout_prob")
    assert (row["lo"], row["hi"], row["band_from"]) == (pytest.approx(0.15), pytest.approx(0.25), "unknown facts, same attack")
    assert "rwku_probes.forget_max_excess" not in v.bands  # no level of its own: reported, not banded
    assert decide_without_oracle(quiet + [_ev("soft_prompt.heldout_prob", 0.22, "robustness")], levels, orig,
                                 robustness_levels=attack).label == "inconclusive"
    resists = decide_without_oracle(quiet + [_ev("soft_prompt.heldout_prob", 0.05, "robustness")], levels, orig, robustness_levels=attack)
    assert resists.label == "over-forgotten" and "resists attacks" in resists.reasons[0]
    refuses = [quiet[0], _ev("answer_prob.neighbours", 0.30, "utility"), recovers[2]]  # a guard refusing neighbours too
    plain = decide_without_oracle(refuses, levels, orig, robustness_levels=attack)
    assert plain.label == "over-forgotten" and plain.also == ["an attack recovers more than from a model that never knew the facts "
                                                              "(soft_prompt.heldout_prob)"]
    guard = decide_without_oracle(refuses, levels, orig, robustness_levels=attack, weights_untouched=True)
    assert guard.label == "suppressed" and guard.reasons[0].startswith("a guard (weights untouched): an attack on its weights")
    assert guard.also == ["neighbours or general ability below the original (answer_prob.neighbours)"] and guard.weights_untouched


def test_permutation_no_oracle_band_keeps_its_false_alarm_rate_on_a_skewed_pool():
    """Band.from_pool: forget facts that score like unknown facts (exchangeable) leave the band at most α of the time,
    whatever the skew (most unknown facts score 0 ROUGE-L, a few high) and the number of facts — where the fixed ± floor
    band raised false alarms on small forget sets; fewer facts get a wider band, never narrower than ± floor."""
    from unlearnkit.verdict import Band

    rng = np.random.default_rng(0)
    population = lambda k: np.where(rng.random(k) < 0.12, rng.choice([0.25, 0.5, 0.75, 1.0], k), 0.0)  # noqa: E731
    rates, widths = {}, {}
    for n in (3, 10):
        out = 0
        for i in range(400):
            pool, sample = population(40), population(n)
            band = Band.from_pool(pool, sample, 0.0, 0.05, 1, draws=2000, seed=i)
            out += not band.lo <= sample.mean() <= band.hi
        rates[n], widths[n] = out / 400, np.median([Band.from_pool(population(40), population(n), 0.0, 0.05, 1, draws=2000).hi
                                                     for _ in range(20)])
    assert max(rates.values()) <= 0.06, rates  # α = 0.05 (discreteness makes it conservative; 400 trials: sd ≈ 0.011)
    old = np.mean([abs(population(3).mean() - population(40).mean()) > 0.15 for _ in range(2000)])  # rouge_l's floor, n = 3
    assert old > 0.09 > rates[3]  # the fixed band fails where the permutation band holds
    assert widths[10] < widths[3]
    band = Band.from_pool(np.zeros(20), np.zeros(5), 0.15, 0.05, 1)
    assert (band.lo, band.hi, band.source, band.mean) == (pytest.approx(-0.15), pytest.approx(0.15), "unknown facts", 0.0)
    pool, sample = population(30), population(4)
    assert Band.from_pool(pool, sample, 0.0, 0.05, 2, seed=3) == Band.from_pool(pool, sample, 0.0, 0.05, 2, seed=3)  # deterministic
    assert Band.from_pool(pool, sample, 0.0, 0.05, 2).hi >= Band.from_pool(pool, sample, 0.0, 0.05, 1).hi  # Bonferroni widens
    with pytest.raises(ValueError, match="at least 2 finite pool values"):
        Band.from_pool([0.3, float("nan")], [0.1], 0.0, 0.05, 1)


def test_no_oracle_power_check_and_the_verdict_path_through_per_fact_values():
    """evaluation.no_oracle_verdict: forget evidence whose metric keeps per-fact values is banded by a permutation test
    against the original's unknown facts (a wider band for fewer forget facts), and is reported only, with the reason, where the
    original does not score the facts it knows above those it does not (no power)."""
    from unlearnkit.evaluation import no_oracle_verdict
    from unlearnkit.types import MetricResult
    from unlearnkit.verdict import no_oracle_power

    unknown = np.r_[np.zeros(34), [0.5, 0.5, 0.75, 1.0, 0.25, 0.5]]
    known = np.r_[np.ones(8), [0.5, 0.75]]
    assert no_oracle_power(known, unknown, "higher") is None
    why = no_oracle_power(unknown[:10], unknown, "higher")
    assert why and "no power without an oracle" in why and "Mann–Whitney" in why
    assert no_oracle_power(known, unknown, "lower") is not None  # the direction matters

    def results(forget, orig_known, pool, util=0.9):
        ev = (_ev("rouge_l.forget", float(np.mean(forget)), "forget", floor=0.15), _ev("rouge_l.general", util, "utility", floor=0.15))
        model = {"rouge_l": MetricResult("rouge_l", {"forget": float(np.mean(forget)), "general": util},
                                         per_example={"recall.forget": (np.arange(len(forget)), np.asarray(forget, float))}, evidence=ev)}
        orig = {"rouge_l": MetricResult("rouge_l", {"forget": float(np.mean(orig_known)), "test": float(np.mean(pool)), "general": 0.9},
                                        per_example={"recall.forget": (np.arange(len(orig_known)), orig_known),
                                                     "recall.test": (np.arange(len(pool)), pool)},
                                        evidence=(ev[0], _ev("rouge_l.general", 0.9, "utility", floor=0.15)))}
        return model, orig

    v3 = no_oracle_verdict(*results([0.5, 0.0, 0.0], known, unknown), {})
    v10 = no_oracle_verdict(*results([0.5] + [0.0] * 9, known, unknown), {})
    assert v3.label == v10.label == "inconclusive"
    assert v3.bands["rouge_l.forget"].hi > v10.bands["rouge_l.forget"].hi > 0.075 + 0.15 - 1e-9  # fewer facts, wider band
    assert v3.bands["rouge_l.forget"].source == "unknown facts"
    assert no_oracle_verdict(*results([1.0, 1.0, 0.5], known, unknown), {}).label == "not forgotten"
    blind = no_oracle_verdict(*results([1.0, 1.0, 0.5], unknown[:10], unknown), {})  # the original cannot tell known from unknown
    assert blind.label == "inconclusive" and "rouge_l.forget" not in blind.bands
    row = next(r for r in blind.rows if r["key"] == "rouge_l.forget")
    assert row["status"] == "reported only" and "no power without an oracle" in row["reported_only"]
    assert any(r.startswith("reported only, not deciding: rouge_l.forget") for r in blind.reasons)
    assert "forget evidence" in " ".join(blind.missing)  # nothing left to decide forgetting
