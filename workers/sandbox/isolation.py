"""How a sandbox process is started: under bubblewrap (the default) or, opt-in, rlimits only.

Bubblewrap mode: every namespace unshared (no network at all, not even loopback; a private pid
namespace in which the zygote is pid 1; no further user namespaces), read-only binds of /usr and
the interpreter's install only, private size-capped tmpfs for /tmp and /dev/shm, a read-only
root and /dev, a cleared environment, ``--die-with-parent`` and ``--new-session``. When the pool
runs as root, bubblewrap itself is started as uid/gid 65534 with no supplementary groups:
root is exempt from RLIMIT_NPROC, and an unprivileged user namespace gives the sandbox no
privilege over the host.

The code that runs inside (``_SHIPPED``) is not bound from the repository: the
interpreter reads it from a memfd on stdin, so the sandbox needs no path into the checkout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from .models import SandboxLimits

log = logging.getLogger(__name__)

SANDBOX_UID = SANDBOX_GID = 65534  # nobody / nogroup, used when the pool runs as root
INSTALL_HINT = (
    "bubblewrap (bwrap) is required to run untrusted code: install it with "
    "`apt-get install bubblewrap`, or set PRM_STUDIO_SANDBOX_MODE=rlimits to accept the weak "
    "rlimit-only mode (no filesystem, network or process isolation)"
)
WEAK_WARNING = (
    "PRM_STUDIO_SANDBOX_MODE=rlimits: generated code runs WITHOUT isolation (resource limits "
    "only); it can read your files, reach the network and signal your processes"
)
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONHASHSEED": "0"}
# -S: no site-packages; -s: no user site; -P: no script directory on sys.path.
_PYTHON_FLAGS = ("-S", "-s", "-P")
_BOOTSTRAP = """\
import json, sys, types
package = types.ModuleType("prm_sandbox")
package.__path__ = []
sys.modules["prm_sandbox"] = package
for name, source in json.load(sys.stdin).items():
    module = types.ModuleType("prm_sandbox." + name)
    module.__package__ = "prm_sandbox"
    sys.modules[module.__name__] = module
    exec(compile(source, "/sandbox/" + name + ".py", "exec"), module.__dict__)
sys.modules["prm_sandbox.zygote"].main(sys.argv[1:])
"""
_SHIPPED = ("wire", "processes", "runner", "link", "judge", "zygote")  # in import order


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here; the message says what to install or set."""


def sandbox_mode() -> Literal["bubblewrap", "rlimits"]:
    """The isolation mode: the setting ``PRM_STUDIO_SANDBOX_MODE`` (default ``bubblewrap``),
    read afresh at every call so a pool started later sees a changed environment."""
    from app.settings import Settings

    return Settings().sandbox_mode


def isolation_level() -> str:
    """What the UI shows about how generated code is isolated."""
    return "bubblewrap" if sandbox_mode() == "bubblewrap" else "rlimits-only (WEAK)"


@dataclass(frozen=True)
class Launch:
    """Everything ``subprocess.Popen`` needs to start one sandbox's zygote."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: int | None  # drop to this uid/gid (the pool runs as root), else keep ours
    scratch: str | None  # a host directory to delete when the sandbox closes (rlimits mode)

    @property
    def code(self) -> bytes:
        """What the bootstrap reads on stdin: the modules that run inside the sandbox."""
        here = Path(__file__).parent
        return json.dumps({name: (here / f"{name}.py").read_text() for name in _SHIPPED}).encode()


def plan_launch(mode: str, limits: SandboxLimits, control_fd: int) -> Launch:
    """The command line, environment and user of a new sandbox (in rlimits mode, with the
    private scratch directory it creates for it)."""
    user = SANDBOX_UID if os.geteuid() == 0 else None
    python, prefix = _interpreter(user)
    if mode == "rlimits":
        scratch = tempfile.mkdtemp(prefix="prm-sandbox-")
        if user is not None:
            os.chown(scratch, user, SANDBOX_GID)
        config = _config(limits, control_fd, [scratch])
        argv = [python, *_PYTHON_FLAGS, "-c", _BOOTSTRAP, config]
        return Launch(argv, {**_ENV, "HOME": scratch, "TMPDIR": scratch}, scratch, user, scratch)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(INSTALL_HINT)
    config = _config(limits, control_fd, ["/tmp", "/dev/shm"])
    argv = [
        bwrap,
        *_bwrap_options(prefix, limits),
        "--",
        python,
        *_PYTHON_FLAGS,
        "-c",
        _BOOTSTRAP,
        config,
    ]
    return Launch(argv, {}, "/", user, None)


def _config(limits: SandboxLimits, control_fd: int, scratch: list[str]) -> str:
    """The harness's ``Config`` as JSON."""
    return json.dumps(
        {
            "control_fd": control_fd,
            "memory_bytes": limits.memory_mb << 20,
            "file_bytes": limits.max_file_mb << 20,
            "open_files": limits.max_open_files,
            "processes": limits.max_processes,
            "output_bytes": limits.output_bytes,
            "scratch": scratch,
        }
    )


def _bwrap_options(prefix: str, limits: SandboxLimits) -> list[str]:
    options = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    options += ["--new-session", "--as-pid-1", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            options += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            options += ["--ro-bind", top, top]
    if not Path(prefix).is_relative_to("/usr"):
        options += ["--ro-bind", prefix, prefix]
    size = str(limits.tmp_mb << 20)
    options += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/tmp"]
    options += ["--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev", "--remount-ro", "/"]
    options += ["--clearenv", "--chdir", "/tmp"]
    for name, value in _ENV.items():
        options += ["--setenv", name, value]
    return options


@cache  # once per process and user: it walks the install's folders, and logs its choice once
def _interpreter(user: int | None) -> tuple[str, str]:
    """(executable, install prefix) of the Python that runs inside the sandbox.

    The project's base interpreter when the sandbox user can reach it; otherwise the system's
    Python of the same version (a pyenv build under a private /root is out of uid 65534's
    reach, and bubblewrap resolves bind sources as that user).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        (os.path.join(sys.base_prefix, "bin", f"python{version}"), sys.base_prefix),
        (f"/usr/bin/python{version}", "/usr"),
    ]
    for python, prefix in candidates:
        if os.path.exists(python) and _reachable(python, prefix, user):
            if prefix != sys.base_prefix:
                log.info("sandbox uses %s: uid %s cannot reach %s", python, user, sys.base_prefix)
            return python, prefix
    raise SandboxUnavailable(
        f"no Python {version} the sandbox user can run: make {sys.base_prefix} readable by "
        f"uid {user} or install python{version} (apt-get install python{version})"
    )


def _reachable(python: str, prefix: str, user: int | None) -> bool:
    """Whether ``user`` (None: ourselves) can execute ``python`` and read its install."""
    if user is None:
        return os.access(python, os.X_OK) and os.access(prefix, os.R_OK | os.X_OK)
    real = Path(python).resolve()
    for directory in (*real.parents, *Path(prefix).resolve().parents, Path(prefix).resolve()):
        mode = directory.stat().st_mode
        if not (mode & stat.S_IXOTH or directory.stat().st_uid == user):
            return False
    return bool(real.stat().st_mode & stat.S_IXOTH)
