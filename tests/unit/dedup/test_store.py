"""The dedup store against stand-in Redis clients: answers, fail-open, fail-closed, recovery."""

import time

import pytest
import redis

from worker.config import RedisSettings
from worker.consume.decode import Document, Source, content_hash
from worker.deadline import Backoff
from worker.dedup.store import DedupStore
from worker.errors import DedupError


class FakeRedis:
    def __init__(self):
        self.data, self.calls, self.down = {}, 0, False

    def _call(self):
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("Connection refused")

    def mget(self, keys):
        self._call()
        return [self.data.get(k) for k in keys]

    def register_script(self, lua):
        def mark(keys, args):  # what the mark script does
            self._call()
            for k, v in zip(keys, args[1:]):
                if v == "":
                    self.data.pop(k, None)
                else:
                    self.data[k] = v.encode()

        return mark


def doc(i, text="hello"):
    return Document(f"d{i}", text, "upsert", None, Source("in", 0, i, 0), content_hash(text))


def store(mode="open"):
    fake = FakeRedis()
    s = DedupStore(
        RedisSettings(url="redis://x:1/0", on_error=mode),
        "model-fp",
        client=fake,
        retry=Backoff(0.05, 0.05),
    )
    return s, fake


def test_marked_content_is_found_and_changed_content_is_not():
    s, _ = store()
    s.mark([doc(1), doc(2)])
    assert s.already_embedded([doc(1), doc(2, "changed"), doc(3)]) == [True, False, False]


def test_fail_open_embeds_without_asking_a_dead_redis_again_until_the_backoff_ends():
    s, fake = store("open")
    s.mark([doc(1)])
    fake.down = True
    assert s.already_embedded([doc(1)]) == [False]  # fails open
    calls = fake.calls
    assert s.already_embedded([doc(1), doc(2)]) == [False, False]
    s.mark([doc(2)])
    assert fake.calls == calls  # no call (and no socket timeout) while backing off
    assert s.errors == 1 and s.unchecked == 3
    fake.down = False
    time.sleep(0.06)
    assert s.already_embedded([doc(1)]) == [True]  # recovered by itself


def test_fail_closed_raises_until_redis_answers_again():
    s, fake = store("closed")
    s.mark([doc(1)])
    fake.down = True
    with pytest.raises(DedupError, match="EMBED_REDIS__ON_ERROR=closed"):
        s.already_embedded([doc(1)])
    with pytest.raises(DedupError):
        s.already_embedded([doc(1)])
    fake.down = False
    time.sleep(0.06)
    assert s.already_embedded([doc(1)]) == [True] and s.unchecked == 0


def test_backoff_doubles_up_to_its_cap_and_resets_on_success():
    b = Backoff(0.5, 3.0)
    assert [b.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.waiting() and b.succeeded() and not b.waiting() and not b.succeeded()


def test_a_mark_or_delete_that_cannot_be_written_says_so():
    # a skipped write left an old mark in place, which later skipped a version matching it
    s, fake = store("open")
    assert s.mark([doc(1)]) is True
    fake.down = True
    gone = Document("d1", "", "delete", None, Source("in", 0, 5, 0), "")
    assert s.mark([gone]) is False  # failed
    assert s.mark([gone]) is False and s.waiting()  # in the backoff: not even tried
    assert s.clear([doc(1)]) is False
    fake.down = False
    time.sleep(0.06)
    assert not s.waiting() and s.mark([gone]) is True
    assert s.already_embedded([doc(1)]) == [False]
    assert s.mark([doc(1)]) and s.clear([doc(1)]) and s.already_embedded([doc(1)]) == [False]
    assert s.mark([]) is True  # nothing to write is written


def test_the_key_fingerprint_changes_with_the_output_settings_and_only_then():
    from worker.config import LongTextSettings
    from worker.dedup.keys import output_fingerprint

    default = LongTextSettings().model_dump()
    chunked = LongTextSettings(policy="chunk").model_dump()
    assert (
        output_fingerprint("m", default) == output_fingerprint("m", default, "float32") == "m"
    )  # marks written before stay valid
    half, chunks, both = (
        output_fingerprint("m", default, "float16"),
        output_fingerprint("m", chunked),
        output_fingerprint("m", chunked, "float16"),
    )
    assert len({"m", half, chunks, both}) == 4


def test_writes_refused_while_lookups_answer_back_off_on_their_own():
    # a READONLY Redis (a replica after a failover) answers every lookup: each one reset the shared
    # backoff, so refused writes were retried at once, again and again
    s, fake = store("open")
    script = fake.register_script("")

    def readonly(keys, args):
        fake.calls += 1
        raise redis.ReadOnlyError("You can't write against a read only replica.")

    s._mark = readonly
    assert s.mark([doc(1)]) is False
    calls = fake.calls
    assert s.already_embedded([doc(1)]) == [False]  # the lookup answers
    assert (
        s.mark([doc(1)]) is False and fake.calls == calls + 1
    )  # the mark was not tried again: its backoff runs
    assert s.waiting()
    time.sleep(0.06)
    s._mark = script
    assert s.mark([doc(1)]) is True and not s.waiting()
