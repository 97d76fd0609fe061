"""jobs.getMetrics, and the metric store that workers' status reports feed.

Workers report MetricUpdates (name{origin, name, context} and a value) or CounterUpdates
(Dataflow's worker counter format, converted here). Each metric is one row holding the job's
aggregate: a cumulative update replaces it, a delta merges into it by the metric's kind.
getMetrics answers every metric twice, committed and with context tentative="true", as
Dataflow does and as Beam's DataflowMetrics pairs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
from sqlalchemy.engine import Connection

from headrace import wire
from headrace.config import Config
from headrace.errors import invalid
from headrace.service.jobs import Jobs
from headrace.store import Store
from headrace.store import metrics as metric_rows

USER, SYSTEM = "user", "dataflow/v1b3"
# Beam keeps user metrics by origin "user" and system ones by "dataflow/v1b3"; a blank origin
# is a user metric (MetricStructuredName.origin says so).
ORIGINS = {"": USER, "user": USER, "dataflow": SYSTEM, "dataflow/v1b3": SYSTEM, "system": SYSTEM}
# CounterUpdate kinds as MetricUpdate kinds; LATEST_VALUE becomes a `gauge` without a kind.
KINDS = {"SUM": "Sum", "MAX": "Max", "MIN": "Min", "MEAN": "Mean", "OR": "Or", "AND": "And",
         "SET": "Set", "DISTRIBUTION": "Distribution"}
VALUES = ("scalar", "distribution", "gauge", "meanSum", "meanCount", "set", "trie", "boundedTrie",
          "internal")
SET_LISTS = ("integerList", "floatingPointList", "stringList")
RULES = {"sum", "max", "min", "and", "or", "mean", "set", "distribution"}
# Unstructured system counters named "<output>-ElementCount" (Dataflow's worker names).
OUTPUT_COUNTERS = ("ElementCount", "MeanByteCount")


@dataclass
class Metrics:
    config: Config
    store: Store
    jobs: Jobs

    def record(self, conn: Connection, job_id: str, metric_updates: list[dict],
               counter_updates: list[dict], now: str) -> None:
        """Merge one status report's metrics into the job's, inside the caller's transaction.

        `now` must be taken inside that transaction: getMetrics relies on it to hand out a
        metricTime after which nothing older can still appear.
        """
        updates = [_metric(u, now) for u in metric_updates]
        updates += [_metric(_from_counter(c), now) for c in counter_updates]
        if not updates:
            return
        keys = [orjson.dumps(u["name"], option=orjson.OPT_SORT_KEYS).decode() for u, _ in updates]
        stored = metric_rows.get_many(conn, job_id, sorted(set(keys)))
        merged: dict[str, dict] = {}
        for key, (update, cumulative) in zip(keys, updates):
            merged[key] = _merge(merged.get(key, stored.get(key)), update, cumulative) | {"updateTime": now}
        for key, body in merged.items():
            metric_rows.save(conn, job_id, key, now, body, exists=key in stored)

    def get(self, project_id: str, location: str, job_id: str, start_time: str | None) -> dict:
        # Read under the writers' lock: every update stamped before metricTime has committed,
        # so a client polling with startTime = its last metricTime misses nothing.
        with self.store.write() as conn:
            self.jobs.load(conn, project_id, location, job_id)
            rows = metric_rows.list_(conn, job_id, start_time)
            metric_time = wire.format_time(wire.now())
        return {"metrics": [copy for row in rows for copy in _committed_and_tentative(row)],
                "metricTime": metric_time}


def _committed_and_tentative(metric: dict) -> tuple[dict, dict]:
    # One value serves both: Headrace has no separate commit of a work item's results.
    name = metric["name"]
    tentative = {**name, "context": {**name["context"], "tentative": "true"}}
    return metric, {**metric, "name": tentative}


# ---- normalising updates ---------------------------------------------------------------

def _metric(update: dict, now: str) -> tuple[dict, bool]:
    """A reported MetricUpdate in stored form, and whether it is cumulative."""
    name = update.get("name") or {}
    if not name.get("name"):
        raise invalid("Every metric update needs name.name (MetricUpdate) or a counter name "
                      "(CounterUpdate).")
    label = name["name"]
    origin = name.get("origin", "")
    context = {k: v for k, v in (name.get("context") or {}).items() if k != "tentative"}
    out: dict = {"name": {"origin": ORIGINS.get(origin.lower(), origin), "name": label, "context": context}}
    if update.get("kind"):
        out["kind"] = update["kind"][:1].upper() + update["kind"][1:].lower()  # case-insensitive
    out |= {f: update[f] for f in VALUES if f in update}
    rule = _rule(out)
    if rule in ("sum", "max", "min"):
        out["scalar"] = _number(out.get("scalar"), label, "scalar")
    elif rule in ("and", "or") and not isinstance(out.get("scalar"), bool):
        raise invalid(f"Metric {label!r} of kind {out['kind']} needs a boolean scalar.")
    elif rule == "mean":
        out["meanSum"] = _number(out.get("meanSum"), label, "meanSum")
        out["meanCount"] = _number(out.get("meanCount"), label, "meanCount")
    elif rule == "set" and not isinstance(out.get("set"), list):
        raise invalid(f"Metric {label!r} of kind Set needs `set`, a list of values.")
    elif rule == "distribution":
        out["distribution"] = _distribution(out.get("distribution"), label)
    elif rule == "gauge":
        out["gauge"] = _gauge(out["gauge"], label, now)
    elif not any(f in out for f in VALUES):
        raise invalid(f"Metric {label!r} carries no value: set scalar, distribution, gauge, "
                      "meanSum and meanCount, or set.")
    return out, bool(update.get("cumulative"))


def _rule(metric: dict) -> str:
    kind = metric.get("kind", "").lower()
    if kind in RULES:
        return kind
    for field, rule in (("distribution", "distribution"), ("gauge", "gauge"), ("set", "set"),
                        ("meanSum", "mean")):
        if field in metric:
            return rule
    return "sample"  # "If omitted, this is not an aggregated value but a single sample"


def _number(value, label: str, field: str):
    if isinstance(value, dict) and {"highBits", "lowBits"} >= value.keys():
        value = _split(value)
    elif isinstance(value, str):
        try:
            value = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"Metric {label!r}: {field} must be a finite number, got {value!r:.80}.")
    return value


def _split(value: dict) -> int:
    """SplitInt64: a signed 32-bit high word and an unsigned 32-bit low word."""
    high, low = value.get("highBits", 0), value.get("lowBits", 0)
    words_ok = all(isinstance(w, int) and not isinstance(w, bool) for w in (high, low))
    if not (words_ok and -2**31 <= high < 2**31 and 0 <= low < 2**32):
        raise invalid(f"A SplitInt64 needs highBits in the int32 range and lowBits in the uint32 range, "
                      f"got {value!r:.120}.")
    return (high << 32) | low


def _distribution(value, label: str) -> dict:
    if not isinstance(value, dict):
        raise invalid(f"Metric {label!r}: distribution must be an object with count, sum, min, max.")
    count = _number(value.get("count", 0), label, "distribution.count")
    total = _number(value.get("sum", 0), label, "distribution.sum")
    bounds = ("min", "max") if count else ()
    out = {"count": count, "sum": total, "min": 0, "max": 0}
    out |= {b: _number(value.get(b), label, f"distribution.{b}") for b in bounds}
    if "sumOfSquares" in value:
        out["sumOfSquares"] = _number(value["sumOfSquares"], label, "distribution.sumOfSquares")
    return out | {"mean": total / count if count else 0}


def _gauge(value, label: str, now: str) -> dict:
    if not isinstance(value, dict) or "value" not in value:
        raise invalid(f"Metric {label!r}: gauge must be an object with value and timestamp.")
    try:
        stamp = wire.format_time(wire.parse_time(value["timestamp"])) if value.get("timestamp") else now
    except (TypeError, ValueError):
        raise invalid(f"Metric {label!r}: gauge.timestamp must be an RFC 3339 time.") from None
    return {"value": _number(value["value"], label, "gauge.value"), "timestamp": stamp}


# ---- CounterUpdate → MetricUpdate ---------------------------------------------------------

def _from_counter(counter: dict) -> dict:
    if "structuredNameAndMetadata" in counter:
        named = counter["structuredNameAndMetadata"]
        name = _structured(named.get("name") or {})
        kind = (named.get("metadata") or {}).get("kind")
    elif "nameAndKind" in counter:
        name = _unstructured(counter["nameAndKind"].get("name", ""))
        kind = counter["nameAndKind"].get("kind")
    else:
        raise invalid("A CounterUpdate needs nameAndKind or structuredNameAndMetadata: Headrace "
                      "assigns no short ids, so shortId alone does not name a counter.")
    update: dict = {"name": name, "cumulative": counter.get("cumulative", False)}
    if kind in KINDS:
        update["kind"] = KINDS[kind]
    if "integer" in counter:
        update["scalar"] = _split(counter["integer"])
    elif "floatingPoint" in counter:
        update["scalar"] = counter["floatingPoint"]
    elif "boolean" in counter:
        update["scalar"] = counter["boolean"]
    elif "integerMean" in counter or "floatingPointMean" in counter:
        mean = counter.get("integerMean") or counter["floatingPointMean"]
        update["meanSum"], update["meanCount"] = mean.get("sum", 0), mean.get("count", 0)
    elif "distribution" in counter:
        dist = counter["distribution"]
        update["distribution"] = {k: v for k, v in dist.items() if k != "histogram"}
    elif "integerGauge" in counter:
        update["gauge"] = counter["integerGauge"]
    elif (listed := next((counter[f] for f in SET_LISTS if f in counter), None)) is not None:
        update["set"] = [_split(e) if isinstance(e, dict) else e for e in listed.get("elements", [])]
    else:
        update |= {f: counter[f] for f in ("boundedTrie", "internal") if f in counter}
    return update


def _structured(name: dict) -> dict:
    labels = {"step": name.get("originalStepName") or name.get("componentStepName"),
              "namespace": name.get("originNamespace"),
              "execution_step": name.get("executionStepName"),
              "original_requesting_step": name.get("originalRequestingStepName"),
              "input_index": str(name["inputIndex"]) if "inputIndex" in name else None,
              "portion": name.get("portion"),
              "worker_id": name.get("workerId")}
    return {"origin": USER if name.get("origin") == "USER" else SYSTEM, "name": name.get("name", ""),
            "context": {k: v for k, v in labels.items() if v}}


def _unstructured(name: str) -> dict:
    for counter in OUTPUT_COUNTERS:
        if name.endswith(f"-{counter}"):
            return {"origin": SYSTEM, "name": counter,
                    "context": {"original_name": name, "output_user_name": name[:-len(counter) - 1]}}
    return {"origin": SYSTEM, "name": name, "context": {}}


# ---- merging ------------------------------------------------------------------------------

def _merge(old: dict | None, new: dict, cumulative: bool) -> dict:
    rule = _rule(new)
    if old is None or cumulative or rule != _rule(old):
        return new  # a cumulative value is the whole aggregate; so is a change of kind
    out = dict(new)
    if rule == "sum":
        out["scalar"] = old["scalar"] + new["scalar"]
    elif rule in ("max", "min"):
        out["scalar"] = (max if rule == "max" else min)(old["scalar"], new["scalar"])
    elif rule in ("and", "or"):
        out["scalar"] = (old["scalar"] and new["scalar"]) if rule == "and" else (old["scalar"] or new["scalar"])
    elif rule == "mean":
        out["meanSum"] = old["meanSum"] + new["meanSum"]
        out["meanCount"] = old["meanCount"] + new["meanCount"]
    elif rule == "set":
        out["set"] = old["set"] + [v for v in new["set"] if v not in old["set"]]
    elif rule == "distribution":
        out["distribution"] = _merge_distributions(old["distribution"], new["distribution"])
    elif rule == "gauge" and old["gauge"]["timestamp"] > new["gauge"]["timestamp"]:
        out["gauge"] = old["gauge"]  # a gauge is its newest value, whichever report came last
    return out


def _merge_distributions(old: dict, new: dict) -> dict:
    if not old["count"] or not new["count"]:
        return new if new["count"] else old
    count, total = old["count"] + new["count"], old["sum"] + new["sum"]
    out = {"count": count, "sum": total, "min": min(old["min"], new["min"]),
           "max": max(old["max"], new["max"])}
    if "sumOfSquares" in old and "sumOfSquares" in new:
        out["sumOfSquares"] = old["sumOfSquares"] + new["sumOfSquares"]
    return out | {"mean": total / count}
