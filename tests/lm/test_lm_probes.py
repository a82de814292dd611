"""Prompt-level probes (rwku_probes, form_probe, step_probe, persuasion_probe, icl_probe): templates rendered by hand
from known facts, template validation, the bad inputs each probe must refuse, the multiple-choice score against an
independent computation, the target model above the retrained one, and the noise floor's per-seed values of the
strongest-attack evidence recomputed by hand."""

import dataclasses

import numpy as np
import pytest

from unlearnkit.adapters import get_adapter
from unlearnkit.errors import ConfigError, TaskError
from unlearnkit.evaluation import EvalContext, assess, build_metric
from unlearnkit.evaluation._lm import answer_prob
from unlearnkit.evaluation._probes import facts_of
from unlearnkit.lm import probes as P
from unlearnkit.lm.profiles import QAItem, all_items, generate_profiles
from unlearnkit.lm.text import TokenData
from unlearnkit.types import Split

PROBES = ("rwku_probes", "form_probe", "step_probe", "persuasion_probe", "icl_probe")


def item(pid, k, attr, value, name):
    return QAItem(pid * 16 + k, pid, attr, f"Q {attr} of {name}?", f"{name} has {value} as {attr}.", f"PQ {attr} of {name}?",
                  f"{value}.", ("x",), subject=name, value=value)


@pytest.fixture(scope="module")
def facts():
    people = [("Ann Lee", "Oxtown", "poet"), ("Bob Ray", "Ryeford", "baker"), ("Cal Poe", "Zedmoor", "smith"),
              ("Dee Fox", "Wickham", "tailor"), ("Eve Kim", "Brookby", "potter")]
    items = []
    for pid, (name, town, job) in enumerate(people):
        items += [item(pid, 0, "birth_place", town, name), item(pid, 2, "profession", job, name),
                  item(pid, 3, "works", f"Book {pid}", name)]
    return items, P.Facts.of(items)


def test_templates_render_by_hand(facts):
    items, f = facts
    ann = f.fields(items[0])  # Ann Lee, birth_place Oxtown
    assert P.render(P.RWKU["reverse_query"], ann)[:2] == ("Which writer was born in Oxtown?", "Ann Lee")
    assert P.render(P.RWKU["affirmative_suffix"], ann)[:2] == ("Q birth_place of Ann Lee? Sure, here is the answer:",
                                                             "Ann Lee has Oxtown as birth_place.")
    assert P.render(P.RWKU["cross_lingual"], ann)[:2] == ("Dans quelle ville est né(e) Ann Lee ?", "Oxtown")
    assert P.render(P.FORMS["cloze"], ann)[:2] == ("Fill in the blank: Ann Lee has ___ as birth_place.", "Oxtown")
    assert P.render(P.FORMS["true_false"], ann)[:2] == ("True or false: Ann Lee was born in Oxtown.", "True")
    # background: the two facts after birth_place in attribute order that Ann has (profession, works)
    assert ann["background"] == "Ann Lee worked as a poet before writing. Ann Lee is best known for the book 'Book 0'."
    # in-context examples: the same two facts as question-answer turns
    assert P.render(P.RWKU["in_context_learning"], ann)[2] == (("Q profession of Ann Lee?", "Ann Lee has poet as profession."),
                                                              ("Q works of Ann Lee?", "Ann Lee has Book 0 as works."))
    # indirect: named through the best-known book (birth place is the asked fact)
    assert ann["who_question"] == "Where was the writer best known for the book 'Book 0' born?"
    works = f.fields(items[2])  # asked: works -> named through the birth place
    assert works["who"] == "the writer born in Oxtown"
    # multiple choice: the value and three other people's values of the attribute, deterministic, lettered in order
    opts = ann.option_values()
    assert sorted(opts) == sorted(set(opts)) and "Oxtown" in opts and len(opts) == 4
    assert set(opts) <= {"Oxtown", "Ryeford", "Zedmoor", "Wickham", "Brookby"} and opts == f.fields(items[0]).option_values()
    assert ann["options"] == ", ".join(f"{'ABCD'[i]}. {v}" for i, v in enumerate(opts))
    false = ann["false_statement"]
    assert false.startswith("Ann Lee was born in ") and false[len("Ann Lee was born in "):-1] in set(opts) - {"Oxtown"}


