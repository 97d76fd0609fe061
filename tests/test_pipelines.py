"""Real pipelines through Beam's DataflowRunner, run by the workers of `headrace serve`.

The server runs its embedded pool (two `headrace worker` processes); Beam submits over REST,
stages into a local temp location and waits as it waits for Dataflow. Outputs and metrics are
compared with Beam's DirectRunner on the same input.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import discovery_client, start_server_with_workers
from tests.wheels import build_wheel

REGION = "us-central1"
WORDS = ["headrace", "dataflow", "beam", "river", "mill", "sluice", "weir", "flume"]
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


# ---- helpers (test_worker.py uses them too) -------------------------------------------------

def write_input(path: Path, lines: int = 200) -> list[str]:
    """Deterministic text; returns its words."""
    rows = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 5)) for i in range(lines)]
    path.write_text("\n".join(rows) + "\n")
    return " ".join(rows).split()


def read_output(prefix: Path) -> list[str]:
    return sorted(line for f in prefix.parent.glob(prefix.name + "*") for line in f.read_text().splitlines())


def beam_args(server, project: str, workdir: Path, *extra: str) -> list[str]:
    """DataflowRunner against `server`; each job stages into a directory of its own."""
    staging = workdir / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    return ["--runner=DataflowRunner", f"--dataflow_endpoint={server.url}", f"--project={project}",
            f"--region={REGION}", f"--temp_location={staging}", "--no_auth", *extra]


def run_script(workdir: Path, body: str, *args: str, env: dict | None = None,
               name: str = "pipeline.py") -> subprocess.CompletedProcess:
    """Run a pipeline script as a user does: `python pipeline.py ...`, to completion."""
    path = workdir / name
    path.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path), *args], cwd=workdir, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def only_job(df, project: str) -> dict:
    jobs = df.projects().locations().jobs().list(projectId=project, location=REGION).execute()["jobs"]
    assert len(jobs) == 1, jobs
    return jobs[0]


def wait_for_state(df, project: str, job_id: str, states=TERMINAL, timeout: float = 300) -> dict:
    jobs = df.projects().locations().jobs()
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get(projectId=project, location=REGION, jobId=job_id).execute()
        if job["currentState"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def messages(df, project: str, job_id: str) -> list[dict]:
    out = df.projects().locations().jobs().messages().list(
        projectId=project, location=REGION, jobId=job_id, minimumImportance="JOB_MESSAGE_DEBUG",
        pageSize=1000).execute()
    return out.get("jobMessages", [])


def pipeline_processes(root_pid: int, job_id: str) -> list[psutil.Process]:
    """The job's executor (its work dir names the job) and everything under it."""
    found = []
    for process in psutil.Process(root_pid).children(recursive=True):
        try:
            # By its work dir: an executor started ahead (`child --spare`) names no job on its command line.
            if "headrace.execution.child" in " ".join(process.cmdline()) and job_id in process.cwd():
                found += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return found


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def slow_once(marker: Path, seconds: float = 600):
    """A function for beam.Map that, the first time it runs anywhere, touches `marker` and
    sleeps: the job is then mid-run for as long as the test needs. Later attempts pass through."""
    path = str(marker)

    def maybe_sleep(word):
        import os
        import time

        if not os.path.exists(path):
            open(path, "w").close()
            time.sleep(seconds)
        return word

    return maybe_sleep

# ---- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    # Two attempts per work item (Dataflow makes four) keep the failing pipelines short, and
    # the workers' pip stays offline: a job's packages come from what it staged.
    srv = start_server_with_workers(tmp_path_factory.mktemp("pool"), workers=2,
                                    env={"HEADRACE_MAX_ATTEMPTS": "2", "PIP_NO_INDEX": "1"})
    yield srv
    srv.stop()


@pytest.fixture
def pool_df(pool):
    return discovery_client(pool.url)


# ---- Beam's examples ----------------------------------------------------------------------

