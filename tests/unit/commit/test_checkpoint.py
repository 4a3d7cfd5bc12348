"""The checkpoint and both commit strategies, with spec'd mocks for the clients and Redis."""

import time
from unittest import mock

import pytest

from worker.commit.checkpoint import Checkpoint
from worker.commit.strategy import AtLeastOnce, Transactional
from worker.commit.watermark import OffsetTracker
from worker.consume.decode import Document, Source
from worker.errors import CommitRejectedError, DedupError, PublishError, TransportError

TP = ("in", 0)


class Consumer:
    commits_on_revoke = True

    def __init__(self):
        self.commits = []
        self.fail_with = None

    def assignment(self):
        return {TP, ("in", 1)}

    def commit(self, offsets):
        if self.fail_with:
            raise self.fail_with
        self.commits.append(dict(offsets))

    def group_metadata(self):
        return "generation-1"


def setup(*offsets, strategy=AtLeastOnce, tp=TP, flush_timeout_s=1.0):
    tracker = OffsetTracker()
    for off in offsets:
        tracker.track(tp, off)
    consumer = Consumer()
    producer = mock.Mock(spec_set=["flush", "commit_transaction", "abort_transaction"])
    dedup = mock.Mock(spec_set=["mark", "clear", "already_embedded", "waiting"])
    dedup.mark.return_value = dedup.clear.return_value = True  # written
    dedup.waiting.return_value = False
    cp = Checkpoint(producer, tracker, flush_timeout_s=flush_timeout_s)
    return (
        cp,
        strategy(consumer, producer, cp, dedup, revoke_budget_s=1.0),
        consumer,
        producer,
        dedup,
    )


def doc(off, partition=0, doc_id=None, text_hash="h"):
    return Document(
        doc_id or f"d{off}", "t", "upsert", None, Source("in", partition, off, 0), text_hash
    )


def send(cp, d, *outcomes, mark=True, source=None):
    """A delivery of ``len(outcomes)`` messages whose callbacks report ``outcomes``; registered."""
    delivery = cp.delivery(source or d.source, d, mark)
    delivery.pending = len(outcomes)
    for outcome in outcomes:
        if outcome != "pending":
            delivery.on_delivery(outcome)
    cp.add(delivery)
    return delivery


def test_commit_flushes_then_commits_the_watermark_and_marks_dedup():
    cp, strategy, consumer, producer, dedup = setup(0, 1, 2)
    for off in (0, 1):
        send(cp, doc(off), None)
    released = strategy.commit()
    producer.flush.assert_called_once()
    assert consumer.commits == [{TP: 2}]  # offset 2 is not finished
    assert [d.id for d in dedup.mark.call_args.args[0]] == ["d0", "d1"]
    assert [d.doc.id for d in released] == ["d0", "d1"]


def test_a_delivery_of_several_messages_finishes_when_the_last_is_acknowledged():
    cp, strategy, consumer, _, _ = setup(0)
    delivery = send(cp, doc(0), None, "pending")
    assert cp.resolve() == [] and cp.unacked() == 1
    delivery.on_delivery(None)
    acked = cp.resolve()
    assert [d.doc.id for d in acked] == ["d0"]
    assert cp.moved({TP}) == {}  # acknowledged, not yet settled: its mark comes first
    strategy.settle(acked)
    strategy.commit()
    assert consumer.commits == [{TP: 1}]


def test_a_delivery_acknowledged_before_it_is_handed_over_settles_on_add():
    cp, strategy, consumer, _, _ = setup(0)
    delivery = cp.delivery(doc(0).source, doc(0))
    delivery.pending = 1
    delivery.on_delivery(None)
    assert cp.resolve() == []  # not handed over yet: nothing to release
    cp.add(delivery)
    assert cp.moved({TP}) == {}  # acknowledged, not settled: its mark comes first
    strategy.commit()
    assert consumer.commits == [{TP: 1}]


