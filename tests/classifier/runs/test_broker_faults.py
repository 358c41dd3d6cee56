"""The queue under faults and at scale, with real processes: a private Redis (append-only file,
fsync always) and real Celery workers sharing the test database.

- Redis crashes while a run waits in the queue: after the restart the run is still queued and a
  worker trains it.
- Redis crashes while one run trains and another waits: the worker reconnects, the running run
  finishes (once, without a second attempt) and the waiting one runs after it.
- Two workers on one broker (two "GPU hosts"): two runs train at the same time, each in its own
  folder, and both succeed with their own files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from classifier.models import TrainingRun
from classifier.runs.services import run_create
from tests.classifier.run_fixtures import TINY_CONFIG
from tests.classifier.worker_fixtures import WorkerGroup, celery_sending_to, wait_for, worker_env
from tests.services import EmbeddedRedis

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

Status = TrainingRun.Status
# Long enough to be mid-run when Redis goes away (about 0.2-1 s per epoch on two busy cores).
LONG = {**TINY_CONFIG, "finetune_epochs": 120, "early_stopping_patience": 0}


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test alone (other tests and engineers use the shared one's `training` queue)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = EmbeddedRedis(folder, persistent=True)
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture
def broker(private_redis):
    """This process's Celery app sends to the private Redis."""
    with celery_sending_to(private_redis.url) as app:
        yield app


@pytest.fixture
def workers(broker, private_redis, tmp_path, settings):
    """Start real workers (``start(name)``), each with its own storage root for local files."""
    group = WorkerGroup(
        tmp_path,
        lambda name: worker_env(
            redis_url=private_redis.url, settings=settings, var_dir=tmp_path / f"var-{name}", BREEDLAB_HEARTBEAT_TIMEOUT=8
        ),
    )
    yield group.start
    group.stop_all()


def queue_length(redis_server: EmbeddedRedis) -> int:
    import redis

    return redis.Redis.from_url(redis_server.url).llen("training")


def finished(run_id: int):
    run = TrainingRun.objects.get(pk=run_id)
    return run if run.is_final else None


def test_a_queued_run_survives_a_redis_crash_and_runs_when_a_worker_comes(private_redis, broker, workers, tiny_dataset):
    run = run_create(dataset=tiny_dataset, config=dict(TINY_CONFIG))
    assert queue_length(private_redis) == 1

    private_redis.restart(kill=True)  # SIGKILL: no chance to save anything on the way down
    assert queue_length(private_redis) == 1
    assert TrainingRun.objects.get(pk=run.pk).status == Status.QUEUED

    worker = workers("after-crash")
    done = wait_for(lambda: finished(run.pk), timeout=180, what="the run", procs=[worker])
    assert done.status == Status.SUCCEEDED, done.error
    assert done.attempts == 1 and queue_length(private_redis) == 0


def test_redis_crashes_while_one_run_trains_and_another_waits_and_both_finish(private_redis, broker, workers, tiny_dataset):
    worker = workers("steady")
    training = run_create(dataset=tiny_dataset, config=dict(LONG))
    waiting = run_create(dataset=tiny_dataset, config=dict(TINY_CONFIG))
    wait_for(lambda: TrainingRun.objects.get(pk=training.pk).epochs.count() >= 2, timeout=180,
             what="two epochs of the first run", procs=[worker])
    assert TrainingRun.objects.get(pk=waiting.pk).status == Status.QUEUED
    assert queue_length(private_redis) == 1  # the second run's message, not yet taken (prefetch 1, acks late)

    private_redis.restart(kill=True)
    epochs_at_crash = TrainingRun.objects.get(pk=training.pk).epochs.count()
    assert epochs_at_crash < 1 + LONG["finetune_epochs"]  # it was mid-run

    first = wait_for(lambda: finished(training.pk), timeout=240, what="the running run", procs=[worker])
    assert first.status == Status.SUCCEEDED, first.error
    assert first.attempts == 1  # it kept training through the outage: no second attempt
    assert "Connection to broker lost" in worker.log.read_text()
    assert first.epochs.count() == 1 + LONG["finetune_epochs"] > epochs_at_crash
    second = wait_for(lambda: finished(waiting.pk), timeout=180, what="the waiting run", procs=[worker])
    assert second.status == Status.SUCCEEDED, second.error
    assert second.started_at >= first.finished_at  # one worker, one run at a time
    assert worker.poll() is None


def test_two_workers_on_one_broker_train_two_runs_at_once_in_their_own_folders(broker, workers, tiny_dataset, settings):
    gpu_a, gpu_b = workers("gpu-a"), workers("gpu-b")
    runs = [run_create(dataset=tiny_dataset, config={**LONG, "finetune_epochs": 20, "seed": seed}) for seed in (1, 2)]
    ids = [r.pk for r in runs]

    def both_running():
        rows = list(TrainingRun.objects.filter(pk__in=ids, status=Status.RUNNING, epochs__isnull=False).distinct())
        return rows if len(rows) == 2 else None

    rows = wait_for(both_running, timeout=180, what="both runs training at once", procs=[gpu_a, gpu_b])
    assert len({r.worker for r in rows}) == 2, [r.worker for r in rows]  # one run per worker

    done = [wait_for(lambda pk=pk: finished(pk), timeout=240, what=f"run {pk}", procs=[gpu_a, gpu_b]) for pk in ids]
    assert [r.status for r in done] == [Status.SUCCEEDED] * 2, [r.error for r in done]
    assert {r.worker.split("@")[0] for r in done} == {"gpu-a", "gpu-b"}
    folders = [Path(settings.RUNS_ROOT) / r.out_dir for r in done]
    assert folders[0] != folders[1] and not folders[0].is_relative_to(folders[1]) and not folders[1].is_relative_to(folders[0])
    for run, folder in zip(done, folders, strict=True):
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["config"]["seed"] == run.config["seed"]  # each folder holds its own run's files
        assert json.loads((folder / "split.json").read_text())["val"] == tiny_dataset.split["val"]
    digests = [hashlib.sha256((f / "model.safetensors").read_bytes()).hexdigest() for f in folders]
    assert digests[0] != digests[1]
    # Their training overlapped in time.
    assert done[0].started_at < done[1].finished_at and done[1].started_at < done[0].finished_at
