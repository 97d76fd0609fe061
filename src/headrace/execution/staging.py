"""Bring a job's staged files into its work dir, the way Dataflow's workers download them
from the staging location before starting the SDK."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from headrace.execution import CannotRun

# Beam's SDK harness puts <semi-persistent dir>/staged on sys.path and loads the main
# session from there (sdk_worker_main); the work dir is that semi-persistent dir.
STAGED = "staged"


class StagingError(CannotRun):
    """A staged file cannot be used; the message says which and why."""


def local_path(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme:
        return Path(location)
    raise StagingError(f"{location}: only local paths and file:// URLs can be read by this worker "
                       f"({parsed.scheme}:// staging is not supported yet); stage to a local --temp_location.")


def read_pipeline(url: str, expected_sha256: str | None) -> bytes:
    if not url:
        raise StagingError("The job has no pipelineUrl in environment.sdkPipelineOptions: it was not "
                           "submitted by Beam's DataflowRunner with portable job submission, so there is "
                           "no staged pipeline to run.")
    path = local_path(url)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StagingError(f"Cannot read the staged pipeline {url}: {exc.strerror or exc}. The staging "
                           "location must be readable by the worker.") from None
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise StagingError(f"The staged pipeline {url} is not the one this job was submitted with "
                           "(its sha256 differs from pipelineProtoHash): a later submission to the same "
                           "local staging location has overwritten it. Give each job its own "
                           "--temp_location (or --staging_location) and submit again.")
    return data


def fetch_packages(packages: list[dict], work_dir: Path) -> Path:
    """Copy the staged packages to <work_dir>/staged under their staged names."""
    staged = work_dir / STAGED
    staged.mkdir(parents=True, exist_ok=True)
    for package in packages:
        name, location = package.get("name", ""), package.get("location", "")
        if not name or "/" in name or name in (".", ".."):
            raise StagingError(f"Staged package {package!r} has no usable name.")
        source = local_path(location)
        try:
            shutil.copyfile(source, staged / name)
        except OSError as exc:
            raise StagingError(f"Cannot read staged package {name} at {location}: "
                               f"{exc.strerror or exc}.") from None
    return staged