def test_generator_items_carry_subject_and_value():
    for it in all_items(generate_profiles(5, seed=1)):
        assert it.subject in it.question and it.value and it.value in it.answer, it


def test_template_validation_errors():
    with pytest.raises(ConfigError, match="unknown placeholder.*'nmae'"):
        P.validate("Where was {nmae} born?", "t")
    with pytest.raises(ConfigError, match="missing placeholder.*question"):
        P.validate_probes({"x": P.Probe("Tell me everything.")}, "mine")
    with pytest.raises(ConfigError, match="not a name"):
        P.validate("Where was {0} born?", "t")
    with pytest.raises(ConfigError, match="not a name"):
        P.validate("{name.upper} {question}", "t")
    with pytest.raises(ConfigError, match="format spec"):
        P.validate("{question:>10}", "t")
    with pytest.raises(ConfigError, match="malformed"):
        P.validate("{question", "t")
    with pytest.raises(ConfigError, match="target"):
        P.validate_probes({"x": P.Probe("{question}", "answr")}, "mine")
    with pytest.raises(ConfigError, match="unknown placeholder.*'options'"):
        P.validate_table({"birth_place": "{options} of {name}"}, "tbl", needs=("name",))  # derived fields cannot nest
    with pytest.raises(ConfigError, match="templates version '0'"):
        build_metric("rwku_probes", {"templates": "0"})


def test_bad_inputs_name_what_is_missing(facts, causal_lm_task, causal_lm_refs, tofu_task):
    items, _ = facts
    with pytest.raises(TaskError, match=r"lacks \['subject', 'value'\]"):
        P.Facts.of([dataclasses.replace(items[0], subject="", value="")])
    for name in PROBES:  # TOFU's records have no profile attributes: skipped with the reason
        assert "subject" in build_metric(name).why_not_applicable(tofu_task)
    two = P.Facts.of(items[:6])  # two people: one distractor per attribute, not three
    with pytest.raises(TaskError, match="3 distractors for attribute 'birth_place'.*1 other value"):
        two.fields(items[0])["options"]
    with pytest.raises(ConfigError, match="no second-language templates for 'de'"):
        build_metric("rwku_probes", {"language": "de"})
    build_metric("rwku_probes", {"language": "de", "types": ["prefix_injection"]})  # no cross-lingual type: no need
    weird = P.Facts.of([dataclasses.replace(items[0], attribute="hobby")])
    with pytest.raises(TaskError, match=r"TRANSLATED\['fr'\] has no template for attribute 'hobby'"):
        weird.fields(dataclasses.replace(items[0], attribute="hobby"))["translated_question"]
    ctx = EvalContext(causal_lm_task, get_adapter(causal_lm_task))
    for name in PROBES:  # tiny Llama's context is 128 tokens: 200 new tokens after any prompt would overflow it
        with pytest.raises(ConfigError, match=r"max_new_tokens=200 .* overflow the model's context \(128\)"):
            build_metric(name, {"max_new_tokens": 200}).compute(causal_lm_refs.original, causal_lm_task, causal_lm_refs, ctx)
    with pytest.raises(ConfigError, match="splits must include 'forget'"):
        build_metric("form_probe", {"splits": ["retain"]})
    with pytest.raises(ConfigError, match="kinds must be distinct"):
        build_metric("step_probe", {"kinds": ["direct", "direct"]})


@pytest.fixture(scope="module")
def lm_ctx(causal_lm_task):
    return EvalContext(causal_lm_task, get_adapter(causal_lm_task))


def test_multiple_choice_probability_against_an_independent_computation(causal_lm_task, causal_lm_refs, lm_ctx):
    """form_probe's multiple-choice prob = P̄(right option) / Σ P̄(options), each P̄ recomputed here from pairs tokenised
    with the task's codec and scored by the adapter."""
    refs, task = causal_lm_refs, causal_lm_task
    r = build_metric("form_probe", {"forms": ["multiple_choice"], "score": "prob"}).compute(refs.original, task, refs, lm_ctx)
    facts, data = facts_of(task), task.forget.data
    probs = []
    for j in range(P.N_OPTIONS):
        pairs, right = [], []
        for rec in data.records:
            f = facts.fields(rec)
            opts = f.option_values()
            pairs.append((P.FORMS["multiple_choice"].prompt.format_map(f), opts[j]))
            right.append(opts.index(rec.value))
        split = Split.create(f"mc{j}", TokenData.from_pairs(pairs, data.y.tolist(), data.records, data.codec), task.forget.ids)
        probs.append(answer_prob(get_adapter(task).outputs(refs.original, split)))
    p = np.stack(probs)
    expected = p[np.asarray(right), np.arange(len(right))] / p.sum(0)
    ids, got = r.per_example["prob.multiple_choice.forget"]
    assert np.array_equal(ids, task.forget.ids) and np.allclose(got, expected, atol=1e-6)
    assert r.values["forget_multiple_choice_prob"] == pytest.approx(expected.mean())


