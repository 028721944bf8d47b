"""--help and the manual page: grouped as a man page is, units stated, and the page installed
with the package is the one the click definitions make today."""

from __future__ import annotations

import os
import shutil
import subprocess

import click
import pytest
from click.testing import CliRunner

from alf import __version__, manpage
from alf.cli import HELP_SECTIONS, main

PAGE = os.path.join(os.path.dirname(__file__), "..", "docs", "alf.1")


@pytest.mark.parametrize("command", ["send", "recv"])
def test_every_option_has_a_section(command: str) -> None:
    cmd = main.commands[command]
    # as click makes it (help option names from the group): click caches a command's help option
    ctx = click.Context(cmd, info_name=command, parent=click.Context(main, **main.context_settings))
    sections = manpage.option_sections(cmd, ctx, HELP_SECTIONS)
    assert [title for title, _rows in sections] == [
        t for t in HELP_SECTIONS if any(t == s for s, _ in sections)
    ]
    assert "Other" not in dict(sections), dict(sections).get("Other")


def test_send_help_is_grouped_with_units() -> None:
    out = CliRunner().invoke(main, ["send", "--help"]).output
    titles = [line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles[: len(HELP_SECTIONS)] == list(HELP_SECTIONS)
    assert "RATE  bits per second; k, M, G, T are powers of 1000" in out
    assert "SIZE  bytes; K, M, G, T are powers of 1024" in out
    assert "[default: 1M]" in out and "(1M)" not in out
    assert "docs/" not in out  # a pip install has no docs folder to point to


def test_the_installed_page_is_up_to_date() -> None:
    """docs/alf.1 is what `alf man` writes: regenerate it with `alf man > docs/alf.1`."""
    with open(PAGE) as f:
        assert f.read() == manpage.render(main, __version__)


def test_alf_man_prints_the_page() -> None:
    result = CliRunner().invoke(main, ["man"])
    assert result.exit_code == 0 and result.output.startswith(".TH ALF 1")


@pytest.mark.skipif(shutil.which("man") is None, reason="no man(1) here to render the page")
def test_man_renders_the_page_cleanly() -> None:
    r = subprocess.run(
        ["man", "-l", "--warnings", PAGE], capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80")
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    text = r.stdout
    for heading in (
        "NAME",
        "SYNOPSIS",
        "ALF SEND",
        "ALF RECV",
        "EXIT STATUS",
        "SHELL COMPLETION",
        "SECURITY",
    ):
        assert heading in text
    assert "--checkphrase" in text.replace("\u2010", "-")
