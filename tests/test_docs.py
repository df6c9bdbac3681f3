"""The README documents every command the CLI has."""

from __future__ import annotations

import argparse
from pathlib import Path

from broadcaster.cli.main import build_parser

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_covers_every_command():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in sub.choices if f"broadcaster {name}" not in README]
    assert not missing, f"README does not document: {missing}"


def test_readme_gives_the_two_setup_commands():
    assert "scripts/demo" in README and "scripts/test" in README
