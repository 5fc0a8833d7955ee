"""training.model: the terms of VAE.loss against closed forms, and the network's structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgevae.config import ModelConfig
from edgevae.training.model import GAUSS_LOGVAR_MAX, GAUSS_LOGVAR_MIN, VAE, build

D, SHAPE, LATENT = 12, (3, 4), 3


def small_model(likelihood: str = "bernoulli", seed: int = 0, hidden=(16,)) -> VAE:
    cfg = ModelConfig(D, SHAPE, hidden=list(hidden), latent_dim=LATENT, likelihood=likelihood)
    return build(cfg.validate(), seed).double()


def pin_encoder(model: VAE, mu, logvar) -> None:
    """Make q(z|x) = N(mu, exp(logvar)) for every x (zero weights, biases = the parameters)."""
    with torch.no_grad():
        model.encoder.mu.weight.zero_()
        model.encoder.mu.bias.copy_(torch.as_tensor(mu, dtype=torch.float64))
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.copy_(torch.as_tensor(logvar, dtype=torch.float64))


def textbook_kl(mu, logvar) -> float:
    """KL(N(mu, s^2) || N(0, 1)) = sum of log(1/s) + (s^2 + mu^2)/2 - 1/2, one dim at a time."""
    total = 0.0
    for m, lv in zip(mu, logvar, strict=True):
        s = math.exp(lv / 2)
        total += math.log(1 / s) + (s * s + m * m) / 2 - 0.5
    return total


def hand_bernoulli(x, logits) -> float:
    """sum x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)), written so it stays exact at |l|=50."""
    total = 0.0
    for xi, li in zip(list(map(float, x)), list(map(float, logits)), strict=True):
        log_sig = -math.log1p(math.exp(-li)) if li > 0 else li - math.log1p(math.exp(li))
        log_one_minus = log_sig - li  # log(1 - sigmoid(l)) = log sigmoid(l) - l
        total += xi * log_sig + (1 - xi) * log_one_minus
    return total


def hand_gaussian(x, logits, logvar) -> float:
    total = 0.0
    x, logits, logvar = (list(map(float, v)) for v in (x, logits, logvar))
    for xi, li, lv in zip(x, logits, logvar, strict=True):
        mean, var = 1 / (1 + math.exp(-li)), math.exp(lv)
        total += -0.5 * math.log(2 * math.pi * var) - (xi - mean) ** 2 / (2 * var)
    return total


# ----------------------------------------------------------------------------------- KL


@pytest.mark.parametrize(
    ("mu", "logvar"),
    [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),  # q = p: KL 0
        ([1.0, -2.0, 0.5], [0.0, 0.0, 0.0]),
        ([0.0, 0.0, 0.0], [math.log(4.0), -3.0, 1.5]),
        ([0.3, -1.2, 2.5], [-0.7, 0.9, -5.0]),
    ],
)
def test_loss_kl_is_the_closed_form(mu, logvar) -> None:
    model = small_model()
    pin_encoder(model, mu, logvar)
    x = torch.rand(7, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(7, LATENT, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss, recon, kl = model.loss(x, eps)
    assert kl.item() == pytest.approx(textbook_kl(mu, logvar), rel=1e-12, abs=1e-12)
    assert loss.item() == pytest.approx(recon.item() + kl.item(), rel=1e-12)


def test_kl_of_known_values() -> None:
    model = small_model()
    pin_encoder(model, [0.0, 0.0, 0.0], [math.log(4.0), 0.0, 0.0])
    _, _, kl = model.loss(torch.zeros(1, D, dtype=torch.float64), torch.zeros(1, LATENT).double())
    # sigma = 2: -log 2 + 4/2 - 1/2
    assert kl.item() == pytest.approx(1.5 - math.log(2.0), rel=1e-12)


def test_loss_kl_matches_monte_carlo() -> None:
    """E_q[log q(z) - log p(z)] with 400k samples lands within 5 standard errors of VAE's KL."""
    mu, logvar = [0.8, -0.4, 1.5], [-1.0, 0.6, 0.2]
    model = small_model()
    pin_encoder(model, mu, logvar)
    _, _, kl = model.loss(torch.zeros(1, D, dtype=torch.float64), torch.zeros(1, LATENT).double())
    rng = np.random.default_rng(0)
    m, lv = np.array(mu), np.array(logvar)
    z = m + np.exp(0.5 * lv) * rng.standard_normal((400_000, 3))
    log_q = -0.5 * (np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv)).sum(1)
    log_p = -0.5 * (np.log(2 * np.pi) + z**2).sum(1)
    ratio = log_q - log_p
    se = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - kl.item()) < 5 * se
    assert se < 0.01  # the check is tight enough to mean something


# ------------------------------------------------------------------------- likelihoods


