"""Conventions of the field's reference code, each checked on a hand-computed case: the retain NLL averaged over the
batch's answer tokens (Hugging Face's loss, as OpenUnlearning and the NPO code) or per example."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unlearnkit.adapters import get_adapter
from unlearnkit.adapters.causal_lm import CausalLMAdapter
from unlearnkit.errors import ConfigError
from unlearnkit.lm.text import IGNORE
from unlearnkit.methods import build_method, describe_method, method_params
from unlearnkit.models import build_model
from unlearnkit.objectives import NLL
from unlearnkit.references import References
from unlearnkit.train import StepContext

LN2 = math.log(2.0)


class ConstantLM(nn.Module):
    """The same next-token distribution at every position: p = (1/2, 1/4, 1/4) over a 3-token vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.row = nn.Parameter(torch.log(torch.tensor([0.5, 0.25, 0.25])))

    def forward(self, input_ids, attention_mask=None, **kw):
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, 3))


def two_answers() -> dict:
    """Two examples after a one-token prompt: answer A = tokens (0, 1, 1), answer B = token (0)."""
    x = torch.tensor([[2, 0, 1, 1], [2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = torch.tensor([[IGNORE, 0, 1, 1], [IGNORE, 0, IGNORE, IGNORE]])
    return {"x": x, "attention_mask": mask, "labels": labels, "ids": torch.tensor([0, 1])}


def step_ctx(adapter) -> StepContext:
    return StepContext(0, 1, torch.Generator(), adapter)


# ------------------------------------------------------------------------------------------------ retain NLL reduction
def test_token_and_example_reductions_by_hand():
    # NLL(A) = ln 2 + ln 4 + ln 4 = 5 ln 2 over 3 tokens; NLL(B) = ln 2 over 1 token
    adapter, model, batch = CausalLMAdapter(), ConstantLM(), two_answers()
    token = float(adapter.batch_loss(model, batch, "token").detach())
    example = float(adapter.batch_loss(model, batch, "example").detach())
    assert token == pytest.approx((5 * LN2 + LN2) / 4)  # 1.5 ln 2: every answer token weighs the same
    assert example == pytest.approx((5 * LN2 / 3 + LN2) / 2)  # 4/3 ln 2: every answer weighs the same
    ctx = step_ctx(adapter)
    assert float(NLL("retain", "token")(model, {"retain": batch}, ctx).value.detach()) == pytest.approx(token)
    assert float(NLL("retain")(model, {"retain": batch}, ctx).value.detach()) == pytest.approx(example)  # the objective's default
    with pytest.raises(ConfigError, match=r"reduction: must be one of \['token', 'example'\], got 'sum'"):
        NLL("retain", "sum")


def test_token_reduction_is_transformers_own_loss_on_the_tiny_llama(causal_lm_task, profiles_source):
    torch.manual_seed(0)
    model = build_model("tiny_llama", profiles_source.input_shape, profiles_source.n_outputs)
    adapter = get_adapter(causal_lm_task)
    batch = next(iter(causal_lm_task.retain.batches(8)))
    lengths = (batch["labels"] != IGNORE).sum(1)
    assert len(set(lengths.tolist())) > 1  # answers of different lengths, so the reductions differ
    with torch.no_grad():
        hf = model(input_ids=batch["x"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss  # prompt = -100
        ours = adapter.batch_loss(model, batch, "token")
        per_example = adapter.batch_loss(model, batch, "example")
    assert float(ours) == pytest.approx(float(hf), rel=1e-5)
    assert abs(float(per_example) - float(hf)) > 1e-4


def test_classifier_reductions_are_the_same_number(random_task, original):
    adapter = get_adapter(random_task)
    batch = next(iter(random_task.retain.batches(16)))
    token, example = (adapter.batch_loss(original, batch, r) for r in ("token", "example"))
    assert torch.equal(token, example)


@pytest.mark.parametrize("name", ["grad_diff", "npo", "simnpo", "idk_po", "ihl", "finetune"])
def test_retain_reduction_is_a_method_parameter(name):
    default = build_method(name)
    assert default.retain_reduction == "token" and method_params(default)["retain_reduction"] == "token"
    old = build_method(name, {"retain_reduction": "example"})
    nll = [t for _, t in old.objective(None, References()).terms if isinstance(t, NLL)] if name != "finetune" else [old.objective(None, References())]
    assert [t.reduction for t in nll] == ["example"]
    assert describe_method(old) != describe_method(default)  # in the run key
    with pytest.raises(ConfigError, match="retain_reduction: must be one of"):
        build_method(name, {"retain_reduction": "mean"})
    sam = build_method("sam", {"method": name, "params": {"retain_reduction": "example"}})
    assert sam.inner().retain_reduction == "example"


