"""training.qat: 4-bit quantization-aware fine-tuning (fake quantization, learned steps).

Runs are tiny (784-32-16-2 on a few hundred synthetic images) and go through
`edgevae.cli.main` in-process, like test_train.py's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevae.cli import main
from edgevae.config import ModelConfig, TrainConfig
from edgevae.errors import UsageError
from edgevae.quant.int4 import QMAX, QMIN, quantize_weights
from edgevae.training import checkpoint, qat, runconfig
from edgevae.training.model import VAE
from edgevae.training.setup import make_optimizer

TINY = ["--hidden", "32,16", "--latent-dim", "2", "--threads", "1", "--no-export"]


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    images = (rng.random((200, 28, 28)) ** 4 * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "images.npy"
    np.save(path, images)
    return path


def _train(run_dir: Path, data: Path, *extra: str) -> int:
    return main(["train", "--run-dir", str(run_dir), "--data", str(data), *TINY, *extra])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.read_safetensors(run_dir / runconfig.MODEL)[0]


def test_fake_quant_values_and_lsq_gradients():
    torch.manual_seed(0)
    w = torch.randn(5, 12, requires_grad=True)
    step = torch.full((5, 1), 0.2, requires_grad=True)
    out = qat.fake_quant(w, step)
    q = torch.clamp(torch.round(w.detach() / 0.2), QMIN, QMAX)
    assert torch.allclose(out, q * 0.2)
    out.sum().backward()
    r = w.detach() / 0.2
    inside = (torch.round(r) >= QMIN) & (torch.round(r) <= QMAX)
    assert not inside.all()
    assert torch.equal(w.grad, inside.float())  # straight through, nothing past the ends
    g = 1.0 / math.sqrt(12 * QMAX)
    lsq = torch.where(inside, torch.round(r) - r, torch.clamp(r, QMIN, QMAX)).sum(1, keepdim=True)
    assert torch.allclose(step.grad, lsq * g, atol=1e-5)


def test_convert_keeps_the_state_dict_and_quantizes_all_but_the_first_layer():
    cfg = ModelConfig(784, (28, 28), hidden=[32, 16], latent_dim=2).validate()
    model = VAE(cfg)
    opt = make_optimizer(model, TrainConfig())
    keys = list(model.state_dict())
    state = qat.convert(model, opt, 4)
    assert list(model.state_dict()) == keys
    assert list(state.layers) == qat.layer_names(cfg) == ["decoder.body.2", "decoder.out"]
    assert [tuple(s.shape) for s in state.steps] == qat.step_shapes(cfg) == [(32, 1), (784, 1)]
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"] == state.steps
    sd = state.quantized_state_dict(model)
    for name in state.layers:  # the int4 recipe finds the grid again, exactly
        w = sd[f"{name}.weight"].numpy()
        q, s = quantize_weights(w)
        assert np.array_equal((q.astype(np.float32) * s[:, None]).astype(np.float32), w)
    assert torch.equal(sd["decoder.body.0.weight"], model.decoder.body[0].weight)


def test_fine_tune_resumes_exactly_and_keeps_the_4_bit_model(tmp_path, npy, capsys):
    straight, stepped = tmp_path / "straight", tmp_path / "stepped"
    for run_dir in (straight, stepped):
        assert _train(run_dir, npy, "--epochs", "1", "--batch-size", "50") == 0
    assert _train(straight, npy, "--resume", "--epochs", "3", "--qat-bits", "4") == 0
    assert _train(stepped, npy, "--resume", "--epochs", "2", "--qat-bits", "4") == 0
    state, _ = checkpoint.read_safetensors(stepped / runconfig.STATE)
    assert {"qat.decoder.body.2", "qat.decoder.out"} <= set(state)
    assert _train(stepped, npy, "--resume", "--epochs", "3") == 0  # QAT stays on
    assert (straight / runconfig.MODEL).read_bytes() == (stepped / runconfig.MODEL).read_bytes()
    cfg = json.loads((stepped / runconfig.CONFIG).read_text())
    assert cfg["train"]["qat_bits"] == 4
    rows = checkpoint.read_metrics(stepped)
    assert [r.get("qat_bits") for r in rows] == [None, 4, 4]
    weights = _weights(stepped)
    for name in ("decoder.body.2", "decoder.out"):
        w = weights[f"{name}.weight"].numpy()
        q, s = quantize_weights(w)
        assert np.array_equal((q.astype(np.float32) * s[:, None]).astype(np.float32), w)
        assert len(np.unique(np.rint(w / s[:, None]))) <= 16
    assert len(np.unique(weights["decoder.body.0.weight"].numpy())) > 16  # the first: float


def test_qat_bits_must_be_0_or_4(tmp_path, npy, capsys):
    with pytest.raises(UsageError, match="qat_bits: must be 0"):
        TrainConfig(qat_bits=3).validate()
    assert _train(tmp_path / "r", npy, "--qat-bits", "3") == 2
    assert "--qat-bits" in capsys.readouterr().err
