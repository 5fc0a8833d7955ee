"""Entry point: `edgevae ...` and `python -m edgevae ...`.

Command modules register on the shared app when imported; their errors become one line on
stderr and an exit code (2 usage, 1 runtime, 130 interrupted), or a traceback with --debug.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .. import __version__
from .common import STATE, app, err_console

COMMAND_MODULES = ("train", "export", "runtime", "anomaly", "bench", "firmware", "crosscheck")


def _version(value: bool) -> None:
    if value:
        print(f"edgevae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    STATE["debug"] = debug


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:  # a feature module not in this build
        if exc.name != f"{__package__}.{_name}":
            raise


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    STATE["debug"] = "--debug" in args
    try:
        app(args=args, prog_name="edgevae")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
