"""Scale-out: the artifact store (an fsspec URL) carries what one host's job wrote to a job on
another host, and two Celery workers on Redis share one queue, each job running exactly once."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from app import settings as settings_module
from app.cli import stop_process_group
from app.db import migrate, read_session
from app.orm import Artifact, Metric, Run, RunStatus, Worker
from app.settings import Settings
from tests.conftest import BWRAP, REDIS_HOST, REDIS_PORT, REPO, port_open, require, reset_app_state
from tests.conftest import wait_for as wait_until
from tests.test_jobs import cli_submit
from workers import artifacts

REDIS_SCALEOUT_DB = 12  # this module's own Redis database, flushed before and after


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A file:// artifact store in a folder no host's ARTIFACTS_DIR shares."""
    url = (tmp_path / "store").as_uri()
    monkeypatch.setenv("PRM_STUDIO_ARTIFACTS_URL", url)
    return url


def as_host(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """Act as a host whose ARTIFACTS_DIR is ``folder``."""
    monkeypatch.setenv("PRM_STUDIO_ARTIFACTS_DIR", str(folder))
    reset_app_state()
    return folder


def test_a_published_folder_is_downloaded_once_on_another_host(tmp_path, monkeypatch, store):
    host_a = as_host(monkeypatch, tmp_path / "a")
    checkpoint = host_a / "runs" / "7" / "sft" / "step-2"
    (checkpoint / "tokenizer").mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "tokenizer" / "vocab.json").write_text('{"a": 1}')
    dataset = host_a / "runs" / "8" / "prm_dataset.jsonl"
    dataset.parent.mkdir(parents=True)
    dataset.write_text('{"labels": [1]}\n')

    stored, stored_file = artifacts.publish(checkpoint), artifacts.publish(dataset)
    assert stored == f"{store}/runs/7/sft/step-2"
    assert artifacts.local_path(stored) == str(checkpoint)  # the writer reads its own copy
    assert artifacts.exists(f"{stored}/config.json")

    host_b = as_host(monkeypatch, tmp_path / "b")
    copy = Path(artifacts.local_path(stored))
    assert copy == host_b / "runs" / "7" / "sft" / "step-2"
    assert (copy / "tokenizer" / "vocab.json").read_text() == '{"a": 1}'
    assert Path(artifacts.local_path(stored_file)).read_text() == '{"labels": [1]}\n'
    (copy / "config.json").write_text('{"cached": true}')
    assert (Path(artifacts.local_path(stored)) / "config.json").read_text() == '{"cached": true}'
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]  # no staging left

    with pytest.raises(ValueError, match="PRM_STUDIO_ARTIFACTS_URL"):
        artifacts.local_path("s3://elsewhere/runs/7")
    with pytest.raises(FileNotFoundError, match="missing from the artifact store"):
        artifacts.local_path(f"{store}/runs/99")


def test_a_config_naming_store_urls_reaches_the_job_as_local_paths(tmp_path, monkeypatch, store):
    from workers.jobs_prm_data import PrmDataJobConfig

    host_a = as_host(monkeypatch, tmp_path / "a")
    for step in (1, 2):
        (host_a / "ckpt" / str(step)).mkdir(parents=True)
        (host_a / "ckpt" / str(step) / "config.json").write_text("{}")
    urls = [artifacts.publish(host_a / "ckpt" / str(step)) for step in (1, 2)]
    host_b = as_host(monkeypatch, tmp_path / "b")
    config = PrmDataJobConfig(checkpoints=urls)
    local = artifacts.localized(config)
    assert local.checkpoints == [str(host_b / "ckpt" / "1"), str(host_b / "ckpt" / "2")]
    assert config.checkpoints == urls


@pytest.mark.parametrize(
    ("url", "named"),
    [("bucket/prefix", "not a URL"), ("nosuch://x", "nosuch"), ("s3://bucket/x", "s3fs")],
)
def test_a_bad_artifact_store_url_is_refused_naming_the_setting(monkeypatch, url, named):
    if named == "s3fs" and importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed: s3:// is a valid store here")
    monkeypatch.setenv("PRM_STUDIO_ARTIFACTS_URL", url)
    with pytest.raises(ValidationError) as error:
        Settings()
    assert "PRM_STUDIO_ARTIFACTS_URL" in str(error.value) and named in str(error.value)


# ----------------------------------------------------------------------------- two hosts


def shared_services(tmp_path: Path, broker_url: str) -> dict[str, str]:
    """What every host of a deployment has in common: database, broker and artifact store."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    return {
        "PRM_STUDIO_DATABASE_URL": f"sqlite:///{shared / 'prm_studio.sqlite'}",
        "PRM_STUDIO_BROKER_URL": broker_url,
        "PRM_STUDIO_RESULT_BACKEND": f"db+sqlite:///{shared / 'celery_results.sqlite'}",
    }


def host_env(tmp_path: Path, name: str) -> dict[str, str]:
    """A host's own folders: nothing under them is visible to another host."""
    folder = tmp_path / name
    return {"PRM_STUDIO_DATA_DIR": str(folder), "PRM_STUDIO_ARTIFACTS_DIR": str(folder / "art")}


def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker_url: str) -> None:
    """This test process is the submitting host: the shared services, its own folders."""
    for name, value in {
        **shared_services(tmp_path, broker_url),
        **host_env(tmp_path, "submitter"),
    }.items():
        monkeypatch.setenv(name, value)
    reset_app_state()
    migrate()


