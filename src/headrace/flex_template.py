"""Flex templates without containers: the template's source, packed by content hash.

On Dataflow a flex template names a container image whose launcher runs the template's
Python main. Headrace has no container engine, so `headrace flex-template build` packs the
source directories instead (with the launcher's environment variables, which a Dockerfile
would bake into the image) and writes a spec whose `image` names that package.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from headrace.errors import precondition
from headrace.storage import Storage

SOURCES_DIR = "headrace-sources"  # beside the spec: the source package lives where the spec does
MANIFEST = "headrace-flex-template.json"  # inside the package: {"env": {...}}
PY_FILE = "FLEX_TEMPLATE_PYTHON_PY_FILE"
REQUIREMENTS = "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE"
SETUP = "FLEX_TEMPLATE_PYTHON_SETUP_FILE"


def pack(py_paths: list[Path], env: dict[str, str]) -> bytes:
    """A reproducible tar.gz of the sources (sorted, no timestamps or owners) plus the manifest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        for root in py_paths:
            root = Path(root)
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in files:
                if "__pycache__" in path.parts:
                    continue
                add(path.name if root.is_file() else path.relative_to(root).as_posix(), path.read_bytes())
        add(MANIFEST, json.dumps({"env": env}, sort_keys=True).encode())
    return buffer.getvalue()


def build(storage: Storage, spec_path: str, py_paths: list[Path], env: dict[str, str],
          metadata: dict | None, sdk_language: str) -> dict:
    """Store the source package and write the spec; returns the spec."""
    if sdk_language != "PYTHON":
        raise precondition(f"Headrace builds flex templates from Python sources only, not {sdk_language}.")
    if PY_FILE not in env:
        raise precondition(f"Set --env {PY_FILE}=<main file>: the launcher runs that file.")
    missing = [str(p) for p in py_paths if not Path(p).exists()]
    if missing:
        raise precondition(f"--py-path {', '.join(missing)} does not exist.")
    package = pack(py_paths, env)
    folder = spec_path.rsplit("/", 1)[0] if "/" in spec_path else "."
    image = f"{folder}/{SOURCES_DIR}/{hashlib.sha256(package).hexdigest()}.tar.gz"
    storage.write_bytes(image, package)
    spec = {"image": image, "sdkInfo": {"language": sdk_language}, "defaultEnvironment": {}}
    if metadata:
        spec["metadata"] = metadata
    storage.write_bytes(spec_path, json.dumps(spec, indent=2).encode())
    return spec


def is_source_package(image: str) -> bool:
    return image.endswith(".tar.gz") and ("://" in image or image.startswith("/"))
