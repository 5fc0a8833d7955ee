"""edgevae: train a compact MLP VAE, export and quantize it to int8 ONNX, run it anywhere.

    import edgevae
    model = edgevae.load("export", precision="int8")    # torch-free
    images = model.sample(16, seed=0)                   # [16, 28, 28] float32 in [0, 1]

    run = edgevae.train(epochs=10, run_dir="runs/x")    # the `train` extra from here on
    edgevae.export(run.dir, "export")
    edgevae.quantize("export", budget_nats=0.1)

Importing edgevae imports neither torch nor onnxruntime; each function imports what it needs.
"""

__version__ = "0.1.0"

from .api import (  # noqa: E402
    Exported,
    TrainedRun,
    evaluate,
    export,
    load,
    quantize,
    threshold,
    train,
)
from .errors import (  # noqa: E402
    DataError,
    EdgeVAEError,
    MissingExtraError,
    ModelFileError,
    TrainingError,
    UsageError,
)


def __getattr__(name: str):
    # `edgevae.Model` without importing onnxruntime's numpy-heavy session code at import time.
    if name == "Model":
        from .runtime.model import Model

        return Model
    raise AttributeError(f"module 'edgevae' has no attribute {name!r}")


__all__ = [
    "DataError",
    "EdgeVAEError",
    "Exported",
    "MissingExtraError",
    "Model",
    "ModelFileError",
    "TrainedRun",
    "TrainingError",
    "UsageError",
    "__version__",
    "evaluate",
    "export",
    "load",
    "quantize",
    "threshold",
    "train",
]
