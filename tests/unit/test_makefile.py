"""``make`` on a machine whose Python is too old stops before installing anything, with one line
that says what it needs and how to get it (a stand-in interpreter that reports 3.10)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.fixture
def old_python(tmp_path) -> Path:
    """``python3`` that says it is 3.10 and fails the version check, as a 3.10 would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  -V|--version) echo 'Python 3.10.13';;\n"
        "  -c) exit 1;;\n"
        "  *) echo 'should not be run to install' >&2; exit 99;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    return fake


def make(target: str, tmp_path: Path, old_python: Path, **variables: str):
    env = {**os.environ, "PATH": f"{old_python.parent}:{os.environ['PATH']}"}
    args = [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(
        ["make", "--no-print-directory", *args, target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_package_venv_says_which_python_it_needs(tmp_path, old_python):
    venv = tmp_path / "venv"
    proc = make(f"{venv}/.installed", tmp_path, old_python, VENV=str(venv))
    assert proc.returncode != 0
    assert "needs Python >= 3.11" in proc.stdout and "Python 3.10.13" in proc.stdout
    assert "apt-get install python3.11-venv" in proc.stdout
    assert not venv.exists()  # nothing was installed


def test_the_deploy_checks_say_which_python_they_need(tmp_path, old_python):
    ops = tmp_path / "ops"
    proc = make(
        f"{ops}/.installed", tmp_path, old_python, OPS_VENV=str(ops), OPS_PYTHON=str(old_python)
    )
    assert proc.returncode != 0
    assert "deploy checks" in proc.stdout and "Python 3.10.13" in proc.stdout
    assert "OPS_PYTHON=" in proc.stdout
    assert not ops.exists()
