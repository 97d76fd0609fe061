"""The PostgreSQL store: `headrace serve --database-url postgresql://...` on the main API paths,
migrations on an empty database, API processes sharing one database, and kill -9.

The tests start a throwaway cluster of their own (initdb and pg_ctl; as the `postgres` user
when run as root, since initdb refuses root), or use HEADRACE_TEST_POSTGRES_URL, a role that
may create databases. Each database is made with an ICU en-US collation where the server has
ICU, so that nothing of the store may rely on PostgreSQL comparing text byte by byte unless it
says so. Without PostgreSQL binaries (Debian: apt-get install postgresql) they skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from googleapiclient.errors import HttpError
from sqlalchemy.engine import make_url

from headrace.store import Store
from headrace.store import workers as worker_rows
from headrace.store.migrations import MIGRATIONS
from tests.conftest import discovery_client, free_port, start_server
from tests.test_durability import check_acknowledged, write_until_killed
from tests.test_metrics import Worker, get_metrics, user
from tests.test_snapshots import running_job, take, wait_for_state
from tests.test_work_items import (create_job, error_of, get_job, lease, lease_one, messages, report,
                                   stage_states, wait_for)
from tests.test_worker_messages import msg, send

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install -e '.[test]'")

REGION = "us-central1"


# ---- a PostgreSQL server and databases of the tests' own --------------------------------------


class Postgres:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url  # a libpq URI: postgresql://user@host:port/db
        self.created: list[str] = []

    def database(self) -> str:
        """A new, empty database; its URL as `headrace serve --database-url` takes it."""
        name = f"headrace_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                             "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
            except psycopg.Error:  # PostgreSQL before 15, or built without ICU
                conn.execute(f"CREATE DATABASE {name}")
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_created(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sql(url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def jobs_of(df, project: str) -> list[dict]:
    return df.projects().locations().jobs().list(projectId=project, location=REGION,
                                                 pageSize=1000).execute().get("jobs", [])


def _bindir() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                                                       key=lambda p: int(p.split("/")[4]), reverse=True)), None)
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres():
    if os.environ.get("HEADRACE_TEST_POSTGRES_URL"):
        url = make_url(os.environ["HEADRACE_TEST_POSTGRES_URL"]).set(drivername="postgresql")
        server = Postgres(url.render_as_string(hide_password=False))
        yield server
        server.drop_created()  # a throwaway cluster goes whole; a shared server keeps nothing of ours
        return
    bindir = _bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) found: install them (Debian: apt-get "
                    "install postgresql) or set HEADRACE_TEST_POSTGRES_URL to a role that may create databases")
    root = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        user = "postgres" if _user_exists("postgres") else "nobody"
        os.chown(root, pwd.getpwnam(user).pw_uid, -1)
        as_user = ["runuser", "-u", user, "--"]
    data, port = root / "data", free_port()
    subprocess.run([*as_user, bindir / "initdb", "-D", data, "-U", "headrace", "--auth=trust", "-E", "UTF8",
                    "--locale=C", "--no-sync"], check=True, capture_output=True)
    # fsync off: the tests kill Headrace, never PostgreSQL, whose own durability is not on trial.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o", options, "start"],
                   check=True, capture_output=True)
    try:
        yield Postgres(f"postgresql://headrace@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def store_url(postgres):
    return postgres.database()


@pytest.fixture(scope="module")
def server(store_url, tmp_path_factory):
    """Overrides conftest's SQLite server for this module: `df`, `gapic` and `http` use this one."""
    srv = start_server(tmp_path_factory.mktemp("pg"), "--database-url", store_url)
    yield srv
    srv.stop()


# ---- the API paths on PostgreSQL --------------------------------------------------------------


