"""The local backend: each pipeline runs in an executor process of its own (child.py), the
leader of a new process group that holds everything the pipeline starts, so cancelling
kills exactly that group. The executor reports through status.json in the work dir.

`prepare()` starts the next run's executor ahead of time, while the worker is idle, so that
a run does not wait the ~2 s a fresh Python spends importing Beam."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headrace.execution import CANCELLED, FAILED, STARTING, TERMINAL, Progress, Task
from headrace.execution.child import SPARE

CHILD = "headrace.execution.child"


@dataclass
class LocalBackend:
    env_cache: Path  # where job environments are built and kept, shared by the workers of a machine
    # SDK worker processes per pipeline; several use several cores (Beam's FnApiRunner splits
    # each bundle between them).
    sdk_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    _spare: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def run(self, task: Task, work_dir: Path) -> "LocalExecution":
        work_dir = Path(work_dir).resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        spec = asdict(task) | {"env_cache": str(Path(self.env_cache).resolve()),
                               "sdk_workers": self.sdk_workers, "parent_pid": os.getpid()}
        (work_dir / "task.json").write_text(json.dumps(spec))
        process = self._take_spare(work_dir)
        if process is None:
            with open(work_dir / "executor.log", "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", CHILD, str(work_dir)],
                                           cwd=work_dir, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        return LocalExecution(work_dir, process)

    def prepare(self) -> None:
        """Have an executor ready for the next run. Best called while idle: its imports would
        take CPU from a running pipeline."""
        if self._spare is None or self._spare.poll() is not None:
            self._spare = subprocess.Popen([sys.executable, "-m", CHILD, SPARE, str(os.getpid())],
                                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)

    def close(self) -> None:
        """Stop the spare executor, if any: it holds no work, so it is simply killed."""
        spare, self._spare = self._spare, None
        if spare is not None:
            _kill_group(spare.pid)
            spare.wait()

    def _take_spare(self, work_dir: Path) -> subprocess.Popen | None:
        spare, self._spare = self._spare, None
        if spare is None or spare.poll() is not None:
            return None
        try:
            spare.stdin.write(f"{work_dir}\n".encode())
            spare.stdin.close()
        except OSError:  # it died just now: start a fresh one instead
            _kill_group(spare.pid)
            spare.wait()
            return None
        return spare


class LocalExecution:
    def __init__(self, work_dir: Path, process: subprocess.Popen):
        self.work_dir = work_dir
        self.process = process
        self.pgid = process.pid  # start_new_session: the executor leads its own group
        self.log_path = work_dir / "executor.log"
        self._cancelled = False
        self._swept = False

    def _status(self) -> dict:
        try:
            return json.loads((self.work_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def progress(self) -> Progress:
        status = self._status()
        progress = Progress(state=status.get("state", STARTING), phase=status.get("phase", ""),
                            fraction=status.get("fraction", 0.0), stages=status.get("stages", []),
                            error=status.get("error", ""), environment=status.get("environment", {}))
        if self.process.poll() is not None:
            self._sweep()
        if self._cancelled:
            progress.state, progress.phase = CANCELLED, ""
        elif progress.state not in TERMINAL and self.process.returncode is not None:
            # It died without saying why: killed (out of memory, say) or crashed in Beam.
            progress.state, progress.phase = FAILED, ""
            progress.error = (f"The pipeline's executor process exited with code {self.process.returncode} "
                              f"before finishing. Last lines of its log:\n{self._log_tail()}")
        return progress

    def metrics(self) -> dict:
        return self._status().get("metrics") or {
            "counters": [], "distributions": [], "gauges": [], "string_sets": [], "element_counts": []}

    def cancel(self) -> None:
        if self.process.poll() is None or _running(self.pgid):
            self._cancelled = self._cancelled or self.progress().state not in TERMINAL
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        deadline = time.monotonic() + 5
        while _running(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _sweep(self) -> None:
        """Once the executor is gone, whatever user code left behind in its group goes too.
        Done at once: the group id stays ours while any member lives."""
        if not self._swept:
            self._swept = True
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> Progress:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.progress()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _running(pgid: int) -> bool:
    """Whether a member of the group still runs. Zombies do not count: killed SDK workers are
    orphans, reaped by init whenever it gets to it (a second or two in some containers)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs (macOS): zombies count, init reaps them promptly there
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, _ppid, group = stat[stat.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False
