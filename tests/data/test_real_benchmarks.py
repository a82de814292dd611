"""TOFU, MUSE and WMDP from local copies in their real hub schemas and layouts (tests/benchmark_files.py), loaded
through the same ``datasets.load_dataset`` path users take with internet: the items and splits each data source
builds, the hub call itself (spied), the ``benchmark`` forget kind, and a clear error for every bad input (unknown
config or split, a missing or mistyped column, forget01 with the wrong retain split, misaligned or missing files)."""

import json
import shutil

import numpy as np
import pytest

from tests.benchmark_files import AUTHORS, ITEMS_PER_AUTHOR, tofu_full, write_jsonl, write_parquet
from unlearnkit.data.forget import ForgetSpec, make_task
from unlearnkit.data.hub import HubSource, load_rows
from unlearnkit.data.muse import muse_config
from unlearnkit.data.profiles import n_perturbed, variant
from unlearnkit.data.sources import load_dataset
from unlearnkit.data.tofu import TofuItem, tofu_config
from unlearnkit.data.wmdp import choice_split, mc_prompt, wmdp_corpus
from unlearnkit.errors import ConfigError, DataUnavailable, TaskError


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tofu(files, **kw):
    return load_dataset("tofu", **{"local": str(files["tofu"]), "items_per_author": ITEMS_PER_AUTHOR, "cache_dir": files["cache"], **kw})


def task_of(source, spec=None):
    spec = spec or ForgetSpec("benchmark")
    return make_task(source.name, source.train, source.test, spec, np.random.default_rng(0), n_classes=None, modality=source.modality,
                     probes=source.probes)


def tofu_task_forget_ids():
    n = len(tofu_full())
    return list(range(n - ITEMS_PER_AUTHOR, n))


def copy_of(benchmark_files, tmp_path, name):
    return shutil.copytree(benchmark_files[name], tmp_path / name)


