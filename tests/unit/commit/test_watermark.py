from worker.commit.watermark import OffsetTracker

TP = ("in", 0)


def test_nothing_committable_until_the_first_offset_finishes():
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.track(TP, off)
    t.finish(TP, 6)
    t.finish(TP, 7)
    assert t.committable() == {}
    t.finish(TP, 5)
    assert t.committable() == {TP: 8}
    assert t.unfinished() == 0


def test_commit_stops_below_the_first_unfinished_offset():
    t = OffsetTracker()
    for off in range(10):
        t.track(TP, off)
    for off in (0, 1, 2, 4, 5, 9):
        t.finish(TP, off)
    assert t.committable() == {TP: 3}
    assert t.unfinished() == 4


def test_gaps_in_offsets_are_skipped():
    t = OffsetTracker()
    t.track(TP, 10)
    t.track(TP, 13)  # 11 and 12 are, say, transaction markers never delivered
    t.finish(TP, 10)
    assert t.committable() == {TP: 11}
    t.finish(TP, 13)
    assert t.committable() == {TP: 14}


def test_partitions_are_independent():
    t = OffsetTracker()
    t.track(("in", 0), 0)
    t.track(("in", 1), 0)
    t.finish(("in", 1), 0)
    assert t.committable() == {("in", 1): 1}


def test_forget_drops_a_partition_and_its_unfinished_count():
    t = OffsetTracker()
    t.track(TP, 0)
    t.track(("in", 1), 0)
    t.forget({TP})
    assert t.unfinished() == 1
    t.finish(TP, 0)  # a late acknowledgement for a revoked partition is ignored
    assert t.committable() == {}


def test_redelivery_and_double_finish_are_harmless():
    t = OffsetTracker()
    t.track(TP, 0)
    t.finish(TP, 0)
    t.finish(TP, 0)
    t.track(TP, 0)  # re-delivered after a seek: already finished
    assert t.committable() == {TP: 1}
    assert t.unfinished() == 0


def test_offsets_taken_in_out_of_order_never_commit_past_an_unfinished_one():
    # e.g. records of a partition read again from its commit after later ones were taken in
    t = OffsetTracker()
    for off in (7, 8, 3, 4):
        t.track(TP, off)
    for off in (7, 8, 4):
        t.finish(TP, off)
    assert t.committable() == {}
    t.finish(TP, 3)
    assert t.committable() == {TP: 9}
