"""The ``rl`` job through the real runner and sandbox: it stores metrics, samples with line
rows and checkpoints; a re-run continues from its last checkpoint with continuous metrics;
sweeps submit variants × seeds as one group; bad configs name the field."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import crud
from app.db import read_session, session_scope
from app.orm import Artifact, LineScore, Metric, Run, RunStatus, Sample
from tests.conftest import SMALL_BENCHMARK, require
from workers.registry import ConfigError, get_kind, validate_config
from workers.runner import execute_run


def rl_config(policy: str, steps: int) -> dict:
    return {
        "variant": "baseline",
        "policy": policy,
        "data": {"benchmark": SMALL_BENCHMARK},
        "steps": steps,
        "problems_per_step": 2,
        "samples_per_problem": 2,
        "minibatch_size": 2,
        "max_new_tokens": 24,
        "eval_every": 1,
        "eval_problems": 4,
        "checkpoint_every": 1,
        "log_rollout_fraction": 1.0,
    }


def metric_steps(run_id: int, name: str) -> list[int]:
    with read_session() as session:
        query = select(Metric.step).where(Metric.run_id == run_id, Metric.name == name)
        return sorted(session.scalars(query))


def test_rl_job_stores_everything_and_resumes_continuously(data_dir, tiny_policy):
    require(__import__("os").path.exists("/usr/bin/bwrap"), "bubblewrap is not installed")
    with session_scope() as session:
        run_id = crud.create_run(session, kind="rl", config=rl_config(tiny_policy, 1)).id
    assert execute_run(run_id) == "succeeded"

    # the run is lost after step 1 having logged a partial step 2; it is re-run for 2 steps
    with session_scope() as session:
        crud.add_metrics(session, run_id=run_id, step=2, values={"losses/policy": 9.9})
        run = session.get(Run, run_id)
        run.config = rl_config(tiny_policy, 2)
        run.status = RunStatus.queued
    assert execute_run(run_id) == "succeeded", crud_error(run_id)

    assert metric_steps(run_id, "losses/policy") == [1, 2]
    assert metric_steps(run_id, "eval/pass@1_greedy") == [0, 1, 2]
    with read_session() as session:
        kinds = session.scalars(select(Artifact.step).where(Artifact.run_id == run_id))
        assert sorted(kinds) == [1, 2]
        rollouts = session.scalar(
            select(func.count()).select_from(Sample).where(Sample.run_id == run_id)
        )
        assert rollouts >= 2 * 4 + 3 * 8  # rollouts of 2 steps + greedy and sampled evals
        lines = session.scalar(
            select(func.count())
            .select_from(LineScore)
            .join(Sample)
            .where(Sample.run_id == run_id, LineScore.dense_reward.is_not(None))
        )
        assert lines > 0  # rollouts carry the dense reward paid per line (0 for baseline)


def test_a_lost_attempt_without_a_checkpoint_leaves_nothing_behind(data_dir, tiny_policy):
    require(__import__("os").path.exists("/usr/bin/bwrap"), "bubblewrap is not installed")
    cfg = {**rl_config(tiny_policy, 1), "checkpoint_every": 0}
    with session_scope() as session:
        run_id = crud.create_run(session, kind="rl", config=cfg).id
        # what an attempt that died before its first checkpoint had logged
        crud.add_metrics(session, run_id=run_id, step=0, values={"eval/pass@1_greedy": 0.99})
        crud.add_metrics(session, run_id=run_id, step=1, values={"losses/policy": 9.9})
    assert execute_run(run_id) == "succeeded", crud_error(run_id)
    assert metric_steps(run_id, "eval/pass@1_greedy") == [0, 1]
    assert metric_steps(run_id, "losses/policy") == [1]
    with read_session() as session:
        logged = session.scalars(
            select(Metric.value).where(Metric.run_id == run_id, Metric.name == "losses/policy")
        ).all()
    assert logged != [9.9]


def crud_error(run_id: int) -> str | None:
    with read_session() as session:
        return session.get(Run, run_id).error


def test_variants_that_need_a_prm_name_the_field():
    with pytest.raises(ConfigError, match="needs a PRM: set prm"):
        validate_config(get_kind("rl"), {"variant": "dense", "policy": "/x"})
    with pytest.raises(ConfigError, match="exactly one of policy"):
        validate_config(get_kind("rl"), {"variant": "baseline"})
    with pytest.raises(ConfigError, match="policy_lr"):
        validate_config(get_kind("rl"), {"policy": "/x", "policy_lr": -1})


def test_a_sweep_is_one_group_of_variant_by_seed_runs(data_dir, monkeypatch):
    from workers import runner
    from workers.tasks import TASKS

    monkeypatch.setattr(TASKS["rl"], "apply_async", lambda *a, **k: None)  # no broker needed
    for folder in ("sft", "prm"):
        (data_dir / folder).mkdir()
        (data_dir / folder / "config.json").write_text("{}")
    ids = runner.submit_sweep(
        "rl",
        {"policy": str(data_dir / "sft"), "prm": str(data_dir / "prm")},
        field="variant",
        values=["baseline", "dense", "value-init", "dense+value-init"],
        seeds=[0, 1, 2],
        group_name="paper",
    )
    assert len(ids) == 12
    with read_session() as session:
        runs = session.scalars(select(Run).where(Run.group_name == "paper")).all()
    assert sorted((r.config["variant"], r.config["seed"]) for r in runs) == sorted(
        (v, s) for v in ("baseline", "dense", "value-init", "dense+value-init") for s in (0, 1, 2)
    )
