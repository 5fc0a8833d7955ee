"""The VAE of Kingma & Welling (2014): MLP encoder q(z|x), MLP decoder p(x|z), prior N(0, I).

The decoder returns logits; the Bernoulli mean is sigmoid(logits). For continuous data
(e.g. Frey Face) the likelihood is Gaussian with mean sigmoid(logits) and a learned per-pixel
log-variance that does not depend on z, which keeps the decoder graph the same for export
and for the int8 firmware kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig

LOG_2PI = math.log(2 * math.pi)
# Bounds on the Gaussian decoder's log-variance: data are 8-bit, so a variance far below a
# quantization step only buys likelihood by overfitting single pixel values.
GAUSS_LOGVAR_MIN, GAUSS_LOGVAR_MAX = -9.0, 2.0


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    act = nn.ReLU if activation == "relu" else nn.Tanh
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), act()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x [N, D] -> (mu, logvar), each [N, L]; a conditional model reads [x, y] [N, D + C]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.body = _mlp([cfg.input_dim + cfg.n_classes, *cfg.hidden], cfg.activation)
        self.mu = nn.Linear(cfg.hidden[-1], cfg.latent_dim)
        self.logvar = nn.Linear(cfg.hidden[-1], cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """z [N, L] (with y [N, C] for a conditional model) -> logits [N, D]; the hidden sizes
    mirror the encoder's."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.body = _mlp([cfg.latent_dim + cfg.n_classes, *reversed(cfg.hidden)], cfg.activation)
        self.out = nn.Linear(cfg.hidden[0], cfg.input_dim)
        self.likelihood = cfg.likelihood
        if cfg.likelihood == "gaussian":
            self.logvar = nn.Parameter(torch.full((cfg.input_dim,), -4.0))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.body(z if y is None else torch.cat((z, y), dim=1)))

    def gaussian_logvar(self) -> torch.Tensor:
        return self.logvar.clamp(GAUSS_LOGVAR_MIN, GAUSS_LOGVAR_MAX)


class VAE(nn.Module):
    """The whole model. Its input rows are images x [N, D], or for a conditional model the
    images and their one-hot labels side by side, [x, y] [N, D + C] (`split` separates them):
    one tensor, so batching, shuffling and resuming treat both models alike."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x, y) of input rows; y is None for an unconditional model."""
        if not self.cfg.n_classes:
            return rows, None
        return rows[:, : self.cfg.input_dim], rows[:, self.cfg.input_dim :]

    def log_px_given_z(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels, [N] (broadcasts x over leading sample axes)."""
        if self.cfg.likelihood == "bernoulli":
            # Continuous BCE for non-binary x, as in the classic PyTorch example.
            return -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none"
            ).sum(-1)
        logvar = self.decoder.gaussian_logvar()
        mean = torch.sigmoid(logits)
        return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)).sum(-1)

    def loss(
        self, rows: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean -ELBO over the batch, and its reconstruction and KL parts (per image); for a
        conditional model the bound is on log p(x | y)."""
        x, y = self.split(rows)
        mu, logvar = self.encoder(rows)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon = -self.log_px_given_z(x, self.decoder(z, y))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return (recon + kl).mean(), recon.mean(), kl.mean()


def build(cfg: ModelConfig, seed: int) -> VAE:
    """A freshly initialised model; the seed alone fixes every weight."""
    torch.manual_seed(seed)
    return VAE(cfg)
