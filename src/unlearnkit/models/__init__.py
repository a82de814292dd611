"""Model factories (registered). Every classifier exposes ``features(x)`` (penultimate layer) and
``head`` (the last linear layer) so probes and representation-level methods work on any of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODELS


class MLP(nn.Module):
    """Fully connected ReLU network: in -> hidden... -> n_classes."""

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> None:
        super().__init__()
        if in_features <= 0 or n_classes <= 0 or any(h <= 0 for h in hidden):
            raise ConfigError(f"MLP sizes must be positive: in={in_features}, hidden={list(hidden)}, out={n_classes}.")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU-pool) and a linear head; for 1- or 3-channel square images."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        if image_size < 4:
            raise ConfigError(f"SmallCNN needs images of at least 4×4, got {image_size}.")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 4) ** 2, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@MODELS.register("mlp")
def mlp(input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> MLP:
    """Multi-layer perceptron on flattened inputs."""
    return MLP(int(math.prod(input_shape)), n_classes, tuple(hidden), dropout)


@MODELS.register("small_cnn")
def small_cnn(input_shape: Sequence[int], n_classes: int, width: int = 32, hidden: int = 128) -> SmallCNN:
    """Small convolutional network for (C, H, W) images with H == W."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ConfigError(
            f"small_cnn needs (channels, H, W) square inputs, got {tuple(input_shape)}; load the dataset with flatten: false."
        )
    return SmallCNN(int(input_shape[0]), int(input_shape[1]), n_classes, width, hidden)


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **params: Any) -> nn.Module:
    factory = MODELS.get(name)
    try:
        return factory(input_shape, n_classes, **params)
    except TypeError as exc:
        raise ConfigError(f"Model {name!r}: bad parameters {sorted(params)}: {exc}") from None


def reset_parameters(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every submodule that has ``reset_parameters`` (in place), seeded."""
    from ..seeding import torch_seed

    with torch_seed(seed), torch.no_grad():
        for module in model.modules():
            if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return model


from . import causal_lm  # noqa: E402,F401  (registers tiny_llama, smollm2, causal_lm)

__all__ = ["MLP", "SmallCNN", "build_model", "mlp", "reset_parameters", "small_cnn"]
