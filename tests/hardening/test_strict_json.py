"""Every JSON file the tool writes parses with a strict reader (no NaN/Infinity constants).

One small pipeline through the CLI; then every *.json and *.jsonl under the work dir is read
with a parser that refuses the non-standard constants Python's json module accepts by default.
"""

from __future__ import annotations

import json
import shutil

import pytest

from edgevae.cli import main
from edgevae.fsio import to_json


def _refuse(constant: str):
    raise ValueError(f"non-standard JSON constant {constant}")


def strict_load(text: str):
    return json.loads(text, parse_constant=_refuse)


def test_non_finite_floats_become_null():
    text = to_json({"best": float("inf"), "x": [1.0, float("nan"), -float("inf")], "ok": 2.5})
    assert strict_load(text) == {"best": None, "ok": 2.5, "x": [1.0, None, None]}


def test_every_json_file_a_pipeline_writes_is_strict(
    tiny_run, tiny_export, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    run = tmp_path / "run"
    tiny = ["--hidden", "32", "--latent-dim", "2", "--threads", "1"]
    steps = [
        ["train", "--epochs", "1", "--run-dir", str(run), "--no-export", *tiny],
        ["eval", "--run-dir", str(run), "--k", "2", "--limit", "20", "--json", "eval.json"],
        ["threshold", "--export-dir", str(exp), "--run-dir", str(tiny_run), "--json", "t.json"],
        ["score", "--export-dir", str(exp), "--out", "s.csv", "--json", "score.json"],
        ["detect", "--export-dir", str(exp), "--out", "f.png", "--json", "detect.json"],
        ["anomaly-bench", "--export-dir", str(exp), "--limit", "20", "--k", "2",
         "--json", "anomaly.json"],
        ["bench", "--export-dir", str(exp), "--limit", "10", "--k", "2", "--rounds", "1",
         "--batch-sizes", "1", "--no-torch", "--json", "bench.json"],
        ["firmware", "--export-dir", str(exp), "--out", "fw", "--json", "firmware.json"],
    ]  # fmt: skip
    for args in steps:
        assert main(args) == 0, (args, capsys.readouterr().err)
    found = sorted(p for p in tmp_path.rglob("*") if p.suffix in (".json", ".jsonl"))
    names = {p.name for p in found}
    assert {"config.json", "state.json", "metrics.jsonl", "manifest.json"} <= names
    assert {"eval.json", "t.json", "bench.json", "anomaly.json", "firmware.json"} <= names
    for path in found:
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for line in lines:
            try:
                strict_load(line)
            except ValueError as exc:
                pytest.fail(f"{path}: {exc}")
