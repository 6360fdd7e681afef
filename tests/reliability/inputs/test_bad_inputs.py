"""The bad-input catalogue: every hostile or malformed request a user (or attacker) can send, one test each,
against the served app. Each must be answered with its 4xx and a message naming the problem, and must
leave nothing behind: no job or shard rows, no stored objects, no broker messages, no temp files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.reliability.inputs import payloads as p
from tests.reliability.inputs.conftest import MAX_UPLOAD_MB, InputServer
from tests.reliability.report import record
from tests.service.service_helpers import wait_job

DIGITS, FACES = "tiny-digits", "tiny-faces"
SPEC: dict[str, Any] = {"name": "bad-input", "bundle": DIGITS, "count": 8, "shard_size": 8}
JSON = {"content-type": "application/json"}
Kwargs = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One bad request: what to send, the 4xx it must get, and a word its message must contain."""

    method: str
    path: str  # `{a_job}` is replaced by tenant A's finished dataset id, `{a_tenant}` by A's tenant id
    status: int
    needle: str  # case-insensitive, searched in the answer's `detail` (text, or every loc + msg)
    body: Callable[[], Kwargs] = field(default=dict)  # httpx request kwargs, built when the test runs
    tenant: int | None = 2  # whose key authenticates; None = the body's own headers only


def spec(**over: Any) -> Callable[[], Kwargs]:
    return lambda: {"json": {**SPEC, **over}}


def labels(**dists: Any) -> Callable[[], Kwargs]:
    return spec(labels=dists)


def raw(text: str | bytes, content_type: str = "application/json") -> Callable[[], Kwargs]:
    return lambda: {"content": text, "headers": {"content-type": content_type}}


def upload(data: Callable[[], bytes], name: str = "x.png", key: str = "files") -> Callable[[], Kwargs]:
    return lambda: {"files": {key: (name, data(), "application/octet-stream")}}


def archive(data: Callable[[], bytes], name: str = "images.zip") -> Callable[[], Kwargs]:
    return lambda: {"params": {"bundle": FACES}, "files": {"file": (name, data(), "application/octet-stream")}}


def keys(*source_keys: str) -> Callable[[], Kwargs]:
    return lambda: {"json": {"bundle": FACES, "source_keys": list(source_keys)}}


def auth(value: str | bytes) -> Callable[[], Kwargs]:
    return lambda: {"headers": {"authorization": value}}


BIG = 1 + (MAX_UPLOAD_MB << 20)  # bytes: one over the server's upload limit
GOOD = {"a.png": p.png(seed=1)}

