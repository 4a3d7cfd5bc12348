"""Start-up measurements of the model that tune batching: warm-up at the token budget, the budget
itself for a fast model, and what one more batch costs in padded tokens.

All of it goes through the encoder interface (``encode`` of token ids): nothing here imports torch.
"""

from __future__ import annotations

import logging
import time

from worker.batch.policy import default_max_tokens, grown_budget
from worker.config import Settings
from worker.errors import ModelLoadError

log = logging.getLogger(__name__)

FAST_BATCH_S = (
    0.05  # an unset CPU budget grows while a full batch runs within this (``grown_budget``)
)
PROBE_TOKENS = 32  # row length of the overhead probe: a short document, where the fixed cost shows
CPU_SLOPE_TOKENS = (
    512  # the overhead probe's many-row pass on CPU (a token costs the same from ~16 rows)
)
REPEATS = 3  # timings per probe; the fastest is kept (a shared machine only ever adds time)


def _rows(encoder, max_tokens: int, length: int | None = None) -> list[list[int]]:
    """Rows of ``length`` tokens (default: the model's full length), as many as the budget holds."""
    ids = encoder.tokenize(["warm up " * encoder.info.max_length])[0]
    if length is not None:
        ids = ids[: max(2, length)]
    return [ids] * max(1, max_tokens // len(ids))


def warm_up(encoder, max_tokens: int) -> None:
    """One forward pass at the full token budget: a budget that does not fit fails now, not later."""
    rows = _rows(encoder, max_tokens)
    try:
        encoder.encode(rows)
    except Exception as exc:
        raise ModelLoadError(
            f"warm-up at the full token budget ({len(rows)} × {len(rows[0])} tokens) failed: {type(exc).__name__}: {exc}; "
            "lower EMBED_BATCH__MAX_TOKENS"
        ) from exc


def _seconds(encoder, rows: list[list[int]], repeats: int = 1, *, warmed: bool = False) -> float:
    """The fastest of ``repeats`` timed passes over ``rows``, after one untimed pass at that shape
    (unless one just ran: ``warmed``)."""
    if not warmed:
        encoder.encode(rows)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.encode(rows)
        best = min(best, time.perf_counter() - started)
    return best


def batch_seconds(encoder, max_tokens: int, *, warmed: bool = False) -> float:
    """How long a batch of full-length rows filling ``max_tokens`` takes (``warmed``: ``warm_up``
    just ran that batch)."""
    return _seconds(encoder, _rows(encoder, max_tokens), warmed=warmed)


def token_budget(settings: Settings, encoder) -> int:
    """The batch token budget: the setting; unset, the device's default, which on CPU grows for a
    model fast enough that a batch's fixed cost outweighs its tokens (a full batch still runs
    within ``FAST_BATCH_S``). Warmed up at the budget either way."""
    info = encoder.info
    device = info.device.split(":")[0]
    budget = settings.batch.max_tokens or default_max_tokens(device, info.max_length)
    warm_up(encoder, budget)
    if settings.batch.max_tokens is None and device == "cpu":
        start = budget
        grown = grown_budget(
            budget,
            lambda tokens: batch_seconds(encoder, tokens, warmed=tokens == start),
            within_s=FAST_BATCH_S,
        )
        if grown != budget:
            log.info(
                "a fast model: the batch token budget grows from %d to %d (a full batch runs within %.0f ms)",
                budget,
                grown,
                FAST_BATCH_S * 1000,
            )
            budget = grown
    return budget


def batch_overhead_tokens(encoder, max_tokens: int) -> int:
    """What one more batch costs, in padded tokens: the fixed time of a pass (launches, Python in the
    model's modules) over the time a padded token adds, from one short row and a budget's worth of
    them. The batching policy splits a set of documents into more batches only where that saves more
    padding than this (``batch.policy.split``). On CPU, where a token costs the same from ~16 rows
    on, the many-row pass holds ``CPU_SLOPE_TOKENS`` at most, not the whole budget (a one-thread
    replica takes ~0.5 s over 2,048 tokens of all-MiniLM-L6-v2)."""
    one = _seconds(encoder, _rows(encoder, PROBE_TOKENS, PROBE_TOKENS)[:1], REPEATS)
    cpu = encoder.info.device.split(":")[0] == "cpu"
    rows = _rows(encoder, min(max_tokens, CPU_SLOPE_TOKENS) if cpu else max_tokens, PROBE_TOKENS)
    full = _seconds(encoder, rows, REPEATS)
    tokens = len(rows) * len(rows[0])
    per_token = max(full - one, 1e-9) / max(tokens - len(rows[0]), 1)
    overhead = max(0, round((one - len(rows[0]) * per_token) / per_token))
    log.info(
        "one more batch costs as much as %d padded tokens (%.1f ms fixed, %.2f µs a token)",
        overhead,
        one * 1000,
        per_token * 1e6,
    )
    return overhead
