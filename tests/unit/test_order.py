from worker.consume.decode import Document, Source
from worker.order import KeyGate


def doc(doc_id, offset, partition=0):
    return Document(doc_id, "x", "upsert", None, Source("in", partition, offset, 0), "h")


def test_a_later_version_of_an_id_waits_until_the_earlier_one_is_released():
    gate = KeyGate()
    first, second, third, other = doc("a", 0), doc("a", 1), doc("a", 2), doc("b", 3)
    assert gate.admit([first, second, other, third]) == [first, other]
    assert len(gate) == 2
    assert gate.release(first) is second
    assert gate.release(other) is None
    assert gate.release(second) is third
    assert gate.release(third) is None
    assert len(gate) == 0 and gate.held == 0
    assert gate.admit([doc("a", 4)])[0].source.offset == 4  # the key is free again


def test_the_same_id_in_another_partition_is_another_key():
    gate = KeyGate()
    assert len(gate.admit([doc("a", 0, partition=0), doc("a", 0, partition=1)])) == 2


def test_drop_forgets_the_keys_and_waiting_versions_of_partitions_that_left():
    gate = KeyGate()
    gate.admit([doc("a", 0, partition=0), doc("a", 1, partition=0), doc("b", 0, partition=1)])
    assert gate.drop({("in", 0)}) == 1
    assert len(gate) == 0 and gate.held == 1
    assert gate.admit([doc("a", 5, partition=0)])[0].source.offset == 5
