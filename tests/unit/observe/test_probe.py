"""The probe for pods of several processes: every process's port is asked, the first failure fails it."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from worker.observe.health import Health
from worker.observe.probe import check
from worker.observe.server import start_server


def two_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
        return base
    pytest.skip("no two consecutive free ports")


@pytest.fixture
def two_processes():
    base = two_free_ports()
    healths = [Health(stall_after_s=60.0), Health(stall_after_s=60.0)]
    servers = [
        start_server("127.0.0.1", base + i, CollectorRegistry(), h) for i, h in enumerate(healths)
    ]
    yield base, healths
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_probe_fails_while_any_process_is_not_started_and_passes_when_all_are(two_processes):
    base, (first, second) = two_processes
    first.warmed_up()
    ok, why = check("/startupz", "127.0.0.1", base, 2, timeout_s=2.0)
    assert (
        not ok and why.startswith("process 1") and "503" in why
    )  # process 0 alone would have passed
    second.warmed_up()
    assert check("/startupz", "127.0.0.1", base, 2, timeout_s=2.0)[0]


def test_a_wedged_second_process_fails_liveness(two_processes):
    base, (_, second) = two_processes
    second.watch_forward(lambda: 0.0)  # a forward pass running since the clock's origin: stuck
    ok, why = check("/healthz", "127.0.0.1", base, 2, timeout_s=2.0)
    assert not ok and "process 1" in why and "forward pass" in why


def test_a_process_that_does_not_listen_fails_the_probe(two_processes):
    base, _ = two_processes
    ok, why = check("/healthz", "127.0.0.1", base, 3, timeout_s=1.0)
    assert not ok and why.startswith("process 2")


def test_the_module_runs_as_the_charts_exec_probe_and_exits_by_the_result(two_processes):
    base, (first, second) = two_processes
    cmd = [
        sys.executable,
        "-m",
        "worker.observe.probe",
        "/readyz",
        "--port",
        str(base),
        "--processes",
        "2",
    ]
    assert subprocess.run(cmd, capture_output=True, timeout=30).returncode == 1
    for h in (first, second):
        h.warmed_up()
        h.polled()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
