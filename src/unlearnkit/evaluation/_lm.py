"""Shared pieces of the language-model metrics: text splits and their variants, cached outputs per model, answer
tokens without the end-of-sequence token, greedy answers, ROUGE-L, truth ratios and text-membership scores.

Conventions every LM metric follows:

* The codec ends every answer with EOS (``TextCodec.encode_pair``). Scores built on the mean answer NLL (answer
  probability, truth ratio, and the LOSS, zlib and reference attacks) are over all answer tokens *including* EOS, as
  OpenUnlearning's ``evaluate_probability`` (its ``avg_loss``); scores built on the per-token sequence (exact
  memorisation, extraction strength, Min-K%, Min-K%++, gradient norm) *exclude* the final EOS position, as
  OpenUnlearning's ``tokenwise_logprobs`` (PR #101: EOS leaking into those sequences gave wrong ES).
* An answer with nothing to score (no answer token, or none besides the EOS a score leaves out) gets NaN, never a
  made-up value; aggregates leave such items out, count them (``n_excluded``) and warn (``finite_mean``).
* Outputs of the task's own splits go through ``EvalContext.outputs`` (shared with every metric); outputs of
  variant splits (paraphrased / perturbed answers, paraphrased questions) and greedy generations are cached per
  model object in the context, so a battery computes each once.
"""

from __future__ import annotations

import functools
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from ..data.forget import RETAIN_EVAL
from ..errors import ConfigError
from ..lm.text import IGNORE, TokenData
from ..types import Split, Task
from .base import EvalContext

# short split names of the LM metrics -> the task's split names ("neighbours" is the probe of real-world facts)
SPLITS = {"forget": "forget", "retain": "retain", "test": "test", "holdout": "holdout", "neighbours": "probe:neighbours", "general": "probe:general",
          "real_authors": "probe:real_authors", "world_facts": "probe:world_facts"}  # the last two: TOFU's (data source tofu)


def text_data(split: Split) -> TokenData:
    if not isinstance(split.data, TokenData):
        raise ConfigError(f"Split {split.name!r} is not tokenised text (TokenData); the language-model metrics need question-answer "
                          "records.")
    return split.data


def task_split(task: Task, name: str, *, required: bool = True) -> Split | None:
    """The task's split for a short name (forget, retain, test, holdout, neighbours); None if an optional one is absent.
    "retain" is the task's fixed retain evaluation subset (probe ``retain_eval``, see ``make_task``) when it has one."""
    if name not in SPLITS:
        raise ConfigError(f"Unknown split {name!r} for a language-model metric; known: {sorted(SPLITS)}.")
    splits = task.splits()
    if name == "retain" and f"probe:{RETAIN_EVAL}" in splits:
        return splits[f"probe:{RETAIN_EVAL}"]
    split = splits.get(SPLITS[name])
    if split is None and required:
        raise ConfigError(f"Task {task.name!r} has no split {SPLITS[name]!r} (has {sorted(task.splits())}).")
    return split


QA_FIELDS = ("paraphrased_question", "paraphrased_answer", "perturbed_answers")


def qa_records_missing(task: Task) -> str | None:
    """Why the task cannot feed the metrics built on answer variants (paraphrases, perturbed answers), or None:
    its forget and retain records must be question-answer items like the profiles data's (not e.g. book passages)."""
    for split in (task.forget, task.retain):
        data = split.data
        if not isinstance(data, TokenData) or not data.records:
            return "needs tokenised question-answer records"
        lacking = [f for f in QA_FIELDS if not hasattr(data.records[0], f)]
        if lacking:
            return (f"needs question-answer records with {', '.join(lacking)} (e.g. the profiles data); the {split.name} records are "
                    f"{type(data.records[0]).__name__}")
    return None


def check_splits(names: Sequence[str], who: str) -> None:
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise ConfigError(f"{who}: splits must be a non-empty subset of {sorted(SPLITS)}, got {list(names)}.")


def outputs(ctx: EvalContext, model: nn.Module, split: Split) -> dict[str, np.ndarray]:
    """The adapter's outputs of ``model`` on ``split`` (a task split or a variant of one), computed once per model."""
    for name, s in ctx.task.splits().items():
        if s is split:
            return ctx.outputs(model, name)

    def run() -> dict[str, np.ndarray]:
        out = ctx.adapter.outputs(model, split, batch_size=ctx.batch_size, device=ctx.device)
        out.update(ctx.adapter.stats(out))
        out["ids"] = split.ids
        return out

    return ctx.memo(model, ("lm.outputs", split.fingerprint), run)


