"""Classic templates: templates.get, templates.launch, templates.create.

A classic template is what Beam writes for `--template_location PATH`: the job's JSON (enums
as names) pointing at the staged pipeline, with optional metadata beside it at
`PATH_metadata`. Launching one validates the parameters against that metadata and creates a
job whose pipeline options carry the parameters, so ValueProvider options get them at run
time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from headrace.config import Config
from headrace.errors import ApiError, invalid, precondition
from headrace.service.jobs import Jobs
from headrace.storage import NotFound, Storage
from headrace.store import Store
from headrace.store import jobs as job_rows

VIOLATIONS_TYPE = "type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters"


@dataclass
class Templates:
    config: Config
    store: Store
    jobs: Jobs
    storage: Storage

    # ---- reading templates -----------------------------------------------------

    def read_json(self, url: str, what: str) -> dict:
        try:
            data = orjson.loads(self.storage.read_bytes(url))
        except NotFound:
            raise ApiError("NOT_FOUND", f"The {what} {url} was not found. Check the path; gs:// paths "
                           f"are read from {self.storage.gcs_root}/<bucket>/<object>.") from None
        except orjson.JSONDecodeError as error:
            raise precondition(f"The {what} {url} is not valid JSON: {error}.") from None
        if not isinstance(data, dict):
            raise precondition(f"The {what} {url} must hold a JSON object.")
        return data

    def metadata(self, template_path: str) -> dict | None:
        """The template's TemplateMetadata from PATH_metadata, if there is one."""
        url = f"{template_path}_metadata"
        return self.read_json(url, "template metadata file") if self.storage.exists(url) else None

    def get(self, gcs_path: str | None) -> dict:
        if not gcs_path:
            raise invalid("gcsPath is required: the gs:// or local path of the template.")
        template = self.read_json(gcs_path, "template file")
        if "image" in template or "containerSpec" in template or "sdkInfo" in template:
            return {"status": {"code": 0}, "templateType": "FLEX", "metadata": template.get("metadata", {}),
                    "runtimeMetadata": {"sdkInfo": template.get("sdkInfo", {}),
                                        "parameters": template.get("metadata", {}).get("parameters", [])}}
        metadata = self.metadata(gcs_path) or {"name": template.get("name") or gcs_path.rsplit("/", 1)[-1]}
        return {"status": {"code": 0}, "templateType": "LEGACY", "metadata": metadata}

    # ---- launching -----------------------------------------------------------

    def launch(self, project_id: str, location: str, gcs_path: str | None, params: dict,
               validate_only: bool) -> dict:
        if not gcs_path:
            raise invalid("gcsPath (or dynamicTemplate.gcsPath) is required: the path of the template to launch.")
        template = self.read_json(gcs_path, "template file")
        parameters = params.get("parameters", {})
        validate_parameters(self.metadata(gcs_path), parameters)
        if validate_only:
            return {}
        job = self._job_from_template(template, params.get("jobName", ""), parameters, params.get("environment", {}))
        if params.get("transformNameMapping"):
            job["transformNameMapping"] = params["transformNameMapping"]
        replace = self.active_job_id(project_id, location, job["name"]) if params.get("update") else None
        return {"job": self.jobs.create(project_id, location, job, replace_job_id=replace)}

    def create(self, project_id: str, location: str, request: dict) -> dict:
        body = {k: request[k] for k in ("jobName", "parameters", "environment") if k in request}
        return self.launch(project_id, location, request.get("gcsPath"), body, validate_only=False)["job"]

    def active_job_id(self, project_id: str, location: str, name: str) -> str:
        with self.store.read() as conn:
            active = job_rows.active_named(conn, project_id, location, name)
        if active is None:
            raise precondition(f"update is set but there is no active job named {name} to update.")
        return active["id"]

    @staticmethod
    def _job_from_template(template: dict, job_name: str, parameters: dict, runtime: dict) -> dict:
        job = {k: v for k, v in template.items()
               if k in ("type", "steps", "stepsLocation", "environment", "labels", "pipelineDescription")}
        job["name"] = job_name
        apply_runtime_environment(job, runtime, parameters)
        return job


def validate_parameters(metadata: dict | None, parameters: dict) -> None:
    """Check launch parameters against TemplateMetadata; every violation is reported at once."""
    if metadata is None:
        return
    declared = {p["name"]: p for p in metadata.get("parameters", []) if "name" in p}
    violations = []
    for name, spec in declared.items():
        if name not in parameters and not spec.get("isOptional"):
            violations.append((name, f"Missing required parameter: {name}"))
    for name, value in parameters.items():
        spec = declared.get(name)
        if spec is None:
            violations.append((name, f"Unrecognized parameter: {name}"))
            continue
        for pattern in spec.get("regexes", []):
            try:
                matched = re.fullmatch(pattern, str(value))
            except re.error:
                matched = None
            if not matched:
                violations.append((name, f"Parameter {name} value {value!r} does not match the pattern {pattern}"))
    if violations:
        raise ApiError(
            "INVALID_ARGUMENT",
            "The template parameters are invalid. Details: " + "; ".join(d for _, d in violations),
            details=[{"@type": VIOLATIONS_TYPE,
                      "parameterViolations": [{"parameter": n, "description": d} for n, d in violations]}])


def apply_runtime_environment(job: dict, runtime: dict, parameters: dict) -> None:
    """Put launch parameters and the RuntimeEnvironment where the pipeline and job see them."""
    environment = job.setdefault("environment", {})
    sdk = environment.setdefault("sdkPipelineOptions", {})
    options = sdk.setdefault("options", {})
    options.update(parameters)
    for flag in runtime.get("additionalPipelineOptions", []):  # "key=value" or "--key=value"
        key, _, value = flag.partition("=")
        options[key.lstrip("-")] = value or "true"
    if "tempLocation" in runtime:
        options["temp_location"] = runtime["tempLocation"]
        environment["tempStoragePrefix"] = runtime["tempLocation"]
    if runtime.get("additionalExperiments"):
        environment["experiments"] = environment.get("experiments", []) + runtime["additionalExperiments"]
        options["experiments"] = options.get("experiments", []) + runtime["additionalExperiments"]
    if runtime.get("additionalUserLabels"):
        job["labels"] = {**job.get("labels", {}), **runtime["additionalUserLabels"]}
    for key, option in (("numWorkers", "num_workers"), ("maxWorkers", "max_num_workers")):
        if key in runtime:
            options[option] = runtime[key]
    for key in ("serviceAccountEmail", "workerRegion", "workerZone", "streamingMode"):
        if key in runtime:
            environment[key] = runtime[key]
    if "kmsKeyName" in runtime:
        environment["serviceKmsKeyName"] = runtime["kmsKeyName"]
    pool = {k: runtime[k] for k in ("machineType", "network", "subnetwork", "zone", "diskSizeGb",
                                    "ipConfiguration", "numWorkers") if k in runtime}
    if pool:
        pools = environment.setdefault("workerPools", [{}])
        pools[0].update(pool)
