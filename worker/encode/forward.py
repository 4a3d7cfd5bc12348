"""The forward step: one batch through the encoder, recovering from model failures.

Runs on the forward stage's thread(s). Out of accelerator memory, the cache is freed and each half
is retried, down to single documents; any other model error retries documents one at a time. Each
forward pass that succeeds, the whole batch or a part retried, is kept as a ``Pass`` (what the
batch metrics count), and every split in half is counted (``oom_splits``). A
document that fails alone is handed back as failed, with its reason, to be dead-lettered: nothing
is dropped and nothing is committed unpublished. A batch whose vectors are not finite (an fp16
overflow, say) fails like any other model error, so no NaN vector is ever published.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from worker.batch.policy import padded_cost
from worker.batch.waiting import Batch
from worker.consume.decode import Document, Reason
from worker.encode.base import Encoder, is_out_of_memory

log = logging.getLogger(__name__)


class NonFiniteVectorError(ValueError):
    """The model produced NaN or infinite values."""


@dataclass(slots=True)
class Failed:
    doc: Document
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Pass:
    """One forward pass that produced vectors: rows, their tokens without padding, the padded
    tensor's tokens (rows × longest), and its time."""

    size: int
    tokens: int
    padded_tokens: int
    seconds: float

    @property
    def padding_efficiency(self) -> float:
        return self.tokens / self.padded_tokens if self.padded_tokens else 1.0


@dataclass(slots=True)
class Encoded:
    """What came out of one batch: vectors per part that succeeded, and documents that never did."""

    batch: Batch
    parts: list[tuple[list[Document], np.ndarray]] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    forward_s: float = 0.0  # the first, whole-batch attempt (the batch latency), recovery excluded
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_splits: int = 0  # batches (or parts) split in half after running out of accelerator memory
    passes: list[Pass] = field(
        default_factory=list
    )  # the successful forward passes, whole batch or parts

    @property
    def docs(self) -> list[Document]:
        return [d for docs, _ in self.parts for d in docs]


def _encode(encoder: Encoder, docs: list[Document]) -> np.ndarray:
    # the batch's upserts are tokenized (token_ids set) before they are batched
    vectors = encoder.encode(cast("list[list[int]]", [d.token_ids for d in docs]))
    if not np.isfinite(vectors).all():
        raise NonFiniteVectorError("the model produced non-finite values")
    return vectors


def forward(encoder: Encoder, batch: Batch) -> Encoded:
    """Vectors for the batch's upserts (deletes pass the forward step by)."""
    out = Encoded(batch)
    docs = [d for d in batch.docs if d.op == "upsert"]
    if not docs:
        return out
    started = time.monotonic()
    vectors, failure = _attempt(encoder, docs)
    out.forward_s = time.monotonic() - started
    if failure is not None:  # a model failure must not take the fleet down
        _recover(encoder, docs, failure, out)
        return out
    assert vectors is not None  # no failure: _attempt returned the vectors
    out.padded_tokens = batch.cut.padded_tokens
    out.real_tokens = sum(d.n_tokens for d in docs)
    out.parts.append((docs, vectors))
    out.passes.append(Pass(len(docs), out.real_tokens, out.padded_tokens, out.forward_s))
    return out


def _attempt(
    encoder: Encoder, docs: list[Document]
) -> tuple[np.ndarray | None, tuple[bool, str] | None]:
    """(vectors, None), or (None, (out of memory?, what failed)). The exception is not kept: its
    traceback holds the failed pass's tensors, and a retry must find that memory free."""
    try:
        return _encode(encoder, docs), None
    except Exception as exc:
        return None, (is_out_of_memory(exc), f"{type(exc).__name__}: {exc}"[:300])


def _recover(
    encoder: Encoder, docs: list[Document], failure: tuple[bool, str], out: Encoded
) -> None:
    oom, detail = failure
    if oom:
        getattr(encoder, "free_memory", lambda: None)()
    if len(docs) == 1:  # a document alone is not split: it is dead-lettered
        out.failed.append(
            Failed(docs[0], Reason.OUT_OF_MEMORY if oom else Reason.ENCODE_FAILED, detail)
        )
        return
    if oom:
        out.oom_splits += 1
    parts = [docs[: len(docs) // 2], docs[len(docs) // 2 :]] if oom else [[d] for d in docs]
    log.warning(
        "batch of %d failed in the model (%s); retrying as %d parts",
        len(docs),
        detail.split(":")[0],
        len(parts),
    )
    for part in parts:
        started = time.monotonic()
        vectors, again = _attempt(encoder, part)
        took = time.monotonic() - started
        if again is not None:
            _recover(encoder, part, again, out)
            continue
        assert vectors is not None  # no failure: _attempt returned the vectors
        padded, tokens = padded_cost([d.n_tokens for d in part]), sum(d.n_tokens for d in part)
        out.padded_tokens += padded
        out.real_tokens += tokens
        out.parts.append((part, vectors))
        out.passes.append(Pass(len(part), tokens, padded, took))
