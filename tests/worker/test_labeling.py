"""Labeling: upload checks refuse unsafe archives before anything is written; a labeling job round trip
through a real worker produces WebDataset shards whose labels are the bundle's predictions."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from sqlalchemy import func, select

from tests.worker.worker_helpers import make_env, make_tenant, wait_for_job
from worker import labeling
from worker.db import JOB_SUCCEEDED, Job, get_sessionmaker
from worker.jobs import JobInputError, create_labeling_job, enqueue
from worker.resources import get_storage

LIMITS = {"max_images": 100, "max_pixels": 1_000_000, "max_expanded_bytes": 10_000_000}


def png_bytes(size: tuple[int, int] = (20, 16), seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def bomb_png(side: int = 2000) -> bytes:
    """A small file that decodes to side² pixels (a decompression bomb at scale)."""
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


GOOD = {"a/one.png": png_bytes(seed=1), "two.png": png_bytes(seed=2)}

BAD_UPLOADS = {
    "not an archive": (b"hello, this is not an archive" * 10, "upload"),
    "tar traversal": (make_tar({**GOOD, "../evil.png": png_bytes()}), "../evil.png"),
    "zip traversal": (make_zip({**GOOD, "a/../../evil.png": png_bytes()}), "a/../../evil.png"),
    "tar absolute": (make_tar({"/etc/evil.png": png_bytes()}), "/etc/evil.png"),
    "zip backslash": (make_zip({"..\\evil.png": png_bytes()}), "..\\evil.png"),
    "tar symlink": (make_tar(GOOD, symlink="link.png"), "link.png"),
    "non-image member": (make_tar({**GOOD, "notes.txt": b"just text"}), "notes.txt"),
    "image name, text inside": (make_zip({**GOOD, "fake.png": b"not a png at all"}), "fake.png"),
    "truncated png": (make_tar({"cut.png": png_bytes((64, 64))[:300]}), "cut.png"),
    "too many pixels": (make_zip({"bomb.png": bomb_png()}), "bomb.png"),
    "empty archive": (make_tar({}), "upload"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_inspect_archive_refuses_bad_uploads(case: str) -> None:
    data, field = BAD_UPLOADS[case]
    with pytest.raises(labeling.LabelingInputError) as info:
        labeling.inspect_archive(data, **LIMITS)
    assert info.value.field in (field, repr(field))


def test_inspect_archive_zip_bomb_refused_by_expansion() -> None:
    """A zip whose members claim far more bytes than the upload is refused from its directory alone."""
    data = make_zip({"big.png": b"\0" * 5_000_000, **GOOD})
    with pytest.raises(labeling.LabelingInputError, match="expands to"):
        labeling.inspect_archive(data, max_images=10, max_pixels=1_000_000, max_expanded_bytes=50 * len(data) // 100)


def test_inspect_archive_lists_images_in_order_and_skips_folders() -> None:
    members = {"x/b.png": png_bytes(seed=3), "x/a.jpg": _jpeg(), "__MACOSX/._a.jpg": b"junk"}
    zip_names = labeling.inspect_archive(make_zip(members), **LIMITS)
    assert zip_names == ["x/b.png", "x/a.jpg"]
    tar_names = labeling.inspect_archive(make_tar({"x/b.png": members["x/b.png"], "x/a.jpg": members["x/a.jpg"]}),
                                         **LIMITS)
    assert tar_names == ["x/b.png", "x/a.jpg"]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), 128, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_to_tensor_resizes_and_matches_channels() -> None:
    img = Image.open(io.BytesIO(png_bytes((40, 30))))
    rgb = labeling.to_tensor(img, channels=3, size=16)
    grey = labeling.to_tensor(img, channels=1, size=16)
    assert rgb.shape == (3, 16, 16) and grey.shape == (1, 16, 16)
    assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0


# --- with a bundle and a real worker ---


def test_bad_upload_writes_nothing(tmp_path: Path, tiny_bundle_dir: Path, use_env) -> None:
    settings = use_env(make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://"))
    tenant = make_tenant(settings.database_url)
    with get_sessionmaker(settings.database_url)() as session:
        for case in ("tar traversal", "non-image member", "not an archive"):
            with pytest.raises(JobInputError):
                create_labeling_job(session, tenant, bundle=tiny_bundle_dir.name, upload=BAD_UPLOADS[case][0])
        with pytest.raises(JobInputError) as info:
            create_labeling_job(session, tenant, bundle=tiny_bundle_dir.name,
                                source_keys=["tenants/someone-else/jobs/x/input/a.png"])
        assert info.value.field == "source_keys[0]"
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert get_storage(settings).list("") == []


def _generated_images(bundle, n: int) -> list[bytes]:
    """Images the tiny bundle makes, as PNG files (what a user's collection would look like)."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(n, bundle.nz, generator=gen)
    labels = torch.randn(n, bundle.layout.dim, generator=gen)
    images = bundle.generate(z, labels)  # [n, C, S, S] in [0, 1]
    out = []
    for img in (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_labeling_round_trip_tar_and_zip(tmp_path: Path, tiny_bundle_dir: Path, tiny_bundle, use_env,
                                         start_worker) -> None:
    env = make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://")
    settings = use_env(env)
    worker = start_worker(env)
    images = _generated_images(tiny_bundle, 7)
    names = [f"photos/img{i}.png" for i in range(len(images))]
    tenant = make_tenant(settings.database_url)
    uploads = {"tar": make_tar(dict(zip(names, images, strict=True))),
               "zip": make_zip(dict(zip(names, images, strict=True)))}
    job_ids = {}
    with get_sessionmaker(settings.database_url)() as session:
        for kind, data in uploads.items():
            job = create_labeling_job(session, tenant, bundle=tiny_bundle_dir.name, upload=data, name=f"lab-{kind}",
                                      shard_size=3)
            assert job.total_shards == 3 and job.total_samples == 7
            enqueue(session, job)
            job_ids[kind] = job.id
    # What the predictor says about the same images, computed here without the service.
    batch = torch.stack([labeling.to_tensor(Image.open(io.BytesIO(b)), tiny_bundle.channels, tiny_bundle.image_size)
                         for b in images])
    _z, expected = tiny_bundle.predict(batch)
    storage = get_storage(settings)
    for job_id in job_ids.values():
        job = wait_for_job(settings.database_url, job_id, timeout_s=60, workers=[worker])
        assert job.status == JOB_SUCCEEDED, job.error
        manifest = json.loads(storage.get_bytes(f"{job.prefix}manifest.json"))
        assert manifest["count"] == 7 and len(manifest["shards"]) == 3
        urls = [str(settings.storage_root / job.prefix / s["file"]) for s in manifest["shards"]]
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb"))
        assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(7)]
        for i, sample in enumerate(samples):
            assert sample["png"].shape[:2] == (tiny_bundle.image_size, tiny_bundle.image_size)
            np.testing.assert_allclose(sample["labels.npy"], expected[i].numpy(), atol=1e-4)
            meta = sample["json"]
            assert meta["source"] == f"img{i}.png" and meta["index"] == i
            assert meta["bundle_sha"] == tiny_bundle.sha
            assert set(tiny_bundle.layout.names) <= set(meta)
