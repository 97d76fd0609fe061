"""The executor: `python -m headrace.execution.child WORK_DIR` runs the task in
WORK_DIR/task.json, leader of its own process group (the SDK workers and pip join it), and
keeps WORK_DIR/status.json current for the worker that started it.

Phases: stage the files, install the job's environment if it has requirements (then exec
into that environment's Python, same process), run the pipeline.

`python -m headrace.execution.child --spare PARENT_PID` is a spare executor, started before
there is work: it imports Beam (the ~2 s a cold executor spends before its pipeline starts),
then waits for a work dir on stdin and runs that as above."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from headrace.execution import DONE, FAILED, RUNNING, STARTING, CannotRun, staging

IN_ENV = "--in-env"
SPARE = "--spare"
MISSING_MODULE = re.compile(r"No module named '([^']+)'")


class Status:
    """status.json, replaced atomically so a reader never sees half of it."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}
        self._lock = threading.Lock()

    def write(self, **fields) -> None:
        with self._lock:
            self.data.update(fields)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)


def _watch_parent(parent_pid: int) -> None:
    """Take the whole process group down if the worker that started us dies (kill -9
    included): its work item goes to another worker, which must not race with us."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _await_work(parent_pid: int) -> Path | None:
    """As a spare: warm up, then wait for the work dir (None: the worker closed our stdin)."""
    _watch_parent(parent_pid)
    from headrace.execution import monitoring, pipeline  # noqa: F401 - what running a pipeline imports

    line = sys.stdin.readline().strip()
    if not line:
        return None
    work_dir = Path(line)
    os.chdir(work_dir)
    # From here on, as if started for this work dir: its log gets our output and our children's.
    log = os.open(work_dir / "executor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return work_dir


def _prepare(task: dict, work_dir: Path, status: Status) -> None:
    """Stage files and build the job's environment; exec into it when there is one. Beam is
    not imported here: a bad staging fails in a fraction of a second, and a job with an
    environment imports it once, there."""
    from headrace.execution import environment

    status.write(state=STARTING, phase="staging files")
    data = staging.read_pipeline(task["pipeline_url"], task["options"].get("pipelineProtoHash"))
    (work_dir / "pipeline.pb").write_bytes(data)
    staged = staging.fetch_packages(task["packages"], work_dir)
    if not environment.needed(staged):
        return
    status.write(phase="installing the job's dependencies")
    env = environment.ensure(staged, Path(task["env_cache"]), work_dir / "install.log")
    status.write(environment={"key": env.key, "installed": env.installed})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(env.python, [str(env.python), "-m", "headrace.execution.child", str(work_dir), IN_ENV])


def _run(task: dict, work_dir: Path, status: Status) -> None:
    from apache_beam.internal import pickler

    from headrace.execution import pipeline
    from headrace.execution.monitoring import Tracker

    options = pipeline.fix_options(task["options"])
    try:
        pickler.set_library(options.get("pickle_library", "default"))
    except ImportError as exc:
        raise CannotRun(f"Cannot load the pickle library the pipeline was submitted with: {exc}") from None
    # Where the SDK workers look for the main session and staged files, and the import
    # roots the task adds; the executor itself needs them for custom coders.
    os.environ["SEMI_PERSISTENT_DIRECTORY"] = str(work_dir)
    roots = [str(work_dir / staging.STAGED), *task["python_path"]]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*task["python_path"], os.environ.get("PYTHONPATH")]))
    sys.path.extend(r for r in roots if r not in sys.path)

    proto = pipeline.parse((work_dir / "pipeline.pb").read_bytes())
    tracker = Tracker(proto)

    def changed():
        # As each bundle starts and ends: a batch pipeline has a few per stage and SDK worker.
        status.write(fraction=tracker.fraction(), stages=tracker.stages(), metrics=tracker.metrics())

    status.write(state=RUNNING, phase="running the pipeline")
    try:
        pipeline.run(proto, options, task["sdk_workers"], tracker, changed)
    finally:
        changed()


def _explain(error: str) -> str:
    """The pipeline's own traceback, with a hint for the commonest cause of failure."""
    missing = MISSING_MODULE.search(error)
    if missing:
        error += (f"\n\nModule {missing.group(1)!r} is not importable on the worker. As on Dataflow, "
                  "ship your own modules with --setup_file, --extra_package or --files_to_stage, and "
                  "other dependencies with --requirements_file.")
    return error


def main(argv: list[str]) -> int:
    spare = argv[1] == SPARE
    work_dir = _await_work(int(argv[2])) if spare else Path(argv[1])
    if work_dir is None:
        return 0
    task = json.loads((work_dir / "task.json").read_text())
    status = Status(work_dir / "status.json")
    if not spare:  # a spare watches its worker from the start
        _watch_parent(task["parent_pid"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if IN_ENV not in argv:
            _prepare(task, work_dir, status)
        _run(task, work_dir, status)
    except CannotRun as exc:
        status.write(state=FAILED, phase="", error=str(exc))
        return 1
    except BaseException as exc:  # noqa: BLE001 - whatever the pipeline raised is the job's failure
        status.write(state=FAILED, phase="", error=_explain(_pipeline_error(exc)))
        return 1
    status.write(state=DONE, phase="")
    return 0


def _pipeline_error(exc: BaseException) -> str:
    """When user code failed in an SDK worker, Beam re-raises its formatted traceback as the
    message of a RuntimeError; that traceback, not ours, is what the user needs."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.lstrip().startswith("Traceback"):
        return text
    return "".join(traceback.format_exception(exc))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
