"""Input formats: JSON (the contract, and mapped objects) and Debezium change events, every op and
every malformed case, with and without the JSON converter's schema wrapper."""

from __future__ import annotations

import json

import pytest

from worker.consume.decode import Document, Reason, Rejection, decode_records
from worker.consume.formats import MappedDecoder, Mapping, Template, make_decoder
from worker.errors import ConfigError

ROW = {"id": 1001, "title": "Sally", "body": "Loves kayaks.", "lang": "en", "views": 7}
ROW_SCHEMA = {
    "type": "struct",
    "optional": True,
    "name": "shop.public.articles.Value",
    "fields": [{"field": "id", "type": "int32"}],
}


def change(op, before=None, after=None, *, wrapped=False, **extra) -> bytes:
    """A Debezium change event as the JSON converter writes it (``schemas.enable`` on: ``wrapped``)."""
    payload = {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "table": "articles", "lsn": 33},
        "op": op,
        "ts_ms": 1_700_000_000_000,
        "transaction": None,
        **extra,
    }
    if wrapped:
        return json.dumps(
            {
                "schema": {
                    "type": "struct",
                    "fields": [{"field": "before", **ROW_SCHEMA}, {"field": "after", **ROW_SCHEMA}],
                    "optional": False,
                },
                "payload": payload,
            }
        ).encode()
    return json.dumps(payload).encode()


def key(value=1001, *, wrapped=False) -> bytes:
    body = {"id": value}
    if wrapped:
        return json.dumps(
            {
                "schema": {
                    "type": "struct",
                    "fields": [{"field": "id", "type": "int32", "optional": False}],
                    "optional": False,
                },
                "payload": body,
            }
        ).encode()
    return json.dumps(body).encode()


DEBEZIUM = make_decoder(
    "debezium", mapping=Mapping(Template("{title}\n\n{body}"), metadata_fields=("lang", "views"))
)


def one(decoder, k, v):
    docs, rejected = decoder([("articles", 0, 5, 1_700_000_000_000, k, v)])
    assert len(docs) + len(rejected) == 1
    return (docs or rejected)[0]


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "schema-wrapper"])
@pytest.mark.parametrize("op", ["c", "r", "u"])
def test_creates_snapshot_reads_and_updates_upsert_the_row_after(op, wrapped):
    before = dict(ROW, body="old") if op == "u" else None
    doc = one(DEBEZIUM, key(wrapped=wrapped), change(op, before, ROW, wrapped=wrapped))
    assert isinstance(doc, Document)
    assert (doc.id, doc.op, doc.text) == ("1001", "upsert", "Sally\n\nLoves kayaks.")
    assert doc.metadata == {"lang": "en", "views": 7} and doc.metadata_hash
    assert doc.source.offset == 5


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "schema-wrapper"])
def test_a_delete_removes_the_row_before_and_its_tombstone_deletes_again(wrapped):
    doc = one(DEBEZIUM, key(wrapped=wrapped), change("d", ROW, None, wrapped=wrapped))
    assert (doc.id, doc.op, doc.text) == ("1001", "delete", "")
    tombstone = one(DEBEZIUM, key(wrapped=wrapped), None)
    assert (tombstone.id, tombstone.op) == ("1001", "delete")


def test_a_delete_whose_before_holds_only_the_key_takes_the_id_from_the_key():
    decoder = make_decoder("debezium", mapping=Mapping(Template("{body}"), id_field="id"))
    doc = one(decoder, key(77), change("d", None, None))
    assert (doc.id, doc.op) == ("77", "delete")


