"""The generation engine: reproducible shards that the stock webdataset reader loads."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from models.engine import find_bundle, generate_dataset, generate_shards, plan_shards
from models.spec import SpecError, parse_spec
from worker.storage import LocalStorage

torch.set_num_threads(2)


def make_spec(**over: object):
    base = {"name": "digits-t", "bundle": "tiny-digits", "count": 45, "shard_size": 10, "seed": 11,
            "image": {"format": "png"}, "extras": ["sim", "z"],
            "labels": {"digit": {"fixed": 7}, "rotation_deg": {"uniform": {"low": -5, "high": 15}}}}
    return parse_spec({**base, **over})


def shard_bytes(store: LocalStorage, prefix: str) -> dict[str, bytes]:
    return {k.rsplit("/", 1)[-1]: store.get_bytes(k) for k in store.list(prefix) if k.endswith(".tar")}


@pytest.fixture(scope="module")
def reference(tiny_bundle, tmp_path_factory) -> tuple[LocalStorage, dict]:
    store = LocalStorage(tmp_path_factory.mktemp("store"))
    manifest = generate_dataset(make_spec(), tiny_bundle, store, "ref/")
    return store, manifest


def test_manifest_card_and_shards_are_written(reference) -> None:
    store, manifest = reference
    keys = store.list("ref/")
    assert keys == sorted([f"ref/digits-t-{s:06d}.tar" for s in range(5)]
                          + ["ref/manifest.json", "ref/card.png", "ref/histograms.png", "ref/card.md"])
    assert [s["count"] for s in manifest["shards"]] == [10, 10, 10, 10, 5]
    assert json.loads(store.get_bytes("ref/manifest.json")) == manifest
    assert manifest["members"] == ["png", "labels.npy", "json", "cls", "sim.png", "z.npy"]
    Image.open(io.BytesIO(store.get_bytes("ref/card.png"))).verify()
    Image.open(io.BytesIO(store.get_bytes("ref/histograms.png"))).verify()
    import hashlib

    for s in manifest["shards"]:
        assert hashlib.sha256(store.get_bytes("ref/" + s["file"])).hexdigest() == s["sha256"]


def test_stock_webdataset_reads_every_sample_and_labels_honour_the_spec(reference, tiny_bundle) -> None:
    store, manifest = reference
    urls = [str(store.local_path("ref/" + s["file"])) for s in manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(45)]
    for s in samples:
        meta = s["json"]
        assert s["png"].shape == (16, 16, 3) and s["sim.png"].shape == (16, 16, 3)
        assert s["labels.npy"].dtype == np.float32 and s["labels.npy"].shape == (16,)
        assert s["z.npy"].shape == (4,) and s["cls"] == 7
        assert meta["labels"]["digit"] == 7 and meta["bundle_sha"] == tiny_bundle.sha and meta["seed"] == 11
        assert -5 <= meta["labels"]["rotation_deg"] <= 15
        assert meta["index"] == int(s["__key__"])
        assert np.argmax(s["labels.npy"][:10]) == 7
        assert abs(12 * s["labels.npy"][10] - meta["labels"]["rotation_deg"]) < 1e-5


def test_same_spec_twice_gives_identical_bytes(reference, tiny_bundle, tmp_path: Path) -> None:
    store, manifest = reference
    again = LocalStorage(tmp_path)
    assert generate_dataset(make_spec(), tiny_bundle, again, "", batch_size=7, encode_workers=3) == manifest
    assert shard_bytes(again, "") == shard_bytes(store, "ref/")
    assert again.get_bytes("manifest.json") == store.get_bytes("ref/manifest.json")


def test_three_parallel_shard_ranges_equal_one_run(reference, tiny_bundle, tmp_path: Path) -> None:
    store, _ = reference
    par = LocalStorage(tmp_path)
    spec = make_spec()
    errors: list[BaseException] = []

    def run(ids: range) -> None:
        try:
            generate_shards(spec, tiny_bundle, par, "p", ids, batch_size=4)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in (range(0, 2), range(2, 3), range(3, 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert shard_bytes(par, "p/") == shard_bytes(store, "ref/")


def test_samples_do_not_depend_on_shard_size(reference, tiny_bundle, tmp_path: Path) -> None:
    store, manifest = reference
    other = LocalStorage(tmp_path)
    m2 = generate_dataset(make_spec(shard_size=45), tiny_bundle, other, "")
    ref_samples = list(wds.WebDataset([str(store.local_path("ref/" + s["file"])) for s in manifest["shards"]],
                                      shardshuffle=False))
    one = list(wds.WebDataset([str(other.local_path(m2["shards"][0]["file"]))], shardshuffle=False))
    strip = ("__url__", "__local_path__")
    assert [{k: v for k, v in s.items() if k not in strip} for s in one] == \
           [{k: v for k, v in s.items() if k not in strip} for s in ref_samples]


def test_cancel_stores_no_partial_shard(tiny_bundle, tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 4  # after four batches of 4: shard 1 is in flight

    infos = generate_shards(make_spec(), tiny_bundle, store, "", range(5), cancelled=cancelled, batch_size=4)
    assert len(infos) <= 1
    assert store.list("") == [i.file for i in infos]  # only complete shards, all reported
    for info in infos:
        assert len(list(wds.WebDataset([str(store.local_path(info.file))], shardshuffle=False))) == 10


def test_plan_and_bad_requests(tiny_bundle, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    plans = plan_shards(make_spec())
    assert [(p.start, p.stop) for p in plans] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 45)]
    assert plans[4].file == "digits-t-000004.tar"
    with pytest.raises(SpecError, match="shards: shard 5 out of range"):
        generate_shards(make_spec(), tiny_bundle, LocalStorage(tmp_path), "", [5])
    with pytest.raises(SpecError) as info:
        find_bundle("faces-xl", tiny_bundle_dir.parent)
    assert info.value.field == "bundle" and "tiny-digits" in info.value.reason
    with pytest.raises(SpecError) as info:
        generate_shards(make_spec(labels={"yaw_deg": {"fixed": 3}}), tiny_bundle, LocalStorage(tmp_path), "", [0])
    assert info.value.field == "labels.yaw_deg"
    assert LocalStorage(tmp_path).list("") == []


def test_resize_mask_and_webp(tiny_bundle, tmp_path: Path) -> None:
    """Output size differs from the bundle's: images, sim and mask are all resized; webp decodes."""
    store = LocalStorage(tmp_path)
    spec = make_spec(count=6, shard_size=6, image={"format": "webp", "quality": 80, "size": 24},
                     extras=["mask", "sim"])
    generate_shards(spec, tiny_bundle, store, "", [0])
    samples = list(wds.WebDataset([str(store.local_path("digits-t-000000.tar"))], shardshuffle=False).decode("rgb"))
    assert len(samples) == 6
    for s in samples:
        assert s["webp"].shape == (24, 24, 3) and s["sim.png"].shape == (24, 24, 3)
        assert s["mask.png"].shape == (24, 24, 3) and 0 < s["mask.png"].mean() < 1  # a silhouette, not blank


