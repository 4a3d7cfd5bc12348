from unittest import mock

import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.future import Future

from worker.commit.checkpoint import Checkpoint, Delivery
from worker.commit.watermark import OffsetTracker
from worker.consume.decode import Document, Source
from worker.errors import PublishError

TP = ("in", 0)


def acked():
    f = Future()
    f.success(object())
    return f


def failed():
    f = Future()
    f.failure(KafkaTimeoutError("broker gone"))
    return f


class Intake:
    def __init__(self):
        self.commits = []
        self.fail_with = None

    def assignment(self):
        return {TP}

    def commit(self, offsets):
        if self.fail_with:
            raise self.fail_with
        self.commits.append(dict(offsets))


def setup(*offsets):
    tracker = OffsetTracker()
    for off in offsets:
        tracker.track(TP, off)
    intake, publisher, dedup = Intake(), mock.Mock(spec_set=["flush"]), mock.Mock(spec_set=["mark"])
    return Checkpoint(intake, publisher, tracker, dedup, flush_timeout_s=1.0), intake, publisher, dedup


def doc(off):
    return Document(f"d{off}", "t", "upsert", None, Source("in", 0, off, 0), "h")


def test_commit_flushes_then_commits_the_watermark_and_marks_dedup():
    cp, intake, publisher, dedup = setup(0, 1, 2)
    for off in (0, 1):
        cp.add(Delivery(Source("in", 0, off, 0), [acked()], doc(off)))
    cp.commit()
    publisher.flush.assert_called_once()
    assert intake.commits == [{TP: 2}]  # offset 2 is not finished
    assert [d.id for d in dedup.mark.call_args.args[0]] == ["d0", "d1"]


def test_a_failed_send_raises_and_commits_nothing():
    cp, intake, _, dedup = setup(0, 1)
    cp.add(Delivery(Source("in", 0, 0, 0), [acked()], doc(0)))
    cp.add(Delivery(Source("in", 0, 1, 0), [failed()], doc(1)))
    with pytest.raises(PublishError, match="broker gone"):
        cp.commit()
    assert intake.commits == []
    dedup.mark.assert_not_called()


def test_an_unacknowledged_send_after_flush_raises():
    cp, intake, _, _ = setup(0)
    cp.add(Delivery(Source("in", 0, 0, 0), [Future()]))
    with pytest.raises(PublishError):
        cp.commit()
    assert intake.commits == []


def test_dead_letters_finish_offsets_but_are_not_marked():
    cp, intake, _, dedup = setup(0)
    cp.add(Delivery(Source("in", 0, 0, 0), [acked()], doc(0), mark=False))
    cp.commit()
    assert intake.commits == [{TP: 1}]
    assert dedup.mark.call_args.args[0] == []


def test_a_commit_lost_to_a_rebalance_is_not_fatal_and_is_retried():
    cp, intake, _, _ = setup(0)
    cp.add(Delivery(Source("in", 0, 0, 0), [acked()]))
    intake.fail_with = CommitFailedError("rebalanced")
    cp.commit()
    assert cp.stats.failures == 1 and cp.uncommitted()  # the worker must not call itself idle yet
    intake.fail_with = None
    cp.commit()
    assert intake.commits == [{TP: 1}] and not cp.uncommitted()


def test_unchanged_offsets_are_not_committed_again():
    cp, intake, _, _ = setup(0)
    cp.add(Delivery(Source("in", 0, 0, 0), [acked()]))
    cp.commit()
    cp.commit()
    assert intake.commits == [{TP: 1}]


def test_a_flush_that_times_out_is_a_publish_error_and_commits_nothing():
    cp, intake, publisher, _ = setup(0)
    cp.add(Delivery(Source("in", 0, 0, 0), [Future()]))
    publisher.flush.side_effect = KafkaTimeoutError("flush")
    with pytest.raises(PublishError, match="did not acknowledge"):
        cp.commit()
    assert intake.commits == []
