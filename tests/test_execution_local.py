"""The local execution backend runs what Beam's DataflowRunner really staged.

Each test submits a real pipeline with DataflowRunner to a live server (the launcher is
stopped once the job exists: nothing runs jobs yet), reads the job back with view ALL and
hands its environment to LocalBackend, as a worker will."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from headrace.execution import CANCELLED, DONE, FAILED, Task
from headrace.execution.local import LocalBackend
from tests.conftest import wait_for
from tests.wheels import build_wheel

REGION = "us-central1"
WORDS = ["headrace", "dataflow", "beam", "river", "mill", "sluice", "weir", "flume"]


# ---- helpers -------------------------------------------------------------------------------

def write_input(path: Path, lines: int = 300) -> list[str]:
    """Deterministic text; returns its words."""
    rows = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 5)) for i in range(lines)]
    path.write_text("\n".join(rows) + "\n")
    return " ".join(rows).split()


def submit(server, df, check, project: str, workdir: Path, launcher: list[str], *args: str,
           env: dict | None = None) -> dict:
    """Run `launcher` (a script or -m module) with DataflowRunner against the server; return
    the created job, view ALL. Each job stages into a directory of its own."""
    staging = workdir / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    log = workdir / "launcher.log"
    command = [sys.executable, *launcher, "--runner=DataflowRunner", f"--dataflow_endpoint={server.url}",
               f"--project={project}", f"--region={REGION}", f"--temp_location={staging}", "--no_auth", *args]
    process = subprocess.Popen(command, cwd=workdir, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    jobs = df.projects().locations().jobs()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = jobs.list(projectId=project, location=REGION).execute().get("jobs")
            if found:
                job = jobs.get(projectId=project, location=REGION, jobId=found[0]["id"], view="JOB_VIEW_ALL").execute()
                check(job, "Job")
                return job
            if process.poll() not in (None, 0):
                raise AssertionError(f"launcher failed:\n{log.read_text()}")
            time.sleep(0.2)
        raise AssertionError(f"no job was created:\n{log.read_text()}")
    finally:
        if process.poll() is None:
            process.kill()  # it would wait for the job to finish
        process.wait()


def execute(job: dict, work_dir: Path, env_cache: Path, timeout: float = 120, **task_fields):
    task = Task.from_environment(job["environment"], **task_fields)
    execution = LocalBackend(env_cache).run(task, work_dir)
    progress = execution.wait(timeout)
    assert progress.state in (DONE, FAILED), f"still {progress.state} after {timeout}s"
    return execution, progress


def script(workdir: Path, body: str, name: str = "pipeline.py") -> list[str]:
    path = workdir / name
    path.write_text(textwrap.dedent(body))
    return [str(path)]


def read_output(prefix: Path) -> list[str]:
    return sorted(line for f in prefix.parent.glob(prefix.name + "*") for line in f.read_text().splitlines())


def group_gone(pgid: int) -> bool:
    """No process of the group runs. Zombies are dead: killed SDK workers are orphans that
    init reaps when it gets to it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return False
    return True


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def env_cache(tmp_path):
    return tmp_path / "envs"


# A pipeline whose DoFn lives in the submitting script's __main__ and uses a module global.
MAIN_DOFN = """
    import argparse
    import os
    import time

    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import PipelineOptions

    SUFFIX = "!"


    class Shout(beam.DoFn):
        def __init__(self, fail_on, hang_marker):
            self.fail_on = fail_on
            self.hang_marker = hang_marker
            self.seen = Metrics.counter("shout", "words")
            self.lengths = Metrics.distribution("shout", "word_length")
            self.longest = Metrics.gauge("shout", "last_length")

        def process(self, word):
            if self.hang_marker:
                with open(self.hang_marker, "w") as marker:
                    marker.write(str(os.getpid()))
                while True:
                    time.sleep(1)
            if word == self.fail_on:
                raise ValueError(f"refusing the word {word!r}")
            self.seen.inc()
            self.lengths.update(len(word))
            self.longest.set(len(word))
            yield word.upper() + SUFFIX


    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--input")
        parser.add_argument("--output")
        parser.add_argument("--fail_on", default="")
        parser.add_argument("--hang_marker", default="")
        known, rest = parser.parse_known_args()
        p = beam.Pipeline(options=PipelineOptions(rest))
        (p | "Read" >> beam.io.ReadFromText(known.input)
           | "Split" >> beam.FlatMap(str.split)
           | "Shout" >> beam.ParDo(Shout(known.fail_on, known.hang_marker))
           | "Write" >> beam.io.WriteToText(known.output))
        p.run()  # DataflowRunner returns once the job is created


    if __name__ == "__main__":
        main()
"""


