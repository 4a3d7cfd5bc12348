"""The batch metrics count every forward pass that produced vectors: a batch split after running
out of accelerator memory does not vanish from them (issue 16)."""

from prometheus_client import CollectorRegistry

from worker.batch.policy import FlushReason, Pick, padded_cost
from worker.batch.waiting import Batch
from worker.consume.decode import Document, Source
from worker.encode.base import DummyEncoder
from worker.encode.forward import forward
from worker.observe.metrics import Metrics
from worker.observe.progress import record_sent
from worker.publish.sender import Sent
from worker.stats import RunStats


class OomAboveTwoRows(DummyEncoder):
    """Runs out of accelerator memory (torch's own error type) on more than two rows."""

    def encode(self, token_ids):
        import torch

        if len(token_ids) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode(token_ids)


class OomOnLongRows(DummyEncoder):
    """Runs out of memory on any row of more than 10 tokens, even alone."""

    def encode(self, token_ids):
        import torch

        if any(len(ids) > 10 for ids in token_ids):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode(token_ids)


def _batch(*lengths: int, reason: FlushReason = FlushReason.TOKENS) -> Batch:
    docs = [
        Document(
            f"d{i}",
            "",
            "upsert",
            None,
            Source("in", 0, i, 1000),
            "hash",
            token_ids=list(range(1, n + 1)),
        )
        for i, n in enumerate(sorted(lengths))
    ]
    real = sum(max(n, 1) for n in lengths)
    return Batch(
        docs,
        Pick(tuple((n, 1) for n in sorted(lengths)), reason, real, padded_cost(list(lengths))),
        0.0,
    )


def _record(encoder, batch: Batch) -> tuple[Metrics, RunStats]:
    m, st = Metrics(CollectorRegistry()), RunStats()
    enc = forward(encoder, batch)
    record_sent(st, m, Sent(enc, dead_letters=[f.reason for f in enc.failed]), enc.docs)
    return m, st


def test_a_batch_in_one_pass_is_one_batch():
    m, st = _record(DummyEncoder(), _batch(2, 3, 5, 5))
    value = m.registry.get_sample_value
    assert value("embed_batches_total", {"reason": "token_budget"}) == 1
    assert (value("embed_batch_size_count"), value("embed_batch_size_sum")) == (1, 4)
    assert value("embed_batch_tokens_sum") == 20  # 4 rows × 5, padded
    assert value("embed_batch_unpadded_tokens_sum") == 15
    assert value("embed_padding_efficiency_ratio_sum") == 15 / 20
    assert value("embed_stage_duration_seconds_count", {"stage": "forward"}) == 1
    assert value("embed_oom_splits_total") == 0
    assert st.batches == 1


def test_the_halves_of_a_batch_split_after_running_out_of_memory_count_as_batches():
    m, st = _record(OomAboveTwoRows(), _batch(1, 2, 3, 4, reason=FlushReason.SIZE))
    value = m.registry.get_sample_value
    assert value("embed_documents_total") == 4
    assert value("embed_oom_splits_total") == 1
    assert (
        value("embed_batches_total", {"reason": "size"}) == 2
    )  # the two halves, under the batch's reason
    assert (value("embed_batch_size_count"), value("embed_batch_size_sum")) == (2, 4)
    assert value("embed_batch_tokens_sum") == 2 * 2 + 2 * 4  # each half padded to its own longest
    assert value("embed_batch_unpadded_tokens_sum") == 1 + 2 + 3 + 4 == value("embed_tokens_total")
    assert value("embed_padding_efficiency_ratio_count") == 2
    assert value("embed_stage_duration_seconds_count", {"stage": "forward"}) == 2
    assert (
        st.batches == 0
    )  # the run stats keep whole batches only (their latencies are the batch latency)


def test_splits_go_down_to_single_documents_and_a_document_alone_is_not_a_split():
    m, _ = _record(OomOnLongRows(), _batch(3, 3, 3, 12))
    value = m.registry.get_sample_value
    # [3,3,3,12] → [3,3] ok + [3,12] → [3] ok + [12] alone: dead-lettered, not split
    assert value("embed_oom_splits_total") == 2
    assert value("embed_dlq_messages_total", {"reason": "out_of_memory"}) == 1
    assert value("embed_batches_total", {"reason": "token_budget"}) == 2
    assert value("embed_batch_size_sum") == 3 == value("embed_documents_total")
    assert value("embed_batch_tokens_sum") == 2 * 3 + 1 * 3