def test_bernoulli_log_px_by_hand() -> None:
    model = small_model()
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, D, dtype=torch.float64, generator=g) * 4
    x = torch.rand(4, D, dtype=torch.float64, generator=g)
    x[:2] = (x[:2] > 0.5).double()  # binary rows and continuous rows (continuous BCE)
    got = model.log_px_given_z(x, logits)
    assert got.shape == (4,)
    for i in range(4):
        assert got[i].item() == pytest.approx(hand_bernoulli(x[i], logits[i]), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_extreme_logits_stay_finite(dtype) -> None:
    model = small_model()
    if dtype == torch.float32:
        model = model.float()
    logits = torch.tensor([50.0, 50.0, -50.0, -50.0] * 3, dtype=dtype, requires_grad=True)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0] * 3, dtype=dtype)
    got = model.log_px_given_z(x, logits)
    assert torch.isfinite(got).all()
    # per group of four: ~0 (right and sure), -50, -50, ~0
    assert got.item() == pytest.approx(hand_bernoulli(x.tolist(), logits.tolist()), rel=1e-6)
    assert got.item() == pytest.approx(-300.0, rel=1e-6)
    got.backward()
    assert torch.isfinite(logits.grad).all()


def test_gaussian_log_px_closed_form() -> None:
    model = small_model("gaussian")
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.decoder.logvar.copy_(torch.linspace(-3.0, 1.0, D, dtype=torch.float64))
    logits = torch.randn(5, D, dtype=torch.float64, generator=g)
    x = torch.rand(5, D, dtype=torch.float64, generator=g)
    got = model.log_px_given_z(x, logits)
    lv = model.decoder.logvar.tolist()
    for i in range(5):
        assert got[i].item() == pytest.approx(hand_gaussian(x[i], logits[i], lv), rel=1e-12)


def test_gaussian_logvar_is_clamped() -> None:
    model = small_model("gaussian")
    with torch.no_grad():
        model.decoder.logvar.copy_(torch.tensor([-50.0] * 6 + [50.0] * 6, dtype=torch.float64))
    clamped = model.decoder.gaussian_logvar()
    assert clamped.tolist() == [GAUSS_LOGVAR_MIN] * 6 + [GAUSS_LOGVAR_MAX] * 6
    x, logits = torch.full((1, D), 0.5).double(), torch.zeros(1, D).double()  # x == mean
    got = model.log_px_given_z(x, logits).item()
    assert got == pytest.approx(hand_gaussian([0.5] * D, [0.0] * D, clamped.tolist()), rel=1e-12)
    assert math.isfinite(got)


def test_loss_reconstruction_uses_the_reparameterised_sample() -> None:
    """recon = -log p(x | z = mu + sigma * eps), computed from the decoder's logits by hand."""
    model = small_model()
    mu, logvar = [0.5, -1.0, 0.25], [-0.5, 0.3, -2.0]
    pin_encoder(model, mu, logvar)
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(3, D, dtype=torch.float64, generator=g) > 0.5).double()
    eps = torch.randn(3, LATENT, dtype=torch.float64, generator=g)
    _, recon, _ = model.loss(x, eps)
    f64 = torch.float64
    z = torch.tensor(mu, dtype=f64) + torch.exp(0.5 * torch.tensor(logvar, dtype=f64)) * eps
    with torch.no_grad():
        logits = model.decoder(z)
    expected = -np.mean([hand_bernoulli(x[i], logits[i]) for i in range(3)])
    assert recon.item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------- structure


def test_build_is_seeded() -> None:
    a, b, c = small_model(seed=7), small_model(seed=7), small_model(seed=8)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    assert not torch.equal(a.encoder.mu.weight, c.encoder.mu.weight)


def test_decoder_mirrors_encoder() -> None:
    cfg = ModelConfig(784, (28, 28), hidden=[64, 32], latent_dim=4, activation="tanh")
    model = VAE(cfg.validate())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "encoder.body.0.weight": (64, 784),
        "encoder.body.0.bias": (64,),
        "encoder.body.2.weight": (32, 64),
        "encoder.body.2.bias": (32,),
        "encoder.mu.weight": (4, 32),
        "encoder.mu.bias": (4,),
        "encoder.logvar.weight": (4, 32),
        "encoder.logvar.bias": (4,),
        "decoder.body.0.weight": (32, 4),
        "decoder.body.0.bias": (32,),
        "decoder.body.2.weight": (64, 32),
        "decoder.body.2.bias": (64,),
        "decoder.out.weight": (784, 64),
        "decoder.out.bias": (784,),
    }
    assert isinstance(model.encoder.body[1], torch.nn.Tanh)
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    mu, logvar = model.encoder(torch.zeros(5, 784))
    assert mu.shape == logvar.shape == (5, 4)
    assert model.decoder(mu).shape == (5, 784)


def test_gaussian_decoder_has_a_per_pixel_logvar() -> None:
    model = VAE(ModelConfig(560, (28, 20), hidden=[32], latent_dim=2, likelihood="gaussian"))
    assert model.decoder.logvar.shape == (560,)
    assert "decoder.logvar" in model.state_dict()
    assert "decoder.logvar" not in VAE(ModelConfig(560, (28, 20), hidden=[32])).state_dict()
