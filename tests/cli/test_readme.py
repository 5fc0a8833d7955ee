"""The README's promises that a test can hold: the quickstart, the Python API example, the CLI
reference in docs/cli.md and the pictures."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

from edgevae.cli import doc as clidoc


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_cli_reference_matches_the_commands() -> None:
    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == clidoc.document(), "run: python -m edgevae.cli.doc --write docs/cli.md"


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


def test_the_python_api_example_runs_as_written(tmp_path) -> None:
    """The README's API block, verbatim, in a fresh process (it trains, exports, quantizes with
    the default auto search and uses every Model method)."""
    block = readme().split("## Python API", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"\d+\.\d+ \S+", lines[0]), lines  # test -ELBO and the chosen recipe
    assert re.fullmatch(r"-ELBO \d+\.\d, IWAE NLL \d+\.\d nats", lines[1]), lines
    assert (tmp_path / "export-api" / "encoder.int8.onnx").is_file()
