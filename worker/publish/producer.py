"""The transactional id of a worker process (exactly-once): unique per process, stable across its restarts."""

from __future__ import annotations

import socket

from worker.config import KafkaSettings


def transactional_id(settings: KafkaSettings) -> str:
    return (
        settings.transactional_id
        or f"{settings.group_id}-{socket.gethostname()}-{settings.client_id}"
    )