CASES: dict[str, Case] = {
    # --- authentication: a missing, malformed or unknown key is 401; another tenant's key sees 404 ---
    "auth-missing-header": Case("GET", "/datasets", 401, "missing Authorization", tenant=None),
    "auth-basic-scheme": Case("GET", "/datasets", 401, "Bearer scheme", auth("Basic dXNlcjpwYXNz"), tenant=None),
    "auth-unknown-key": Case("GET", "/labeling-jobs", 401, "invalid API key", auth("Bearer lf_not-a-key"), tenant=None),
    "auth-empty-bearer": Case("GET", "/models", 401, "Bearer", auth("Bearer"), tenant=None),
    "auth-overlong-key": Case("GET", "/datasets", 401, "invalid API key", auth("Bearer " + "k" * 8000), tenant=None),
    "auth-non-ascii-key": Case("GET", "/datasets", 401, "invalid API key", auth(b"Bearer \xff\xfe\x80"), tenant=None),
    "auth-post-without-key": Case("POST", "/datasets", 401, "missing Authorization", spec(), tenant=None),
    "auth-other-tenant-status": Case("GET", "/datasets/{a_job}", 404, "no dataset job"),
    "auth-other-tenant-delete": Case("DELETE", "/datasets/{a_job}", 404, "no dataset job"),
    "auth-other-tenant-shard": Case("GET", "/datasets/{a_job}/shards/a-data-000000.tar", 404, "no dataset job"),
    # --- the body of POST /datasets: not JSON, not an object, wrong content type ---
    "json-malformed": Case("POST", "/datasets", 422, "JSON decode error", raw('{"name": "x", "bundle": ')),
    "json-empty-body": Case("POST", "/datasets", 422, "body", raw("")),
    "json-array-not-object": Case("POST", "/datasets", 422, "body", raw(json.dumps([SPEC]))),
    "json-not-utf8": Case("POST", "/datasets", 422, "body", raw(b'{"name": "\xff\xfe"}')),
    "json-deeply-nested": Case("POST", "/datasets", 422, "body", raw('{"labels": ' + "[" * 20_000 + "]" * 20_000 + "}")),
    "content-type-text-plain": Case("POST", "/datasets", 415, "application/json", raw(json.dumps(SPEC), "text/plain")),
    "content-type-form": Case("POST", "/datasets", 415, "application/json", lambda: {"data": {"name": "x"}}),
    "spec-over-size-limit": Case("POST", "/datasets", 413, "MAX_SPEC_BYTES", spec(pad="x" * 70_000)),
    # --- wrong types and out-of-range numbers ---
    "count-string": Case("POST", "/datasets", 422, "count", spec(count="ten")),
    "count-numeric-string": Case("POST", "/datasets", 422, "count", spec(count="8")),
    "count-bool": Case("POST", "/datasets", 422, "count", spec(count=True)),
    "count-fractional": Case("POST", "/datasets", 422, "count", spec(count=8.5)),
    "count-zero": Case("POST", "/datasets", 422, "count", spec(count=0)),
    "count-huge-int": Case("POST", "/datasets", 422, "count", spec(count=10**30)),
    "count-over-service-limit": Case("POST", "/datasets", 422, "count", spec(count=200_000, shard_size=1000)),
    "shards-too-many": Case("POST", "/datasets", 422, "shards", spec(count=100_000, shard_size=1)),
    "seed-negative": Case("POST", "/datasets", 422, "seed", spec(seed=-1)),
    "seed-over-64-bits": Case("POST", "/datasets", 422, "seed", spec(seed=2**64)),
    "shard-size-over-count": Case("POST", "/datasets", 422, "shard_size", spec(shard_size=9)),
    "image-format-unknown": Case("POST", "/datasets", 422, "image.format", spec(image={"format": "gif"})),
    "unknown-top-level-field": Case("POST", "/datasets", 422, "extra", spec(owner="someone-else")),
    "extras-repeated": Case("POST", "/datasets", 422, "extras", spec(extras=["sim", "sim"])),
    # --- NaN / inf and impossible distributions ---
    "dist-nan-literal": Case("POST", "/datasets", 422, "labels.rotation_deg",
                             raw('{"name": "x", "bundle": "tiny-digits", "count": 8, "shard_size": 8, '
                                 '"labels": {"rotation_deg": {"fixed": NaN}}}')),
    "dist-infinity-literal": Case("POST", "/datasets", 422, "labels.rotation_deg",
                                  raw('{"name": "x", "bundle": "tiny-digits", "count": 8, "shard_size": 8, '
                                      '"labels": {"rotation_deg": {"uniform": {"low": 0, "high": Infinity}}}}')),
    "dist-minus-infinity": Case("POST", "/datasets", 422, "labels.rotation_deg",
                                raw('{"name": "x", "bundle": "tiny-digits", "count": 8, "shard_size": 8, '
                                    '"labels": {"rotation_deg": {"normal": {"mean": -Infinity}}}}')),
    "dist-overflow-1e999": Case("POST", "/datasets", 422, "labels.rotation_deg",
                                raw('{"name": "x", "bundle": "tiny-digits", "count": 8, "shard_size": 8, '
                                    '"labels": {"rotation_deg": {"fixed": 1e999}}}')),
    "dist-negative-std": Case("POST", "/datasets", 422, "std", labels(rotation_deg={"normal": {"std": -1}})),
    "dist-low-above-high": Case("POST", "/datasets", 422, "low > high",
                                labels(rotation_deg={"uniform": {"low": 5, "high": 1}})),
    "dist-unknown-kind": Case("POST", "/datasets", 422, "exactly one of", labels(rotation_deg={"gaussian": {}})),
    "dist-weights-mismatch": Case("POST", "/datasets", 422, "weights",
                                  labels(digit={"choice": {"values": [1, 2], "weights": [1]}})),
    "dist-class-out-of-range": Case("POST", "/datasets", 422, "labels.digit", labels(digit={"fixed": 12})),
    "dist-unknown-field": Case("POST", "/datasets", 422, "labels.nose_deg", labels(nose_deg={"fixed": 1})),
    "dist-slot-on-scalar": Case("POST", "/datasets", 422, "not a vector field",
                                labels(**{"rotation_deg[3]": {"fixed": 1}})),
    "dist-overlong-field-name": Case("POST", "/datasets", 422, "labels", labels(**{"a" * 5000: {"fixed": 1}})),
    # --- unknown bundle and unsafe names ---
    "bundle-unknown": Case("POST", "/datasets", 422, "unknown bundle", spec(bundle="no-such-bundle")),
    "bundle-path-traversal": Case("POST", "/datasets", 422, "bundle", spec(bundle="../../etc")),
    "bundle-absolute-path": Case("POST", "/datasets", 422, "bundle", spec(bundle="/etc/passwd")),
    "bundle-nul-byte": Case("POST", "/datasets", 422, "bundle", spec(bundle="tiny-digits\x00.x")),
    "name-path-traversal": Case("POST", "/datasets", 422, "name", spec(name="../../escape")),
    "name-nul-byte": Case("POST", "/datasets", 422, "name", spec(name="ok\x00name")),
    "name-overlong": Case("POST", "/datasets", 422, "name", spec(name="n" * 5000)),
    # --- ids and file names in paths and queries ---
    "list-limit-zero": Case("GET", "/datasets?limit=0", 422, "limit"),
    "list-limit-not-int": Case("GET", "/labeling-jobs?limit=lots", 422, "limit"),
    "job-id-traversal": Case("GET", "/datasets/..%2F..%2Fapi_key", 404, "not found"),
    "job-id-nul-byte": Case("GET", "/datasets/abc%00def", 404, "no dataset job"),
    "job-id-overlong": Case("GET", "/datasets/" + "f" * 4000, 404, "no dataset job"),
    "shard-file-dotdot": Case("GET", "/datasets/{a_job}/shards/%2e%2e", 404, "file", tenant=0),
    "shard-file-traversal": Case("GET", "/datasets/{a_job}/shards/..%2F..%2F..%2Fapi_key", 404, "not found", tenant=0),
    "shard-file-nul-byte": Case("GET", "/datasets/{a_job}/shards/a-data-000000.tar%00.png", 404, "file", tenant=0),
    "card-image-traversal": Case("GET", "/datasets/{a_job}/card/..%2Fmanifest.json", 404, "not found", tenant=0),
    "card-image-other-file": Case("GET", "/datasets/{a_job}/card/manifest.json", 404, "file", tenant=0),
    # --- /predict: non-images, broken images, pixel bombs, wrong encodings ---
    "predict-text-file": Case("POST", "/predict", 415, "not an image", upload(lambda: b"hello, not an image", "a.txt")),
    "predict-html-as-png": Case("POST", "/predict", 415, "files[0]", upload(lambda: b"<html><body>hi</body></html>")),
    "predict-gif": Case("POST", "/predict", 415, "unsupported image format", upload(p.gif, "a.gif")),
    "predict-truncated-png": Case("POST", "/predict", 422, "truncated", upload(lambda: p.truncated(p.png(64)))),
    "predict-truncated-jpeg": Case("POST", "/predict", 422, "truncated", upload(lambda: p.truncated(p.jpeg()), "a.jpg")),
    "predict-decompression-bomb": Case("POST", "/predict", 413, "pixel", upload(p.png_header_bomb)),
    "predict-100-megapixels": Case("POST", "/predict", 413, "pixel", upload(p.png_100_megapixels)),
    "predict-over-upload-limit": Case("POST", "/predict", 413, "MAX_UPLOAD_MB", upload(lambda: b"\0" * BIG)),
    "predict-too-many-files": Case("POST", "/predict", 400, "files",
                                   lambda: {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(65)]}),
    "predict-no-files": Case("POST", "/predict", 422, "files", lambda: {"files": {"other": ("a.png", b"x")}}),
    "predict-raw-image-body": Case("POST", "/predict", 415, "content-type", raw(p.png(), "image/png")),
    "predict-json-bad-base64": Case("POST", "/predict", 422, "images", lambda: {"json": {"images": ["not base64!!"]}}),
    "predict-json-empty-list": Case("POST", "/predict", 422, "images", lambda: {"json": {"images": []}}),
    "predict-json-wrong-type": Case("POST", "/predict", 422, "images", lambda: {"json": {"images": 42}}),
    "predict-json-malformed": Case("POST", "/predict", 422, "json", raw('{"images": [')),
    "predict-unknown-bundle": Case("POST", "/predict?bundle=no-such-bundle", 422, "bundle", upload(lambda: p.png())),
    "predict-bundle-traversal": Case("POST", "/predict?bundle=..%2F..%2Fetc", 422, "bundle", upload(lambda: p.png())),
    # --- /labeling-jobs uploads: not archives, bombs, unsafe members, bad images ---
    "labeling-not-an-archive": Case("POST", "/labeling-jobs", 415, "not a tar or zip", archive(lambda: b"nope" * 100)),
    "labeling-zip-bomb": Case("POST", "/labeling-jobs", 422, "expands to", archive(p.zip_bomb)),
    "labeling-tar-gz-bomb": Case("POST", "/labeling-jobs", 422, "expands to", archive(p.tar_gz_bomb, "x.tar.gz")),
    "labeling-zip-lying-sizes": Case("POST", "/labeling-jobs", 422, "liar.png", archive(p.zip_lying_sizes)),
    "labeling-zip-encrypted": Case("POST", "/labeling-jobs", 422, "encrypted", archive(p.zip_encrypted_flag)),
    "labeling-zip-unknown-compression": Case("POST", "/labeling-jobs", 422, "aes.png",
                                             archive(p.zip_unknown_compression)),
    "labeling-tar-gz-truncated": Case("POST", "/labeling-jobs", 422, "corrupt",
                                      archive(p.tar_gz_truncated, "x.tar.gz")),
    "labeling-zip-traversal": Case("POST", "/labeling-jobs", 422, "../../evil.png",
                                   archive(lambda: p.make_zip({**GOOD, "x/../../evil.png": p.png()}))),
    "labeling-tar-traversal": Case("POST", "/labeling-jobs", 422, "../evil.png",
                                   archive(lambda: p.make_tar({**GOOD, "../evil.png": p.png()}), "x.tar")),
    "labeling-zip-absolute-path": Case("POST", "/labeling-jobs", 422, "/etc/evil.png",
                                       archive(lambda: p.make_zip({"/etc/evil.png": p.png()}))),
    "labeling-tar-absolute-path": Case("POST", "/labeling-jobs", 422, "/tmp/evil.png",
                                       archive(lambda: p.make_tar({"/tmp/evil.png": p.png()}), "x.tar")),
    "labeling-zip-backslash": Case("POST", "/labeling-jobs", 422, "backslash",
                                   archive(lambda: p.make_zip({"..\\evil.png": p.png()}))),
    "labeling-tar-symlink": Case("POST", "/labeling-jobs", 422, "link.png",
                                 archive(lambda: p.make_tar(GOOD, symlink="link.png"), "x.tar")),
    "labeling-non-image-member": Case("POST", "/labeling-jobs", 422, "notes.txt",
                                      archive(lambda: p.make_zip({**GOOD, "notes.txt": b"text"}))),
    "labeling-text-named-png": Case("POST", "/labeling-jobs", 422, "fake.png",
                                    archive(lambda: p.make_zip({**GOOD, "fake.png": b"not a png"}))),
    "labeling-truncated-png": Case("POST", "/labeling-jobs", 422, "cut.png",
                                   archive(lambda: p.make_zip({"cut.png": p.truncated(p.png(64))}))),
    "labeling-truncated-jpeg": Case("POST", "/labeling-jobs", 422, "cut.jpg",
                                    archive(lambda: p.make_tar({"cut.jpg": p.truncated(p.jpeg())}), "x.tar")),
    "labeling-decompression-bomb": Case("POST", "/labeling-jobs", 422, "bomb.png",
                                        archive(lambda: p.make_zip({"bomb.png": p.png_header_bomb()}))),
    "labeling-100-megapixels": Case("POST", "/labeling-jobs", 422, "pixels",
                                    archive(lambda: p.make_zip({"big.png": p.png_100_megapixels()}))),
    "labeling-empty-archive": Case("POST", "/labeling-jobs", 422, "no files", archive(lambda: p.make_tar({}), "x.tar")),
    "labeling-over-upload-limit": Case("POST", "/labeling-jobs", 413, "MAX_UPLOAD_MB", archive(lambda: b"\0" * BIG)),
    "labeling-missing-bundle": Case("POST", "/labeling-jobs", 422, "bundle",
                                    lambda: {"files": {"file": ("x.zip", p.make_zip(GOOD))}}),
    "labeling-unknown-bundle": Case("POST", "/labeling-jobs", 422, "unknown bundle",
                                    lambda: {"params": {"bundle": "nope"}, "files": {"file": ("x.zip", p.make_zip(GOOD))}}),
    "labeling-missing-file-field": Case("POST", "/labeling-jobs?bundle=tiny-faces", 422, "file",
                                        lambda: {"files": {"upload": ("x.zip", p.make_zip(GOOD))}}),
    "labeling-name-traversal": Case("POST", "/labeling-jobs", 422, "name",
                                    lambda: {**archive(lambda: p.make_zip(GOOD))(),
                                             "params": {"bundle": FACES, "name": "../x"}}),
    "labeling-raw-tar-body": Case("POST", "/labeling-jobs", 415, "content-type",
                                  raw(p.make_tar(GOOD), "application/x-tar")),
    # --- /labeling-jobs from storage keys: traversal, absolute, NUL, foreign and missing objects ---
    "keys-path-traversal": Case("POST", "/labeling-jobs", 422, "source_keys", keys("../../{a_tenant}/x.png")),
    "keys-absolute-path": Case("POST", "/labeling-jobs", 422, "must be relative", keys("/etc/passwd")),
    "keys-nul-byte": Case("POST", "/labeling-jobs", 422, "source_keys", keys("a\x00b.png")),
    "keys-overlong": Case("POST", "/labeling-jobs", 422, "source_keys", keys("k" * 401)),
    "keys-segment-too-long": Case("POST", "/labeling-jobs", 422, "longer than 255", keys("0" * 300 + ".png")),
    "keys-other-tenant-object": Case("POST", "/labeling-jobs", 422, "no object",
                                     keys("tenants/{a_tenant}/jobs/{a_job}/a-data-000000.tar")),
    "keys-missing-object": Case("POST", "/labeling-jobs", 422, "no object", keys("uploads/none.png")),
    "keys-malformed-json": Case("POST", "/labeling-jobs", 422, "json", raw('{"bundle": "tiny-faces", "source_keys": [')),
    "keys-wrong-type": Case("POST", "/labeling-jobs", 422, "source_keys",
                            lambda: {"json": {"bundle": FACES, "source_keys": "a.png"}}),
}


