"""The fault-injection suite in its CI size: real worker processes, a broker and a Redis of the
suite's own (frozen and killed on purpose), every input accounted for in the outputs; once with
each Kafka client (the workers' and the lab's own)."""

import re

import pytest

from loadgen.scenarios import SIZES, run_suite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["confluent", "kafka-python"])
def outcomes(request, tmp_path_factory):
    """Every scenario once per client, on one lab; each test below checks one of them."""
    names = [
        "fuzz",
        "sigterm",
        "sigterm-exactly-once",
        "redis-down",
        "redis-down-closed",
        "broker-freeze",
        "scale",
        "kill9",
        "redis-down-recreate",
        "model-switch",
    ]
    return {
        o.scenario: o
        for o in run_suite(
            names, "ci", str(tmp_path_factory.mktemp("faults")), client=request.param
        )
    }


def check(outcome):
    assert outcome.lost == 0, outcome.details
    assert outcome.crashes == 0, outcome.details
    assert outcome.wrong_reason == 0, outcome.details


def test_fuzzed_payloads_are_each_embedded_or_dead_lettered_with_their_reason(outcomes):
    o = outcomes["fuzz"]
    check(o)
    hostile = int(o.notes.split()[0])
    assert hostile > SIZES["ci"].fuzz // 3 and o.dead_lettered == hostile  # every bad payload, once
    assert o.duplicates == 0


def test_sigterm_mid_run_exits_cleanly_and_loses_nothing(outcomes):
    check(outcomes["sigterm"])
    assert "exit 0" in outcomes["sigterm"].notes


def test_exactly_once_sigterm_mid_run_shows_read_committed_readers_each_document_once(outcomes):
    o = outcomes["sigterm-exactly-once"]
    check(o)  # without Redis: the transactions alone keep duplicates out
    assert (
        o.exactly_once
        and o.duplicates == 0
        and o.vectors_out == o.published
        and "exit 0" in o.notes
    )


@pytest.mark.parametrize("scenario", ["redis-down-open", "redis-down-closed"])
def test_a_redis_outage_loses_nothing_and_duplicates_nothing(outcomes, scenario):
    check(outcomes[scenario])
    assert outcomes[scenario].duplicates == 0


def test_a_frozen_broker_loses_nothing_and_the_worker_resumes_without_a_restart(outcomes):
    o = outcomes["broker-freeze"]
    check(o)  # crashes == 0: the same process finished the run
    assert (
        o.duplicates <= o.published
    )  # re-read from the last commit, bounded by what was in flight


def test_scaling_one_three_one_loses_nothing(outcomes):
    o = outcomes["scale-1-3-1"]
    check(o)
    assert o.duplicates <= o.published


def test_kill_minus_nine_at_random_moments_loses_nothing(outcomes):
    o = outcomes["kill9"]
    check(o)
    assert o.notes.startswith(f"{SIZES['ci'].kills} kill -9")


def test_redis_down_while_ids_are_deleted_and_recreated_leaves_the_index_equal_to_the_final_state(
    outcomes,
):
    o = outcomes["redis-down-recreate"]
    check(o)
    assert "Redis frozen" in o.notes  # the outage happened
    assert o.stale == 0, (
        o.details
    )  # the real sink's index: every id as its last version says, metadata included


def test_a_model_switch_mid_stream_keeps_the_sink_running_and_counts_what_it_left_out(outcomes):
    o = outcomes["model-switch"]
    check(o)  # crashes == 0: the sink too
    assert o.stale == 0, o.details
    left_out, of = re.search(r"left out (-?\d+) of (\d+)", o.notes).groups()
    assert (
        int(left_out) >= int(of) > 0
    )  # every one of them (a replay after a refused commit counts again)