def test_jobs_pages_filters_conflicts_and_lifecycle(df, gapic, project, check):
    jobs = df.projects().locations().jobs()
    made = [create_job(df, project, name=f"j{n}", clientRequestId=f"r{n}") for n in range(7)]
    with pytest.raises(HttpError) as err:
        create_job(df, project, name="j0", clientRequestId="other")
    assert err.value.status_code == 409 and error_of(err)["status"] == "ALREADY_EXISTS"
    assert f"There is already an active job named j0 with id: {made[0]['id']}" in error_of(err)["message"]
    assert create_job(df, project, name="j0", clientRequestId="r0")["id"] == made[0]["id"]  # a retry

    # Keyset pages, newest first, every job once.
    seen, token = [], None
    while True:
        page = jobs.list(projectId=project, location=REGION, pageSize=3, pageToken=token).execute()
        check(page, "ListJobsResponse")
        seen += [j["id"] for j in page["jobs"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == [j["id"] for j in reversed(made)]

    cancelling = jobs.update(projectId=project, location=REGION, jobId=made[1]["id"],
                             body={"requestedState": "JOB_STATE_CANCELLED"}).execute()
    assert cancelling["currentState"] == "JOB_STATE_CANCELLING"
    wait_for(lambda: get_job(df, project, made[1]["id"])["currentState"] == "JOB_STATE_CANCELLED",
             "the sweeper to settle the cancel")
    jobs.update(projectId=project, location=REGION, jobId=made[2]["id"],
                body={"requestedState": "JOB_STATE_DONE"}).execute()
    labelled = jobs.update(projectId=project, location=REGION, jobId=made[3]["id"], updateMask="labels",
                           body={"labels": {"team": "data"}}).execute()
    check(labelled, "Job")
    assert get_job(df, project, made[3]["id"])["labels"] == {"team": "data"}

    def listed(**params) -> set[str]:
        out = jobs.list(projectId=project, location=REGION, **params).execute()
        return {j["id"] for j in out.get("jobs", [])}

    ids = [j["id"] for j in made]
    assert listed(filter="TERMINATED") == {ids[1], ids[2]}
    assert listed(filter="ACTIVE") == set(ids) - {ids[1], ids[2]}
    assert listed(name="j3") == {ids[3]}
    from google.cloud import dataflow_v1beta3 as dataflow
    terminated = gapic["jobs"].list_jobs(request=dataflow.ListJobsRequest(
        project_id=project, location=REGION, filter=dataflow.ListJobsRequest.Filter.TERMINATED))
    assert {j.id for j in terminated} == {ids[1], ids[2]}
    assert create_job(df, project, name="j2")["id"] != ids[2]  # a terminated job's name is free again

    # Its messages, one a page, in time order.
    texts, token = [], None
    while True:
        page = jobs.messages().list(projectId=project, location=REGION, jobId=ids[1], pageSize=1,
                                    minimumImportance="JOB_MESSAGE_DEBUG", pageToken=token).execute()
        check(page, "ListJobMessagesResponse")
        texts += [m["messageText"] for m in page.get("jobMessages", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    assert texts == [f"Job {ids[1]} created.", "Cancel request is committed for the job.",
                     f"Job {ids[1]} was cancelled."]


def test_work_items_run_to_done_and_fail_after_their_attempts(df, project, check):
    done = create_job(df, project, name="done")
    item = lease_one(df, project, "w1", done["id"])
    assert get_job(df, project, done["id"])["currentState"] == "JOB_STATE_RUNNING"
    finished = {"reportIndex": item["initialReportIndex"], "completed": True,
                "reportedProgress": {"fractionConsumed": 1.0}}
    answer = report(df, item, "w1", **finished)
    assert report(df, item, "w1", **finished) == answer  # a retried report gets the same answer
    final = get_job(df, project, done["id"])
    assert final["currentState"] == "JOB_STATE_DONE" and stage_states(final) == {"S01": "JOB_STATE_DONE"}
    assert lease(df, project, "w2", done["id"]) == {}

    failing = create_job(df, project, name="failing")
    workers = [f"worker-{n}" for n in range(4)]
    for n, worker in enumerate(workers):
        item = lease_one(df, project, worker, failing["id"])
        report(df, item, worker, reportIndex=item["initialReportIndex"], completed=True,
               errors=[{"code": 2, "message": f"Traceback: ValueError boom {n}"}])
    final = get_job(df, project, failing["id"])
    check(final, "Job")
    assert final["currentState"] == "JOB_STATE_FAILED" and stage_states(final) == {"S01": "JOB_STATE_FAILED"}
    texts = [m["messageText"] for m in messages(df, project, failing["id"])]
    assert [f"Traceback: ValueError boom {n}" in texts for n in range(4)] == [True] * 4
    [failure] = [t for t in texts if "Workflow failed" in t]
    assert "a work item has failed 4 times" in failure and all(w in failure for w in workers)


def test_worker_messages_commit_together_and_metrics_sort_byte_wise(server, df, project, store_url, check):
    job = create_job(df, project, name="reporting")
    worker_ids = [f"w-{n}" for n in range(12)]

    def one(worker_id: str) -> dict:
        # A client per thread: googleapiclient's http object is not thread-safe.
        return send(discovery_client(server.url), project, [
            msg(job["id"], worker_id, workerHealthReport={"vmIsHealthy": True, "reportInterval": "10s"}),
            msg(job["id"], worker_id, 1, workerMessageCode={"code": "HARNESS_STARTED"})])

    with ThreadPoolExecutor(6) as pool:  # requests that arrive together share a transaction
        answers = list(pool.map(one, worker_ids))
    for answer in answers:
        check(answer, "SendWorkerMessagesResponse")
        assert answer["workerMessageResponses"][0] == {"workerHealthReportResponse": {"reportInterval": "10s"}}
    texts = [m["messageText"] for m in messages(df, project, job["id"])]
    assert sorted(t for t in texts if "harness started" in t) == sorted(f"Worker {w}: harness started"
                                                                        for w in worker_ids)
    registry = Store(store_url)
    try:
        with registry.read() as conn:
            rows = worker_rows.list_for_job(conn, job["id"])
    finally:
        registry.close()
    assert [w["workerId"] for w in rows] == sorted(worker_ids)  # by worker id, byte-wise: w-1, w-10, ...
    assert {w["state"] for w in rows} == {"HEALTHY"}

    # Metrics come back in name order, byte-wise as on SQLite, whatever the database's locale.
    names = ["alpha", "Beta", "a-2", "B-1", "Zeta", "_under"]
    holder = Worker(df, project, create_job(df, project, name="counting")["id"])
    holder.report(metricUpdates=[user(n, kind="Sum", scalar=i + 1) for i, n in enumerate(names)])
    holder.report(metricUpdates=[user(n, kind="Sum", scalar=10) for n in names])
    got = get_metrics(df, project, holder.scope["jobId"])
    check(got, "JobMetrics")
    committed = [m for m in got["metrics"] if "tentative" not in m["name"]["context"]]
    assert [m["name"]["name"] for m in committed] == sorted(names)
    assert {m["name"]["name"]: m["scalar"] for m in committed} == {n: i + 11 for i, n in enumerate(names)}


def test_database_collation_is_not_bytewise(store_url):
    """What makes the ordering above a test: this database orders text by locale."""
    if sql(store_url, "SELECT datlocprovider FROM pg_database WHERE datname = current_database()")[0][0] != "i":
        pytest.skip("this PostgreSQL has no ICU collations: the test database compares text byte-wise anyway")
    assert sql(store_url, "SELECT 'alpha' < 'Beta', 'alpha' COLLATE \"C\" < 'Beta'") == [(True, False)]
    off = sql(store_url, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                         "'public' AND data_type = 'text' AND collation_name IS DISTINCT FROM 'C'")
    assert off == [], "text columns that would sort by locale"


def test_snapshots_are_taken_listed_and_deleted(df, project, check):
    job = running_job(df, project)
    first, second = take(df, project, job["id"]), take(df, project, job["id"])
    assert wait_for_state(df, project, first["id"], {"READY"})["state"] == "READY"
    snapshots = df.projects().locations().snapshots()
    listed = snapshots.list(projectId=project, location=REGION).execute()
    check(listed, "ListSnapshotsResponse")
    assert [s["id"] for s in listed["snapshots"]] == [second["id"], first["id"]]
    check(snapshots.delete(projectId=project, location=REGION, snapshotId=first["id"]).execute(),
          "DeleteSnapshotResponse")
    with pytest.raises(HttpError) as err:
        snapshots.get(projectId=project, location=REGION, snapshotId=first["id"]).execute()
    assert err.value.status_code == 404
    assert [s["id"] for s in snapshots.list(projectId=project, location=REGION).execute()["snapshots"]] == [
        second["id"]]


def test_nul_characters_are_refused_before_they_reach_the_store(http, df, project):
    """PostgreSQL text cannot hold U+0000, which SQLite's can: the codec refuses it in every
    string, so a request carrying one is a 400 on either store, never an internal error."""
    base = f"/v1b3/projects/{project}/locations/{REGION}"
    got = http.get(f"{base}/jobs/2026-01-01_00_00_00-1%00x")
    assert got.status_code == 400 and "NUL" in got.json()["error"]["message"], got.text
    created = http.post(f"{base}/jobs", json={"name": "nul", "clientRequestId": "a\u0000b"})
    assert created.status_code == 400 and created.json()["error"]["status"] == "INVALID_ARGUMENT", created.text
    assert http.get(f"{base}/jobs").json() == {}  # nothing of it was written
    job = create_job(df, project, name="nul")
    bad = http.post(f"{base}/WorkerMessages", json={"workerMessages": [
        msg(job["id"], "w-\u0000", workerHealthReport={"vmIsHealthy": True})]})
    assert bad.status_code == 400 and "NUL" in bad.json()["error"]["message"], bad.text
    leased = http.post(f"{base}/jobs/{job['id']}/workItems:lease", json={"workerId": "w\u0000"})
    assert leased.status_code == 400, leased.text
    assert lease_one(df, project, "w-ok", job["id"])  # the item was not taken by the refused lease


# ---- migrations, replicas, kill -9 ------------------------------------------------------------


def test_stores_opening_an_empty_database_at_once_migrate_it_once(postgres):
    """API processes started together all migrate at start-up; servers take seconds to import,
    so the race is run here with the store itself, its openings lined up on a barrier."""
    url = postgres.database()
    start, errors = threading.Barrier(4), []

    def open_store() -> None:
        start.wait()
        try:
            Store(url).close()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sql(url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


def _start_together(count: int, root: Path, url: str) -> list:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_server, root / f"replica-{n}", "--database-url", url) for n in range(count)]
    servers = [f.result() for f in futures if f.exception() is None]
    if len(servers) < count:
        for srv in servers:
            srv.stop()
        raise next(f.exception() for f in futures if f.exception() is not None)
    return servers


def test_replicas_migrate_an_empty_database_once_share_its_leases_and_restart(postgres, tmp_path, project):
    url = postgres.database()
    assert sql(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    replicas = _start_together(2, tmp_path, url)  # both migrate at start-up, at the same moment
    try:
        assert sql(url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
        a, b = (discovery_client(r.url) for r in replicas)
        jobs = [create_job(a if n % 2 else b, project, name=f"shared-{n}") for n in range(6)]
        assert get_job(b, project, jobs[1]["id"])["name"] == "shared-1"  # written by a, read by b
        with pytest.raises(HttpError) as err:
            create_job(a, project, name="shared-0")  # the name is held through b
        assert err.value.status_code == 409

        # The same name submitted to both replicas at the same moment: one job, one conflict.
        names = [f"race-{n}" for n in range(8)]
        start = threading.Barrier(2)

        def submit(n: int) -> list[int]:
            base = f"{replicas[n].url}/v1b3/projects/{project}/locations/{REGION}/jobs"
            with httpx.Client(timeout=30) as client:
                codes = []
                for name in names:
                    start.wait()
                    codes.append(client.post(base, json={"name": name}).status_code)
                return codes

        with ThreadPoolExecutor(2) as pool:
            codes = list(zip(*pool.map(submit, range(2))))
        assert [sorted(pair) for pair in codes] == [[200, 409]] * len(names)

        # Workers of both replicas lease at once: every item goes to exactly one of them.
        def drain(n: int) -> list[str]:
            client, got = discovery_client(replicas[n % 2].url), []
            while items := lease(client, project, f"w{n}").get("workItems"):
                got += [item["id"] for item in items]
            return got

        with ThreadPoolExecutor(6) as pool:
            leased = [i for got in pool.map(drain, range(6)) for i in got]
        assert len(leased) == len(jobs) + len(names) and Counter(leased).most_common(1)[0][1] == 1
        assert {j["currentState"] for j in jobs_of(a, project)} == {"JOB_STATE_RUNNING"}
        attempts = sql(url, "SELECT work_item_id, count(*) FROM work_item_attempts GROUP BY work_item_id")
        assert sorted(str(i) for i, _ in attempts) == sorted(leased) and {n for _, n in attempts} == {1}
    finally:
        for r in replicas:
            r.stop()

    again = start_server(tmp_path / "restarted", "--database-url", url)
    try:
        assert get_job(discovery_client(again.url), project, jobs[0]["id"])["currentState"] == "JOB_STATE_RUNNING"
    finally:
        again.stop()
    assert sql(url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


def test_acknowledged_writes_survive_kill_9(postgres, tmp_path):
    plain = postgres.database()
    url = make_url(plain).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    project = f"dur-{uuid.uuid4().hex[:8]}"
    ledger = write_until_killed(start_server(tmp_path / "data", "--database-url", url), project)

    restarted = start_server(tmp_path / "data", "--database-url", url)
    try:
        with httpx.Client(base_url=restarted.url, timeout=30) as client:
            check_acknowledged(client, f"/v1b3/projects/{project}/locations/{REGION}/jobs", ledger)
    finally:
        restarted.stop()
    # Whole transactions: no work item and no message without its job, no job without its message.
    for orphans in ("SELECT count(*) FROM work_items WHERE job_id NOT IN (SELECT id FROM jobs)",
                    "SELECT count(*) FROM job_messages WHERE job_id NOT IN (SELECT id FROM jobs)",
                    "SELECT count(*) FROM jobs WHERE id NOT IN (SELECT job_id FROM job_messages)"):
        assert sql(plain, orphans) == [(0,)], orphans
