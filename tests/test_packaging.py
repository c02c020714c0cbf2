"""The package as a user installs it (a wheel, not this checkout): it holds what it reads at run time."""

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from conftest import REPO, TINY


def test_a_wheel_holds_the_schema_and_validates_a_config_away_from_the_repo(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("ssmpipe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        schema = z.read("ssmpipe/schemas/config.schema.yaml")  # the file itself, not a link into the repo
        z.extractall(tmp_path / "site")
    assert schema == (REPO / "workflow" / "schemas" / "config.schema.yaml").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.yaml").write_text(yaml.safe_dump({**TINY, "results": str(elsewhere / "results")}))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ssmpipe, sys; from ssmpipe.cli import main; print(ssmpipe.__file__); "
            "sys.exit(main(['validate', 'c.yaml']))",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.splitlines()[0]).is_relative_to(tmp_path / "site")  # the wheel's copy ran
    assert "valid. sweep 'tiny'" in proc.stdout
