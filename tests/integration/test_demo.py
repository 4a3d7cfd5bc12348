"""The README's main command, `embed-worker demo`, on a small slice of the sample corpus: it must
still run end to end (stack, publish, worker with chunking, sink, query) and exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


def test_the_demo_runs_end_to_end_and_answers_its_query(tmp_path):
    state = tmp_path / "stack"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "worker", "demo", "--docs", "300", "--dir", str(state)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "worker", "devstack", "down", "--dir", str(state)],
            capture_output=True,
            timeout=60,
            cwd=REPO,
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "300 documents in, 300 embedded" in proc.stdout
    assert "committed offsets equal the topic's end offsets" in proc.stdout
    answer = proc.stdout.split("top 5 documents for", 1)[1].splitlines()
    assert (
        len([line for line in answer[1:] if line.strip()[:2] in {f"{i}." for i in range(1, 6)}])
        == 5
    ), proc.stdout
