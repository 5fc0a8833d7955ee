"""edgevae.training.handgrad: the hand-derived -ELBO gradients against autograd's, in float64."""

from __future__ import annotations

import pytest
import torch

from edgevae.config import ModelConfig
from edgevae.training.handgrad import HandGradStep, gradient_fn, supported
from edgevae.training.model import build


def _model(activation: str, hidden: list[int], likelihood: str = "bernoulli"):
    cfg = ModelConfig(784, (28, 28), hidden, 6, activation=activation, likelihood=likelihood)
    return build(cfg, 3).double()


def _batch(n: int = 40):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(n, 784, generator=g) > 0.6).double()
    x[:7] = torch.rand(7, 784, generator=g, dtype=torch.float64)  # continuous targets too
    return x, torch.randn(n, 6, generator=g, dtype=torch.float64)


def _autograd(model, x, eps, beta):
    loss, recon, kl = model.loss(x, eps)
    model.zero_grad(set_to_none=True)
    (recon + beta * kl).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return (loss.item(), recon.item(), kl.item()), grads


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("hidden", [[50], [40, 30]])
@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_every_gradient_and_term_matches_autograd(activation, hidden, beta) -> None:
    model = _model(activation, hidden)
    x, eps = _batch()
    want_terms, want = _autograd(model, x, eps, beta)
    terms = HandGradStep(model)(x, eps, beta)
    assert [t.item() for t in terms] == pytest.approx(want_terms, rel=1e-12)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        torch.testing.assert_close(p.grad, want[name], rtol=1e-9, atol=1e-12, msg=name)


def test_relu_units_that_are_off_get_no_gradient() -> None:
    model = _model("relu", [50])
    with torch.no_grad():
        model.encoder.body[0].bias[:10] = -1e3  # these hidden units never fire
    x, eps = _batch()
    HandGradStep(model)(x, eps)
    w = model.encoder.body[0].weight.grad
    assert torch.count_nonzero(w[:10]) == 0 and torch.count_nonzero(w[10:]) > 0


def test_gaussian_decoder_falls_back_to_autograd() -> None:
    model = _model("relu", [50], likelihood="gaussian")
    assert not supported(model)
    with pytest.raises(ValueError, match="Bernoulli"):
        HandGradStep(model)
    x, eps = _batch()
    (want_loss, _, _), want = _autograd(model, x, eps, 0.5)
    assert gradient_fn(model)(x, eps, 0.5) == pytest.approx(want_loss, rel=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-12, atol=0, msg=name)


def test_gradient_fn_replaces_old_gradients() -> None:
    model = _model("tanh", [50])
    x, eps = _batch()
    fn = gradient_fn(model)
    fn(x, eps)
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    fn(x, eps)  # not accumulated: the same batch gives the same gradients
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, first[name]), name


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_conditional_model_gradients_match_autograd(activation, beta) -> None:
    """Rows are [x, one-hot y]: the label enters the encoder and the decoder's first layer."""
    cfg = ModelConfig(784, (28, 28), [40, 30], 6, activation=activation, classes=list("abc"))
    model = build(cfg, 3).double()
    x, eps = _batch()
    y = torch.nn.functional.one_hot(torch.arange(len(x)) % 3, 3).double()
    rows = torch.cat((x, y), dim=1)
    want_terms, want = _autograd(model, rows, eps, beta)
    terms = HandGradStep(model)(rows, eps, beta)
    assert [t.item() for t in terms] == pytest.approx(want_terms, rel=1e-12)
    assert model.encoder.body[0].weight.shape[1] == 787
    assert model.decoder.body[0].weight.shape[1] == 9
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-9, atol=1e-12, msg=name)
