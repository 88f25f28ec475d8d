"""The dashboard in a real browser against ``prm-studio up``: launch a job from its form and
watch its progress move, open its curves, cancel a running job, inline validation errors; and
on a seeded database, the heatmap's colours against the stored scores line by line, the bad
upload's errors by line, the PRM and labeling panels, Compare and Workers. Every view is
saved as a screenshot in tests/artifacts/. SIGTERM and SIGINT leave no process behind."""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from app import crud
from app.db import session_scope
from app.heatmap import score_colour
from app.orm import LineScore, Problem, ProblemSet, Run, Sample, Worker
from tests.browser import chromium_page, running_dashboard
from tests.conftest import ARTIFACTS, wait_for

pytestmark = pytest.mark.browser

RUN_ROW = r"^\s*{id}\s*healthcheck"
# a program line to show verbatim: markup, entities and template syntax must not be interpreted
TRICKY = "    s = '<script>alert(1)</script>' + \"&amp;\" + f'{{x}} ${y}'"
LINES = [
    ("    total = 0", 0.92, 1, 1, 0.023),
    ("    for x in xs:", 0.61, 1, 1, 0.015),
    ("        # add the value", -0.4, 0, 0, None),
    ("        total += x * 2", -0.35, -1, -1, -0.009),
    (TRICKY, -0.97, -1, -1, -0.024),
    ("    return total", 0.05, -1, -1, 0.001),
]


def fill_number(page, elem_id: str, value: object) -> None:
    page.locator(f"#{elem_id} input").first.fill(str(value))


def launch_healthcheck(page, steps: int, seconds: float, after: str | None = None) -> str:
    """Launch from the form; returns the new run's id (``after``: the previous launch's)."""
    page.get_by_role("tab", name="Launch").click()
    fill_number(page, "healthcheck-steps", steps)
    fill_number(page, "healthcheck-step-seconds", seconds)
    page.locator("#launch-healthcheck").click()
    outcome = page.locator("#launch-healthcheck-outcome")

    def new_run_id() -> str | None:
        found = re.search(r"run (\d+)", outcome.inner_text())
        return found.group(1) if found and found.group(1) != after else None

    return wait_for(new_run_id, timeout=30, what="the launch outcome naming the run")


def open_run(page, run_id: int | str) -> None:
    page.get_by_role("tab", name="Run", exact=True).click()
    fill_number(page, "run-id", run_id)
    page.locator("#open-run").click()
    page.locator(f'#run-header[data-run="{run_id}"]').wait_for()


