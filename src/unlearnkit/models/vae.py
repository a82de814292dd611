"""A small Gaussian VAE over embeddings, and the retain-representation density LAF measures atypicality with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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