@pytest.mark.parametrize(
    "k, v, reason",
    [
        pytest.param(key(), change("t"), Reason.TRUNCATE, id="truncate"),
        pytest.param(None, change("t"), Reason.TRUNCATE, id="truncate-without-a-key"),
        pytest.param(key(), change("m"), Reason.UNKNOWN_OP, id="message-op"),
        pytest.param(key(), change("x", None, ROW), Reason.UNKNOWN_OP, id="unknown-op"),
        pytest.param(key(), json.dumps({"after": ROW}).encode(), Reason.MISSING_FIELD, id="no-op"),
        pytest.param(
            key(), change("c", None, None), Reason.MISSING_FIELD, id="create-without-after"
        ),
        pytest.param(
            key(), change("u", ROW, None), Reason.MISSING_FIELD, id="update-without-after"
        ),
        pytest.param(
            key(),
            change("c", None, ["not", "a", "row"]),
            Reason.WRONG_TYPE,
            id="after-not-an-object",
        ),
        pytest.param(
            key(),
            change("c", None, dict(ROW, title=["x"])),
            Reason.WRONG_TYPE,
            id="template-field-not-text",
        ),
        pytest.param(
            key(),
            change("c", None, {k: v for k, v in ROW.items() if k != "body"}),
            Reason.MISSING_FIELD,
            id="template-field-absent",
        ),
        pytest.param(
            key(),
            change("c", None, dict(ROW, title=None, body="")),
            Reason.EMPTY_TEXT,
            id="every-template-field-empty",
        ),
        pytest.param(key(), b'{"op": "c", "after": ', Reason.UNDECODABLE, id="not-json"),
        pytest.param(key(), b"[1, 2]", Reason.NOT_A_MAP, id="not-an-object"),
        pytest.param(None, change("c", None, ROW), Reason.KEY_MISSING, id="null-key"),
        pytest.param(
            json.dumps({"tenant": 1, "id": 2}).encode(),
            change("c", None, ROW),
            Reason.KEY_MISMATCH,
            id="composite-key-the-row-contradicts",
        ),
        pytest.param(key(True), change("c", None, ROW), Reason.WRONG_TYPE, id="key-not-an-id"),
        pytest.param(key(), change(["c"], None, ROW), Reason.UNKNOWN_OP, id="op-not-a-string"),
        pytest.param(key(), change({"c": 1}, None, ROW), Reason.UNKNOWN_OP, id="op-an-object"),
        pytest.param(
            key(), b"[" * 5000 + b"]" * 5000, Reason.UNDECODABLE, id="nested-past-the-stack"
        ),
        pytest.param(
            b"{" + b'"a":{' * 3000 + b"}" * 3001,
            change("c", None, ROW),
            Reason.UNDECODABLE,
            id="key-nested-past-the-stack",
        ),
        pytest.param(
            key(),
            change("c", None, dict(ROW, lang=10**30)),
            Reason.WRONG_TYPE,
            id="metadata-integer-beyond-64-bits",
        ),
        pytest.param(
            key(),
            change("u", None, dict(ROW, body="__debezium_unavailable_value")),
            Reason.UNAVAILABLE_VALUE,
            id="toasted-column-not-sent",
        ),
        pytest.param(
            key(),
            change("u", None, dict(ROW, lang="__debezium_unavailable_value")),
            Reason.UNAVAILABLE_VALUE,
            id="toasted-metadata-not-sent",
        ),
        pytest.param(b"\xff\xfe", change("c", None, ROW), Reason.UNDECODABLE, id="key-not-utf8"),
    ],
)
def test_every_malformed_change_event_is_dead_lettered_with_its_reason(k, v, reason):
    item = one(DEBEZIUM, k, v)
    assert isinstance(item, Rejection), item
    assert item.reason == reason, item.detail
    assert (item.key, item.value) == (k, v)  # the original bytes go to the dead-letter topic


def test_an_id_field_must_be_a_key_column_and_agree_with_the_row():
    decoder = make_decoder("debezium", mapping=Mapping(Template("{body}"), id_field="id"))
    assert one(decoder, key(2), change("c", None, ROW)).reason == Reason.KEY_MISMATCH
    assert (
        one(decoder, key(1001), change("c", None, dict(ROW, id=1.5))).reason == Reason.KEY_MISMATCH
    )
    composite = json.dumps({"tenant": 1, "id": 1001}).encode()
    assert one(decoder, composite, change("c", None, ROW)).id == "1001"
    # a column outside the key could not carry deletes (Debezium's before holds the key) nor order
    by_slug = make_decoder("debezium", mapping=Mapping(Template("{body}"), id_field="slug"))
    assert one(by_slug, key(), change("c", None, dict(ROW, slug="s"))).reason == Reason.KEY_MISMATCH