def test_a_failed_send_raises_and_commits_nothing():
    cp, strategy, consumer, _, dedup = setup(0, 1)
    send(cp, doc(0), None)
    send(cp, doc(1), TransportError("broker gone"))
    with pytest.raises(PublishError, match="broker gone"):
        strategy.commit()
    assert consumer.commits == []
    dedup.mark.assert_not_called()


def test_an_unacknowledged_send_keeps_its_offset_back_until_nothing_is_acknowledged_for_the_flush_timeout():
    cp, strategy, consumer, _, _ = setup(0, 1, flush_timeout_s=0.05)
    send(cp, doc(0), None)
    send(cp, doc(1), "pending")
    strategy.commit()
    assert consumer.commits == [
        {TP: 1}
    ]  # the loop is never blocked for long: what is acknowledged commits
    time.sleep(0.06)
    with pytest.raises(PublishError, match="acknowledged none"):
        strategy.commit()
    assert consumer.commits == [{TP: 1}]


def test_dead_letters_finish_offsets_but_are_not_marked():
    cp, strategy, consumer, _, dedup = setup(0)
    send(cp, doc(0), None, mark=False)
    strategy.commit()
    assert consumer.commits == [{TP: 1}]
    dedup.mark.assert_not_called()


def test_a_commit_lost_to_a_rebalance_is_not_fatal_and_is_retried():
    cp, strategy, consumer, _, _ = setup(0)
    send(cp, doc(0), None)
    consumer.fail_with = CommitRejectedError("rebalanced")
    strategy.commit()
    assert cp.stats.failures == 1 and cp.moved(
        consumer.assignment()
    )  # the worker must not call itself idle yet
    consumer.fail_with = None
    strategy.commit()
    assert consumer.commits == [{TP: 1}] and not cp.moved(consumer.assignment())


def test_unchanged_offsets_are_not_committed_again():
    cp, strategy, consumer, _, _ = setup(0)
    send(cp, doc(0), None)
    strategy.commit()
    strategy.commit()
    assert consumer.commits == [{TP: 1}]


def test_a_flush_that_times_out_is_a_publish_error_once_nothing_is_acknowledged_for_the_flush_timeout():
    cp, strategy, consumer, producer, _ = setup(0, flush_timeout_s=0.0)
    send(cp, doc(0), "pending")
    producer.flush.side_effect = TransportError("flush timed out")
    with pytest.raises(PublishError, match="acknowledged none"):
        strategy.commit()
    assert consumer.commits == []


def test_a_revoked_partition_leaves_nothing_behind():
    # its deliveries still in flight neither fail the worker, nor finish offsets, nor write marks
    cp, strategy, consumer, _, dedup = setup(0, 1)
    ok = send(cp, doc(0), "pending")
    bad = send(cp, doc(1), "pending")
    cp.forget({TP})
    bad.on_delivery(TransportError("not the leader"))
    ok.on_delivery(None)
    assert strategy.settle(cp.resolve()) == []
    strategy.commit()
    assert consumer.commits == []
    dedup.mark.assert_not_called()


def test_on_revoke_commits_the_finished_work_of_the_leaving_partitions_only():
    cp, strategy, consumer, _, _ = setup(0, 1)
    cp._tracker.track(("in", 1), 5)
    send(cp, doc(0), None)
    send(cp, doc(5, partition=1), None)
    strategy.on_revoke({TP})
    assert consumer.commits == [{TP: 1}]


def test_exactly_once_keeps_the_open_transactions_outputs_in_view_of_dedup():
    # X=B acknowledged in the open transaction; X=A must not be skipped against Redis' old mark A
    cp, strategy, _consumer, producer, dedup = setup(0, 1, strategy=Transactional)
    dedup.already_embedded.side_effect = lambda docs: [d.content_hash == "A" for d in docs]
    send(cp, doc(0, doc_id="x", text_hash="B"), None)
    strategy.settle(cp.resolve())
    again_a, same_b, other = (
        doc(1, doc_id="x", text_hash="A"),
        doc(2, doc_id="x", text_hash="B"),
        doc(3, doc_id="y", text_hash="A"),
    )
    assert strategy.already_embedded([again_a, same_b, other]) == [False, True, True]
    dedup.mark.assert_not_called()  # marks wait for the transaction
    strategy.commit()
    producer.commit_transaction.assert_called_once_with({TP: 1}, "generation-1")
    assert [d.content_hash for d in dedup.mark.call_args.args[0]] == ["B"]


