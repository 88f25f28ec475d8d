"""Exposure: loopback by default, no wider bind without credentials (which never come from
argv), login enforced when configured, path fields confined to allowed folders, URLs masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from app.security import check_exposure, is_loopback, masked_url
from app.settings import Settings
from tests.browser import wait_http
from tests.conftest import REPO, free_port
from workers.registry import ConfigError
from workers.runner import submit


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.0.2.10", "example.org", "::"]))


def test_a_wider_bind_needs_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(tmp_path))
    assert check_exposure("127.0.0.1", Settings()) is None
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_exposure("0.0.0.0", Settings())
    secrets = tmp_path / "secrets"
    secrets.write_text("# users\nana:s3cret\n")
    monkeypatch.setenv("PRM_STUDIO_AUTH_FILE", str(secrets))
    assert check_exposure("0.0.0.0", Settings()) == [("ana", "s3cret")]
    secrets.write_text("no-colon-here\n")
    with pytest.raises(ValueError, match="user:password"):
        check_exposure("0.0.0.0", Settings())


def test_up_refuses_an_open_bind_without_auth_and_starts_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "up", "--host", "0.0.0.0"],
        cwd=REPO,
        env={**os.environ, "PRM_STUDIO_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "PRM_STUDIO_AUTH_USER" in done.stderr
    assert not (tmp_path / "data").exists()


def test_with_credentials_the_dashboard_demands_a_login(tmp_path):
    port = free_port()
    log = tmp_path / "up.log"
    env = {
        **os.environ,
        "PRM_STUDIO_DATA_DIR": str(tmp_path / "data"),
        "PRM_STUDIO_AUTH_USER": "ana",
        "PRM_STUDIO_AUTH_PASSWORD": "s3cret",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "up", "--no-worker", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/", process, log)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10)
        assert refused.value.code in (401, 403)
        from gradio_client import Client

        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        client = Client(f"http://127.0.0.1:{port}/", auth=("ana", "s3cret"), verbose=False)
        run_id = client.predict("healthcheck", json.dumps({"steps": 1}), api_name="/submit_job")
        assert client.predict(run_id, api_name="/run_status")["status"] == "queued"
        assert "s3cret" not in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_path_fields_stay_inside_the_allowed_folders(data_dir, tmp_path, monkeypatch):
    from workers.tasks import TASKS

    monkeypatch.setattr(TASKS["rl"], "apply_async", lambda *a, **k: None)
    inside = data_dir / "models" / "sft"
    inside.mkdir(parents=True)
    (inside / "config.json").write_text("{}")
    assert submit("rl", {"variant": "baseline", "policy": str(inside)}) > 0

    escape = data_dir / "models" / "escape"
    escape.symlink_to("/etc")
    for outside in ("/etc", str(data_dir / ".." / ".." / ".." / "etc"), str(escape)):
        with pytest.raises(ConfigError, match=r"policy: .* is outside the allowed folders"):
            submit("rl", {"variant": "baseline", "policy": outside})
    with pytest.raises(ConfigError, match=r"checkpoints\[1\]"):
        submit("prm-data", {"checkpoints": [str(inside), "/etc"]})

    monkeypatch.setenv("PRM_STUDIO_PATH_ROOTS", "/etc")  # unless the folder is allowed
    from tests.conftest import reset_app_state

    reset_app_state()
    with pytest.raises(ConfigError, match="policy: /etc is not a model folder"):
        submit("rl", {"variant": "baseline", "policy": "/etc"})  # allowed, but not a model


def test_urls_are_shown_without_passwords():
    shown = masked_url("postgresql+psycopg://prm:hunter2@db:5432/prm")
    assert "hunter2" not in shown and "prm@db" not in shown and "***" in shown
