"""Dashboard views on a real (throwaway SQLite) database: runs list and filters, lineage, kind
panels that appear only with their data, samples and the heatmap against stored scores, the
Compare view's paper-shaped table, workers; and the figure builders."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from app import actions, compare, crud, plots, views
from app.db import session_scope
from app.heatmap import score_colour
from app.orm import LineScore, Problem, ProblemSet, Run, Sample, Worker
from models.labeling import SYNTHETIC as SYN


def make_run(session, kind: str, config: dict | None = None, **values) -> int:
    run = Run(kind=kind, name=values.pop("name", kind), config=config or {}, **values)
    session.add(run)
    session.flush()
    return run.id


def test_runs_table_filters_pages_and_shows_progress(data_dir):
    with session_scope() as session:
        for i in range(60):
            make_run(session, "healthcheck", name=f"hc {i}", group_name="g" if i % 2 else None)
        running = make_run(
            session,
            "sft",
            name="training",
            status="running",
            progress=0.5,
            started_at=datetime.now(UTC) - timedelta(seconds=30),
        )
    table, summary = views.runs_table()
    assert summary == "61 runs · page 1 of 2" and len(table) == views.PAGE_SIZE
    assert table.iloc[0]["id"] == running
    assert table.iloc[0]["progress"].startswith("▰▰▰▰▰▱▱▱▱▱ 50%")
    assert re.fullmatch(r"\d+s", table.iloc[0]["eta"])  # about 30 s left
    assert len(views.runs_table(page=2)[0]) == 11
    assert views.runs_table(group="g")[1].startswith("30 runs")
    assert list(views.runs_table(kind="sft")[0]["name"]) == ["training"]
    assert views.runs_table(text="hc 1")[1].startswith("11 runs")  # hc 1, hc 10..19
    assert views.runs_table(status="running")[1].startswith("1 runs")


def test_a_running_run_whose_heartbeat_stopped_shows_as_lost(data_dir):
    now = datetime.now(UTC)
    with session_scope() as session:
        alive = make_run(session, "rl", status="running", heartbeat_at=now, started_at=now)
        lost = make_run(
            session,
            "rl",
            status="running",
            heartbeat_at=now - timedelta(minutes=5),
            started_at=now - timedelta(minutes=9),
        )
    table, _ = views.runs_table()
    shown = dict(zip(table["id"], table["status"], strict=True))
    assert shown[alive] == "running"
    assert shown[lost].startswith("lost (no heartbeat for 5")
    assert views.run_summary(lost)["status"] == shown[lost]
    assert views.run_details(lost)["status"] == "running"  # the API keeps the stored status


def test_lineage_follows_run_id_fields_parents_and_artifacts(data_dir):
    with session_scope() as session:
        sft = make_run(session, "sft", status="succeeded")
        crud.add_artifact(session, run_id=sft, kind="checkpoint", path="/a/sft/step_500", step=500)
        rl = make_run(session, "rl", {"sft_run_id": sft, "variant": "baseline"})
        data = make_run(session, "prm-data", {"rl_run_id": rl, "sft_run_ids": []})
        prm = make_run(session, "prm-train", {"dataset_run_id": data, "policy_run_id": sft})
        again = make_run(session, "rl", {"sft_run_id": sft, "prm_run_id": prm}, parent_id=rl)
        make_run(session, "eval", {"policy_run_id": sft * 100})  # digits match, field does not
    found = views.lineage(sft)
    assert found["inputs"] == []
    assert found["artifacts"] == [{"kind": "checkpoint", "step": 500, "path": "/a/sft/step_500"}]
    assert sorted((c["id"], c["field"]) for c in found["consumers"]) == [
        (rl, "sft_run_id"),
        (prm, "policy_run_id"),
        (again, "sft_run_id"),
    ]
    found = views.lineage(again)
    assert sorted((i["field"], i["id"]) for i in found["inputs"]) == [
        ("parent", rl),
        ("prm_run_id", prm),
        ("sft_run_id", sft),
    ]
    assert views.referenced_runs({"a": {"b_run_ids": [3, 4]}, "x_run_id": True}) == [
        ("a.b_run_ids", 3),
        ("a.b_run_ids", 4),
    ]


def test_run_again_copies_the_config_as_a_child(data_dir):
    with session_scope() as session:
        original = make_run(session, "healthcheck", {"steps": 2}, group_name="g", name="hc")
    new = actions.run_again(original)
    details = views.run_details(new)
    assert (details["kind"], details["config"]["steps"], details["parent_id"]) == (
        "healthcheck",
        2,
        original,
    )
    assert details["group"] == "g" and details["name"] == "hc (again)"


def test_reproduce_the_paper_submits_the_whole_pipeline_once(data_dir):
    started = actions.reproduce_paper({"budget": "micro", "seeds": 1, "group": "paper"})
    assert started["group"] == "paper" and not started["errors"]
    stages = {s["stage"]: s["run_id"] for s in started["stages"]}
    assert list(stages)[:4] == ["sft", "rl-baseline-seed0", "prm-data", "prm-train"]
    assert views.run_details(stages["sft"])["status"] == "queued"
    assert views.run_details(stages["prm-train"])["status"] == "waiting"
    assert views.lineage(stages["sft"])["consumers"]  # the chain is visible as lineage
    again = actions.reproduce_paper({"budget": "micro", "seeds": 1, "group": "paper"})
    assert all(s["reused"] for s in again["stages"])
    bad = actions.reproduce_paper({"seeds": 0, "preset": "mbpp"})
    assert any(e.startswith("seeds: ") for e in bad["errors"])


def test_metric_views_and_kind_panels_appear_only_with_data(data_dir):
    with session_scope() as session:
        hc = make_run(session, "healthcheck", group_name="sweep")
        rl = make_run(session, "rl", {"variant": "dense"}, group_name="sweep", name="dense")
        for step in range(5):
            crud.add_metrics(session, run_id=hc, step=step, values={"healthcheck/x": step})
            values = {"eval/pass@1_sampled": step / 10, "losses/policy": 1 - step / 10}
            values |= {f"eval/pass@1_sampled/difficulty_{d}": step / d for d in (3, 7)}
            crud.add_metrics(session, run_id=rl, step=step * 10, values=values)
    assert views.metric_namespaces(rl) == ["eval", "losses"]
    figure = views.run_metrics_figure(rl, smoothing=0.5, namespace="losses")
    assert [t.name for t in figure.data] == ["losses/policy (raw)", "losses/policy"]
    assert len(views.run_metrics_figure(hc).data) == 1
    assert views.pass_rate_figure(hc) is None and views.difficulty_figure(hc) is None
    assert views.labeling_panel(hc) is None and views.prm_panel(hc) is None
    pass_rate = views.pass_rate_figure(rl)
    assert [t.name for t in pass_rate.data] == [f"{rl} dense"]  # the sibling logs no pass rate
    bars = views.difficulty_figure(rl)
    by_name = {t.name: dict(zip(t.x, t.y, strict=True)) for t in bars.data}
    assert by_name["sampled (last eval)"] == {"3": 4 / 3, "7": 4 / 7}
    assert by_name["sampled (first eval)"] == {"3": 0.0, "7": 0.0}


def test_labeling_and_prm_panels(data_dir):
    with session_scope() as session:
        data = make_run(session, "prm-data", {"k": 8})
        crud.add_metrics(session, run_id=data, step=0, values={"labeling/rescued_fraction": 0.5})
        # three sampled responses, then a one-line mistake: written, not searched, so neither
        # in the cost nor in the audit
        for t, cost, search in ((3, 16, "binary"), (3, 24, "binary"), (6, 24, None), (3, 0, SYN)):
            sample = Sample(
                run_id=data,
                code="x",
                verdict="failed",
                passed=False,
                meta={"n_code_lines": t, "completions_sampled": cost}
                | ({"search": search} if search else {}),
            )
            session.add(sample)
            session.flush()
            session.add_all(
                LineScore(sample_id=sample.id, line_no=i + 1, text="x", label=lab, ground_truth=gt)
                for i, (lab, gt) in enumerate([(1, 1), (-1, 1), (-1, -1)])
            )
        prm = make_run(
            session,
            "prm-train",
            result={
                "calibration": [{"predicted": 0.2, "observed": 0.3, "count": 10}],
                "rerank": {"table": {"4": {"prm_min": 0.6, "random": 0.4}}},
            },
        )
        for passed, scores in ((True, [0.5, 0.9]), (False, [0.4, -0.7]), (True, [0.8, -0.1])):
            sample = Sample(run_id=prm, code="x", verdict="x", passed=passed)
            session.add(sample)
            session.flush()
            session.add_all(
                LineScore(sample_id=sample.id, line_no=i + 1, text="y = 1", score=s)
                for i, s in enumerate(scores)
            )
    assert views.run_scalars(data).values.tolist() == [["labeling/rescued_fraction", 0.5]]
    assert views.run_metrics_figure(data) is None  # no curves: the table has it all
    assert views.run_scalars(prm) is None
    panel = views.labeling_panel(data)
    measured = panel["figure"].data[0]
    assert list(measured.x) == [3, 6] and list(measured.y) == [20.0, 24.0]
    assert list(panel["figure"].data[2].y) == [24, 48]  # linear scan: K·T
    audit = panel["audit"].set_index("search label \\ truth")
    assert (audit.loc["+1", "+1"], audit.loc["-1", "+1"], audit.loc["-1", "-1"]) == (3, 3, 3)

    panel = views.prm_panel(prm)
    assert list(panel["rerank_table"].columns) == ["K", "prm_min", "random"]
    assert panel["rerank_table"].iloc[0].tolist() == [4, 0.6, 0.4]
    assert "AUC 1.000" in panel["roc"].layout.title.text  # lowest scores separate perfectly
    with session_scope() as session:
        crud.get_run(session, run_id=prm).result = {"roc": [[0, 0], [0.5, 1], [1, 1]]}
    roc = views.prm_panel(prm)["roc"]
    assert "lines" in roc.layout.title.text and "AUC 0.750" in roc.layout.title.text
    with session_scope() as session:
        crud.get_run(session, run_id=prm).result = {"roc": [[0, 0], [0.5, 0], [1, 0]]}
    assert "no AUC" in views.prm_panel(prm)["roc"].layout.title.text


def test_roc_points():
    points = views.roc_points([(0.9, True), (0.5, False), (0.5, True), (-0.2, False)])
    assert points == [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert views.roc_points([(0.1, True)]) == []


def seed_sample(session, code_lines: list[str], scores: list[float | None]) -> int:
    problem_set = ProblemSet(name="p", source="test", content_hash="0" * 64, n_problems=1)
    session.add(problem_set)
    session.flush()
    problem = Problem(
        problem_set_id=problem_set.id, task_id="t/1", prompt="def f(xs):\n", difficulty=3
    )
    session.add(problem)
    run = make_run(session, "rl")
    session.flush()
    sample = Sample(
        run_id=run,
        problem_id=problem.id,
        code="def f(xs):\n" + "\n".join(code_lines) + "\n",
        verdict="failed",
        passed=False,
        error_line=3,
        detail="AssertionError: f([1]) == 2",
        meta={"mode": "rollout"},
    )
    session.add(sample)
    session.flush()
    session.add_all(
        LineScore(sample_id=sample.id, line_no=i + 1, text=text, score=score, label=None)
        for i, (text, score) in enumerate(zip(code_lines, scores, strict=True))
    )
    return sample.id


def test_sample_view_maps_the_error_line_and_colours_match_scores(data_dir):
    code = ["    y = xs[0] & 1", "    s = '<script>'", "    return y"]
    scores = [0.75, -0.5, None]
    with session_scope() as session:
        sample = seed_sample(session, code, scores)
    view = views.sample_view(sample)
    assert view["prompt"] == "def f(xs):\n" and view["task_id"] == "t/1"
    assert view["error_line"] == 2  # program line 3 = completion line 2
    heatmap = views.sample_heatmap(sample)
    assert "<script>" not in heatmap and "&lt;script&gt;" in heatmap
    for line_no, score in enumerate(scores, start=1):
        row = re.search(rf'<tr id="heatmap-{sample}-line-{line_no}".*?</tr>', heatmap).group(0)
        assert f"background-color:{score_colour(score)}" in row
    table, summary = views.samples_table(run_id=view["run"]["id"], outcome="failed", difficulty=3)
    assert summary.startswith("1 samples") and table.iloc[0]["min PRM"] == -0.5
    assert views.samples_table(outcome="passed")[1].startswith("0 samples")
    assert views.samples_table(task_id="t/1")[1].startswith("1 samples")
    assert list(views.same_problem_table(sample)["id"]) == []  # only itself so far
    assert views.sample_view(sample + 1) is None


def test_picker_choices_list_what_exists(data_dir):
    with session_scope() as session:
        sft = make_run(session, "sft", status="succeeded", name="mine")
        make_run(session, "sft", status="failed")  # no checkpoint: not offered
        crud.add_artifact(session, run_id=sft, kind="checkpoint", path="/c/sft", step=5)
        rl = make_run(session, "rl", status="running")
        crud.add_artifact(
            session,
            run_id=rl,
            kind="checkpoint",
            path="/c/rl/step_20",
            step=20,
            meta={"policy": "/c/rl/step_20/policy"},
        )
    assert [value for _, value in views.picker_choices("sft-runs")] == [sft]
    assert [value for _, value in views.picker_choices("policy-runs")] == [rl, sft]
    assert [v for _, v in views.picker_choices("policy-checkpoints")] == [
        "/c/rl/step_20/policy",
        "/c/sft",
    ]
    assert views.picker_choices("prm-runs") == []
    with pytest.raises(ValueError, match="unknown picker"):
        views.picker_choices("nope")


def test_compare_aggregates_seeds_per_variant(data_dir):
    finals = {"baseline": [0.2, 0.4], "dense+value-init": [0.5, 0.7, 0.6]}
    with session_scope() as session:
        for variant, values in finals.items():
            for seed, final in enumerate(values):
                run = make_run(session, "rl", {"variant": variant, "seed": seed}, group_name="s")
                for step, value in ((0, 0.1), (10, final)):
                    crud.add_metrics(
                        session,
                        run_id=run,
                        step=step,
                        values={
                            "eval/pass@1_sampled": value,
                            "eval/pass@1_sampled/difficulty_9": value / 2,
                            "eval/pass@1_greedy/difficulty_12": 1.0,
                            "rollout/response_lines": 5.0,
                        },
                    )
        make_run(session, "prm-data", group_name="s")  # no pass rate: not a row
    ids = compare.compare_run_ids("s", "")
    data = compare.load_comparison(ids)
    assert data.metric == "eval/pass@1_sampled"
    table = compare.paper_table(data)
    assert list(table["variant"]) == ["Baseline", "DenseReward+ValueInit"]
    assert list(table.columns)[-1] == "longest difficulty (9)"  # of the sampled metric
    assert table.iloc[0, 2] == "30.0 ± 14.1 (n=2)" and table.iloc[1, 2] == "60.0 ± 10.0 (n=3)"
    assert table.iloc[1, 3] == "30.0 ± 5.0 (n=3)"
    curves = compare.curves_figure(data)
    means = {t.name: list(t.y) for t in curves.data if t.mode}
    assert means["Baseline"] == [pytest.approx(0.1), pytest.approx(0.3)]
    assert compare.hacking_figure(data) is not None
    assert compare.difficulty_figure(data).data[0].x == ("9",)
    assert compare.compare_run_ids(None, "4, 2 x 4") == [2, 4]


def test_workers_table_marks_stale_workers(data_dir):
    now = datetime.now(UTC)
    with session_scope() as session:
        session.add_all(
            [
                Worker(name="a", host="h1", queues="cpu", facts={"gpus": ["H100"]}, last_seen=now),
                Worker(name="b", host="h2", queues="gpu", last_seen=now - timedelta(minutes=5)),
            ]
        )
    table = views.workers_table().set_index("name")
    assert table.loc["a", "state"] == "alive" and table.loc["a", "gpus"] == "H100"
    assert table.loc["b", "state"] == "stale" and table.loc["b", "gpus"] == "none"


def test_ema_is_debiased_and_figures_build():
    assert plots.ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])
    assert plots.ema([0.0, 1.0], 0.0) == [0.0, 1.0]
    smoothed = plots.ema([0.0, 10.0], 0.5)
    assert smoothed[1] == pytest.approx(10 * 0.5 / (1 - 0.25))
    grid = plots.metrics_grid({"a/x": [(0, 1.0)], "b/y": [(0, 2.0)], "b/z": [(0, 3.0)], "c": []})
    assert [t.xaxis for t in grid.data] == ["x", "x2", "x3", "x4"]
    assert [a.text for a in grid.layout.annotations] == ["a/x", "b/y", "b/z", "c"]
    assert grid.layout.uirevision == ""
    cost = plots.labeling_cost_figure([(7, 2, 20.0)], k=8)
    assert list(cost.data[1].y) == [8 * math.ceil(math.log2(8))] and list(cost.data[2].y) == [56]
    assert plots.bands_figure({}).layout.annotations[0].text == "no runs with this metric"


def test_adhoc_scoring_renders_the_prms_own_scores(data_dir, tmp_path):
    """Pasted code scored by a (tiny, untrained) PRM checkpoint: the heatmap shows exactly
    what ``models.prm.score_table`` returns, line by line."""
    from models.policy import build_tiny_policy, save_policy
    from models.policy_config import TinyModelConfig
    from models.prm import LoopState, save_prm, score_table
    from models.prm_config import PRMTrainConfig
    from models.tokenizer import train_tokenizer
    from models.value_model import ValueModel

    prompt, code = "def f(xs):\n", "    ys = sorted(xs)\n    # keep\n    return ys[0] & 1\n"
    tokenizer = train_tokenizer([prompt + code] * 20, 300)
    policy = save_policy(
        build_tiny_policy(tokenizer, TinyModelConfig(n_layer=1, n_embd=32, n_head=2), seed=0),
        tokenizer,
        tmp_path / "policy",
    )
    prm = save_prm(
        tmp_path / "prm",
        ValueModel.from_policy(str(policy), seed=1),
        tokenizer,
        PRMTrainConfig(init_from=str(policy)),
        LoopState(),
        metrics={},
    )
    with session_scope() as session:
        seed_sample(session, ["    pass"], [None])  # the problem set "p", task "t/1"
    html = views.adhoc_heatmap(str(prm), "p", "t/1", code)
    expected = score_table(str(prm), "def f(xs):\n", code, device="cpu")
    found = re.findall(r'data-line="(\d+)" data-score="([^"]+)"', html)
    assert [(int(n), float(s)) for n, s in found] == [(n, s) for n, s, _ in expected]
    assert "&amp;" in html and " & " not in html
    with pytest.raises(LookupError, match="no task"):
        views.adhoc_heatmap(str(prm), "p", "nope", code)


def test_run_header_escapes_user_text_and_shows_progress(data_dir):
    from app import render

    with session_scope() as session:
        run = make_run(
            session,
            "healthcheck",
            name="<img src=x onerror=alert(1)>",
            status="failed",
            progress=0.25,
            error="ValueError: <b>bad</b>",
        )
    header = render.run_header(views.run_summary(run))
    assert "<img" not in header and "&lt;img src=x" in header
    assert "<b>bad" not in header and "&lt;b&gt;bad" in header
    assert 'data-status="failed"' in header and "width:25%" in header
    markdown = render.lineage_markdown(views.lineage(run))
    assert markdown.count("- none") == 3
