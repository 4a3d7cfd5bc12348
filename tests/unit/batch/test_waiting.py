from worker.batch.policy import BatchLimits
from worker.batch.waiting import WaitingRoom
from worker.consume.decode import Document, Source


def doc(doc_id, offset, partition=0, tokens=3, op="upsert"):
    d = Document(doc_id, "x", op, None, Source("in", partition, offset, 0), "h")
    d.token_ids = list(range(tokens))
    return d


def room():
    return WaitingRoom(BatchLimits(max_tokens=1000, max_size=100, max_wait_s=0.05, lookahead=1))


def test_nothing_is_released_before_the_deadline():
    w = room()
    w.add([doc("a", 0)], now=10.0)
    assert w.take(now=10.01) == []
    assert w.next_deadline() == 10.05
    assert [d.id for b in w.take(now=10.05) for d in b.docs] == ["a"]
    assert len(w) == 0


def test_a_batch_is_cut_once_the_lookahead_window_fills_before_the_deadline():
    w = WaitingRoom(BatchLimits(max_tokens=1000, max_size=2, max_wait_s=10.0, lookahead=2))
    w.add([doc("a", 0), doc("b", 1), doc("c", 2)], now=0.0)
    assert w.take(now=0.0) == []
    w.add([doc("d", 3)], now=0.0)
    assert sorted(d.id for b in w.take(now=0.0) for d in b.docs) == ["a", "b", "c", "d"]
    assert len(w) == 0


def test_drop_forgets_revoked_partitions():
    w = room()
    w.add([doc("a", 0, partition=0), doc("b", 0, partition=1)], now=0.0)
    assert w.drop({("in", 1)}) == 1
    assert [d.id for b in w.take(now=1.0) for d in b.docs] == ["a"]