def answer_prob(out: dict[str, np.ndarray]) -> np.ndarray:
    """Length-normalised answer probability P̄(a|q) = exp(−mean answer-token NLL), per example."""
    return np.exp(-out["nll"])


# ------------------------------------------------------------------------------------------------- unscored items
def finite_rows(values: np.ndarray, who: str, where: str, excluded: dict[str, int]) -> np.ndarray:
    """The mask of the finite entries of ``values``. Non-finite ones are items with nothing to score (an answer without
    tokens, or with only the EOS a score leaves out): their number goes into ``excluded[where]`` and, if any, a
    warning names them, so they are left out of an aggregate instead of crashing it or entering as a made-up value."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    bad = int((~ok).sum())
    excluded[where] = excluded.get(where, 0) + bad
    if bad:
        warnings.warn(f"{who}: {bad} of {len(v)} {where} items have no score (an empty answer, or none of the tokens this "
                      "score counts) and are left out; see n_excluded in the result's info.", UserWarning, stacklevel=3)
    return ok


def finite_mean(values: np.ndarray, who: str, where: str, excluded: dict[str, int]) -> float:
    """The mean of the finite entries of ``values`` (``finite_rows``: the others are counted and warned about); NaN
    when none is finite."""
    v = np.asarray(values, dtype=np.float64)
    ok = finite_rows(v, who, where, excluded)
    return float(v[ok].mean()) if ok.any() else float("nan")


# ------------------------------------------------------------------------------------------------- tokens
def eos_terminated(split: Split) -> np.ndarray:
    """Per example: whether the last answer token is the tokenizer's EOS (always, for the codec's own pairs)."""
    data = text_data(split)
    eos = data.codec.tokenizer.eos_token_id
    lengths = data.attention_mask.sum(1)
    last = data.labels.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    return (last == eos).cpu().numpy()


def token_rows(out: dict[str, np.ndarray], key: str, split: Split, *, drop_eos: bool = True) -> list[np.ndarray]:
    """Per example, the answer tokens' values of ``out[key]`` (a NaN-padded per-token array), without the final EOS."""
    arr = out[key]
    n = out["n_tokens"].astype(np.int64)
    cut = eos_terminated(split).astype(np.int64) if drop_eos else np.zeros(len(n), np.int64)
    return [arr[i, : max(int(n[i] - cut[i]), 0)] for i in range(len(n))]


def prompts_and_answers(split: Split) -> tuple[list[list[int]], list[list[int]]]:
    """Per example: the prompt token ids and the answer token ids (without the final EOS)."""
    data = text_data(split)
    eos = data.codec.tokenizer.eos_token_id
    prompts, answers = [], []
    for i in range(len(data)):
        n = int(data.attention_mask[i].sum())
        ids = data.x[i, :n].tolist()
        n_prompt = int((data.labels[i, :n] == IGNORE).sum())
        answer = ids[n_prompt:]
        if answer and answer[-1] == eos:
            answer = answer[:-1]
        prompts.append(ids[:n_prompt])
        answers.append(answer)
    return prompts, answers


