"""Serialize outputs and hand them to the producer; each comes back as a ``Delivery`` to checkpoint.

``publish`` runs on the publish stage's thread (the producer is thread-safe); deletes and dead
letters are sent from the main loop. Nothing here waits for the broker: each message's outcome
comes back through its delivery's callback, and the checkpoint resolves them. Whole documents are
serialized a batch at a time (``codec.vector_messages``). The chunks of a document are gathered here
(its ``Chunked``) and sent together, in chunk order, once the last one has its vector: one delivery
for the whole document, or one dead letter of the original if any chunk failed. A document of several
messages is all or nothing on the output topic: every message's size is checked against
``EMBED_KAFKA__MAX_MESSAGE_BYTES`` before the first is produced, and one too large dead-letters the
document with nothing of it sent. A send the producer
refuses (a full queue past its timeout, no metadata) fails its delivery: the loop backs off and reads
everything again from the commit, as after a broker outage; an output too large to send is
dead-lettered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from worker.commit.checkpoint import Checkpoint, Delivery
from worker.config import Settings
from worker.consume.decode import Document, Reason, Rejection, reject_document
from worker.encode.base import ModelInfo
from worker.encode.chunking import Chunked, mean_vector
from worker.encode.forward import Encoded
from worker.errors import MessageTooLargeError, PublishError, TransportError
from worker.publish import codec

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
_ABANDONED = -1  # an epoch no partition has: the outcomes of an abandoned delivery are ignored


@dataclass(slots=True)
class Sent:
    """One batch handed to the producer: its deliveries, and the reasons of any dead letters."""

    encoded: Encoded
    deliveries: list[Delivery] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    publish_s: float = 0.0


class Sender:
    def __init__(
        self, producer, checkpoint: Checkpoint, info: ModelInfo, settings: Settings
    ) -> None:
        self._producer = producer
        self._checkpoint = checkpoint
        self._info = info
        self._topic = settings.kafka.output_topic
        self._dlq = settings.kafka.dlq_topic
        self._dtype = settings.output.vector_dtype
        self._tombstones = settings.output.tombstones
        self._document_vector = settings.long_text.document_vector
        self._max_bytes = settings.kafka.max_message_bytes

    def publish(self, encoded: Encoded) -> Sent:
        """Send a vector message per embedded document and a dead letter per failed one."""
        started = time.monotonic()
        sent = Sent(encoded)
        now_ms = int(time.time() * 1000)
        for docs, vectors in encoded.parts:
            whole = [i for i, d in enumerate(docs) if d.group is None]
            if whole:
                wdocs = [docs[i] for i in whole]
                rows = vectors if len(whole) == len(docs) else vectors[whole]
                for d, msg in zip(
                    wdocs, codec.vector_messages(wdocs, rows, self._info, self._dtype, now_ms)
                ):
                    self._send(sent, d, [msg])
            if len(whole) < len(docs):
                for d, v in zip(docs, vectors):
                    if d.group is not None and d.group.resolve(d.chunk, v):
                        self._send_chunks(sent, d.group, now_ms)
            for d in docs:
                d.token_ids, d.text, d.raw = (
                    None,
                    "",
                    (None, None),
                )  # free memory; the content hash stays
        for f in encoded.failed:
            if f.doc.group is None:
                self._fail(sent, f.doc, f.reason, f.detail)
            elif f.doc.group.resolve(f.doc.chunk, failure=(f.reason, f.detail)):
                self._send_chunks(sent, f.doc.group, now_ms)
        sent.publish_s = time.monotonic() - started
        return sent

    def _send_chunks(self, sent: Sent, group: Chunked, now_ms: int) -> None:
        doc = group.doc
        if group.failure is not None:
            reason, detail = group.failure
            self._fail(sent, doc, reason, f"chunk failed: {detail}")
            return
        vectors = cast("list[np.ndarray]", group.vectors)  # no chunk failed: each has its vector
        msgs = [
            codec.vector_message(
                doc, v, self._info, self._dtype, now_ms, chunk=n, chunks=group.count
            )
            for n, v in enumerate(vectors)
        ]
        if self._document_vector:
            whole = mean_vector(vectors, self._info.normalize)
            msgs.append(
                codec.vector_message(
                    doc, whole, self._info, self._dtype, now_ms, chunks=group.count
                )
            )
        self._send(sent, doc, msgs)
        doc.raw, group.vectors = (None, None), []

    def _send(self, sent: Sent, doc: Document, msgs: list[codec.OutMessage]) -> None:
        """One delivery for a document's messages; too large a message dead-letters the document
        (checked for all of them first when there are several: none is sent then)."""
        if len(msgs) > 1:
            sizes = [codec.wire_size(m) for m in msgs]
            if max(sizes) > self._max_bytes:
                n = max(range(len(msgs)), key=sizes.__getitem__)
                self._fail(
                    sent,
                    doc,
                    Reason.OUTPUT_TOO_LARGE,
                    f"message {n + 1} of {len(msgs)} would be about {sizes[n]} bytes; EMBED_KAFKA__MAX_MESSAGE_BYTES is {self._max_bytes}",
                )
                return
        d = self._produce(self._checkpoint.delivery(doc.source, doc), self._topic, msgs)
        if d is None:
            self._fail(
                sent,
                doc,
                Reason.OUTPUT_TOO_LARGE,
                "a vector message exceeds EMBED_KAFKA__MAX_MESSAGE_BYTES",
            )
            return
        sent.deliveries.append(d)

    def _produce(self, d: Delivery, topic: str, msgs: list[codec.OutMessage]) -> Delivery | None:
        """Produce ``msgs`` as delivery ``d``; None (``d`` abandoned) if one is too large to send."""
        d.pending = len(msgs)
        produce, done = self._producer.produce, d.on_delivery
        try:
            for m in msgs:
                produce(topic, m.key, m.value, m.headers, done)
        except MessageTooLargeError:
            d.epoch = _ABANDONED
            return None
        except (
            TransportError
        ) as exc:  # the delivery fails; the loop redoes everything from the commit
            done(exc)
        return d

    def _fail(self, sent: Sent, doc: Document, reason: str, detail: str) -> None:
        sent.deliveries.append(self.dead_letter(reject_document(doc, reason, detail), doc))
        sent.dead_letters.append(reason)

    def delete(self, doc: Document) -> Delivery:
        msgs = codec.delete_messages(
            doc, self._info, int(time.time() * 1000), tombstone=self._tombstones
        )
        d = self._produce(self._checkpoint.delivery(doc.source, doc), self._topic, msgs)
        if d is None:
            return self.dead_letter(
                reject_document(
                    doc,
                    Reason.OUTPUT_TOO_LARGE,
                    "the delete event exceeds EMBED_KAFKA__MAX_MESSAGE_BYTES",
                ),
                doc,
            )
        return d

    def dead_letter(self, rej: Rejection, doc: Document | None = None) -> Delivery:
        src = rej.source
        log.warning(
            "dead-lettering %s:%d@%d: %s (%s)",
            src.topic,
            src.partition,
            src.offset,
            rej.reason,
            rej.detail,
        )
        d = self._produce(
            self._checkpoint.delivery(src, doc, mark=False), self._dlq, [codec.dead_letter(rej)]
        )
        if d is None:  # the original does not fit a message: send where it is, without it
            d = self._produce(
                self._checkpoint.delivery(src, doc, mark=False),
                self._dlq,
                [codec.dead_letter(rej, keep_value=False)],
            )
            if d is None:  # the key and headers alone are over the limit
                raise PublishError(
                    f"the dead letter of {src.topic}:{src.partition}@{src.offset} exceeds "
                    f"EMBED_KAFKA__MAX_MESSAGE_BYTES even without the original value "
                    f"(its key is {len(rej.key or b'')} bytes)"
                )
        return d