def finished_run(run_id: int, timeout: float) -> Run:
    def done() -> Run | None:
        with read_session() as session:
            run = session.get(Run, run_id)
            return run if run is not None and RunStatus(run.status).finished else None

    run = wait_until(done, timeout=timeout, what=f"run {run_id} to finish", every=0.5)
    assert run.status == RunStatus.succeeded, run.error
    return run


def test_an_eval_on_host_b_uses_the_checkpoint_an_sft_on_host_a_wrote(
    tmp_path, monkeypatch, store, start_worker
):
    require(BWRAP.exists(), "bubblewrap is not installed (the eval runs generated code)")
    deploy(tmp_path, monkeypatch, f"sqla+sqlite:///{tmp_path / 'shared' / 'broker.sqlite'}")
    benchmark = {"n_train": 8, "n_test": 4, "min_steps": 2, "max_steps": 3}

    worker_a = start_worker("--queues=gpu", env=host_env(tmp_path, "host-a"))
    sft = cli_submit(
        "sft",
        {
            "steps": 2,
            "batch_size": 4,
            "tiny": {"n_layer": 1, "n_embd": 32, "n_head": 2},
            "eval_every": 0,
            "final_eval": False,
            "data": {"benchmark": benchmark},
        },
        tmp_path,
    )
    finished_run(sft, timeout=240)
    stop_process_group(worker_a)
    with read_session() as session:
        (checkpoint,) = session.scalars(select(Artifact.path).where(Artifact.run_id == sft)).all()
    assert checkpoint.startswith(f"{store}/runs/{sft}/")
    written_on_a = tmp_path / "host-a" / "art" / checkpoint.removeprefix(f"{store}/")
    assert (written_on_a / "config.json").is_file()
    os.rename(tmp_path / "host-a", tmp_path / "host-a-gone")  # host A and its disk go away

    start_worker("--queues=gpu", env=host_env(tmp_path, "host-b"))
    evaluation = cli_submit(
        "eval",
        {
            "policy_run_id": sft,
            "data": {"benchmark": benchmark},
            "max_problems": 2,
            "eval": {"n_samples": 1, "ks": [1], "max_new_tokens": 16},
        },
        tmp_path,
    )
    run = finished_run(evaluation, timeout=240)
    on_b = tmp_path / "host-b" / "art" / checkpoint.removeprefix(f"{store}/")
    assert run.result["policy"] == str(on_b)
    assert (on_b / "config.json").is_file()


# ----------------------------------------------------------------------------- shared queue


@pytest.fixture
def private_redis() -> str:
    require(port_open(REDIS_HOST, REDIS_PORT), "Redis is not listening on 127.0.0.1:6379")
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_SCALEOUT_DB)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_SCALEOUT_DB}"
    client.flushdb()


def submit_many(kind: str, config: dict, count: int) -> list[int]:
    """Submit ``count`` runs from one CLI-like process (the environment's broker and database)."""
    script = (
        "import json, sys\n"
        "from workers.runner import submit\n"
        f"print(json.dumps([submit({kind!r}, {config!r}) for _ in range({count})]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_workers_on_redis_share_a_queue_and_run_each_job_once(
    tmp_path, monkeypatch, private_redis, start_worker
):
    deploy(tmp_path, monkeypatch, private_redis)
    names = ("host-a", "host-b")
    workers = [
        start_worker("--queues=cpu", f"--name={name}@%h", env=host_env(tmp_path, name))
        for name in names
    ]
    run_ids = submit_many("healthcheck", {"steps": 1, "step_seconds": 0.4}, 16)
    runs = [finished_run(run_id, timeout=180) for run_id in run_ids]

    pids_of = [
        {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}
        for worker in workers
    ]
    ran_on = [
        next(i for i, pids in enumerate(pids_of) if run.result["pid"] in pids) for run in runs
    ]
    assert set(ran_on) == {0, 1}, f"one worker took every job: {ran_on}"
    assert all(run.attempts == 1 for run in runs)
    with read_session() as session:
        metric_rows = session.scalars(
            select(Metric.run_id).where(Metric.run_id.in_(run_ids), Metric.step == 1)
        ).all()
        registered = set(session.scalars(select(Worker.name)))
    # one healthcheck step logs two metrics; a second execution would log them again
    assert sorted(metric_rows) == sorted(run_ids * 2)
    # two workers on one host, each under its own name in the Workers view
    assert {f"{name}@{socket.gethostname()}" for name in names} <= registered


def test_jobs_share_the_cpu_cores_among_the_jobs_a_worker_runs(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(settings_module, "GPU_DEVICE_FILES", ())
    assert Settings(worker_concurrency=0).concurrency() == 8  # a CPU host: one job per core
    assert Settings(worker_concurrency=0).torch_threads() == 1
    monkeypatch.setattr(settings_module, "GPU_DEVICE_FILES", ("/",))  # a device file exists
    assert Settings(worker_concurrency=0).concurrency() == 1  # a GPU host: one job per worker
    assert Settings(worker_concurrency=1).torch_threads() == 8
    assert Settings(worker_concurrency=2).torch_threads() == 4
    assert Settings(worker_concurrency=16).torch_threads() == 1
    assert Settings(worker_concurrency=2, job_threads=3).torch_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch's own convention wins over the share
    assert Settings(worker_concurrency=1).torch_threads() == 1
