"""Bad input gets the same clear message, naming the field, through the CLI, the Gradio API
and the Python API — and nothing is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gradio_client import Client

from app import crud
from app.db import read_session
from tests.browser import running_dashboard
from tests.conftest import REPO, reset_app_state
from workers.registry import ConfigError
from workers.runner import submit

CASES = [  # (kind, config, what the message must say)
    ("sft", {"lr": -0.1}, "lr: Input should be greater than 0"),
    ("prm-data", {"k": 0, "sft_run_ids": [1]}, "k: Input should be greater than or equal to 1"),
    ("rl", {"variant": "baseline", "sft_run_id": 4242}, "sft_run_id: run 4242 does not exist"),
    ("eval", {"policy": "{data}/no-model"}, "does not exist"),
    ("eval", {"policy": "{data}"}, "is not a model folder"),
    ("eval", {"policy_run_id": 1, "data": {"problem_set": "nope"}}, "no problem set named 'nope'"),
]


def fill(config: dict, data_dir) -> dict:
    return json.loads(json.dumps(config).replace("{data}", str(data_dir)))


def test_the_same_error_through_every_entry_point(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    with running_dashboard(data_dir) as dashboard:
        monkeypatch.setenv("PRM_STUDIO_DATA_DIR", str(data_dir))
        reset_app_state()
        client = Client(dashboard.url, verbose=False)
        # a run for the cases that need one to exist (policy_run_id=1)
        client.predict("healthcheck", json.dumps({"steps": 1}), api_name="/submit_job")
        env = {**os.environ, "PRM_STUDIO_DATA_DIR": str(data_dir)}
        for kind, raw, expected in CASES:
            config = fill(raw, data_dir)
            with pytest.raises(ConfigError) as python_error:
                submit(kind, config)
            assert expected in str(python_error.value)

            with pytest.raises(Exception) as api_error:
                client.predict(kind, json.dumps(config), api_name="/submit_job")
            assert expected in str(api_error.value)

            config_file = tmp_path / "config.json"
            config_file.write_text(json.dumps(config))
            done = subprocess.run(
                [sys.executable, "-m", "app.cli", "submit", kind, "--config", str(config_file)],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 2 and expected in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
    with read_session() as session:
        assert len(crud.list_runs(session)) == 1  # only the healthcheck: nothing half-written
