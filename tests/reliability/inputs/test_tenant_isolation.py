"""Tenant isolation beyond tests/service's dataset checks: labeling jobs, running jobs, shard and card URLs,
and answers that do not even reveal that another tenant's id exists (identical to an unknown id's).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.reliability.inputs import payloads as p
from tests.reliability.inputs.conftest import InputServer
from tests.reliability.report import record
from tests.service.service_helpers import wait_job

A, B, C = 0, 1, 2  # tenant indices into Server.keys


@dataclass
class Probes:
    """Every cross-tenant request made, and what it got."""

    sent: int = 0
    refused_404: int = 0
    leaks: list[str] = field(default_factory=list)

    def expect_404(self, answer: httpx.Response, what: str) -> None:
        self.sent += 1
        if answer.status_code == 404:
            self.refused_404 += 1
        else:
            self.leaks.append(f"{what}: {answer.status_code}")
        assert answer.status_code == 404, f"{what}: {answer.status_code} {answer.text[:300]}"


@pytest.fixture(scope="module")
def probes() -> Iterator[Probes]:
    result = Probes()
    yield result
    if result.sent:
        record("tenant_isolation",
               "another tenant's datasets and labeling jobs (finished and running) cannot be listed, read, "
               "downloaded, cancelled or deleted; each probe answers 404 exactly as an unknown id does",
               probes=result.sent, answered_404=result.refused_404, leaks=len(result.leaks),
               leak_details=result.leaks[:20])


@dataclass(frozen=True)
class Owned:
    """Tenant A's jobs: a finished dataset, a finished labeling job and their first shard files."""

    dataset: str
    dataset_shard: str
    labeling: str
    labeling_shard: str


@pytest.fixture(scope="module")
def owned(served: InputServer) -> Owned:
    server = served.server
    with server.client(A) as a:
        ds = a.post("/datasets", json={"name": "a-private", "bundle": "tiny-digits", "count": 8, "shard_size": 8})
        upload = p.make_zip({"one.png": p.png(16, 1), "two.png": p.png(16, 2)})
        lj = a.post("/labeling-jobs", params={"bundle": "tiny-faces", "name": "a-photos"},
                    files={"file": ("photos.zip", upload)})
        assert ds.status_code == 202 and lj.status_code == 202, (ds.text, lj.text)
        for kind, job in (("datasets", ds.json()), ("labeling-jobs", lj.json())):
            assert wait_job(a, kind, job["id"], server)["status"] == "succeeded"
        files = [a.get(f"/{kind}/{job.json()['id']}/shards").json()["items"][0]["file"]
                 for kind, job in (("datasets", ds), ("labeling-jobs", lj))]
    return Owned(ds.json()["id"], files[0], lj.json()["id"], files[1])


def endpoints(kind: str, job_id: str, shard: str) -> list[tuple[str, str]]:
    """(method, path) of everything one job exposes."""
    paths = [("GET", f"/{kind}/{job_id}"), ("GET", f"/{kind}/{job_id}/manifest"),
             ("GET", f"/{kind}/{job_id}/shards"), ("GET", f"/{kind}/{job_id}/shards/{shard}"),
             ("DELETE", f"/{kind}/{job_id}")]
    if kind == "datasets":
        paths += [("GET", f"/{kind}/{job_id}/card"), ("GET", f"/{kind}/{job_id}/card/card.png")]
    return paths


