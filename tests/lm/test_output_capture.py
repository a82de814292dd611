"""A causal LM sent to a spawned executor worker: picklable after a forward (transformers' output-capturing hooks are
local functions) and returning hidden states there (transformers registers a class's recordable outputs only in
``__init__``, which an unpickled model never runs)."""

import pickle

import pytest
import torch

from unlearnkit.models.causal_lm import drop_output_capture, register_output_capture, tiny_llama_config


def test_a_model_that_ran_pickles_and_an_unpickled_one_returns_hidden_states():
    output_capturing = pytest.importorskip("transformers.utils.output_capturing")
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config(50, hidden=16, layers=2, heads=2, intermediate=32))
    ids = torch.tensor([[1, 2, 3]])
    first = model(input_ids=ids, output_hidden_states=True).hidden_states
    with pytest.raises((AttributeError, pickle.PicklingError)):
        pickle.dumps(model)
    drop_output_capture(model)
    copy = pickle.loads(pickle.dumps(model))
    registry = output_capturing._CAN_RECORD_REGISTRY
    saved = dict(registry)
    try:
        registry.clear()  # a spawned worker: no model was built there
        assert copy(input_ids=ids, output_hidden_states=True).hidden_states is None
        drop_output_capture(copy)
        register_output_capture(copy)
        again = copy(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        registry.clear()
        registry.update(saved)
    assert len(again) == len(first) == 3 and all(torch.equal(a, b) for a, b in zip(again, first))
    assert model(input_ids=ids, output_hidden_states=True).hidden_states is not None  # the hooks come back on the next forward
