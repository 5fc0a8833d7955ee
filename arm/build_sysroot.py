#!/usr/bin/env python3
"""Build an aarch64 (Raspberry Pi-class) sysroot that runs edgevae's torch-free runtime under qemu.

    build/arm/sysroot/            Debian arm64 python3.11 + libs, unpacked with `dpkg -x`
      usr/lib/python3/dist-packages/   aarch64 wheels of the base dependencies and their deps,
                                       pinned to the host venv's versions, + edgevae
      proc/cpuinfo                Cortex-A72 (Pi 4) text: aarch64 onnxruntime segfaults on import
                                  under qemu-user when it reads the host's x86 /proc/cpuinfo
      .edgevae/*.json             stamps: each step reruns only when its key changes
    build/arm/views/<cpu>/        the sysroot seen with another /proc/cpuinfo (symlinks), one per
                                  emulated CPU, for `qemu-aarch64-static -L`

Nothing touches the host's package setup: apt runs with a private state dir, lists, cache and
sources list (no dpkg lock, no root needed), the .debs are unpacked, and pip only downloads
wheels and installs them with `--target`. Run it with the project's venv python:

    .venv/bin/python arm/build_sysroot.py [--force]

The wheels are the closure of pyproject's base `dependencies`, which is what the board side
(`python -m edgevae crosscheck run`) imports: the Typer app at start-up (`python -X importtime
-m edgevae --help`: numpy, typer + shellingham + annotated-doc, rich + markdown-it-py + mdurl +
pygments), onnxruntime (+ flatbuffers, packaging, protobuf) for the models and pillow for the
sample PNG. Each is checked after installation against the host's version.

A fresh build downloads ~16 MB of .debs and ~45 MB of wheels; a cached run takes about a second.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCH = "arm64"
SUITE = "bookworm"  # Debian 12 (Raspberry Pi OS 12 is based on it): python3.11
PY_VERSION = "3.11"
DEB_PACKAGES = ["python3.11", "libstdc++6", "libgcc-s1", "zlib1g"]
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
GLIBC = (2, 36)  # bookworm's glibc: any manylinux_2_X wheel with X <= 36 runs
WHEEL_PLATFORMS = [f"manylinux_2_{m}_aarch64" for m in (36, 34, 31, 28, 27, 24, 17)] + [
    "manylinux2014_aarch64"
]
STAMP_DIR = ".edgevae"

# /proc/cpuinfo as the Raspberry Pi kernels print it (one block per core).
CPUINFO = {
    "cortex-a72": {  # Raspberry Pi 4 (BCM2711): ARMv8.0, no dot product
        "features": "fp asimd evtstrm crc32 cpuid",
        "variant": "0x0",
        "part": "0xd08",
        "revision": "3",
        "model": "Raspberry Pi 4 Model B Rev 1.4",
        "hardware": "BCM2835",
    },
    "cortex-a76": {  # Raspberry Pi 5 (BCM2712): ARMv8.2, SDOT/UDOT (asimddp)
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
        "asimdrdm lrcpc dcpop asimddp",
        "variant": "0x4",
        "part": "0xd0b",
        "revision": "1",
        "model": "Raspberry Pi 5 Model B Rev 1.0",
        "hardware": "BCM2835",
    },
}
DEFAULT_CPU = "cortex-a72"


def log(msg: str) -> None:
    print(f"[sysroot] {msg}", flush=True)


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _read_stamp(sysroot: Path, name: str) -> dict:
    try:
        return json.loads((sysroot / STAMP_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(sysroot: Path, name: str, data: dict) -> None:
    path = sysroot / STAMP_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def cpuinfo_text(cpu: str, cores: int = 4) -> str:
    info = CPUINFO[cpu]
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {info['features']}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {info['variant']}\n"
        f"CPU part\t: {info['part']}\nCPU revision\t: {info['revision']}\n"
        for i in range(cores)
    ]
    tail = f"Hardware\t: {info['hardware']}\nModel\t\t: {info['model']}\n"
    return "\n".join(blocks) + "\n" + tail


# --------------------------------------------------------------------------- step 1: .debs


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"[sysroot] failed ({proc.returncode}): {' '.join(cmd[:6])} ...")
    return proc


def apt_options(state: Path) -> list[str]:
    """apt-get options for a private arm64 apt: own lists, cache, status and sources."""
    return [
        "-o",
        f"APT::Architecture={ARCH}",
        "-o",
        f"APT::Architectures={ARCH}",
        "-o",
        f"Dir::Etc::SourceList={state / 'sources.list'}",
        "-o",
        f"Dir::Etc::SourceParts={state / 'empty'}",
        "-o",
        f"Dir::Etc::Preferences={state / 'empty' / 'preferences'}",
        "-o",
        f"Dir::Etc::PreferencesParts={state / 'empty'}",
        "-o",
        f"Dir::State={state / 'state'}",
        "-o",
        f"Dir::State::Lists={state / 'lists'}",
        "-o",
        f"Dir::State::status={state / 'state' / 'status'}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
        "-o",
        f"Dir::Cache::archives={state / 'archives'}",
        "-o",
        "Dir::Cache::pkgcache=",
        "-o",
        "Dir::Cache::srcpkgcache=",
        "-o",
        "Debug::NoLocking=1",
        "-o",
        "APT::Install-Recommends=0",
        "-o",
        "APT::Install-Suggests=0",
        "-o",
        "Acquire::Languages=none",
    ]


def build_debs(root: Path, sysroot: Path, mirror: str, security_mirror: str) -> bool:
    key = _key([ARCH, SUITE, DEB_PACKAGES, mirror, security_mirror])
    if _read_stamp(sysroot, "debs").get("key") == key and (sysroot / "usr/bin/python3.11").exists():
        log(f"debs: cached (key {key})")
        return False
    t0 = time.perf_counter()
    state = root / "apt"
    shutil.rmtree(state, ignore_errors=True)
    for sub in ("state", "lists/partial", "cache", "archives/partial", "empty"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "state" / "status").write_text("")
    opts = f"arch={ARCH} signed-by={KEYRING}"
    (state / "sources.list").write_text(
        f"deb [{opts}] {mirror} {SUITE} main\n"
        f"deb [{opts}] {mirror} {SUITE}-updates main\n"
        f"deb [{opts}] {security_mirror} {SUITE}-security main\n"
    )
    apt = ["apt-get", "-q", "-y", *apt_options(state)]
    for attempt in range(3):
        proc = subprocess.run([*apt, "update"], text=True, capture_output=True)
        if proc.returncode == 0 and "Err:" not in proc.stdout:
            break
        log(f"apt-get update failed (attempt {attempt + 1}): {proc.stdout[-500:]}{proc.stderr}")
        time.sleep(5 * (attempt + 1))
    else:
        raise SystemExit("[sysroot] apt-get update for arm64 failed")
    _run([*apt, "install", "--download-only", *DEB_PACKAGES])
    debs = sorted((state / "archives").glob("*.deb"))
    if not debs:
        raise SystemExit("[sysroot] apt downloaded no .debs")
    tmp = sysroot.with_name(sysroot.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
    if not (tmp / "usr/bin/python3.11").exists():
        raise SystemExit("[sysroot] no usr/bin/python3.11 in the unpacked .debs")
    shutil.rmtree(sysroot, ignore_errors=True)
    tmp.rename(sysroot)
    names = [d.name for d in debs]
    _write_stamp(sysroot, "debs", {"key": key, "suite": SUITE, "debs": names})
    shutil.rmtree(state / "archives", ignore_errors=True)  # the unpacked tree is the cache
    log(f"debs: {len(debs)} packages unpacked in {time.perf_counter() - t0:.1f} s")
    return True


# --------------------------------------------------------------------------- step 2: wheels


def _base_requirements() -> list[str]:
    """The project's base (runtime) dependencies, without any extra."""
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # 3.10: the installed project's metadata, extras dropped
        return [r for r in (md.requires("edgevae") or []) if "extra ==" not in r]
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def pinned_closure(requirements: list[str]) -> tuple[list[str], list[str]]:
    """(name==version pins from this interpreter's environment, names not installed here).

    Walks the installed distributions' Requires-Dist (markers evaluated for linux/aarch64,
    extras skipped) so the device gets exactly the versions the host tests with.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {
        "platform_machine": "aarch64",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "python_version": PY_VERSION,
        "implementation_name": "cpython",
        "extra": "",
    }
    pins: dict[str, str] = {}
    missing: list[str] = []
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name in pins or name in missing:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        pins[name] = dist.version
        todo.extend(Requirement(r) for r in (dist.requires or []))
    return sorted(f"{n}=={v}" for n, v in pins.items()), sorted(missing)


def _pip_platform_args() -> list[str]:
    args = [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        PY_VERSION,
        "--abi",
        "cp" + PY_VERSION.replace(".", ""),
    ]
    for plat in WHEEL_PLATFORMS:
        args += ["--platform", plat]
    return args


def site_dir(sysroot: Path) -> Path:
    return sysroot / "usr/lib/python3/dist-packages"


def _check_installed(target: Path, pins: list[str]) -> None:
    """Every pinned distribution is in `target` at the host's version (pip resolved nothing
    else in its place)."""
    from packaging.utils import canonicalize_name

    found = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in md.distributions(path=[str(target)])
    }
    wrong = []
    for pin in pins:
        name, _, version = pin.partition("==")
        if found.get(canonicalize_name(name)) != version:
            wrong.append(f"{name} {found.get(canonicalize_name(name)) or 'missing'} != {version}")
    if wrong:
        raise SystemExit(f"[sysroot] aarch64 wheels differ from the host venv: {', '.join(wrong)}")


def build_wheels(root: Path, sysroot: Path, debs_rebuilt: bool) -> bool:
    requirements = _base_requirements()
    pins, missing = pinned_closure(requirements)
    key = _key([requirements, pins, WHEEL_PLATFORMS, PY_VERSION])
    stamp = _read_stamp(sysroot, "wheels")
    if not debs_rebuilt and stamp.get("key") == key:
        log(f"wheels: cached (key {key}, {len(pins)} distributions)")
        return False
    t0 = time.perf_counter()
    wheels = root / "wheels" / key
    wheels.mkdir(parents=True, exist_ok=True)
    constraints = wheels / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    if missing:
        log(f"wheels: not installed on the host, resolved by pip: {', '.join(missing)}")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        [
            *pip,
            "download",
            "-q",
            *_pip_platform_args(),
            "-d",
            str(wheels),
            "-c",
            str(constraints),
            *requirements,
        ]
    )
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    target = site_dir(sysroot)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _run(
        [
            *pip,
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            *_pip_platform_args(),
            "--target",
            str(tmp),
            *files,
        ]
    )
    shutil.rmtree(tmp / "bin", ignore_errors=True)  # console scripts with a host shebang
    _check_installed(tmp, pins)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    _write_stamp(
        sysroot, "wheels", {"key": key, "pins": pins, "wheels": [Path(f).name for f in files]}
    )
    _write_stamp(sysroot, "project", {})  # the project copy went with the old dir
    log(f"wheels: {len(files)} aarch64 wheels installed in {time.perf_counter() - t0:.1f} s")
    return True


# --------------------------------------------------------------------------- step 3: project


def _project_files() -> list[Path]:
    pkg = REPO / "edgevae"
    return sorted(
        p
        for p in pkg.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def sync_project(sysroot: Path) -> bool:
    """Copy the edgevae package (no deps, so no torch) into the sysroot's dist-packages."""
    files = _project_files()
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    key = h.hexdigest()[:16]
    target = site_dir(sysroot) / "edgevae"
    if _read_stamp(sysroot, "project").get("key") == key and target.is_dir():
        log(f"project: cached (key {key})")
        return False
    tmp = target.with_name("edgevae.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in files:
        dest = tmp / p.relative_to(REPO / "edgevae")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    version = re.search(r'__version__\s*=\s*"([^"]+)"', (REPO / "edgevae/__init__.py").read_text())
    version = version.group(1) if version else "0"
    for old in site_dir(sysroot).glob("edgevae-*.dist-info"):
        shutil.rmtree(old)
    info = site_dir(sysroot) / f"edgevae-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: edgevae\nVersion: {version}\n")
    (info / "INSTALLER").write_text("arm/build_sysroot.py\n")
    _write_stamp(sysroot, "project", {"key": key, "files": len(files)})
    log(f"project: edgevae {version} copied ({len(files)} files)")
    return True


