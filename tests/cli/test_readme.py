"""The README's promises that a test can hold: the quickstart and the CLI reference."""

from __future__ import annotations

import re

from conftest import REPO

from edgevae.cli import doc as clidoc


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_cli_reference_matches_the_commands() -> None:
    current = clidoc.current_block(readme())
    assert current is not None, "README lost the cli-reference markers"
    assert current == clidoc.block(), "run: python -m edgevae.cli.doc --write README.md"


def test_quickstart_is_exactly_make_demo_and_make_test() -> None:
    text = readme()
    quick = text.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.M)
    assert commands == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call the README's test command"


def test_every_picture_the_readme_shows_exists() -> None:
    for path in re.findall(r"\]\((docs/figures/[^)]+\.png)\)", readme()):
        assert (REPO / path).is_file(), path
