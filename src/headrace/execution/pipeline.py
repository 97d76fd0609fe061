"""Running a staged portable pipeline with Beam's own FnApiRunner, its Docker environment
swapped for SDK worker processes of this same Python and Beam."""

from __future__ import annotations

import re
import shlex
import sys
from typing import Callable

import apache_beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_provision_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.utils import timestamp
from google.protobuf import struct_pb2

from headrace.execution import CannotRun, forked
from headrace.execution.monitoring import Tracker

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SDK = re.compile(r"beam_python(\d+\.\d+)_sdk:([\w.+-]+)")
# Keys the Dataflow service adds to the submitted options; Beam's parser does not know them.
SERVICE_KEYS = ("pipelineUrl", "pipelineProtoHash")


class UnsupportedPipeline(CannotRun):
    """This Python and Beam cannot run the pipeline; the message says why and what to do."""


def parse(data: bytes) -> beam_runner_api_pb2.Pipeline:
    pipeline = beam_runner_api_pb2.Pipeline()
    try:
        pipeline.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, or worse on garbage
        raise UnsupportedPipeline(f"The staged pipeline is not a valid Beam pipeline proto ({exc}); "
                                  "it may be truncated or corrupt. Submit the job again.") from None
    if not pipeline.root_transform_ids or not pipeline.components.transforms:
        raise UnsupportedPipeline("The staged pipeline is not a valid Beam pipeline proto (it has no "
                                  "transforms); it may be truncated or corrupt. Submit the job again.")
    return pipeline


def fix_options(options: dict) -> dict:
    """Options as Beam's parser takes them. The job's JSON turns integers into floats (1.0),
    which argparse's int rejects; Beam's own PortableRunner sends integers as strings for
    the same reason (BEAM-5509), and "2" still parses as a float where one is wanted."""

    def fix(value):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return {k: fix(v) for k, v in options.items() if v is not None and k not in SERVICE_KEYS}


def _sdk_of(environment: beam_runner_api_pb2.Environment) -> tuple[str, str] | None:
    """(python, beam) versions of a Beam Python SDK environment, else None."""
    texts = [c for c in environment.capabilities if c.startswith("beam:version:sdk_base:")]
    if environment.urn == common_urns.environments.DOCKER.urn:
        payload = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
        texts.append(payload.container_image)
    for text in texts:
        match = SDK.search(text)
        if match:
            return match.group(1), match.group(2)
    return None


def use_local_sdk(pipeline: beam_runner_api_pb2.Pipeline, command: str) -> None:
    """Run every Beam Python SDK environment as SDK workers of this Python and Beam (there
    is no Docker engine): forked ones, else subprocesses running `command`. Refuse what
    this Python and Beam cannot run."""
    for env_id, env in pipeline.components.environments.items():
        if env.urn != common_urns.environments.DOCKER.urn:
            continue
        sdk = _sdk_of(env)
        if sdk is None:
            image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
            raise UnsupportedPipeline(
                f"Environment {env_id} runs the container {image}, which is not a Beam Python SDK: "
                "cross-language transforms need a Docker engine and are not supported by Headrace's "
                "local workers.")
        if sdk != (PYTHON, apache_beam.__version__):
            raise UnsupportedPipeline(
                f"This pipeline was submitted with Apache Beam {sdk[1]} on Python {sdk[0]}; Headrace's "
                f"workers run Apache Beam {apache_beam.__version__} on Python {PYTHON}. Submit it from "
                f"an environment with Python {PYTHON} and apache-beam=={apache_beam.__version__}.")
        env.urn = forked.URN
        env.payload = command.encode()
        del env.dependencies[:]  # already in the staged dir, where the SDK harness looks


class _Runner(fn_runner.FnApiRunner):
    """FnApiRunner that tells a Tracker about stages and finished bundles.

    The hooks are FnApiRunner internals of the pinned Beam version (run_stages,
    _execute_bundle); they only observe, so the pipeline runs exactly as Beam runs it."""

    def __init__(self, tracker: Tracker, changed: Callable[[], None], sdk_workers: int, **kwargs):
        super().__init__(**kwargs)
        self._tracker = tracker
        self._changed = changed
        self._num_workers = sdk_workers  # what direct_num_workers sets in run_pipeline

    def run_stages(self, stage_context, stages):
        self._tracker.begin(stages)
        self._changed()
        return super().run_stages(stage_context, stages)

    def _execute_bundle(self, context, bundle_context_manager, bundle_input):
        name = bundle_context_manager.stage.name
        self._tracker.bundle_started(name)
        self._changed()
        result = super()._execute_bundle(context, bundle_context_manager, bundle_input)
        done = context.watermark_manager.get_stage_node(name).output_watermark() >= timestamp.MAX_TIMESTAMP
        self._tracker.bundle_done(name, result.process_bundle.monitoring_infos, done)
        self._changed()
        return result


def run(pipeline: beam_runner_api_pb2.Pipeline, options: dict, sdk_workers: int,
        tracker: Tracker, changed: Callable[[], None]) -> None:
    """Run to completion; raises what the pipeline raised."""
    command = f"{shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
    use_local_sdk(pipeline, command)
    # SDK workers read their options (pickle library, experiments, ...) from the provision info.
    struct = struct_pb2.Struct()
    struct.update({"options": options})
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=struct, retrieval_token="unused-retrieval-token"))
    runner = _Runner(tracker, changed, sdk_workers, provision_info=provision)
    forked.ForkedSdkWorkerHandler.zygotes = forked.Zygotes(sdk_workers)
    try:
        runner.run_via_runner_api(pipeline, PipelineOptions.from_dictionary(options))
    finally:
        forked.ForkedSdkWorkerHandler.zygotes.close()
    tracker.finish()
    changed()
