"""The worker's lookahead: a shard task begins the next shard's first batch (after the last shard, the
dataset card), the next task in the same process takes it, and every file stays byte-identical to the
engine's one-call run; a wrong guess is dropped without changing any byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.engine import Lookahead, generate_dataset, generate_shards
from models.spec import DatasetSpec
from tests.worker.worker_helpers import make_env, make_tenant
from worker.db import JOB_SUCCEEDED, SHARD_STORED, Job, ShardTask, get_sessionmaker
from worker.jobs import create_dataset_job, enqueue
from worker.resources import get_bundle, get_lookahead
from worker.storage import LocalStorage
from worker.tasks import finalize_job, generate_shard


def make_spec(bundle: str, seed: int = 5) -> DatasetSpec:
    return DatasetSpec.model_validate({"name": "ahead", "bundle": bundle, "count": 14, "seed": seed,
                                       "shard_size": 4, "image": {"format": "jpg"}, "extras": ["z"]})


def engine_shards(spec: DatasetSpec, bundle: object, root: Path, **kwargs: object) -> dict[str, bytes]:
    """The engine's own shards of `spec`, written in one call (the reference bytes), by file name."""
    store = LocalStorage(root)
    generate_shards(spec, bundle, store, "", range(spec.num_shards), **kwargs)  # type: ignore[arg-type]
    return {k: store.get_bytes(k) for k in store.list("") if k.endswith(".tar")}


def test_consecutive_shard_tasks_in_one_process_take_the_lookahead_and_equal_the_engine(
        tmp_path: Path, tiny_bundle_dir: Path, use_env) -> None:
    settings = use_env(make_env(tmp_path, tiny_bundle_dir.parent, broker="filesystem://"))
    spec = make_spec(tiny_bundle_dir.name)
    maker = get_sessionmaker(settings.database_url)
    with maker() as session:
        job = create_dataset_job(session, make_tenant(settings.database_url), spec)
        enqueue(session, job)  # messages wait in the folder broker; this process runs the tasks itself
        job_id, prefix = job.id, job.prefix
    lookahead = get_lookahead()
    started, taken = lookahead.started, lookahead.taken
    for shard in range(spec.num_shards):  # the order a worker receives them in
        with maker() as session:
            task_id = session.get(ShardTask, (job_id, shard)).task_id
        generate_shard.apply(args=[job_id, shard], task_id=task_id)
    finalize_job.apply(args=[job_id])

    # Each shard began the next one's first batch (the last one: the card), and each was taken.
    assert (lookahead.started - started, lookahead.taken - taken) == (spec.num_shards, spec.num_shards)
    with maker() as session:
        job = session.get(Job, job_id)
        assert job.status == JOB_SUCCEEDED, job.error
        assert all(s.status == SHARD_STORED and s.deliveries == 1 for s in job.shards)
    store = LocalStorage(settings.storage_root)
    served = {k.removeprefix(prefix): store.get_bytes(k) for k in store.list(prefix)}
    engine = LocalStorage(tmp_path / "engine")
    generate_dataset(spec, get_bundle(settings, spec.bundle), engine, "")
    assert served == {k: engine.get_bytes(k) for k in engine.list("")}  # shards, card files and manifest


def test_a_wrong_lookahead_guess_is_dropped_and_changes_no_byte(tmp_path: Path, tiny_bundle) -> None:
    spec, other = make_spec(tiny_bundle.name, seed=5), make_spec(tiny_bundle.name, seed=6)
    reference = engine_shards(spec, tiny_bundle, tmp_path / "ref")
    lookahead = Lookahead()
    # A batch made ahead for another dataset (another job's shard came next) and one for the right
    # dataset but another shard (another worker took the guessed shard): neither may be used. The
    # runs below start with samples 0..3, the first guess's indices.
    for guess_spec, start in ((other, 0), (spec, 4)):
        index = np.arange(start, start + 4, dtype=np.int64)
        wrong = _produce(guess_spec, tiny_bundle, index)
        lookahead.start(guess_spec, tiny_bundle, index, lambda batch=wrong: batch)
        run = engine_shards(spec, tiny_bundle, tmp_path / f"{guess_spec.seed}-{start}", lookahead=lookahead, batch_size=4)
        assert run == reference
    assert (lookahead.started, lookahead.taken) == (2, 0)


def _produce(spec: DatasetSpec, bundle: object, index: np.ndarray):  # type: ignore[no-untyped-def]
    from models.engine import BatchProducer

    return BatchProducer(spec, bundle).produce(torch.from_numpy(index))  # type: ignore[arg-type]
