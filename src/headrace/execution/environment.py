"""A job's Python environment: its staged requirements, extra packages and setup.py package
installed into a virtualenv of its own, layered over the worker's (so Beam and everything
else comes from there), and cached by content hash so the next job with the same
dependencies starts at once.

Install order and pip steps follow Beam's Python SDK container boot sequence: requirements
from the staged requirements cache alone, then again with PyPI and dependencies; then the
extra packages in their staged order; then the setup.py package (workflow.tar.gz)."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from headrace.execution import CannotRun

REQUIREMENTS = "requirements.txt"
EXTRA_PACKAGES = "extra_packages.txt"
WORKFLOW = "workflow.tar.gz"
ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz")
READY = ".headrace-ready"
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "--no-input")


class InstallError(CannotRun):
    """The job's dependencies do not install; the message has pip's own words."""


@dataclass(frozen=True)
class Environment:
    key: str
    python: Path
    installed: bool  # False when it came from the cache


def needed(staged: Path) -> bool:
    return any((staged / name).exists() for name in (REQUIREMENTS, EXTRA_PACKAGES, WORKFLOW))


def _archive_digest(path: Path) -> bytes:
    """Hash of an archive's members, not its bytes: a setup.py or wheel rebuilt from the same
    sources differs only in timestamps and must hit the cache."""
    digest = hashlib.sha256()
    try:
        if path.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as archive:
                for member in sorted(archive.namelist()):
                    digest.update(member.encode() + b"\0" + hashlib.sha256(archive.read(member)).digest())
        else:
            with tarfile.open(path) as archive:
                for member in sorted(archive.getmembers(), key=lambda m: m.name):
                    data = archive.extractfile(member).read() if member.isfile() else b""
                    digest.update(member.name.encode() + b"\0" + hashlib.sha256(data).digest())
    except (zipfile.BadZipFile, tarfile.TarError, OSError):
        digest.update(path.read_bytes())  # not a readable archive: pip will say so
    return digest.digest()


def cache_key(staged: Path) -> str:
    """Everything pip would install from, plus the interpreter and Beam it installs over."""
    digest = hashlib.sha256(f"{sys.version}\0{version('apache-beam')}\0{sys.prefix}".encode())
    for path in sorted(staged.iterdir()):
        if path.name in (REQUIREMENTS, EXTRA_PACKAGES):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        elif path.name.endswith(ARCHIVES):
            digest.update(path.name.encode() + b"\0" + _archive_digest(path))
    return digest.hexdigest()[:24]


def _create(root: Path) -> Path:
    """A virtualenv whose site-packages pulls in the worker's own, after its own packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   capture_output=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    if site.ENABLE_USER_SITE:
        ours.append(site.getusersitepackages())
    ours = [p for p in ours if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(ours))
    (Path(purelib) / "_headrace_worker_site.pth").write_text(lines)
    return python


def _pip(python: Path, args: list[str], log) -> subprocess.CompletedProcess:
    command = [str(python), *PIP, *args]
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(done.stdout)
    log.flush()
    return done


def _install(python: Path, staged: Path, log) -> None:
    links = ["--find-links", str(staged)]
    if (staged / REQUIREMENTS).exists():
        requirements = ["-r", str(staged / REQUIREMENTS)]
        # First from the staged requirements cache alone, then with PyPI and dependencies:
        # a no-op when the cache had everything.
        if _pip(python, [*requirements, "--no-index", "--no-deps", *links], log).returncode:
            log.write("Some packages could not be installed solely from the requirements cache. "
                      "Installing packages from PyPI.\n")
        _check(_pip(python, [*requirements, *links], log), "--requirements_file")
    if (staged / EXTRA_PACKAGES).exists():
        for name in (staged / EXTRA_PACKAGES).read_text().split():
            # The user's own build wins over an installed one, without reinstalling its dependencies.
            package = str(staged / name)
            _check(_pip(python, ["--upgrade", "--force-reinstall", "--no-deps", package], log),
                   f"--extra_package {name}")
            _check(_pip(python, [package, *links], log), f"--extra_package {name}")
    if (staged / WORKFLOW).exists():
        package = str(staged / WORKFLOW)
        # With the worker's own build tools first, which needs no network.
        if _pip(python, ["--no-build-isolation", package, *links], log).returncode:
            _check(_pip(python, [package, *links], log), "--setup_file")


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode:
        raise InstallError(f"The job's {what} did not install:\n{_tail(done.stdout)}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure(staged: Path, cache: Path, log_path: Path) -> Environment:
    """The environment for these staged files, built unless a previous job built it. Workers
    sharing `cache` build each environment once: the build holds a file lock."""
    key = cache_key(staged)
    root = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / READY).exists():
            return Environment(key, root / "bin" / "python", installed=False)
        shutil.rmtree(root, ignore_errors=True)  # a build that died half way
        try:
            python = _create(root)
            with open(log_path, "a") as log:
                _install(python, staged, log)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / READY).touch()
        return Environment(key, python, installed=True)
