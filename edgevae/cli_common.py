"""The Typer app object and the small helpers every command module shares.

Command modules (`cli_*.py`) register themselves on `app`; `cli.main` imports them all and
turns `EdgeVAEError` into a one-line message and an exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import EdgeVAEError, UsageError


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an EdgeVAEError into one line on stderr and its exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeVAEError as exc:
            if STATE["debug"]:
                raise
            # Messages carry user paths: print them as text, never as Rich markup.
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None

    return wrapper


class _GuardedTyper(typer.Typer):
    """A Typer whose commands all report EdgeVAEError the same way."""

    def command(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        register = super().command(*args, **kwargs)
        return lambda fn: register(guarded(fn))


app = _GuardedTyper(
    name="edgevae",
    help=(
        "Train a compact MLP VAE, export it to ONNX, quantize it to int8, and run it on CPUs, "
        "ARM boards and microcontrollers.\n\n"
        "Typical use:  edgevae train  then  edgevae sample --n 16 --out grid.png"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Piped output gets a fixed width wide enough for the comparison tables.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

STATE = {"debug": False}


def parse_int_list(text: str, option: str) -> list[int]:
    """'500,500' -> [500, 500]; a usage error naming the option otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option}: expected at least one integer")
    return values


def require(condition: bool, message: str) -> None:
    """Raise a usage error (exit 2) unless the option check holds."""
    if not condition:
        raise UsageError(message)


def check_output_path(path: Path, option: str = "--out") -> Path:
    """Fail before any work when the output cannot be written (missing parent is created)."""
    if path.exists() and path.is_dir():
        raise UsageError(f"{option}: {path} is a directory, expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{option}: {parent} is not a directory")
    return path


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
