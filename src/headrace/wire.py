"""Time and duration in the wire's shapes, shared by every layer. Always UTC, always aware."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str) -> datetime:
    """RFC3339 with any offset and up to nanoseconds (kept to microseconds)."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    date, clock, frac, zone = m.groups()
    frac = (frac or ".0")[1:7].ljust(6, "0")
    zone = "+00:00" if zone in ("Z", "z") else zone
    parsed = datetime.fromisoformat(f"{date}T{clock}.{frac}{zone}")
    return parsed.astimezone(timezone.utc)


def format_time(moment: datetime) -> str:
    """Fixed width, so stored timestamps sort as text: 2026-01-02T03:04:05.000006Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_duration(text: str) -> timedelta:
    if not text.endswith("s"):
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=float(text[:-1]))


def format_duration(span: timedelta | float) -> str:
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
