"""The fuzzer's expectations are written from the contract; the decoder must agree with every one."""

from collections import Counter

from loadgen.fuzz import ANY_REASON, Fuzzer
from worker.consume.decode import Document, Rejection, decode_record


def test_every_fuzzed_payload_decodes_as_the_contract_says():
    payloads = list(Fuzzer(seed=3, huge_text_bytes=64 * 1024, huge_every=500).payloads(3000))
    kinds = Counter(p.kind for p in payloads)
    assert len(kinds) >= 20 and kinds["huge_text"] >= 5  # every kind drawn, the huge ones too
    for i, p in enumerate(payloads):
        got = decode_record("in", 0, i, 0, p.key, p.value)
        if p.expect in ("embed", "superseded"):
            assert isinstance(got, Document) and got.op == "upsert", (p.kind, got)
            assert got.id == p.doc_id and got.text == p.text
        elif p.expect == "delete":
            assert isinstance(got, Document) and got.op == "delete"
        else:
            assert isinstance(got, Rejection), (p.kind, got)
            assert p.expect == ANY_REASON or got.reason == p.expect, (
                p.kind,
                got.reason,
                got.detail,
            )


def test_the_same_seed_gives_the_same_payloads():
    a = [(p.key, p.value) for p in Fuzzer(seed=5, huge_every=0).payloads(300)]
    b = [(p.key, p.value) for p in Fuzzer(seed=5, huge_every=0).payloads(300)]
    c = [(p.key, p.value) for p in Fuzzer(seed=6, huge_every=0).payloads(300)]
    assert a == b != c
