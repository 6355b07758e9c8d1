"""Run a `ferry` command in-process, as the CLI tests do."""

from __future__ import annotations

from typer.testing import CliRunner

from ferry.cli.main import app


def run(*args: str) -> str:
    """The command's output; the command must succeed."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output
