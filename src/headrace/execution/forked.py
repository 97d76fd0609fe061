"""SDK workers forked from the executor instead of started cold.

A fresh `python -m apache_beam.runners.worker.sdk_worker_main` spends seconds importing
Beam before it does any work, once per SDK worker and job. The executor has imported Beam
already, so it forks its SDK workers ("zygotes") up front, before any gRPC channel or server
exists (gRPC does not survive a fork once in use); each waits on a pipe for the endpoints
Beam's FnApiRunner hands a new worker, then runs Beam's own SDK harness main, exactly as the
subprocess would. Beam's environment registry is how FnApiRunner finds the handler below.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import traceback

from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from google.protobuf import json_format, text_format

URN = "headrace:env:forked_python_sdk:v1"


class Zygotes:
    def __init__(self, count: int):
        self._waiting: list[tuple[int, int]] = []  # (pid, write end of its pipe)
        for _ in range(count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(write)
                for _, fd in self._waiting:  # siblings' pipes: they must see EOF when we exit
                    os.close(fd)
                _become_sdk_worker(read)
            os.close(read)
            self._waiting.append((pid, write))

    def start(self, env: dict) -> int | None:
        """Hand `env` to a waiting zygote; its pid, or None when none is left."""
        if not self._waiting:
            return None
        pid, fd = self._waiting.pop(0)
        with os.fdopen(fd, "w") as pipe:
            json.dump(env, pipe)
        return pid

    def close(self) -> None:
        """Release the unused ones: EOF on their pipe makes them exit."""
        for pid, fd in self._waiting:
            os.close(fd)
            os.waitpid(pid, 0)
        self._waiting = []


def _become_sdk_worker(fd: int) -> None:
    code = 0
    try:
        with os.fdopen(fd) as pipe:
            data = pipe.read()
        if data:
            env = json.loads(data)
            os.environ.update(env)
            # Log straight to the executor's log, one line per record, rather than through the
            # runner's logging service, which prints each record as a multi-line proto.
            logging.basicConfig(force=True, level=logging.INFO,
                                format=f"%(asctime)s %(levelname)s {env['WORKER_ID']} %(name)s: %(message)s")
            from apache_beam.runners.worker import sdk_worker_main

            sdk_worker_main.main([])
    except BaseException:  # noqa: BLE001 - report and exit, never return into the executor's code
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


@worker_handlers.WorkerHandler.register_environment(URN, bytes)
class ForkedSdkWorkerHandler(worker_handlers.GrpcWorkerHandler):
    """Like Beam's SubprocessSdkWorkerHandler, but takes a zygote when one is left. The
    payload is the command to start one cold otherwise."""

    zygotes: Zygotes | None = None  # set by the executor, which runs one pipeline per process

    def __init__(self, payload: bytes, state, provision_info, grpc_server):
        super().__init__(state, provision_info, grpc_server)
        self._command = payload
        self._pid: int | None = None
        self._cold = None

    def start_worker(self) -> None:
        env = {
            "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(self.control_api_service_descriptor()),
            "PIPELINE_OPTIONS": json_format.MessageToJson(self.provision_info.provision_info.pipeline_options),
            "WORKER_ID": self.worker_id,
        }
        if self.zygotes is not None:
            self._pid = self.zygotes.start(env)
        if self._pid is None:  # what SubprocessSdkWorkerHandler does
            worker = local_job_service.SubprocessSdkWorker(
                self._command, self.control_address, self.provision_info, self.worker_id)
            self._cold = threading.Thread(name="run_worker", target=worker.run)
            self._cold.start()

    def stop_worker(self) -> None:
        if self._pid is not None:
            _reap(self._pid)
        elif self._cold is not None:
            self._cold.join()


def _reap(pid: int, patience: float = 10.0) -> None:
    """The harness exits once the runner closes its control stream; one that does not (a
    user thread that never ends, say) must not keep the executor from reporting."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