def greedy(ctx: EvalContext, model: nn.Module, prompts: Sequence[Sequence[int]], key: Any, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations (token ids, cut at EOS) of ``prompts``, cached per model under ``key``."""
    return ctx.memo(model, ("lm.greedy", key, int(max_new_tokens)),
                    lambda: ctx.adapter.generate(model, [list(p) for p in prompts], max_new_tokens=max_new_tokens, device=ctx.device))


def greedy_answers(ctx: EvalContext, model: nn.Module, split: Split, max_new_tokens: int) -> tuple[list[str], list[str]]:
    """(greedy answers, gold answers) as text for the split's questions; gold = the decoded answer tokens without EOS."""
    codec = text_data(split).codec
    prompts, answers = prompts_and_answers(split)
    gen = greedy(ctx, model, prompts, split.fingerprint, max_new_tokens)
    return [codec.decode(g) for g in gen], [codec.decode(a) for a in answers]


# ------------------------------------------------------------------------------------------------- ROUGE
@functools.lru_cache(maxsize=4)
def rouge_scorer(use_stemmer: bool) -> Any:
    try:
        from rouge_score import rouge_scorer as rs
    except ImportError:  # pragma: no cover - a declared dependency of the LM extra
        raise ConfigError("ROUGE-L needs the rouge-score package: pip install rouge-score.") from None
    return rs.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(golds: Sequence[str], preds: Sequence[str], stat: str = "recall", *, use_stemmer: bool = True) -> np.ndarray:
    """Per pair, ROUGE-L ``stat`` (recall, precision or fmeasure) of ``pred`` against the reference ``gold`` (rouge_score);
    NaN for an empty (or blank) gold, where LCS/|gold| is 0/0 (rouge_score would report 0, a made-up "nothing recalled")."""
    scorer = rouge_scorer(bool(use_stemmer))
    return np.asarray([getattr(scorer.score(g, p)["rougeL"], stat) if g.strip() else float("nan") for g, p in zip(golds, preds)],
                      dtype=np.float64)


# ------------------------------------------------------------------------------------------------- truth ratio
def truth_ratios(ctx: EvalContext, model: nn.Module, split: Split) -> np.ndarray:
    """Per item, tr = P̄_pert / P̄_para = exp(NLL̄(para) − mean_j NLL̄(pert_j)): the geometric mean of the perturbed
    answers' length-normalised probabilities over that of the paraphrased answer (TOFU, OpenUnlearning)."""
    from ..data.profiles import n_perturbed, variant

    para = outputs(ctx, model, variant(split, "paraphrased_answer"))["nll"]
    pert = np.stack([outputs(ctx, model, variant(split, "perturbed", j))["nll"] for j in range(n_perturbed(split))])
    return truth_ratio_from_nll(para, pert)


def truth_ratio_from_nll(nll_correct: np.ndarray, nll_perturbed: np.ndarray) -> np.ndarray:
    """tr_i = exp(nll_correct_i − mean_j nll_perturbed_ji); ``nll_perturbed`` has shape (n_perturbed, n_items)."""
    return np.exp(np.asarray(nll_correct, np.float64) - np.asarray(nll_perturbed, np.float64).mean(0))


def forget_tr_score(tr: np.ndarray) -> float:
    """TOFU's forget aggregate ("closer to 1 is better"): mean_i min(tr_i, 1/tr_i)."""
    return float(np.mean(np.minimum(tr, 1.0 / tr)))


def true_tr_score(tr: np.ndarray) -> float:
    """TOFU's retain / real-world aggregate ("true is better"): mean_i max(0, 1 − tr_i)."""
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def prob_mean_score(tr: np.ndarray) -> float:
    """OpenUnlearning's ``prob_mean`` aggregate: mean_i P_correct / (P_correct + P_wrong), P_correct = P̄(paraphrased answer)
    and P_wrong = the geometric mean of the perturbed answers' P̄, the two probabilities of the truth ratio
    tr = P_wrong / P_correct, so each item's share is 1 / (1 + tr_i). OpenUnlearning adds 1e-10 to the denominator
    against a division by zero; here there is none to guard (1/(1 + tr) is defined for every tr ≥ 0, 0 at tr = ∞),
    and the guard would bias items whose two probabilities are both below ~1e-8."""
    return float(np.mean(1.0 / (1.0 + np.asarray(tr, dtype=np.float64))))


def normalised_prob(ctx: EvalContext, model: nn.Module, split: Split) -> np.ndarray:
    """Per item, P̄(a) / (P̄(a) + Σ_j P̄(pert_j)): the answer probability normalised over the options
    (OpenUnlearning's ``probability_w_options``, used for real authors / world facts)."""
    from ..data.profiles import n_perturbed, variant

    p = answer_prob(outputs(ctx, model, split))
    wrong = sum(answer_prob(outputs(ctx, model, variant(split, "perturbed", j))) for j in range(n_perturbed(split)))
    return p / (p + wrong)


def ranks_true_first(p: np.ndarray, wrong: np.ndarray) -> tuple[int, int, float, float]:
    """(k, n, chance, p-value): on how many of n items the true answer's probability ``p`` exceeds every wrong option's
    (``wrong``: options × items), the chance rate 1/(1 + options), and the one-sided binomial test of k against it."""
    from scipy.stats import binomtest

    p, wrong = np.asarray(p, np.float64), np.atleast_2d(np.asarray(wrong, np.float64))
    if wrong.shape[1] != p.shape[0] or p.size == 0:
        raise ConfigError(f"ranks_true_first: {p.shape[0]} items but wrong options of shape {wrong.shape}.")
    top, n = int(np.sum(p > wrong.max(0))), int(p.size)
    chance = 1.0 / (1 + wrong.shape[0])
    return top, n, chance, float(binomtest(top, n, chance, alternative="greater").pvalue)


def neighbours_unknown(ctx: EvalContext, original: nn.Module | None, neighbours: Split | None) -> str | None:
    """Why evidence on the neighbour facts cannot decide anything, or None: it can when the *original* model knows
    them, i.e. ranks the true answer above all of its perturbed options on more items than chance would (one-sided
    binomial test at 0.05 against 1/(1 + n_perturbed)). A model never pretrained (the tiny Llama trained from scratch
    on the profiles) does not, and then neither forgetting past retraining nor keeping them can show on them:
    measured in docs/results/verdict_calibration.md (no power on any planted case). Without the original or the
    neighbours probe there is nothing to test (None)."""
    if original is None or neighbours is None:
        return None
    records = getattr(neighbours.data, "records", None) or []
    if records and all(getattr(r, "known_by_selection", False) for r in records):
        return None  # the knowledge data's neighbours: kept because the original answered each correctly (its selection)

    def test() -> str | None:
        from ..data.profiles import n_perturbed, variant

        m = n_perturbed(neighbours)
        p = answer_prob(outputs(ctx, original, neighbours))
        wrong = np.stack([answer_prob(outputs(ctx, original, variant(neighbours, "perturbed", j))) for j in range(m)])
        top, n, chance, pvalue = ranks_true_first(p, wrong)
        if pvalue < 0.05:
            return None
        return (f"the original model does not know the neighbour facts (it ranks the true answer first on {top}/{n} items, chance "
                f"{chance:.2f}, binomial p = {pvalue:.2f}), so no model can show on them whether it kept or lost them")

    return ctx.memo(original, ("lm.neighbours_unknown", neighbours.fingerprint), test)


# ------------------------------------------------------------------------------------------------- memorisation
def extraction_strength(correct: np.ndarray) -> float:
    """ES = 1 − k*/|y|, k* the smallest k with argmax preds[k:] == labels[k:] (teacher forcing). k* = |y| when even the
    last token is wrong, so ES is exactly 0 then and 1 when every token is right. NaN for an empty answer."""
    c = np.asarray(correct) > 0.5
    n = len(c)
    if n == 0:
        return float("nan")
    wrong = np.flatnonzero(~c)
    k_star = 0 if len(wrong) == 0 else int(wrong[-1]) + 1
    return 1.0 - k_star / n


def exact_memorization(correct: np.ndarray) -> float:
    """EM = fraction of answer positions whose teacher-forced argmax is the label. NaN for an empty answer."""
    c = np.asarray(correct, dtype=np.float64)
    return float(c.mean()) if len(c) else float("nan")


# ------------------------------------------------------------------------------------------------- membership
def min_k(values: np.ndarray, k: float) -> float:
    """Mean of the lowest max(1, ⌊k·n⌋) values (Min-K% Prob; Shi et al., ICLR 2024). NaN for an empty sequence."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) == 0:
        return float("nan")
    return float(v[: max(1, int(len(v) * k))].mean())


def min_k_pp_z(logp: np.ndarray, mu: np.ndarray, sigma: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Min-K%++ token scores (Zhang et al., 2024): (log p(y_t) − μ_t)/σ_t; 0 where σ_t = 0 (a point-mass prediction)."""
    logp, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (logp, mu, sigma))
    ok = sigma > eps
    return np.where(ok, (logp - mu) / np.where(ok, sigma, 1.0), 0.0)


def zlib_bytes(text: str) -> int:
    """Length in bytes of zlib.compress(text as UTF-8) at zlib's default level (6)."""
    return len(zlib.compress(text.encode("utf-8")))


def answer_texts(split: Split) -> list[str]:
    """Per example, the text of its answer tokens (the labelled positions) decoded with special tokens skipped, not
    stripped: the text the loss is over, without the EOS (OpenUnlearning's ``extract_target_texts_from_processed_data``,
    which its zlib attack compresses)."""
    data = text_data(split)
    tok = data.codec.tokenizer
    return [str(tok.decode(row[row != IGNORE].tolist(), skip_special_tokens=True)) for row in data.labels]


__all__ = ["QA_FIELDS", "SPLITS", "answer_prob", "answer_texts", "check_splits", "eos_terminated", "exact_memorization",
           "extraction_strength", "finite_mean", "finite_rows", "forget_tr_score", "greedy", "greedy_answers", "min_k", "min_k_pp_z", "normalised_prob",
           "outputs", "prob_mean_score", "prompts_and_answers", "qa_records_missing", "rouge_l", "rouge_scorer", "task_split", "text_data",
           "token_rows", "true_tr_score", "truth_ratio_from_nll", "truth_ratios", "zlib_bytes"]
