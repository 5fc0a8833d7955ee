"""Model and training configuration: dataclasses with a JSON round-trip and up-front checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

ACTIVATIONS = ("relu", "tanh")
LIKELIHOODS = ("bernoulli", "gaussian")
OPTIMIZERS = ("adam", "adagrad")
BINARIZE = ("none", "static", "dynamic")

# Named sizes. `mcu`'s int8 decoder (8*128 + 128*784 weights) fits in 128 KB of flash.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"hidden": [400], "latent_dim": 20},
    "mcu": {"hidden": [128], "latent_dim": 8},
    "paper": {"hidden": [500], "latent_dim": 20},
}


@dataclass
class ModelConfig:
    input_dim: int
    image_shape: tuple[int, int]
    hidden: list[int] = field(default_factory=lambda: [400])
    latent_dim: int = 20
    activation: str = "relu"
    likelihood: str = "bernoulli"
    # Conditional models (p(x | z, y), q(z | x, y)): the class names, in label order; empty for
    # an unconditional model.
    classes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> ModelConfig:
        if self.latent_dim < 1:
            raise UsageError(f"must be >= 1, got {self.latent_dim}", param="latent_dim")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise UsageError(f"must be >= 1, got {self.hidden}", param="hidden")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"must be one of {', '.join(ACTIVATIONS)}", param="activation")
        if self.likelihood not in LIKELIHOODS:
            raise UsageError(f"must be one of {', '.join(LIKELIHOODS)}", param="likelihood")
        h, w = self.image_shape
        if h * w != self.input_dim:
            raise UsageError(f"image shape {h}x{w} does not match input dim {self.input_dim}")
        if len(self.classes) == 1 or len(set(self.classes)) != len(self.classes):
            raise UsageError(
                f"a conditional model needs two or more distinct classes, got {self.classes}",
                param="classes",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            input_dim=int(d["input_dim"]),
            image_shape=(int(d["image_shape"][0]), int(d["image_shape"][1])),
            hidden=[int(h) for h in d["hidden"]],
            latent_dim=int(d["latent_dim"]),
            activation=str(d["activation"]),
            likelihood=str(d["likelihood"]),
            classes=[str(c) for c in d.get("classes", [])],
        )


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    threads: int = 1
    binarize: str = "none"
    data: str | None = None
    max_minutes: float | None = None  # stop after the epoch that crosses this wall time
    lr_patience: int = 0  # halve lr after this many epochs without a better valid bound
    kl_warmup: int = 0  # epochs over which the KL weight ramps linearly from 0 to 1
    classes: list[int | str] | None = None  # train on these classes only (positions or names)
    conditional: bool = False  # q(z | x, y) and p(x | z, y) with y the one-hot label
    qat_bits: int = 0  # 4: decoder weights fake-quantized for the 4-bit firmware (training/qat)

    def validate(self) -> TrainConfig:
        if self.epochs < 1:
            raise UsageError(f"must be >= 1, got {self.epochs}", param="epochs")
        if self.batch_size < 1:
            raise UsageError(f"must be >= 1, got {self.batch_size}", param="batch_size")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise UsageError(f"must be a finite number > 0, got {self.lr}", param="lr")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"must be one of {', '.join(OPTIMIZERS)}", param="optimizer")
        if self.binarize not in BINARIZE:
            raise UsageError(f"must be one of {', '.join(BINARIZE)}", param="binarize")
        if self.threads < 0:
            raise UsageError(f"must be >= 0 (0 = all cores), got {self.threads}", param="threads")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UsageError(f"must be > 0, got {self.max_minutes}", param="max_minutes")
        if self.lr_patience < 0:
            raise UsageError(
                f"must be >= 0 (0 = constant lr), got {self.lr_patience}", param="lr_patience"
            )
        if self.kl_warmup < 0:
            raise UsageError(f"must be >= 0 (0 = off), got {self.kl_warmup}", param="kl_warmup")
        if self.seed < 0:
            raise UsageError(f"must be >= 0, got {self.seed}", param="seed")
        if type(self.qat_bits) is not int or self.qat_bits not in (0, 4):  # not True, not 4.0
            raise UsageError(f"must be 0 (off) or 4, got {self.qat_bits!r}", param="qat_bits")
        if self.classes is not None:
            self.classes = _class_list(self.classes)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _class_list(classes: Any) -> list[int | str]:
    """A non-empty list of class positions (ints >= 0) or names (non-empty strs), no repeats;
    whether they exist is checked against the data when it is read."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not classes:
        raise UsageError(
            f"expected a non-empty list of class positions or names, got {classes!r}",
            param="classes",
        )
    out: list[int | str] = []
    for item in classes:
        ok_int = isinstance(item, int) and not isinstance(item, bool) and item >= 0
        if not (ok_int or (isinstance(item, str) and item.strip())):
            raise UsageError(
                f"expected class positions (>= 0) or names, got {item!r}", param="classes"
            )
        if item in out:
            raise UsageError(f"class {item!r} is listed twice", param="classes")
        out.append(item)
    return out


def dumps(obj: dict[str, Any]) -> str:
    from .fsio import to_json

    return to_json(obj)
