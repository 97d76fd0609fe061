"""Turnaround: one wordcount through Beam's DataflowRunner -> Headrace and through Beam's
DirectRunner in-process, side by side.

    .venv/bin/python -m bench.turnaround [--megabytes 50] [--rounds 3] [--workers 1]

The pipeline is `apache_beam.examples.wordcount` over `--megabytes` of generated text (a
Zipf-like draw from a 20,000-word vocabulary, fixed seed). Each run is a fresh Python process
running the example as a user does, `--runner DirectRunner` (what a user gets by default: Beam
tries Prism, which cannot be downloaded offline, and falls back to the FnApiRunner in-process)
or `--runner DataflowRunner --dataflow_endpoint <headrace>`. Rounds take turns, and which runner
goes first alternates, so the machine's noise hits both alike. Every run's output must equal
the first DirectRunner run's.

Figures per run:
  job      the job's own time: for Headrace from its createTime to its terminal currentStateTime
           (both set by the service); for DirectRunner the `run()` call, pipeline construction
           included (a few milliseconds)
  wall     the client's wall time, from starting the process to its exit: imports, for Dataflow
           also staging, submitting and polling (Beam polls every 5 s)
  running  Headrace only: jobs.create to JOB_STATE_RUNNING (the job's "Workers have started
           successfully." message), and to the pipeline running (the worker's "harness started")
  submit, notice
           Headrace only: what the client's wall time adds to the job's, from the client's start
           to jobs.create, and from the job's end to the client's exit

One unmeasured warm-up round on 1 MB comes first: the server's first Beam job pays for
importing Beam into the API process (to describe the pipeline), and the OS cache warms up.
`headrace serve` runs with `--workers` pool workers on a fresh data dir.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from headrace import wire
from tests.conftest import start_server_with_workers

REGION = "us-central1"
VOCABULARY = 20_000
AIM_JOB_RATIO = 0.9  # Headrace's job time over DirectRunner's
AIM_RUNNING_SECONDS = 1.0  # jobs.create to JOB_STATE_RUNNING


def generate(path: Path, megabytes: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "ri", "mo", "ten", "sa", "lu", "ve", "dor", "pi", "ne", "ox", "ul", "fe", "gra"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) + str(i % 7)
                    for i in range(VOCABULARY)})
    rng.shuffle(words)  # which words are common: not the alphabet's first
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))  # Zipf-like
    target = int(megabytes * 1024 * 1024)
    with path.open("w") as out:
        written = 0
        while written < target:
            lines = [" ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(4, 16))) for _ in range(1000)]
            block = "\n".join(lines) + "\n"
            out.write(block)
            written += len(block)


def run_client(runner: str, input_path: Path, out: Path, log: Path, extra: list[str]) -> dict:
    """The example in a fresh process; its wall time, and the time of its run() as it measured."""
    script = ("import json, sys, time\n"
              "from apache_beam.examples import wordcount\n"
              "start = time.time(); wordcount.run(sys.argv[1:]); end = time.time()\n"
              "print(json.dumps({'run': end - start}))\n")
    args = [f"--input={input_path}", f"--output={out / 'counts'}", f"--runner={runner}", *extra]
    started, wall_clock = time.monotonic(), time.time()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{runner} run failed (log: {log}):\n{done.stderr[-3000:]}")
    return {"wall": wall, "run": json.loads(done.stdout.strip().splitlines()[-1])["run"],
            "started": wall_clock, "ended": wall_clock + wall}


def output_of(out: Path) -> list[str]:
    return sorted(line for f in out.glob("counts*") for line in f.read_text().splitlines())


def headrace_job(api: httpx.Client, project: str, client: dict) -> dict:
    """The job's own figures, from the times the service set."""
    base = f"/v1b3/projects/{project}/locations/{REGION}/jobs"
    [job] = api.get(base).json()["jobs"]
    messages = api.get(f"{base}/{job['id']}/messages", params={
        "minimumImportance": "JOB_MESSAGE_DEBUG", "pageSize": 1000}).json().get("jobMessages", [])
    created, ended = wire.parse_time(job["createTime"]), wire.parse_time(job["currentStateTime"])

    def since_create(text: str) -> float | None:
        times = [wire.parse_time(m["time"]) for m in messages if text in m["messageText"]]
        return (min(times) - created).total_seconds() if times else None

    assert job["currentState"] == "JOB_STATE_DONE", job
    return {"job": (ended - created).total_seconds(),
            "running": since_create("Workers have started successfully."),
            "harness": since_create("harness started"),
            "submit": created.timestamp() - client["started"], "notice": client["ended"] - ended.timestamp()}


