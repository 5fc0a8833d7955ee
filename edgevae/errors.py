"""Exceptions that the CLI turns into one-line messages and exit codes.

Library code raises these instead of printing; `cli.main` maps them to exit status
(2 for usage errors, 1 for runtime failures) without a traceback unless --debug.
"""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a table or report: its first line, else its type."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class EdgeVAEError(Exception):
    """A failure the user can act on; the message is shown as is, on one line."""

    exit_code = 1


class UsageError(EdgeVAEError):
    """A bad option value or combination (exit status 2, like Click's usage errors)."""

    exit_code = 2


class DataError(EdgeVAEError):
    """A data file or folder that cannot be read as the kind it claims to be."""


class ModelFileError(EdgeVAEError):
    """An ONNX model, checkpoint or manifest that is missing, corrupt or not the expected kind."""


class TrainingError(EdgeVAEError):
    """Training cannot go on (non-finite loss, locked run dir, ...)."""
