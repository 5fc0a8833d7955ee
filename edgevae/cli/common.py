"""The Typer app object and the small helpers every command module shares.

Command modules (`cli_*.py`) register themselves on `app`; `cli.main` imports them all and
turns `EdgeVAEError` into a one-line message and an exit code.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import EdgeVAEError, UsageError
from ..runtime.manifest import PRECISIONS


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; an EdgeVAEError, a KeyboardInterrupt, an OSError or a MemoryError becomes
    one line on stderr and an exit code (no traceback unless --debug). A closed stdout
    (`| head`) is left to typer, which ends quietly."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (EdgeVAEError, KeyboardInterrupt, OSError, MemoryError) as exc:
            if STATE["debug"] or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
                raise
            message, code = _error_line(exc, fn)
            print_error(message)
            raise typer.Exit(code) from None

    return wrapper


def _error_line(exc: BaseException, command: Callable[..., Any]) -> tuple[str, int]:
    if isinstance(exc, UsageError) and exc.param:
        return f"{option_name(command, exc.param)}: {exc.detail}", exc.exit_code
    if isinstance(exc, EdgeVAEError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, MemoryError):
        return "not enough memory for this command", 1
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{getattr(exc, 'strerror', None) or exc}", 1


def option_name(command: Callable[..., Any], param: str) -> str:
    """The command-line spelling of an API argument: the longest flag of the command's option
    of that name (Typer derives `--budget-nats` from `budget_nats` unless told otherwise), or
    the API name itself when the command has no such option."""
    parameter = inspect.signature(command).parameters.get(param)
    if parameter is None:
        return param
    decls = getattr(parameter.default, "param_decls", None) or ()
    flags = [d for d in decls if d.startswith("--")]
    return max(flags, key=len) if flags else "--" + param.replace("_", "-")


def print_error(message: str) -> None:
    """`error: <message>` as ONE line on stderr (folded, never wrapped, never Rich markup)."""
    # Messages carry user paths: print them as text, never as Rich markup.
    text = " ".join(message.split())
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _click_exception_types() -> tuple[type[BaseException], ...]:
    # typer vendors click in recent versions and uses the click package in older ones: find
    # ClickException through a class typer exports, whichever it is.
    return tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


@contextlib.contextmanager
def _one_line_click_errors() -> Iterator[None]:
    """An unknown option, a missing one or a value of the wrong type (`--epochs abc`) is one
    `error:` line like every other error, not click's usage text and boxed panel."""
    try:
        yield
    except _click_exception_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" or STATE["debug"]:
            raise  # bare `edgevae` shows the help; --debug keeps click's full report
        ctx = getattr(exc, "ctx", None)
        hint = ""
        if ctx is not None and ctx.help_option_names:
            hint = f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
        print_error(f"{exc.format_message()}{hint}")
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None


class _OneLineErrorsGroup(TyperGroup):
    """The app's click group: command-line parse errors become one `error:` line, exit 2."""

    def make_context(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        with _one_line_click_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # type: ignore[override]
        with _one_line_click_errors():
            return super().invoke(ctx)


class _GuardedTyper(typer.Typer):
    """A Typer whose commands all report EdgeVAEError the same way."""

    def command(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        register = super().command(*args, **kwargs)
        return lambda fn: register(guarded(fn))


app = _GuardedTyper(
    cls=_OneLineErrorsGroup,
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
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

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


def check_dir_option(path: Path, option: str) -> Path:
    """Fail before any work when a directory option names a file (or a path through one), so
    the user is not told "File exists" by a mkdir after minutes of training."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is not a directory" if candidate == path else "is a file, not a directory"
                raise UsageError(f"{option}: {candidate} {what}")
            break
    return path


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


# Which models of an export a runtime command uses.
Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]


EXPORT_DIR = typer.Option(Path("export"), help="An export dir made by `edgevae train`/`export`.")
PRECISION = typer.Option(
    Precision.int8,
    help="int8: the quantized pair `quantize` chose; fp32: the float models; firmware: the "
    "static int8 pair the C firmware computes bit for bit; int4: that encoder with the "
    "firmware's 4-bit decoder.",
)
THREADS = typer.Option(1, min=1, help="onnxruntime intra-op threads.")


def check_suffix(path: Path, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """A usage error before any work unless `path` ends in one of `suffixes`."""
    check_output_path(path, option)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{option}: {path} should end in {' or '.join(suffixes)}")
    return path


def wrote(out: Path, what: str, size: tuple[int, int] | None = None) -> None:
    """The line every command that writes a file ends with. Paths are text, never Rich markup
    (a name like "out/[/x].png" would be parsed as markup)."""
    pixels = f" ({size[0]}x{size[1]} px)" if size else ""
    console.print(f"wrote {out}{pixels}: {what}", highlight=False, markup=False)