def test_tar_bytes_equal_webdataset_tarwriter() -> None:
    """The engine's own tar members are byte for byte what `webdataset.TarWriter` writes."""
    from models.engine import TAR_MTIME, TAR_OWNER
    from models.tarwriter import MemberHeaders, archive_end

    rng = np.random.default_rng(3)
    samples = [{"__key__": f"{i:09d}", "jpg": rng.bytes(n), "json": b'{"index":%d}' % i, "labels.npy": rng.bytes(64)}
               for i, n in enumerate([0, 1, 511, 512, 513, 10_000])]
    expected = io.BytesIO()
    with wds.TarWriter(expected, encoder=False, mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER) as writer:
        for s in samples:
            writer.write(s)
    headers = MemberHeaders(mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER)
    body = b"".join(headers.sample_bytes(s["__key__"], sorted((k, v) for k, v in s.items() if k != "__key__"))
                    for s in samples)
    assert body + archive_end(len(body)) == expected.getvalue()


def test_json_numbers_are_the_values_rounded_to_six_decimals() -> None:
    """Batch-formatted .json numbers parse back to exactly np.round(x, 6), and read like repr."""
    from models.decimals import decimal_rows

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal((64, 50)), 180 * rng.uniform(-1, 1, (64, 50))], axis=1)
    x[0, :8] = [0.0, -4e-7, 1e-5, 12.5, -180.0, 123456.789, 0.1, 2.0000004]
    rows = decimal_rows(x, 6)
    rounded = np.round(x, 6)
    for row, want in zip(rows, rounded.tolist(), strict=True):
        assert json.loads(b"[" + row + b"]") == want
    text = rows[0].decode().split(",")
    assert text[:8] == ["0.0", "0.0", "0.00001", "12.5", "-180.0", "123456.789", "0.1", "2.0"]
    assert all(t == repr(v) for t, v in zip(text, rounded[0].tolist(), strict=True) if abs(v) >= 1e-4)
    assert decimal_rows(np.array([[1e12, -0.5]]), 6) == [b"1000000000000.0,-0.5"]  # beyond the fast path
