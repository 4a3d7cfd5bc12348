"""Long-text policy: what a document longer than the model's window becomes (the tokenize stage).

- ``truncate`` keeps the first tokens that fit, ``truncate_left`` the last ones;
- ``reject`` dead-letters the document (``text_too_long``);
- ``chunk`` cuts its tokens into windows of ``chunk_tokens`` that overlap by ``chunk_overlap``.
  Each window becomes a row of its own (special tokens added back), batched like any document.
  The rows share one ``Chunked``, where the publish stage gathers their vectors: a document's
  messages go out together, once every chunk has its vector, so its offset is committed only
  after all of them. A document that would need more than ``max_chunks`` windows is dead-lettered,
  never cut short.

Characters are capped before tokenizing (``CHARS_PER_TOKEN_CAP`` per token the policy can use), so a
huge text cannot stall the tokenizer; under ``reject`` and ``chunk`` a text longer than the cap is
dead-lettered instead of silently shortened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.config import LongTextSettings
from worker.consume.decode import Document, Reason
from worker.errors import ConfigError

# Characters kept per usable token before tokenizing (TEI keeps 250 per token): no real tokenizer
# needs that many characters for one token, so truncation is unchanged by the cap.
CHARS_PER_TOKEN_CAP = 250


@dataclass(frozen=True, slots=True)
class TextLimits:
    window: int  # tokens of text one row holds: the model's max length less its special tokens
    chunk_tokens: int
    overlap: int
    max_chunks: int
    policy: str  # the worker's default; a message's ``long_text`` overrides it

    @classmethod
    def build(cls, settings: LongTextSettings, max_length: int, specials: int) -> TextLimits:
        window = max_length - specials
        size = settings.chunk_tokens or window
        if size > window:
            raise ConfigError(
                f"invalid setting EMBED_LONG_TEXT__CHUNK_TOKENS: {size} does not fit the model's window of {window} tokens "
                f"({max_length} less {specials} special tokens)"
            )
        overlap = size // 8 if settings.chunk_overlap is None else settings.chunk_overlap
        if overlap >= size:
            raise ConfigError(
                f"invalid setting EMBED_LONG_TEXT__CHUNK_OVERLAP: {overlap} must be below the chunk size {size}"
            )
        return cls(window, size, overlap, settings.max_chunks, settings.policy)

    def char_cap(self, policy: str) -> int:
        """Characters of a text kept (or, for reject and chunk, allowed) before tokenizing."""
        if policy == "chunk":
            return (
                self.max_chunks * (self.chunk_tokens - self.overlap) + self.overlap
            ) * CHARS_PER_TOKEN_CAP
        return self.window * CHARS_PER_TOKEN_CAP


def windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of the chunks of an ``n``-token text: ``size`` long, each starting
    ``size - overlap`` after the one before, the last ending at ``n``."""
    if n <= size:
        return [(0, n)]
    stride = size - overlap
    out, start = [], 0
    while True:
        end = min(start + size, n)
        out.append((start, end))
        if end == n:
            return out
        start += stride


@dataclass(slots=True)
class Chunked:
    """The chunks of one document on their way through the pipeline (touched by the publish thread only)."""

    doc: Document
    vectors: list[np.ndarray | None]
    remaining: int
    failure: tuple[str, str] | None = None

    @property
    def count(self) -> int:
        return len(self.vectors)

    def resolve(
        self, chunk: int, vector: np.ndarray | None = None, failure: tuple[str, str] | None = None
    ) -> bool:
        """Record one chunk's vector (or why it failed); True once every chunk is in."""
        self.vectors[chunk] = vector
        if failure is not None and self.failure is None:
            self.failure = failure
        self.remaining -= 1
        return self.remaining == 0


def chunk_rows(doc: Document, body: Sequence[int], limits: TextLimits, wrap) -> list[Document]:
    """The rows of a document under ``chunk``: one per window, special tokens added back by ``wrap``."""
    spans = windows(len(body), limits.chunk_tokens, limits.overlap)
    group = Chunked(doc, [None] * len(spans), len(spans))
    return [
        Document(
            doc.id,
            "",
            "upsert",
            doc.metadata,
            doc.source,
            doc.content_hash,
            token_ids=wrap(body[start:end]),
            long_text=doc.long_text,
            chunk=n,
            group=group,
            epoch=doc.epoch,
        )
        for n, (start, end) in enumerate(spans)
    ]


def prepare(encoder, docs: list[Document], limits: TextLimits) -> list[Document]:
    """The rows to batch for these documents, in order: deletes as they are, each upsert as one
    tokenized row, or as its chunks; a document the policy turns away comes back with ``rejected``."""
    policies = [d.long_text or limits.policy for d in docs]
    head = [d for d, p in zip(docs, policies) if d.op == "upsert" and p == "truncate"]
    for d, ids in zip(
        head, encoder.tokenize([d.text for d in head])
    ):  # the common case: one call, truncated by the tokenizer
        d.token_ids = ids
    bodies = _bodies(encoder, docs, policies, limits)
    out: list[Document] = []
    for i, (d, policy) in enumerate(zip(docs, policies)):
        body = bodies.get(i)
        if body is None:  # a delete, a truncated upsert, or one rejected for its length already
            out.append(d)
        elif policy == "truncate_left":
            d.token_ids = encoder.wrap(body[-limits.window :])
            out.append(d)
        elif policy == "reject":
            if len(body) > limits.window:
                d.rejected = (
                    Reason.TEXT_TOO_LONG,
                    f"{len(body)} tokens; the model takes {limits.window} (long_text=reject)",
                )
            else:
                d.token_ids = encoder.wrap(body)
            out.append(d)
        elif (
            len(spans := windows(len(body), limits.chunk_tokens, limits.overlap))
            > limits.max_chunks
        ):
            d.rejected = (
                Reason.TEXT_TOO_LONG,
                f"{len(body)} tokens make {len(spans)} chunks; at most {limits.max_chunks} (EMBED_LONG_TEXT__MAX_CHUNKS)",
            )
            out.append(d)
        else:
            out.extend(chunk_rows(d, body, limits, encoder.wrap))
            d.text = ""  # the rows carry the tokens; the original bytes stay for a dead letter
    return out


def _bodies(
    encoder, docs: list[Document], policies: list[str], limits: TextLimits
) -> dict[int, list[int]]:
    """Token ids (no special tokens, not truncated) of the texts the policy needs whole, by position;
    one tokenizer call per side. Too long a text under reject or chunk is rejected here."""
    wanted: dict[bool, list[tuple[int, str]]] = {False: [], True: []}
    for i, (d, policy) in enumerate(zip(docs, policies)):
        if d.op != "upsert" or policy == "truncate":
            continue
        text, cap = d.text.strip(), limits.char_cap(policy)
        if policy == "truncate_left":
            wanted[True].append((i, text[-cap:]))
        elif len(text) > cap:
            d.rejected = (
                Reason.TEXT_TOO_LONG,
                f"text of {len(text)} characters; at most {cap} with long_text={policy}",
            )
        else:
            wanted[False].append((i, text))
    bodies: dict[int, list[int]] = {}
    for items in wanted.values():
        if items:
            bodies.update(zip((i for i, _ in items), encoder.body([t for _, t in items])))
    return bodies


def mean_vector(vectors: Sequence[np.ndarray], normalize: bool) -> np.ndarray:
    """The document-level vector: the mean of its chunk vectors, L2-normalized if the model's are."""
    mean = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    if normalize:
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return mean
