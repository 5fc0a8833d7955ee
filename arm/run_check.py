#!/usr/bin/env python3
"""`make test-arm`: do the exported models give the same numbers on Raspberry Pi-class ARM?

1. export dir: EXPORT (default `export/`); when it holds no models, a fixture export with random
   weights is built by arm/make_fixture_export.py into build/arm/fixture-export (cached);
2. qemu-user-static: installed with apt-get when missing and running as root (waits for a
   dpkg lock held by someone else); with CI=true a missing emulator is a failure, else a skip;
3. the aarch64 sysroot: arm/build_sysroot.py (cached by stamps);
4. reference: `python -m edgevae crosscheck run` (the Typer app, which also runs
   `edgevae sample` in-process for the PNG) with this venv on this x86-64 host;
5. targets, each the same command: Cortex-A72 (Pi 4) and Cortex-A76 (Pi 5) under
   `qemu-aarch64-static -cpu ... -L SYSROOT SYSROOT/usr/bin/python3.11`, and an AVX2 Haswell
   under `qemu-x86_64-static -cpu Haswell` with this venv's python;
6. the comparison of `edgevae crosscheck compare`, in this process: static int8 bit-exact,
   fp32 <= 1e-6, dynamic int8 reported, the `edgevae sample` PNG identical. The last line is
   the summary; exit 1 on FAIL.

Usage: .venv/bin/python arm/run_check.py [--export-dir export] [--targets a72,a76,haswell]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import build_sysroot  # noqa: E402

from edgevae.crosscheck.compare import compare  # noqa: E402
from edgevae.crosscheck.report import render_report, summary_line  # noqa: E402
from edgevae.crosscheck.results import load_results  # noqa: E402
from edgevae.fsio import write_json  # noqa: E402

TARGETS = {
    "cortex-a72": ("qemu-aarch64-static", "cortex-a72"),
    "cortex-a76": ("qemu-aarch64-static", "cortex-a76"),
    "haswell": ("qemu-x86_64-static", "Haswell"),
}
ALIASES = {"a72": "cortex-a72", "a76": "cortex-a76", "pi4": "cortex-a72", "pi5": "cortex-a76"}
RUN_TIMEOUT = 900


def log(msg: str) -> None:
    print(f"[test-arm] {msg}", flush=True)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


# --------------------------------------------------------------------------- export dir


def ensure_export(export_dir: Path, root: Path) -> Path:
    if any(export_dir.glob("*.onnx")):
        return export_dir
    script = HERE / "make_fixture_export.py"
    fixture = root / "fixture-export"
    key = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    stamp = fixture / ".stamp"
    if stamp.is_file() and stamp.read_text().strip() == key:
        log(
            f"{export_dir} has no models: using the cached fixture export {fixture} "
            "(random weights, not a trained model)"
        )
        return fixture
    log(f"{export_dir} has no models: building a fixture export (random weights) in {fixture}")
    proc = subprocess.run([sys.executable, str(script), "--out", str(fixture)], cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode or 1)
    stamp.write_text(key + "\n")
    return fixture


# --------------------------------------------------------------------------- qemu


def _apt(args: list[str], attempts: int = 30) -> bool:
    """apt-get with waiting on a lock that another apt/dpkg holds (up to ~10 minutes)."""
    cmd = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=600", *args]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(attempts):
        proc = subprocess.run(cmd, text=True, capture_output=True, env=env)
        if proc.returncode == 0:
            return True
        text = proc.stdout + proc.stderr
        if "lock" not in text.lower():
            log(f"{' '.join(cmd[:2] + args[:1])} failed: {text.strip().splitlines()[-1:]}")
            return False
        log(f"apt/dpkg is locked by another process; waiting (attempt {attempt + 1})")
        time.sleep(20)
    return False


def ensure_qemu(install: bool) -> list[str]:
    """Names of the missing qemu-user tools after trying to install them."""
    tools = sorted({tool for tool, _ in TARGETS.values()})
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing qemu-user-static (missing {', '.join(missing)})")
        if not _apt(["install", "--no-install-recommends", "qemu-user-static"]):
            _apt(["update"]) and _apt(["install", "--no-install-recommends", "qemu-user-static"])
        missing = [t for t in tools if shutil.which(t) is None]
    return missing


# --------------------------------------------------------------------------- runs


def _crosscheck_args(export_dir: Path, out: Path, label: str, seed: int, sample: bool):
    args = [
        "-m",
        "edgevae",
        "crosscheck",
        "run",
        "--export-dir",
        str(export_dir),
        "--out",
        str(out / f"{label}.npz"),
        "--label",
        label,
        "--seed",
        str(seed),
    ]
    return args + ([] if sample else ["--no-sample"])


def target_command(name: str, root: Path, sysroot: Path, args: list[str]) -> list[str]:
    tool, cpu = TARGETS[name]
    if tool == "qemu-aarch64-static":
        # -I: ignore PYTHON* variables and the cwd, so the copy installed in the sysroot runs
        return [
            tool,
            "-cpu",
            cpu,
            "-L",
            str(root / "views" / name),
            str(sysroot / "usr/bin/python3.11"),
            "-I",
            *args,
        ]
    return [tool, "-cpu", cpu, sys.executable, *args]


def run_one(label: str, cmd: list[str], out: Path) -> tuple[str, float, str | None]:
    """(label, seconds, error or None); output goes to OUT/<label>.log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEMU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    logfile = out / f"{label}.log"
    t0 = time.perf_counter()
    try:
        with open(logfile, "w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env, timeout=RUN_TIMEOUT
            )
    except subprocess.TimeoutExpired:
        return label, time.perf_counter() - t0, f"timed out after {RUN_TIMEOUT} s (see {logfile})"
    seconds = time.perf_counter() - t0
    lines = [
        ln
        for ln in logfile.read_text(errors="replace").splitlines()
        if "TCG doesn't support requested feature" not in ln
    ]
    if proc.returncode != 0 or not (out / f"{label}.npz").is_file():
        tail = " | ".join(lines[-3:])
        reason = (
            f"exit status {proc.returncode}"
            if proc.returncode >= 0
            else f"killed by signal {-proc.returncode}"
        )
        return label, seconds, f"{reason}: {tail} (log: {logfile})"
    for line in lines[-2:]:
        log(f"  {line}")
    return label, seconds, None


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export-dir", type=Path, default=Path("export"))
    ap.add_argument("--root", type=Path, default=REPO / "build" / "arm")
    ap.add_argument("--out", type=Path, help="results dir (default ROOT/check)")
    ap.add_argument("--targets", default="cortex-a72,cortex-a76,haswell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sample", action="store_true", help="skip the `edgevae sample` PNG")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install qemu")
    ap.add_argument("--jobs", type=int, default=2, help="emulated runs at a time")
    args = ap.parse_args(argv)
    targets = []
    for name in args.targets.split(","):
        name = ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in TARGETS:
            ap.error(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
        targets.append(name)
    return args, targets


def runnable_targets(
    targets: list[str], install: bool
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(targets to run, skipped {target: reason}, failed {target: reason}): a missing emulator
    skips its targets, or fails them with CI=true; Haswell needs an x86-64 host."""
    missing = ensure_qemu(install)
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    if "haswell" in targets and platform.machine() not in ("x86_64", "AMD64"):
        skipped["haswell"] = f"host is {platform.machine()}, not x86-64"
    for name in targets:
        tool = TARGETS[name][0]
        if tool in missing and name not in skipped:
            reason = f"{tool} not found (apt-get install qemu-user-static)"
            (failed if _ci() else skipped)[name] = reason
    for name, reason in {**skipped, **failed}.items():
        log(f"{name}: {'FAILED' if name in failed else 'skipped'}: {reason}")
    runnable = [t for t in targets if t not in skipped and t not in failed]
    return runnable, skipped, failed


def run_targets(
    runnable: list[str], commands: dict[str, list[str]], out: Path, jobs: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Run the targets' commands, `jobs` at a time: ({target: seconds}, {target: error})."""
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda n: run_one(n, commands[n], out), runnable))
    for label, seconds, error in results:
        timings[label] = seconds
        if error:
            failed[label] = error
            log(f"{label}: run FAILED after {seconds:.1f} s: {error}")
        else:
            log(f"{label}: {seconds:.1f} s")
    return timings, failed


