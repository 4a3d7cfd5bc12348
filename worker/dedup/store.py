"""Dedup through Redis: skip documents already embedded with the same content and model.

One key per (model configuration, document id) holds the dedup value of the id's last acknowledged
output: the text's hash, the metadata's, and the message's long-text policy (``Document.dedup_value``).
Keying by id rather than by content means a document that changes A → B → A is embedded again on
the way back to A (a content-keyed mark for A would still be alive and would wrongly skip it).

The invariant the worker keeps with it: **a dedup hit is taken only when the last acknowledged
output for that id is an upsert of the same text, metadata and settings.** So a mark (or a delete's
removal of one) is written after the broker acknowledged the output and *before* the offset is
committed; ``mark`` says whether it was written, and one that was not holds its offset and its key
back until it is (``commit.strategy``): an old mark left in place would otherwise skip a later
version that matches it. Under exactly-once the marks a transaction replaces are cleared before it
commits (``clear``), and the new ones written after.

When Redis fails, the store stops calling it for a backoff (0.5 s doubling to 30 s) and tries again
after it, so a dead Redis costs no socket timeouts on the hot path and is picked up again by itself.
Meanwhile a lookup under ``on_error=open`` answers "not embedded" (the worker embeds without dedup)
and under ``on_error=closed`` raises ``DedupError`` (the worker holds those documents and pauses
consumption until Redis answers).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import cast

import redis

from worker.config import RedisSettings
from worker.consume.decode import Document
from worker.deadline import Backoff
from worker.dedup.keys import dedup_key
from worker.errors import ConfigError, DedupError

log = logging.getLogger(__name__)

# KEYS: the ids' keys; ARGV[1]: the TTL in ms; ARGV[i + 1]: the content value for KEYS[i], or ""
# to forget the id (a delete).
MARK_SCRIPT = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 1]
  if value == '' then redis.call('DEL', key) else redis.call('SET', key, value, 'PX', ttl) end
end
return #KEYS
"""


class DedupStore:
    def __init__(
        self,
        settings: RedisSettings,
        model_fingerprint: str,
        client: redis.Redis | None = None,
        retry: Backoff | None = None,
    ) -> None:
        self._ns = settings.namespace
        self._model = model_fingerprint
        self._ttl_ms = settings.ttl_s * 1000
        self._client = client or connect(settings)
        self._fail_closed = settings.on_error == "closed"
        # lookups and writes back off apart: a Redis that answers reads but refuses writes (READONLY
        # after a failover, OOM under noeviction) must not reset the writes' pacing at every lookup
        self._reads = retry or Backoff(0.5, 30.0)
        self._writes = self._reads.fresh()
        self._mark = self._client.register_script(MARK_SCRIPT)
        # an id is looked up, then marked a moment later: its key (a hash) is computed once
        self._keys = functools.lru_cache(maxsize=1 << 16)(
            functools.partial(dedup_key, self._ns, self._model)
        )
        self.errors = 0  # calls that failed
        self.unchecked = 0  # documents embedded without a lookup while Redis was down (fail-open)

    def ping(self) -> None:
        self._client.ping()

    def _key(self, doc_id: str) -> str:
        return self._keys(doc_id)

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        """For each upsert, whether the same content was already embedded with this model."""
        if not docs:
            return []
        if not self._reads.waiting():
            try:
                values = cast(  # bytes: the client does not decode responses
                    "list[bytes | None]", self._client.mget([self._key(d.id) for d in docs])
                )
            except redis.RedisError as exc:
                self._failed(self._reads, "lookup", exc)
            else:
                self._answered(self._reads, "lookups")
                return [v is not None and v.decode() == d.dedup_value for v, d in zip(values, docs)]
        if self._fail_closed:
            raise DedupError(
                f"Redis unavailable; retrying in {self._reads.remaining():.1f} s (EMBED_REDIS__ON_ERROR=closed)"
            )
        self.unchecked += len(docs)
        return [False] * len(docs)

    def mark(self, docs: Sequence[Document]) -> bool:
        """Record acknowledged upserts and forget deleted ids: one round trip and one command (a
        script), not a command per document, whose packing costs more than the call. False if
        nothing was written (Redis failed, or is in its backoff): the caller holds them and retries."""
        return self._write("mark", docs, ["" if d.op == "delete" else d.dedup_value for d in docs])

    def clear(self, docs: Sequence[Document]) -> bool:
        """Forget these ids (whatever their marks say); False if that could not be done."""
        return self._write("clear", docs, [""] * len(docs))

    def waiting(self) -> bool:
        """Within a backoff after a failed lookup or write: that is not tried again until it has passed."""
        return self._reads.waiting() or self._writes.waiting()

    def _write(self, what: str, docs: Sequence[Document], values: list[str]) -> bool:
        if not docs:
            return True
        if self._writes.waiting():
            return False
        try:
            self._mark(keys=[self._key(d.id) for d in docs], args=[self._ttl_ms, *values])
        except redis.RedisError as exc:
            self._failed(self._writes, what, exc)
            return False
        self._answered(self._writes, "marks")
        return True

    def _failed(self, backoff: Backoff, what: str, exc: Exception) -> None:
        """A lookup or write failed: it backs off. A connection that failed or timed out holds
        for the other too (it would fail the same way, after as long a wait)."""
        self.errors += 1
        first = backoff.failures == 0
        delay = backoff.failed()
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            other = self._writes if backoff is self._reads else self._reads
            if not other.waiting():
                other.failed()
        if first:
            if backoff is self._writes:
                then = "their offsets and keys are held"
            else:
                then = "pausing consumption" if self._fail_closed else "embedding without lookups"
            log.warning(
                "Redis %s failed (%s): %s until it answers; next try in %.1f s",
                what,
                type(exc).__name__,
                then,
                delay,
            )

    def _answered(self, backoff: Backoff, what: str) -> None:
        if backoff.succeeded():
            log.info("Redis answers %s again", what)

    def close(self) -> None:
        self._client.close()


def connect(settings: RedisSettings) -> redis.Redis:
    """A client from the URL, with the password, user and CA bundle given separately (if any)."""
    if settings.url is None:
        raise ConfigError(
            "invalid setting EMBED_REDIS__URL: unset, so there is no Redis to connect to"
        )
    extra = {}
    if settings.password is not None:
        extra["password"] = settings.password.get_secret_value()
    if settings.username:
        extra["username"] = settings.username
    if settings.ssl_ca_certs:
        extra["ssl_ca_certs"] = settings.ssl_ca_certs
    return redis.Redis.from_url(
        settings.url.get_secret_value(),
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        **extra,
    )


class NoDedup:
    """Used when Redis is not configured or dedup is turned off."""

    errors = 0
    unchecked = 0

    def ping(self) -> None:
        pass

    def already_embedded(self, docs: Sequence[Document]) -> list[bool]:
        return [False] * len(docs)

    def mark(self, docs: Sequence[Document]) -> bool:
        return True

    def clear(self, docs: Sequence[Document]) -> bool:
        return True

    def waiting(self) -> bool:
        return False

    def close(self) -> None:
        pass
