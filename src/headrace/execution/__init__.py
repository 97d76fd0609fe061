"""Execution backends: what runs a staged Beam portable pipeline once a worker holds its work.

A worker turns a leased work item into a `Task`, hands it to a `Backend` and watches the
`Execution` it gets back: `progress()` and `metrics()` for its status reports, `cancel()` when
the job is cancelled, `wait()` for the outcome. `LocalBackend` (execution/local.py) runs the
pipeline on this machine; portable job servers (Flink, Spark, Prism) come later behind the
same two protocols. See docs/execution.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Execution states. STARTING covers staging files and installing the job's environment.
STARTING, RUNNING, DONE, FAILED, CANCELLED = "STARTING", "RUNNING", "DONE", "FAILED", "CANCELLED"
TERMINAL = (DONE, FAILED, CANCELLED)


class CannotRun(Exception):
    """The pipeline cannot run here, for a reason its message gives a person to act on."""


@dataclass(frozen=True)
class Task:
    """What a work item carries: the staged pipeline, its options and staged packages."""

    pipeline_url: str  # the staged pipeline.pb: a local path or file:// URL
    options: dict  # the job's environment.sdkPipelineOptions["options"]
    packages: tuple[dict, ...] = ()  # [{"name": staged name, "location": path or URL}]
    # Directories put on the pipeline processes' sys.path (besides the staged files, which
    # Beam's SDK harness adds): for code next to the submitting script when the worker
    # shares the submitter's disk.
    python_path: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, environment: dict, python_path: tuple[str, ...] = ()) -> "Task":
        """From a job's `environment` (Job view ALL), as Beam's DataflowRunner fills it."""
        options = dict((environment.get("sdkPipelineOptions") or {}).get("options") or {})
        packages = tuple(p for pool in environment.get("workerPools") or []
                         for p in pool.get("packages") or [])
        return cls(options.get("pipelineUrl", ""), options, packages, python_path)


@dataclass
class Progress:
    state: str  # one of the states above
    phase: str = ""  # what it is doing now, in words: "staging files", "installing requirements", ...
    fraction: float = 0.0  # of the pipeline's fused stages that have finished
    # One entry per fused stage: {"id": "F0", "name", "state": PENDING|RUNNING|DONE, "steps": [...]}
    stages: list[dict] = field(default_factory=list)
    error: str = ""  # for FAILED: the Python traceback, user code's first
    environment: dict = field(default_factory=dict)  # {"key", "installed": bool} when the job has requirements


class Execution(Protocol):
    """One run of one pipeline."""

    def progress(self) -> Progress: ...

    def metrics(self) -> dict:
        """{"counters", "distributions", "gauges", "string_sets", "element_counts"}: see
        docs/execution.md for each entry's fields."""

    def cancel(self) -> None:
        """Stop the pipeline and everything it started; returns once they are gone."""

    def wait(self, timeout: float | None = None) -> Progress:
        """Block until the run ends (or `timeout` passes); the latest progress."""


class Backend(Protocol):
    def run(self, task: Task, work_dir: Path) -> Execution:
        """Start `task` in `work_dir` (a fresh directory of its own) and return at once."""
