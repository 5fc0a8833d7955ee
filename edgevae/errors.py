"""Typed exceptions of the library, and the one place an exception becomes one line.

Library code raises these instead of printing. Messages say what is wrong in the library's
own terms: an argument is named as the Python API names it (`param`), never as a command-line
flag; the CLI renders `param` as the flag of the command that failed (`cli.common`), and maps
`exit_code` to the process status (2 for a bad argument, 1 for everything else).
"""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 300, *, with_type: bool = False) -> str:
    """An exception as one short line: the OS's reason for an OSError, else its text folded
    onto one line and cut at `limit` characters; its type name when it has no text (or in
    front of the text with `with_type`)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = type(exc).__name__
    if not text:
        return name
    return f"{name}: {text}" if with_type else text


class EdgeVAEError(Exception):
    """A failure the user can act on; the message is shown as is, on one line."""

    exit_code = 1


class UsageError(EdgeVAEError):
    """A bad argument value or combination. `param` is the API's name of the argument at
    fault (None when it is a combination); str() reads `"<param>: <message>"`."""

    exit_code = 2

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        self.detail = message
        super().__init__(f"{param}: {message}" if param else message)


class DataError(EdgeVAEError):
    """A data file or folder that cannot be read as the kind it claims to be."""


class ModelFileError(EdgeVAEError):
    """An ONNX model, checkpoint or manifest that is missing, corrupt or not the expected kind."""


class TrainingError(EdgeVAEError):
    """Training cannot go on (non-finite loss, locked run dir, ...)."""


class MissingExtraError(EdgeVAEError):
    """The feature needs packages of an install extra that is not installed."""

    def __init__(self, feature: str, extra: str, module: str):
        self.extra = extra
        self.module = module
        super().__init__(
            f"{feature} needs the '{extra}' extra (no module named '{module}'): "
            f"pip install 'edgevae[{extra}]'"
        )
