"""Dead-letter tooling for operators: ``embed-worker dlq summary`` and ``embed-worker dlq replay``.

Not a stage of the data path: it reads the dead-letter topic the publish stage writes
(``worker.publish.codec.dead_letter``: the original key and value, with reason, detail and source
in ``embed-dlq-*`` / ``embed-source-*`` headers), and replays chosen letters to the input topic.

- ``letters``: a dead letter parsed from its message, and which letters a command selects (pure).
- ``summary``: counts by reason and by source partition, with sample ids (pure), and its text.
- ``replay``: the once-only replay, its progress kept in a compacted topic of its own.
"""
