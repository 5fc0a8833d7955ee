"""runtime.metrics: numpy bounds on log p(x) against closed forms, VAE.loss, and the IWAE order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgevae.config import ModelConfig
from edgevae.runtime import metrics
from edgevae.training.evaluate import load_model, split_images, torch_callables
from edgevae.training.model import build

# ------------------------------------------------------------------------ closed forms


def test_kl_known_values() -> None:
    mu = np.array([[0.0, 0.0], [1.0, -2.0], [0.0, 0.0]])
    logvar = np.array([[0.0, 0.0], [0.0, 0.0], [math.log(4.0), math.log(0.25)]])
    got = metrics.kl_to_standard_normal(mu, logvar)
    # sigma = 2: -log 2 + 2 - 1/2 ; sigma = 1/2: log 2 + 1/8 - 1/2
    expected = [0.0, 0.5 + 2.0, (1.5 - math.log(2)) + (math.log(2) + 0.125 - 0.5)]
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_kl_matches_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    mu, logvar = rng.normal(size=4), rng.normal(size=4)
    kl = float(metrics.kl_to_standard_normal(mu[None], logvar[None])[0])
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((400_000, 4))
    ratio = metrics.log_normal(z, mu, logvar) - metrics.log_normal(z, 0.0, np.zeros_like(z))
    se = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - kl) < 5 * se
    assert se < 0.02


def test_log_normal_is_the_gaussian_density() -> None:
    z, mu, lv = np.array([0.3, -1.0]), np.array([0.1, 0.5]), np.array([-0.4, 1.2])
    expected = sum(
        -0.5 * math.log(2 * math.pi * math.exp(v)) - (a - m) ** 2 / (2 * math.exp(v))
        for a, m, v in zip(z, mu, lv, strict=True)
    )
    assert float(metrics.log_normal(z, mu, lv)) == pytest.approx(expected, rel=1e-13)


def test_bernoulli_log_px_by_hand_including_extreme_logits() -> None:
    logits = np.array([[2.0, -1.0, 0.0, 50.0, 50.0, -50.0, -50.0]], dtype=np.float32)
    x = np.array([[1.0, 0.25, 1.0, 1.0, 0.0, 1.0, 0.0]])
    got = float(metrics.log_px_given_z(x, logits, "bernoulli")[0])

    def log_sig(v: float) -> float:
        return -math.log1p(math.exp(-v)) if v > 0 else v - math.log1p(math.exp(v))

    expected = sum(
        xi * log_sig(li) + (1 - xi) * (log_sig(li) - li)
        for xi, li in zip(x[0], logits[0].astype(float), strict=True)
    )
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-13)


def test_gaussian_log_px_closed_form() -> None:
    rng = np.random.default_rng(2)
    logits, x, lv = rng.normal(size=(3, 6)), rng.random((3, 6)), rng.uniform(-4, 1, 6)
    got = metrics.log_px_given_z(x, logits, "gaussian", lv)
    for i in range(3):
        mean = 1 / (1 + np.exp(-logits[i]))
        expected = np.sum(
            -0.5 * np.log(2 * np.pi * np.exp(lv)) - (x[i] - mean) ** 2 / (2 * np.exp(lv))
        )
        assert got[i] == pytest.approx(expected, rel=1e-13)
    with pytest.raises(ValueError, match="log-variance"):
        metrics.log_px_given_z(x, logits, "gaussian")


# ------------------------------------------------------------ evaluate vs torch VAE.loss


def random_model(likelihood: str, latent: int = 3):
    cfg = ModelConfig(20, (4, 5), hidden=[16], latent_dim=latent, likelihood=likelihood)
    model = build(cfg.validate(), seed=3).eval()
    if likelihood == "gaussian":
        with torch.no_grad():
            model.decoder.logvar.copy_(torch.linspace(-3.0, 0.5, 20))
    return model


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_evaluate_k1_agrees_with_torch_loss_on_the_same_noise(likelihood: str) -> None:
    model = random_model(likelihood)
    x = np.random.default_rng(4).random((64, 20)).astype(np.float32)
    encode, decode, gauss = torch_callables(model)
    seed = 11
    b = metrics.evaluate(x, encode, decode, likelihood, k=1, seed=seed, gauss_logvar=gauss)

    # metrics.evaluate draws eps as standard_normal((n, k, L)) from default_rng(seed)
    eps = np.random.default_rng(seed).standard_normal((64, 1, 3))[:, 0, :]
    with torch.no_grad():
        loss, recon, kl = model.loss(torch.from_numpy(x), torch.from_numpy(eps).float())
    assert b.neg_elbo == pytest.approx(loss.item(), rel=2e-5)
    assert b.recon == pytest.approx(recon.item(), rel=2e-5)
    assert b.kl == pytest.approx(kl.item(), rel=2e-5)
    assert b.recon + b.kl == pytest.approx(b.neg_elbo, rel=1e-12)
    assert (b.n_images, b.k, b.latent_dim) == (64, 1, 3)

    # z = mu: the ELBO with the posterior mean plugged in
    mu, logvar = encode(x)
    lp_mu = metrics.log_px_given_z(x.astype(np.float64), decode(mu), likelihood, gauss)
    kl_i = metrics.kl_to_standard_normal(mu, logvar)
    assert b.neg_elbo_mean_z == pytest.approx(float(np.mean(kl_i - lp_mu)), rel=1e-12)

    # k = 1: log-mean-exp of one weight is that weight, so nll_iw = recon + (log q - log p)(z)
    # on the SAME sample. It differs from neg_elbo exactly by (sampled - analytic) KL: the two
    # are equal in expectation, not sample by sample.
    mu64, lv64 = mu.astype(np.float64), logvar.astype(np.float64)
    z = mu64 + np.exp(0.5 * lv64) * eps
    mc_kl = metrics.log_normal(z, mu64, lv64) - metrics.log_normal(z, 0.0, np.zeros_like(z))
    assert b.nll_iw == pytest.approx(b.recon + float(mc_kl.mean()), rel=1e-6)
    assert b.nll_iw - b.neg_elbo == pytest.approx(float(mc_kl.mean() - kl_i.mean()), abs=1e-3)


def test_evaluate_chunking_does_not_change_the_numbers() -> None:
    model = random_model("bernoulli")
    x = np.random.default_rng(5).random((30, 20)).astype(np.float32)
    encode, decode, _ = torch_callables(model)
    done: list[int] = []
    whole = metrics.evaluate(x, encode, decode, "bernoulli", k=7, seed=2)
    # 16 decode rows per chunk -> 2 images per chunk, 15 chunks; the noise stream is the same
    chunked = metrics.evaluate(
        x, encode, decode, "bernoulli", k=7, seed=2, max_decode_rows=16, progress=done.append
    )
    for key in ("neg_elbo", "neg_elbo_mean_z", "recon", "kl", "nll_iw"):
        # float32 encoder on other batch sizes: agreement to float32 rounding, same noise
        assert getattr(chunked, key) == pytest.approx(getattr(whole, key), rel=1e-6), key
    assert done == list(range(2, 31, 2))


def test_evaluate_counts_active_units() -> None:
    model = random_model("bernoulli", latent=4)
    with torch.no_grad():  # latent units 1 and 3 ignore the input: their mean never varies
        model.encoder.mu.weight[1].zero_()
        model.encoder.mu.weight[3].zero_()
        model.encoder.mu.weight[0] *= 10
        model.encoder.mu.weight[2] *= 10
    x = np.random.default_rng(6).random((100, 20)).astype(np.float32)
    encode, decode, _ = torch_callables(model)
    b = metrics.evaluate(x, encode, decode, "bernoulli", k=2)
    assert (b.active_units, b.latent_dim) == (2, 4)


def test_evaluate_refuses_empty_or_flat_input() -> None:
    model = random_model("bernoulli")
    encode, decode, _ = torch_callables(model)
    for bad in (np.zeros((0, 20), np.float32), np.zeros(20, np.float32)):
        with pytest.raises(ValueError, match="non-empty"):
            metrics.evaluate(bad, encode, decode, "bernoulli", k=2)


# ------------------------------------------------------------------------------- IWAE


def test_iwae_bound_tightens_with_k(tiny_run) -> None:
    """On the trained tiny model and 300 test images: nll_iw(k=50) < nll_iw(5) < -ELBO.

    Measured on this model, the per-image spread of (k=1 minus k=5) is ~13 nats and of
    (k=5 minus k=50) ~6 nats, so over 300 images the standard errors of the mean gaps are
    ~0.8 and ~0.35 nats, against expected gaps of ~6 and ~3 nats. Each threshold below is
    > 4 standard errors short of the expected value (no failure by chance, whatever the
    seeds) and still above zero (a bound that stops tightening with k fails).
    """
    model, cfg = load_model(tiny_run)
    x = split_images(cfg, None, "test")[0][:300]
    encode, decode, _ = torch_callables(model)
    b = {k: metrics.evaluate(x, encode, decode, "bernoulli", k=k, seed=k) for k in (1, 5, 50)}
    for k in (1, 5, 50):
        assert all(np.isfinite(v) for v in b[k].to_dict().values())
        assert b[k].neg_elbo > 0 and b[k].nll_iw > 0
    elbo = b[1].neg_elbo
    # k = 1 estimates the ELBO itself (only the KL is sampled instead of analytic)
    assert abs(b[1].nll_iw - elbo) < 1.5
    assert b[5].nll_iw < b[1].nll_iw - 2.0
    assert b[50].nll_iw < b[5].nll_iw - 1.0
    assert b[50].nll_iw < b[5].neg_elbo - 3.0  # a bound tighter than any -ELBO draw
    # -ELBO does not depend on k (one sample, analytic KL): same data, different noise only
    # (per-image spread ~10 nats -> SE of the difference ~0.85)
    assert abs(b[50].neg_elbo - elbo) < 4.0