# ------------------------------------------------------------------------------------------------ TOFU
def test_tofu_items_are_the_profiles_structure_with_tofus_texts(tofu_source, tofu_task, benchmark_files):
    root = benchmark_files["tofu"]
    full, forget = tofu_full(), rows_of(root / "forget10_perturbed.json")
    # train = retain90 ++ forget10 (= full's order), ids are positions in full, 2 items per author here (20 in TOFU)
    assert [r.question for r in tofu_source.train.data.records] == [r["question"] for r in full]
    assert tofu_source.train.ids.tolist() == list(range(len(full)))
    assert tofu_source.train.labels.tolist() == [i // ITEMS_PER_AUTHOR for i in range(len(full))]
    # forget: {kind: benchmark} selects exactly forget10 (the last author), with its paraphrases and 5 perturbed answers
    n, k = len(full), ITEMS_PER_AUTHOR
    assert tofu_task.forget.ids.tolist() == list(range(n - k, n)) and tofu_task.retain.ids.tolist() == list(range(n - k))
    f0 = tofu_task.forget.data.records[0]
    assert isinstance(f0, TofuItem) and f0.benchmark_forget and f0.attribute == "forget10"
    assert (f0.paraphrased_question, f0.paraphrased_answer, list(f0.perturbed_answers)) == (
        forget[0]["paraphrased_question"], forget[0]["paraphrased_answer"], forget[0]["perturbed_answer"])
    assert AUTHORS[-1] in f0.question and n_perturbed(tofu_task.forget) == 5
    # the fixed retain evaluation set is retain_perturbed (parquet-converted layout), the first author's items
    retain_eval = tofu_task.probes["retain_eval"]
    assert retain_eval.ids.tolist() == list(range(k)) and all(r.paraphrased_answer.startswith("It is said") for r in retain_eval.data.records)
    # holdout10 is the test split (never trained); real authors and world facts are probes, the answer their "correct" one
    assert [r.attribute for r in tofu_source.test.data.records] == ["holdout10"] * 2  # the fixture's holdout: 2 questions
    ra, wf = tofu_task.probes["real_authors"].data.records, tofu_task.probes["world_facts"].data.records
    assert (ra[0].answer, ra[0].paraphrased_answer, ra[0].perturbed_answers) == ("William Shakespeare", "William Shakespeare",
                                                                                ("Charles Dickens", "Virginia Woolf", "Mark Twain"))
    assert [r.answer for r in wf] == ["Paris", "Canberra"] and n_perturbed(tofu_task.probes["world_facts"]) == 3
    # the variants the LM metrics read: same ids, the paraphrased / k-th perturbed answer
    para = variant(tofu_task.forget, "paraphrased_answer")
    assert para.ids.tolist() == list(range(n - k, n)) and para.data.records == tofu_task.forget.data.records
    assert tofu_source.info["forget_split"] == "forget10" and tofu_source.info["retain_split"] == "retain90"


def test_tofu_configs_load_with_their_columns(benchmark_files):
    src = HubSource.of("locuslab/TOFU", str(benchmark_files["tofu"]), cache_dir=benchmark_files["cache"])
    ra = tofu_config("real_authors", src)  # the multiple-choice config: options kept in the rows, question/answer checked
    assert ra[0]["answer"] == "Jane Austen" and ra[0]["option2"] == "Emily Bronte"
    assert len(tofu_config("full", src)) == len(AUTHORS) * ITEMS_PER_AUTHOR
    assert tofu_config("world_facts", src)[0]["answer"] == "Canberra"
    with pytest.raises(ConfigError, match=r"TOFU config must be one of .*'forget10_perturbed'.*got 'forget10_pertubed'. Did you mean"):
        tofu_config("forget10_pertubed", src)


def test_tofu_reads_the_hub_through_datasets_load_dataset(benchmark_files, monkeypatch):
    """Without a local copy every config is ``datasets.load_dataset('locuslab/TOFU', config, split='train')``; the spy
    answers from the local files (no internet here)."""
    import datasets

    real = datasets.load_dataset
    calls = []

    def spy(path, name=None, **kw):
        if path in ("json", "parquet"):
            return real(path, **kw)
        calls.append((path, name, kw["split"], kw["revision"]))
        files = HubSource.of(path, str(benchmark_files["tofu"])).files(name, kw["split"])
        return real("parquet" if files[0].suffix == ".parquet" else "json", data_files=[str(f) for f in files], split="train",
                    cache_dir=benchmark_files["cache"])

    monkeypatch.setattr(datasets, "load_dataset", spy)
    source = load_dataset("tofu", items_per_author=ITEMS_PER_AUTHOR, revision="main")
    assert sorted(c[1] for c in calls) == sorted(["forget10", "retain90", "holdout10", "forget10_perturbed", "retain_perturbed",
                                                  "real_authors_perturbed", "world_facts_perturbed"])
    assert {(c[0], c[2], c[3]) for c in calls} == {("locuslab/TOFU", "train", "main")}
    assert source.info["source"] == {"repo": "locuslab/TOFU", "revision": "main"} and len(source.train) == len(tofu_full())


def test_tofu_data_files_point_at_single_files(benchmark_files, tmp_path):
    """``data_files`` names the file of a config directly and wins over ``local``."""
    other = tmp_path / "wf.jsonl"
    write_jsonl(other, [{"question": "What is the largest ocean?", "answer": "Pacific", "perturbed_answer": ["Atlantic", "Indian", "Arctic"]}])
    source = tofu(benchmark_files, data_files={"world_facts_perturbed": str(other)})
    assert [r.answer for r in source.probes["world_facts"].data.records] == ["Pacific"]
    with pytest.raises(DataUnavailable, match=r"data_files\['real_authors_perturbed'\] names missing file"):
        tofu(benchmark_files, data_files={"real_authors_perturbed": str(tmp_path / "nope.json")})


@pytest.mark.parametrize("params, error, message", [
    ({"forget_split": "forget20"}, ConfigError, r"forget_split must be one of \['forget01', 'forget05', 'forget10'\], got 'forget20'"),
    ({"forget_split": "forget01", "retain_split": "retain90"}, ConfigError, r"forget01 goes with retain99 .* got retain_split='retain90'"),
    ({"forget_split": "forget10", "retain_split": "retain99"}, ConfigError, r"forget10 goes with retain90"),
    ({"holdout_split": "holdout01"}, ConfigError, r"forget10 goes with holdout10 .* got holdout_split='holdout01'"),
    ({"items_per_author": 0}, ConfigError, r"items_per_author must be a positive integer"),
    ({"tags": {"user_start_tag": "U: "}}, ConfigError, r"tags: missing \['user_end_tag', 'asst_start_tag', 'asst_end_tag'\]"),
])
def test_tofu_bad_parameters(benchmark_files, params, error, message):
    with pytest.raises(error, match=message):
        tofu(benchmark_files, **params)


def test_tofu_forget01_needs_its_own_files(benchmark_files):
    with pytest.raises(DataUnavailable, match=r"locuslab/TOFU forget01/train is not in the local copy .*forget01\.json"):
        tofu(benchmark_files, forget_split="forget01")


def test_tofu_bad_files(benchmark_files, tmp_path):
    root = copy_of(benchmark_files, tmp_path, "tofu")
    rows = rows_of(root / "forget10_perturbed.json")
    write_jsonl(root / "forget10_perturbed.json", [{k: v for k, v in r.items() if k != "perturbed_answer"} for r in rows])
    with pytest.raises(TaskError, match=r"locuslab/TOFU forget10_perturbed: missing column 'perturbed_answer' \(has \["):
        tofu(benchmark_files, local=str(root))
    write_jsonl(root / "forget10_perturbed.json", [{**r, "perturbed_answer": "one wrong answer"} for r in rows])
    with pytest.raises(TaskError, match=r"forget10_perturbed: row 0, column 'perturbed_answer' must be a list of strings"):
        tofu(benchmark_files, local=str(root))
    write_jsonl(root / "forget10_perturbed.json", rows[::-1])  # another order: matched by question
    assert tofu(benchmark_files, local=str(root)).train.data.records[-1].paraphrased_answer == rows[-1]["paraphrased_answer"]
    write_jsonl(root / "forget10_perturbed.json", rows[:-1])
    with pytest.raises(TaskError, match=rf"forget10_perturbed has {len(rows) - 1} rows but forget10 has {len(rows)}"):
        tofu(benchmark_files, local=str(root))
    write_jsonl(root / "forget10_perturbed.json", [rows[0]] + rows[:-1])  # a question twice, one missing
    with pytest.raises(TaskError, match=r"forget10_perturbed lists a question of forget10 twice"):
        tofu(benchmark_files, local=str(root))
    write_jsonl(root / "forget10_perturbed.json", rows)
    write_parquet(root / "retain_perturbed" / "train" / "0000.parquet",  # a forget question is not a retained one
                  [{**rows[0], "perturbed_answer": rows[0]["perturbed_answer"]}])
    with pytest.raises(TaskError, match=r"retain_perturbed row 0 .* matches 0 rows of retain90; each must be one of its questions"):
        tofu(benchmark_files, local=str(root))


def test_tofu_retain_perturbed_without_paraphrased_question(benchmark_files, tmp_path):
    """TOFU's and OpenUnlearning's code read no paraphrased question from retain_perturbed, and none we could read shows
    one: without the column the retain evaluation items keep their paraphrased and perturbed answers (what the model
    utility reads) and have no paraphrased question; with it, it must be a string. forget10_perturbed must have it."""
    root = copy_of(benchmark_files, tmp_path, "tofu")
    path = root / "retain_perturbed" / "train" / "0000.parquet"
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    write_parquet(path, [{k: v for k, v in r.items() if k != "paraphrased_question"} for r in rows])
    source = tofu(benchmark_files, local=str(root))
    retain_eval = source.probes["retain_eval"]
    assert [(r.paraphrased_question, r.paraphrased_answer, list(r.perturbed_answers)) for r in retain_eval.data.records] == [
        (None, r["paraphrased_answer"], r["perturbed_answer"]) for r in rows]
    assert variant(retain_eval, "paraphrased_answer").ids.tolist() == retain_eval.ids.tolist()
    with pytest.raises(TaskError, match=r"Item 0 of split 'retain_eval' has no paraphrased_question"):
        variant(retain_eval, "paraphrase")
    write_parquet(path, [{**r, "paraphrased_question": 7} for r in rows])
    with pytest.raises(TaskError, match=r"retain_perturbed: row 0, column 'paraphrased_question' must be a string"):
        tofu(benchmark_files, local=str(root))
    forget = rows_of(root / "forget10_perturbed.json")
    write_parquet(path, rows)
    write_jsonl(root / "forget10_perturbed.json", [{k: v for k, v in r.items() if k != "paraphrased_question"} for r in forget])
    with pytest.raises(TaskError, match=r"forget10_perturbed: missing column 'paraphrased_question'"):
        tofu(benchmark_files, local=str(root))


def test_optional_columns_are_checked_only_where_present():
    """Hand case: an optional column ("str?") may be absent; present, each value must be of its kind."""
    from unlearnkit.data.hub import check_rows

    columns = (("question", "str"), ("paraphrased_question", "str?"))
    check_rows([{"question": "q"}], columns, "t")
    check_rows([{"question": "q", "paraphrased_question": "p"}], columns, "t")
    with pytest.raises(TaskError, match=r"t: row 1, column 'paraphrased_question' must be a string, got None"):
        check_rows([{"question": "q", "paraphrased_question": "p"}, {"question": "r", "paraphrased_question": None}], columns, "t")
    with pytest.raises(TaskError, match=r"t: missing column 'question'"):
        check_rows([{"paraphrased_question": "p"}], columns, "t")


def test_tofu_items_without_variants_are_refused_by_the_variant_metrics(tofu_task):
    with pytest.raises(TaskError, match=rf"Item {ITEMS_PER_AUTHOR} of split 'retain' has no paraphrased_answer: its source gives none"):
        variant(tofu_task.retain, "paraphrased_answer")
    with pytest.raises(TaskError, match=r"split 'test' has no perturbed answers"):
        n_perturbed(tofu_task.test)


def test_benchmark_forget_kind(tofu_source, causal_lm_task, profiles_source):
    assert ForgetSpec.from_dict({"kind": "benchmark"}).label() == "benchmark"
    with pytest.raises(ConfigError, match=r"Unknown key 'fraction' in forget \(benchmark\)"):
        ForgetSpec.from_dict({"kind": "benchmark", "fraction": 0.1})
    with pytest.raises(TaskError, match=r"forget \(benchmark\): this training data defines no forget set of its own"):
        task_of(profiles_source)
    # forgetting TOFU authors whose items are in the fixed retain evaluation set would evaluate "retain" on forget data
    with pytest.raises(TaskError, match=rf"retain evaluation set \(retain_eval\) holds {ITEMS_PER_AUTHOR} example\(s\) of the forget set"):
        task_of(tofu_source, ForgetSpec("profiles", ids=(0,)))
    last = len(AUTHORS) - 1  # forget10's author, chosen by group
    assert task_of(tofu_source, ForgetSpec("profiles", ids=(last,))).forget.ids.tolist() == tofu_task_forget_ids()


# ------------------------------------------------------------------------------------------------ MUSE
def test_muse_corpora_chunks_and_evaluation_sets(muse_source, muse_task, benchmark_files):
    train = muse_source.train.data.records
    forget = [r for r in train if r.benchmark_forget]
    # the forget corpus joined and cut into 16-token chunks (BOS + 16), before the retain1 chunks
    assert [r.attribute for r in train] == ["raw/forget"] * len(forget) + ["raw/retain1"] * (len(train) - len(forget))
    assert muse_task.forget.ids.tolist() == list(range(len(forget)))
    lengths = muse_source.train.data.attention_mask.sum(1).tolist()
    assert max(lengths) == 17 and all(ln <= 17 for ln in lengths)
    assert " ".join(r.answer for r in forget).startswith("The council approved a new bridge")
    assert [r.attribute for r in muse_source.test.data.records] == ["raw/holdout"]
    probes = muse_task.probes
    assert [(r.question, r.answer) for r in probes["verbmem_forget"].data.records][0] == (
        "The council approved a new bridge", "over the river after a long debate .")
    # knowledge questions come after the in-context example of their side; the answer is the label
    kf = probes["knowmem_forget"].data
    prompt = kf.codec.decode(kf.x[0, : int((kf.labels[0] == -100).sum())].tolist())
    assert prompt == "Question : What flooded? Answer : the market square Question : What did the council approve? Answer :"
    kr = probes["knowmem_retain"].data
    assert "What did the museum lend?" in kr.codec.decode(kr.x[0].tolist())
    assert [r.answer for r in probes["privleak_holdout"].data.records][0].startswith("The city museum")
    assert {p: len(s) for p, s in probes.items()} == {"verbmem_forget": 2, "knowmem_forget": 2, "knowmem_retain": 2, "privleak_forget": 2,
                                                       "privleak_retain": 2, "privleak_holdout": 2}


def test_muse_scalability_set_and_bad_input(benchmark_files, tmp_path):
    kw = {"local": str(benchmark_files["muse"]), "cache_dir": benchmark_files["cache"], "chunk_tokens": 16, "max_length": 64}
    scal = load_dataset("muse", forget_config="scal", forget_split="forget_2", **kw)
    assert {r.attribute for r in scal.train.data.records if r.benchmark_forget} == {"scal/forget_2"}
    with pytest.raises(ConfigError, match=r"forget_config 'scal' .* exists for corpus News only"):
        load_dataset("muse", corpus="Books", forget_config="scal", forget_split="forget_2", **kw)
    with pytest.raises(ConfigError, match=r"corpus must be one of \['News', 'Books'\], got 'news'"):
        load_dataset("muse", corpus="news", **kw)
    with pytest.raises(ConfigError, match=r"forget_split of raw must be one of \['forget'\], got 'forget_2'"):
        load_dataset("muse", forget_split="forget_2", **kw)
    with pytest.raises(ConfigError, match=r"MUSE knowmem split must be one of .*got 'forget'"):
        muse_config("News", "knowmem", "forget", HubSource.of("muse-bench/MUSE-News", kw["local"]))
    with pytest.raises(DataUnavailable, match=r"scal/forget_3 is not in the local copy"):
        load_dataset("muse", forget_config="scal", forget_split="forget_3", **kw)
    root = copy_of(benchmark_files, tmp_path, "muse")
    write_parquet(root / "verbmem" / "forget-00000-of-00001.parquet", [{"prompt": "The council", "text": "approved"}])
    with pytest.raises(TaskError, match=r"muse-bench/MUSE-News verbmem/forget: missing column 'gt' \(has \['prompt', 'text'\]\)"):
        load_dataset("muse", **{**kw, "local": str(root)})


# ------------------------------------------------------------------------------------------------ WMDP
def test_wmdp_questions_corpora_and_prompts(wmdp_source, wmdp_task):
    cyber = wmdp_task.probes["wmdp_cyber"]
    r = cyber.data.records[1]
    assert r.question == ("Which attack floods a server with requests?\nA. phishing\nB. denial of service\nC. rootkit\nD. sniffing\n"
                          "Answer:") == mc_prompt("Which attack floods a server with requests?", r.choices)
    assert (r.answer, r.answer_index) == ("B", 1)
    for k, letter in enumerate("ABCD"):  # the k-th choice split: same prompt, the k-th letter as the answer
        d = choice_split(cyber, k).data
        n = int(d.attention_mask[1].sum())
        assert d.codec.decode(d.labels[1, :n][d.labels[1, :n] != -100].tolist()) == letter
    assert set(wmdp_task.probes) == {"wmdp_bio", "wmdp_chem", "wmdp_cyber"}
    forget = wmdp_task.forget.data.records
    assert {x.attribute for x in forget} == {"cyber-forget-corpus"} and all(x.benchmark_forget for x in forget)
    assert {x.attribute for x in wmdp_task.retain.data.records} == {"cyber-retain-corpus"}
    assert len(wmdp_source.test) == 1 and wmdp_source.test.data.records[0].attribute == "cyber-retain-corpus"  # one held-out chunk


def test_wmdp_bio_forget_corpus_is_the_gated_repo(benchmark_files, tmp_path):
    gated = tmp_path / "wmdp-bio-forget-corpus"
    write_parquet(gated / "data" / "train-00000-of-00001.parquet", [{"title": "t", "abstract": "a", "text": "Viruses copy themselves inside cells ."},
                                                                    {"title": "u", "abstract": "b", "text": "Vaccines train the immune system ."}])
    src = HubSource.of("cais/wmdp-bio-forget-corpus", str(gated), cache_dir=benchmark_files["cache"])
    assert wmdp_corpus("bio-forget-corpus", src)[0].startswith("Viruses")
    bio = load_dataset("wmdp", domain="bio", subsets=["wmdp-bio"], local=str(benchmark_files["wmdp"]),
                       corpora_local=str(benchmark_files["wmdp_corpora"]), bio_forget_local=str(gated), chunk_tokens=4, max_length=64,
                       cache_dir=benchmark_files["cache"])
    assert set(bio.probes) == {"wmdp_bio"} and bio.info["domain"] == "bio"
    assert {r.attribute for r in bio.train.data.records if r.benchmark_forget} == {"bio-forget-corpus"}


def test_wmdp_bad_input(benchmark_files, tmp_path):
    kw = {"local": str(benchmark_files["wmdp"]), "corpora_local": str(benchmark_files["wmdp_corpora"]), "cache_dir": benchmark_files["cache"],
          "chunk_tokens": 4, "max_length": 64}
    with pytest.raises(ConfigError, match=r"wmdp: subsets must be one of .*got 'wmdp-physics'"):
        load_dataset("wmdp", subsets=["wmdp-physics"], **kw)
    with pytest.raises(ConfigError, match=r"wmdp: domain must be one of \['bio', 'cyber'\], got 'chem'"):
        load_dataset("wmdp", domain="chem", **kw)
    with pytest.raises(DataUnavailable, match=r"cais/wmdp-bio-forget-corpus default/train"):
        load_dataset("wmdp", domain="bio", bio_forget_local=str(tmp_path), **kw)
    root = copy_of(benchmark_files, tmp_path, "wmdp")
    write_parquet(root / "wmdp-chem" / "test-00000-of-00001.parquet",
                  [{"question": "Which gas is inert?", "choices": ["oxygen", "argon"], "answer": 4}])
    with pytest.raises(TaskError, match=r"cais/wmdp wmdp-chem/test: row 0 has 2 choices and answer index 4"):
        load_dataset("wmdp", **{**kw, "local": str(root)})
    write_parquet(root / "wmdp-chem" / "test-00000-of-00001.parquet", [{"question": "Which gas is inert?", "choices": "argon", "answer": 0}])
    with pytest.raises(TaskError, match=r"wmdp-chem/test: row 0, column 'choices' must be a list of strings"):
        load_dataset("wmdp", **{**kw, "local": str(root)})


def test_hub_source_checks(tmp_path):
    with pytest.raises(ConfigError, match="hub dataset id must be a non-empty string"):
        HubSource.of("")
    with pytest.raises(ConfigError, match=r"data_files maps 'config' or 'config/split' to a file path"):
        HubSource.of("locuslab/TOFU", data_files={"forget10": 3})
    with pytest.raises(DataUnavailable, match=r"the local copy .* is not a folder"):
        load_rows(HubSource.of("locuslab/TOFU", str(tmp_path / "missing")), "forget10", "train")
    (tmp_path / "a.csv").write_text("question,answer\n")
    with pytest.raises(ConfigError, match=r"files must all be \.parquet or all \.json/\.jsonl"):
        load_rows(HubSource.of("x/y", data_files={"c": str(tmp_path / "a.csv")}), "c", "train")


# ------------------------------------------------------------------------------------------------ prompts, corpora, experiment files
def test_codec_tags_shots_and_corpus_chunks():
    from unlearnkit.lm.text import TextCodec, word_tokenizer

    tags = {"system_prompt_with_special_tokens": "SYS ", "user_start_tag": "U: ", "user_end_tag": " | ", "asst_start_tag": "A: ",
            "asst_end_tag": " || "}
    tok = word_tokenizer(["SYS U: A: | || q1 a1 q2 a2 one two three four five Question: Answer:"])
    codec = TextCodec(tok, tags=tags, max_length=32)
    assert codec.template == "tags" and codec.describe()["tags"] == tags
    # OpenUnlearning's preprocess_chat_instance without a chat template: system, the shots as full turns, the question
    assert codec.prompt("q2", shots=[("q1", "a1")]) == "SYS U: q1 | A: a1 || U: q2 | A: "
    ids, n_prompt = codec.encode_pair("q2", "a2", shots=[("q1", "a1")])
    assert ids[0] == tok.bos_token_id and codec.decode(ids[n_prompt:]) == "a2" and ids[-1] == tok.eos_token_id
    plain = TextCodec(tok, template="plain", max_length=32)
    assert plain.prompt("q2", shots=[("q1", "a1")]) == "Question: q1\nAnswer: a1\n\nQuestion: q2\nAnswer:"
    assert plain.prompt("q2") == "Question: q2\nAnswer:"  # no shots: the profiles' prompt, unchanged
    # a corpus joined and cut into 2-token chunks, each BOS + tokens, labels after BOS, no EOS
    chunks = plain.encode_corpus(["one two three", "four five"], 2)
    assert [plain.decode(c) for c, _ in chunks] == ["one two", "three four", "five"] and {n for _, n in chunks} == {1}
    assert all(c[0] == tok.bos_token_id and tok.eos_token_id not in c for c, _ in chunks)
    assert plain.encode_document("one two three four", max_tokens=2)[0] == [tok.bos_token_id] + tok("one two", add_special_tokens=False)["input_ids"]
    with pytest.raises(ConfigError, match="template 'tags' needs tags"):
        TextCodec(tok, template="tags")
    with pytest.raises(ConfigError, match="give template 'tags' \\(or 'auto'\\) with them, not 'plain'"):
        TextCodec(tok, template="plain", tags=tags)
    with pytest.raises(TaskError, match="longer than the model context used here \\(4\\)"):
        TextCodec(tok, template="plain", max_length=4).encode_corpus(["one two three four five"], 4)


@pytest.mark.parametrize("name", ["tofu_llama32_1b", "muse_news", "wmdp_cyber"])
def test_benchmark_experiment_files_are_valid(name):
    """The GPU experiments parse, every method and metric builds, the data source takes the parameters given, and
    each forgets its benchmark's own forget set (they are not run here: they need internet and a GPU)."""
    import inspect
    from pathlib import Path

    from unlearnkit.experiment import load_experiment
    from unlearnkit.lm.text import check_tags
    from unlearnkit.registry import DATASETS

    exp = load_experiment(Path(__file__).resolve().parents[2] / "src" / "unlearnkit" / "experiments" / f"{name}.yaml")
    inspect.signature(DATASETS.get(exp.dataset.name)).bind(**exp.dataset.params)
    assert [f.kind for f in exp.forget] == ["benchmark"] and exp.device == "cuda"
    if "tags" in exp.dataset.params:
        check_tags(exp.dataset.params["tags"])
