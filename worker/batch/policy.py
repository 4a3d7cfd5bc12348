"""Batching policy: which waiting documents form the next batches (pure, no Kafka, no torch).

A batch costs ``longest × count`` tokens, as a padded forward pass does (TEI's accounting). Waiting
documents are sorted by length so each batch holds documents of similar length and padding stays low.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence


class FlushReason(str, Enum):
    TOKENS = "token_budget"
    SIZE = "size"
    DEADLINE = "deadline"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_tokens: int
    max_size: int
    max_wait_s: float
    lookahead: int = 4  # batches' worth of documents sorted together before full batches are cut

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or self.max_size <= 0 or self.max_wait_s < 0 or self.lookahead < 1:
            raise ValueError(f"invalid batch limits: {self}")


@dataclass(frozen=True, slots=True)
class Cut:
    """One batch: positions into the lengths given to ``cut_batches``, shortest first."""

    indices: tuple[int, ...]
    reason: FlushReason
    real_tokens: int
    padded_tokens: int

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


def default_max_tokens(device_type: str, max_length: int) -> int:
    """Token budget when none is set: TEI's 16384 on accelerators, 2048 on CPU, never below one
    full-length document."""
    return max(16_384 if device_type == "cuda" else 2_048, max_length)


def grown_budget(start: int, seconds_at: Callable[[int], float], *, within_s: float, ceiling: int = 16_384) -> int:
    """A token budget for a model fast enough that a batch's fixed cost (Python in the model's
    modules, a few ms) outweighs its tokens: ``start`` doubled while a full batch at the doubled
    budget still runs within ``within_s`` (``seconds_at(tokens)`` measures one), up to ``ceiling``.
    A doubling is tried only if twice the last measured time fits, so a slow model is timed once."""
    budget, seconds = start, seconds_at(start)
    while budget * 2 <= ceiling and seconds * 2 <= within_s:
        seconds = seconds_at(budget * 2)
        if seconds > within_s:
            break
        budget *= 2
    return budget


def padded_cost(lengths: Sequence[int]) -> int:
    """Tokens a padded batch of these lengths costs: longest × count (an empty document costs one)."""
    return max((max(n, 1) for n in lengths), default=0) * len(lengths)


def cut_batches(lengths: Sequence[int], oldest_wait_s: float, limits: BatchLimits, *, drain: bool = False) -> list[Cut]:
    """Cut the waiting documents (given by token length) into batches to run now.

    Before the oldest document's deadline (``max_wait_s``), batches are cut only once a look-ahead
    window of ``lookahead`` full batches is waiting, so that sorting has enough documents to group
    similar lengths; then the full batches run and the last, partly filled one keeps waiting for
    company. At the deadline (or when draining) everything waiting runs.
    """
    expired = drain or oldest_wait_s >= limits.max_wait_s
    if not expired and not _window_full(lengths, limits):
        return []
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cuts: list[Cut] = []
    batch: list[int] = []
    longest = 0

    def close(reason: FlushReason) -> None:
        nonlocal batch, longest
        real = sum(lengths[i] for i in batch)
        cuts.append(Cut(tuple(batch), reason, real, longest * len(batch)))
        batch, longest = [], 0

    for i in order:
        n = max(lengths[i], 1)
        if batch and max(longest, n) * (len(batch) + 1) > limits.max_tokens:
            close(FlushReason.TOKENS)
        batch.append(i)
        longest = max(longest, n)
        if len(batch) == limits.max_size:
            close(FlushReason.SIZE)

    if batch and longest * (len(batch) + 1) > limits.max_tokens:
        close(FlushReason.TOKENS)  # full already: no document of any length could join it
    if batch and expired:
        close(FlushReason.DRAIN if drain else FlushReason.DEADLINE)
    return cuts


def _window_full(lengths: Sequence[int], limits: BatchLimits) -> bool:
    if len(lengths) >= limits.lookahead * limits.max_size:
        return True
    return sum(max(n, 1) for n in lengths) >= limits.lookahead * limits.max_tokens