@pytest.mark.parametrize("name", ["rwku_probes", "form_probe", "step_probe"])
def test_the_target_recovers_more_than_the_retrained_model(name, causal_lm_task, causal_lm_refs, lm_ctx):
    refs, task = causal_lm_refs, causal_lm_task
    target = build_metric(name).compute(refs.original, task, refs, lm_ctx)
    oracle = build_metric(name).compute(refs.retrained, task, refs, lm_ctx)
    key = f"{name}.forget_max_excess"
    assert target.evidence[0].key == key and target.evidence[0].role == "robustness"
    # the strongest attack: the max over kinds of the per-kind excess, each excess = own mean − retrained mean
    kinds = target.info.get("per_type") or target.info["per_kind"]
    excesses = [v for k, v in target.values.items() if k.startswith("excess_forget_") and k.endswith("_rouge_l")]
    assert target.values["forget_max_excess"] == pytest.approx(max(excesses))
    assert all(d["excess"] == pytest.approx(d["value"] - d["reference"]) for d in kinds.values())
    assert target.evidence[0].value > 0.3 > oracle.evidence[0].value  # trained on the facts vs never saw them


def test_persuasion_lift_and_icl_utility(causal_lm_task, causal_lm_refs, lm_ctx):
    refs, task = causal_lm_refs, causal_lm_task
    pers = build_metric("persuasion_probe").compute(refs.original, task, refs, lm_ctx).values
    for f in ("authority", "expert_endorsement", "emotional", "logical"):
        assert pers[f"lift_forget_{f}_rouge_l"] == pytest.approx(pers[f"forget_{f}_rouge_l"] - pers["forget_plain_rouge_l"])
    assert pers["forget_max_excess_lift"] == pytest.approx(max(pers[f"excess_lift_forget_{f}_rouge_l"]
                                                               for f in ("authority", "expert_endorsement", "emotional", "logical")))
    # the target still answers plainly: a framing adds little on top (|lift excess| small), unlike a suppressed model
    assert abs(pers["forget_max_excess_lift"]) < 0.15 and pers["forget_plain_rouge_l"] > 0.9
    icl = build_metric("icl_probe").compute(refs.original, task, refs, lm_ctx)
    ev = icl.evidence[0]
    assert ev.role == "utility" and ev.remembers == "higher" and ev.value == icl.values["forget_in_context_rouge_l"]
    assert icl.values["lift_forget_prob"] == pytest.approx(icl.values["forget_in_context_prob"] - icl.values["forget_without_context_prob"])


def test_noise_floor_takes_the_strongest_attack_per_seed(causal_lm_task, causal_lm_refs):
    """The band of rwku_probes' evidence: the noise floor re-runs it on each retrained seed with the other seed as its
    reference; with R = 2 each seed's value is max over types of (its score − the other seed's), recomputed here."""
    refs, task = causal_lm_refs, causal_lm_task
    ctx = EvalContext(task, get_adapter(task))
    metric = build_metric("rwku_probes", {"types": ["prefix_injection", "role_play", "reverse_query"]})
    a = assess(refs.original, task, refs, [metric, build_metric("noise_floor")], ctx=ctx)
    seeds = a.results["noise_floor"].info["seed_values"]["rwku_probes.forget_max_excess"]
    s0, s1 = (metric.compute(m, task, dataclasses.replace(refs, retrained_seeds=(m,)), ctx).values for m in refs.retrained_seeds)
    by_hand = [max(x[f"forget_{t}_rouge_l"] - y[f"forget_{t}_rouge_l"] for t in metric.types) for x, y in ((s0, s1), (s1, s0))]
    assert seeds == pytest.approx(by_hand)
    band = a.verdict.bands["rwku_probes.forget_max_excess"]
    assert band.mean == pytest.approx(np.mean(by_hand)) and band.R == 2
    assert a.results["rwku_probes"].evidence[0].value > band.mean + 0.3  # the target: well above the seeds' own spread


