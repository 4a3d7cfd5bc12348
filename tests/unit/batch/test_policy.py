import itertools
import random

import pytest

from worker.batch.policy import (
    BatchLimits,
    FlushReason,
    choose_batch,
    default_max_tokens,
    padded_cost,
    segments,
    sorted_batches,
    split,
)


def limits(max_tokens=100, max_size=10, max_wait_s=0.05):
    return BatchLimits(max_tokens, max_size, max_wait_s)


def histogram(lengths):
    distinct = sorted(set(lengths))
    return distinct, [lengths.count(n) for n in distinct]


def choose(lengths, anchor_length, lim, **kw):
    distinct, counts = histogram(lengths)
    return choose_batch(distinct, counts, distinct.index(anchor_length), lim, **kw)


def test_padded_cost_is_longest_times_count():
    assert padded_cost([3, 10, 7]) == 30
    assert padded_cost([]) == 0
    assert padded_cost([0, 0]) == 2  # an empty document still takes a row


def test_a_full_batch_is_chosen_before_the_deadline_and_stays_within_the_budget():
    pick = choose([20] * 12, 20, limits(max_tokens=100, max_size=100), due=False)
    # 5 × 20 = 100 fits, a sixth would cost 120
    assert (pick.size, pick.reason, pick.padded_tokens) == (5, FlushReason.TOKENS, 100)


def test_the_size_cap_fills_a_batch():
    pick = choose([1] * 7, 1, limits(max_tokens=10_000, max_size=3), due=False)
    assert (pick.size, pick.reason) == (3, FlushReason.SIZE)


def test_a_partial_batch_waits_for_its_deadline_then_runs_whole():
    assert choose([5, 6], 5, limits(), due=False) is None
    pick = choose([5, 6], 5, limits(), due=True)
    assert (pick.take, pick.reason) == (((5, 1), (6, 1)), FlushReason.DEADLINE)


def test_segments_sort_lengths_together_and_leave_the_rest_partial():
    distinct, counts = histogram([100, 2, 100, 2, 100, 2, 100, 2, 7])
    cuts = segments(distinct, counts, limits(max_tokens=400, max_size=4))
    assert [c.take for c in cuts] == [((2, 4),), ((7, 1), (100, 3)), ((100, 1),)]
    assert [c.full for c in cuts] == [True, True, False]
    assert cuts[0].padding_efficiency == 1.0


def test_a_batch_closed_only_because_a_long_document_follows_is_not_full():
    # four short documents then one that cannot join them: the short ones could still gain company
    distinct, counts = histogram([10] * 4 + [512])
    lim = BatchLimits(2048, 256, 0.05)
    assert [c.full for c in segments(distinct, counts, lim)] == [False, False]
    assert choose_batch(distinct, counts, 0, lim, due=False) is None


def test_when_due_the_batch_holding_the_oldest_runs_even_if_partial():
    lengths = [2] * 8 + [100]
    lim = limits(max_tokens=400, max_size=4)
    assert choose(lengths, 100, lim, due=True).take == ((100, 1),)
    assert choose(lengths, 2, lim, due=True).take == (
        (2, 4),
    )  # the oldest 2 is the first of its length


def test_before_the_deadline_the_least_padded_full_batch_runs():
    lengths = [10] * 5 + [11] * 5 + [50, 60]
    pick = choose(lengths, 50, limits(max_tokens=55, max_size=100), due=False)
    assert pick.take == ((10, 5),) and pick.padding_efficiency == 1.0


def test_a_document_longer_than_the_budget_still_runs_alone():
    pick = choose([500, 3], 500, limits(max_tokens=100), due=True)
    assert pick.take == ((500, 1),) and pick.full


