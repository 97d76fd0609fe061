"""Storage paths, resolved in one place for every feature that reads or writes them.

- local paths and `file://` URLs are used as they are;
- `gs://bucket/object` maps to `<data-dir>/gcs/<bucket>/<object>`, or, when
  `STORAGE_EMULATOR_HOST` is set (as google-cloud-storage honours it), to that GCS-compatible
  server's JSON API;
- a `gs://` path that escapes its root (`..`, symlinks) is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import httpx

from headrace.errors import ApiError, invalid


class NotFound(ApiError):
    def __init__(self, url: str):
        super().__init__("NOT_FOUND", f"The file {url} was not found.")


@dataclass(frozen=True)
class Storage:
    data_dir: Path
    emulator_host: str | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path, environ=os.environ) -> "Storage":
        return cls(Path(data_dir), environ.get("STORAGE_EMULATOR_HOST") or None)

    @property
    def gcs_root(self) -> Path:
        return (self.data_dir / "gcs").resolve()

    def local_path(self, url: str) -> Path | None:
        """Where `url` lives on this machine, or None when it lives on the GCS emulator."""
        if not url:
            raise invalid("A storage path is required (gs://bucket/object, file:// or a local path).")
        if url.startswith("gs://"):
            if self.emulator_host:
                return None
            bucket, obj = _split_gs(url)
            root = self.gcs_root
            path = (root / bucket / obj).resolve()
            if not path.is_relative_to(root / bucket):
                raise invalid(f"The path {url} escapes its bucket; '..' and symlinks out of it are not allowed.")
            return path
        if url.startswith("file://"):
            return Path(unquote(urlparse(url).path))
        if "://" in url:
            raise invalid(f"Unsupported storage URL {url}: use gs://, file:// or a local path.")
        return Path(url)

    def read_bytes(self, url: str) -> bytes:
        path = self.local_path(url)
        if path is None:
            bucket, obj = _split_gs(url)
            with self._emulator() as client:
                response = client.get(f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}",
                                      params={"alt": "media"})
            if response.status_code == 404:
                raise NotFound(url)
            if response.status_code >= 400:
                raise ApiError("UNAVAILABLE", f"Reading {url} from {self.emulator_host} failed: {response.status_code}")
            return response.content
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(url) from None
        except OSError as error:  # a directory, no permission, a name too long, ...
            raise invalid(f"Cannot read {url[:300]}: {error.strerror}.") from None

    def exists(self, url: str) -> bool:
        try:
            self.read_bytes(url)
        except NotFound:
            return False
        return True

    def write_bytes(self, url: str, data: bytes) -> None:
        path = self.local_path(url)
        if path is None:
            bucket, obj = _split_gs(url)
            with self._emulator() as client:
                response = client.post(f"/upload/storage/v1/b/{quote(bucket, safe='')}/o",
                                       params={"uploadType": "media", "name": obj}, content=data)
            if response.status_code >= 400:
                raise ApiError("UNAVAILABLE", f"Writing {url} to {self.emulator_host} failed: "
                               f"{response.status_code} {response.text[:200]}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _emulator(self) -> httpx.Client:
        host = self.emulator_host if "://" in self.emulator_host else f"http://{self.emulator_host}"
        return httpx.Client(base_url=host, timeout=30)


def _split_gs(url: str) -> tuple[str, str]:
    bucket, _, obj = url[len("gs://"):].partition("/")
    if not bucket or not obj:
        raise invalid(f"{url} is not a gs://bucket/object path.")
    return bucket, obj
