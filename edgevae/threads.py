"""The one place thread counts are decided: onnxruntime sessions take theirs from
`runtime.session.session_options`, torch from `set_torch_threads` (torch is never imported
here: the device path has no torch)."""

from __future__ import annotations

import os
import sys


def resolve(threads: int | None) -> int:
    """0 or None means every CPU of this machine; otherwise the number itself."""
    return threads or os.cpu_count() or 1


def set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads when torch is already imported; returns the count."""
    n = resolve(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