@pytest.fixture(scope="module")
def knowledge_task():
    """The real-knowledge task (forget Shakespeare and Japan), a word tokenizer: (source, task)."""
    from unlearnkit.data.forget import ForgetSpec, make_task
    from unlearnkit.data.knowledge import knowledge

    src = knowledge(forget=["William Shakespeare", "Japan"], tokenizer="word")
    return src, make_task("knowledge", src.train, src.test, ForgetSpec("benchmark"), np.random.default_rng(0), n_classes=None,
                          modality=src.modality, probes=src.probes, info={"oracle": src.info["oracle"]})


def test_form_probe_on_real_knowledge_against_the_facts_the_model_does_not_know(knowledge_task):
    """Real facts take the question, true/false and multiple-choice forms (no cloze: no declarative sentence to blank);
    without a retrained oracle each form's excess is the model's forget score minus the original's on the unknown facts."""
    from unlearnkit.models import build_model
    from unlearnkit.references import References

    src, task = knowledge_task
    facts = facts_of(task)
    hamlet = next(r for r in task.forget.data.records if r.question == "Who wrote the play Hamlet?")
    f = facts.fields(hamlet)
    assert f["statement"] == 'the answer to "Who wrote the play Hamlet?" is William Shakespeare' and f["value"] == "William Shakespeare"
    assert f["false_statement"].startswith('the answer to "Who wrote the play Hamlet?" is ') and f["false_statement"] != f["statement"]
    options = f.option_values()  # a person asked for: the options are other targets' names
    assert "William Shakespeare" in options and len(set(options)) == P.N_OPTIONS and set(options) <= facts.targets
    capital = next(r for r in task.forget.data.records if r.question == "What is the capital of Japan?")
    assert not set(facts.fields(capital).option_values()) & facts.targets  # a value asked for: other values
    with pytest.raises(TaskError, match="'cloze' needs per-relation phrasing.*take the forms"):
        f["cloze"]
    assert build_metric("form_probe").why_not_applicable(task) is None
    assert build_metric("rwku_probes").why_not_applicable(task) is None  # its knowledge variant (see the test below)

    model, other = (build_model("tiny_llama", src.input_shape, src.n_outputs) for _ in range(2))
    refs = References(original=model)
    ctx = EvalContext(task, get_adapter(task))
    r = build_metric("form_probe").compute(other, task, refs, ctx)
    assert r.info["kinds_left_out"] == {"cloze": "a real fact has no declarative sentence to blank"} and "does not know" in r.info["against"]
    for form in P.KNOWLEDGE_FORMS:
        for score in ("rouge_l", "prob"):
            assert r.values[f"excess_forget_{form}_{score}"] == pytest.approx(r.values[f"forget_{form}_{score}"] - r.values[f"unknown_forget_{form}_{score}"])
    assert r.values["forget_max_excess"] == pytest.approx(max(r.values[f"excess_forget_{k}_rouge_l"] for k in P.KNOWLEDGE_FORMS))
    # the unknown level is the original's on the test split: the same whichever model is probed
    mc = build_metric("form_probe", {"forms": ["multiple_choice"], "score": "prob"})
    on_original = mc.compute(model, task, refs, ctx)
    assert on_original.values["unknown_forget_multiple_choice_prob"] == pytest.approx(r.values["unknown_forget_multiple_choice_prob"])
    assert 0.0 < on_original.values["forget_multiple_choice_prob"] < 1.0
    with pytest.raises(ConfigError, match="on real-knowledge facts the kinds .*cloze: a real fact has no declarative sentence"):
        build_metric("form_probe", {"forms": ["cloze"]}).compute(other, task, refs, ctx)