# ---- the bundled example -------------------------------------------------------------------

def test_wordcount_gives_the_same_output_as_direct_runner(server, df, check, project, tmp_path, env_cache):
    from apache_beam.examples import wordcount

    words = write_input(tmp_path / "words.txt")
    wordcount.run([f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'direct' / 'counts'}"])
    expected = read_output(tmp_path / "direct" / "counts")
    assert len(expected) == len(set(words)) > 1

    job = submit(server, df, check, project, tmp_path, ["-m", "apache_beam.examples.wordcount"],
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'headrace' / 'counts'}")
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert isinstance(options["sdk_worker_parallelism"], float)  # the float-for-int the job JSON holds
    execution, progress = execute(job, tmp_path / "work", env_cache)
    assert progress.state == DONE, progress.error
    assert read_output(tmp_path / "headrace" / "counts") == expected
    assert progress.fraction == 1.0
    assert progress.stages and all(s["state"] == "DONE" for s in progress.stages)
    assert any("Split" in s["steps"] for s in progress.stages)
    counts = {(c["producer"], c["output"]): c["count"] for c in execution.metrics()["element_counts"]}
    assert counts[("Split", "None")] == len(words)
    assert group_gone(execution.pgid)


# ---- user code in __main__ -----------------------------------------------------------------

@pytest.mark.parametrize("save_main_session", [False, True])
def test_dofn_from_main_with_metrics(server, df, check, project, tmp_path, env_cache, save_main_session):
    words = write_input(tmp_path / "words.txt")
    args = [f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'shout'}"]
    if save_main_session:
        args.append("--save_main_session")
    job = submit(server, df, check, project, tmp_path, script(tmp_path, MAIN_DOFN), *args)
    execution, progress = execute(job, tmp_path / "work", env_cache)
    assert progress.state == DONE, progress.error
    assert read_output(tmp_path / "out" / "shout") == sorted(w.upper() + "!" for w in words)

    metrics = execution.metrics()
    [counter] = [c for c in metrics["counters"] if c["name"] == "words"]
    assert counter["namespace"] == "shout" and counter["step_name"] == "Shout"
    assert counter["value"] == len(words)
    [dist] = [d for d in metrics["distributions"] if d["name"] == "word_length"]
    lengths = [len(w) for w in words]
    assert (dist["count"], dist["sum"], dist["min"], dist["max"]) == (
        len(lengths), sum(lengths), min(lengths), max(lengths))
    [gauge] = [g for g in metrics["gauges"] if g["name"] == "last_length"]
    assert gauge["value"] in lengths and gauge["timestamp"] > 0


def test_failing_pipeline_reports_the_users_traceback(server, df, check, project, tmp_path, env_cache):
    write_input(tmp_path / "words.txt")
    job = submit(server, df, check, project, tmp_path, script(tmp_path, MAIN_DOFN),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'x'}", "--fail_on=weir")
    execution, progress = execute(job, tmp_path / "work", env_cache)
    assert progress.state == FAILED
    assert "Traceback (most recent call last)" in progress.error
    assert "ValueError: refusing the word 'weir' [while running 'Shout']" in progress.error
    assert "pipeline.py" in progress.error  # the user's own frame
    assert group_gone(execution.pgid)


def test_cancel_stops_the_pipeline_and_its_processes(server, df, check, project, tmp_path, env_cache):
    write_input(tmp_path / "words.txt", lines=5)
    marker = tmp_path / "hanging"
    job = submit(server, df, check, project, tmp_path, script(tmp_path, MAIN_DOFN),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'x'}",
                 f"--hang_marker={marker}")
    execution = LocalBackend(env_cache).run(Task.from_environment(job["environment"]), tmp_path / "work")
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        assert execution.progress().state not in (DONE, FAILED), execution.progress().error
        time.sleep(0.1)
    sdk_worker = int(marker.read_text())  # the SDK worker process running the user's DoFn
    assert execution.progress().state == "RUNNING"

    started = time.monotonic()
    execution.cancel()
    stopped_in = time.monotonic() - started
    assert stopped_in < 5, f"cancel took {stopped_in:.2f}s"  # the requirement, generously
    assert execution.progress().state == CANCELLED
    assert group_gone(execution.pgid)
    assert pid_gone(sdk_worker)


