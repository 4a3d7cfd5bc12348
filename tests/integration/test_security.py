"""Redis AUTH against a real redis-server that requires a password, and secrets kept out of logs."""

from __future__ import annotations

import subprocess

import pytest

from worker.config import RedisSettings
from worker.consume.decode import Document, Source, content_hash
from worker.dedup.store import DedupStore
from worker.stack.devstack import free_port, redis_binary, wait_for_port

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-Redis-pw"


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory):
    port = free_port()
    work = tmp_path_factory.mktemp("auth-redis")
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(work),
            "--requirepass",
            PASSWORD,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, "redis-server", proc)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def doc(i):
    return Document(f"d{i}", "text", "upsert", None, Source("in", 0, i, 0), content_hash("text"))


def test_the_password_setting_authenticates_and_a_missing_one_fails_open(auth_redis):
    ok = DedupStore(RedisSettings(url=auth_redis, password=PASSWORD), "fp")
    ok.mark([doc(1)])
    assert ok.already_embedded([doc(1), doc(2)]) == [True, False] and ok.errors == 0
    anonymous = DedupStore(RedisSettings(url=auth_redis), "fp")
    assert anonymous.already_embedded([doc(1)]) == [False]  # refused: fails open, counted
    assert anonymous.errors == 1 and anonymous.unchecked == 1


def test_the_worker_dedups_through_an_authenticated_redis_and_never_logs_the_password(
    lane, auth_redis
):
    docs = [{"id": f"s{i}", "text": f"secure document number {i}"} for i in range(20)]
    lane.publish(docs)
    env = {
        "EMBED_REDIS__URL": auth_redis,
        "EMBED_REDIS__PASSWORD": PASSWORD,
        "EMBED_LOG_LEVEL": "DEBUG",
    }
    first = lane.run_worker(**env)
    lane.publish(docs)  # the same documents again: all found in Redis
    second, stderr = lane.run_worker(with_stderr=True, **env)
    assert first["embedded"] == 20 and second["dedup_hits"] == 20 and second["embedded"] == 0
    assert PASSWORD not in stderr and "run summary" in stderr
