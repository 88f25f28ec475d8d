"""Sandboxed execution of generated code: safe, exact, fast (DESIGN §3).

Every reward, label and pass rate comes from running untrusted model-generated programs against
unit tests. This package runs them so that

* **nothing escapes** (``isolation.py``): each sandbox is a bubblewrap container with every
  namespace unshared (no network at all, a private pid namespace), read-only system binds,
  private size-capped /tmp, a cleared environment and an unprivileged uid; each program process
  has rlimits on memory, CPU, file size, open files and processes, and deadlines kill what
  overruns. Without bubblewrap the pool refuses to start unless ``PRM_STUDIO_SANDBOX_MODE=rlimits``
  explicitly accepts a weak mode, which it then logs loudly at every start;
* **a pass is real** (``zygote.py`` tells why, ``judge.py`` and ``runner.py`` how): the test code
  runs in a trusted judge process the program cannot reach; the program only answers calls, and
  its answers come back as plain data (``wire.py``), so exiting early, printing, patching
  builtins or returning an object whose ``__eq__`` always says True cannot make a test pass;
* **partial credit is exact**: each assertion (each one of a HumanEval ``check`` too) is judged
  on its own, so ``passed``/``total`` count tests and the first failing one is known;
* **it is fast** (``pool.py``): warm sandboxes fork one process per request (forked ahead of
  it) instead of starting an interpreter; one sandbox per CPU core by default.

Use ``run_batch(requests)`` for a one-off batch, ``with SandboxPool() as pool:
pool.run_batch(...)`` to reuse the warm sandboxes, or ``exec_jsonl`` (``prm-studio exec``).
"""

from .isolation import SandboxUnavailable, isolation_level, sandbox_mode
from .jsonl import RequestFileError, exec_jsonl
from .models import ExecRequest, ExecResult, SandboxLimits, StdioCase
from .pool import SandboxPool, run_batch

__all__ = [
    "ExecRequest",
    "ExecResult",
    "RequestFileError",
    "SandboxLimits",
    "SandboxPool",
    "SandboxUnavailable",
    "StdioCase",
    "exec_jsonl",
    "isolation_level",
    "run_batch",
    "sandbox_mode",
]