def test_pipeline_dies_with_the_worker_that_started_it(server, df, check, project, tmp_path, env_cache):
    """A worker killed with kill -9 cannot cancel; its executor notices and takes its whole
    process group down, so the work item's next holder does not race a ghost."""
    import json

    write_input(tmp_path / "words.txt", lines=5)
    marker = tmp_path / "hanging"
    job = submit(server, df, check, project, tmp_path, script(tmp_path, MAIN_DOFN),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'x'}",
                 f"--hang_marker={marker}")
    (tmp_path / "environment.json").write_text(json.dumps(job["environment"]))
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, time
        from pathlib import Path
        from headrace.execution import Task
        from headrace.execution.local import LocalBackend
        task = Task.from_environment(json.loads(Path({str(tmp_path / 'environment.json')!r}).read_text()))
        execution = LocalBackend(Path({str(env_cache)!r})).run(task, Path({str(tmp_path / 'work')!r}))
        print(execution.pgid, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(worker.stdout.readline())
        sdk_worker = int(wait_for(lambda: marker.exists() and marker.read_text(), "the DoFn to start", 120))
        worker.kill()
        worker.wait()
        wait_for(lambda: group_gone(pgid) and pid_gone(sdk_worker), "the executor's process group to die", 5)
    finally:
        worker.kill()
        worker.wait()


# ---- failures a person can act on ----------------------------------------------------------

def test_pipelines_that_cannot_run_fail_with_a_reason(server, df, check, project, tmp_path, env_cache):
    write_input(tmp_path / "words.txt", lines=5)
    job = submit(server, df, check, project, tmp_path, script(tmp_path, MAIN_DOFN),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'x'}")
    staged = Path(job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"])
    original = staged.read_bytes()
    unhashed = {k: v for k, v in job["environment"]["sdkPipelineOptions"]["options"].items()
                if k != "pipelineProtoHash"}

    def run(task: Task, name: str):
        progress = LocalBackend(env_cache).run(task, tmp_path / name).wait(60)
        assert progress.state == FAILED
        return progress.error

    # Submitted with another Beam release: its pickled code is not ours to run.
    from apache_beam.portability.api import beam_runner_api_pb2

    other = beam_runner_api_pb2.Pipeline.FromString(original)
    for env in other.components.environments.values():
        env.capabilities[:] = [c.replace(":2.77.0", ":2.60.0") for c in env.capabilities]
        env.payload = env.payload.replace(b":2.77.0", b":2.60.0")
    (tmp_path / "old.pb").write_bytes(other.SerializeToString())
    error = run(Task(str(tmp_path / "old.pb"), unhashed), "old-sdk")
    assert "submitted with Apache Beam 2.60.0" in error and "apache-beam==" in error

    # A pickle library this worker does not have.
    error = run(Task(str(staged), unhashed | {"pickle_library": "dill"}), "dill")
    assert "pickle_library=dill" in error and "not installed" in error

    staged.write_bytes(b"\x08\x96\x01 this is not a pipeline")
    error = run(Task.from_environment(job["environment"]), "overwritten")
    assert "not the one this job was submitted with" in error  # pipelineProtoHash
    error = run(Task(str(staged), unhashed), "corrupt")
    assert "not a valid Beam pipeline" in error

    staged.unlink()
    error = run(Task.from_environment(job["environment"]), "missing")
    assert f"Cannot read the staged pipeline {staged}" in error
    error = run(Task("gs://bucket/staging/pipeline.pb", unhashed), "gcs")
    assert "gs:// staging is not supported" in error


# ---- dependencies --------------------------------------------------------------------------

REQUIREMENT_PIPELINE = """
    import argparse

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions


    def shout(word):
        # Installed on the worker from the job's requirements and extra packages only.
        import tinyextra
        import tinyreq

        return tinyextra.wrap(tinyreq.shout(word))


    if __name__ == "__main__":
        parser = argparse.ArgumentParser()
        parser.add_argument("--input")
        parser.add_argument("--output")
        known, rest = parser.parse_known_args()
        p = beam.Pipeline(options=PipelineOptions(rest))
        p | beam.io.ReadFromText(known.input) | beam.FlatMap(str.split) | beam.Map(shout) | beam.io.WriteToText(known.output)
        p.run()
"""


def test_requirements_and_extra_packages_install_once_per_content(server, df, check, project, tmp_path,
                                                                 env_cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: everything comes from the staged files
    cache = tmp_path / "reqcache"
    build_wheel(cache, "tinyreq", "0.1", "def shout(word):\n    return word[::-1] + '?'\n")
    extra = build_wheel(tmp_path / "dist", "tinyextra", "0.2", "def wrap(text):\n    return '[' + text + ']'\n")
    (tmp_path / "requirements.txt").write_text("tinyreq==0.1\n")
    words = write_input(tmp_path / "words.txt", lines=20)
    with pytest.raises(ImportError):
        import tinyreq  # noqa: F401 - the test's own environment must not have it
    job = submit(server, df, check, project, tmp_path, script(tmp_path, REQUIREMENT_PIPELINE),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'r'}",
                 f"--requirements_file={tmp_path / 'requirements.txt'}", f"--requirements_cache={cache}",
                 f"--extra_package={extra}", env={"PIP_NO_INDEX": "1"})
    staged_names = {p["name"] for pool in job["environment"]["workerPools"] for p in pool.get("packages", [])}
    assert {"requirements.txt", "tinyreq-0.1-py3-none-any.whl", "extra_packages.txt", extra.name} <= staged_names
    expected = sorted(f"[{w[::-1]}?]" for w in words)

    _, first = execute(job, tmp_path / "first", env_cache)
    assert first.state == DONE, first.error
    assert first.environment["installed"] is True
    assert read_output(tmp_path / "out" / "r") == expected

    shutil.rmtree(tmp_path / "out")
    _, second = execute(job, tmp_path / "second", env_cache)
    assert second.state == DONE, second.error
    assert second.environment == {"key": first.environment["key"], "installed": False}
    assert not (tmp_path / "second" / "install.log").exists()
    assert read_output(tmp_path / "out" / "r") == expected


def test_requirement_that_does_not_install_fails_the_run(server, df, check, project, tmp_path, env_cache,
                                                         monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    (tmp_path / "requirements.txt").write_text("headrace-no-such-package==9.9\n")
    write_input(tmp_path / "words.txt", lines=5)
    job = submit(server, df, check, project, tmp_path, script(tmp_path, REQUIREMENT_PIPELINE),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'r'}",
                 f"--requirements_file={tmp_path / 'requirements.txt'}", "--requirements_cache=skip")
    execution, progress = execute(job, tmp_path / "work", env_cache)
    assert progress.state == FAILED
    assert "--requirements_file did not install" in progress.error
    assert "headrace-no-such-package" in progress.error
    assert not any(p.is_dir() for p in env_cache.iterdir())  # no half-built environment is kept


SETUP_PIPELINE = """
    import argparse

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from {module} import Mark

    if __name__ == "__main__":
        parser = argparse.ArgumentParser()
        parser.add_argument("--input")
        parser.add_argument("--output")
        known, rest = parser.parse_known_args()
        p = beam.Pipeline(options=PipelineOptions(rest))
        p | beam.io.ReadFromText(known.input) | beam.FlatMap(str.split) | beam.ParDo(Mark()) | beam.io.WriteToText(known.output)
        p.run()
"""

MARK_MODULE = """
    import apache_beam as beam


    class Mark(beam.DoFn):  # pickled by reference: the worker must import this module
        def process(self, word):
            yield "<" + word + ">"
"""


def test_module_shipped_with_setup_file(server, df, check, project, tmp_path, env_cache):
    # pip builds workflow.tar.gz; without the `wheel` package in the worker's environment it
    # fetches setuptools and wheel from PyPI for an isolated build, as Dataflow's workers do.
    (tmp_path / "marking").mkdir()
    (tmp_path / "marking" / "__init__.py").write_text(textwrap.dedent(MARK_MODULE))
    (tmp_path / "setup.py").write_text("from setuptools import setup\n"
                                       "setup(name='marking', version='1.0', packages=['marking'])\n")
    words = write_input(tmp_path / "words.txt", lines=10)
    job = submit(server, df, check, project, tmp_path, script(tmp_path, SETUP_PIPELINE.format(module="marking")),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'm'}",
                 f"--setup_file={tmp_path / 'setup.py'}")
    assert "workflow.tar.gz" in {p["name"] for p in job["environment"]["workerPools"][0]["packages"]}
    # Out of the submitter's sight, as on a worker machine: only the staged package has it.
    (tmp_path / "marking" / "__init__.py").unlink()
    _, progress = execute(job, tmp_path / "work", env_cache)
    assert progress.state == DONE, progress.error
    assert progress.environment["installed"] is True
    assert read_output(tmp_path / "out" / "m") == sorted(f"<{w}>" for w in words)


def test_module_next_to_the_script(server, df, check, project, tmp_path, env_cache):
    (tmp_path / "marker_mod.py").write_text(textwrap.dedent(MARK_MODULE))
    words = write_input(tmp_path / "words.txt", lines=10)
    expected = sorted(f"<{w}>" for w in words)
    job = submit(server, df, check, project, tmp_path, script(tmp_path, SETUP_PIPELINE.format(module="marker_mod")),
                 f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'out' / 'm'}",
                 f"--files_to_stage={tmp_path / 'marker_mod.py'}")
    task = Task.from_environment(job["environment"])
    assert "marker_mod.py" in {p["name"] for p in task.packages}

    # Staged with --files_to_stage: imported from the staged files, as on Dataflow.
    execution = LocalBackend(env_cache).run(task, tmp_path / "staged")
    assert execution.wait(120).state == DONE, execution.progress().error
    assert read_output(tmp_path / "out" / "m") == expected

    # Not staged: the worker cannot import it, and says how to ship it.
    bare = Task(task.pipeline_url, task.options, tuple(p for p in task.packages if p["name"] != "marker_mod.py"))
    progress = LocalBackend(env_cache).run(bare, tmp_path / "bare").wait(120)
    assert progress.state == FAILED
    assert "No module named 'marker_mod'" in progress.error and "--setup_file" in progress.error

    # A worker sharing the submitter's disk is given the script's directory.
    shutil.rmtree(tmp_path / "out")
    shared = Task(bare.pipeline_url, bare.options, bare.packages, python_path=(str(tmp_path),))
    progress = LocalBackend(env_cache).run(shared, tmp_path / "shared").wait(120)
    assert progress.state == DONE, progress.error
    assert read_output(tmp_path / "out" / "m") == expected
