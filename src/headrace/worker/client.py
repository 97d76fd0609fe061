"""The public v1b3 worker API, as a worker sees it: lease, report, send messages.

Workers of Headrace talk to the service only through these three HTTP calls, exactly as
Dataflow's own workers do, so a worker can run on any machine that reaches the API.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from headrace import wire

# A worker of the embedded pool serves every project and region (AIP-159 wildcards).
ANY = "-"


class ServiceError(Exception):
    def __init__(self, status: int, body: dict | str):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('status', '')}: {error.get('message', body)}")
        self.status = status
        self.error = error


@dataclass
class WorkerApi:
    endpoint: str
    worker_id: str
    token: str | None = None

    def __post_init__(self):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.endpoint.rstrip("/"), headers=headers, timeout=30)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict) -> dict:
        response = self.http.post(f"/v1b3/{path}", json=body)
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code >= 400:
            raise ServiceError(response.status_code, payload)
        return payload

    def lease(self, lease_seconds: float, project: str = ANY, location: str = ANY, job: str = ANY) -> list[dict]:
        body = {"workerId": self.worker_id, "requestedLeaseDuration": wire.format_duration(lease_seconds),
                "currentWorkerTime": wire.format_time(wire.now()), "workItemTypes": ["beam_portable_pipeline"]}
        out = self._post(f"projects/{project}/locations/{location}/jobs/{job}/workItems:lease", body)
        return out.get("workItems", [])

    def report(self, item: dict, location: str, status: dict) -> dict:
        body = {"workerId": self.worker_id, "currentWorkerTime": wire.format_time(wire.now()),
                "location": location, "workItemStatuses": [{"workItemId": item["id"], **status}]}
        out = self._post(f"projects/{item['projectId']}/locations/{location}/jobs/{item['jobId']}"
                         "/workItems:reportStatus", body)
        return out["workItemServiceStates"][0]

    def send(self, project: str, location: str, messages: list[dict]) -> list[dict]:
        out = self._post(f"projects/{project}/locations/{location}/WorkerMessages",
                         {"workerMessages": messages, "location": location})
        return out.get("workerMessageResponses", [])
