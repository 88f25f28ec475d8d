"""Read-only queries behind the dashboard views. Keyword-only, never commit, and built so that
every view stays fast at volume (thousands of runs, millions of line scores): pages with
LIMIT/OFFSET, aggregates in SQL, and filters that follow the indexes in ``app.orm``.

Portable between SQLite and PostgreSQL: JSON fields are read with SQLAlchemy's JSON index
operators (``json_extract`` / ``->>``), never with dialect functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, String, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from app.orm import Artifact, LineScore, Metric, Problem, ProblemSet, Run, Sample, Worker
from models.labeling import SYNTHETIC

# ----------------------------------------------------------------------------- runs


def _run_filters(
    query: Select,
    *,
    kind: str | None,
    status: str | None,
    group_name: str | None,
    text: str | None,
) -> Select:
    if kind:
        query = query.where(Run.kind == kind)
    if status:
        query = query.where(Run.status == status)
    if group_name:
        query = query.where(Run.group_name == group_name)
    if text:
        query = query.where(
            Run.name.contains(text) | Run.kind.contains(text) | Run.group_name.contains(text)
        )
    return query


def runs_page(
    session: Session,
    *,
    kind: str | None = None,
    status: str | None = None,
    group_name: str | None = None,
    text: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Run], int]:
    """One page of runs, newest first, and how many match the filters in all."""
    filters = {"kind": kind, "status": status, "group_name": group_name, "text": text}
    total = session.scalar(_run_filters(select(func.count(Run.id)), **filters)) or 0
    query = _run_filters(select(Run), **filters).order_by(Run.id.desc())
    return session.scalars(query.limit(limit).offset(offset)).all(), int(total)


def runs_by_ids(session: Session, *, run_ids: Sequence[int]) -> Sequence[Run]:
    return session.scalars(select(Run).where(Run.id.in_(run_ids)).order_by(Run.id)).all()


def group_runs(session: Session, *, group_name: str) -> Sequence[Run]:
    return session.scalars(select(Run).where(Run.group_name == group_name).order_by(Run.id)).all()


def group_names(session: Session, *, limit: int = 500) -> list[str]:
    """Run groups, most recently used first."""
    query = (
        select(Run.group_name)
        .where(Run.group_name.is_not(None))
        .group_by(Run.group_name)
        .order_by(func.max(Run.id).desc())
        .limit(limit)
    )
    return [name for name in session.scalars(query) if name]


def runs_mentioning(session: Session, *, run_id: int) -> Sequence[Run]:
    """Runs whose config or dependency list contains ``run_id``'s digits, or that name it as
    parent: a cheap superset of its consumers (the caller keeps the real matches)."""
    digits = str(run_id)
    return session.scalars(
        select(Run)
        .where(
            or_(
                cast(Run.config, String).contains(digits),
                cast(Run.depends_on, String).contains(digits),
                Run.parent_id == run_id,
            ),
            Run.id != run_id,
        )
        .order_by(Run.id)
    ).all()


@dataclass(frozen=True)
class RunChoice:
    id: int
    kind: str
    name: str
    status: str
    group_name: str | None


def run_choices(
    session: Session,
    *,
    kinds: Sequence[str] = (),
    statuses: Sequence[str] = (),
    with_artifact: str | None = None,
    limit: int = 200,
) -> list[RunChoice]:
    """Runs a job form may point at, newest first: of these kinds and statuses, and (if
    ``with_artifact``) holding an artifact of that kind."""
    query = select(Run.id, Run.kind, Run.name, Run.status, Run.group_name)
    if kinds:
        query = query.where(Run.kind.in_(kinds))
    if statuses:
        query = query.where(Run.status.in_(statuses))
    if with_artifact:
        has = select(Artifact.id).where(Artifact.run_id == Run.id, Artifact.kind == with_artifact)
        query = query.where(has.exists())
    rows = session.execute(query.order_by(Run.id.desc()).limit(limit))
    return [RunChoice(*row) for row in rows]


# ----------------------------------------------------------------------------- artifacts


def run_artifacts(session: Session, *, run_id: int) -> Sequence[Artifact]:
    query = select(Artifact).where(Artifact.run_id == run_id)
    return session.scalars(query.order_by(Artifact.kind, Artifact.step, Artifact.id)).all()


def artifacts_of_kind(session: Session, *, kind: str, limit: int = 200) -> Sequence[Artifact]:
    """The newest artifacts of one kind (checkpoint pickers)."""
    query = select(Artifact).where(Artifact.kind == kind).order_by(Artifact.id.desc())
    return session.scalars(query.limit(limit)).all()


# ----------------------------------------------------------------------------- metrics


def metric_counts(session: Session, *, run_id: int) -> dict[str, int]:
    """{metric name: points logged} of one run (an index-only scan of (run, name, step))."""
    query = (
        select(Metric.name, func.count())
        .where(Metric.run_id == run_id)
        .group_by(Metric.name)
        .order_by(Metric.name)
    )
    return {name: int(n) for name, n in session.execute(query)}


def metric_names_of(session: Session, *, run_ids: Sequence[int], prefix: str = "") -> list[str]:
    """Distinct metric names the runs logged (starting with ``prefix``)."""
    query = select(Metric.name).where(Metric.run_id.in_(run_ids)).distinct()
    if prefix:
        query = query.where(Metric.name.startswith(prefix, autoescape=True))
    return sorted(session.scalars(query))


def final_values(
    session: Session, *, run_ids: Sequence[int], names: Sequence[str]
) -> dict[tuple[int, str], float]:
    """{(run, name): value at the run's last logged step of that metric}."""
    if not run_ids or not names:
        return {}
    last = (
        select(Metric.run_id, Metric.name, func.max(Metric.step).label("step"))
        .where(Metric.run_id.in_(run_ids), Metric.name.in_(names))
        .group_by(Metric.run_id, Metric.name)
        .subquery()
    )
    query = select(Metric.run_id, Metric.name, Metric.value).join(
        last,
        and_(
            Metric.run_id == last.c.run_id,
            Metric.name == last.c.name,
            Metric.step == last.c.step,
        ),
    )
    return {(run, name): float(value) for run, name, value in session.execute(query)}


def first_values(session: Session, *, run_id: int, names: Sequence[str]) -> dict[str, float]:
    """{name: value at the run's first logged step of that metric}."""
    if not names:
        return {}
    first = (
        select(Metric.name, func.min(Metric.step).label("step"))
        .where(Metric.run_id == run_id, Metric.name.in_(names))
        .group_by(Metric.name)
        .subquery()
    )
    query = select(Metric.name, Metric.value).join(
        first,
        and_(Metric.run_id == run_id, Metric.name == first.c.name, Metric.step == first.c.step),
    )
    return {name: float(value) for name, value in session.execute(query)}


@dataclass(frozen=True)
class BandPoint:
    """One step of a metric aggregated over the runs of a group (e.g. a variant's seeds)."""

    group: str
    step: int
    mean: float
    std: float
    low: float
    high: float
    n: int


def metric_bands(
    session: Session, *, run_ids: Sequence[int], name: str, group_by: str = "variant"
) -> list[BandPoint]:
    """Mean, standard deviation and min/max of metric ``name`` at every step, over the runs
    sharing the config field ``group_by`` (runs without it group by kind). Computed in SQL;
    the standard deviation from E[x²] − E[x]² because SQLite has no STDDEV."""
    group = func.coalesce(Run.config[group_by].as_string(), Run.kind).label("grp")
    query = (
        select(
            group,
            Metric.step,
            func.avg(Metric.value),
            func.avg(Metric.value * Metric.value),
            func.min(Metric.value),
            func.max(Metric.value),
            func.count(),
        )
        .join(Run, Run.id == Metric.run_id)
        .where(Metric.run_id.in_(run_ids), Metric.name == name)
        .group_by(group, Metric.step)
        .order_by(group, Metric.step)
    )
    points = []
    for grp, step, mean, mean_sq, low, high, n in session.execute(query):
        variance = max(float(mean_sq) - float(mean) ** 2, 0.0) * n / max(n - 1, 1)
        points.append(
            BandPoint(str(grp), int(step), float(mean), variance**0.5, float(low), float(high), n)
        )
    return points


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SampleFilter:
    run_id: int | None = None
    step: int | None = None
    task_id: str | None = None
    passed: bool | None = None
    difficulty: int | None = None


def _sample_where(query: Select, where: SampleFilter) -> Select:
    if where.run_id is not None:
        query = query.where(Sample.run_id == where.run_id)
    if where.step is not None:
        query = query.where(Sample.step == where.step)
    if where.passed is not None:
        query = query.where(Sample.passed.is_(where.passed))
    if where.task_id:
        query = query.where(Problem.task_id == where.task_id)
    if where.difficulty is not None:
        query = query.where(Problem.difficulty == where.difficulty)
    return query


def samples_page(
    session: Session,
    *,
    where: SampleFilter,
    limit: int = 50,
    offset: int = 0,
    count_cap: int = 10_000,
) -> tuple[list[dict[str, Any]], int]:
    """One page of samples, newest first, with their problem; and the number matching, counted
    up to ``count_cap`` + 1 only (an exact count of a million rows costs more than the page,
    and "over 10,000" is all a pager needs)."""
    needs_problem = bool(where.task_id) or where.difficulty is not None
    matching = select(Sample.id)
    if needs_problem:
        matching = matching.join(Problem, Problem.id == Sample.problem_id)
    capped = _sample_where(matching, where).limit(count_cap + 1).subquery()
    total = session.scalar(select(func.count()).select_from(capped)) or 0
    query = select(
        Sample.id,
        Sample.run_id,
        Sample.step,
        Problem.task_id,
        Problem.difficulty,
        Sample.verdict,
        Sample.passed,
        Sample.tests_passed,
        Sample.tests_total,
        Sample.meta["mode"].as_string().label("mode"),
    ).outerjoin(Problem, Problem.id == Sample.problem_id)
    query = _sample_where(query, where).order_by(Sample.id.desc()).limit(limit).offset(offset)
    return [dict(row._mapping) for row in session.execute(query)], int(total)


def line_summaries(session: Session, *, sample_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per sample: number of lines, lowest PRM score and how many lines have a score."""
    if not sample_ids:
        return {}
    query = (
        select(
            LineScore.sample_id,
            func.count(LineScore.id),
            func.min(LineScore.score),
            func.count(LineScore.score),
        )
        .where(LineScore.sample_id.in_(sample_ids))
        .group_by(LineScore.sample_id)
    )
    return {
        sample: {"lines": n, "min_score": low, "scored": scored}
        for sample, n, low, scored in session.execute(query)
    }


def get_sample(session: Session, *, sample_id: int) -> tuple[Sample, Problem | None] | None:
    row = session.execute(
        select(Sample, Problem)
        .outerjoin(Problem, Problem.id == Sample.problem_id)
        .where(Sample.id == sample_id)
    ).first()
    return (row[0], row[1]) if row else None


def sample_lines(session: Session, *, sample_id: int) -> Sequence[LineScore]:
    query = select(LineScore).where(LineScore.sample_id == sample_id)
    return session.scalars(query.order_by(LineScore.line_no)).all()


def samples_of_problem(
    session: Session, *, problem_id: int, exclude_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Other samples of one problem (any run), newest first: the side-by-side candidates."""
    query = (
        select(
            Sample.id,
            Sample.run_id,
            Run.kind,
            Run.name,
            Sample.step,
            Sample.verdict,
            Sample.meta["mode"].as_string().label("mode"),
        )
        .join(Run, Run.id == Sample.run_id)
        .where(Sample.problem_id == problem_id, Sample.id != exclude_id)
        .order_by(Sample.id.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def find_problem(session: Session, *, set_name: str, task_id: str) -> Problem | None:
    return session.scalar(
        select(Problem)
        .join(ProblemSet, ProblemSet.id == Problem.problem_set_id)
        .where(ProblemSet.name == set_name, Problem.task_id == task_id)
    )


def problem_set_names(session: Session) -> list[str]:
    return list(session.scalars(select(ProblemSet.name).order_by(ProblemSet.name)))


def problem_sets(session: Session) -> Sequence[ProblemSet]:
    return session.scalars(select(ProblemSet).order_by(ProblemSet.id.desc())).all()


# ----------------------------------------------------------------------------- PRM panels

SAMPLED = func.coalesce(Sample.meta["search"].as_string(), "") != SYNTHETIC
"""A prm-data sample the policy wrote (not a reference or one-line mistake): the only kind
with a labelling cost and a search label to audit."""


def labeling_cost_by_length(session: Session, *, run_id: int) -> list[tuple[int, int, float]]:
    """(code lines T, failing responses, mean completions sampled) of a prm-data run, per T:
    what the binary search cost against the linear scan's K·T."""
    lines = Sample.meta["n_code_lines"].as_integer()
    cost = Sample.meta["completions_sampled"].as_integer()
    query = (
        select(lines, func.count(), func.avg(cost))
        .where(Sample.run_id == run_id, Sample.passed.is_(False), lines.is_not(None), SAMPLED)
        .group_by(lines)
        .order_by(lines)
    )
    return [(int(t), int(n), float(mean or 0.0)) for t, n, mean in session.execute(query)]


def label_confusion(session: Session, *, run_id: int) -> dict[tuple[int, int], int]:
    """{(search label, ground-truth label): lines} over a run's samples: the label audit."""
    query = (
        select(LineScore.label, LineScore.ground_truth, func.count())
        .join(Sample, Sample.id == LineScore.sample_id)
        .where(
            Sample.run_id == run_id,
            LineScore.label.is_not(None),
            LineScore.ground_truth.is_not(None),
            SAMPLED,
        )
        .group_by(LineScore.label, LineScore.ground_truth)
    )
    return {(int(label), int(truth)): int(n) for label, truth, n in session.execute(query)}


def response_scores(session: Session, *, run_id: int) -> list[tuple[float, bool]]:
    """(lowest PRM line score, passed) per scored sample of a run."""
    code_line = ~func.trim(LineScore.text).startswith("#") & (func.trim(LineScore.text) != "")
    lowest = func.min(case((code_line, LineScore.score)))
    query = (
        select(lowest, Sample.passed)
        .join(LineScore, LineScore.sample_id == Sample.id)
        .where(Sample.run_id == run_id, LineScore.score.is_not(None))
        .group_by(Sample.id, Sample.passed)
    )
    return [(float(low), bool(ok)) for low, ok in session.execute(query) if low is not None]


# ----------------------------------------------------------------------------- workers


def workers(session: Session) -> Sequence[Worker]:
    return session.scalars(select(Worker).order_by(Worker.last_seen.desc())).all()
