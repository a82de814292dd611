"""laf: Label-Agnostic Forgetting — unlearning at the representation level without reading a single label."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..errors import ConfigError
from ..objectives import ReferenceLogits
from ..seeding import torch_seed
from ..selectors import Extractor
from ..train import Loss, StepContext, TrainConfig, TrainResult, fit
from ..types import Batch, Split, Task, TensorData
from .base import GradientMethod, Setup, register_method

ORIGINAL_EMBEDDINGS = "original_embeddings"  # ctx.extra: the input model's embeddings, by example id
RETAIN_DENSITY = "retain_density"  # the retain VAE (a RetainDensity)
TYPICAL_ERROR = "typical_error"  # the original retain embeddings' mean reconstruction error under it
EMBEDDINGS_BEFORE = "embeddings_before"  # the input model's (retain, forget) embeddings, for the report


class EmbeddingVAE(nn.Module):
    """Gaussian VAE over standardised embeddings: encoder D→H→(μ, log σ²) ∈ R^k, decoder k→H→D (linear output)."""

    def __init__(self, dim: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def encode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(z)
        return self.mean(h), self.log_var(h).clamp(-10.0, 10.0)

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction through the posterior mean (no sampling)."""
        return self.decoder(self.encode(z)[0])

    def negative_elbo(self, z: torch.Tensor, noise: torch.Tensor, beta: float) -> torch.Tensor:
        """Per-example −ELBO with a unit-variance Gaussian decoder: ½‖ẑ − z‖² + β·KL(q(u|z) ‖ N(0, I))."""
        mu, log_var = self.encode(z)
        u = mu + torch.exp(0.5 * log_var) * noise
        recon = 0.5 * (self.decoder(u) - z).pow(2).sum(1)
        kl = 0.5 * (log_var.exp() + mu.pow(2) - 1.0 - log_var).sum(1)
        return recon + beta * kl


@dataclass(frozen=True, eq=False)
class RetainDensity:
    """The retain representation distribution: a VAE fitted to the original model's retain embeddings,
    standardised by their mean ``center`` and one global ``scale`` (root mean per-dimension variance)."""

    vae: EmbeddingVAE
    center: torch.Tensor
    scale: float

    def standardise(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.center) / self.scale

    def reconstruction_error(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Per-example mean squared reconstruction error of the standardised embeddings (≈ 1 or less in distribution)."""
        z = self.standardise(embeddings)
        return (self.vae.reconstruct(z) - z).pow(2).mean(1)


@dataclass(frozen=True)
class VAEFit:
    """Objective of the VAE fit: mean −ELBO over a batch of embeddings; the reparameterisation noise comes
    from the step's seeded generator."""

    vae: EmbeddingVAE
    beta: float
    stream: str = "retain"

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream,)

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        z = batch[self.stream]["x"]
        noise = torch.randn((z.shape[0], self.vae.mean.out_features), generator=ctx.generator, device=ctx.generator.device).to(z)
        value = self.vae.negative_elbo(z, noise, self.beta).mean()
        return Loss(value, {"neg_elbo": float(value.detach())})


def saturated(error: torch.Tensor) -> torch.Tensor:
    """m / (1 + m): a bounded transform of a reconstruction error, so that pushing it up cannot diverge."""
    return error / (1.0 + error)


