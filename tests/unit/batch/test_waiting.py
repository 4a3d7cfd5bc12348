import random

from worker.batch.policy import BatchLimits, sorted_batches
from worker.batch.waiting import WaitingRoom
from worker.consume.decode import Document, Source


def doc(doc_id, offset, partition=0, tokens=3, op="upsert"):
    d = Document(doc_id, "x", op, None, Source("in", partition, offset, 0), "h")
    d.token_ids = list(range(tokens))
    return d


def room(max_tokens=1000, max_size=100, max_wait_s=0.05):
    return WaitingRoom(BatchLimits(max_tokens=max_tokens, max_size=max_size, max_wait_s=max_wait_s))


def ids(batches):
    return sorted(d.id for b in batches for d in b.docs)


def test_a_partial_batch_waits_for_the_deadline():
    w = room()
    w.add([doc("a", 0)], now=10.0)
    assert w.take(1, now=10.01) == []
    assert w.next_deadline() == 10.05
    assert ids(w.take(1, now=10.05)) == ["a"]
    assert len(w) == 0 and w.next_deadline() is None


def test_a_full_batch_runs_at_once_and_the_rest_keeps_waiting():
    w = room(max_size=2, max_wait_s=10.0)
    w.add([doc("a", 0), doc("b", 1), doc("c", 2)], now=0.0)
    assert ids(w.take(1, now=0.0)) == ["a", "b"]
    assert w.take(1, now=0.0) == [] and len(w) == 1


def test_no_batch_is_chosen_while_the_model_has_no_room():
    w = room(max_size=2)
    w.add([doc(str(i), i) for i in range(5)], now=0.0)
    assert w.take(0, now=1.0) == []
    assert len(w.take(2, now=1.0)) == 2 and len(w) == 1


def test_drain_takes_everything_as_batches():
    w = room(max_size=2, max_wait_s=10.0)
    w.add([doc(str(i), i, tokens=i + 1) for i in range(5)], now=0.0)
    batches = w.take(0, now=0.0, drain=True)
    assert ids(batches) == ["0", "1", "2", "3", "4"] and all(len(b.docs) <= 2 for b in batches)


def test_once_due_the_oldest_document_is_in_the_next_batch():
    w = room(max_tokens=100, max_size=100, max_wait_s=10.0)
    w.add([doc("old", 0, tokens=40)], now=0.0)
    w.add(
        [doc(f"s{i}", i + 1, tokens=5) for i in range(60)], now=1.0
    )  # enough short ones to fill batches alone
    before = w.take(1, now=1.0)[0]  # before its deadline, a full batch of others may run first
    assert "old" not in {d.id for d in before.docs} and before.cut.full
    due = w.take(1, now=10.0)[0]
    assert "old" in {d.id for d in due.docs} and due.arrived == 0.0


def test_a_large_pool_gives_tightly_sorted_batches():
    rng = random.Random(3)
    lengths = [rng.randint(5, 60) for _ in range(4000)]
    w = room(max_tokens=2048, max_size=256, max_wait_s=10.0)
    w.add([doc(str(i), i, tokens=n) for i, n in enumerate(lengths)], now=0.0)
    batches = w.take(5, now=0.0)
    assert len(batches) == 5
    real = sum(b.cut.real_tokens for b in batches)
    padded = sum(b.cut.padded_tokens for b in batches)
    assert real / padded > 0.97
    for b in batches:
        assert b.cut.padded_tokens == max(d.n_tokens for d in b.docs) * len(b.docs) <= 2048


def test_draining_a_pool_pads_about_as_little_as_sorting_everything_at_once():
    rng = random.Random(5)
    lengths = [max(1, int(rng.lognormvariate(3, 0.8))) for _ in range(3000)]
    lim = BatchLimits(2048, 256, 0.05)
    w = WaitingRoom(lim)
    w.add([doc(str(i), i, tokens=min(n, 256)) for i, n in enumerate(lengths)], now=0.0)
    batches = w.take(0, now=0.0, drain=True)
    assert len(w) == 0 and len({d.id for b in batches for d in b.docs}) == 3000
    ours = sum(b.cut.real_tokens for b in batches) / sum(b.cut.padded_tokens for b in batches)
    cuts = sorted_batches([min(n, 256) for n in lengths], lim)
    best = sum(c.real_tokens for c in cuts) / sum(c.padded_tokens for c in cuts)
    assert ours > best - 0.02


def test_drop_forgets_revoked_partitions():
    w = room()
    w.add([doc("a", 0, partition=0), doc("b", 0, partition=1)], now=0.0)
    assert w.drop({("in", 1)}) == 1
    assert ids(w.take(1, now=1.0)) == ["a"]
