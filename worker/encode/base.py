"""The encoder interface the runner sees, and a deterministic dummy for unit tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """What the output contract and the dedup key need to know about the model."""

    name: str
    dim: int
    dtype: str
    device: str
    pooling: str
    normalize: bool
    max_length: int
    revision: str | None = None
    quantize: str = "none"

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes a vector: a new value means nothing is deduplicated."""
        fields = {k: v for k, v in asdict(self).items() if k != "device"}
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=8).hexdigest()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a model failure means the accelerator ran out of memory (torch.cuda.OutOfMemoryError,
    or the RuntimeError older torch raised), told without importing torch."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class Encoder(Protocol):
    info: ModelInfo
    replicas: int  # forward threads to run (``worker.encode.parallel``)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``info.max_length`` (special tokens included)."""

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each whole text, without special tokens or truncation."""

    def wrap(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with the model's special tokens around them (``specials`` of them)."""

    def encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Vectors of one batch, float32, shape (len(token_ids), info.dim)."""


class DummyEncoder:
    """Deterministic stand-in: one token per word, vectors derived from the token ids."""

    def __init__(self, dim: int = 8, max_length: int = 64) -> None:
        self.info = ModelInfo("dummy", dim, "float32", "cpu", "mean", True, max_length)
        self.batches: list[int] = []

    specials = 0
    replicas = 1

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids[: self.info.max_length] for ids in self.body(texts)]

    def body(self, texts: Sequence[str]) -> list[list[int]]:
        return [
            [
                int.from_bytes(hashlib.blake2b(w.encode(), digest_size=2).digest(), "little")
                for w in t.split()
            ]
            for t in texts
        ]

    def wrap(self, ids: Sequence[int]) -> list[int]:
        return list(ids)

    def encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        self.batches.append(len(token_ids))
        out = np.zeros((len(token_ids), self.info.dim), dtype=np.float32)
        for row, ids in enumerate(token_ids):
            for i in ids:
                out[row, i % self.info.dim] += 1.0
            out[row] /= max(np.linalg.norm(out[row]), 1e-12)
        return out
