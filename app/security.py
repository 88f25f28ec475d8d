"""What keeps a dashboard that launches jobs safe to expose.

- It binds 127.0.0.1 by default and refuses any other address unless authentication is
  configured — credentials from the environment or a secrets file, never the command line
  (where every user of the machine can read them in the process list).
- File-path fields of job configs must resolve (symlinks followed) inside configured roots, so
  a form cannot point a job at ``../../etc`` or a symlink out of the data folder.
- Uploads are size-limited (the dashboard passes ``max_upload_mb`` to Gradio).
- URLs are shown with their passwords masked.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.engine import make_url

from app.settings import Settings

# Config fields that name files or folders on the worker's disk.
PATH_FIELDS = frozenset(
    {"policy", "init_from", "resume_from", "prm", "dataset_path", "checkpoints", "path"}
)


class ExposureError(ValueError):
    """Listening beyond this machine without authentication."""


class PathNotAllowed(ValueError):
    """A path field that points outside the configured roots."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(settings: Settings) -> list[tuple[str, str]]:
    """(user, password) pairs from PRM_STUDIO_AUTH_USER/PASSWORD and the secrets file
    (``user:password`` per line, ``#`` comments)."""
    pairs = []
    if settings.auth_user and settings.auth_password:
        pairs.append((settings.auth_user, settings.auth_password.get_secret_value()))
    if settings.auth_file:
        for line in Path(settings.auth_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                user, sep, password = line.partition(":")
                if not sep or not user or not password:
                    raise ExposureError(f"{settings.auth_file}: expected 'user:password' lines")
                pairs.append((user, password))
    return pairs


def check_exposure(host: str, settings: Settings) -> list[tuple[str, str]] | None:
    """The credentials to require, or None on loopback; refuse a wider bind without any."""
    auth = credentials(settings)
    if is_loopback(host):
        return auth or None
    if not auth:
        raise ExposureError(
            f"refusing to listen on {host}: anyone who can reach it could launch jobs. Set "
            "PRM_STUDIO_AUTH_USER and PRM_STUDIO_AUTH_PASSWORD (or PRM_STUDIO_AUTH_FILE), or "
            "bind 127.0.0.1"
        )
    return auth


def allowed_roots(settings: Settings) -> list[Path]:
    assert settings.artifacts_dir is not None
    roots = [settings.data_dir, settings.artifacts_dir, Path.cwd(), *settings.path_roots]
    return [Path(os.path.realpath(root)) for root in roots]


def check_paths(config: BaseModel, settings: Settings) -> None:
    """Every path field resolves (symlinks and ``..`` included) inside an allowed root."""
    from workers.artifacts import in_store, is_url
    from workers.registry import walk_fields

    roots = allowed_roots(settings)
    for field, name, value in walk_fields(config):
        if name not in PATH_FIELDS or not isinstance(value, str):
            continue
        if is_url(value):
            if not in_store(value):
                raise PathNotAllowed(
                    f"{field}: {value!r} is a URL outside the artifact store; only locations "
                    "under PRM_STUDIO_ARTIFACTS_URL are allowed"
                )
            continue
        real = Path(os.path.realpath(Path(value).expanduser()))
        if not any(real == root or root in real.parents for root in roots):
            raise PathNotAllowed(
                f"{field}: {value!r} is outside the allowed folders "
                f"({', '.join(str(r) for r in roots)}); add its folder to PRM_STUDIO_PATH_ROOTS"
            )


def masked_url(url: str) -> str:
    """A database or broker URL fit for logs and the UI: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
