"""What a running pipeline reports: its fused stages and their state, user metrics and element
counts, rebuilt from the MonitoringInfos Beam's SDK harness returns with every bundle."""

from __future__ import annotations

import itertools
import threading
import time

from apache_beam.metrics import monitoring_infos as mi
from apache_beam.portability.api import beam_runner_api_pb2

PENDING, RUNNING, DONE = "PENDING", "RUNNING", "DONE"
# How FnApiRunner's fused stages exchange data: a read or a write of a runner buffer; an
# impulse is a read of the impulse buffer (fn_api_runner.translations).
SOURCE, SINK, IMPULSE = "beam:runner:source:v1", "beam:runner:sink:v1", b"impulse"


def _merge(old: list, new) -> list:
    """Sum counters and distributions; for gauges keep the latest value."""
    merged: dict = {}
    for info in mi.consolidate(itertools.chain(old, new)):
        key = mi.to_key(info)
        if key in merged and mi.is_gauge(info) and \
                mi.extract_gauge_value(merged[key])[0] > mi.extract_gauge_value(info)[0]:
            continue
        merged[key] = info
    return list(merged.values())


class Tracker:
    """Collects per-stage MonitoringInfos as bundles finish; thread-safe, since Beam may run
    bundles on several threads when there are several SDK workers."""

    def __init__(self, pipeline: beam_runner_api_pb2.Pipeline):
        transforms = pipeline.components.transforms
        self._user_names = {tid: t.unique_name for tid, t in transforms.items()}
        self._all_names = set(self._user_names.values())
        self._leaf_names = {t.unique_name for t in transforms.values() if not t.subtransforms}
        self._pcollections = set(pipeline.components.pcollections)
        # The innermost transform that produces each PCollection, and under which output tag.
        self._producers = {}
        for t in transforms.values():
            if not t.subtransforms:
                for tag, pcollection in t.outputs.items():
                    self._producers[pcollection] = (t.unique_name, tag)
        self._lock = threading.Lock()
        self._stages: list[dict] = []
        self._infos: dict[str, list] = {}

    def begin(self, stages) -> None:
        """`stages`: Beam's fused stages, in the order they will run. Besides its state, each
        stage says what it runs (`transforms`: the runner's transforms, each with the user's
        transform it comes from), what it reads from and writes for other stages (`inputs`,
        `outputs`) and the stages it must follow (`prerequisites`)."""
        ids = {s.name: f"F{i}" for i, s in enumerate(stages)}
        with self._lock:
            self._stages = [{"id": ids[s.name], "name": s.name, "state": PENDING,
                             "steps": [t.unique_name for t in s.transforms if t.unique_name in self._leaf_names],
                             **self._structure(s),
                             "prerequisites": sorted((ids[m.name] for m in s.must_follow if m.name in ids),
                                                     key=lambda i: int(i[1:]))}
                            for s in stages]

    def _structure(self, stage) -> dict:
        parts: dict[str, list] = {"transforms": [], "inputs": [], "outputs": []}
        impulses = []
        for t in stage.transforms:
            entry = {"name": t.unique_name, "original": self._original(t.unique_name)}
            if t.spec.urn == SOURCE and t.spec.payload == IMPULSE:
                impulses.append(entry)  # the user's Impulse: where the stage starts
            elif t.spec.urn in (SOURCE, SINK):
                parts["inputs" if t.spec.urn == SOURCE else "outputs"].append(entry)
            else:
                parts["transforms"].append(entry)
        parts["transforms"][:0] = impulses
        return parts

    def _original(self, name: str) -> str:
        """The user's transform a runner transform comes from: itself, or the innermost user
        transform whose name prefixes it (GroupAndSum/Precombine is GroupAndSum's); for the
        runner's buffer of a PCollection (ref_PCollection_..._split/Write), its producer."""
        pcollection = name.partition("/")[0].removesuffix("_split")
        if pcollection in self._producers:
            return self._producers[pcollection][0]
        while name and name not in self._all_names:
            name = name.rpartition("/")[0]
        return name

    def bundle_started(self, stage_name: str) -> None:
        """A stage runs from its first bundle's start; `start` and `end` are Unix times."""
        with self._lock:
            for stage in self._stages:
                if stage["name"] == stage_name and stage["state"] == PENDING:
                    stage |= {"state": RUNNING, "start": time.time()}

    def bundle_done(self, stage_name: str, infos, stage_done: bool) -> None:
        with self._lock:
            self._infos[stage_name] = _merge(self._infos.get(stage_name, []), infos)
            for stage in self._stages:
                if stage["name"] == stage_name and stage_done:
                    self._done(stage)

    def finish(self) -> None:
        with self._lock:
            for stage in self._stages:
                self._done(stage)

    @staticmethod
    def _done(stage: dict) -> None:
        if stage["state"] != DONE:
            now = time.time()
            stage |= {"state": DONE, "start": stage.get("start", now), "end": now}

    def stages(self) -> list[dict]:
        with self._lock:
            return [dict(s) for s in self._stages]

    def fraction(self) -> float:
        with self._lock:
            if not self._stages:
                return 0.0
            return sum(s["state"] == DONE for s in self._stages) / len(self._stages)

    def metrics(self) -> dict:
        with self._lock:
            per_stage = [list(infos) for infos in self._infos.values()]
        out: dict = {"counters": [], "distributions": [], "gauges": [], "string_sets": [], "element_counts": []}
        counts: dict[str, int] = {}
        for infos in per_stage:
            for info in infos:
                if mi.is_user_monitoring_info(info):
                    entry = self._user_metric(info)
                    if entry:
                        out[entry.pop("kind")].append(entry)
                elif info.urn == mi.ELEMENT_COUNT_URN:
                    pcollection = info.labels.get(mi.PCOLLECTION_LABEL, "")
                    # A PCollection crossing stages is counted by its producer and its
                    # consumer alike: the same number, so keep one.
                    counts[pcollection] = max(counts.get(pcollection, 0), mi.extract_counter_value(info))
        for pcollection, count in sorted(counts.items()):
            if pcollection not in self._pcollections:
                continue  # a runner-internal PCollection, not one of the user's
            producer, tag = self._producers.get(pcollection, ("", ""))
            out["element_counts"].append({"pcollection": pcollection, "producer": producer, "output": tag,
                                          "count": count})
        return out

    def _user_metric(self, info) -> dict | None:
        step = mi.get_step_name(info) or ""
        namespace, name = mi.parse_namespace_and_name(info)
        entry = {"step": step, "step_name": self._user_names.get(step, step),
                 "namespace": namespace, "name": name}
        if mi.is_counter(info):
            return entry | {"kind": "counters", "value": mi.extract_counter_value(info)}
        if mi.is_distribution(info):
            count, total, low, high = mi.extract_distribution(info)
            return entry | {"kind": "distributions", "count": count, "sum": total, "min": low, "max": high}
        if mi.is_gauge(info):
            seconds, value = mi.extract_gauge_value(info)
            return entry | {"kind": "gauges", "value": value, "timestamp": seconds}
        if mi.is_string_set(info):
            return entry | {"kind": "string_sets", "values": sorted(mi.extract_string_set_value(info))}
        return None