def test_a_composite_key_is_the_id_whole_so_rows_sharing_a_column_stay_apart():
    a = one(
        DEBEZIUM,
        json.dumps({"tenant": 1, "id": 5}).encode(),
        change("c", None, dict(ROW, tenant=1, id=5)),
    )
    b = one(
        DEBEZIUM,
        json.dumps({"tenant": 2, "id": 5}).encode(),
        change("c", None, dict(ROW, tenant=2, id=5)),
    )
    assert (a.id, b.id) == ("tenant=1/id=5", "tenant=2/id=5")
    gone = one(DEBEZIUM, json.dumps({"tenant": 2, "id": 5}).encode(), None)
    assert (gone.id, gone.op) == ("tenant=2/id=5", "delete")


def test_a_default_identity_delete_holds_only_the_key_columns_and_still_deletes():
    # REPLICA IDENTITY DEFAULT: before has every column, all null but the key's
    before = {"id": 1001, "title": None, "body": None, "lang": None, "views": None}
    for decoder in (
        DEBEZIUM,
        make_decoder("debezium", mapping=Mapping(Template("{body}"), id_field="id")),
    ):
        doc = one(decoder, key(), change("d", before, None))
        assert (doc.id, doc.op) == ("1001", "delete")


def test_integer_and_string_keys_give_the_same_id_and_plain_keys_are_taken_as_they_are():
    assert (
        one(DEBEZIUM, key(1001), change("c", None, ROW)).id
        == one(DEBEZIUM, key("1001"), change("c", None, dict(ROW, id="1001"))).id
        == "1001"
    )
    mapped = make_decoder("json", mapping=Mapping(Template("{body}")))
    for raw in (b"1.0", b"true", b" 1001 ", b"[1]"):
        assert one(mapped, raw, json.dumps(ROW).encode()).id == raw.decode()


def test_a_tombstone_with_an_id_over_the_limit_is_dead_lettered_like_its_delete():
    long_key = json.dumps({"id": "x" * 600}).encode()
    assert (
        one(DEBEZIUM, long_key, None).reason
        == one(DEBEZIUM, long_key, change("d", {"id": "x" * 600}, None)).reason
        == Reason.ID_TOO_LONG
    )


def test_escaped_braces_stay_literal_and_a_template_of_empty_fields_is_empty_text():
    assert Template("{{id}} {title}: {body}").render({"title": "T", "body": "B"})[0] == "{id} T: B"
    assert Template("{title} {{tag}} {body}").render({"title": "T", "body": "B"})[0] == "T {tag} B"
    assert Template("{title} (article)").render({"title": None})[1] == Reason.EMPTY_TEXT
    assert Template("{title} {flag}").render({"title": "T", "flag": True})[0] == "T true"


def test_mapped_json_takes_an_object_with_schema_and_payload_keys_as_it_is():
    mapped = make_decoder("json", mapping=Mapping(Template("{schema} {body}")))
    doc = one(mapped, b"k", json.dumps({"schema": "v2", "payload": {"x": 1}, "body": "B"}).encode())
    assert doc.text == "v2 B"


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 5000 + b"]" * 5000,
        json.dumps({"id": "j", "text": "t", "metadata": {"n": 10**30}}).encode(),
    ],
    ids=["deep", "big-int"],
)
def test_json_contract_messages_that_would_crash_later_are_dead_lettered(value):
    docs, rejected = decode_records([("t", 0, 0, 0, b"j", value)], json=True)
    assert not docs and rejected[0].reason in (Reason.UNDECODABLE, Reason.WRONG_TYPE)


