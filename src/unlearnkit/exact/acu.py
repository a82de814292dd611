"""ACU, analytic continual unlearning (Tang, Zhuang et al., arXiv 2505.12239): a frozen backbone, an optional fixed
random buffer layer (as in ACIL), and a ridge-regression head kept in closed form.

With X the (buffered) features of the live examples and Y their one-hot labels, the head is
W = (XᵀX + γI)⁻¹ XᵀY; the model stores R = (XᵀX + γI)⁻¹ and W in float64. Deleting rows X_u (labels Y_u) is a
recursive-least-squares downdate (Woodbury):

    S = I − X_u R X_uᵀ,   R′ = R + R X_uᵀ S⁻¹ X_u R,   W′ = W − R′ X_uᵀ (Y_u − X_u W)

and adding rows is the same with S = I + X_u R X_uᵀ and the signs flipped. Either way the new head is the ridge
solution on the new live data (to rounding), with no pass over the rest of the data. Only the rows of the request go
through the backbone (their features are recomputed from ``self.data``, which ``ExactModel`` keeps for its checks).
The backbone runs in float32, and a row's features computed alone can differ from the same row's in a larger batch
by float32 rounding (≤ 4e-7 measured on a Fashion-MNIST MLP); that, not the float64 updates, bounds the distance
to a refit (max |ΔW| ≤ 2.5e-7 after 20 deletions of up to 600 rows on Fashion-MNIST, |W| ≤ 0.5).

Longer than 60 lines: fitting (batched Gram accumulation and one Cholesky solve), the two rank-n updates with their
positive-definiteness check, and the request-specific input checks belong together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import cost
from ..errors import ConfigError, ModelError, RequestRefused, TaskError
from ..seeding import torch_seed
from ..types import Split, TensorData
from .base import Backbone, ExactModel

Activation = Literal["relu", "none"]

PD_TOL = 1e-10
"""Smallest Cholesky pivot of I − X_u R X_uᵀ a downdate accepts (the matrix is positive definite with eigenvalues in
(0, 1] in exact arithmetic; its smallest eigenvalue is at most its smallest pivot, and equals it for one row). Below it
the deleted rows carry (numerically) all the information of some feature direction that γ barely regularises, and S⁻¹
would amplify rounding by more than 1e10: the request is refused rather than answered with a meaningless head."""

FEATURE_BATCH = 1024  # rows per backbone pass when fitting and when computing a request's features


class AcuModel(ExactModel):
    """A frozen backbone's features (through an optional random buffer layer) and a ridge head in closed form.

    ``net`` must expose ``features(x)`` (the MLP and small_cnn models do); it is frozen and never changes. The buffer,
    when ``buffer`` > 0, is a fixed Gaussian projection (std 1/√d_in, seeded by ``seed``) to ``buffer`` dimensions
    followed by ``activation``. ``forward(x)`` gives float32 logits φ(x)·W on the model's device. ``head`` = (R, W) serves
    an already fitted head instead of fitting one on ``data`` (how a saved model is restored)."""

    regime = "acu"
    guarantee = "exact_above_backbone"

    def __init__(self, data: Split, net: nn.Module, *, backbone: Backbone, n_classes: int, gamma: float = 1.0, buffer: int = 0,
                 activation: Activation = "relu", seed: int = 0, device: str = "cpu", progress: bool = False,
                 head: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        check_settings(gamma, buffer, activation)
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ConfigError(f"ACU is a classifier head: n_classes must be an integer >= 2, got {n_classes!r}.")
        if not callable(getattr(net, "features", None)):
            raise ConfigError(f"ACU needs a backbone exposing features(x) (the mlp and small_cnn models do); a "
                              f"{type(net).__name__} does not.")
        if torch.device(device).type == "mps":
            raise ConfigError("ACU keeps its head (R, W) in float64, which MPS does not support; use device cpu or cuda.")
        check_labelled(data, n_classes, "training data")
        super().__init__(data, backbone=backbone)
        self.net = net.to(device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.n_classes, self.gamma, self.activation = n_classes, float(gamma), activation
        with torch.no_grad():
            d_in = self.net.features(data.data.x[:1].to(device)).flatten(1).shape[1]
        if buffer:
            with torch_seed(seed):
                proj = torch.randn(d_in, buffer) / math.sqrt(d_in)
            self.register_buffer("projection", proj.to(device))
        else:
            self.register_buffer("projection", None)
        self.dim = buffer or d_in
        self.register_buffer("R", torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device))
        self.register_buffer("W", torch.zeros(self.dim, n_classes, dtype=torch.float64, device=device))
        start = time.perf_counter()
        if head is None:
            self.R, self.W = self.fit_head(data, progress=progress)
        else:  # a fitted head served as it is (``exact.persist`` restoring a saved model): no pass over the data
            R, W = head
            if tuple(R.shape) != (self.dim, self.dim) or tuple(W.shape) != (self.dim, n_classes):
                raise ModelError(f"ACU's head must be R {(self.dim, self.dim)} and W {(self.dim, n_classes)} for this backbone and "
                                 f"buffer, got R {tuple(R.shape)} and W {tuple(W.shape)}.")
            self.R, self.W = R.to(device, torch.float64), W.to(device, torch.float64)
        self.training_info: dict[str, Any] = {"head": {"n": len(data), "dims": self.dim, "backbone_dims": int(d_in),
                                                       "gamma": self.gamma, "buffer": int(buffer), "activation": activation,
                                                       "fit_seconds": time.perf_counter() - start}}

    # ------------------------------------------------------------------------------------------ features
    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) in float64: the backbone's features, through the buffer layer if there is one."""
        f = self.net.features(x.to(self.R.device)).flatten(1)
        if self.projection is not None:
            f = f @ self.projection
            if self.activation == "relu":
                f = torch.relu(f)
        return f.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.head_features(x) @ self.W).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) as float32: the penultimate features the head reads (what feature-level evidence such as ``hidden_probe``
        probes)."""
        return self.head_features(x).float()

    def _rows(self, split: Split, progress: bool = False, desc: str = "acu features") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(φ(x), one-hot y) in float64, FEATURE_BATCH rows at a time."""
        x, y = split.data.x, split.data.y
        starts = range(0, len(split), FEATURE_BATCH)
        with torch.no_grad():
            for i in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2, leave=False):
                f = self.head_features(x[i:i + FEATURE_BATCH])
                yield f, nn.functional.one_hot(y[i:i + FEATURE_BATCH].to(f.device).long(), self.n_classes).double()
        cost.record(passes=len(split))

    def fit_head(self, split: Split, *, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, W) of the ridge head fitted from scratch on ``split``: XᵀX and XᵀY accumulated a batch at a time, then one
        Cholesky factorisation of XᵀX + γI."""
        dev = self.R.device
        gram = self.gamma * torch.eye(self.dim, dtype=torch.float64, device=dev)
        xty = torch.zeros(self.dim, self.n_classes, dtype=torch.float64, device=dev)
        for f, y in self._rows(split, progress, "acu head"):
            gram += f.T @ f
            xty += f.T @ y
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info):  # pragma: no cover - XᵀX + γI with γ > 0 is positive definite unless the features are not finite
            raise ConfigError(f"XᵀX + γI (γ={self.gamma}) is not positive definite: are the backbone's features finite?")
        return torch.cholesky_inverse(chol), torch.cholesky_solve(xty, chol)

    # -------------------------------------------------------------------------------------------- requests
    def _delete(self, ids: np.ndarray, *, progress: bool) -> dict[str, Any]:
        rows = self.data.select_ids(ids)
        self.R, self.W = self._update(rows, sign=-1.0, progress=progress)
        return {"rows": len(ids), "head_dims": self.dim}

    def _add(self, split: Split, *, progress: bool) -> dict[str, Any]:
        check_labelled(split, self.n_classes, "addition")
        if tuple(split.data.x.shape[1:]) != tuple(self.data.data.x.shape[1:]):
            raise TaskError(f"The addition's examples have shape {tuple(split.data.x.shape[1:])}, the model's training data "
                            f"{tuple(self.data.data.x.shape[1:])}; nothing was added.")
        self.R, self.W = self._update(split, sign=1.0, progress=progress)
        return {"rows": len(split), "head_dims": self.dim}

    def _update(self, rows: Split, *, sign: float, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """R and W after adding (sign +1) or removing (sign −1) ``rows``, a block of at most ``dim`` rows at a time (so a
        request of n rows costs O(n·d²), never O(n³)); computed aside, so a refused downdate leaves the model unchanged.
        Sequential blocks give the same head as one block: each intermediate is the ridge solution on a superset of the
        final live data, so it is positive definite whenever the final one is."""
        R, W = self.R, self.W  # never modified in place: each step below makes new tensors
        block = max(self.dim, 64)
        for start in range(0, len(rows), block):
            part = rows.subset(np.arange(start, min(start + block, len(rows))))
            xu, yu = _stack(self._rows(part))
            k = R @ xu.T  # d × n
            s = xu @ k
            s = (s + s.T) * (sign / 2)
            s.diagonal().add_(1.0)  # S = I ± X_u R X_uᵀ
            chol, info = torch.linalg.cholesky_ex(s)
            pivot = float(torch.diagonal(chol).min() ** 2) if not int(info) else -math.inf
            if not pivot > PD_TOL:
                if sign > 0:  # pragma: no cover - I + X_u R X_uᵀ is positive definite unless the features are not finite
                    raise TaskError("I + X_u R X_uᵀ is not positive definite: are the added examples' features finite? Nothing was added.")
                raise RequestRefused(
                    f"Removing these {len(rows)} example(s) would leave XᵀX + γI numerically singular (I − X_u R X_uᵀ has a Cholesky "
                    f"pivot of {pivot:.3g} ≤ {PD_TOL:g}): they alone span a feature direction that γ={self.gamma} barely "
                    "regularises. Refit the head with a larger gamma. Nothing was deleted.")
            gain = torch.cholesky_solve(k.T, chol).T  # K S⁻¹ = R′ X_uᵀ
            W = W + sign * (gain @ (yu - xu @ W))
            R = torch.addmm(R, gain, k.T, alpha=-sign)
        R = (R + R.T) / 2  # R is symmetric; keep rounding from making it drift away
        return R, W

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["head"] = {"dims": self.dim, "n_classes": self.n_classes, "gamma": self.gamma,
                       "buffer": 0 if self.projection is None else int(self.projection.shape[1]), "activation": self.activation}
        return out


def _stack(parts: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*parts)
    return torch.cat(xs), torch.cat(ys)


def check_settings(gamma: Any, buffer: Any, activation: Any) -> None:
    """ACU's settings: gamma a finite number > 0, buffer a whole number >= 0, activation relu or none."""
    if isinstance(gamma, bool) or not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"acu: gamma (the ridge penalty) must be a finite number > 0, got {gamma!r}.")
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
        raise ConfigError(f"acu: buffer (random-projection width, 0 for none) must be a whole number >= 0, got {buffer!r}.")
    if activation not in ("relu", "none"):
        raise ConfigError(f"acu: buffer_activation must be 'relu' or 'none', got {activation!r}.")


def check_labelled(split: Split, n_classes: int, what: str) -> None:
    """``split`` holds in-memory examples with integer class labels in [0, n_classes); a TaskError naming the problem."""
    if not isinstance(split.data, TensorData) or split.data.y is None:
        raise TaskError(f"ACU's {what} must be an in-memory labelled split (TensorData with y); nothing was changed.")
    y = split.data.y
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TaskError(f"ACU's {what} needs one integer class label per example, got labels of dtype {y.dtype} and shape "
                        f"{tuple(y.shape)}; nothing was changed.")
    bad = (y < 0) | (y >= n_classes)
    if bool(bad.any()):
        raise TaskError(f"ACU's {what} has labels outside [0, {n_classes}), e.g. {torch.unique(y[bad])[:5].tolist()}: the head has "
                        f"{n_classes} classes; nothing was changed.")
