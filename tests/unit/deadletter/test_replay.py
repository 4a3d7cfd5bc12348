from __future__ import annotations

from tests.unit.deadletter.test_letters import message
from worker.deadletter.letters import Selection, parse
from worker.deadletter.replay import plan, progress_topic_for


def letters():
    return [
        parse(message(0, key=b"a", source_offset=b"10")),
        parse(message(1, key=b"b", source_offset=b"11")),
        parse(message(2, key=b"c", source_offset=b"12", extra=[("embed-dlq-value-bytes", b"9")])),
        parse(message(3, key=b"d", source_offset=b"13", reason=b"undecodable")),
        parse(message(4, key=None, source_offset=b"14")),
        parse(message(5, key=b"e", source_offset=b"15")),
    ]


def test_plan_sends_what_is_chosen_and_not_done_kept_or_superseded():
    done = {"documents.dlq/0/1"}  # b: replayed before
    latest = {(2, b"a"): 40, (2, b"e"): 15}  # a has a later version; e's latest is its own
    p = plan(letters(), Selection(reasons=frozenset({"encode_failed"})), done, latest, "documents")
    assert [x.document_id for x in p.send] == ["(no key)", "e"]
    assert p.counts() == {
        "to_send": 2,
        "already_replayed": 1,
        "superseded": 1,
        "value_not_kept": 1,
        "other_source_topic": 0,
    }


def test_plan_keeps_letters_of_another_input_topic_out():
    p = plan(letters(), Selection(), set(), {}, "other-topic")
    assert p.send == [] and p.other_topic == 5 and p.not_kept == 1


def test_a_message_without_a_key_is_never_superseded():
    p = plan(letters(), Selection(ids=frozenset({"(no key)"})), set(), {(2, None): 99}, "documents")
    assert [x.offset for x in p.send] == [4]


def test_progress_topic_name():
    assert progress_topic_for("documents.dlq") == "documents.dlq.replayed"