def test_an_empty_template_field_is_left_out_with_the_text_before_it():
    t = Template("Title: {title}\nBody: {body}")
    assert t.render({"title": None, "body": "b"})[0] == "Body: b"
    assert t.render({"title": "t", "body": ""})[0] == "Title: t"
    assert t.render({"title": "t", "body": 3})[0] == "Title: t\nBody: 3"
    assert Template("{title}\n\n{body}").render({"title": "", "body": "only"})[0] == "only"


@pytest.mark.parametrize(
    "template", ["no fields", "{}", "{title!r}", "{title:>10}", "{a.b}", "{unclosed"]
)
def test_a_template_that_cannot_work_fails_at_start_up_naming_the_setting(template):
    with pytest.raises(ConfigError, match="EMBED_INPUT__TEXT_TEMPLATE"):
        Template(template)


def test_debezium_without_a_template_and_an_unknown_format_fail_at_start_up():
    with pytest.raises(ConfigError, match="EMBED_INPUT__TEXT_TEMPLATE"):
        make_decoder("debezium")
    with pytest.raises(ConfigError, match="EMBED_INPUT__FORMAT"):
        make_decoder("avro")


def test_mapped_json_objects_take_the_id_from_the_key_or_a_field():
    by_key = make_decoder("json", mapping=Mapping(Template("{title}: {body}")))
    doc = one(by_key, b"article-9", json.dumps(ROW).encode())
    assert (doc.id, doc.text, doc.metadata) == ("article-9", "Sally: Loves kayaks.", None)
    by_field = make_decoder("json", mapping=Mapping(Template("{body}"), id_field="id"))
    assert one(by_field, b"1001", json.dumps(ROW).encode()).id == "1001"
    assert one(by_field, b"1001", None).op == "delete"  # a tombstone deletes the key's document


def test_mapped_records_keep_their_order_and_mix_documents_with_dead_letters():
    records = [
        ("t", 0, i, 0, key(i), change("c", None, dict(ROW, id=i)) if i % 2 else b"garbage")
        for i in range(6)
    ]
    docs, rejected = DEBEZIUM(records)
    assert [d.id for d in docs] == ["1", "3", "5"] and [r.source.offset for r in rejected] == [
        0,
        2,
        4,
    ]


def test_a_mapped_id_over_the_limit_is_dead_lettered():
    decoder = MappedDecoder(Mapping(Template("{body}"), id_field="id"), envelope=False)
    long_id = "x" * 600
    assert (
        one(decoder, long_id.encode(), json.dumps(dict(ROW, id=long_id)).encode()).reason
        == Reason.ID_TOO_LONG
    )


def test_a_template_typed_in_an_env_file_reads_its_escapes():
    assert Template(r"{title}\n\n{body}").render({"title": "t", "body": "b"})[0] == "t\n\nb"


def test_the_input_settings_fail_at_start_up_with_one_line_naming_the_setting(monkeypatch):
    from worker.config import load_settings

    for env, expected in (
        ({"EMBED_INPUT__FORMAT": "debezium"}, "EMBED_INPUT__TEXT_TEMPLATE is required"),
        (
            {"EMBED_INPUT__FORMAT": "json", "EMBED_INPUT__TEXT_TEMPLATE": "{title!r}"},
            "invalid setting EMBED_INPUT__TEXT_TEMPLATE",
        ),
        ({"EMBED_INPUT__TEXT_TEMPLATE": "{body}"}, "msgpack input follows the contract"),
        ({"EMBED_INPUT__FORMAT": "avro"}, "invalid setting EMBED_INPUT__FORMAT"),
    ):
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            with pytest.raises(ConfigError, match=expected) as info:
                load_settings()
            assert "\n" not in str(info.value)
    monkeypatch.setenv("EMBED_INPUT__FORMAT", "debezium")
    monkeypatch.setenv("EMBED_INPUT__TEXT_TEMPLATE", "{title}\n\n{body}")
    monkeypatch.setenv("EMBED_INPUT__METADATA_FIELDS", "lang, views")
    assert load_settings().input.metadata_columns == ("lang", "views")
