"""The benchmark and lab tools in tools/ at least start: each parses its options and prints its
help (a tool that only runs by hand broke once without any test noticing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.mark.parametrize("tool", sorted(f for f in os.listdir(TOOLS) if f.endswith(".py")))
def test_tool_prints_its_help(tool: str) -> None:
    p = subprocess.run(
        [sys.executable, os.path.join(TOOLS, tool), "--help"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout
