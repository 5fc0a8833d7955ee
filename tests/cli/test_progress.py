"""edgevae.cli.progress: long work reports progress with and without a terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from edgevae.cli.progress import CountProgress


def _run(terminal: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=100)
    with CountProgress(console, "scoring (k=5)") as progress:
        for done in range(0, 1001, 40):
            progress(done, 1000)
    return buf.getvalue()


def test_without_a_terminal_a_plain_line_per_tenth() -> None:
    lines = _run(terminal=False).splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("scoring (k=5): 120/1,000 (")
    assert lines[-1].startswith("scoring (k=5): 1,000/1,000 (")
    assert all(re.search(r"\(\d+ s, ~\d+ s left\)$", line) for line in lines)
    assert "\x1b" not in "".join(lines)  # no escape codes in a log file


def test_with_a_terminal_the_bar_is_drawn() -> None:
    out = _run(terminal=True)
    assert "scoring (k=5)" in out and "1000/1000" in out
