"""embed-loadgen against the real broker: rate control, exact latency measurement, and a measured
run of the real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import msgpack
import pytest
from kafka import KafkaConsumer, KafkaProducer

from loadgen.publish import TopicSender, publish
from loadgen.rate import Schedule
from loadgen.readback import read_topic
from loadgen.session import run_measured
from worker.config import Settings

pytestmark = pytest.mark.integration


def test_open_loop_rate_is_within_5_percent_over_10_seconds(lane):
    schedule = Schedule(300)
    docs = [{"id": f"r-{i}", "text": f"document {i}"} for i in range(schedule.count_for(10))]
    sender = TopicSender(lane.kafka)
    try:
        report = publish(sender, lane.input, docs, schedule=schedule)
    finally:
        sender.close()
    assert report.messages == 3000
    assert abs(report.seconds - 10.0) / 10.0 < 0.05, f"took {report.seconds:.2f} s"
    assert report.late_s < 0.5
    stamps = sorted(r.timestamp for r in read_topic(lane.kafka, lane.input, expect=3000))
    span_s = (stamps[-1] - stamps[0]) / 1000
    assert (
        abs(len(stamps) / span_s - 300) / 300 < 0.05
    )  # the intended timestamps carry the schedule


class Echo(threading.Thread):
    """Answers each input after a known delay (written into the output's timestamp), except for
    a few chosen documents: one never answered, one dead-lettered, one answered twice."""

    def __init__(self, lane, delays_ms: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.lane, self.delays_ms, self.halt = lane, delays_ms, threading.Event()

    def run(self) -> None:
        consumer = KafkaConsumer(
            self.lane.input,
            bootstrap_servers=self.lane.stack.kafka,
            group_id=self.lane.group,
            auto_offset_reset="earliest",
            max_poll_interval_ms=10000,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        producer = KafkaProducer(bootstrap_servers=self.lane.stack.kafka)
        while not self.halt.is_set():
            for records in consumer.poll(200).values():
                for r in records:
                    doc_id = msgpack.unpackb(r.value)["id"]
                    source = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                    if doc_id == "missing":
                        continue
                    if doc_id == "dead":
                        headers = [
                            ("embed-dlq-reason", b"empty_text"),
                            ("embed-source-partition", str(r.partition).encode()),
                            ("embed-source-offset", str(r.offset).encode()),
                        ]
                        producer.send(
                            self.lane.dlq,
                            key=r.key,
                            value=r.value,
                            headers=headers,
                            timestamp_ms=r.timestamp + 5,
                        )
                        continue
                    out = msgpack.packb(
                        {"schema_version": 1, "op": "upsert", "id": doc_id, "source": source}
                    )
                    for _ in range(2 if doc_id == "dup" else 1):
                        producer.send(
                            self.lane.output,
                            key=r.key,
                            value=out,
                            timestamp_ms=r.timestamp + self.delays_ms[doc_id],
                        )
            producer.flush()
            consumer.commit()
        consumer.close()
        producer.close()


def test_measure_reports_known_delays_missing_duplicates_and_dead_letters(lane):
    docs = [{"id": f"k-{i}", "text": "x"} for i in range(200)] + [
        {"id": n, "text": "x"} for n in ("missing", "dead", "dup")
    ]
    delays = {f"k-{i}": (i % 100 + 1) * 10 for i in range(200)}  # 10 … 1000 ms, each twice
    delays["dup"] = 500
    echo = Echo(lane, delays)
    echo.start()
    settings = Settings(
        kafka=lane.kafka.model_copy(
            update={
                "input_topic": lane.input,
                "output_topic": lane.output,
                "dlq_topic": lane.dlq,
                "group_id": lane.group,
            }
        )
    )
    try:
        report = run_measured(
            settings, docs, label="echo", schedule=Schedule(100), settle_s=4, timeout_s=60
        )
    finally:
        echo.halt.set()
        echo.join(timeout=10)
    lat, counts = report["latency_s"], report["counts"]
    assert (lat["p50"], lat["p90"], lat["p99"], lat["max"]) == (0.5, 0.9, 0.99, 1.0)
    assert lat["count"] == 201
    assert counts["published"] == 203 and counts["outputs"] == 201
    assert (counts["dead_lettered"], counts["dead_letter_reasons"], counts["duplicates"]) == (
        1,
        {"empty_text": 1},
        1,
    )
    assert (counts["unanswered"], counts["missing_ids"], report["missing_sample"]) == (
        1,
        1,
        ["missing"],
    )
    assert report["lag"]["samples"], "lag was never sampled"


def test_measure_and_compare_commands_against_the_real_worker(lane, tmp_path):
    worker = lane.start_worker()
    try:
        cmd = [
            sys.executable,
            "-m",
            "loadgen",
            "measure",
            "--synthetic",
            "1000",
            "--lengths",
            "short",
            "--duplicates",
            "0.1",
            "--edits",
            "0.1",
            "--deletes",
            "0.05",
            "--seed",
            "7",
            "--rate",
            "50",
            "--duration",
            "6",
            "--settle",
            "10",
            "--report-dir",
            str(tmp_path),
            "--label",
            "base",
        ]
        proc = subprocess.run(cmd, env=lane.env(), capture_output=True, text=True, timeout=240)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "base" / "report.json").read_text())
    assert report["counts"]["published"] == 300 and report["counts"]["missing_ids"] == 0
    assert report["counts"]["duplicates"] == 0 and report["counts"]["outputs"] > 250
    assert report["latency_s"]["p50"] > 0 and report["throughput"]["docs_per_s"] > 0
    for chart in ("throughput.png", "lag.png", "latency.png"):
        assert (tmp_path / "base" / chart).stat().st_size > 5_000
    assert "latency" in proc.stdout and "ids missing: 0" in proc.stdout

    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "compare",
            str(tmp_path / "base" / "report.json"),
            str(tmp_path / "base" / "report.json"),
        ],
        env=lane.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cmp.returncode == 0 and "1.00x" in cmp.stdout
