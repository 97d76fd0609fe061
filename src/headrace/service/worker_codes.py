"""workerMessageCode → a job message a person understands.

Codes are free strings (the API keeps them out of an enum so workers can add new ones), so
a code missing from the table still reaches the job log, with its parameters; its importance
is guessed from the words in it.
"""

from __future__ import annotations

import orjson

# code: (importance, what happened). Dataflow documents only the first two; the others are
# what Beam's boot and harness processes fail at in practice (see docs/workers.md).
KNOWN = {
    "HARNESS_STARTED": ("DETAILED", "harness started"),
    "GCS_DOWNLOAD_ERROR": ("ERROR", "failed to download files from Cloud Storage"),
    "HARNESS_STOPPED": ("DETAILED", "harness stopped"),
    "SDK_HARNESS_STARTED": ("DETAILED", "SDK harness started"),
    "SDK_HARNESS_DISCONNECTED": ("WARNING", "SDK harness disconnected"),
    "STAGING_FILES_DOWNLOAD_ERROR": ("ERROR", "failed to download the pipeline's staged files"),
    "PACKAGE_INSTALL_ERROR": ("ERROR", "failed to install the pipeline's packages"),
    "CONTAINER_IMAGE_PULL_ERROR": ("ERROR", "failed to pull the SDK container image"),
    "CONTAINER_START_ERROR": ("ERROR", "SDK container failed to start"),
    "OUT_OF_MEMORY": ("ERROR", "ran out of memory; a process was killed"),
    "LOW_DISK_SPACE": ("WARNING", "is running out of disk space"),
}

_ERROR_WORDS = {"ERROR", "FAILED", "FAILURE", "CRASHED", "CRASH"}
_WARNING_WORDS = {"WARNING", "WARN"}
_MAX_TEXT = 4000


def _value(value) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def describe(worker_id: str, code: str, parameters: dict | None) -> tuple[str, str]:
    """(importance, text) of the job message for one workerMessageCode."""
    known = KNOWN.get(code)
    if known:
        importance, text = known[0], f"Worker {worker_id}: {known[1]}"
    else:
        words = set(code.upper().split("_"))
        importance = ("ERROR" if words & _ERROR_WORDS else
                      "WARNING" if words & _WARNING_WORDS else "DETAILED")
        text = f"Worker {worker_id} reported {code or 'an empty message code'}"
    if parameters:
        text += " (" + ", ".join(f"{k}={_value(v)}" for k, v in parameters.items()) + ")"
    return importance, text[:_MAX_TEXT]
