"""Sandbox children never see credentials, end to end from a job: a worker whose environment
holds secrets — a database URL with a password, the dashboard's password, a cloud key — runs an
``eval`` job whose programs search everything a sandboxed process can read for them (its
environment, every ``/proc/*/environ`` and ``/proc/*/cmdline``), find nothing, and nothing of
the secrets appears in what the job stored or the worker logged."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import select

from app import crud
from app.db import migrate, read_session
from app.orm import Sample
from tests.conftest import BWRAP, REPO, require, reset_app_state, wait_for
from tests.test_jobs import cli_submit

MARKER = "s3cr3t-"  # every secret holds it; the probe looks for it without naming a secret
# short: the tiny policy's context is 512 tokens. The marker is split so the source never
# matches itself; a model's completion continues the last line's comment.
PROBE = """import glob, os
def probe():
    texts = [repr(os.environ)]
    for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
        try:
            texts.append(open(path, "rb").read().decode("utf-8", "replace"))
        except OSError:
            pass
    words = ("s3cr3t" + "-", "PASSWORD", "SECRET", "DATABASE_URL", "AWS_", "PRM_STUDIO")
    return len(texts), [t for t in texts if any(w in t for w in words)]
#"""
TESTS = ["assert probe()[0] >= 3", "assert probe()[1] == []"]  # read, and found nothing


def secrets_env(database_url: str) -> dict[str, str]:
    password = MARKER + uuid.uuid4().hex
    return {
        "PRM_STUDIO_DATABASE_URL": database_url.replace("postgres@", f"postgres:{password}@", 1),
        "PRM_STUDIO_AUTH_USER": "ana",
        "PRM_STUDIO_AUTH_PASSWORD": MARKER + uuid.uuid4().hex,
        "AWS_SECRET_ACCESS_KEY": MARKER + uuid.uuid4().hex,
    }


def test_the_probe_finds_credentials_where_they_are(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", MARKER + "x")
    namespace: dict = {}
    exec(PROBE, namespace)  # outside the sandbox, the same code does see them
    assert namespace["probe"]()[1]


def test_sandboxed_programs_of_a_job_never_see_the_workers_credentials(
    data_dir, postgres_url, start_worker, tiny_policy, monkeypatch, tmp_path
):
    require(BWRAP.exists(), "bubblewrap is not installed")
    secrets = secrets_env(postgres_url)  # trust authentication ignores the password
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    reset_app_state()
    migrate()
    problems = tmp_path / "probe.jsonl"
    problem = {"task_id": "probe/0", "prompt": PROBE, "tests": TESTS, "reference": "\n"}
    problems.write_text(json.dumps(problem) + "\n")
    subprocess.run(  # the reference runs in the sandbox too, and must pass
        [sys.executable, "-m", "app.cli", "problems", "import", str(problems), "--name", "probe"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )

    worker = start_worker()  # inherits the secrets

    def worker_holds_the_secrets() -> bool:
        # /proc/PID/environ is the environment the process image started with: until the
        # child has exec'd the worker it still shows pytest's own, so poll
        held = Path(f"/proc/{worker.pid}/environ").read_bytes().decode()
        return all(value in held for value in secrets.values())

    wait_for(worker_holds_the_secrets, 30, "the worker to start with the secrets in its env")
    config = {
        "policy": tiny_policy,
        "data": {"problem_set": "probe"},
        # one token continues the comment (or ends its line): the program stays the probe
        "eval": {"greedy": True, "n_samples": 3, "max_new_tokens": 1, "batch_size": 4},
        "device": "cpu",
    }
    run_id = cli_submit("eval", config, tmp_path)

    def finished():
        with read_session() as session:
            run = crud.get_run(session, run_id=run_id)
            return run if run.status in ("succeeded", "failed", "cancelled") else None

    run = wait_for(finished, timeout=240, what="the eval run to finish", every=1)
    assert run.status == "succeeded", run.error
    with read_session() as session:
        samples = session.scalars(select(Sample).where(Sample.run_id == run_id)).all()
    assert len(samples) == 4  # greedy + 3 sampled
    for sample in samples:  # each program read its sources and found no credential
        assert (sample.tests_passed, sample.tests_total) == (2, 2), sample.detail
    stored = json.dumps(
        [[s.code, s.detail, s.meta] for s in samples]
        + [crud.run_summary(run), (tmp_path / "worker-0.log").read_text()],
        default=str,
    )
    assert MARKER not in stored