@pytest.mark.parametrize("kind", ["datasets", "labeling-jobs"])
def test_other_tenants_get_404_everywhere_and_the_owner_keeps_everything(
    kind: str, served: InputServer, owned: Owned, probes: Probes
) -> None:
    job_id, shard = (owned.dataset, owned.dataset_shard) if kind == "datasets" else (owned.labeling, owned.labeling_shard)
    with served.server.client(A) as a, served.server.client(B) as b, served.server.client(C) as c:
        for other in (b, c):
            for method, path in endpoints(kind, job_id, shard):
                probes.expect_404(other.request(method, path), f"{method} {path}")
            assert job_id not in [j["id"] for j in other.get(f"/{kind}").json()["items"]]
        other_kind = "labeling-jobs" if kind == "datasets" else "datasets"
        probes.expect_404(a.get(f"/{other_kind}/{job_id}"), "right owner, wrong kind")
        assert a.get(f"/{kind}/{job_id}").json()["status"] == "succeeded"  # the failed deletes changed nothing
        assert job_id in [j["id"] for j in a.get(f"/{kind}").json()["items"]]
        whole = a.get(f"/{kind}/{job_id}/shards/{shard}")
        assert whole.status_code == 200 and whole.content[257:262] == b"ustar"  # a tar, served to its owner


@pytest.mark.parametrize("kind", ["datasets", "labeling-jobs"])
def test_a_foreign_id_is_answered_exactly_like_an_unknown_one(
    kind: str, served: InputServer, owned: Owned, probes: Probes
) -> None:
    """Same status and the same message (up to the id), so probing ids tells B nothing about A."""
    job_id, shard = (owned.dataset, owned.dataset_shard) if kind == "datasets" else (owned.labeling, owned.labeling_shard)
    unknown = uuid.uuid4().hex
    with served.server.client(B) as b:
        for (method, path), (_, missing) in zip(endpoints(kind, job_id, shard), endpoints(kind, unknown, shard),
                                                strict=True):
            foreign, absent = b.request(method, path), b.request(method, missing)
            probes.expect_404(foreign, f"{method} {path}")
            assert absent.status_code == 404
            assert foreign.json()["detail"].replace(job_id, "ID") == absent.json()["detail"].replace(unknown, "ID")


def test_shard_and_card_urls_need_the_owners_key(served: InputServer, owned: Owned, probes: Probes) -> None:
    """The URLs the owner is given are useless to anyone else: no key → 401, another key → 404, and B
    cannot reach A's file through a job of its own either."""
    server = served.server
    with server.client(A) as a, server.client(B) as b:
        links = [s["url"] for s in a.get(f"/datasets/{owned.dataset}/shards").json()["items"]]
        links += list(a.get(f"/datasets/{owned.dataset}/card").json()["images"].values())
        assert links and all(a.get(url).status_code == 200 for url in links)
        for url in links:
            assert httpx.get(url).status_code == 401
            probes.expect_404(b.get(url), f"B fetching {url}")
        own = b.post("/datasets", json={"name": "b-own", "bundle": "tiny-digits", "count": 8, "shard_size": 8}).json()
        wait_job(b, "datasets", own["id"], server)
        probes.expect_404(b.get(f"/datasets/{own['id']}/shards/{owned.dataset_shard}"), "A's file through B's job")
        b.delete(f"/datasets/{own['id']}")


def test_other_tenant_cannot_cancel_or_delete_a_running_job(served: InputServer, probes: Probes) -> None:
    server = served.server
    with server.client(A) as a, server.client(B) as b:
        job = a.post("/datasets", json={"name": "a-long", "bundle": "tiny-digits", "count": 60_000,
                                        "shard_size": 1000}).json()
        try:
            deadline = time.monotonic() + 60
            while a.get(f"/datasets/{job['id']}").json()["progress"]["samples"]["done"] == 0:
                assert time.monotonic() < deadline, "job never started"
                time.sleep(0.2)
            probes.expect_404(b.delete(f"/datasets/{job['id']}"), "B deleting A's running job")
            before = a.get(f"/datasets/{job['id']}").json()
            time.sleep(1.5)
            after = a.get(f"/datasets/{job['id']}").json()
            assert before["status"] in ("queued", "running") and after["status"] in ("running", "succeeded")
            assert after["progress"]["samples"]["done"] > before["progress"]["samples"]["done"]  # still working
        finally:
            assert a.delete(f"/datasets/{job['id']}").status_code == 200