def one_round(n: int, runner: str, args, server, api: httpx.Client, root: Path, input_path: Path) -> dict:
    work = root / f"{runner}-{n}"
    (work / "staging").mkdir(parents=True)
    log = work / "client.log"
    if runner == "direct":
        figures = run_client("DirectRunner", input_path, work / "out", log, [])
        figures["job"] = figures["run"]
    else:
        project = f"turnaround-{n}"
        extra = [f"--dataflow_endpoint={server.url}", f"--project={project}", f"--region={REGION}",
                 f"--temp_location={work / 'staging'}", "--no_auth"]
        figures = run_client("DataflowRunner", input_path, work / "out", log, extra)
        figures |= headrace_job(api, project, figures)
    figures["output"] = output_of(work / "out")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=50.0, help="size of the generated input")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="pool workers of `headrace serve`")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="headrace-turnaround-") as tmp:
        root = Path(tmp)
        small, big = root / "small.txt", root / "input.txt"
        generate(small, 1)
        generate(big, args.megabytes)
        server = start_server_with_workers(root / "server", workers=args.workers)
        try:
            with httpx.Client(base_url=server.url, timeout=30) as api:
                cold = {r: one_round(0, r, args, server, api, root, small) for r in ("headrace", "direct")}
                assert cold["headrace"]["output"] == cold["direct"]["output"], "outputs differ (warm-up)"
                results: dict[str, list[dict]] = {"direct": [], "headrace": []}
                for n in range(1, args.rounds + 1):
                    order = ("direct", "headrace") if n % 2 else ("headrace", "direct")
                    for runner in order:
                        results[runner].append(one_round(n, runner, args, server, api, root, big))
                        print(f"round {n} {runner:<9} job {results[runner][-1]['job']:6.2f} s  "
                              f"wall {results[runner][-1]['wall']:6.2f} s", flush=True)
        finally:
            server.stop()
        expected = results["direct"][0]["output"]
        assert expected and all(r["output"] == expected for rs in results.values() for r in rs), "outputs differ"
        report(args, cold["headrace"], results, len(expected), (load, os.getloadavg()[0]))


def report(args, cold: dict, results: dict, words: int, load: tuple[float, float]) -> None:
    def median(runner: str, key: str) -> float:
        return statistics.median(r[key] for r in results[runner])

    print(f"\nwordcount over {args.megabytes:g} MB ({words} distinct words), {args.rounds} rounds, "
          f"{os.cpu_count()} cores (load average {load[0]:.1f} before, {load[1]:.1f} after), "
          f"`headrace serve --workers {args.workers}`; medians in seconds")
    print(f"{'runner':<14}{'job':>8}{'wall':>8}{'create->RUNNING':>17}{'->harness':>11}{'submit':>8}{'notice':>8}")
    for runner, label in (("direct", "DirectRunner"), ("headrace", "Headrace")):
        extra = ""
        if runner == "headrace":
            extra = "".join(f"{median(runner, key):>{width}.{digits}f}" for key, width, digits in (
                ("running", 17, 3), ("harness", 11, 2), ("submit", 8, 2), ("notice", 8, 2)))
        print(f"{label:<14}{median(runner, 'job'):>8.2f}{median(runner, 'wall'):>8.2f}{extra}")
    ratio = median("headrace", "job") / median("direct", "job")
    worst = max(r["running"] for r in results["headrace"])
    print(f"\njob time, Headrace / DirectRunner: {ratio:.2f} (aim <= {AIM_JOB_RATIO}: "
          f"{'met' if ratio <= AIM_JOB_RATIO else 'missed'})")
    print(f"wall time, Headrace / DirectRunner: {median('headrace', 'wall') / median('direct', 'wall'):.2f}")
    print(f"jobs.create to JOB_STATE_RUNNING: worst {worst:.3f} s over the rounds, {cold['running']:.3f} s "
          f"on the fresh server's first job (aim < {AIM_RUNNING_SECONDS} s: "
          f"{'met' if worst < AIM_RUNNING_SECONDS else 'missed'})")


if __name__ == "__main__":
    main()
