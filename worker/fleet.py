"""``embed-worker run`` with ``EMBED_PROCESSES=N``: N worker processes on one machine, in one consumer group.

One Python process cannot keep a fast GPU fed with a small model (tokenization and message handling
hold the GIL), and on CPU two processes with half the threads each often beat one with all of them.
The supervisor starts the children, gives each its own metrics port, client id, static group instance id and
share of the CPU cores, forwards SIGINT/SIGTERM, and stops the rest as soon as one child fails, so the pod restarts
as a whole and the group rebalances cleanly. It consumes nothing itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from worker.config import Settings
from worker.encode.parallel import machine_cores

log = logging.getLogger(__name__)

SUM_KEYS = (
    "received",
    "embedded",
    "deletes",
    "dedup_hits",
    "dead_lettered",
    "batches",
    "tokens",
    "padded_tokens",
    "encode_s",
    "replicas",
)
POLL_S = 0.2


def child_overrides(settings: Settings, index: int, cores: int) -> list[str]:
    """Flags appended to child ``index``'s command line; later flags win over the user's own."""
    flags = ["--processes", "1", "--kafka.client-id", f"{settings.kafka.client_id}-{index}"]
    if settings.metrics.port:
        flags += ["--metrics.port", str(settings.metrics.port + index)]
    # each child's share of the cores, from which it sizes its replicas and threads (``worker.encode.parallel``)
    share = max(1, (settings.model.cpu_cores or cores) // settings.processes)
    flags += ["--model.cpu-cores", str(share)]
    if (
        settings.kafka.group_instance_id
    ):  # static membership: two members with one id fence each other
        flags += ["--kafka.group-instance-id", f"{settings.kafka.group_instance_id}-{index}"]
    if (
        settings.kafka.transactional_id
    ):  # one live producer per transactional id: the others are fenced
        flags += ["--kafka.transactional-id", f"{settings.kafka.transactional_id}-{index}"]
    return flags


def exit_code(codes: Sequence[int | None]) -> int:
    """The fleet's exit status: 0 when every child stopped cleanly, else the first failure (signals as 128 + n)."""
    for code in codes:
        if code:
            return 128 - code if code < 0 else code
    return 0


def merge_summaries(parts: list[dict]) -> dict:
    """One run summary for the fleet: counts summed, rates over the window from the first message
    any child took to the last output any child published, each child's summary kept."""
    merged: dict = {key: sum(p.get(key) or 0 for p in parts) for key in SUM_KEYS}
    merged["encode_s"] = round(merged["encode_s"], 3)
    starts = [p["first_message_at"] for p in parts if p.get("first_message_at")]
    ends = [p["last_output_at"] for p in parts if p.get("last_output_at")]
    busy = max(ends) - min(starts) if starts and ends else 0.0
    merged["busy_s"] = round(busy, 3)
    merged["docs_per_s"] = round(merged["embedded"] / busy, 1) if busy > 0 else 0.0
    merged["tokens_per_s"] = round(merged["tokens"] / busy, 1) if busy > 0 else 0.0
    padded = merged["padded_tokens"]
    merged["padding_efficiency"] = round(merged["tokens"] / padded, 3) if padded else None
    p50s = sorted(p["batch_p50_s"] for p in parts if p.get("batch_p50_s") is not None)
    p99s = [p["batch_p99_s"] for p in parts if p.get("batch_p99_s") is not None]
    merged["batch_p50_s"] = p50s[len(p50s) // 2] if p50s else None  # the median process's median
    merged["batch_p99_s"] = max(p99s) if p99s else None  # the worst process's p99
    merged["processes"] = parts
    return merged


class Fleet:
    def __init__(self, settings: Settings, argv: Sequence[str], summary_file: str | None = None):
        self.settings = settings
        self.argv = list(argv)
        self.summary_file = summary_file
        self.children: list[subprocess.Popen] = []

    def _command(self, index: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "worker",
            "run",
            *self.argv,
            *child_overrides(self.settings, index, machine_cores()),
        ]
        if self.summary_file:
            cmd += ["--summary-file", f"{self.summary_file}.{index}"]
        return cmd

    def _signal_all(self, signum: int) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def run(self, stop: threading.Event) -> int:
        # Own sessions: a terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM.
        self.children = [
            subprocess.Popen(self._command(i), start_new_session=True)
            for i in range(self.settings.processes)
        ]
        log.info(
            "started %d worker processes: pids %s",
            len(self.children),
            [c.pid for c in self.children],
        )
        stopping = False
        try:
            while any(c.poll() is None for c in self.children):
                failed = [c for c in self.children if c.poll() not in (None, 0)]
                if not stopping and (stop.is_set() or failed):
                    if failed:
                        log.error(
                            "worker process %d exited with %s: stopping the others",
                            failed[0].pid,
                            failed[0].returncode,
                        )
                    self._signal_all(signal.SIGTERM)
                    stopping = True
                time.sleep(POLL_S)
        finally:
            self._signal_all(
                signal.SIGKILL
            )  # only reached with children alive when the supervisor itself fails
            for child in self.children:
                child.wait()
        self._write_summary()
        return exit_code([c.returncode for c in self.children])

    def _write_summary(self) -> None:
        if not self.summary_file:
            return
        parts = []
        for i in range(len(self.children)):
            path = f"{self.summary_file}.{i}"
            if os.path.exists(path):
                with open(path) as f:
                    parts.append(json.load(f))
                os.remove(path)
        with open(self.summary_file, "w") as f:
            json.dump(merge_summaries(parts), f)
