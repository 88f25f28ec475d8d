"""Multi-process training with torch.distributed: one process per GPU (or, on a CPU-only host,
per process asked for), every one running the same training function on its share of the data.

Rank 0 runs inside the job's own process and keeps the real reporter (metrics, progress and
checkpoints go to the database); ``launch`` starts ranks 1..N-1 as plain subprocesses
(``python -m models.distributed``) that report nothing. A Celery prefork child is daemonic, so
``multiprocessing`` cannot start children from a job; ``subprocess`` can.

The process group comes from the usual variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), as torchrun sets them: NCCL with rank r on ``cuda:LOCAL_RANK``, gloo on CPUs.
Every helper below is the identity in a single process, so training code calls them
unconditionally.

Ranks fail together: a rank that raises writes its error and exits; the others' next collective
fails (gloo notices a closed connection at once, anything else after ``timeout_s``), and rank 0
raises the error of the rank that failed first, after ending every subprocess.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models.policy import pick_device

R = TypeVar("R")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = 3600.0  # the longest a rank waits for the others, rank 0's evaluations included
EXIT_GRACE_S = 15.0  # how long ranks that finished get to leave before they are killed


# ============================================================================ the process group


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that evaluates, saves and reports."""
    return rank() == 0


def rank_device(device: str) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` when distributed on GPUs (the
    current device, which ``process_group`` set)."""
    picked = pick_device(device)
    if picked.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return picked


@contextmanager
def process_group(
    device: str, timeout_s: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Join the process group that ``env`` (default ``os.environ``) describes, for the body."""
    env = os.environ if env is None else env
    rank_, world_ = int(env["RANK"]), int(env["WORLD_SIZE"])
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(env.get("LOCAL_RANK", rank_)))
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        init_method=f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
        rank=rank_,
        world_size=world_,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


# ============================================================================ data and metrics


def shard(items: list[R]) -> list[R]:
    """This rank's share of ``items`` (every world-th, from its rank): sizes differ by ≤ 1."""
    return items[rank() :: world()]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks, on ``x``'s device (a new tensor; ``x`` is left alone)."""
    if not dist.is_initialized():
        return x
    # NCCL reduces only GPU tensors, gloo CPU ones
    on = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    )
    total = x.detach().to(on, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(x.device)


def mean_over_ranks(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric averaged over ranks (in a fixed name order, so every rank sends alike)."""
    names = sorted(metrics)
    values = torch.tensor([float(metrics[name]) for name in names], dtype=torch.float64)
    means = all_reduce_sum(values) / world()
    return dict(zip(names, means.tolist(), strict=True))


def broadcast(value: R) -> R:
    """Rank 0's ``value`` on every rank (any picklable object): decisions only rank 0 can make
    (validation, early stopping) must be the same everywhere, or the ranks would part ways."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def ddp(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped so that ``backward`` averages its gradients over ranks (the model
    itself when alone). Forward through the wrapper to train; save and score the model."""
    if not dist.is_initialized():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


# ============================================================================ the launcher


class NullReporter:
    """The reporter of ranks 1..N-1: rank 0 reports for everyone."""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        pass


class RankFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    processes: int,
    target: Callable[..., R],
    kwargs: dict[str, Any],
    *,
    reporter: Any,
    device: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    main_kwargs: dict[str, Any] | None = None,
) -> R:
    """``target(**kwargs, reporter=reporter, **main_kwargs)`` here as rank 0 and
    ``target(**kwargs, reporter=NullReporter())`` in ``processes − 1`` subprocesses (``target``
    and ``kwargs`` must pickle); rank 0's result. One process: a plain call, no process group.

    A rank that fails fails the launch: ``RankFailed`` names the first rank that failed and
    carries its traceback, and no subprocess outlives the call."""
    main_kwargs = main_kwargs or {}
    if processes == 1:
        return target(**kwargs, reporter=reporter, **main_kwargs)
    if pick_device(device).type == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(
            f"processes: {processes} processes take one GPU each, but "
            f"{torch.cuda.device_count()} are visible (CUDA_VISIBLE_DEVICES)"
        )
    with tempfile.TemporaryDirectory(prefix="prm-ranks-") as tmp:
        folder = Path(tmp)
        (folder / "job.pkl").write_bytes(pickle.dumps((target, kwargs, device, timeout_s)))
        env = {
            # torchrun's default: N processes each using every core would fight over them
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes)),
            **os.environ,
            "WORLD_SIZE": str(processes),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        ranks: list[subprocess.Popen] = []
        failed_at = math.inf
        try:
            for r in range(1, processes):
                with open(folder / f"rank{r}.log", "wb") as log:
                    ranks.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "models.distributed", str(folder)],
                            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            wait_until_ready(folder, ranks, timeout_s)
            with (
                at_most_threads(env["OMP_NUM_THREADS"]),
                process_group(device, timeout_s, {**env, "RANK": "0", "LOCAL_RANK": "0"}),
            ):
                try:
                    result = target(**kwargs, reporter=reporter, **main_kwargs)
                    barrier()  # every rank is done before anyone leaves the group
                except BaseException:
                    failed_at = time.time()
                    raise
        except BaseException as error:
            # A rank that failed first has written its error and exited already (its exit is
            # what rank 0 noticed); the others are waiting for rank 0 and can go at once.
            killed = end(ranks, grace_s=1.0)
            cause = first_failure(folder, ranks, killed, before=failed_at)
            if cause is not None:
                raise RankFailed(cause) from error
            raise
        killed = end(ranks, grace_s=EXIT_GRACE_S)
        cause = first_failure(folder, ranks, killed, before=math.inf)
        if cause is not None:
            raise RankFailed(cause)
        return result


@contextmanager
def at_most_threads(limit: str) -> Iterator[None]:
    """Cap this process's torch threads at ``limit`` (an OMP_NUM_THREADS value; one that is not
    a number leaves them) until the block ends, then restore them. Rank 0 runs in the job's
    process, which may use every core it was given; beside the other ranks it takes the share
    they got, or its threads and theirs would oversubscribe the cores, and every collective
    would wait on the slowest rank."""
    before = torch.get_num_threads()
    if limit.isdigit():
        torch.set_num_threads(max(1, min(before, int(limit))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def wait_until_ready(folder: Path, ranks: list[subprocess.Popen], timeout_s: float) -> None:
    """Wait until every subprocess has loaded the job and is about to join the group: the
    rendezvous itself would wait ``timeout_s`` for a rank that died on its way (an import
    error, say), this notices at once."""
    deadline = time.monotonic() + timeout_s
    while not all((folder / f"rank{r}.ready").exists() for r in range(1, len(ranks) + 1)):
        if any(process.poll() is not None for process in ranks):
            raise RuntimeError("a rank exited before joining the process group")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ranks did not start within {timeout_s:.0f}s")
        time.sleep(0.1)


def end(ranks: list[subprocess.Popen], grace_s: float) -> set[int]:
    """Wait ``grace_s`` for the subprocesses to end on their own, then kill the rest; the
    indices of those killed."""
    deadline, killed = time.monotonic() + grace_s, set()
    for i, process in enumerate(ranks):
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.add(i)
    return killed


def first_failure(
    folder: Path, ranks: list[subprocess.Popen], killed: set[int], before: float
) -> str | None:
    """Why the earliest failing subprocess failed, if one failed before ``before`` (rank 0's
    own failure: a rank that failed later failed because of it). A rank that died without a
    word (a signal, the OOM killer) counts as earliest, unless this launcher killed it."""
    world_ = len(ranks) + 1
    failures: list[tuple[float, str]] = []
    for i, process in enumerate(ranks):
        r, path = i + 1, folder / f"rank{i + 1}.error.json"
        if path.is_file():
            error = json.loads(path.read_text())
            failures.append(
                (
                    error["time"],
                    f"rank {r} of {world_} failed: {error['error']}\n{error['traceback']}",
                )
            )
        elif process.returncode != 0 and i not in killed:
            log = (folder / f"rank{r}.log").read_text(errors="replace")[-2000:]
            failures.append((-math.inf, f"rank {r} of {world_} exited {process.returncode}\n{log}"))
    failures = [f for f in failures if f[0] < before]
    return min(failures)[1] if failures else None


def main(folder: Path) -> int:
    """A subprocess rank: run the pickled job, or write why it failed (with the time, so that
    rank 0 can tell the first failure from the ones it caused) and exit 1."""
    try:
        target, kwargs, device, timeout_s = pickle.loads((folder / "job.pkl").read_bytes())
        (folder / f"rank{os.environ['RANK']}.ready").touch()
        with process_group(device, timeout_s):
            target(**kwargs, reporter=NullReporter())
            barrier()
    except BaseException as error:
        report = {
            "time": time.time(),
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=-6),
        }
        (folder / f"rank{os.environ['RANK']}.error.json").write_text(json.dumps(report))
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
