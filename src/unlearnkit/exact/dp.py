"""DP2Unlearning (Al Mahmud et al., arXiv 2504.13774): a base model trained once with DP-SGD on all the training data, then
served after a non-private fine-tune on the live data. A deletion throws the fine-tuned weights away, restarts from the
stored private base and fine-tunes on what is left, so the deleted records reach the served model only through the
base: any output is (ε, δ)-indistinguishable from one whose base never saw a deleted record (group privacy for k).

Longer than 60 lines: the privacy checks, the group-privacy arithmetic, the DP-SGD loop (Opacus needs its own loop:
per-sample gradients, clipping and noise, Poisson sampling; every other training goes through ``train.train_model``) and
the served model with its deletion path live together, because each is only correct with the others.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cost
from ..errors import ConfigError, DivergenceError, EmptySelection
from ..seeding import derive_seed, torch_seed
from ..train import TrainConfig, TrainResult, lr_factor, make_optimizer, train_model
from ..types import Split, to_device
from .base import ExactModel

ACCOUNTANTS = ("rdp", "prv")
GSM_PREFIX = "_module."  # what Opacus's GradSampleModule puts before every parameter name
# Rényi orders for the RDP accountant: Opacus's defaults (1.1 … 63) and larger ones, which give the tighter ε when
# there are few steps or little noise (Opacus warns that its optimum sits at its largest order there)
RDP_ALPHAS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 96, 128, 192, 256, 384, 512, 1024])


def require_opacus() -> ModuleType:
    """The opacus package, or a ConfigError saying how to install it (the core package never needs it)."""
    try:
        import opacus
    except ImportError:
        raise ConfigError("DP2Unlearning trains its base model with DP-SGD through Opacus, which is not installed: "
                          "pip install 'unlearnkit[dp]' (or pip install 'opacus>=1.5').") from None
    return opacus


def default_delta(n: int) -> float:
    """min(1e-5, 1/n^1.1): always below 1/n (a δ of 1/n allows a mechanism that publishes one whole record), by a
    margin that grows with n, and no larger than the customary 1e-5."""
    return min(1e-5, 1.0 / float(n) ** 1.1)


def check_privacy(epsilon: Any, delta: Any, max_grad_norm: Any, accountant: Any = "rdp", n: int | None = None) -> float | None:
    """ConfigError (before any training) for ε not a finite number > 0, δ not in (0, 1) or not below 1/n (the
    training set's size, when known), a clip norm not a finite number > 0, or an unknown accountant. Returns δ, resolved
    to ``default_delta(n)`` when None and n is known."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (number(epsilon) and epsilon > 0):
        raise ConfigError(f"dp2unlearning: epsilon must be a finite number > 0 (the privacy budget of the DP base model), got {epsilon!r}.")
    if not (number(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(f"dp2unlearning: max_grad_norm (the per-example gradient clip) must be a finite number > 0, got {max_grad_norm!r}.")
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"dp2unlearning: accountant must be one of {ACCOUNTANTS}, got {accountant!r}.")
    if delta is not None and not (number(delta) and 0 < delta < 1):
        raise ConfigError(f"dp2unlearning: delta must lie strictly between 0 and 1 (or be null for the default), got {delta!r}.")
    if n is None:
        return None if delta is None else float(delta)
    if n < 1:
        raise EmptySelection("dp2unlearning: there is no training data to train the DP base model on.")
    if delta is None:
        return default_delta(n)
    if delta >= 1.0 / n:
        raise ConfigError(f"dp2unlearning: delta={delta:g} is not below 1/n = 1/{n} = {1.0 / n:.3g}; with delta >= 1/n a mechanism "
                          f"may publish a whole record and still be (epsilon, delta)-DP. Give delta < {1.0 / n:.3g} (default "
                          f"min(1e-5, 1/n^1.1) = {default_delta(n):.3g}).")
    return float(delta)


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """The guarantee for a group of k records from an (ε, δ)-DP mechanism: (kε, k·e^{(k−1)ε}·δ), δ capped at 1 (where
    the bound says nothing). k = 0 (nothing deleted yet) is (0, 0)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f"The group size must be a whole number >= 0, got {k!r}.")
    if k == 0:
        return 0.0, 0.0
    exponent = (k - 1) * epsilon
    group_delta = 1.0 if exponent > 700 else min(1.0, k * math.exp(exponent) * delta)
    return float(k * epsilon), float(group_delta)


@dataclass(frozen=True)
class PrivacyAccount:
    """What the accountant certifies for the DP base model, and the DP-SGD settings behind it."""

    epsilon_target: float
    epsilon: float  # the accountant's ε for the steps actually taken, at ``delta``
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float  # Poisson sampling probability of each record per step
    steps: int
    epochs: float  # steps × sample_rate: expected passes over the data
    n: int
    accountant: str
    secure_mode: bool = False  # noise and sampling from seeded PRNGs (deterministic), not a cryptographic source

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _orders(accountant: str) -> dict[str, Any]:
    return {"alphas": list(RDP_ALPHAS)} if accountant == "rdp" else {}


def _positions(loader: Any) -> Iterator[torch.Tensor]:
    while True:
        for (positions,) in loader:
            yield positions


def train_private(model: nn.Module, split: Split, config: TrainConfig, *, epsilon: float, delta: float, max_grad_norm: float,
                  accountant: str, adapter: Any, seed: int, device: str = "cpu", progress: bool = False,
                  desc: str = "dp-sgd") -> tuple[nn.Module, PrivacyAccount, TrainResult]:
    """DP-SGD on ``split`` with ``config``'s optimiser, learning rate, schedule and budget (epochs or steps over batches
    of ``config.batch_size``): Poisson sampling (rate 1/⌈n/batch⌉), per-example gradients clipped to ``max_grad_norm``,
    Gaussian noise scaled for (ε, δ) after exactly the steps run. Sampling and noise come from generators seeded by
    ``seed``. Returns a plain copy of ``model`` with the trained weights (Opacus's wrapper stripped), the privacy
    account and the training result; steps and example passes go to the active cost meters. The recipe's ``max_seconds``,
    ``grad_clip`` and ``sam_rho`` do not apply here: the accountant needs the number of steps before the first one, and
    the per-example clip replaces the batch clip."""
    require_opacus()
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(f"Opacus cannot train this model with per-example gradients: {'; '.join(map(str, problems))[:600]}. "
                          "Use an architecture without batch statistics (e.g. GroupNorm instead of BatchNorm).")
    n = len(split)
    plain = copy.deepcopy(model)  # the architecture the trained weights go back into
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(n)), batch_size=config.batch_size,
                                         generator=torch.Generator().manual_seed(derive_seed(seed, "dp-sampling")))
    sample_rate = 1.0 / len(loader)
    steps = int(config.steps) if config.steps is not None else int(math.ceil(float(config.epochs or 0) * len(loader)))
    # make_private_with_epsilon turns epochs into steps by int(epochs / sample_rate), a rounded float; the noise is found
    # for the exact number of steps run, by the same search (Opacus's get_noise_multiplier), and handed to make_private
    try:
        with warnings.catch_warnings():  # the search visits noise levels far from the answer, where RDP's optimum is at an edge
            warnings.filterwarnings("ignore", message="Optimal order is the")
            sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant,
                                         **_orders(accountant))
    except ValueError as exc:
        raise ConfigError(f"dp2unlearning: no noise level reaches epsilon={epsilon} at delta={delta:g} in {steps} steps at "
                          f"sampling rate {sample_rate:.3g} ({exc}); raise epsilon or train fewer steps.") from None
    model.to(device).train()
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    with warnings.catch_warnings():  # secure_mode=False is deliberate (seeded, reproducible noise); recorded in the account
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        engine = PrivacyEngine(accountant=accountant, secure_mode=False)
        noise = torch.Generator(device=device).manual_seed(derive_seed(seed, "dp-noise"))
        wrapped, dp_optimizer, dp_loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
                                                               max_grad_norm=max_grad_norm, noise_generator=noise, poisson_sampling=True)
    history: list[dict[str, float]] = []
    passes = 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True)
    try:
        with torch_seed(derive_seed(seed, "dp-global"), device), warnings.catch_warnings():
            # Opacus's hooks on the first layer, whose input needs no gradient: PyTorch notes it on every backward pass
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")
            batches = _positions(dp_loader)
            for step in range(steps):
                positions = next(batches)
                for group in dp_optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(config, step, steps)
                dp_optimizer.zero_grad(set_to_none=True)
                batch = split.data.take(positions)
                batch["ids"] = torch.as_tensor(split.ids[positions.numpy()])
                losses = adapter.per_example_loss(wrapped, to_device(batch, device))
                loss = losses.sum() / max(len(positions), 1)  # the mean; an empty Poisson batch still takes its noisy step
                loss.backward()
                dp_optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise DivergenceError(f"{desc}: the loss became {value} at step {step} of DP-SGD; lower the learning rate.")
                passes += len(positions)
                cost.record(steps=1, passes=len(positions))
                history.append({"step": step, "loss": value, "elapsed": time.perf_counter() - t0})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    spent = float(engine.accountant.get_epsilon(delta=delta, **_orders(accountant)))
    state = {k.removeprefix(GSM_PREFIX): v.detach().clone() for k, v in wrapped.state_dict().items()}
    wrapped.cleanup()  # removes Opacus's hooks and per-sample gradient attributes from ``model``
    plain.load_state_dict(state)
    plain.to(device).eval()
    account = PrivacyAccount(float(epsilon), spent, float(delta), float(sigma), float(max_grad_norm), sample_rate, steps, steps * sample_rate,
                             n, accountant)
    return plain, account, TrainResult(steps, passes, time.perf_counter() - t0, history)


def finetune_config(recipe: TrainConfig, epochs: float | None) -> TrainConfig:
    """The non-private fine-tune's budget: ``epochs`` over the live data if given, else half the recipe's (epochs, or
    steps when the recipe counts steps). Half is what the paper reports unlearning to cost next to retraining, and on
    digits it recovers the non-private accuracy (see the method's notes)."""
    if epochs is not None:
        return dataclasses.replace(recipe, epochs=float(epochs), steps=None)
    if recipe.steps is not None:
        return dataclasses.replace(recipe, steps=max(1, recipe.steps // 2))
    return dataclasses.replace(recipe, epochs=float(recipe.epochs or 0) / 2)


class DPModel(ExactModel):
    """The served model of DP2Unlearning: ``model`` (the original architecture, a plain module) holds the DP base
    fine-tuned on the live data; the DP base's weights are kept aside. ``delete`` restores them and fine-tunes on the live
    data that remain, with the same seed, so the served model is always a function of the DP base and the live data."""

    regime = "dp2unlearning"
    guarantee = "certified_dp"

    def __init__(self, data: Split, model: nn.Module, base_state: dict[str, torch.Tensor], account: PrivacyAccount, finetune: TrainConfig,
                 *, adapter: Any, seed: int, device: str = "cpu") -> None:
        super().__init__(data)
        self.model = model
        self._base = {k: v.detach().clone() for k, v in base_state.items()}  # not a submodule: the served weights are ``model``'s
        self.account = account
        self.finetune = finetune
        self.adapter = adapter
        self.finetune_seed = seed
        self.device_name = device
        self.training_info: dict[str, Any] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """Attributes the served architecture has and this wrapper lacks (``features``, a language model's ``config`` or
        ``get_input_embeddings``) come from the served model."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name == "model":
                raise
            return getattr(super().__getattr__("model"), name)

    def get_base_model(self) -> nn.Module:
        """The underlying model (for adapters that inspect its forward signature), as PEFT's wrapper offers it."""
        inner = self.model
        return inner.get_base_model() if hasattr(inner, "get_base_model") else inner

    def base_model(self) -> nn.Module:
        """A copy of the served architecture holding the DP base's weights (what every fine-tune starts from)."""
        base = copy.deepcopy(self.model)
        base.load_state_dict(self._base)
        return base

    def refit(self, live: Split, *, progress: bool = False) -> TrainResult:
        """Restart from the DP base and fine-tune non-privately on ``live``; the served weights change only on success."""
        if len(live) == 0:
            raise EmptySelection("dp2unlearning: no live data would remain to fine-tune the DP base on; nothing was deleted.")
        tuned, _, result = train_model(self.base_model(), live, self.finetune, adapter=self.adapter, seed=self.finetune_seed,
                                       device=self.device_name, progress=progress, desc="dp2unlearning fine-tune")
        self.model.load_state_dict(tuned.state_dict())
        self.model.eval()
        return result

    def _delete(self, ids: np.ndarray, *, progress: bool) -> dict[str, Any]:
        keep = self._live & ~np.isin(self.data.ids, ids)
        result = self.refit(self.data.subset(np.flatnonzero(keep)), progress=progress)
        return {"restarted_from": "dp_base", "finetuned_on": int(keep.sum()), "finetune": result.to_json(),
                "group": self._group(int((~keep).sum()))}

    def _group(self, k: int) -> dict[str, Any]:
        eps, delta = group_privacy(self.account.epsilon, self.account.delta, k)
        return {"k": k, "epsilon": eps, "delta": delta}

    def describe(self) -> dict[str, Any]:
        """The base description plus the DP base's certificate: ε and δ per record (the accountant's), and the group
        guarantee (kε, k·e^{(k−1)ε}·δ) for the k records deleted so far."""
        k = int(len(self.data) - self._live.sum())
        group = self._group(k)
        a = self.account
        return {**super().describe(), "epsilon": a.epsilon, "epsilon_target": a.epsilon_target, "delta": a.delta, "deleted": k,
                "group_epsilon": group["epsilon"], "group_delta": group["delta"], "accountant": a.accountant,
                "noise_multiplier": a.noise_multiplier, "max_grad_norm": a.max_grad_norm, "sample_rate": a.sample_rate,
                "dp_steps": a.steps, "dp_epochs": a.epochs, "secure_mode": a.secure_mode,
                "finetune": {k2: v for k2, v in self.finetune.to_dict().items() if v is not None}}


def train_dp2unlearning(model: nn.Module, data: Split, recipe: TrainConfig, *, epsilon: float, delta: float | None, max_grad_norm: float,
                        accountant: str = "rdp", dp_config: TrainConfig | None = None, finetune_epochs: float | None = None,
                        adapter: Any, seed: int, device: str = "cpu", progress: bool = False) -> DPModel:
    """Train the DP base on ``data`` (every training example, forget and retain) from the initial weights of ``model``
    with ``dp_config`` (default: the recipe), then fine-tune it on ``data`` (``finetune_config``). Every setting is
    checked before any training."""
    resolved = check_privacy(epsilon, delta, max_grad_norm, accountant, n=len(data))
    assert resolved is not None
    finetune = finetune_config(recipe, finetune_epochs)
    base, account, dp_result = train_private(model, data, dp_config or recipe, epsilon=epsilon, delta=resolved, max_grad_norm=max_grad_norm,
                                             accountant=accountant, adapter=adapter, seed=derive_seed(seed, "dp-base"), device=device,
                                             progress=progress)
    served = DPModel(data, copy.deepcopy(base), base.state_dict(), account, finetune, adapter=adapter, seed=derive_seed(seed, "finetune"),
                     device=device)
    tuned = served.refit(data, progress=progress)
    served.training_info = {"dp": account.to_json(), "dp_train": dp_result.to_json(), "finetune": tuned.to_json()}
    return served
