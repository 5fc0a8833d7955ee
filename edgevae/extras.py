"""Which install extra a feature needs, checked before the feature starts: on a base install
(`pip install edgevae`) a command of the `train` or `plots` extra says so in one line instead
of failing on an import halfway through."""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

TRAIN = ("torch", "onnx", "safetensors")


def require(feature: str, extra: str, modules: tuple[str, ...]) -> None:
    """MissingExtraError naming `extra` unless every module in `modules` is importable."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(feature, extra, module)
