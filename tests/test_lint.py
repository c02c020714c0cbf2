"""Ruff, with the rule set in pyproject.toml ([tool.ruff]), is clean on the repository."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _ruff(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python -m ruff check` with this interpreter's ruff (the test extras'); skipped without it, failed under CI."""
    if importlib.util.find_spec("ruff") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ruff is not installed: pip install -e '.[test]'")
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ruff_is_clean():
    proc = _ruff(".")
    why = "ruff check found problems (fix them, or argue an ignore in pyproject.toml)"
    assert proc.returncode == 0, f"{why}:\n{proc.stdout}{proc.stderr}"


def test_ruff_format_is_clean():
    """Every .py file as `ruff format` writes it (line length 120, from pyproject.toml)."""
    _ruff(".")  # skipped (or failed under CI) without ruff, as above
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"run `ruff format .`:\n{proc.stdout}{proc.stderr}"


def test_ruff_reads_the_projects_rules(tmp_path):
    """The same call flags what the project's rules (and only they) forbid: a 121-column line, a late-bound loop
    variable; a 100-column line passes (ruff's default is 88)."""
    (tmp_path / "bad.py").write_text(f"fs = []\nfor i in range(3):\n    fs.append(lambda: i)\nx = {'1' * 117}\n")
    (tmp_path / "good.py").write_text(f"x = {'1' * 96}\n")
    config = str(REPO / "pyproject.toml")
    bad = _ruff("--config", config, "bad.py", cwd=tmp_path)
    assert bad.returncode == 1 and "B023" in bad.stdout and "E501" in bad.stdout, bad.stdout + bad.stderr
    good = _ruff("--config", config, "good.py", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
