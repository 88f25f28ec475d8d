"""The report of a group renders from stored data alone: a group of runs, metrics, samples and
line labels inserted straight into a throwaway database, no worker and no artifact."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from app import report as rep
from app import ui
from app.cli import main
from app.db import session_scope
from app.orm import LineScore, Metric, Run, Sample
from tests.conftest import require

GROUP = "reproduce-test"
START = datetime(2026, 1, 1, tzinfo=UTC)
# (variant, seed) -> eval/pass@1_sampled at steps 0, 10, 20 and the longest bucket at the end
PASS = {
    ("baseline", 0): ([0.2, 0.3, 0.4], 0.1),
    ("baseline", 1): ([0.2, 0.4, 0.5], 0.3),
    ("dense", 0): ([0.2, 0.5, 0.6], 0.3),
    ("dense", 1): ([0.2, 0.4, 0.5], 0.5),
    ("value-init", 0): ([0.2, 0.3, 0.4], 0.2),
}
LABELING = {
    "labeling/completions_per_failing_mean": 12.0,
    "labeling/linear_scan_completions_per_failing_mean": 40.0,
    "labeling/linear_over_search_completions": 3.3333,
    "labeling/audit/exact_match": 0.75,
}
PRM = {
    "prm/auc": 0.81,
    "prm/first_error_exact": 0.4,
    "prm/first_error_within1": 0.6,
    "prm/rerank@4/random": 0.3,
    "prm/rerank@4/prm_min": 0.42,
    "prm/rerank@4/policy_logprob": 0.38,
    "prm/rerank@4/oracle": 0.6,
}


def add_run(session, kind: str, name: str, config: dict, minutes: int = 5, **values) -> int:
    values = {
        "status": "succeeded",
        "started_at": START,
        "finished_at": START + timedelta(minutes=minutes),
        **values,
    }
    run = Run(kind=kind, name=name, group_name=GROUP, config=config, **values)
    session.add(run)
    session.flush()
    return run.id


def add_metrics(session, run_id: int, step: int, values: dict[str, float]) -> None:
    session.add_all(Metric(run_id=run_id, step=step, name=n, value=v) for n, v in values.items())


@pytest.fixture
def group(data_dir) -> dict[str, int]:
    """A reproduce-shaped group: sft, prm-data (metrics and two audited lines), prm-train,
    five PPO runs over three variants, and a failed first try of baseline seed 0."""
    ids: dict[str, int] = {}
    with session_scope() as session:
        ids["sft"] = add_run(session, "sft", "sft", {"steps": 100})
        stale = add_run(
            session, "rl", "rl-baseline-seed0", {"variant": "baseline", "seed": 0}, status="failed"
        )
        add_metrics(session, stale, 20, {"eval/pass@1_sampled": 0.99})
        ids["prm-data"] = add_run(session, "prm-data", "prm-data", {"selection": "revised-only"})
        add_metrics(session, ids["prm-data"], 0, LABELING)
        sample = Sample(run_id=ids["prm-data"], code="x = 1\ny = 2\n", verdict="failed")
        session.add(sample)
        session.flush()
        session.add_all(
            [
                LineScore(sample_id=sample.id, line_no=1, text="x = 1", label=1, ground_truth=1),
                LineScore(sample_id=sample.id, line_no=2, text="y = 2", label=1, ground_truth=-1),
            ]
        )
        ids["prm-train"] = add_run(session, "prm-train", "prm-train", {"loss": "mse"})
        add_metrics(session, ids["prm-train"], 30, PRM)
        for (variant, seed), (curve, longest) in PASS.items():
            config = {"variant": variant, "seed": seed, "steps": 20, "sft_run_id": ids["sft"]}
            run = add_run(session, "rl", f"rl-{variant}-seed{seed}", config, minutes=10)
            ids[f"{variant}-{seed}"] = run
            for step, value in zip((0, 10, 20), curve, strict=True):
                add_metrics(session, run, step, {"eval/pass@1_sampled": value})
            add_metrics(
                session,
                run,
                20,
                {
                    "eval/pass@1_sampled/difficulty_2": 0.9,
                    "eval/pass@1_sampled/difficulty_3": longest,
                },
            )
            for step in (1, 20):
                add_metrics(session, run, step, {"rollout/response_lines": 4.0 + step / 10})
        # a failing rollout of a dense run whose second line the PRM scored below zero
        rollout = Sample(
            run_id=ids["dense-1"], step=20, code="ys = xs\nreturn <xs>\n", verdict="failed"
        )
        session.add(rollout)
        session.flush()
        session.add_all(
            [
                LineScore(sample_id=rollout.id, line_no=1, text="ys = xs", score=0.7),
                LineScore(sample_id=rollout.id, line_no=2, text="return <xs>", score=-0.6),
            ]
        )
    return ids


def test_table_numbers_are_mean_and_std_over_seeds_at_the_final_step(group):
    report = rep.load_report(GROUP)
    assert report.metric == "eval/pass@1_sampled"
    assert report.long_metric == "eval/pass@1_sampled/difficulty_3"
    assert report.superseded == 1  # the failed first try of baseline seed 0
    rows = {v.variant: v for v in report.variants}
    assert list(rows) == ["baseline", "dense", "value-init"]
    assert rows["baseline"].run_ids == [group["baseline-0"], group["baseline-1"]]
    assert rows["baseline"].finals == [0.4, 0.5]
    assert report.baseline_final == pytest.approx(0.45)
    table = "\n".join(rep.paper_table(report))
    # baseline 0.4, 0.5: mean 45.0, sample std sqrt(2 · 0.05²) = 7.07; longest 0.1, 0.3
    assert "| Baseline | 2 | 45.0 ± 7.1 | +0.0 | 20.0 ± 14.1 | 20 |" in table
    # dense 0.6, 0.5: +10 points; its mean at step 10 (0.5, 0.4 → 0.45) reaches Baseline's final
    assert "| DenseReward | 2 | 55.0 ± 7.1 | +10.0 | 40.0 ± 14.1 | 10 |" in table
    # one seed: std 0; its best mean (0.4) never reaches 0.45
    assert "| ValueInit | 1 | 40.0 ± 0.0 | -5.0 | 20.0 ± 0.0 | not reached |" in table


def test_curves_monitors_prm_and_labeling_come_from_the_stored_metrics(group):
    report = rep.load_report(GROUP)
    dense = next(v for v in report.variants if v.variant == "dense")
    assert [(p.step, round(p.mean, 6), p.n) for p in dense.curve] == [
        (0, 0.2, 2),
        (10, 0.45, 2),
        (20, 0.55, 2),
    ]
    assert report.by_difficulty["DenseReward"][3] == pytest.approx((0.4, 0.1414213), rel=1e-5)
    lines = report.monitors["rollout/response_lines"]["Baseline"]
    assert [(p.step, p.mean) for p in lines] == [(1, 4.1), (20, 6.0)]
    assert report.best_of_k == {
        4: {"random": 0.3, "prm_min": 0.42, "policy_logprob": 0.38, "oracle": 0.6}
    }
    assert report.prm_quality["prm/auc"] == 0.81
    assert "prm/rerank@4/random" not in report.prm_quality
    assert report.labeling == LABELING
    assert report.label_audit == {(1, 1): 1, (1, -1): 1}
    markdown = rep.to_markdown(report)
    assert "Binary search sampled **12.0** completions per failing response" in markdown
    assert "auc **0.810**, first_error_exact **0.400**" in markdown
    assert "| 4 | 30.0 | 38.0 | 42.0 | – | – | – | 60.0 |" in markdown
    assert (
        "Best-of-4 with the PRM (its best aggregate): 42.0 % against 30.0 % for a random pick "
        "of the same pool, 38.0 % by the policy's own mean log-probability (oracle 60.0 %)"
    ) in markdown
    assert "| 3 | 20.0 ± 14.1 | 40.0 ± 14.1 | 20.0 ± 0.0 |" in markdown  # the long horizon
    assert "| lines per response | Baseline | 4.1 | 6 |" in markdown
    assert "| +1 | 1 | 0 | 1 |" in markdown  # the audit: one line right, one wrongly positive


def test_configs_split_into_shared_fields_and_each_runs_own(group):
    report = rep.load_report(GROUP)
    common, own = rep.split_configs(report.runs)["rl"]
    assert common == {"steps": 20, "sft_run_id": group["sft"]}
    assert own[group["dense-1"]] == {"variant": "dense", "seed": 1}
    configs = json.loads(rep.configs_json(report))
    assert {run["id"] for run in configs["runs"]} == {run.id for run in report.runs}


def test_cli_writes_the_bundle(group, tmp_path, capsys):
    require(shutil.which("chromium") is not None, "chromium draws the heatmap's PNG")
    out = tmp_path / "bundle"
    assert main(["report", GROUP, "--out", str(out)]) == 0
    names = {path.name for path in out.iterdir()}
    charts = {"pass_rate.png", "difficulty.png", "hacking.png", "heatmap.html", "heatmap.png"}
    assert names == {"report.md", "configs.json", *charts}
    for path in out.iterdir():
        assert path.stat().st_size > 0, path
    assert (out / "pass_rate.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "report.md").read_text()
    assert "![pass rate by variant](pass_rate.png)" in markdown
    assert "![PRM heatmap](heatmap.png)" in markdown
    assert "| DenseReward | 2 | 55.0 ± 7.1 |" in markdown
    assert str(out / "report.md") in capsys.readouterr().out


def test_the_heatmap_is_the_latest_failing_dense_rollout_the_prm_scored_negative(group):
    report = rep.load_report(GROUP)
    assert 'data-first-negative="2"' in report.heatmap
    assert "&lt;" in report.heatmap and "<xs>" not in report.heatmap  # escaped code
    page = rep.heatmap_page(report)
    assert page.startswith("<!doctype html>") and report.heatmap in page


def test_eval_runs_of_the_ppo_runs_add_a_transfer_column(group):
    with session_scope() as session:
        for key, value in (("baseline-0", 0.1), ("baseline-1", 0.2), ("dense-0", 0.3)):
            config = {"policy_run_id": group[key], "data": {"problem_set": "humaneval"}}
            run = add_run(session, "eval", f"humaneval-{key}", config)
            add_metrics(session, run, 0, {"eval/pass@1_sampled": value})
    report = rep.load_report(GROUP)
    rows = {v.variant: v.transfer for v in report.variants}
    assert rows == {"baseline": [0.1, 0.2], "dense": [0.3], "value-init": []}
    table = "\n".join(rep.paper_table(report))
    assert "| humaneval pass@1 % |" in table
    assert "| Baseline | 2 | 45.0 ± 7.1 | +0.0 | 20.0 ± 14.1 | 20 | 15.0 ± 7.1 |" in table


def test_cli_names_an_unknown_group(data_dir, tmp_path, capsys):
    assert main(["report", "no-such-group", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prm-studio: error: no runs in group 'no-such-group'"]
    assert not (tmp_path / "x").exists()


def test_dashboard_report_offers_the_bundle_as_a_zip(group):
    markdown, curves, _difficulty, _hacking, download = ui.report_outputs(GROUP)
    assert markdown.startswith(f"# Report: {GROUP}")
    assert len(curves.data) == 6  # a band and a mean line per variant
    with zipfile.ZipFile(download) as bundle:
        assert f"{GROUP}/report.md" in bundle.namelist()
        assert f"{GROUP}/pass_rate.png" in bundle.namelist()


def test_a_group_with_rl_runs_only_still_renders(data_dir):
    with session_scope() as session:
        run = add_run(session, "rl", "baseline seed 0", {"variant": "baseline", "seed": 0})
        add_metrics(session, run, 0, {"eval/pass@1_greedy": 0.25})
    report = rep.load_report(GROUP)
    assert report.metric == "eval/pass@1_greedy"
    markdown = rep.to_markdown(report)
    assert "No prm-data run with labeling metrics" in markdown
    assert "No prm-train run with evaluation metrics" in markdown


def test_a_group_that_just_started_says_what_is_missing(data_dir, tmp_path):
    with session_scope() as session:
        add_run(session, "sft", "sft", {}, status="running", finished_at=None)
    markdown = rep.to_markdown(rep.load_report(GROUP))
    assert "**1 not succeeded: the figures are partial**" in markdown
    assert "No PPO run has logged `eval/pass@1_sampled` yet." in markdown
    assert main(["report", GROUP, "--out", str(tmp_path / "early")]) == 0
    assert sorted(p.name for p in (tmp_path / "early").iterdir()) == ["configs.json", "report.md"]
