"""Tables. Each resource keeps its full proto3 JSON in `body`; the columns beside it are
only what queries filter and sort on, so a page is an index range scan, not a table scan."""

from sqlalchemy import Boolean, Column, Index, Integer, BigInteger, MetaData, Table
from sqlalchemy import Text as _Text
from sqlalchemy.dialects.postgresql import TEXT

metadata = MetaData()

# Text compares byte by byte, as SQLite's does, whatever the PostgreSQL database's locale:
# names, ids and timestamps sort, and pages split, the same on both stores.
Text = _Text().with_variant(TEXT(collation="C"), "postgresql")

# Integer primary keys autoincrement in SQLite and PostgreSQL alike.
SeqKey = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs", metadata,
    Column("seq", SeqKey, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("project_id", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("client_request_id", Text),
    Column("current_state", Text, nullable=False),
    Column("terminal", Boolean, nullable=False),
    Column("streaming", Boolean, nullable=False),
    Column("create_time", Text, nullable=False),
    Column("terminate_time", Text),
    Column("body", Text, nullable=False),
    Index("jobs_by_location", "project_id", "location", "seq"),
    Index("jobs_by_project", "project_id", "seq"),
    Index("jobs_by_location_and_end", "project_id", "location", "terminal", "seq"),  # filter=ACTIVE/TERMINATED
    Index("jobs_by_project_and_end", "project_id", "terminal", "seq"),  # jobs:aggregated with a filter
    Index("jobs_by_name", "project_id", "location", "name", "terminal"),
    Index("jobs_by_state", "current_state"),  # the sweeper's cancelling/draining jobs
)

job_messages = Table(
    "job_messages", metadata,
    Column("seq", SeqKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("time", Text, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Index("job_messages_by_time", "job_id", "time", "seq"),
)

autoscaling_events = Table(
    "autoscaling_events", metadata,
    Column("seq", SeqKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("time", Text, nullable=False),
    Column("body", Text, nullable=False),
    Index("autoscaling_events_by_time", "job_id", "time", "seq"),
)

metrics = Table(
    "metrics", metadata,
    Column("job_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),  # canonical JSON of the metric's structured name
    Column("update_time", Text, nullable=False),
    Column("body", Text, nullable=False),
    Index("metrics_by_time", "job_id", "update_time"),
)

workers = Table(
    "workers", metadata,
    Column("job_id", Text, primary_key=True),
    Column("worker_id", Text, primary_key=True),
    Column("state", Text, nullable=False),  # HEALTHY, UNHEALTHY, LOST, STOPPED
    Column("last_seen", Text, nullable=False),
    Column("report_interval", Text),
    Column("body", Text, nullable=False),
    Index("workers_by_state", "state", "last_seen"),
)

worker_samples = Table(
    "worker_samples", metadata,
    Column("seq", SeqKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("time", Text, nullable=False),
    Column("body", Text, nullable=False),
    Index("worker_samples_by_time", "job_id", "worker_id", "time"),
)

work_items = Table(
    "work_items", metadata,
    Column("id", SeqKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("project_id", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("stage_id", Text, nullable=False),
    Column("state", Text, nullable=False),  # PENDING, LEASED, DONE, FAILED, CANCELLED
    Column("worker_id", Text),
    Column("lease_expire", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_report_index", Integer, nullable=False, default=0),
    Column("last_report", Text),  # the last accepted status and its answer, for retries
    Column("create_time", Text, nullable=False),
    Column("body", Text, nullable=False),
    Index("work_items_by_state", "project_id", "location", "state", "id"),
    Index("work_items_by_job", "job_id", "state"),
    Index("work_items_by_lease", "state", "lease_expire"),
)

work_item_attempts = Table(
    "work_item_attempts", metadata,
    Column("work_item_id", SeqKey, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("stage_id", Text, nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("state", Text, nullable=False),  # ExecutionState names
    Column("start_time", Text, nullable=False),
    Column("end_time", Text),
    Index("attempts_by_job", "job_id", "stage_id", "worker_id"),
)

snapshots = Table(
    "snapshots", metadata,
    Column("id", Text, primary_key=True),
    Column("project_id", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("source_job_id", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("creation_time", Text, nullable=False),
    Column("expire_time", Text, nullable=False),
    Column("body", Text, nullable=False),
    Index("snapshots_by_location", "project_id", "location", "creation_time"),
    Index("snapshots_by_job", "source_job_id"),
)

debug_captures = Table(
    "debug_captures", metadata,
    Column("seq", SeqKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("component_id", Text, nullable=False),
    Column("time", Text, nullable=False),
    Column("data_format", Text, nullable=False),
    Column("data", Text, nullable=False),
    Index("debug_captures_by_worker", "job_id", "worker_id", "seq"),
)
