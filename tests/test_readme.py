"""The README documents every setting and every CLI command that exists."""

from __future__ import annotations

from app.cli import build_parser
from app.settings import Settings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_setting_is_documented():
    for name in Settings.model_fields:
        assert f"PRM_STUDIO_{name.upper()}" in README, name


def test_every_cli_command_is_documented():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    for command in commands:
        assert f"prm-studio {command}" in README, command