def test_random_histograms_give_valid_batches():
    rng = random.Random(7)
    for _ in range(300):
        lengths = [
            rng.choice([rng.randint(1, 20), rng.randint(0, 300)]) for _ in range(rng.randint(1, 80))
        ]
        lim = limits(max_tokens=rng.choice([64, 256, 1000]), max_size=rng.choice([1, 4, 16, 64]))
        distinct, counts = histogram(lengths)
        cuts = segments(distinct, counts, lim)
        taken = sorted(n for c in cuts for n, k in c.take for _ in range(k))
        assert taken == sorted(lengths)  # every document in exactly one batch
        for c in cuts:
            chosen = [n for n, k in c.take for _ in range(k)]
            assert c.size == len(chosen) <= lim.max_size
            assert c.padded_tokens == max(max(chosen), 1) * len(chosen)
            assert c.padded_tokens <= lim.max_tokens or c.size == 1
            assert c.real_tokens == sum(max(n, 1) for n in chosen)
        for c, after in itertools.pairwise(
            cuts
        ):  # each batch closed because nothing more could join it
            longest = max(max(n, 1) for n, _ in c.take)
            assert c.full or lim.capacity(max(longest, max(after.take[0][0], 1))) <= c.size
        anchor = rng.randrange(len(distinct))
        pick = choose_batch(distinct, counts, anchor, lim, due=True)
        assert any(n == distinct[anchor] for n, _ in pick.take)


def test_sorted_batches_cover_every_document_once_within_the_limits():
    lengths = [(i * 37) % 61 + 1 for i in range(200)]
    cuts = sorted_batches(lengths, limits(max_tokens=256, max_size=16))
    assert sorted(i for c in cuts for i in c.indices) == list(range(200))
    assert all(c.padded_tokens <= 256 and len(c.indices) <= 16 for c in cuts)


def test_default_budget_depends_on_device_and_fits_one_document():
    assert default_max_tokens("cuda", 512) == 16_384
    assert default_max_tokens("cpu", 256) == 2_048
    assert default_max_tokens("cpu", 8_192) == 8_192


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        BatchLimits(0, 1, 0.0)


def test_a_fast_model_grows_the_budget_while_a_full_batch_stays_within_the_limit():
    from worker.batch.policy import grown_budget

    timed = []

    def seconds_at(tokens):  # 3 ms a batch plus 2 µs a token
        timed.append(tokens)
        return 0.003 + tokens * 2e-6

    assert (
        grown_budget(2048, seconds_at, within_s=0.05) == 16_384
    )  # 35.8 ms at 16384: within, and the ceiling
    assert (
        grown_budget(2048, seconds_at, within_s=0.02) == 4_096
    )  # 11.2 ms at 4096: twice that does not fit
    timed.clear()
    assert (
        grown_budget(2048, lambda t: seconds_at(t) * 10, within_s=0.05) == 2048
    )  # 44 ms at 2048: no doubling fits
    assert timed == [2048]  # a slow model is timed once, at its budget


def test_a_doubling_predicted_to_fit_but_measured_too_slow_is_not_taken():
    from worker.batch.policy import grown_budget

    assert grown_budget(2048, {2048: 0.02, 4096: 0.06}.__getitem__, within_s=0.05) == 2048


def test_split_runs_a_few_long_documents_apart_from_many_short_ones():
    # 40 × 20 tokens and 2 × 45: one batch pads 1,000 tokens away; apart, one more batch (30)
    assert split(((20, 40), (45, 2)), 30) == [((20, 40),), ((45, 2),)]
    # 40 × 20 and 2 × 21: apart would save 40 tokens, less than a batch costs
    assert split(((20, 40), (21, 2)), 100) == [((20, 40), (21, 2))]
    # the best cut first, then each part again: 5s and 6s stay together (10 tokens saved < 20)
    assert split(((5, 10), (6, 10), (50, 2)), 20) == [((5, 10), (6, 10)), ((50, 2),)]
    # a GPU-like overhead keeps everything in one pass
    assert split(((5, 10), (6, 10), (50, 2)), 5_000) == [((5, 10), (6, 10), (50, 2))]


def test_with_an_overhead_segments_are_split_for_padding_and_the_parts_are_partial():
    distinct, counts = histogram([20] * 40 + [45] * 2)
    lim = BatchLimits(2048, 256, 0.05, overhead_tokens=30)
    cuts = segments(distinct, counts, lim)
    assert [c.take for c in cuts] == [((20, 40),), ((45, 2),)]
    assert all(not c.full for c in cuts)
    assert choose_batch(distinct, counts, 1, lim, due=True).take == (
        (45, 2),
    )  # the part holding the oldest
    without = segments(distinct, counts, BatchLimits(2048, 256, 0.05))
    assert [c.take for c in without] == [((20, 40), (45, 2))]
