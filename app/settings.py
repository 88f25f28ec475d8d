"""All application settings, read once from the environment (prefix ``PRM_STUDIO_``).

Every value has a default that works on a fresh laptop with nothing installed but the package:
an SQLite database and an SQLite-backed Celery broker inside ``DATA_DIR``. Production points
``DATABASE_URL`` at PostgreSQL and ``BROKER_URL`` at Redis (see compose.yaml).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    """``$XDG_DATA_HOME/prm-studio``, else ``~/.local/share/prm-studio``, else ``./var``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "prm-studio"
    home = Path.home()
    if home.is_dir() and os.access(home, os.W_OK):
        return home / ".local" / "share" / "prm-studio"
    return Path("var").resolve()


class Settings(BaseSettings):
    """Web and infrastructure settings. Job hyper-parameters live in each job's config model."""

    model_config = SettingsConfigDict(env_prefix="PRM_STUDIO_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder for the default SQLite database, broker and artifacts.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the run database. Default: SQLite file in DATA_DIR. "
        "Production: postgresql+psycopg://user:pass@host/db.",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker. Default: the SQLAlchemy transport on an SQLite file in "
        "DATA_DIR. Production: redis://host:6379/0.",
    )
    result_backend: str = Field(
        default="",
        description="Celery result backend. Run state lives in the database, so this only "
        "matters for Celery's own bookkeeping. Default: SQLite file in DATA_DIR.",
    )
    artifacts_dir: Path | None = Field(
        default=None,
        description="Where checkpoints and datasets are written. Default: DATA_DIR/artifacts. "
        "Without ARTIFACTS_URL it is the artifact store itself, so all workers of a multi-host "
        "deployment must share it (an NFS mount); with ARTIFACTS_URL it is this host's working "
        "copy and cache of the store.",
    )
    artifacts_url: str = Field(
        default="",
        description="An fsspec URL of the shared artifact store (s3://bucket/prefix, "
        "file:///mnt/shared/artifacts, …). Jobs write into ARTIFACTS_DIR and upload; a job on "
        "another host downloads what it needs into its own ARTIFACTS_DIR. Empty: no upload.",
    )
    host: str = Field(default="127.0.0.1", description="Address the dashboard listens on.")
    port: int = Field(default=7860, ge=1, le=65535, description="Port of the dashboard.")
    auth_user: str | None = Field(
        default=None, description="Dashboard login (required to bind beyond 127.0.0.1)."
    )
    auth_password: SecretStr | None = Field(
        default=None, description="Password of AUTH_USER (from the environment, never argv)."
    )
    auth_file: Path | None = Field(
        default=None, description="A secrets file of 'user:password' lines (alternative)."
    )
    path_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Extra folders job configs may name (models, datasets); DATA_DIR, "
        "ARTIFACTS_DIR and the working directory are always allowed. JSON list or "
        "os.pathsep-separated.",
    )
    max_upload_mb: int = Field(
        default=100, ge=1, le=10_000, description="Largest dataset upload the dashboard takes."
    )
    worker_concurrency: int = Field(
        default=0,
        ge=0,
        description="Jobs one worker process runs at once. 0: one on a GPU host (one GPU per "
        "worker; give multi-GPU hosts one worker per GPU), else one per CPU core, as the tiny "
        "model's jobs use one core best.",
    )
    job_threads: int = Field(
        default=0,
        ge=0,
        description="Torch threads of each job. 0: OMP_NUM_THREADS if set, else the host's CPU "
        "cores divided by the jobs a worker runs at once (at least 1), so that jobs side by "
        "side do not fight for cores.",
    )
    cancel_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a running job re-reads its cancel flag from the database.",
    )
    sandbox_mode: Literal["bubblewrap", "rlimits"] = Field(
        default="bubblewrap",
        description="How generated code is isolated: 'bubblewrap' (namespaces; default) or "
        "'rlimits' (weak: resource limits only, no isolation — logged loudly).",
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job whose heartbeat is older than this is lost (its worker "
        "died): another worker may claim it and resume it from its last checkpoint.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Retry policy: how many times a run is started before a loss fails it.",
    )

    @field_validator("path_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            return value
        protocol, sep, rest = value.partition("://")
        if not sep or not rest:
            raise ValueError(
                f"PRM_STUDIO_ARTIFACTS_URL: {value!r} is not a URL; give protocol://location, "
                "e.g. s3://bucket/prefix or file:///mnt/shared/artifacts"
            )
        import fsspec

        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as error:
            raise ValueError(
                f"PRM_STUDIO_ARTIFACTS_URL: fsspec cannot open {protocol}:// ({error}); install "
                "the package for it (s3fs for s3://, gcsfs for gs://, adlfs for az://)"
            ) from None
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'prm_studio.sqlite'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{self.data_dir / 'celery_results.sqlite'}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        return self

    def concurrency(self) -> int:
        """``worker_concurrency``, or for 0 one job on a GPU host, one per core on a CPU one.
        GPUs are seen by their device files, not through torch: a worker must not initialise
        CUDA before it forks its pool."""
        if self.worker_concurrency:
            return self.worker_concurrency
        if any(Path(device).exists() for device in GPU_DEVICE_FILES):
            return 1
        return os.cpu_count() or 1

    def torch_threads(self) -> int:
        """``job_threads``; else ``OMP_NUM_THREADS`` when set (torch's own convention); else
        the CPU cores shared among the jobs a worker runs at once."""
        if self.job_threads:
            return self.job_threads
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():
            return max(1, int(os.environ["OMP_NUM_THREADS"]))
        return max(1, (os.cpu_count() or 1) // self.concurrency())

    def ensure_dirs(self) -> None:
        """Create the data and artifact folders (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        assert self.artifacts_dir is not None
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA's driver, AMD's ROCm


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