def test_exactly_once_a_failed_transaction_commit_is_a_publish_error_and_marks_nothing():
    cp, strategy, _consumer, producer, dedup = setup(0, strategy=Transactional)
    send(cp, doc(0), None)
    producer.commit_transaction.side_effect = TransportError("fenced")
    with pytest.raises(PublishError, match="transaction"):
        strategy.commit()
    dedup.mark.assert_not_called()


def test_a_mark_that_cannot_be_written_holds_its_offset_and_key_until_it_is():
    # a skipped mark (a delete's, here) left the old one in place: a later version matching the old
    # mark was skipped, and the index kept the document deleted
    cp, strategy, consumer, _, dedup = setup(0, 1)
    gone = Document("x", "", "delete", None, Source("in", 0, 0, 0), "")
    dedup.mark.return_value = False  # Redis down
    send(cp, gone, None)
    send(cp, doc(1), None, mark=False)  # a dead letter after it settles at once
    assert [d.mark for d in strategy.commit()] == [False]  # the delete's key is not released
    assert consumer.commits == [] and strategy.unmarked == 1
    assert strategy.commit() == [] and consumer.commits == []  # retried, still down
    dedup.mark.return_value = True
    assert [d.doc.id for d in strategy.commit()] == ["x"]
    assert consumer.commits == [{TP: 2}] and strategy.unmarked == 0
    assert [d.op for d in dedup.mark.call_args.args[0]] == ["delete"]


def test_an_unwritten_mark_of_a_revoked_partition_is_dropped_not_retried():
    cp, strategy, consumer, _, dedup = setup(0)
    dedup.mark.return_value = False
    send(cp, doc(0), None)
    strategy.commit()
    cp.forget({TP})
    dedup.mark.reset_mock(return_value=True)
    assert strategy.commit() == [] and strategy.unmarked == 0 and consumer.commits == []
    dedup.mark.assert_not_called()  # the next owner redoes it: nothing of it is written here


def test_exactly_once_clears_the_marks_it_replaces_before_committing_and_marks_after():
    cp, strategy, _consumer, producer, dedup = setup(0, strategy=Transactional)
    order = []
    dedup.clear.side_effect = lambda docs: order.append("clear") or True
    producer.commit_transaction.side_effect = lambda *a: order.append("commit")
    dedup.mark.side_effect = lambda docs: order.append("mark") or True
    send(cp, doc(0), None)
    strategy.commit()
    assert order == ["clear", "commit", "mark"]


def test_exactly_once_does_not_commit_while_the_marks_it_replaces_cannot_be_cleared():
    cp, strategy, _consumer, producer, dedup = setup(0, strategy=Transactional)
    dedup.clear.return_value = False
    send(cp, doc(0), None)
    with pytest.raises(DedupError, match="cleared"):
        strategy.commit()
    producer.commit_transaction.assert_not_called()
    dedup.mark.assert_not_called()


def test_while_redis_backs_off_unwritten_marks_wait_without_a_call():
    cp, strategy, consumer, _, dedup = setup(0, 1)
    dedup.mark.return_value = False
    send(cp, doc(0), None)
    strategy.commit()
    dedup.waiting.return_value = True
    dedup.mark.reset_mock()
    send(cp, doc(1), None)
    assert strategy.commit() == [] and strategy.unmarked == 2
    dedup.mark.assert_not_called()
    dedup.waiting.return_value = False
    dedup.mark.return_value = True
    assert [d.doc.id for d in strategy.commit()] == ["d0", "d1"] and consumer.commits == [{TP: 2}]
