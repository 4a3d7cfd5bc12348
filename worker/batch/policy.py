"""Batching policy: which waiting documents form the next batch (pure, no Kafka, no torch).

A batch costs ``longest × count`` tokens, as a padded forward pass does (TEI's accounting), and holds
at most ``max_tokens`` of that cost and ``max_size`` documents.

The next batch is chosen when the model has room for it, from everything waiting then (TEI's
"build the next batch while the current one runs"): while the model is busy, documents keep
gathering, so a busy model is fed length-homogeneous batches drawn from a large pool, and an idle
one gets a batch as soon as a full one can be formed, or at the deadline (``max_wait_s`` after the
oldest waiting document arrived) with whatever waits. Once the oldest document is due, the next
batch is the one that holds it, so nothing waits much past its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum


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
    overhead_tokens: int | None = (
        None  # what one more batch costs in padded tokens (None: never split for padding)
    )

    def __post_init__(self) -> None:
        if (
            self.max_tokens <= 0
            or self.max_size <= 0
            or self.max_wait_s < 0
            or (self.overhead_tokens or 0) < 0
        ):
            raise ValueError(f"invalid batch limits: {self}")

    def capacity(self, longest: int) -> int:
        """Documents a batch whose longest has ``longest`` tokens can hold (at least one)."""
        return max(1, min(self.max_size, self.max_tokens // max(longest, 1)))


@dataclass(frozen=True, slots=True)
class Pick:
    """A batch chosen from the waiting lengths: ``take`` is (length, how many of the oldest documents
    of that length), shortest first."""

    take: tuple[tuple[int, int], ...]
    reason: FlushReason
    real_tokens: int
    padded_tokens: int

    @property
    def size(self) -> int:
        return sum(k for _, k in self.take)

    @property
    def full(self) -> bool:
        return self.reason in (FlushReason.TOKENS, FlushReason.SIZE)

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


@dataclass(frozen=True, slots=True)
class Cut:
    """One batch of ``sorted_batches``: positions into the lengths it was given, shortest first."""

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


def grown_budget(
    start: int, seconds_at: Callable[[int], float], *, within_s: float, ceiling: int = 16_384
) -> int:
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


def segments(lengths: Sequence[int], counts: Sequence[int], limits: BatchLimits) -> list[Pick]:
    """The waiting documents, given as a histogram (``lengths`` the distinct token lengths,
    ascending, ``counts`` how many wait at each), sorted and cut greedily from the shortest into
    batches within the limits. A batch is full (``TOKENS`` or ``SIZE``) when no document of any length
    could join it; one closed because the longer documents that follow do not fit beside it, and the
    last, are not (``DEADLINE``: documents as short as theirs may still come). With
    ``limits.overhead_tokens`` each batch is also ``split`` where more batches cost less than their
    padding (the parts are partial): the cuts then minimize the model's time under its measured cost,
    a fixed cost a pass plus one a padded token. Within one length the oldest documents come first.
    Cost: one pass over the distinct lengths plus one step per batch."""
    out: list[Pick] = []
    take: list[tuple[int, int]] = []
    size = real = longest = 0

    def close(reason: FlushReason) -> None:
        nonlocal take, size, real, longest
        parts = (
            [tuple(take)]
            if limits.overhead_tokens is None
            else split(tuple(take), limits.overhead_tokens)
        )
        if len(parts) == 1:
            out.append(Pick(parts[0], reason, real, longest * size))
        else:
            out.extend(_pick(part) for part in parts)
        take, size, real, longest = [], 0, 0, 0

    def closed() -> FlushReason:
        """Full (nothing of any length could join) or not (later documents as short could)."""
        if size < limits.capacity(longest):
            return FlushReason.DEADLINE
        return FlushReason.SIZE if size == limits.max_size else FlushReason.TOKENS

    for length, count in zip(lengths, counts):
        n = max(length, 1)
        while count:
            if size and limits.capacity(max(longest, n)) <= size:
                close(closed())  # the longer documents do not fit beside these
            longest = max(longest, n)
            k = min(count, limits.capacity(longest) - size)
            take.append((length, k))
            size, real, count = size + k, real + k * n, count - k
            if size == limits.capacity(longest):
                close(closed())
    if size:
        close(closed())
    return out


def split(
    take: tuple[tuple[int, int], ...], overhead_tokens: int
) -> list[tuple[tuple[int, int], ...]]:
    """One batch's (length, count) runs, shortest first, cut into length-homogeneous batches where
    that saves padding: padded to its longest, the batch costs ``top × count`` tokens; cut after the
    runs up to length ``l``, the shorter part costs ``l × its count`` instead, saving
    ``(top - l) × its count`` for one more batch (``overhead_tokens``). The cut that saves most is
    made while it saves more than the batch costs, and each part is looked at again. (On CPU a pass
    costs close to its padded tokens, so a few long documents are run apart from many short ones; on
    a GPU a pass costs a near-constant launch overhead, so they mostly stay together.)"""
    top = max(take[-1][0], 1)
    best, at, below = overhead_tokens, None, 0
    for i, (length, count) in enumerate(take[:-1]):
        below += count
        saved = (top - max(length, 1)) * below
        if saved > best:
            best, at = saved, i + 1
    if at is None:
        return [take]
    return split(take[:at], overhead_tokens) + split(take[at:], overhead_tokens)


def _pick(take: tuple[tuple[int, int], ...]) -> Pick:
    """A part split off a batch: partial (the documents split away could have joined it)."""
    size = sum(k for _, k in take)
    longest = max(max(n, 1) for n, _ in take)
    return Pick(take, FlushReason.DEADLINE, sum(max(n, 1) * k for n, k in take), longest * size)


def choose_batch(
    lengths: Sequence[int], counts: Sequence[int], anchor: int, limits: BatchLimits, *, due: bool
) -> Pick | None:
    """The next batch for a model with room, from the waiting histogram (see ``segments``);
    ``anchor`` is the index of the length of the oldest waiting document, ``due`` whether its
    deadline has passed. Due: the batch that holds it, full or not. Not due: the full batch with the
    least padding, if there is one (the oldest then waits at most until its deadline); else None,
    and the model waits for company up to the deadline."""
    cuts = segments(lengths, counts, limits)
    if due:
        first = sum(counts[:anchor])  # the anchor is the first (oldest) document of its length
        for cut in cuts:
            if first < cut.size:
                return cut
            first -= cut.size
    full = [c for c in cuts if c.full]
    return max(full, key=lambda c: c.padding_efficiency) if full else None


def sorted_batches(lengths: Sequence[int], limits: BatchLimits) -> list[Cut]:
    """Every document at once, sorted by length and cut greedily into batches within the limits:
    the best a batcher that could see all documents in advance does (the raw-forward benchmark's
    reference)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cuts: list[Cut] = []
    batch: list[int] = []
    longest = 0

    def close(reason: FlushReason) -> None:
        nonlocal batch, longest
        cuts.append(
            Cut(tuple(batch), reason, sum(max(lengths[i], 1) for i in batch), longest * len(batch))
        )
        batch, longest = [], 0

    for i in order:
        n = max(lengths[i], 1)
        if batch and max(longest, n) * (len(batch) + 1) > limits.max_tokens:
            close(FlushReason.TOKENS)
        batch.append(i)
        longest = max(longest, n)
        if len(batch) == limits.max_size:
            close(FlushReason.SIZE)
    if batch:
        close(FlushReason.DRAIN)
    return cuts
