"""Fuzzing the boundaries a user touches: every job config model and the CLI's argument
parsing take any input and answer with a clear error naming the field — never a crash."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import build_parser
from workers.registry import JOB_KINDS, ConfigError, validate_config

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def field_names(kind: str) -> list[str]:
    return list(JOB_KINDS[kind].config.model_fields)


@pytest.mark.parametrize("kind", sorted(JOB_KINDS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_config_validates_or_names_the_field(kind, data):
    keys = st.sampled_from(field_names(kind)) | st.text(max_size=12)
    raw = data.draw(st.dictionaries(keys, JSON, max_size=6) | JSON)
    try:
        validate_config(JOB_KINDS[kind], raw)
    except ConfigError as error:
        assert error.errors and all(":" in line for line in error.errors)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "up",
                "worker",
                "submit",
                "status",
                "cancel",
                "resume",
                "runs",
                "sweep",
                "reproduce",
                "problems",
                "validate",
                "import",
                "exec",
                "--config",
                "--host",
                "--port",
                "--json",
                "--seeds",
                "--budget",
                "--group",
                "--name",
                "--format",
                "--out",
                "-1",
                "0",
                "abc",
                "7",
                "micro",
                "rl",
                "healthcheck",
                "",
            ]
        )
        | st.text(max_size=8),
        max_size=6,
    )
)
def test_argument_parsing_never_crashes(argv):
    parser = build_parser()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as stop:  # argparse's usage errors (status 2) and --help (0)
            assert stop.code in (0, 2)
