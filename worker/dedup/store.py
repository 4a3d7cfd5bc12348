"""Dedup through Redis: skip documents already embedded with the same content and model.

One key per (model configuration, document id) holds the content hash last embedded and
acknowledged. Keying by id rather than by content means a document that changes A → B → A is
embedded again on the way back to A (a content-keyed mark for A would still be alive and would
wrongly skip it). The mark is written only after the broker acknowledged the vector, with a TTL.
Redis failures fail open: the worker keeps embedding (at-least-once) and counts the error.
"""

from __future__ import annotations

import logging
from typing import Sequence

import redis

from worker.config import RedisSettings
from worker.consume.decode import Document
from worker.dedup.keys import dedup_key

log = logging.getLogger(__name__)


class DedupStore:
    def __init__(self, settings: RedisSettings, model_fingerprint: str, client: redis.Redis | None = None) -> None:
        self._ns = settings.namespace
        self._model = model_fingerprint
        self._ttl_ms = settings.ttl_s * 1000
        url = settings.url.get_secret_value() if settings.url else None
        self._client = client or redis.Redis.from_url(url, socket_timeout=settings.timeout_s, socket_connect_timeout=settings.timeout_s)
        self.errors = 0

    def ping(self) -> None:
        self._client.ping()

    def _key(self, doc_id: str) -> str:
        return dedup_key(self._ns, self._model, doc_id)

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        """For each upsert, whether the same content was already embedded with this model."""
        if not docs:
            return []
        try:
            values = self._client.mget([self._key(d.id) for d in docs])
        except redis.RedisError as exc:
            self._failed("lookup", exc)
            return [False] * len(docs)
        return [v is not None and v.decode() == d.content_hash for v, d in zip(values, docs)]

    def mark(self, docs: Sequence[Document]) -> None:
        """Record acknowledged embeddings (upserts) and forget deleted ids, in one round trip."""
        if not docs:
            return
        pipe = self._client.pipeline(transaction=False)
        for d in docs:
            if d.op == "delete":
                pipe.delete(self._key(d.id))
            else:
                pipe.set(self._key(d.id), d.content_hash, px=self._ttl_ms)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._failed("mark", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        log.warning("dedup %s failed, embedding without dedup (at-least-once): %s", what, type(exc).__name__)

    def close(self) -> None:
        self._client.close()


class NoDedup:
    """Used when Redis is not configured or dedup is turned off."""

    errors = 0

    def ping(self) -> None:
        pass

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        return [False] * len(docs)

    def mark(self, docs: Sequence[Document]) -> None:
        pass

    def close(self) -> None:
        pass
