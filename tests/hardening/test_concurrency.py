"""Two processes on one export dir at once, for real: a reader never sees a mixed export
(models of two quantizations, or a manifest whose sha256 do not match its files), and two
writers leave a consistent one. The writers commit under the export's exclusive lock
(`manifest.commit`); readers load under the shared lock and check each file's sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import onnx

from edgevae import fsio
from edgevae.runtime import manifest

RECIPES = ("static-pc-rr", "dynamic-pt")


def _spawn(code: str, tmp_path, name: str) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


WRITER = """
import sys
from edgevae.cli import main
codes = []
for i in range({n}):
    recipe = {recipes!r}[i % 2]
    codes.append(main(["quantize", "--export-dir", {exp!r}, "--run-dir", {run!r},
                       "--recipe", recipe, "--budget-nats", "10", "--calib", "200"]))
print("CODES", codes)
"""

READER = """
import json, sys, time
import edgevae
from edgevae.errors import ModelFileError
seen = {{"ok": 0, "mixed": 0, "refused": 0, "other": []}}
deadline = time.monotonic() + 240
stop = {stop!r}
import os
while not os.path.exists(stop) and time.monotonic() < deadline:
    try:
        m = edgevae.load({exp!r})
        m.sample(2)
        m.encode(m.heldout()[:2])
    except ModelFileError as exc:
        seen["refused" if "load the export again" in str(exc) else "other"] += (
            1 if "load the export again" in str(exc) else [str(exc)[:200]])
        continue
    want = m.manifest["recipe"]["name"]
    got = [s.get_modelmeta().custom_metadata_map["edgevae.recipe"] for s in (m.encoder, m.decoder)]
    seen["ok" if got == [want, want] else "mixed"] += 1
print(json.dumps(seen))
"""


def _consistent(exp) -> None:
    man = manifest.read(exp)
    for name, rec in man["files"].items():
        assert fsio.sha256_file(exp / name) == rec["sha256"], name
    for role in ("encoder", "decoder"):
        meta = {p.key: p.value for p in onnx.load(str(exp / f"{role}.int8.onnx")).metadata_props}
        assert meta["edgevae.recipe"] == man["recipe"]["name"]


def test_readers_never_see_a_mixed_export_while_quantize_rewrites_it(
    tiny_run, tiny_export, tmp_path
):
    exp = tmp_path / "e"
    shutil.copytree(tiny_export, exp)
    stop = tmp_path / "stop"
    reader = _spawn(READER.format(exp=str(exp), stop=str(stop)), tmp_path, "reader")
    writer = _spawn(
        WRITER.format(n=4, recipes=RECIPES, exp=str(exp), run=str(tiny_run)), tmp_path, "writer"
    )
    out, err = writer.communicate(timeout=600)
    stop.touch()
    r_out, r_err = reader.communicate(timeout=300)
    assert "CODES [0, 0, 0, 0]" in out, err[-2000:]
    seen = json.loads(r_out.strip().splitlines()[-1])
    assert seen["mixed"] == 0 and seen["other"] == [], seen
    assert seen["ok"] > 0, seen
    print("reader:", seen)
    _consistent(exp)


def test_two_writers_at_once_leave_a_consistent_export(tiny_run, tiny_export, tmp_path):
    exp = tmp_path / "e"
    shutil.copytree(tiny_export, exp)
    writers = [
        _spawn(WRITER.format(n=2, recipes=RECIPES[i:] + RECIPES[:i], exp=str(exp),
                             run=str(tiny_run)), tmp_path, f"w{i}")
        for i in range(2)
    ]  # fmt: skip
    time.sleep(0.1)
    for w in writers:
        out, err = w.communicate(timeout=600)
        assert "CODES" in out, err[-2000:]
        # each quantization either committed or refused to mix with the other's
        assert "Traceback" not in err
    _consistent(exp)
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]