def contrastive_alignment(
    retain: torch.Tensor, retain_original: torch.Tensor, forget: torch.Tensor, forget_original: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE over a batch with the forget pairs as extra negatives (cosines / temperature).

    Retain anchor i has logits {cos(r_i, r⁰_j)}_j (positive j = i: its own original embedding; the other retain
    originals are in-batch negatives) and {cos(f_k, f⁰_k)}_k (each forget example's similarity to its own original).
    Minimising −log softmax(positive) aligns retain embeddings with the original model's and pushes every forget
    embedding away from its original until it is no more similar to it than unrelated examples are."""
    retain_unit, forget_unit = F.normalize(retain, dim=1), F.normalize(forget, dim=1)
    in_batch = retain_unit @ F.normalize(retain_original, dim=1).T
    forget_self = (forget_unit * F.normalize(forget_original, dim=1)).sum(1)
    logits = torch.cat([in_batch, forget_self.expand(len(retain), -1)], dim=1) / temperature
    return F.cross_entropy(logits, torch.arange(len(retain), device=retain.device))


@dataclass(frozen=True)
class LabelAgnosticObjective:
    """unlearn_weight·(ψ(m_retain) − ψ(m_forget)) + align_weight·contrastive_alignment(...) on one forget and one retain batch.

    m is the retain VAE's reconstruction error (``ctx.extra["retain_density"]``) of the current embeddings in units of
    the original retain embeddings' mean error (``ctx.extra["typical_error"]``), ψ(m) = m/(1+m); the contrastive term
    compares embeddings centred on the retain mean with the original ones (``ctx.extra["original_embeddings"]``, looked
    up by example id). Reads no labels."""

    unlearn_weight: float
    align_weight: float
    temperature: float

    @property
    def streams(self) -> tuple[str, ...]:
        return ("forget", "retain")

    def __call__(self, model: nn.Module, batch: dict[str, Batch], ctx: StepContext) -> Loss:
        forget, retain = batch["forget"], batch["retain"]
        density, typical = ctx.extra[RETAIN_DENSITY], ctx.extra[TYPICAL_ERROR]
        e_forget = ctx.adapter.features(model, forget)
        e_retain = ctx.adapter.features(model, retain)
        atypical_forget = saturated(density.reconstruction_error(e_forget) / typical).mean()
        atypical_retain = saturated(density.reconstruction_error(e_retain) / typical).mean()
        originals = ctx.extra[ORIGINAL_EMBEDDINGS]
        c = density.center
        align = contrastive_alignment(
            e_retain - c, originals.lookup(retain["ids"]).to(e_retain) - c, e_forget - c, originals.lookup(forget["ids"]).to(e_forget) - c,
            self.temperature,
        )
        value = self.unlearn_weight * (atypical_retain - atypical_forget) + self.align_weight * align
        parts = {"atypical_forget": float(atypical_forget.detach()), "atypical_retain": float(atypical_retain.detach()),
                 "align": float(align.detach())}
        return Loss(value, parts)


def embed(model: nn.Module, split: Split, adapter: Any, device: str) -> torch.Tensor:
    """The model's penultimate embeddings of every example of ``split`` (eval mode, no gradient), in split order."""
    matrix = adapter.feature_matrix(model, split, device=device)
    cost.record(passes=len(split))
    return torch.as_tensor(matrix).to(device)


@torch.no_grad()
def mean_error(density: RetainDensity, embeddings: torch.Tensor) -> float:
    """Mean reconstruction error of a set of embeddings under the retain VAE."""
    return float(density.reconstruction_error(embeddings).mean())


def positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"laf: {name} must be a finite number > 0, got {value!r}.")


def positive_int(name: str, value: int) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ConfigError(f"laf: {name} must be an integer > 0, got {value!r}.")


@register_method
@dataclass(frozen=True)
class LAF(GradientMethod):
    """Label-Agnostic Forgetting (Shen et al., Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models, ICLR 2024):
    unlearn the representation extractor with a VAE of the retain representations and a contrastive alignment, reading no labels.

    (i) Embed the retain and forget sets with the original extractor, e⁰ = model.features(x); standardise z = (e − c)/s with
    the retain mean c and one global scale s (root mean per-dimension variance); fit a small Gaussian VAE to the retain z for
    ``vae_steps`` Adam steps (−ELBO = ½‖ẑ − z‖² + vae_beta·KL). m(e) is its reconstruction error through the posterior mean,
    in units of the mean error of the original retain embeddings, and ψ(m) = m/(1+m).
    (ii)+(iii) Train the extractor (every parameter outside ``model.head``) on one forget batch F and one retain batch R per step:
        L = unlearn_weight·(mean_R ψ(m(e)) − mean_F ψ(m(e))) + align_weight·L_align,
        L_align = mean_{i∈R} −log softmax_i([cos(r_i, r⁰_j)/τ]_{j∈R} ++ [cos(f_k, f⁰_k)/τ]_{k∈F}),
    cosines between embeddings centred on c. The first term moves forget embeddings off the retain representation
    manifold (high reconstruction error = low density under the retain VAE) and keeps retain embeddings on it. L_align is
    InfoNCE over the retain batch (positive = the example's own original embedding, negatives = the other retain originals)
    with each forget example's similarity to its own original as extra negatives, as in the paper's contrastive loss: it
    keeps retain representations aligned with the original model (utility without labels) and pushes forget embeddings
    away from their originals until they are no more similar to them than unrelated examples are. An epoch is a pass over
    the forget set. (iv) The head is not changed: the paper's supervision-free method adapts the extractor only (its
    reference code fine-tunes the head with retain labels only in the semi-supervised variant), so ``changed`` excludes
    ``model.head``.

    Inferred where the abstract leaves details open: one VAE of the retain set (the reference code fits it on the whole
    training set and raises the error of the forget embeddings under a second VAE fitted on the forget set); ψ bounds the
    forget push (the reference code uses exp(m/(m+1)) on raw errors), whose gradient fades once a forget embedding is well
    outside the retain distribution, and measuring m in units of the typical retain error makes it independent of the
    embedding scale; one Adam step on the weighted sum replaces the reference code's two alternating Adam optimizers
    (lr 5e-5 and 1e-4 for MNIST/Fashion-MNIST CNNs, 20 epochs); InfoNCE with in-batch negatives replaces its ratio of
    cosine distances; centring makes cosines of non-negative ReLU features informative. The VAE is sampled with the run's
    seeded generator while fitted and evaluated deterministically (posterior mean) in the unlearning loss. Defaults: 10 epochs
    over the forget set at Adam lr 1e-4 (about 470 steps for a 10% Fashion-MNIST forget set, less movement than the
    reference budget), τ = 0.5, an 8-dimensional latent (the reference value for MNIST/Fashion-MNIST), 300 VAE steps.
    """

    train: TrainConfig = TrainConfig(epochs=10.0, optimizer="adam", lr=1e-4, schedule="constant")
    unlearn_weight: float = 1.0
    align_weight: float = 1.0
    temperature: float = 0.5
    latent_dim: int = 8
    vae_hidden: int = 128
    vae_steps: int = 300
    vae_lr: float = 1e-3
    vae_batch_size: int = 128
    vae_beta: float = 1.0

    name: ClassVar[str] = "laf"
    paper: ClassVar[str] = "Shen et al., Label-Agnostic Forgetting: A Supervision-Free Unlearning in Deep Models, ICLR 2024"
    version: ClassVar[str] = "1"  # bump when its numbers change

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("unlearn_weight", "align_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"laf: {name} must be a finite number >= 0, got {value!r}.")
        if self.unlearn_weight == 0 and self.align_weight == 0:
            raise ConfigError("laf: unlearn_weight and align_weight are both 0; at least one must be > 0.")
        for name in ("temperature", "vae_lr", "vae_beta"):
            positive(name, getattr(self, name))
        for name in ("latent_dim", "vae_hidden", "vae_steps", "vae_batch_size"):
            positive_int(name, getattr(self, name))

    def vae_config(self) -> TrainConfig:
        return TrainConfig(epochs=None, steps=self.vae_steps, batch_size=self.vae_batch_size, optimizer="adam", lr=self.vae_lr)

    def fit_density(
        self,
        retain_embeddings: torch.Tensor,
        ids: np.ndarray,
        adapter: Any,
        *,
        rng: np.random.Generator,
        device: str,
        progress: bool = False,
    ) -> tuple[RetainDensity, TrainResult]:
        """Standardise the retain embeddings and fit the VAE to them (seeded initialisation and noise)."""
        center = retain_embeddings.mean(0)
        scale = float(retain_embeddings.var(0, unbiased=False).mean().sqrt())
        scale = scale if scale > 0 else 1.0  # constant embeddings: nothing to standardise
        with torch_seed(int(rng.integers(0, 2**63 - 1))):
            vae = EmbeddingVAE(retain_embeddings.shape[1], self.vae_hidden, self.latent_dim).to(device)
        standardised = TensorData((retain_embeddings - center) / scale, fingerprint="laf-standardised-retain-embeddings")
        result = fit(
            vae, VAEFit(vae, self.vae_beta), {"retain": Split.create("retain_embeddings", standardised, ids)}, self.vae_config(),
            adapter=adapter, rng=rng, device=device, progress=progress, desc="laf-vae",
        )
        vae.eval().requires_grad_(False)
        return RetainDensity(vae, center, scale), result

    def selector(self) -> Extractor:
        return Extractor()

    def objective(self, task: Task, refs: Any) -> LabelAgnosticObjective:
        return LabelAgnosticObjective(self.unlearn_weight, self.align_weight, self.temperature)

    def prepare(self, model: nn.Module, task: Task, setup: Setup) -> tuple[dict[str, Any], dict[str, Any]]:
        retain_before = embed(model, task.retain, setup.adapter, setup.device)
        forget_before = embed(model, task.forget, setup.adapter, setup.device)
        density, vae_result = self.fit_density(retain_before, task.retain.ids, setup.adapter, rng=setup.rng, device=setup.device,
                                               progress=setup.progress)
        typical = float(density.reconstruction_error(retain_before).mean().clamp_min(torch.finfo(retain_before.dtype).tiny))
        originals = ReferenceLogits(np.concatenate([task.retain.ids, task.forget.ids]), torch.cat([retain_before, forget_before]))
        extra = {ORIGINAL_EMBEDDINGS: originals, RETAIN_DENSITY: density, TYPICAL_ERROR: typical,
                 EMBEDDINGS_BEFORE: (retain_before, forget_before)}
        return extra, {"vae": vae_result.to_json(), **({"warning": vae_result.stopped} if vae_result.stopped else {})}

    def report(self, model: nn.Module, task: Task, setup: Setup, extra: dict[str, Any]) -> dict[str, Any]:
        density, (retain_before, forget_before) = extra[RETAIN_DENSITY], extra[EMBEDDINGS_BEFORE]
        return {"reconstruction_error": {
            "retain_before": mean_error(density, retain_before),
            "forget_before": mean_error(density, forget_before),
            "retain_after": mean_error(density, embed(model, task.retain, setup.adapter, setup.device)),
            "forget_after": mean_error(density, embed(model, task.forget, setup.adapter, setup.device)),
        }}
