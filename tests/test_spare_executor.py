"""Workers start the next run's executor ahead of time, while idle (`headrace.execution.child
--spare`, Beam already imported), and hand it the next job they lease; a stopping worker takes
its spare with it."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.conftest import start_server_with_workers
from tests.test_pipelines import beam_args, gone, pipeline_processes, read_output, wait_until


def idle_spares(server) -> list[psutil.Process]:
    """Spare executors not yet given a job: a given one works in its job's work dir."""
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "--spare" in process.cmdline() and "/workers/work/" not in process.cwd():
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def hold(marker: Path, release: Path):
    """For beam.Map: the first element touches `marker`, then waits for `release` to exist."""
    marker_path, release_path = str(marker), str(release)

    def held(word):
        import os
        import time

        if not os.path.exists(marker_path):
            open(marker_path, "w").close()
            while not os.path.exists(release_path):
                time.sleep(0.05)
        return word

    return held


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    srv = start_server_with_workers(tmp_path_factory.mktemp("spare"), workers=1)
    yield srv
    srv.stop()


def test_a_worker_runs_its_next_job_in_the_executor_it_started_ahead(pool, project, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    wait_until(lambda: len(idle_spares(pool)) == 1, 120, "the worker's spare executor")
    [spare] = idle_spares(pool)
    marker, release = tmp_path / "running", tmp_path / "release"
    p = beam.Pipeline(options=PipelineOptions(beam_args(pool, project, tmp_path)))
    p | beam.Create(["river", "mill"]) | beam.Map(hold(marker, release)) | beam.io.WriteToText(
        str(tmp_path / "out" / "words"))
    result = p.run()
    wait_until(marker.exists, 300, "the pipeline to run user code")

    # The spare is this job's executor now: in its work dir, leading its process group.
    assert result.job_id() in spare.cwd()
    assert spare.pid in [process.pid for process in pipeline_processes(pool.process.pid, result.job_id())]
    work_dir = Path(spare.cwd())
    assert json.loads((work_dir / "status.json").read_text())["state"] == "RUNNING"
    assert str(work_dir / "executor.log") in [f.path for f in spare.open_files()]  # its output is the job's log
    # No new spare while a pipeline runs: its imports would take the pipeline's CPU.
    assert idle_spares(pool) == []

    release.touch()
    assert result.wait_until_finish() == "DONE"
    assert read_output(tmp_path / "out" / "words") == ["mill", "river"]
    # Idle again, the worker has the next one ready.
    wait_until(lambda: [s.pid for s in idle_spares(pool)] not in ([], [spare.pid]), 60, "a new spare executor")


def test_a_stopping_worker_takes_its_spare_with_it(tmp_path):
    server = start_server_with_workers(tmp_path / "server", workers=1)
    try:
        wait_until(lambda: len(idle_spares(server)) == 1, 120, "the worker's spare executor")
        [spare] = idle_spares(server)
    finally:
        server.stop()
    wait_until(lambda: gone(spare), 15, "the spare executor to exit")