# --------------------------------------------------------------------------- step 4: cpuinfo


def write_views(root: Path, sysroot: Path) -> dict[str, Path]:
    """SYSROOT/proc/cpuinfo (Cortex-A72) and views/<cpu>/ = sysroot + that CPU's cpuinfo."""
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc/cpuinfo").write_text(cpuinfo_text(DEFAULT_CPU))
    views = {}
    for cpu in CPUINFO:
        view = root / "views" / cpu
        view.mkdir(parents=True, exist_ok=True)
        for entry in sysroot.iterdir():
            if entry.name in ("proc", STAMP_DIR):
                continue
            link = view / entry.name
            rel = os.path.relpath(entry, view)
            if link.is_symlink() and os.readlink(link) == rel:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(rel)
        (view / "proc").mkdir(exist_ok=True)
        (view / "proc/cpuinfo").write_text(cpuinfo_text(cpu))
        views[cpu] = view
    return views


@contextlib.contextmanager
def _lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build(
    root: Path,
    *,
    force: bool = False,
    mirror: str = "http://deb.debian.org/debian",
    security_mirror: str = "http://deb.debian.org/debian-security",
) -> Path:
    """Build or refresh build/arm/sysroot; returns its path."""
    sysroot = root / "sysroot"
    t0 = time.perf_counter()
    with _lock(root):
        if force:
            shutil.rmtree(sysroot, ignore_errors=True)
        debs = build_debs(root, sysroot, mirror, security_mirror)
        wheels = build_wheels(root, sysroot, debs)
        sync_project(sysroot)
        write_views(root, sysroot)
    state = "rebuilt" if debs or wheels else "cached"
    log(f"ready: {sysroot} ({state}) in {time.perf_counter() - t0:.1f} s")
    return sysroot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root",
        type=Path,
        default=REPO / "build" / "arm",
        help="build dir (sysroot, views, wheel and apt caches)",
    )
    ap.add_argument("--force", action="store_true", help="rebuild from scratch")
    ap.add_argument(
        "--mirror", default=os.environ.get("ARM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    )
    ap.add_argument(
        "--security-mirror",
        default=os.environ.get(
            "ARM_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
        ),
    )
    args = ap.parse_args(argv)
    if not Path(KEYRING).exists():
        print(
            f"[sysroot] missing {KEYRING} (apt-get install debian-archive-keyring)", file=sys.stderr
        )
        return 2
    build(
        args.root.resolve(),
        force=args.force,
        mirror=args.mirror,
        security_mirror=args.security_mirror,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
