"""Quantization-aware fine-tuning for the 4-bit firmware decoder (`TrainConfig.qat_bits`).

Every decoder layer but the first (the layers the `firmware-int4` recipe stores as 4-bit,
`quant/int4.py`) computes with its weights fake-quantized per output channel:

    w_q = s * clamp(round(w / s), -8, 7)

with a learned step s per channel (LSQ: Esser et al., "Learned Step Size Quantization",
ICLR 2020; its gradient scale 1 / sqrt(fan_in * 7)) and the straight-through estimator for
round (weights clamped at the grid's ends get no gradient). Steps start at the int4 recipe's
least-squares scales of the weights they quantize.

What a QAT run keeps:
- model.safetensors holds w_q (the model as the firmware runs it): evaluation, export and the
  int4 recipe see the 4-bit model, and the recipe keeps a grid it finds in the weights;
- the resume state holds the float weights w, the steps (tensors `qat.<layer name>`) and
  their Adam state (a second parameter group), so a resumed run continues exactly.

Training uses autograd: the hand-derived gradients (`handgrad`) know nothing of w_q.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..errors import ModelFileError
from ..quant.int4 import QMAX, QMIN, quantize_weights
from .model import VAE

MIN_STEP = 1e-12  # steps are clamped here in the forward pass (a step must stay positive)
PREFIX = "qat."  # the steps' tensor names in the resume state


def layer_names(cfg: ModelConfig) -> list[str]:
    """The decoder layers QAT quantizes, by state_dict prefix: all but the first."""
    body = [f"decoder.body.{2 * i}" for i in range(1, len(cfg.hidden))]  # Linear, act, ...
    return [*body, "decoder.out"]


def step_shapes(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """The steps' shapes ([out, 1] per quantized layer), in parameter-group order."""
    widths = [*list(reversed(cfg.hidden))[1:], cfg.input_dim]
    return [(w, 1) for w in widths]


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


def fake_quant(w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """w_q per output channel with LSQ's gradients for w and the step [out, 1]."""
    g = 1.0 / math.sqrt(w.shape[1] * QMAX)
    s = step.clamp_min(MIN_STEP)
    s = (s - s * g).detach() + s * g  # value s, gradient scaled by g
    return torch.clamp(_round_ste(w / s), QMIN, QMAX) * s


class QatLinear(nn.Linear):
    """An nn.Linear whose forward uses fake_quant(weight, step). `convert` turns a layer
    into one in place (same parameters, same state_dict); the step is not registered as a
    parameter of the model, so model.state_dict() keeps its keys."""

    qat_step: nn.Parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant(self.weight, self.qat_step), self.bias)

    @torch.no_grad()
    def quantized_weight(self) -> torch.Tensor:
        s = self.qat_step.clamp_min(MIN_STEP)
        return torch.clamp(torch.round(self.weight / s), QMIN, QMAX) * s


def _initial_step(weight: torch.Tensor) -> torch.Tensor:
    _, scale = quantize_weights(weight.detach().numpy())
    return torch.from_numpy(scale).reshape(-1, 1).to(weight.dtype)


@dataclass
class QatState:
    """The quantized layers of one model and their steps (see the module docstring)."""

    bits: int
    layers: dict[str, QatLinear]

    @property
    def steps(self) -> list[nn.Parameter]:
        return [layer.qat_step for layer in self.layers.values()]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The steps for the resume state."""
        return {PREFIX + n: layer.qat_step.detach().clone() for n, layer in self.layers.items()}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Steps from the resume state; a run that starts QAT now starts them from its
        weights (the int4 recipe's scales)."""
        for name, layer in self.layers.items():
            saved = tensors.get(PREFIX + name)
            if saved is None:
                layer.qat_step.copy_(_initial_step(layer.weight))
                continue
            if tuple(saved.shape) != tuple(layer.qat_step.shape) or not (
                saved.dtype.is_floating_point and torch.isfinite(saved).all()
            ):
                raise ModelFileError(f"{where}: corrupt resume state ({PREFIX}{name})")
            layer.qat_step.copy_(saved)

    def quantized_state_dict(self, model: VAE) -> dict[str, torch.Tensor]:
        """model.state_dict() with each quantized layer's weight replaced by w_q."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, layer in self.layers.items():
            sd[f"{name}.weight"] = layer.quantized_weight()
        return sd


def convert(model: VAE, opt: torch.optim.Optimizer, bits: int) -> QatState:
    """Make the model's quantized layers QatLinear (in place) with steps from their current
    weights, and add the steps to `opt` as a second parameter group (the first keeps the
    model's parameters in their order, so a run's optimizer state still lines up)."""
    modules = dict(model.named_modules())
    layers: dict[str, QatLinear] = {}
    for name in layer_names(model.cfg):
        layer = modules[name]
        layer.__class__ = QatLinear  # same parameters: the optimizer keeps its references
        # unregistered (object.__setattr__): model.state_dict() and parameters() stay as they are
        object.__setattr__(layer, "qat_step", nn.Parameter(_initial_step(layer.weight)))
        layers[name] = layer
    state = QatState(bits, layers)
    opt.add_param_group({"params": state.steps})
    return state


def gradient_fn(model: VAE, qat: QatState) -> Callable[[torch.Tensor, torch.Tensor, float], float]:
    """fn(x, eps, beta) -> the batch's mean -ELBO (with w_q), gradients by autograd in
    `.grad` of the model's parameters and the steps (replacing what was there)."""
    params = [*model.parameters(), *qat.steps]

    def step(x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0) -> float:
        loss, recon, kl = model.loss(x, eps)
        for p in params:
            p.grad = None
        (loss if beta == 1.0 else recon + beta * kl).backward()
        return loss.item()

    return step
