"""The Kafka transport the worker sees: one small interface, two clients behind it.

Nothing above ``worker.transport`` imports a Kafka client. The contract both implementations keep:

- ``Consumer.consume`` returns a batch of records (tuples in ``Record``'s field order); assignment
  changes are reported to the ``Rebalance`` listener *inside* ``consume``, on the calling thread, before any record of the
  new assignment is returned. A newly assigned partition starts at the group's committed offset
  (or the reset policy's end when none was committed).
- ``Producer.produce`` never waits for the broker: the outcome of each message comes back through
  its ``on_delivery`` callback, first argument ``None`` for success, else an object describing the
  failure (the client's own error: no wrapper is built per message on this hot path); it may run on
  any thread; ``poll`` and ``flush`` serve callbacks where the client needs it.
- ``Reader`` reads whole topics outside any group (the load generator, the fault lab, the demo and
  the tests check what the worker wrote through it), and ``Producer.send`` reports where each
  message landed: tools see partitions and offsets without importing a client either.
- Every client error becomes a ``TransportError`` subclass (``worker.errors``), so the loop reasons
  about "rejected by a rebalance", "too large", "fatal" and "try again" without knowing the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

TopicPartitionKey = tuple[str, int]
Offsets = dict[TopicPartitionKey, int]  # partition -> the next offset to read
OnDelivery = Callable[
    ..., None
]  # (error or None, [the client's message]): error is any object that describes the failure


def resume_offset(committed: int | None, first_taken: int | None) -> int | None:
    """Where a partition is read again: its commit; with none, the first offset taken in since it
    was assigned (the reset policy's end would skip what was read and not finished); None when
    neither is known, for the reset policy to decide."""
    return committed if committed is not None else first_taken


class Record(NamedTuple):
    """A consumed record's fields, in this order. The clients hand records over as plain tuples of
    the same shape (a named tuple costs a Python call per record on the hot path); read them by
    position or unpack them."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (0 when the broker gave none)
    key: bytes | None
    value: bytes | None


class Message(NamedTuple):
    """A record as a ``Reader`` returns it: ``Record``'s fields and the headers."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


OnSent = Callable[[object, int, int, int], None]  # (error or None, partition, offset, timestamp ms)


class Rebalance(Protocol):
    """What the consumer tells its owner about assignment changes (on the consuming thread)."""

    def on_assigned(self, tps: set[TopicPartitionKey]) -> None: ...

    def on_revoked(self, tps: set[TopicPartitionKey]) -> None:
        """The partitions are still owned while this runs when ``Consumer.commits_on_revoke``."""

    def on_lost(self, tps: set[TopicPartitionKey]) -> None:
        """The partitions are already someone else's: nothing of theirs may be committed."""


class Consumer(Protocol):
    commits_on_revoke: (
        bool  # whether on_revoked runs before the partitions leave (a commit there counts)
    )

    def subscribe(self, listener: Rebalance, topic: str | None = None) -> None:
        """Join the group on ``topic`` (default: the input topic); changes go to ``listener``."""

    def consume(self, max_records: int, timeout_s: float) -> list[Record]: ...

    def assignment(self) -> set[TopicPartitionKey]: ...

    def hold(self, paused: bool) -> None:
        """Pause (or resume) every assigned partition, newly assigned ones included; consuming
        goes on (heartbeats, rebalances) but returns no records of paused partitions."""

    def settled(self) -> bool:
        """No assignment change is waiting to be reported (the owner may judge itself idle)."""

    def rewind(self, tps: set[TopicPartitionKey], starts: Offsets | None = None) -> None:
        """Read these owned partitions again from the group's committed offset (with none, from
        ``starts``: the first offset taken in since assignment). Raises ``TransportError`` if an
        offset cannot be fetched (e.g. the broker is away)."""

    def commit(self, offsets: Offsets) -> None:
        """Synchronous commit. ``CommitRejectedError`` when a rebalance refused it, another
        ``TransportError`` when the outcome is unknown."""

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Messages behind the high watermark, per owned partition with a known watermark."""

    def committed(self, tps: set[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offsets (None where it never committed); works unsubscribed.
        ``TransportError`` when the broker does not answer."""

    def group_metadata(self) -> object: ...

    def close(self) -> None: ...


class Producer(Protocol):
    transactional: bool

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list,
        on_delivery: OnDelivery,
    ) -> None:
        """Queue one message. Raises ``MessageTooLargeError`` for a message over the size limit
        and ``TransportError`` when it cannot be queued within the delivery timeout."""

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_sent: OnSent,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """``produce`` for tools: the callback learns where the message landed (partition, offset,
        timestamp); ``timestamp_ms`` stamps the message (None: the send time); ``partition``
        chooses the partition (None: the key's, by the partitioner)."""

    def warm(self, topic: str) -> None:
        """Fetch the topic's metadata now, so the first send does not wait for it."""

    def reachable(self, timeout_s: float) -> None:
        """``TransportError`` unless a broker answers within ``timeout_s`` (checked at start-up:
        a client that retries forever would otherwise hide a wrong address)."""

    def poll(self) -> None:
        """Serve delivery callbacks that are due, without waiting."""

    def flush(self, timeout_s: float) -> None:
        """Wait until every queued message is delivered or failed; ``TransportError`` on timeout."""

    def commit_transaction(self, offsets: Offsets, group_metadata: object) -> None:
        """Commit the open transaction with these input offsets and open the next one."""

    def abort_transaction(self) -> None:
        """Discard everything produced since the last commit and open the next transaction."""

    def close(self, timeout_s: float = 10.0) -> None: ...


class Reader(Protocol):
    """Whole topics read from their start (or from a time) without a group: for tools, not the
    worker. The end of a partition is the end the broker reported with its last fetch (the last
    stable offset for ``read_committed``): some Kafka-protocol brokers answer ListOffsets(latest)
    wrongly, so it is never asked."""

    def read(self, timeout_s: float) -> list[Message]:
        """What is fetched now, waiting up to ``timeout_s`` for something."""

    def at_end(self) -> bool:
        """Every partition has been read up to the end its last fetch reported."""

    def close(self) -> None: ...


class Transport(NamedTuple):
    """The factories of one client: the worker, the sink and the load generator build through these.

    ``reader(settings, topics, *, read_committed=False, since_ms=None, timeout_s=30.0)`` waits up to
    ``timeout_s`` for the topics' metadata (a topic that never shows is read as empty) and starts each
    partition at its beginning, or at the first record stamped at or after ``since_ms``."""

    name: str
    consumer: Callable[..., Consumer]
    producer: Callable[..., Producer]
    reader: Callable[..., Reader]
