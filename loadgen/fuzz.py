"""Seeded hostile input: payloads that must each be embedded correctly or dead-lettered with a reason.

Every payload says what the worker must do with it (``expect``): ``embed`` (a vector for ``doc_id``
whose content hash is that of ``text``), ``delete`` (a delete event), a dead-letter reason, or
``dead_letter`` (any reason: random bytes may happen to parse as something). The expectations are
written from the input contract (docs/message-contract.md), not by calling the worker's decoder.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import msgpack

from worker.consume.decode import MAX_ID_BYTES, MAX_METADATA_DEPTH, Reason, content_hash

ANY_REASON = "dead_letter"
SCRIPTS = [
    "Le cœur a ses raisons que la raison ne connaît point.",
    "吾輩は猫である。名前はまだ無い。",
    "في البدء كانت الكلمة",
    "Съешь же ещё этих мягких французских булок.",
    "सत्यमेव जयते",
    "🙂🚀🔥 emoji only 👩‍👩‍👧‍👦 family 🇺🇦",
    "Ελληνικά κείμενα δοκιμής",
    "한국어 문장입니다",
]


@dataclass(frozen=True, slots=True)
class Payload:
    key: bytes | None
    value: bytes | None
    expect: str  # "embed", "delete", a Reason, or ANY_REASON
    doc_id: str | None = None
    text: str | None = None
    kind: str = ""

    @property
    def expected_hash(self) -> str | None:
        return content_hash(self.text) if self.expect == "embed" and self.text is not None else None


def _pack(body) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def _str_with_bytes(raw: bytes) -> bytes:
    """A msgpack str (str8/str32) holding arbitrary bytes: how an invalid-UTF-8 string travels."""
    return (
        b"\xd9" + bytes([len(raw)]) if len(raw) < 256 else b"\xdb" + struct.pack(">I", len(raw))
    ) + raw


class Fuzzer:
    """``payloads(n)`` yields n payloads, drawn from every kind below, reproducibly for a seed."""

    def __init__(
        self, seed: int = 7, *, huge_text_bytes: int = 10 * 1024 * 1024, huge_every: int = 2500
    ) -> None:
        self._rnd = random.Random(seed)
        self._n = 0
        self._huge_text_bytes = huge_text_bytes
        self._huge_every = huge_every
        self._kinds: list[tuple[int, Callable[[str], Payload]]] = [
            (20, self._valid),
            (6, self._script),
            (3, self._nul),
            (3, self._nested_ok),
            (2, self._no_key),
            (4, self._same_id_twice),
            (6, self._random_bytes),
            (3, self._not_a_map),
            (3, self._missing_id),
            (4, self._bad_id),
            (3, self._missing_text),
            (4, self._bad_text),
            (4, self._empty_text),
            (3, self._unknown_op),
            (2, self._bad_metadata),
            (2, self._too_deep),
            (3, self._key_mismatch),
            (2, self._long_id),
            (2, self._invalid_utf8),
            (1, self._null_value),
            (2, self._delete),
        ]
        self._weights = [w for w, _ in self._kinds]
        self._pending: list[Payload] = []

    def payloads(self, n: int) -> Iterator[Payload]:
        for _ in range(n):
            if self._pending:
                yield self._pending.pop()
                continue
            self._n += 1
            doc_id = f"fz-{self._n}"
            if self._huge_every and self._n % self._huge_every == 0:
                yield self._huge(doc_id)
                continue
            make = self._rnd.choices(self._kinds, self._weights)[0][1]
            yield make(doc_id)

    # -- things that must be embedded --------------------------------------------------------

    def _words(self, lo: int = 3, hi: int = 40) -> str:
        return " ".join(
            self._rnd.choice(
                [
                    "stream",
                    "vector",
                    "kafka",
                    "offset",
                    "batch",
                    "token",
                    "model",
                    "index",
                    "queue",
                    "shard",
                ]
            )
            for _ in range(self._rnd.randint(lo, hi))
        )

    def _embed(self, doc_id: str, text: str, kind: str, *, metadata=None) -> Payload:
        body = {"id": doc_id, "text": text}
        if metadata is not None:
            body["metadata"] = metadata
        return Payload(doc_id.encode(), _pack(body), "embed", doc_id, text, kind)

    def _valid(self, doc_id: str) -> Payload:
        return self._embed(
            doc_id,
            self._words(),
            "valid",
            metadata={"n": self._n, "tags": ["a", "b"]} if self._rnd.random() < 0.5 else None,
        )

    def _script(self, doc_id: str) -> Payload:
        return self._embed(doc_id, self._rnd.choice(SCRIPTS) + " " + self._words(1, 5), "script")

    def _nul(self, doc_id: str) -> Payload:
        return self._embed(doc_id, f"before\x00after {self._words(1, 5)}\x00", "nul_bytes")

    def _nested_ok(self, doc_id: str) -> Payload:
        meta: dict = {"leaf": True}
        for i in range(MAX_METADATA_DEPTH - 1):
            meta = {f"l{i}": meta}
        return self._embed(doc_id, self._words(), "nested_metadata_ok", metadata=meta)

    def _no_key(self, doc_id: str) -> Payload:
        return self._bad(
            None, _pack({"id": doc_id, "text": self._words()}), Reason.KEY_MISSING, "no_key"
        )

    def _same_id_twice(self, doc_id: str) -> Payload:
        """Two versions of one id back to back: the later text must be the one that ends up embedded
        (the first is queued to be yielded right after, and expects nothing of its own)."""
        first = self._embed(doc_id, "first version " + self._words(1, 5), "same_id_first")
        self._pending.append(
            self._embed(doc_id, "second version " + self._words(1, 5), "same_id_second")
        )
        return Payload(first.key, first.value, "superseded", doc_id, first.text, "same_id_first")

    def _huge(self, doc_id: str) -> Payload:
        text = ("long " * (self._huge_text_bytes // 5 + 1))[: self._huge_text_bytes]
        return self._embed(doc_id, text, "huge_text")

    def _delete(self, doc_id: str) -> Payload:
        return Payload(
            doc_id.encode(), _pack({"id": doc_id, "op": "delete"}), "delete", doc_id, None, "delete"
        )

    # -- things that must be dead-lettered, each with its reason -------------------------------

    def _bad(self, key: bytes | None, value: bytes | None, reason: str, kind: str) -> Payload:
        return Payload(key, value, reason, None, None, kind)

    def _random_bytes(self, doc_id: str) -> Payload:
        raw = bytes(self._rnd.getrandbits(8) for _ in range(self._rnd.randint(1, 64)))
        return self._bad(doc_id.encode(), raw, ANY_REASON, "random_bytes")

    def _not_a_map(self, doc_id: str) -> Payload:
        body = self._rnd.choice([[1, 2, 3], "just a string", 42, None, 3.5, True, b"bin"])
        return self._bad(doc_id.encode(), _pack(body), Reason.NOT_A_MAP, "not_a_map")

    def _missing_id(self, doc_id: str) -> Payload:
        return self._bad(None, _pack({"text": self._words()}), Reason.MISSING_FIELD, "missing_id")

    def _bad_id(self, doc_id: str) -> Payload:
        return self._bad(
            None,
            _pack({"id": self._rnd.choice([7, "", ["x"], {"a": 1}, 2.5]), "text": "t"}),
            Reason.WRONG_TYPE,
            "bad_id",
        )

    def _missing_text(self, doc_id: str) -> Payload:
        return self._bad(
            doc_id.encode(), _pack({"id": doc_id}), Reason.MISSING_FIELD, "missing_text"
        )

    def _bad_text(self, doc_id: str) -> Payload:
        return self._bad(
            doc_id.encode(),
            _pack({"id": doc_id, "text": self._rnd.choice([1, ["a"], {"t": "x"}, b"bytes", 1.5])}),
            Reason.WRONG_TYPE,
            "bad_text",
        )

    def _empty_text(self, doc_id: str) -> Payload:
        return self._bad(
            doc_id.encode(),
            _pack({"id": doc_id, "text": self._rnd.choice(["", " ", "\n\t ", "\u3000"])}),
            Reason.EMPTY_TEXT,
            "empty_text",
        )

    def _unknown_op(self, doc_id: str) -> Payload:
        return self._bad(
            doc_id.encode(),
            _pack({"id": doc_id, "text": "x", "op": self._rnd.choice(["UPSERT", "merge", 3, ""])}),
            Reason.UNKNOWN_OP,
            "unknown_op",
        )

    def _bad_metadata(self, doc_id: str) -> Payload:
        return self._bad(
            doc_id.encode(),
            _pack({"id": doc_id, "text": "x", "metadata": self._rnd.choice([[1], "m", 5])}),
            Reason.WRONG_TYPE,
            "bad_metadata",
        )

    def _too_deep(self, doc_id: str) -> Payload:
        meta: dict = {}
        for _ in range(MAX_METADATA_DEPTH + self._rnd.randint(1, 500)):
            meta = {"m": meta}
        return self._bad(
            doc_id.encode(),
            _pack({"id": doc_id, "text": "x", "metadata": meta}),
            Reason.METADATA_TOO_DEEP,
            "metadata_too_deep",
        )

    def _key_mismatch(self, doc_id: str) -> Payload:
        return self._bad(
            b"another-" + doc_id.encode(),
            _pack({"id": doc_id, "text": "x"}),
            Reason.KEY_MISMATCH,
            "key_mismatch",
        )

    def _long_id(self, doc_id: str) -> Payload:
        long_id = doc_id + "x" * (MAX_ID_BYTES + self._rnd.randint(1, 100_000))
        return self._bad(
            long_id.encode(), _pack({"id": long_id, "text": "x"}), Reason.ID_TOO_LONG, "long_id"
        )

    def _invalid_utf8(self, doc_id: str) -> Payload:
        # a map {"id": ..., "text": <str with invalid UTF-8>}, written by hand (msgpack will not)
        value = (
            b"\x82"
            + _pack("id")
            + _pack(doc_id)
            + _pack("text")
            + _str_with_bytes(b"caf\xc3 \xff\xfe broken")
        )
        return self._bad(doc_id.encode(), value, Reason.UNDECODABLE, "invalid_utf8")

    def _null_value(self, doc_id: str) -> Payload:
        return self._bad(doc_id.encode(), None, Reason.UNDECODABLE, "null_value")
