"""Codec.decode_json's fast path (api/fast_check.py) against the slow path it stands in for.

The invariant: a body the fast path accepts is one that decode_body returns unchanged. So for
every body, decode_json answers what the slow path alone answers, value or error. Bodies are
generated from the discovery schemas: canonical values and near-misses of each kind.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.worker_messages import Fleet, Worker
from headrace.api.codec import Codec, _parse_json
from headrace.api.discovery import load
from headrace.errors import ApiError

DISCOVERY = load()
CODEC = Codec(DISCOVERY)
# StreamingConfigTask holds the document's only `byte` fields.
SCHEMAS = ["SendWorkerMessagesRequest", "Job", "LeaseWorkItemRequest", "ReportWorkItemStatusRequest",
           "StreamingConfigTask"]
MAX_GENERATED_DEPTH = 12  # past the fast types' unrolling (3 per recursive schema, 6 free-form levels)


def slow(raw: bytes, name: str) -> dict:
    return CODEC.decode_body(_parse_json(raw) if raw.strip() else {}, name)


def outcome(decode, raw: bytes, name: str):
    try:
        return "ok", orjson.dumps(decode(raw, name))  # bytes: 1 and 1.0 and True differ
    except ApiError as error:
        return "error", error.envelope()


def check(raw: bytes, name: str) -> bool:
    fast = CODEC.fast_accepts(raw, name)
    got = outcome(CODEC.decode_json, raw, name)
    assert got == outcome(slow, raw, name), raw[:500]
    if fast:
        assert got == ("ok", orjson.dumps(orjson.loads(raw))), raw[:500]
    return fast


# ---- values from the schema: canonical, or near misses --------------------------------------

def _time(moment: datetime) -> str:
    return f"{moment.year:04d}" + moment.strftime("-%m-%dT%H:%M:%S.%fZ")


def json_values(max_leaves: int = 12):
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=6))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                        max_leaves=max_leaves)


def nested(depth: int, leaf):
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.just(1.5), st.text(max_size=3),
                     st.just([]), st.just({}))
JSON_INTS = st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-1000, 1000))
# (canonical, near miss) for each kind of scalar; a near miss may still be valid (Feb 29, a
# 19-digit int64...), it only has to be something the fast path should not need to accept.
SCALARS = {
    "boolean": (st.booleans(), st.sampled_from([0, 1, "true", "false"])),
    "int32": (st.integers(-2**31, 2**31 - 1), st.sampled_from([2**31, -2**31 - 1, 1.0, 1.25, "5", "-0", True, 2**63])),
    "uint32": (st.integers(0, 2**32 - 1), st.sampled_from([2**32, -1, 1.0, "5", True])),
    "int64": (st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-1000, 1000)).map(str),
              st.one_of(st.integers(-2**54, 2**54), st.sampled_from(
                  [1.0, 2.5, 2**60, "-0", "007", "+5", " 5", "5\n", "1e3", "1.0", "", "12abc", "9223372036854775808",
                   "-9223372036854775809", "18446744073709551616", "123456789012345678901234"]))),
    "uint64": (st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 1000)).map(str),
               st.sampled_from(["-1", "-0", "01", "18446744073709551616", 5, 5.0])),
    "double": (st.one_of(st.floats(allow_nan=False, allow_infinity=False), JSON_INTS),
               st.one_of(st.integers(2**63, 2**70), st.integers(10**38, 10**40), st.sampled_from(
                   ["NaN", "Infinity", "-Infinity", "1.5", "1e3", True]))),
    "float": (st.one_of(st.floats(-3.4028234663852886e38, 3.4028234663852886e38), JSON_INTS),
              st.one_of(st.integers(10**38, 10**40), st.sampled_from(
                  [3.4028235e38, -3.5e38, 1e300, "NaN", "-Infinity", "2.5"]))),
    "google-datetime": (
        st.datetimes(timezones=st.just(timezone.utc)).map(_time),
        st.one_of(st.sampled_from(
            ["2024-02-29T00:00:00.000000Z", "2023-02-29T00:00:00.000000Z", "2024-02-30T00:00:00.000000Z",
             "2024-04-31T00:00:00.000000Z", "0000-01-01T00:00:00.000000Z", "2024-01-01T24:00:00.000000Z",
             "2024-12-31T23:59:60.000000Z", "2024-01-01 00:00:00.000000Z", "2024-01-01t00:00:00.000000z",
             "2024-01-01T00:00:00.5+02:00", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.000000Z\n",
             "2024-01-01T00:00:00.0000001Z", "0001-01-01T00:00:00+01:00", "noon"]),
            st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5))])).map(
                lambda m: m.isoformat()))),
    "google-duration": (
        st.from_regex(r"-?[0-9]{1,11}(\.[0-9]{1,9})?s", fullmatch=True),
        st.one_of(st.from_regex(r"-?[0-9]{12,13}(\.[0-9]{1,10})?s", fullmatch=True), st.sampled_from(
            ["315576000000s", "315576000001s", "3.5", "1e3s", " 3s", "3s\n", "3.s", "3.1234567890s", "+3s"]))),
    "byte": (st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode()),
             st.one_of(st.binary(max_size=12).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
                       st.text(alphabet="AB+/-_=\n ", max_size=9))),
    "string": (st.text(max_size=8), st.sampled_from(["a\x00b", "\x00"])),
}


def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name)


class Bodies:
    """Draws a body for a schema; each value is a near miss with odds 1 in `odds` (never at 0)."""

    def __init__(self, draw, odds: int):
        self.draw, self.odds = draw, odds

    def miss(self, scale: int = 1) -> bool:
        return self.odds > 0 and self.draw(st.integers(0, self.odds * scale)) == 0

    def obj(self, schema: dict, depth: int):
        if self.miss(4):
            return self.draw(ANYTHING)
        declared, extra = schema.get("properties"), schema.get("additionalProperties")
        out: dict = {}
        if depth > MAX_GENERATED_DEPTH:
            return out
        limit = 6 if depth < 4 else 2
        if declared:
            names = st.sampled_from(sorted(declared))
            for key in self.draw(st.lists(names, unique=True, max_size=min(limit, len(declared)))):
                item = None if self.miss(4) else self.value(declared[key], depth + 1)
                out[snake(key) if self.miss(2) else key] = item
        elif extra:
            for key in self.draw(st.lists(st.text(max_size=5), unique=True, max_size=limit)):
                out[key] = None if self.miss(4) else self.value(extra, depth + 1)
        if self.miss(4):
            out[self.draw(st.sampled_from(["colour", "F0", "f0", "a\x00"]))] = 1
        return out

    def value(self, schema: dict, depth: int):
        if "$ref" in schema:
            return self.obj(DISCOVERY.schema(schema["$ref"]), depth)
        kind, fmt = schema.get("type"), schema.get("format")
        if kind == "any" or kind is None and "properties" not in schema:
            if self.miss():  # past the fast types' free-form levels, or past the slow path's limit
                levels = self.draw(st.sampled_from([6, 7, 8, 99 - depth, 100 - depth, 101 - depth]))
                return nested(levels, self.draw(json_values(3)))
            return self.draw(json_values())
        if kind == "object":
            return self.obj(schema, depth)
        if kind == "array":
            if self.miss(4):
                return self.draw(ANYTHING)
            size = 0 if depth > MAX_GENERATED_DEPTH else self.draw(st.integers(0, 3 if depth < 6 else 1))
            return [self.value(schema.get("items", {}), depth + 1) for _ in range(size)]
        if self.miss(4):
            return self.draw(ANYTHING)
        if "enum" in schema:
            names = schema["enum"]
            return self.draw(st.sampled_from(names)) if not self.miss() else self.draw(st.one_of(
                st.integers(-1, len(names) + 1), st.integers(0, len(names)).map(str), st.just(names[0].lower())))
        if kind == "integer" and fmt not in ("int64", "uint64"):
            fmt = "uint32" if fmt == "uint32" else "int32"
        elif kind == "number":
            fmt = "float" if fmt == "float" else "double"
        canonical, near = SCALARS.get(fmt) or SCALARS["boolean" if kind == "boolean" else "string"]
        return self.draw(near if self.miss() else canonical)


def dumps(draw, body) -> bytes:
    # json, not orjson: it writes integers beyond 64 bits, and escapes non-ASCII when asked.
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(body, ensure_ascii=draw(st.booleans()), separators=separators).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), name=st.sampled_from(SCHEMAS), odds=st.sampled_from([0, 300, 40, 6]))
def test_fast_path_answers_what_the_slow_path_answers(data, name, odds):
    body = Bodies(data.draw, odds).obj(DISCOVERY.schema(name), 1)
    check(dumps(data.draw, body if body is not None else {}), name)


# ---- near misses by hand: each must go the slow way, and still agree --------------------------

MESSAGE = {"labels": {"JOB_ID": "j"}, "time": "2026-01-02T03:04:05.000006Z",
           "workerMetrics": {"cpuTime": [{"timestamp": "2026-01-02T03:04:05.000000Z", "rate": 0.5, "totalMs": "42"}]}}


def with_message(**changes) -> bytes:
    return orjson.dumps({"workerMessages": [MESSAGE | changes]})


@pytest.mark.parametrize("raw, fast", [
    (with_message(), True),
    (with_message(time="2024-02-29T00:00:00.000000Z"), False),  # real, but left to the slow path
    (with_message(time="2023-02-29T00:00:00.000000Z"), False),
    (with_message(time="2026-04-31T00:00:00.000000Z"), False),
    (with_message(time="2026-01-02T03:04:05Z"), False),
    (with_message(time="2026-01-02T03:04:05.000006Z\n"), False),
    (with_message(time="0000-01-02T03:04:05.000006Z"), False),
    (with_message(time=None), False),
    (with_message(workerMetrics={"cpuTime": [{"totalMs": "-0"}]}), False),
    (with_message(workerMetrics={"cpuTime": [{"totalMs": "042"}]}), False),
    (with_message(workerMetrics={"cpuTime": [{"totalMs": "42\n"}]}), False),
    (with_message(workerMetrics={"cpuTime": [{"totalMs": 42}]}), False),
    (with_message(workerMetrics={"cpuTime": [{"total_ms": "42"}]}), False),
    (with_message(workerMetrics={"cpuTime": [{"rate": "NaN"}]}), False),
    (with_message(workerHealthReport={"reportInterval": "10s", "vmIsHealthy": True}), True),
    (with_message(workerHealthReport={"reportInterval": "315576000000s"}), False),
    (with_message(workerShutdownNotice={"reason": "PREEMPTION"}), True),
    (with_message(workerLifecycleEvent={"event": 1}), False),
    (with_message(labels={"JOB_ID": "a\x00"}), False),
    (with_message(colour="red"), False),
    (b'{"workerMessages": [], "location": "x"}', True),
    (b'{"workerMessages": [null]}', False),
    (b"[]", False),
    (b'{"workerMessages": [', False),
])
def test_near_misses_take_the_slow_path(raw, fast):
    assert check(raw, "SendWorkerMessagesRequest") is fast


@pytest.mark.parametrize("item, fast", [
    ({"int64Value": "-42"}, True),
    ({"int64Value": "123456789012345678"}, True),
    ({"int64Value": "1234567890123456789"}, False),  # in range, but 19 digits are left to the slow path
    ({"int64Value": "-0"}, False),
    ({"int64Value": "007"}, False),
    ({"int64Value": 42}, False),
    ({"floatValue": 1.5}, True),
    ({"floatValue": -3.4028234663852886e38}, True),
    ({"floatValue": 3.5e38}, False),
    ({"floatValue": 10**39}, False),
    ({"floatValue": 2**63}, False),
    ({"floatValue": "1.5"}, False),
    ({"durationValue": "-99999999999.123456789s"}, True),
    ({"durationValue": "315576000000s"}, False),
    ({"timestampValue": "2028-12-31T23:59:59.999999Z"}, True),
    ({"timestampValue": "2028-02-29T23:59:59.999999Z"}, False),
    ({"timestampValue": "2028-02-30T23:59:59.999999Z"}, False),
    ({"timestampValue": "2028-12-31T23:59:60.000000Z"}, False),
    ({"timestampValue": "2028-12-31T24:00:00.000000Z"}, False),
    ({"timestampValue": "2028-12-31T23:59:59.999999+00:00"}, False),
])
def test_scalar_near_misses(item, fast):
    raw = json.dumps({"name": "x", "pipelineDescription": {"displayData": [{"key": "k"} | item]}}).encode()
    assert check(raw, "Job") is fast


@pytest.mark.parametrize("value, fast", [
    ("", True), ("AB==", True), ("ABC=", True), ("AB+/", True),
    ("AB", False), ("-_8=", False),  # valid, left to the slow path
    ("A", False), ("A==", False), ("AB=C", False), ("AB==\n", False),
])
def test_bytes(value, fast):
    assert check(orjson.dumps({"userWorkerRunnerV1Settings": value}), "StreamingConfigTask") is fast


@pytest.mark.parametrize("depth, fast", [(5, True), (6, True), (7, False), (97, False), (98, False), (5000, False)])
def test_free_form_nesting(depth, fast):
    # The value sits at depth 4: 97 levels reach the slow path's limit of 100, 98 pass it.
    raw = b'{"name": "x", "environment": {"sdkPipelineOptions": {"o": ' + b"[" * depth + b"]" * depth + b"}}}"
    assert check(raw, "Job") is fast


def test_recursive_schemas_are_unrolled_three_times():
    def report(depth: int) -> dict:
        return {"cpuTime": [{"rate": 1.5}]} | ({"containers": {"c": report(depth - 1)}} if depth > 1 else {})
    for depth, fast in ((3, True), (4, False), (40, False)):
        raw = orjson.dumps({"workerMessages": [{"workerMetrics": report(depth)}]})
        assert check(raw, "SendWorkerMessagesRequest") is fast


@pytest.mark.parametrize("raw", [b"", b"  \n", b"{}", b" {} "])
def test_empty_bodies(raw):
    assert CODEC.decode_json(raw, "Job") == {}


def test_the_benchmarks_worker_messages_are_fast_pathed():
    start = datetime(2026, 1, 2, tzinfo=timezone.utc)
    fleet = Fleet([Worker(f"2026-01-02_00_00_00-{j}", f"w{j}-{w}", start) for j in range(4) for w in range(8)])
    for size in (1, 100, 100, 100, 1, 100):  # start-up events first, then the steady stream
        raw = fleet.take(size)[0]
        assert CODEC.fast_accepts(raw, "SendWorkerMessagesRequest")
        assert CODEC.decode_json(raw, "SendWorkerMessagesRequest") == orjson.loads(raw)
