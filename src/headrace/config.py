"""Configuration: CLI flags, then HEADRACE_* environment variables, then these defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".headrace")
    database_url: str = ""  # empty: SQLite in data_dir
    auth_tokens: Path | None = None  # JSON file {token: [project ids or "*"]}
    max_body_bytes: int = 32 * 1024 * 1024
    default_location: str = "us-central1"
    # Worker protocol timings, in seconds.
    health_interval: float = 10.0
    lease_seconds: float = 60.0
    report_status_seconds: float = 10.0
    max_attempts: int = 4
    # Back-pressure: past this many requests in flight, workers are asked to report less often.
    busy_requests: int = 64
    busy_interval_factor: float = 4.0
    sweep_seconds: float = 1.0
    # Workers: how many `headrace serve` starts beside the API (0: none), and their timings.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    worker_poll_seconds: float = 0.25  # the longest pause between lease polls of an idle worker
    # The lease a worker asks for. The service asks for a status report every half lease, and
    # a report is how a worker learns that its job is being cancelled: 6 s stops a cancelled
    # job within about 3 s, and a killed worker's item is leased again within 6 s.
    worker_lease_seconds: float = 6.0
    # Pages.
    page_size: int = 50
    max_page_size: int = 1000

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{(Path(self.data_dir) / 'headrace.db').resolve()}"

    @classmethod
    def from_env(cls, environ=os.environ, **overrides) -> "Config":
        """Defaults, overridden by HEADRACE_<FIELD> variables, overridden by explicit values."""
        values = {}
        for f in fields(cls):
            raw = environ.get(f"HEADRACE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _convert(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _convert(kind: str, raw: str):
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if "Path" in kind:
        return Path(raw) if raw else None
    return raw
