"""A small Python client for the labelforge API (httpx), used by the README examples and the tests.

    from service.client import Client
    with Client("http://127.0.0.1:8000", api_key=open("data/api_key").read().strip()) as lf:
        job = lf.create_dataset({"name": "demo", "bundle": "faces-m", "count": 64, "shard_size": 32})
        lf.wait(job["id"])                       # rich progress bar
        paths = lf.download_shards(job["id"], "out/")

Presigned shard URLs point straight at object storage, so they are fetched *without* the API key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    """A 4xx/5xx answer: `status` and the server's `detail` (a message, or validation errors with `loc`)."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class JobFailed(Exception):
    """`wait` saw the job end in failed or cancelled; `job` is its last status."""

    def __init__(self, job: dict[str, Any]):
        super().__init__(f"job {job['id']} {job['status']}: {job.get('error')}")
        self.job = job


class Client:
    """Synchronous client; every call raises `ApiError` on a 4xx/5xx."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {api_key}"})
        self.plain = httpx.Client(timeout=timeout_s, follow_redirects=True)  # presigned URLs: no API key

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.plain.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.http.request(method, url, **kwargs)
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    # --- datasets and labeling jobs ---
    def create_dataset(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Order a dataset (a DatasetSpec as a dict); returns the queued job."""
        return self._call("POST", "/datasets", json=spec)

    def create_labeling_job(self, archive: Path | bytes, *, bundle: str, name: str = "labels") -> dict[str, Any]:
        """Upload a tar/zip of images to label with `bundle`; returns the queued job."""
        data = archive if isinstance(archive, bytes) else Path(archive).read_bytes()
        return self._call("POST", "/labeling-jobs", params={"bundle": bundle, "name": name},
                          files={"file": ("images.tar", data, "application/octet-stream")})

    def job(self, job_id: str, kind: str = "datasets") -> dict[str, Any]:
        return self._call("GET", f"/{kind}/{job_id}")

    def list_jobs(self, kind: str = "datasets") -> list[dict[str, Any]]:
        return self._call("GET", f"/{kind}")["items"]

    def delete(self, job_id: str, kind: str = "datasets") -> dict[str, Any]:
        return self._call("DELETE", f"/{kind}/{job_id}")

    def manifest(self, job_id: str, kind: str = "datasets") -> dict[str, Any]:
        return self._call("GET", f"/{kind}/{job_id}/manifest")

    def shards(self, job_id: str, kind: str = "datasets") -> list[dict[str, Any]]:
        return self._call("GET", f"/{kind}/{job_id}/shards")["items"]

    def wait(self, job_id: str, kind: str = "datasets", *, poll_s: float = 0.5, timeout_s: float | None = None,
             progress: bool = True) -> dict[str, Any]:
        """Poll until the job ends, drawing a rich progress bar; raises `JobFailed` unless it succeeded."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"{kind[:-1]} {job_id[:8]}", total=None)
            while True:
                job = self.job(job_id, kind)
                samples = job["progress"]["samples"]
                bar.update(task, completed=samples["done"], total=samples["total"] or None,
                           description=f"{kind[:-1]} {job_id[:8]} {job['status']}")
                if job["status"] in TERMINAL:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
                time.sleep(poll_s)
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    def download_shards(self, job_id: str, out_dir: Path | str, kind: str = "datasets") -> list[Path]:
        """Fetch every shard into `out_dir` (presigned URLs without the key, API URLs with it)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for shard in self.shards(job_id, kind):
            client = self.plain if shard["presigned"] else self.http
            path = out / shard["file"]
            with client.stream("GET", shard["url"]) as response:
                if response.is_error:
                    raise ApiError(response.status_code, response.read().decode(errors="replace"))
                with path.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
            paths.append(path)
        return paths

    # --- predict and models ---
    def predict(self, images: Iterable[Path | bytes], *, bundle: str | None = None,
                render: bool = False) -> dict[str, Any]:
        """Labels for each image (paths or encoded bytes), in order."""
        files = []
        for i, img in enumerate(images):
            data = img if isinstance(img, bytes) else Path(img).read_bytes()
            name = f"image{i}" if isinstance(img, bytes) else Path(img).name
            files.append(("files", (name, data, "application/octet-stream")))
        params: dict[str, Any] = {"render": render}
        if bundle:
            params["bundle"] = bundle
        return self._call("POST", "/predict", params=params, files=files)

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")["items"]
