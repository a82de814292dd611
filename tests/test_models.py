import pytest
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.models import build_model, reset_parameters


@pytest.mark.parametrize("name,shape", [("mlp", (64,)), ("small_cnn", (1, 8, 8)), ("small_cnn", (3, 28, 28))])
def test_models_forward_and_features(name, shape):
    model = build_model(name, shape, 7)
    x = torch.randn(5, *shape)
    assert model(x).shape == (5, 7)
    assert model.features(x).shape[0] == 5 and model.head(model.features(x)).shape == (5, 7)


def test_small_cnn_needs_square_images():
    with pytest.raises(ConfigError, match="flatten: false"):
        build_model("small_cnn", (64,), 10)


def test_reset_parameters_is_seeded():
    a = reset_parameters(build_model("small_cnn", (1, 8, 8), 3), seed=1)
    b = reset_parameters(build_model("small_cnn", (1, 8, 8), 3), seed=1)
    c = reset_parameters(build_model("small_cnn", (1, 8, 8), 3), seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_bad_model_params():
    with pytest.raises(ConfigError, match="bad parameters"):
        build_model("mlp", (4,), 2, depth=3)
