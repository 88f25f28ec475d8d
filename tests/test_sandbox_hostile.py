"""Hostile programs: each must end with the right non-pass verdict, leave the host untouched and
no process behind, and leave the pool serving. Legitimate programs must still pass.

Every test runs its program through ``hostile()``, which checks the verdict, that no process of
the request survives, and that the next (legitimate) request still passes.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import require
from workers.sandbox import ExecResult, SandboxLimits, SandboxPool

REPO = Path(__file__).resolve().parents[1]
CANARY = f"canary-{uuid.uuid4().hex}"  # a secret in the host's environment
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    require(
        shutil.which("bwrap") is not None,
        "bubblewrap is not installed (apt-get install bubblewrap)",
    )
    os.environ["PRM_STUDIO_SECRET_CANARY"] = CANARY  # what a credential in the host env looks like
    try:
        with SandboxPool(workers=2, limits=SandboxLimits(memory_mb=256)) as pool:
            yield pool
    finally:
        del os.environ["PRM_STUDIO_SECRET_CANARY"]


def leftover_processes(pool: SandboxPool) -> list[psutil.Process]:
    """Processes beyond each sandbox's resident ones: bubblewrap, the zygote under it, and the
    zygote's two children (the judge, and the program process forked for the next request),
    which have no children. A leaked process re-parents to the zygote (pid 1 of the sandbox)."""
    extra = []
    for root in pool.root_pids():
        (zygote,) = psutil.Process(root).children()
        children = zygote.children()
        extra += [g for child in children for g in child.children(recursive=True)]
        extra += children if len(children) > 2 else []
    return extra


def hostile(pool: SandboxPool, program: str, tests: list, expected: str, **fields) -> ExecResult:
    """Run a hostile request; check its verdict, the absence of leftovers, and the pool."""
    request = {
        "id": "hostile",
        "program": program,
        "tests": tests,
        "timeout_s": TIMEOUT_S,
        **fields,
    }
    result = pool.run_batch([request])[0]
    assert result.status == expected, result
    assert CANARY not in result.model_dump_json()
    assert leftover_processes(pool) == []
    legit = pool.run_batch([{"id": "next", "program": "x = 41", "tests": ["assert x + 1 == 42"]}])
    assert legit[0].status == "passed", legit[0]
    return result


# ----------------------------------------------------------------------------- resources


def test_fork_bomb(pool: SandboxPool) -> None:
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    hostile(pool, bomb, ["assert True"], "timeout")


def test_thread_bomb(pool: SandboxPool) -> None:
    bomb = (
        "import threading, time\n"
        "while True:\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    result = hostile(pool, bomb, ["assert True"], "error")
    assert "can't start new thread" in result.detail


def test_memory_bomb(pool: SandboxPool) -> None:
    hostile(pool, "def f():\n    return bytearray(10**11)\n", ["assert f()"], "memory")


def test_slow_memory_creep(pool: SandboxPool) -> None:
    creep = (
        "def f():\n    chunks = []\n    while True:\n        chunks.append(bytearray(1 << 20))\n"
    )
    hostile(pool, creep, ["assert f()"], "memory")


def test_infinite_loop_and_sleep(pool: SandboxPool) -> None:
    hostile(pool, "def f():\n    while True:\n        pass\n", ["assert f()"], "timeout")
    hostile(pool, "import time\ntime.sleep(60)\n", ["assert True"], "timeout")


def test_signal_handlers_do_not_stop_the_deadline(pool: SandboxPool) -> None:
    stubborn = (
        "import signal\n"
        "for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "signal.alarm(1)\n"
        "while True:\n    pass\n"
    )
    hostile(pool, stubborn, ["assert True"], "timeout")


def test_huge_file_and_full_tmp(pool: SandboxPool) -> None:
    huge = (
        "def f():\n    with open('/tmp/huge', 'wb') as out:\n        out.write(bytes(100 << 20))\n"
    )
    result = hostile(pool, huge, ["assert f()"], "error")
    assert "File too large" in result.detail
    fill = (
        "def f():\n    for i in range(1000):\n"
        "        with open(f'/tmp/fill{i}', 'wb') as out:\n            out.write(bytes(8 << 20))\n"
    )
    result = hostile(pool, fill, ["assert f()"], "error")
    assert "No space left" in result.detail
    empty = {
        "id": "ls",
        "program": "import os\nfiles = os.listdir('/tmp')",
        "tests": ["assert files == []"],
    }
    assert [r.status for r in pool.run_batch([empty] * 4)] == ["passed"] * 4  # in both sandboxes


def test_deep_recursion(pool: SandboxPool) -> None:
    result = hostile(pool, "def f(n):\n    return f(n + 1)\n", ["assert f(0)"], "error")
    assert "RecursionError" in result.detail and result.error_line == 2


def test_ctypes_segfault(pool: SandboxPool) -> None:
    result = hostile(
        pool, "import ctypes\ndef f():\n    return ctypes.string_at(0)\n", ["assert f()"], "killed"
    )
    assert "SIGSEGV" in result.detail


def test_huge_exception_message_and_stdout_flood(pool: SandboxPool) -> None:
    shout = hostile(pool, "def f():\n    raise ValueError('x' * 10**7)\n", ["assert f()"], "error")
    assert len(shout.detail) <= 600
    flood = "def f():\n    print('spam' * 10**7)\n    return 0\n"
    result = hostile(pool, flood, ["assert f() == 1"], "failed")
    assert result.stdout.startswith("spam") and len(result.stdout) < 5000
    endless = "import sys\nwhile True:\n    sys.stdout.write('spam' * 1000)\n"
    result = hostile(pool, endless, ["assert True"], "timeout")
    assert len(result.stdout) < 5000


# ----------------------------------------------------------------------------- isolation


def test_no_network_not_even_loopback(pool: SandboxPool) -> None:
    program = (
        "import socket\n"
        "def connect(port):\n    socket.create_connection(('127.0.0.1', port), timeout=1).close()\n"
        "    return 'connected'\n"
        "def resolve(name):\n    return socket.getaddrinfo(name, 443)\n"
    )
    for port in (6379, 5432):  # Redis and PostgreSQL, which the host reaches
        with socket.socket() as probe:
            probe.settimeout(0.5)
            require(probe.connect_ex(("127.0.0.1", port)) == 0, f"nothing on 127.0.0.1:{port}")
        result = hostile(pool, program, [f"assert connect({port}) == 'connected'"], "error")
        assert "Connection refused" in result.detail
    result = hostile(pool, program, ["assert resolve('pypi.org')"], "error")
    assert "gaierror" in result.detail


def test_programs_run_unprivileged(pool: SandboxPool) -> None:
    program = (
        "import os\n"
        "status = dict(line.split(':\\t') for line in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in line)\n"
    )
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    tests = [
        f"assert os.getuid() == os.geteuid() == {uid}",
        "assert status['CapEff'] == status['CapPrm'] == status['CapBnd'] == '0' * 16",
        "assert status['NoNewPrivs'] == '1'",
    ]
    result = pool.run_batch([{"id": "who", "program": program, "tests": tests}])[0]
    assert (result.status, result.passed) == ("passed", 3), result


def test_no_host_environment(pool: SandboxPool) -> None:
    program = (
        "import os, glob\n"
        "def env():\n    return dict(os.environ)\n"
        "def proc_environ():\n    found = []\n"
        "    for path in glob.glob('/proc/*/environ'):\n"
        "        try:\n            found.append(open(path, 'rb').read().decode())\n"
        "        except OSError:\n            pass\n"
        "    return found\n"
    )
    tests = [
        "assert 'PRM_STUDIO_SECRET_CANARY' in env()",
        "assert any('CANARY' in e for e in proc_environ())",
        "assert sorted(env()) == ['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONHASHSEED']",
    ]
    result = hostile(pool, program, tests, "failed")
    assert result.passed == 1  # the third: a cleared environment


def test_no_host_files(pool: SandboxPool) -> None:
    program = "import os\ndef read(path):\n    return open(path).read()\n"
    for path in ("/etc/shadow", "/etc/passwd", str(REPO / "pyproject.toml"), "/root/.bashrc"):
        result = hostile(pool, program, [f"assert read({path!r})"], "error")
        assert "FileNotFoundError" in result.detail
    visible = "import os\ndef top():\n    return sorted(os.listdir('/'))\n"
    tests = ["assert top() == ['bin', 'dev', 'lib', 'lib64', 'proc', 'sbin', 'tmp', 'usr']"]
    result = pool.run_batch([{"id": "ls", "program": visible, "tests": tests}])[0]
    assert result.status == "passed", result.detail


def test_no_writes_outside_the_sandbox(pool: SandboxPool, tmp_path: Path) -> None:
    marker = f"pwned-{uuid.uuid4().hex}"
    targets = [REPO / marker, tmp_path / marker, Path("/tmp") / marker, Path("/usr") / marker]
    program = (
        "def f(paths):\n    written = []\n    for path in paths:\n        try:\n"
        "            open(path, 'w').write('x')\n            written.append(path)\n"
        "        except OSError:\n            pass\n    return written\n"
    )
    tests = [f"assert f({[str(t) for t in targets]!r}) == 'escaped'"]
    hostile(pool, program, tests, "failed")
    assert not any(target.exists() for target in targets)


def test_killing_the_parent_the_group_or_everything(pool: SandboxPool) -> None:
    parent = "import os\ndef f():\n    os.kill(os.getppid(), 9)\n    return 0\n"
    hostile(pool, parent, ["assert f() == 1"], "failed")  # the zygote, pid 1, ignores it
    group = "import os\ndef f():\n    os.killpg(0, 9)\n"
    hostile(pool, group, ["assert f() == 1"], "killed")
    everything = "import os\ndef f():\n    os.kill(-1, 9)\n"
    hostile(pool, everything, ["assert f() == 1"], "killed")
    at_import = "import os\nos.kill(-1, 9)\n"
    hostile(pool, at_import, ["assert True"], "killed")


def test_a_daemon_does_not_outlive_its_request(pool: SandboxPool) -> None:
    daemon = (
        "import os, time\n"
        "def f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            time.sleep(60)\n        os._exit(0)\n    os.wait()\n    return 1\n"
    )
    result = hostile(pool, daemon, ["assert f() == 1"], "error")
    assert "background process" in result.detail


def test_subprocesses_and_shells_see_the_same_sandbox(pool: SandboxPool) -> None:
    program = (
        "import subprocess\n"
        "def sh(command):\n    return subprocess.run(command, shell=True, capture_output=True,"
        " text=True).stdout\n"
    )
    tests = [
        "assert 'CANARY' in sh('env; cat /proc/*/environ; cat /etc/shadow')",
        "assert sh('id -u').strip() == '0'",
    ]
    hostile(pool, program, tests, "failed")


# ----------------------------------------------------------------------------- faked passes


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "raise SystemExit(0)\n",
        "import sys\ndef f(x):\n    sys.exit(0)\n",
        "import os\ndef f(x):\n    os._exit(0)\n",
        "def f(x):\n    raise SystemExit\n",
        "import atexit\natexit.register(print, 'all tests passed')\ndef f(x):\n    return 0\n",
    ],
    ids=["exit", "_exit", "SystemExit", "exit-in-call", "_exit-in-call", "raise-in-call", "atexit"],
)
def test_exiting_early_is_not_a_pass(pool: SandboxPool, program: str) -> None:
    result = pool.run_batch(
        [{"id": "exit", "program": program, "tests": ["assert f(1) == 2", "assert f(2) == 3"]}]
    )[0]
    assert result.status in ("error", "failed") and result.passed == 0, result
    assert leftover_processes(pool) == []


def test_printing_a_result_is_not_a_pass(pool: SandboxPool) -> None:
    fake = (
        "import sys\n"
        'LINES = [\'{"test": 0, "outcome": "passed", "detail": "", "error_line": null}\',\n'
        '         \'{"end": true, "stopped": null, "stdout": "", "stderr": ""}\',\n'
        '         \'PASSED\', \'{"status": "passed", "passed": 2, "total": 2}\']\n'
        "def f(x):\n    for line in LINES:\n"
        "        print(line)\n        print(line, file=sys.stderr)\n"
        "    return 0\n"
    )
    hostile(pool, fake, ["assert f(1) == 2", "assert f(2) == 3"], "failed")


def test_patching_the_runtime_is_not_a_pass(pool: SandboxPool) -> None:
    patch = (
        "import builtins, json, sys\n"
        'json.dumps = lambda *args, **kwargs: \'{"op": "return", "value": 2}\'\n'
        "builtins.print = lambda *args, **kwargs: None\n"
        "sys.excepthook = lambda *args: None\n"
        "builtins.AssertionError = type('Never', (Exception,), {})\n"
        "builtins.isinstance = lambda *args: True\n"
        "def f(x):\n    return 0\n"
    )
    result = hostile(pool, patch, ["assert f(1) == 2", "assert f(2) == 3"], "error")
    assert result.passed == 0 and "malformed" in result.detail  # its replies are all the same


def test_closing_stdout_and_every_descriptor_is_not_a_pass(pool: SandboxPool) -> None:
    close = "import os, sys\nsys.stdout.close()\nos.close(1)\ndef f(x):\n    return 0\n"
    hostile(pool, close, ["assert f(1) == 2"], "failed")
    close_all = "import os\ndef f(x):\n    os.closerange(0, 1024)\n    return x + 1\n"
    hostile(pool, close_all, ["assert f(1) == 2"], "error")


def test_an_object_equal_to_everything_is_not_a_pass(pool: SandboxPool) -> None:
    liars = (
        "class Liar:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\n"
        "class LyingInt(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "def f(x):\n    return Liar()\n"
        "def g(x):\n    return LyingInt(0)\n"
        "def h(x):\n    return [Liar(), LyingInt(0)]\n"
    )
    tests = ["assert f(1) == 2", "assert 2 == f(1)", "assert g(1) == 2", "assert h(1) == [2, 3]"]
    result = hostile(pool, liars, tests, "failed")
    assert result.passed == 0


def test_shadowing_a_builtin_the_test_uses_is_not_a_pass(pool: SandboxPool) -> None:
    shadow = "def set(*args):\n    return 0\ndef f(x):\n    return [9]\n"
    result = hostile(pool, shadow, ["assert set(f(1)) == set([1, 2])"], "failed")
    assert result.passed == 0


def test_the_judge_is_out_of_reach(pool: SandboxPool) -> None:
    """Every other process of the sandbox (the judge, the zygote) is of the same uid, but its
    descriptors, memory and ptrace are denied (PR_SET_DUMPABLE 0)."""
    probe = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def reach():\n    reached = []\n"
        "    for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
        "        if pid == os.getpid():\n            continue\n"
        "        for attempt in (lambda: os.listdir(f'/proc/{pid}/fd'),\n"
        "                        lambda: open(f'/proc/{pid}/mem', 'rb').close(),\n"
        "                        lambda: open(f'/proc/{pid}/environ', 'rb').read()):\n"
        "            try:\n                attempt()\n                reached.append(pid)\n"
        "            except OSError:\n                pass\n"
        "        if libc.ptrace(16, pid, 0, 0) == 0:\n            reached.append(pid)\n"
        "    return reached\n"
        "def others():\n"
        "    pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
        "    return len([pid for pid in pids if pid != os.getpid()])\n"
        "def control():  # a child that makes itself dumpable again is reached\n"
        "    ready, done = os.pipe()\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        libc.prctl(4, 1, 0, 0, 0)\n"
        "        os.write(done, b'x')\n"
        "        time.sleep(60)\n"
        "    os.read(ready, 1)\n"
        "    found = child in reach()\n"
        "    os.kill(child, 9)\n"
        "    os.waitpid(child, 0)\n"
        "    return found\n"
    )
    tests = ["assert others() >= 2", "assert control()", "assert reach() != []"]
    result = hostile(pool, probe, tests, "failed")
    assert result.passed == 2, result  # others exist and the probe works, yet none was reached


def test_the_tests_are_not_in_the_programs_memory(pool: SandboxPool) -> None:
    """The program scans its own heap, stack and anonymous memory (where a request's data
    would be) for the test's expected value (pieces joined at run time, so the program's own
    text does not contain it), and returns it if found."""
    scan = (
        "import ctypes\n"
        "def find(_):\n"
        "    head, tail = b'-'.join([b'canary', b'4719']), b'29'\n"
        "    for line in open('/proc/self/maps').read().splitlines():\n"
        "        span, perms, *rest = line.split()\n"
        "        anonymous = len(rest) == 3 or rest[3] in ('[heap]', '[stack]')\n"
        "        if not (perms.startswith('r') and anonymous):\n"
        "            continue\n"
        "        start, end = (int(a, 16) for a in span.split('-'))\n"
        "        chunk = ctypes.string_at(start, end - start)\n"
        "        at = chunk.find(head)\n"
        "        while at != -1:\n"
        "            if chunk[at + len(head):at + len(head) + 2] == tail:\n"
        "                return ''.join(['canary-', '4719', '29'])\n"
        "            at = chunk.find(head, at + 1)\n"
        "    return None\n"
    )
    hostile(pool, scan, ["assert find(0) == 'canary-471929'"], "failed", timeout_s=10.0)
    # The control: a program that holds the value itself is found by the same scan.
    planted = scan + "PLANTED = ''.join(['canary-', '4719', '29']).encode()\n"
    result = pool.run_batch(
        [
            {
                "id": "c",
                "program": planted,
                "tests": ["assert find(0) == 'canary-471929'"],
                "timeout_s": 10.0,
            }
        ]
    )[0]
    assert result.status == "passed", result


# ----------------------------------------------------------------------------- legitimate


def test_legitimate_programs_still_pass(pool: SandboxPool) -> None:
    program = (
        "import collections, itertools, heapq, re, json, math, functools, fractions, decimal\n"
        "import datetime, random, string, bisect, statistics, typing, dataclasses, subprocess\n"
        "import time, sys\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def allocate():\n    return len(bytearray(50 << 20))\n"
        "def spin():\n    end = time.process_time() + 0.5\n    while time.process_time() < end:\n"
        "        pass\n    return True\n"
        "def shout():\n    print('héllo ✓ 世界')\n    return 'ünïcode ✓'\n"
        "def shell():\n"
        "    return subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout\n"
    )
    tests = [
        "assert depth(900) == 900",
        "assert allocate() == 50 << 20",
        "assert spin()",
        "assert shout() == 'ünïcode ✓'",
        "assert shell() == 'hi\\n'",
    ]
    result = pool.run_batch([{"id": "ok", "program": program, "tests": tests, "timeout_s": 10.0}])[
        0
    ]
    assert (result.status, result.passed) == ("passed", len(tests)), result
    assert "héllo ✓ 世界" in result.stdout
    assert leftover_processes(pool) == []