def test_launch_watch_progress_open_curves_cancel_then_sigterm(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_dashboard(tmp_path / "data") as dashboard, chromium_page() as page:
        page.goto(dashboard.url)

        page.get_by_role("tab", name="Launch").click()
        fill_number(page, "healthcheck-steps", 0)
        page.locator("#launch-healthcheck").click()
        page.get_by_text(
            re.compile(r"steps: Input should be greater than or equal to 1")
        ).wait_for()
        page.screenshot(path=ARTIFACTS / "launch-invalid.png", full_page=True)

        run_id = launch_healthcheck(page, steps=8, seconds=1.0)
        page.screenshot(path=ARTIFACTS / "launch.png", full_page=True)

        page.get_by_role("tab", name="Runs").click()
        row = page.locator("#runs-table [role=row]").filter(
            has_text=re.compile(RUN_ROW.format(id=run_id))
        )
        seen: set[int] = set()

        def progress_moves() -> bool:
            text = row.first.inner_text() if row.count() else ""
            found = re.search(r"running\s+[▰▱]+ (\d+)%", text)
            if found and 0 < int(found.group(1)) < 100:
                seen.add(int(found.group(1)))
            return len(seen) >= 2

        wait_for(progress_moves, timeout=90, what="two progress values while running", every=0.3)
        page.screenshot(path=ARTIFACTS / "runs.png", full_page=True)
        row.filter(has_text="succeeded").wait_for(timeout=60_000)

        row.first.click()  # opens the run view
        page.locator('#run-header[data-status="succeeded"]').wait_for()
        page.locator("#run-metrics .js-plotly-plot").wait_for()
        assert page.locator("#run-metrics .js-plotly-plot .scatterlayer .trace").count() == 2
        page.screenshot(path=ARTIFACTS / "run.png", full_page=True)

        long_id = launch_healthcheck(page, steps=300, seconds=0.5, after=run_id)
        open_run(page, long_id)
        page.locator('#run-header[data-status="running"]').wait_for(timeout=60_000)
        page.locator("#cancel-run").click()
        page.locator("#run-action-outcome").get_by_text("cancel requested").wait_for()
        page.locator('#run-header[data-status="cancelled"]').wait_for(timeout=30_000)
        page.screenshot(path=ARTIFACTS / "run-cancelled.png", full_page=True)

        tree = dashboard.tree()
        assert len(tree) >= 3, "expected the up process, the worker and its pool child"
        dashboard.process.send_signal(signal.SIGTERM)
        assert dashboard.process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"processes left after SIGTERM: {alive}"


# ----------------------------------------------------------------------------- seeded views


def add_run(session, kind: str, **values) -> int:
    now = datetime.now(UTC)
    run = Run(
        kind=kind,
        status="succeeded",
        progress=1.0,
        name=values.pop("name", kind),
        created_at=now - timedelta(minutes=40),
        started_at=now - timedelta(minutes=38),
        finished_at=now - timedelta(minutes=5),
        **values,
    )
    session.add(run)
    session.flush()
    return run.id


def add_sample(session, run: int, problem: Problem, lines, *, step: int = 0, **values) -> int:
    code = problem.prompt + "\n".join(text for text, *_ in lines) + "\n"
    sample = Sample(run_id=run, step=step, problem_id=problem.id, code=code, **values)
    session.add(sample)
    session.flush()
    session.add_all(
        LineScore(
            sample_id=sample.id,
            line_no=i + 1,
            text=text,
            score=score,
            label=label,
            ground_truth=truth,
            dense_reward=reward,
        )
        for i, (text, score, label, truth, reward) in enumerate(lines)
    )
    return sample.id


def seed_dashboard() -> dict[str, int]:
    """A sweep of the four PPO variants × 2 seeds with curves, a scored failing sample (and
    one of the same problem from another run), a prm-data and a prm-train run, two workers."""
    now = datetime.now(UTC)
    with session_scope() as session:
        problem_set = ProblemSet(name="demo", source="test", content_hash="0" * 64, n_problems=1)
        session.add(problem_set)
        session.flush()
        problem = Problem(
            problem_set_id=problem_set.id,
            task_id="demo/double_sum",
            prompt="def double_sum(xs):\n",
            difficulty=5,
        )
        session.add(problem)
        session.flush()
        sft = add_run(session, "sft", name="paper: sft", group_name="demo-sweep")
        crud.add_artifact(session, run_id=sft, kind="checkpoint", path="/ckpt/sft/step_500")
        rl_runs = []
        for v, variant in enumerate(("baseline", "dense", "value-init", "dense+value-init")):
            for seed in range(2):
                run = add_run(
                    session,
                    "rl",
                    name=f"{variant} seed {seed}",
                    group_name="demo-sweep",
                    config={"variant": variant, "seed": seed, "sft_run_id": sft},
                )
                rl_runs.append(run)
                for step in range(0, 61, 5):
                    rate = 0.3 + 0.004 * step * (1 + 0.15 * v) + 0.01 * seed
                    values = {
                        "eval/pass@1_sampled": rate,
                        "eval/pass@1_greedy": rate + 0.05,
                        "rollout/response_lines": 6 + v * 0.1 + step / 60,
                        "rollout/comment_line_fraction": 0.05 + 0.001 * step * (v == 1),
                        "losses/policy": 0.1 / (1 + step),
                        "rewards/sparse": rate * 2 - 1,
                    }
                    if step % 20 == 0:
                        values |= {
                            f"eval/pass@1_sampled/difficulty_{d}": rate * 6 / d for d in range(2, 8)
                        }
                    crud.add_metrics(session, run_id=run, step=step, values=values)
        sample = add_sample(
            session,
            rl_runs[-1],
            problem,
            LINES,
            step=60,
            verdict="failed",
            passed=False,
            tests_passed=2,
            tests_total=8,
            error_line=6,
            detail="AssertionError: double_sum([1, 2]) == 6 <got 7>",
            meta={"mode": "rollout"},
        )
        other = add_sample(
            session,
            rl_runs[0],
            problem,
            [(t, None, None, None, None) for t, *_ in LINES[:2]],
            step=0,
            verdict="failed",
            passed=False,
            meta={"mode": "greedy"},
        )
        data = add_run(session, "prm-data", config={"k": 8, "rl_run_id": rl_runs[0]})
        crud.add_metrics(
            session,
            run_id=data,
            step=0,
            values={
                "labeling/completions_per_failing_mean": 21.5,
                "labeling/linear_scan_completions_per_failing_mean": 52.0,
                "labeling/rescued_fraction": 0.62,
                "labeling/audit/exact_match": 0.71,
            },
        )
        for t in range(2, 9):
            for cost in (8 * t // 2, 8 * (t // 2 + 1)):
                m_star = cost % t  # search labels: +1 up to m*, then -1; the truth is m* - 1
                labelled = [
                    (
                        f"    v{i} = v{i - 1} + 1",
                        None,
                        1 if i <= m_star else -1,
                        1 if i < m_star else -1,
                        None,
                    )
                    for i in range(1, t + 1)
                ]
                add_sample(
                    session,
                    data,
                    problem,
                    labelled,
                    verdict="failed",
                    passed=False,
                    meta={"n_code_lines": t, "completions_sampled": cost},
                )
        prm = add_run(
            session,
            "prm-train",
            config={"dataset_run_id": data, "policy_run_id": sft},
            result={
                "calibration": [
                    {"predicted": p / 10 + 0.05, "observed": p / 10 + 0.02, "count": 40 + p}
                    for p in range(10)
                ],
                "rerank": {
                    "table": {
                        str(k): {
                            "prm_min": 0.42 + 0.01 * k**0.5,
                            "random": 0.4,
                            "oracle": 0.4 + 0.02 * k,
                        }
                        for k in (4, 8, 16, 30)
                    }
                },
            },
        )
        crud.add_metrics(session, run_id=prm, step=300, values={"prm/auc": 0.81})
        for i in range(30):
            low = -0.9 + 0.06 * i
            add_sample(
                session,
                prm,
                problem,
                [("    x = 1", low, None, None, None)],
                verdict="passed" if low + (i % 3) * 0.2 > 0 else "failed",
                passed=low + (i % 3) * 0.2 > 0,
            )
        session.add_all(
            [
                Worker(
                    name="celery@gpu-a",
                    host="gpu-a",
                    queues="cpu,gpu",
                    last_seen=now,
                    facts={"gpus": ["NVIDIA H100 80GB HBM3"], "cpu_count": 16, "torch": "2.13.0"},
                    current_run_id=rl_runs[-1],
                ),
                Worker(
                    name="celery@old",
                    host="old",
                    queues="cpu",
                    facts={"cpu_count": 2},
                    last_seen=now - timedelta(minutes=7),
                ),
            ]
        )
    return {"sample": sample, "other": other, "prm": prm, "data": data, "sft": sft}


def check_heatmap_matches_scores(page, sample: int) -> None:
    rows = page.locator("#sample-heatmap tr.prm-line")
    rows.first.wait_for()
    assert rows.count() == len(LINES)
    for line_no, (text, score, label, truth, _) in enumerate(LINES, start=1):
        row = page.locator(f"#heatmap-{sample}-line-{line_no}")
        assert float(row.get_attribute("data-score")) == score
        assert int(row.get_attribute("data-label")) == label
        assert int(row.get_attribute("data-ground-truth")) == truth
        cell = row.locator("td.code")
        background = cell.evaluate("node => getComputedStyle(node).backgroundColor")
        assert background == score_colour(score), (line_no, background)
        assert cell.inner_text() == text  # shown verbatim: nothing interpreted, nothing lost
        assert cell.get_attribute("title") == f"PRM score {score:+.4f}"
    assert page.locator("#sample-heatmap script").count() == 0
    first_negative = page.locator("#sample-heatmap .mark-first-negative")
    assert first_negative.count() == 1  # line 3 is a comment: the marker is on line 4
    assert first_negative.locator("xpath=ancestor::tr").get_attribute("data-line") == "4"
    error = page.locator("#sample-heatmap .mark-error")
    assert error.locator("xpath=ancestor::tr").get_attribute("data-line") == "5"


def upload_bad_dataset(page, folder: Path) -> None:
    bad = folder / "bad.jsonl"
    good = {"task_id": "a", "prompt": "def f(x):\n", "tests": ["assert f(1) == 1"]}
    bad.write_text(
        json.dumps(good) + "\n{not json\n" + json.dumps({"task_id": "b", "prompt": "x"}) + "\n"
    )
    page.get_by_role("tab", name="Launch").click()
    page.get_by_role("button", name=re.compile("^Upload a problem set")).click()
    page.locator("#dataset-file input[type=file]").set_input_files(bad)
    page.locator("#dataset-validate").click()
    errors = page.locator("#dataset-errors [role=row]")
    errors.filter(has_text=re.compile(r"^\s*2\s")).first.wait_for()
    errors.filter(has_text=re.compile(r"^\s*3\s")).first.wait_for()
    page.locator("#dataset-outcome").get_by_text("nothing was imported").wait_for()


def test_seeded_views_heatmap_upload_panels_compare_workers(data_dir, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ids = seed_dashboard()
    with running_dashboard(data_dir) as dashboard, chromium_page() as page:
        page.goto(dashboard.url)
        page.get_by_role("tab", name="Inspect").click()
        fill_number(page, "sample-id", ids["sample"])
        page.locator("#open-sample").click()
        check_heatmap_matches_scores(page, ids["sample"])
        page.locator("#same-problem [role=row]").nth(1).wait_for()
        page.locator("#samples-search").click()
        page.locator("#samples-table [role=row]").nth(1).wait_for()
        page.screenshot(path=ARTIFACTS / "inspect.png", full_page=True)

        page.get_by_role("button", name=re.compile("^Side by side")).click()
        fill_number(page, "side-a-id", ids["other"])
        fill_number(page, "side-b-id", ids["sample"])
        page.locator("#show-side-by-side").click()
        page.locator(f"#side-b-{ids['sample']}-line-5").wait_for()
        page.screenshot(path=ARTIFACTS / "side-by-side.png", full_page=True)

        upload_bad_dataset(page, tmp_path)
        page.screenshot(path=ARTIFACTS / "dataset-errors.png", full_page=True)

        open_run(page, ids["prm"])
        page.locator("#prm-calibration .js-plotly-plot").wait_for()
        page.locator("#prm-bok [role=row]").filter(has_text="30").wait_for()
        page.screenshot(path=ARTIFACTS / "run-prm.png", full_page=True)
        open_run(page, ids["data"])
        page.locator("#labeling-cost .js-plotly-plot").wait_for()
        page.screenshot(path=ARTIFACTS / "run-labeling.png", full_page=True)
        open_run(page, ids["sft"])
        consumers = page.locator("#run-lineage li").filter(has_text=re.compile(r"via sft_run_id"))
        consumers.first.wait_for()
        assert consumers.count() == 8  # the sweep's PPO runs start from it
        page.screenshot(path=ARTIFACTS / "run-lineage.png", full_page=True)

        page.get_by_role("tab", name="Compare").click()
        group = page.locator("#compare-group input")
        group.fill("demo-sweep")
        group.press("Enter")
        page.locator("#compare-button").click()
        table = page.locator("#compare-table [role=row]")
        table.filter(has_text="DenseReward+ValueInit").wait_for()
        assert table.filter(has_text=re.compile(r"^\s*Baseline\s+2\s")).count() == 1
        page.locator("#compare-hacking .js-plotly-plot").wait_for()
        page.screenshot(path=ARTIFACTS / "compare.png", full_page=True)

        page.get_by_role("tab", name="Workers").click()
        workers = page.locator("#workers-table [role=row]")
        workers.filter(has_text="alive").filter(has_text="H100").wait_for()
        workers.filter(has_text="stale").wait_for()
        page.screenshot(path=ARTIFACTS / "workers.png", full_page=True)


def test_sigint_stops_the_dashboard_and_its_worker(tmp_path):
    with running_dashboard(tmp_path / "data") as dashboard:
        tree = dashboard.tree()
        dashboard.process.send_signal(signal.SIGINT)
        assert dashboard.process.wait(timeout=30) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"processes left after SIGINT: {alive}"
