"""One exception root for the worker; each stage raises its own subclass."""


class EmbedError(Exception):
    """Root of every error the worker raises on purpose."""


class ConfigError(EmbedError):
    """Settings are invalid; the message names the setting and the problem."""


class ModelLoadError(EmbedError):
    """The model or tokenizer could not be loaded or does not fit the settings."""


class PublishError(EmbedError):
    """A message was not acknowledged by the broker; nothing past it is committed."""


class CommitError(EmbedError):
    """Offsets could not be committed with a known outcome."""


class DedupError(EmbedError):
    """The dedup store (Redis) failed."""


class StackError(EmbedError):
    """The local development stack (broker, Redis) could not be started or reached."""


class BrokerUnavailableError(EmbedError):
    """No Kafka broker answered at the configured bootstrap servers."""


class StageError(EmbedError):
    """A pipeline stage thread failed; the original error is chained as the cause."""


class IndexStoreError(EmbedError):
    """The vector index (sink, query) is missing, or was built for another model or dimension."""


class TransportError(EmbedError):
    """A Kafka client call failed; ``retriable`` when trying again may succeed."""

    retriable = True


class CommitRejectedError(TransportError):
    """The group rebalanced: the commit was refused and the new owner reads from the last commit."""


class MessageTooLargeError(TransportError):
    """A message exceeds the producer's size limit: the document, not the broker, is at fault."""

    retriable = False


class FatalTransportError(TransportError):
    """The client cannot go on (e.g. a transactional producer fenced by a newer one)."""

    retriable = False


class TransactionAbortError(TransportError):
    """The open transaction must be aborted and its work redone (calling again will not do)."""

    retriable = False
