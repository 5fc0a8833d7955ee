"""docs/cli.md, the CLI reference, generated from the Typer app so it cannot drift.

`python -m edgevae.cli.doc --write docs/cli.md` rewrites the file; a test fails when the file
differs from what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

HEADER = """# CLI reference

Generated from the commands' `--help` by `python -m edgevae.cli.doc --write docs/cli.md` (a test
keeps it in sync). Every command also takes `-h/--help`, which lists the valid values and ranges;
`edgevae --debug COMMAND` shows a traceback instead of the one-line error. Exit status: 0 done,
1 failed, 2 bad usage, 130 interrupted.
"""


def _default(param) -> str:
    value = param.default
    if getattr(param, "required", False):
        return "required"
    if value is None or value == "" or isinstance(value, bool):
        return ""
    return f"`{getattr(value, 'value', value)}`"  # an Enum choice shows its value


def _values(param) -> str:
    """The valid values Typer checks: a choice list or a numeric range."""
    kind = param.type
    choices = getattr(kind, "choices", None)
    if choices:
        return " One of: " + ", ".join(f"`{getattr(c, 'value', c)}`" for c in choices) + "."
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    if low is not None and high is not None:
        return f" {low} to {high}."
    if low is not None:
        return f" At least {low}."
    return ""


def _commands(group, prefix: str):
    """(full name, command) of every command, sub-apps' commands under their group's name."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a sub-app (click group): `edgevae crosscheck run`, ...
            yield from _commands(cmd, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", cmd


def reference() -> str:
    import typer

    from .. import cli

    out = []
    for name, cmd in _commands(typer.main.get_command(cli.app), "edgevae"):
        summary = (cmd.help or "").strip().splitlines()[0]
        out.append(f"#### `{name}`\n\n{summary}\n")
        out.append("| option | default | meaning |\n|---|---|---|")
        for p in cmd.params:
            if p.name == "help":
                continue
            opts = " / ".join(f"`{o}`" for o in [*p.opts, *getattr(p, "secondary_opts", [])])
            help_text = ((getattr(p, "help", "") or "") + _values(p)).replace("|", "\\|")
            out.append(f"| {opts} | {_default(p)} | {help_text} |")
        if cmd.epilog:
            examples = [
                ln.strip() for ln in cmd.epilog.splitlines() if ln.strip().startswith("edgevae")
            ]
            if examples:
                out.append("\n```\n" + "\n".join(examples) + "\n```")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def document() -> str:
    return f"{HEADER}\n{reference()}"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        from ..fsio import write_text

        write_text(Path(argv[1]), document())
        return 0
    print(document())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
