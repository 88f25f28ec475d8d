"""compose.yaml validates (Debian's docker-compose parses it without an engine) and describes
the production shape: PostgreSQL, Redis, the dashboard, GPU workers with a device reservation,
CPU workers, healthchecks and named volumes."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.conftest import REPO, require


def test_compose_config_validates_and_has_the_production_shape(tmp_path):
    require(shutil.which("docker-compose") is not None, "docker-compose is not installed")
    shutil.copy(REPO / "compose.yaml", tmp_path / "compose.yaml")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    done = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"postgres", "redis", "app", "worker", "cpu-worker", "flower"} <= set(services)
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    assert services["worker"]["command"][-3:] == ["gpu", "--concurrency", "1"]
    assert "cpu" in services["cpu-worker"]["command"]
    for name in ("postgres", "redis", "app"):
        assert "healthcheck" in services[name], name
    env = services["app"]["environment"]
    assert env["PRM_STUDIO_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["PRM_STUDIO_BROKER_URL"].startswith("redis://")
    assert {"database", "broker", "artifacts"} <= set(config["volumes"])
    for name in ("app", "worker", "cpu-worker"):  # one artifact store shared by every host
        assert any(
            v.startswith("artifacts:") or "artifacts" in str(v) for v in services[name]["volumes"]
        )
