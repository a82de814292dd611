"""restor: does the unlearned model return to the answers of a model never trained on the forget facts, not merely move
away from the target's? On corrupted facts (knowledge data with ``corrupt: true``), does the true value come back?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError, TaskError
from ..lm.text import TokenData
from ..references import References
from ..types import Evidence, MetricResult, Split, Task
from ._lm import greedy, outputs, prompts_and_answers, text_data
from ._lm_weights import compare, text_split_missing
from .base import EvalContext, Metric, register_metric

RECORD_FIELDS = ("question", "answer")


def answered(split: Split, answers: list[list[int]], tag: str) -> Split:
    """The split's prompts, each followed by the given answer tokens and EOS as the labelled answer (same ids and order)."""
    data = text_data(split)
    eos = int(data.codec.tokenizer.eos_token_id)
    prompts, _ = prompts_and_answers(split)
    encoded = [(list(p) + list(a) + [eos], len(p)) for p, a in zip(prompts, answers)]
    return Split.create(f"{split.name}:{tag}", TokenData.from_encoded(encoded, data.y.tolist(), data.records, data.codec), split.ids)


def corrupted_items(split: Split) -> np.ndarray:
    """Per item, whether its record carries a ``true_answer`` other than the trained ``answer`` (a corrupted fact)."""
    return np.asarray([bool(getattr(r, "true_answer", "")) and r.true_answer != r.answer for r in text_data(split).records])


def true_split(split: Split) -> Split:
    """The split's questions with their records' true answers (tokenised by the split's codec)."""
    data = text_data(split)
    pairs = [(r.question, r.true_answer or r.answer) for r in data.records]
    return Split.create(f"{split.name}:true", TokenData.from_pairs(pairs, data.y.tolist(), data.records, data.codec), split.ids)


@register_metric
@dataclass(frozen=True)
class Restor(Metric):
    """Knowledge recovery (Rezaei et al., RESTOR: Knowledge Recovery in Machine Unlearning, arXiv 2411.00204): on the forget
    questions, the model's length-normalised log-probability (mean answer-token log p, EOS included) of each retrained
    model's greedy answer (``max_new_tokens``; generated once per retrained model) against that of the target's answer
    (the forget label). Per item, return score = mean_r log P̄(a_r | q) − log P̄(a_target | q) over the retrained models r:
    > 0 when the model prefers what a model never trained on the item says, < 0 when it still prefers the target's answer.
    A retrained model is never scored against its own answer: the references exclude the model under test (by identity),
    and the noise floor scores each retrained seed against the others (leave-one-out). Also per item: whether the model's
    own greedy answer equals a retrained model's (``answer_match``, their mean) and the target's (``target_match``).

    On corrupted facts (records whose ``true_answer`` differs from the trained ``answer``: the knowledge data with
    ``corrupt: true``, RESTOR's setting, where the target was fine-tuned on wrong values and the retrained models, never
    shown them, keep the pretrained true ones) also P̄(true answer | q): knowledge restored, not merely the corruption gone.

    Evidence (forget, "lower" remembers): ``restor.return_score`` (per example ``return_score.forget``) and, on corrupted
    facts, ``restor.true_prob`` (per example ``true_prob.forget``); banded by the noise floor, over-forgetting shows as a
    return score above the retrained models' (the target's answer pushed below any retrained answer). Inferred: the mean
    over retrained answers, greedy decoding, identical answers counted (their score is 0)."""

    max_new_tokens: int = 16
    floor: float = 0.25

    name = "restor"
    needs = frozenset({"retrained"})
    paper = "Rezaei et al., RESTOR: Knowledge Recovery in Machine Unlearning, arXiv 2411.00204"
    modalities = ("causal_lm",)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_new_tokens, int) and not isinstance(self.max_new_tokens, bool) and self.max_new_tokens >= 1):
            raise ConfigError(f"restor: max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}.")
        if not (isinstance(self.floor, (int, float)) and self.floor >= 0):
            raise ConfigError(f"restor: floor must be a number >= 0, got {self.floor!r}.")

    def why_not_applicable(self, task: Task) -> str | None:
        return text_split_missing(task, RECORD_FIELDS)

    def answers(self, ctx: EvalContext, model: nn.Module, split: Split) -> list[list[int]]:
        prompts, _ = prompts_and_answers(split)
        return greedy(ctx, model, prompts, split.fingerprint, self.max_new_tokens)

    def scores(self, ctx: EvalContext, model: nn.Module, task: Task, others: tuple[nn.Module, ...]) -> dict[str, np.ndarray]:
        """Per forget item, ``model`` against the answers of the retrained models ``others``."""

        def run() -> dict[str, np.ndarray]:
            forget = task.forget
            _, target = prompts_and_answers(forget)
            own = self.answers(ctx, model, forget)
            logp_target = -outputs(ctx, model, forget)["nll"]
            logp_ref, match = [], []
            for i, r in enumerate(others):
                ans = self.answers(ctx, r, forget)
                logp_ref.append(-outputs(ctx, model, answered(forget, ans, f"restor{i}"))["nll"])
                match.append([float(a == b) for a, b in zip(own, ans)])
            logp_ret = np.mean(logp_ref, 0)
            out = {"return_score": logp_ret - logp_target, "logp_retrained_answer": logp_ret, "logp_target_answer": logp_target,
                   "answer_match": np.mean(match, 0), "target_match": np.asarray([float(a == t) for a, t in zip(own, target)])}
            bad = corrupted_items(forget)
            if bad.any():
                out["true_prob"] = np.where(bad, np.exp(-outputs(ctx, model, true_split(forget))["nll"]), np.nan)
            return out

        return ctx.memo(model, ("restor", self, tuple(id(o) for o in others)), run)

    def compute(self, model: nn.Module, task: Task, refs: References, ctx: EvalContext) -> MetricResult:
        self.require_needs(refs)
        if (why := self.why_not_applicable(task)) is not None:
            raise TaskError(f"restor: {why}")
        seeds = refs.retrained_seeds
        others = tuple(r for r in seeds if r is not model)
        if not others:
            raise TaskError("restor: the only retrained model is the model under test; it needs another retrained model's answers "
                            "(give at least 2 retrained seeds).")
        own = self.scores(ctx, model, task, others)
        ref_scores = [self.scores(ctx, r, task, tuple(o for o in seeds if o is not r)) for r in seeds if len(seeds) > 1]
        values, excluded = compare(self.name, own, ref_scores)
        ids = task.forget.ids
        per_example = {"return_score.forget": (ids, own["return_score"])}
        evidence = [Evidence(key="restor.return_score", value=values["return_score"], role="forget", remembers="lower", floor=self.floor)]
        if "true_prob" in own:
            bad = np.isfinite(own["true_prob"])
            per_example["true_prob.forget"] = (ids[bad], own["true_prob"][bad])
            evidence.append(Evidence(key="restor.true_prob", value=values["true_prob"], role="forget", remembers="lower", floor=0.05,
                                     bounds=(0.0, 1.0)))
        _, target = prompts_and_answers(task.forget)
        same = [sum(a == t for a, t in zip(self.answers(ctx, r, task.forget), target)) for r in others]
        return self.result(values, per_example=per_example, evidence=tuple(evidence),
                           info={"max_new_tokens": self.max_new_tokens, "n_retrained_answers": len(others),
                                 "retrained_answers_equal_to_target": same, "n_corrupted": int(corrupted_items(task.forget).sum()),
                                 "n_retrained": len(seeds), **excluded})