@dataclass
class Tally:
    """Outcomes of the catalogue, recorded into bench/results/reliability.json at module end."""

    cases: int = 0
    expected_4xx: int = 0
    server_errors: int = 0
    leftovers: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    result = Tally()
    yield result
    if result.cases:
        record("bad_input_catalogue",
               "each malformed, oversized, unsafe or unauthenticated request gets its 4xx with a message naming "
               "the problem, and leaves no job rows, stored objects, broker messages or temp files",
               cases=result.cases, answered_expected_4xx=result.expected_4xx, server_errors=result.server_errors,
               leftovers_found=len(result.leftovers), leftovers=result.leftovers[:20])


@pytest.fixture(scope="module")
def a_job(served: InputServer) -> dict[str, str]:
    """A finished dataset of tenant A: the target of other-tenant and traversal cases."""
    with served.server.client(0) as a:
        job = a.post("/datasets", json={**SPEC, "name": "a-data"}).json()
        done = wait_job(a, "datasets", job["id"], served.server)
    assert done["status"] == "succeeded", done
    job_dir = next((served.server.data_dir / "storage" / "tenants").glob(f"*/jobs/{job['id']}"))
    return {"a_job": job["id"], "a_tenant": job_dir.parent.parent.name}  # tenants/{tenant}/jobs/{job}