def test_wordcount_gives_the_same_output_as_direct_runner(pool, pool_df, project, tmp_path, caplog, check):
    from apache_beam.examples import wordcount

    words = write_input(tmp_path / "words.txt")
    wordcount.run([f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'direct' / 'counts'}"])
    with caplog.at_level(logging.INFO, logger="apache_beam.runners.dataflow"):
        wordcount.run([f"--input={tmp_path / 'words.txt'}", f"--output={tmp_path / 'headrace' / 'counts'}",
                       *beam_args(pool, project, tmp_path)])

    expected = read_output(tmp_path / "direct" / "counts")
    assert sum(int(line.rsplit(": ", 1)[1]) for line in expected) == len(words)
    assert read_output(tmp_path / "headrace" / "counts") == expected
    job = only_job(pool_df, project)
    check(job, "Job")
    assert job["currentState"] == "JOB_STATE_DONE"
    # What Beam printed while it waited, as it does for Dataflow.
    assert "Workers have started successfully." in caplog.text
    assert "All work items have completed; the job is done." in caplog.text
    assert f"Job {job['id']} is in state JOB_STATE_DONE" in caplog.text


def test_wordcount_with_metrics_through_result_metrics(pool, pool_df, project, tmp_path, check):
    import apache_beam as beam
    from apache_beam.examples.wordcount_with_metrics import WordExtractingDoFn
    from apache_beam.options.pipeline_options import PipelineOptions

    words = write_input(tmp_path / "words.txt")

    def build(output: Path, args: list[str]):
        # wordcount_with_metrics's pipeline, built here so the result is ours to query.
        p = beam.Pipeline(options=PipelineOptions(args))
        (p | "read" >> beam.io.ReadFromText(str(tmp_path / "words.txt"))
           | "split" >> beam.ParDo(WordExtractingDoFn())
           | "pair_with_one" >> beam.Map(lambda w: (w, 1))
           | "group" >> beam.GroupByKey()
           | "count" >> beam.MapTuple(lambda word, ones: (word, sum(ones)))
           | "format" >> beam.MapTuple(lambda word, count: f"{word}: {count}")
           | "write" >> beam.io.WriteToText(str(output)))
        return p

    direct = build(tmp_path / "direct" / "counts", []).run()
    direct.wait_until_finish()
    result = build(tmp_path / "headrace" / "counts", beam_args(pool, project, tmp_path)).run()
    assert result.wait_until_finish() == "DONE"

    def summary(query):
        counters = {(r.key.step, r.key.metric.namespace, r.key.metric.name): (r.committed, r.attempted)
                    for r in query["counters"]}
        dists = {(r.key.step, r.key.metric.name): (r.committed.count, r.committed.sum, r.committed.min,
                                                    r.committed.max, r.attempted.count)
                 for r in query["distributions"]}
        return counters, dists

    counters, dists = summary(result.metrics().query())
    expected_counters, expected_dists = summary(direct.metrics().query())
    assert counters == expected_counters
    assert counters[("split", "apache_beam.examples.wordcount_with_metrics.WordExtractingDoFn", "words")] == (
        len(words), len(words))
    assert dists == expected_dists and dists[("split", "word_len_dist")][0] == len(words)
    # Element counts per PCollection: Dataflow's system metric, named after step and output.
    counts = {r.key.labels["output_user_name"]: r.committed for r in result.metrics().all_metrics()
              if r.key.metric.name == "ElementCount"}
    assert counts["split-out0"] == len(words) and counts["group-out0"] == len(set(words))
    assert read_output(tmp_path / "headrace" / "counts") == read_output(tmp_path / "direct" / "counts")
    raw = pool_df.projects().locations().jobs().getMetrics(projectId=project, location=REGION,
                                                           jobId=result.job_id()).execute()
    check(raw, "JobMetrics")


# ---- failures and control -----------------------------------------------------------------

FAILING = """
    import sys

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions


    def no_mills(word):
        if word == "mill":
            raise ValueError(f"no mills allowed here: {word}")
        return word


    if __name__ == "__main__":
        p = beam.Pipeline(options=PipelineOptions(sys.argv[1:]))
        p | beam.Create(["river", "mill", "weir"]) | beam.Map(no_mills)
        p.run().wait_until_finish()
"""


def test_failing_pipeline_fails_the_job_with_its_traceback(pool, pool_df, project, tmp_path, check):
    done = run_script(tmp_path, FAILING, *beam_args(pool, project, tmp_path))
    assert done.returncode != 0
    # Beam raises with the job's error message as the reason, and prints the job messages.
    assert "Dataflow pipeline failed. State: FAILED" in done.stderr
    assert "ValueError: no mills allowed here: mill" in done.stderr
    job = only_job(pool_df, project)
    assert job["currentState"] == "JOB_STATE_FAILED"
    out = pool_df.projects().locations().jobs().messages().list(
        projectId=project, location=REGION, jobId=job["id"], minimumImportance="JOB_MESSAGE_ERROR").execute()
    check(out, "ListJobMessagesResponse")
    errors = [m["messageText"] for m in out["jobMessages"]]
    tracebacks = [e for e in errors if e.startswith("Traceback") or "Traceback (most recent call last)" in e]
    assert tracebacks and all("ValueError: no mills allowed here: mill" in t for t in tracebacks)
    assert any('in no_mills' in t for t in tracebacks)  # the user's own frame
    assert any(e.startswith("Workflow failed.") for e in errors)


def test_job_without_a_staged_pipeline_fails_with_the_reason(pool, pool_df, project):
    # Created by hand, not by Beam: there is nothing to run, and the job says so.
    job = pool_df.projects().locations().jobs().create(projectId=project, location=REGION,
                                                       body={"name": "no-pipeline"}).execute()
    assert wait_for_state(pool_df, project, job["id"])["currentState"] == "JOB_STATE_FAILED"
    errors = [m["messageText"] for m in messages(pool_df, project, job["id"])
              if m["messageImportance"] == "JOB_MESSAGE_ERROR"]
    assert any("no pipelineUrl" in e for e in errors), errors
    assert any(e.endswith(": failed to download the pipeline's staged files") for e in errors), errors


def test_result_cancel_stops_the_pipeline_and_its_processes(pool, pool_df, project, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    marker = tmp_path / "running"
    p = beam.Pipeline(options=PipelineOptions(beam_args(pool, project, tmp_path)))
    p | beam.Create(["river", "mill"]) | beam.Map(slow_once(marker))
    result = p.run()
    wait_until(marker.exists, 300, "the pipeline to run user code")
    processes = pipeline_processes(pool.process.pid, result.job_id())
    assert len(processes) >= 2  # the executor and its SDK worker(s)

    result.cancel()
    # The bound: CANCELLED within 5 s of the request, with the processes gone.
    job = wait_for_state(pool_df, project, result.job_id(), timeout=5)
    assert job["currentState"] == "JOB_STATE_CANCELLED"
    assert [p.pid for p in processes if not gone(p)] == []
    texts = [m["messageText"] for m in messages(pool_df, project, result.job_id())]
    assert "Cancel request is committed for the job." in texts and f"Job {result.job_id()} was cancelled." in texts


# ---- user code --------------------------------------------------------------------------------

HELPER = """
    def exclaim(word):
        return word.upper() + "!"
"""

USER_CODE = """
    import sys

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    import helper  # a module next to this script

    PREFIX = ">"


    class Decorate(beam.DoFn):
        def process(self, word):
            yield PREFIX + helper.exclaim(word)


    if __name__ == "__main__":
        p = beam.Pipeline(options=PipelineOptions(sys.argv[2:]))
        p | beam.Create(["river", "mill"]) | beam.ParDo(Decorate()) | beam.io.WriteToText(sys.argv[1])
        p.run().wait_until_finish()
"""


@pytest.mark.parametrize("save_main_session", [False, True])
def test_user_code_in_main_and_in_a_module_next_to_the_script(pool, pool_df, project, tmp_path,
                                                              save_main_session):
    (tmp_path / "helper.py").write_text(textwrap.dedent(HELPER))
    extra = ["--save_main_session"] if save_main_session else []
    done = run_script(tmp_path, USER_CODE, str(tmp_path / "out" / "words"),
                      *beam_args(pool, project, tmp_path, *extra))
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_output(tmp_path / "out" / "words") == [">MILL!", ">RIVER!"]
    assert only_job(pool_df, project)["currentState"] == "JOB_STATE_DONE"


REQUIREMENTS = """
    import sys

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions


    def reverse(word):
        import hrtinyreq  # only the job's --requirements_file provides it

        return hrtinyreq.reverse(word)


    if __name__ == "__main__":
        p = beam.Pipeline(options=PipelineOptions(sys.argv[2:]))
        p | beam.Create(["river", "mill"]) | beam.Map(reverse) | beam.io.WriteToText(sys.argv[1])
        p.run().wait_until_finish()
"""


def test_requirements_file_is_installed_for_the_job(pool, pool_df, project, tmp_path):
    cache = tmp_path / "cache"
    build_wheel(cache, "hrtinyreq", "0.1", "def reverse(word):\n    return word[::-1]\n")
    (tmp_path / "requirements.txt").write_text("hrtinyreq==0.1\n")
    with pytest.raises(ImportError):
        import hrtinyreq  # noqa: F401 - nothing but the job's environment may have it
    done = run_script(tmp_path, REQUIREMENTS, str(tmp_path / "out" / "words"),
                      *beam_args(pool, project, tmp_path, f"--requirements_file={tmp_path / 'requirements.txt'}",
                                 f"--requirements_cache={cache}"),
                      env={"PIP_NO_INDEX": "1"})  # offline: pip finds it in the staged cache only
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_output(tmp_path / "out" / "words") == ["llim", "revir"]


def test_requirements_that_do_not_install_fail_the_job(pool, pool_df, project, tmp_path):
    (tmp_path / "requirements.txt").write_text("hrtiny-no-such-package==9.9\n")
    done = run_script(tmp_path, REQUIREMENTS, str(tmp_path / "out" / "words"),
                      *beam_args(pool, project, tmp_path, f"--requirements_file={tmp_path / 'requirements.txt'}",
                                 "--requirements_cache=skip"))
    assert done.returncode != 0 and "hrtiny-no-such-package" in done.stderr
    job = only_job(pool_df, project)
    assert job["currentState"] == "JOB_STATE_FAILED"
    errors = [m["messageText"] for m in messages(pool_df, project, job["id"])
              if m["messageImportance"] == "JOB_MESSAGE_ERROR"]
    assert any("--requirements_file did not install" in e for e in errors), errors
    assert any(e.endswith(": failed to install the pipeline's packages") for e in errors), errors


# ---- a server killed mid-job ------------------------------------------------------------------

def test_server_killed_mid_job_then_restarted_finishes_the_job(project, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    data_dir = tmp_path / "server"
    server = start_server_with_workers(data_dir, workers=1)
    try:
        marker = tmp_path / "running"
        p = beam.Pipeline(options=PipelineOptions(beam_args(server, project, tmp_path)))
        p | beam.Create(["river", "mill"]) | beam.Map(slow_once(marker)) | beam.io.WriteToText(
            str(tmp_path / "out" / "words"))
        job_id = p.run().job_id()
        wait_until(marker.exists, 300, "the pipeline to run user code")
        workers = [w for w in psutil.Process(server.process.pid).children() if "worker" in w.cmdline()]
        running = pipeline_processes(server.process.pid, job_id)
        assert workers and running
        server.process.kill()
        server.process.wait()
        # Its workers and their pipelines do not outlive it.
        wait_until(lambda: all(gone(w) for w in [*workers, *running]), 15, "the pool to stop")
    finally:
        server.stop()

    server = start_server_with_workers(data_dir, workers=1, port=int(server.url.rsplit(":", 1)[1]))
    try:
        df = discovery_client(server.url)
        job = wait_for_state(df, project, job_id, timeout=300)
        assert job["currentState"] == "JOB_STATE_DONE"
        assert read_output(tmp_path / "out" / "words") == ["mill", "river"]
        texts = [m["messageText"] for m in messages(df, project, job_id)]
        assert any("Lost contact with worker" in t and "lease expired" in t for t in texts), texts
    finally:
        server.stop()
