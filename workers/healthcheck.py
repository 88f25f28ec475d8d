"""The ``healthcheck`` job: proves a worker takes jobs, reports progress and metrics, and says
what it runs on (host, CPUs, torch, GPUs)."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.reporting import Reporter


class HealthcheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=5, ge=1, le=1000, description="Progress steps to report.")
    step_seconds: float = Field(
        default=0.5, ge=0.0, le=60.0, description="Seconds each step sleeps (a stand-in for work)."
    )
    fail: bool = Field(
        default=False, description="Raise an error after the last step, to test failure handling."
    )


def worker_facts() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }


def run_healthcheck(reporter: Reporter, cfg: HealthcheckConfig) -> dict[str, Any]:
    started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        step_started = time.perf_counter()
        time.sleep(cfg.step_seconds)
        reporter.metrics(
            step,
            {
                "healthcheck/step_seconds": time.perf_counter() - step_started,
                "healthcheck/load_avg_1m": os.getloadavg()[0],
            },
        )
        reporter.progress(step / cfg.steps, f"step {step}/{cfg.steps}")
    if cfg.fail:
        raise RuntimeError("healthcheck asked to fail (fail=true)")
    return {**worker_facts(), "elapsed_s": round(time.perf_counter() - started, 3)}