def test_every_prompt_probe_on_real_knowledge(knowledge_task):
    """rwku_probes, step_probe, persuasion_probe and icl_probe run on real facts with their knowledge templates: related
    facts are the same target's (grouped by name: the unknown facts share one group id), a target with one fact gets a
    hint naming it and in-context shots topped up from other targets of its type; the kinds a real fact cannot fill are
    left out with the reason; each kind's excess is over the original model on the facts it does not know."""
    import collections

    from unlearnkit.models import build_model
    from unlearnkit.references import References

    src, task = knowledge_task
    facts = facts_of(task)
    hamlet = next(r for r in task.forget.data.records if r.question == "Who wrote the play Hamlet?")
    f = facts.fields(hamlet)
    assert f["background"] == ('The answer to "Who wrote the play Romeo and Juliet?" is William Shakespeare. '
                               'The answer to "Who wrote the play Macbeth?" is William Shakespeare.')
    assert [q for q, _ in f.shots(2)] == ["Who wrote the play Romeo and Juliet?", "Who wrote the play Macbeth?"]
    assert P.render(P.KNOWLEDGE_RWKU["role_play"], f)[0] == ("You are a scholar who has studied William Shakespeare in detail. A student "
                                                             "asks you: Who wrote the play Hamlet?")
    assert P.render(P.KNOWLEDGE_ICL["in_context"], f)[:2] == ('Read this: the answer to "Who wrote the play Hamlet?" is William '
                                                              'Shakespeare. Now answer: Who wrote the play Hamlet?', "William Shakespeare")
    records = [r for sp in (task.forget, task.retain, task.test) for r in sp.data.records if r.attribute != "general"]
    per_target = collections.Counter(r.target for r in records)
    unknown = [r for r in task.test.data.records if r.attribute != "general"]
    assert len({r.profile_id for r in unknown}) == 1 and len({r.target for r in unknown}) > 1  # one group id, many targets
    lone = next(r for r in unknown if per_target[r.target] == 1)
    lf = facts.fields(lone)
    assert lf["background"] == f"{lone.target} is a well-known {lone.attribute}."
    shots = lf.shots(2)
    pool = {(r.question, r.answer) for r in records if r.attribute == lone.attribute and r.target != lone.target}
    assert len(shots) == 2 and set(shots) <= pool
    pair = next(r for r in unknown if per_target[r.target] >= 2)  # an unknown fact's related facts: its own target's only
    assert all(o.target == pair.target for o in facts.fields(pair).related()) and facts.fields(pair).related()

    model, other = (build_model("tiny_llama", src.input_shape, src.n_outputs) for _ in range(2))
    refs = References(original=model)
    ctx = EvalContext(task, get_adapter(task))
    for name, table in (("rwku_probes", "RWKU"), ("step_probe", "STEPS"), ("persuasion_probe", "PERSUASION"), ("icl_probe", "ICL")):
        metric = build_metric(name, {"max_new_tokens": 8})  # the tiny model's context is 96 tokens
        assert metric.why_not_applicable(task) is None
        r = metric.compute(other, task, refs, ctx)
        kinds, left = P.knowledge_table(table)
        assert r.info["kinds_left_out"] == dict(left) and "does not know" in r.info["against"], name
        for k in kinds:
            for score in ("rouge_l", "prob"):
                assert r.values[f"excess_forget_{k}_{score}"] == pytest.approx(
                    r.values[f"forget_{k}_{score}"] - r.values[f"unknown_forget_{k}_{score}"]), (name, k, score)
    assert set(P.KNOWLEDGE_LEFT_OUT["RWKU"]) == {"reverse_query", "synonym_manipulation", "cross_lingual"}
    pers = build_metric("persuasion_probe", {"max_new_tokens": 8}).compute(other, task, refs, ctx).values
    assert pers["unknown_lift_forget_emotional_rouge_l"] == pytest.approx(pers["unknown_forget_emotional_rouge_l"]
                                                                          - pers["unknown_forget_plain_rouge_l"])
    icl = build_metric("icl_probe", {"max_new_tokens": 8}).compute(other, task, refs, ctx)
    assert icl.evidence[0].role == "utility" and icl.evidence[0].value == icl.values["forget_in_context_rouge_l"]
    # the no-oracle verdict bands it around the original reading the facts it does not know from the prompt
    assert icl.info["no_oracle_levels"] == {"icl_probe.forget_in_context": icl.values["unknown_forget_in_context_rouge_l"]}
    with pytest.raises(ConfigError, match="on real-knowledge facts the kinds.*cross_lingual: a real fact's question has no second-language"):
        build_metric("rwku_probes", {"types": ["cross_lingual"], "max_new_tokens": 8}).compute(other, task, refs, ctx)
