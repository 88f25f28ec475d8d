"""The CLI end to end in subprocesses: good paths print what scripts parse, bad input gives
one clear line, a non-zero exit, and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def cli(tmp_path: Path):
    env = {**os.environ, "PRM_STUDIO_DATA_DIR": str(tmp_path / "data")}
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "ARTIFACTS_DIR"):
        env.pop(f"PRM_STUDIO_{name}", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def run_count(cli) -> int:
    listing = cli("runs")
    assert listing.returncode == 0, listing.stderr
    return len(listing.stdout.strip().splitlines()) - 1  # minus the header


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("prm-studio: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_submit_status_cancel_and_list(cli, tmp_path: Path):
    config = tmp_path / "hc.toml"
    config.write_text("steps = 2\nstep_seconds = 0.0\n")
    submitted = cli("submit", "healthcheck", "--config", str(config), "--name", "smoke")
    assert submitted.returncode == 0, submitted.stderr
    run_id = int(submitted.stdout.strip().splitlines()[-1])

    status = cli("status", str(run_id), "--json")
    data = json.loads(status.stdout)
    assert {"id", "kind", "status", "progress"} <= set(data)
    assert (data["id"], data["kind"], data["status"]) == (run_id, "healthcheck", "queued")
    assert data["config"] == {"steps": 2, "step_seconds": 0.0, "fail": False}

    cancelled = cli("cancel", str(run_id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert "smoke" in cli("runs").stdout


def test_unknown_kind_is_refused_and_nothing_written(cli, tmp_path: Path):
    assert_one_line_error(cli("submit", "train-the-world"), "unknown job kind", "healthcheck")
    assert not (tmp_path / "data").exists()


def test_malformed_config_file_is_refused_and_nothing_written(cli, tmp_path: Path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"steps": 3,,}')
    assert_one_line_error(cli("submit", "healthcheck", "--config", str(bad_json)), "line 1")
    invalid = tmp_path / "invalid.json"
    invalid.write_text('{"steps": 0, "colour": "red"}')
    assert_one_line_error(
        cli("submit", "healthcheck", "--config", str(invalid)), "steps:", "colour:"
    )
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    assert_one_line_error(cli("submit", "healthcheck", "--config", str(not_object)), "list")
    missing = cli("submit", "healthcheck", "--config", str(tmp_path / "nope.json"))
    assert_one_line_error(missing, "does not exist")
    assert not (tmp_path / "data").exists()


def test_missing_run_id_is_a_clear_error(cli):
    assert run_count(cli) == 0
    for command in (("status", "4242"), ("cancel", "4242")):
        assert_one_line_error(cli(*command), "run 4242 does not exist")
    assert run_count(cli) == 0


def test_non_numeric_run_id_is_a_usage_error(cli):
    done = cli("status", "abc")
    assert done.returncode == 2
    assert "run id must be an integer" in done.stderr


def test_exec_runs_requests_in_the_sandbox_and_writes_one_result_each(cli, tmp_path: Path):
    from tests.conftest import BWRAP, require

    require(BWRAP.exists(), "bubblewrap is not installed")
    requests = tmp_path / "requests.jsonl"
    lines = [
        {"id": "ok", "program": "def f(x):\n    return x + 1\n", "tests": ["assert f(1) == 2"]},
        {"id": "bad", "program": "def f(x):\n    return x\n", "tests": ["assert f(1) == 2"]},
    ]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = cli("exec", str(requests), "--out", str(tmp_path / "results.jsonl"), "--workers", "1")
    assert done.returncode == 0, done.stderr
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in results] == [("ok", "passed"), ("bad", "failed")]


def test_exec_names_the_line_of_a_bad_request(cli, tmp_path: Path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"id": "a", "program": "x = 1", "tests": ["assert x"]}\n{"id": 3}\n')
    done = cli("exec", str(requests), "--out", str(tmp_path / "out.jsonl"))
    assert_one_line_error(done, "requests.jsonl:2: field 'id'")
