"""flexTemplates.launch: validate, answer with a QUEUED job at once, then run the launcher.

The launcher is the template's Python main (FLEX_TEMPLATE_PYTHON_PY_FILE), run from the
template's source package in an environment with its requirements installed (built once per
content hash), with the parameters as pipeline options. It runs with `--template_location`,
so Beam stages the pipeline and writes the job it built instead of creating one; Headrace
then attaches that job to the id the launch returned and runs it. A launcher that fails
fails the job with its own output in ERROR messages.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from headrace import flex_template
from headrace.config import Config
from headrace.errors import invalid, precondition
from headrace.execution import environment as job_environment
from headrace.service.jobs import Jobs, message
from headrace.service.templates import Templates, apply_runtime_environment, validate_parameters
from headrace.storage import Storage
from headrace.store import Store
from headrace.store import jobs as job_rows
from headrace.store import messages as message_rows

OUTPUT_TAIL = 60  # launcher output lines kept in the failure message
LAUNCH_SECONDS = 900  # a launcher still running after this is stopped and the job failed


@dataclass
class FlexTemplates:
    config: Config
    store: Store
    jobs: Jobs
    storage: Storage
    templates: Templates
    _running: dict[str, subprocess.Popen] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> Path:
        return Path(self.config.data_dir).resolve() / "flex"

    def launch(self, project_id: str, location: str, request: dict) -> dict:
        param = request.get("launchParameter") or {}
        spec = param.get("containerSpec") or self._spec(param.get("containerSpecGcsPath"))
        image = spec.get("image", "")
        if not flex_template.is_source_package(image):
            raise precondition(
                f"The flex template's image {image or '(none)'} is a container image, and Headrace has no "
                "container engine. Build the template from source with `headrace flex-template build "
                "SPEC_PATH --py-path DIR --env FLEX_TEMPLATE_PYTHON_PY_FILE=main.py --sdk-language PYTHON`.")
        parameters = param.get("parameters", {})
        validate_parameters(spec.get("metadata"), parameters)
        if request.get("validateOnly"):
            return {}
        runtime = {**spec.get("defaultEnvironment", {}), **param.get("environment", {})}
        body = {"name": param.get("jobName", ""), "labels": runtime.get("additionalUserLabels", {})}
        if param.get("transformNameMappings"):
            body["transformNameMapping"] = param["transformNameMappings"]
        replace = (self.templates.active_job_id(project_id, location, body["name"])
                   if param.get("update") else None)
        job = self.jobs.create(project_id, location, body, replace_job_id=replace,
                               initial_state="JOB_STATE_QUEUED")
        args = (job, image, {**parameters, **param.get("launchOptions", {})}, runtime)
        threading.Thread(target=self._launch, args=args, name=f"flex-{job['id']}", daemon=True).start()
        return {"job": job}

    def _spec(self, path: str | None) -> dict:
        if not path:
            raise invalid("launchParameter needs containerSpec or containerSpecGcsPath.")
        return self.templates.read_json(path, "flex template spec")

    # ---- the launcher --------------------------------------------------------------

    def _launch(self, job: dict, image: str, parameters: dict, runtime: dict) -> None:
        try:
            source = self._unpack(image)
            env = json.loads((source / flex_template.MANIFEST).read_text())["env"]
            out = self.root / "jobs" / job["id"]
            out.mkdir(parents=True, exist_ok=True)
            cache = self.requirements_cache(source) if env.get(flex_template.REQUIREMENTS) else None
            python = self._python(source, env, cache, out)
            done = self._run(job, python, source, env, cache, parameters, runtime, out)
            if done.returncode != 0 or not (out / "job.json").exists():
                self._fail(job["id"], f"Template launch failed: the launcher exited with code "
                                      f"{done.returncode}.", done.stdout)
                return
            built = json.loads((out / "job.json").read_text())
            apply_runtime_environment(built, runtime, {})
            self.jobs.attach(job["id"], built)
        except Exception as error:  # noqa: BLE001 - whatever broke, the job must not stay QUEUED
            self._fail(job["id"], f"Template launch failed: {error}", "")
        finally:
            with self._lock:
                self._running.pop(job["id"], None)

    def _unpack(self, image: str) -> Path:
        """The source package, unpacked once per content hash."""
        data = self.storage.read_bytes(image)
        target = self.root / "sources" / hashlib.sha256(data).hexdigest()
        if not (target / flex_template.MANIFEST).exists():
            tmp = target.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            tmp.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(tmp, filter="data")
            if target.exists():  # another launch unpacked it meanwhile
                shutil.rmtree(tmp)
            else:
                tmp.replace(target)
        return target

    def _python(self, source: Path, env: dict, cache: Path | None, out: Path) -> str:
        """The launcher's interpreter: ours, or an environment with the template's requirements."""
        if cache is None:
            return sys.executable
        (cache / job_environment.REQUIREMENTS).write_bytes((source / env[flex_template.REQUIREMENTS]).read_bytes())
        try:
            built = job_environment.ensure(cache, self.root / "environments", out / "install.log")
        except job_environment.InstallError as error:
            raise RuntimeError(f"the template's requirements did not install: {error}") from None
        return str(built.python)

    def requirements_cache(self, source: Path) -> Path:
        """Packages shipped beside the source (wheels, sdists) serve its requirements offline,
        as Beam's requirements cache does; the pipeline stages them for its workers too."""
        staged = self.root / "staged" / source.name
        staged.mkdir(parents=True, exist_ok=True)
        for archive in source.iterdir():
            if archive.is_file() and archive.name.endswith(job_environment.ARCHIVES):
                shutil.copyfile(archive, staged / archive.name)
        return staged

    def _run(self, job: dict, python: str, source: Path, env: dict, cache: Path | None,
             parameters: dict, runtime: dict, out: Path) -> subprocess.CompletedProcess:
        temp = self._local(runtime.get("tempLocation")) or str(out / "tmp")
        Path(temp).mkdir(parents=True, exist_ok=True)
        argv = [python, str(source / env[flex_template.PY_FILE]), "--runner=DataflowRunner",
                f"--project={job['projectId']}", f"--region={job['location']}", f"--job_name={job['name']}",
                f"--temp_location={temp}", f"--template_location={out / 'job.json'}", "--no_auth",
                f"--dataflow_endpoint=http://localhost:{self.config.port}"]
        if cache is not None:
            argv += [f"--requirements_file={source / env[flex_template.REQUIREMENTS]}",
                     f"--requirements_cache={cache}"]
        if env.get(flex_template.SETUP):
            argv.append(f"--setup_file={source / env[flex_template.SETUP]}")
        argv += [f"--{k}={v}" for k, v in parameters.items()]
        process = subprocess.Popen(argv, cwd=source, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **env, "PYTHONPATH": str(source)}, start_new_session=True)
        with self._lock:
            self._running[job["id"]] = process
        try:
            stdout, _ = process.communicate(timeout=LAUNCH_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, _ = process.communicate()
            stdout += f"\nThe launcher ran longer than {LAUNCH_SECONDS}s and was stopped."
        (out / "launcher.log").write_text(stdout)
        return subprocess.CompletedProcess(argv, process.returncode, stdout)

    def _local(self, url: str | None) -> str | None:
        if not url:
            return None
        path = self.storage.local_path(url)
        return str(path) if path is not None else None

    def _fail(self, job_id: str, summary: str, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL:])
        with self.store.write() as conn:
            job = job_rows.get(conn, job_id)
            if job is None or job["currentState"] != "JOB_STATE_QUEUED":
                return
            if tail:
                message_rows.insert_many(conn, job_id, [message("ERROR", f"Launcher output:\n{tail}")])
            self.jobs.transition(conn, job, "JOB_STATE_FAILED", summary, importance="ERROR")

    # ---- lifecycle -------------------------------------------------------------------

    def recover(self) -> None:
        """A launch interrupted by a restart cannot resume: fail it with a message saying so."""
        with self.store.read() as conn:
            queued = job_rows.ids_in_states(conn, ["JOB_STATE_QUEUED"])
        for job_id in queued:
            self._fail(job_id, "Template launch failed: Headrace restarted while the launcher ran; "
                               "launch the template again.", "")

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for process in running:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