def detail_text(answer: httpx.Response) -> str:
    """The answer's message as one string: `detail` itself, or every `loc: msg` of a validation error."""
    try:
        detail = answer.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return answer.text
    if isinstance(detail, list):
        return " | ".join(".".join(map(str, e.get("loc", []))) + ": " + str(e.get("msg")) for e in detail)
    return str(detail)


def fill(template: str, ids: dict[str, str]) -> str:
    return template.replace("{a_job}", ids["a_job"]).replace("{a_tenant}", ids["a_tenant"])


def fill_body(kwargs: Kwargs, ids: dict[str, str]) -> Kwargs:
    if "json" in kwargs and "source_keys" in kwargs["json"]:
        kwargs["json"]["source_keys"] = [fill(k, ids) for k in kwargs["json"]["source_keys"]]
    return kwargs


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_a_4xx_naming_the_problem_and_leaves_nothing(
    case_id: str, served: InputServer, a_job: dict[str, str], tally: Tally
) -> None:
    case = CASES[case_id]
    kwargs = fill_body(case.body(), a_job)
    headers = kwargs.pop("headers", {})
    if case.tenant is not None:
        headers["authorization"] = f"Bearer {served.server.keys[case.tenant]}"
    before = served.snapshot()
    with httpx.Client(base_url=served.server.url, timeout=60) as http:
        answer = http.request(case.method, fill(case.path, a_job), headers=headers, **kwargs)
    left = before.leftovers(served.snapshot())
    tally.cases += 1
    tally.expected_4xx += answer.status_code == case.status
    tally.server_errors += answer.status_code >= 500
    tally.leftovers += [f"{case_id}: {x}" for x in left]
    message = detail_text(answer)
    assert answer.status_code == case.status, f"{answer.status_code}: {message[:500]}"
    assert case.needle.lower() in message.lower(), message[:500]
    assert len(message) < 2000, f"message too long to read ({len(message)} chars)"
    assert str(served.tmp_dir.parents[1]) not in message, "the answer shows a server folder"
    assert left == []