def compare_targets(out: Path, ref_label: str, labels: list[str]) -> list:
    """Each target's results against the reference's, its report printed as it comes."""
    reference = load_results(out / f"{ref_label}.npz")
    reports = []
    for label in labels:
        report = compare(reference, load_results(out / f"{label}.npz"))
        reports.append(report)
        print("\n".join(render_report(report)), flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    args, targets = _parse_args(argv)
    t_start = time.perf_counter()
    root = args.root.resolve()
    out = (args.out or root / "check").resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    export_dir = ensure_export(args.export_dir.resolve(), root)
    sample = not args.no_sample

    t0 = time.perf_counter()
    runnable, skipped, failed = runnable_targets(targets, not args.no_install)
    timings: dict[str, float] = {"qemu": time.perf_counter() - t0}
    sysroot = root / "sysroot"
    if any(TARGETS[t][0] == "qemu-aarch64-static" for t in runnable):
        t0 = time.perf_counter()
        sysroot = build_sysroot.build(root)
        timings["sysroot"] = time.perf_counter() - t0

    log(f"export dir: {export_dir}")
    ref_label = f"host-{platform.machine()}"
    ref_args = _crosscheck_args(export_dir, out, ref_label, args.seed, sample)
    _, seconds, error = run_one(ref_label, [sys.executable, *ref_args], out)
    timings["reference"] = seconds
    if error:
        log(f"reference run failed: {error}")
        print(f"crosscheck: reference run on {ref_label} failed; FAIL")
        return 1
    log(f"reference {ref_label}: {seconds:.1f} s")

    commands = {
        name: target_command(
            name, root, sysroot, _crosscheck_args(export_dir, out, name, args.seed, sample)
        )
        for name in runnable
    }
    run_timings, run_failed = run_targets(runnable, commands, out, args.jobs)
    timings.update(run_timings)
    failed.update(run_failed)
    reports = compare_targets(out, ref_label, [t for t in runnable if t not in failed])
    summary = summary_line(reports, failed, skipped)
    write_json(
        out / "report.json",
        {
            "export_dir": str(export_dir),
            "passed": summary.endswith(("PASS", "SKIP")),
            "summary": summary,
            "failed_runs": failed,
            "skipped": skipped,
            "seconds": {k: round(v, 2) for k, v in timings.items()},
            "reports": [r.to_dict() for r in reports],
        },
    )
    total = time.perf_counter() - t_start
    log(
        "times: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f"; total {total:.1f} s; details in {out / 'report.json'}"
    )
    print(summary, flush=True)
    return 0 if summary.endswith(("PASS", "SKIP")) else 1


if __name__ == "__main__":
    sys.exit(main())
