"""Stage threads: failures surface with their cause, and nothing outlives a deadline or an abort."""

import queue
import threading
import time

import pytest

from worker.deadline import Deadline
from worker.errors import StageError
from worker.stages import Stage, drain, offer


def _stage(fn, *, threads=1, inbox_size=4):
    inbox, outbox, abort = queue.Queue(inbox_size), queue.Queue(), threading.Event()
    return Stage("square", fn, inbox, outbox, abort, threads=threads).start(), inbox, outbox, abort


def test_items_flow_through_and_close_lets_the_queue_drain():
    stage, inbox, outbox, _ = _stage(lambda x: x * x, threads=3)
    for i in range(10):
        assert offer(inbox, i, threading.Event())
    stage.close(Deadline(5))
    assert stage.join(Deadline(5))
    assert sorted(drain(outbox)) == [i * i for i in range(10)]


def test_a_failing_function_surfaces_in_check_with_its_cause_chained():
    def boom(x):
        if x == 3:
            raise KeyError("no such thing")
        return x

    stage, inbox, _, abort = _stage(boom)
    for i in range(5):
        offer(inbox, i, abort)
    assert abort.wait(5)  # the failure stops the pipeline
    with pytest.raises(StageError, match="square stage failed: KeyError") as info:
        stage.check()
    assert isinstance(info.value.__cause__, KeyError)
    assert stage.join(Deadline(1))


def test_join_gives_up_at_the_deadline_and_abort_releases_the_thread():
    release = threading.Event()
    stage, inbox, outbox, abort = _stage(lambda x: release.wait(5) and x)
    offer(inbox, 1, abort)
    stage.close(Deadline(1))
    began = time.monotonic()
    assert not stage.join(Deadline(0.1))
    assert time.monotonic() - began < 1
    abort.set()
    release.set()
    assert stage.join(Deadline(5))
    assert drain(outbox) == []  # a result after abort is dropped, not delivered


def test_offer_waits_on_a_full_queue_until_abort_or_deadline():
    q, abort = queue.Queue(1), threading.Event()
    assert offer(q, "a", abort)
    began = time.monotonic()
    assert not offer(q, "b", abort, Deadline(0.1))
    assert 0.05 < time.monotonic() - began < 1
    threading.Timer(0.1, abort.set).start()
    assert not offer(q, "b", abort)
    assert drain(q) == ["a"]


def test_on_take_announces_each_item_as_the_stage_takes_it():
    # the pipeline wakes the main loop with it, so a free model is fed at once rather than after a poll
    release, taken = threading.Event(), []
    inbox, outbox, abort = queue.Queue(1), queue.Queue(), threading.Event()
    stage = Stage(
        "slow",
        lambda x: release.wait(5) and x,
        inbox,
        outbox,
        abort,
        on_take=lambda: taken.append(inbox.qsize()),
    ).start()
    offer(inbox, 1, abort)
    deadline = time.monotonic() + 5
    while not taken and time.monotonic() < deadline:
        time.sleep(0.005)
    assert taken == [0]  # taken (the queue has room again) while the function still runs
    assert outbox.empty()
    release.set()
    stage.close(Deadline(5))
    assert stage.join(Deadline(5)) and drain(outbox) == [1]


def test_busy_since_tells_when_the_oldest_item_in_work_was_taken():
    release = threading.Event()
    stage, inbox, outbox, abort = _stage(lambda x: release.wait(5) and x, threads=2)
    assert stage.busy_since() is None
    before = time.monotonic()
    offer(inbox, 1, abort)
    deadline = time.monotonic() + 5
    while stage.busy_since() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    since = stage.busy_since()
    assert since is not None and before <= since <= time.monotonic()
    release.set()
    deadline = time.monotonic() + 5
    while stage.busy_since() is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert stage.busy_since() is None and drain(outbox) == [1]
    abort.set()
