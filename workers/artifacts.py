"""Every artifact (checkpoint folder, dataset file) goes through here, written or read.

Jobs write under their host's ``ARTIFACTS_DIR``. Without ``ARTIFACTS_URL`` that folder is the
store (shared between hosts by mounting it) and an artifact's location is its path. With
``ARTIFACTS_URL`` (any fsspec URL), ``publish`` uploads what a job wrote to the same relative
place in the store and the location recorded is the store URL; ``local_path`` gives a job on any
host a local copy, downloaded into its own ``ARTIFACTS_DIR`` on first use — so the host that
wrote an artifact reads it without a download, and every other host downloads it once.

Also here: the newest checkpoint of an input run, and resuming a run of its own from its last
checkpoint (forgetting what a lost attempt logged after it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fsspec.core import url_to_fs
from pydantic import BaseModel

from app.settings import get_settings


def _store() -> tuple[str, Path]:
    """The store's URL ("" for none) and this host's artifact folder."""
    settings = get_settings()
    assert settings.artifacts_dir is not None
    return settings.artifacts_url, settings.artifacts_dir


def is_url(value: str) -> bool:
    return "://" in value


def in_store(location: str) -> bool:
    """Whether ``location`` is a URL inside the configured store."""
    url, _ = _store()
    return bool(url) and location.startswith(url + "/")


def location(path: Path) -> str:
    """Where ``path`` (under ARTIFACTS_DIR) is once published: its store URL, or the path
    itself when there is no store."""
    url, root = _store()
    if not url:
        return str(path)
    try:
        relative = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        raise ValueError(
            f"{path} is outside ARTIFACTS_DIR ({root}): only artifacts written there are "
            "published to PRM_STUDIO_ARTIFACTS_URL"
        ) from None
    return f"{url}/{relative.as_posix()}"


def publish(path: Path) -> str:
    """Upload a file or folder a job wrote under ARTIFACTS_DIR to the store; its location."""
    target = location(path)
    if not is_url(target):
        return target
    fs, _ = url_to_fs(target)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        remote = target if file == path else f"{target}/{file.relative_to(path).as_posix()}"
        fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(file), remote)
    return target


def exists(value: str) -> bool:
    """Whether a location (a local path or a store URL) holds a file or folder."""
    if in_store(value):
        fs, path = url_to_fs(value)
        return fs.exists(path)
    return Path(value).expanduser().exists()


def local_path(value: str) -> str:
    """A local path for a location: a path as it is; a store URL as its copy under this host's
    ARTIFACTS_DIR, downloaded first if missing (into a temporary sibling, then renamed, so an
    interrupted download never looks complete)."""
    if not is_url(value):
        return value
    url, root = _store()
    if not in_store(value):
        raise ValueError(
            f"{value} is not in the artifact store {url or '(none configured)'}: set "
            "PRM_STUDIO_ARTIFACTS_URL to the store it was written to"
        )
    local = root / value[len(url) + 1 :]
    if local.exists():
        return str(local)
    fs, remote = url_to_fs(value)
    if not fs.exists(remote):
        raise FileNotFoundError(f"{value} is missing from the artifact store")
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    try:
        if fs.isdir(remote):
            for file in fs.find(remote):
                copy = staging / file[len(remote) + 1 :]
                copy.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(file, str(copy))
            try:
                os.replace(staging, local)
            except OSError:  # another process on this host finished the same download first
                if not local.is_dir():
                    raise
        else:
            fs.get_file(remote, str(staging / local.name))
            os.replace(staging / local.name, local)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(local)


def localized(config: BaseModel) -> BaseModel:
    """``config`` with each store URL in a path field (``policy``, ``checkpoints``, …) replaced
    by its local copy, so a job only ever opens local paths; the run keeps the URLs."""
    from app.security import PATH_FIELDS

    update: dict[str, object] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            update[name] = localized(value)
        elif name in PATH_FIELDS and isinstance(value, str):
            update[name] = local_path(value)
        elif name in PATH_FIELDS and isinstance(value, list):
            update[name] = [local_path(item) for item in value]
    return config.model_copy(update=update)


# ----------------------------------------------------------------------------- runs' artifacts


def artifact_locations(run_id: int, kind: str) -> list[tuple[str, int | None]]:
    """Location and step of each of a run's artifacts of ``kind``, oldest step first."""
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Artifact

    with read_session() as session:
        rows = session.execute(
            select(Artifact.path, Artifact.step)
            .where(Artifact.run_id == run_id, Artifact.kind == kind)
            .order_by(Artifact.step, Artifact.id)
        ).all()
    return [(path, step) for path, step in rows]


def latest_artifact(run_id: int, kind: str) -> tuple[str, int | None] | None:
    """Local path and step of a run's newest artifact of ``kind`` (None if it has none)."""
    from sqlalchemy import select

    from app.db import read_session
    from app.orm import Artifact

    with read_session() as session:
        row = session.execute(
            select(Artifact.path, Artifact.step)
            .where(Artifact.run_id == run_id, Artifact.kind == kind)
            .order_by(Artifact.step.desc(), Artifact.id.desc())
            .limit(1)
        ).first()
    return (local_path(row[0]), row[1]) if row else None


def required_artifact(run_id: int, kind: str, field: str) -> str:
    found = latest_artifact(run_id, kind)
    if found is None:
        raise ValueError(f"{field}: run {run_id} has no {kind} artifact (has it finished?)")
    return found[0]


def forget_after(run_id: int, step: int) -> None:
    """Delete the metrics and samples a lost attempt logged after ``step``."""
    from sqlalchemy import delete

    from app.db import session_scope
    from app.orm import Metric, Sample

    with session_scope() as session:
        session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.step > step))
        session.execute(delete(Sample).where(Sample.run_id == run_id, Sample.step > step))
