import pytest

from worker.batch.policy import BatchLimits, FlushReason, cut_batches, default_max_tokens, padded_cost


def limits(max_tokens=100, max_size=10, max_wait_s=0.05, lookahead=1):
    return BatchLimits(max_tokens, max_size, max_wait_s, lookahead)


def test_padded_cost_is_longest_times_count():
    assert padded_cost([3, 10, 7]) == 30
    assert padded_cost([]) == 0
    assert padded_cost([0, 0]) == 2  # an empty document still takes a row


def test_token_budget_closes_a_batch_before_it_is_exceeded():
    cuts = cut_batches([20] * 12, 0.0, limits(max_tokens=100, max_size=100))
    # 5 × 20 = 100 fits, a sixth would cost 120: two full batches, the last 2 wait for company
    assert [len(c.indices) for c in cuts] == [5, 5]
    assert all(c.reason is FlushReason.TOKENS for c in cuts)
    assert all(c.padded_tokens <= 100 for c in cuts)


def test_size_cap_closes_a_batch():
    cuts = cut_batches([1] * 7, 0.0, limits(max_tokens=10_000, max_size=3))
    assert [len(c.indices) for c in cuts] == [3, 3]
    assert cuts[0].reason is FlushReason.SIZE


def test_partial_batch_waits_until_the_deadline():
    assert cut_batches([5, 6], 0.01, limits(max_wait_s=0.05)) == []
    cuts = cut_batches([5, 6], 0.05, limits(max_wait_s=0.05))
    assert len(cuts) == 1 and cuts[0].reason is FlushReason.DEADLINE
    assert sorted(cuts[0].indices) == [0, 1]


def test_drain_releases_everything():
    assert cut_batches([5, 6, 7], 0.0, limits()) == []
    cuts = cut_batches([5, 6, 7], 0.0, limits(), drain=True)
    assert [sorted(c.indices) for c in cuts] == [[0, 1, 2]]
    assert cuts[0].reason is FlushReason.DRAIN


def test_a_batch_that_nothing_could_join_runs_at_once():
    cuts = cut_batches([50, 50], 0.0, limits(max_tokens=100))
    assert len(cuts) == 1 and cuts[0].reason is FlushReason.TOKENS


def test_sorting_groups_similar_lengths_and_cuts_padding():
    lengths = [100, 2, 100, 2, 100, 2, 100, 2]
    cuts = cut_batches(lengths, 1.0, limits(max_tokens=400, max_size=4))
    assert [sorted(lengths[i] for i in c.indices) for c in cuts] == [[2, 2, 2, 2], [100, 100, 100, 100]]
    assert all(c.padding_efficiency == 1.0 for c in cuts)


def test_a_document_longer_than_the_budget_still_runs_alone():
    cuts = cut_batches([500, 3], 1.0, limits(max_tokens=100))
    assert sorted(len(c.indices) for c in cuts) == [1, 1]


def test_lookahead_holds_full_batches_until_the_window_fills():
    lim = limits(max_tokens=100, max_size=10, max_wait_s=1.0, lookahead=3)
    # 200 tokens waiting, the window is 3 × 100: nothing is cut before the deadline
    assert cut_batches([20] * 10, 0.0, lim) == []
    cuts = cut_batches([20] * 15, 0.0, lim)
    assert sum(len(c.indices) for c in cuts) == 15  # 3 full batches of 5
    assert cut_batches([20] * 10, 1.0, lim) != []  # the deadline overrides the window


def test_every_document_is_in_at_most_one_batch():
    lengths = [(i * 37) % 61 + 1 for i in range(200)]
    cuts = cut_batches(lengths, 1.0, limits(max_tokens=256, max_size=16))
    taken = [i for c in cuts for i in c.indices]
    assert sorted(taken) == list(range(200))
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

    assert grown_budget(2048, seconds_at, within_s=0.05) == 16_384  # 35.8 ms at 16384: within, and the ceiling
    assert grown_budget(2048, seconds_at, within_s=0.02) == 4_096  # 11.2 ms at 4096: twice that does not fit
    timed.clear()
    assert grown_budget(2048, lambda t: seconds_at(t) * 10, within_s=0.05) == 2048  # 44 ms at 2048: no doubling fits
    assert timed == [2048]  # a slow model is timed once, at its budget


def test_a_doubling_predicted_to_fit_but_measured_too_slow_is_not_taken():
    from worker.batch.policy import grown_budget

    assert grown_budget(2048, {2048: 0.02, 4096: 0.06}.__getitem__, within_s=0.05) == 2048
