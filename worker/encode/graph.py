"""The forward pass as one call: the model, pooling and normalization traced into a TorchScript
graph at start-up, checked against eager PyTorch, eager where it does not match.

Why: eager PyTorch releases the GIL around every operator and takes it back afterwards. While
another thread runs Python (the main loop, the publish stage), each take-back waits for that
thread to yield, up to the interpreter's switch interval (5 ms), so a forward pass of a hundred
small operators crawls. Measured on the 2-core machine, a 1-layer BERT over 256 short texts: 4.5 ms
alone, 26 ms beside one busy Python thread. A traced graph runs every operator in C++ and takes the
GIL back once per batch.

A trace records one run's operators, so control flow that depends on shapes is frozen at the
example's; ``trace`` therefore runs the graph and eager PyTorch on probe batches of other shapes
(one row, no padding, full length, many rows) and keeps the graph only if every vector agrees.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from worker.encode.pooling import pool
from worker.errors import ModelLoadError

log = logging.getLogger(__name__)
Forward = Callable[
    [torch.Tensor, torch.Tensor], torch.Tensor
]  # (input ids, attention mask) -> vectors
MAX_RELATIVE_ERROR = {
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 3e-2,
}  # per vector, |graph - eager| / |eager|


class Pooled(torch.nn.Module):
    """The transformer, pooling and (optional) L2 normalization as one module: what is traced."""

    def __init__(
        self, model: torch.nn.Module, pooling: str, normalize: bool, type_ids: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.type_ids = type_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.type_ids:
            inputs["token_type_ids"] = torch.zeros_like(input_ids)
        hidden = self.model(**inputs).last_hidden_state
        vectors = pool(hidden.float(), attention_mask, self.pooling)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors


def probe_rows(
    token_ids: Sequence[int], max_length: int, wrap: Callable[[Sequence[int]], list[int]]
) -> list[list[list[int]]]:
    """Batches of shapes unlike the trace example's: one short row; rows of one length (no
    padding); a full-length row beside a short one; many rows of mixed lengths."""
    body = list(token_ids) or [0]

    def row(n: int) -> list[int]:
        inner = max(1, n - len(wrap([])))
        return wrap((body * (inner // len(body) + 1))[:inner])

    return [
        [row(3)],
        [row(9)] * 5,
        [row(max_length), row(4)],
        [row(5 + (i * 7) % 40) for i in range(24)],
    ]


def _agree(
    graph: Forward,
    eager: Forward,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype,
) -> str | None:
    """None if the graph's vectors match eager's on every batch, else what differed."""
    limit = MAX_RELATIVE_ERROR.get(dtype, 3e-2)
    for ids, mask in batches:
        got, want = graph(ids, mask).float(), eager(ids, mask).float()
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)} against {tuple(want.shape)} for a batch of {tuple(ids.shape)}"
        error = ((got - want).norm(dim=1) / want.norm(dim=1).clamp(min=1e-12)).max().item()
        if not np.isfinite(error) or error > limit:
            return f"vectors {error:.2e} away from eager's (more than {limit:.0e}) for a batch of {tuple(ids.shape)}"
    return None


def trace(
    module: Pooled,
    example: tuple[torch.Tensor, torch.Tensor],
    probes: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    dtype: torch.dtype,
    setting: str,
) -> Forward:
    """The traced graph of ``module`` if it agrees with eager on ``probes``; else ``module``
    itself (``setting`` auto), or a ``ModelLoadError`` naming the setting (``on``)."""
    if setting == "off":
        return module
    try:
        # the graph is checked as it serves: run as recorded, without per-shape profiling and fusing
        with (
            torch.inference_mode(),
            torch.jit.optimized_execution(False),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter(
                "ignore"
            )  # TracerWarnings about shape-dependent Python: checked below
            graph = torch.jit.trace(module, example, check_trace=False)
            problem = _agree(graph, module, probes, dtype)
    except Exception as exc:  # tracing fails in many ways for models it cannot follow
        problem = f"tracing failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    if problem is None:
        log.info(
            "model traced into one graph (EMBED_MODEL__TRACE=%s): it matched eager PyTorch on %d probe batches",
            setting,
            len(probes),
        )
        return graph
    if setting == "on":
        raise ModelLoadError(
            f"EMBED_MODEL__TRACE=on but the model cannot be traced faithfully: {problem}"
        )
    log.warning("running the model eagerly (EMBED_MODEL__TRACE=auto): %s", problem)
    return module
