import pytest

from loadgen.rate import Burst, Schedule


def test_a_constant_rate_spaces_messages_evenly():
    offsets = Schedule(200).offsets(5)
    assert offsets == pytest.approx([0.0, 0.005, 0.010, 0.015, 0.020])
    assert Schedule(200).count_for(10) == 2000


def test_a_ramp_sends_the_integral_of_its_rate():
    # 100 → 300 messages/s over 10 s averages 200/s: about 2000 messages
    assert Schedule(100, ramp_to=300, ramp_s=10).count_for(10) == pytest.approx(2000, rel=0.01)
    assert Schedule(100, ramp_to=300, ramp_s=10).rate_at(20) == 300


def test_a_burst_multiplies_the_rate_for_its_window():
    s = Schedule(100, bursts=(Burst.parse("2:1:5"),))
    assert (s.rate_at(1.9), s.rate_at(2.5), s.rate_at(3.0)) == (100, 500, 100)
    assert s.count_for(5) == pytest.approx(400 + 500, abs=2)


@pytest.mark.parametrize("text", ["2:1", "a:b:c", "1:0:2"])
def test_bad_bursts_are_refused(text):
    with pytest.raises(ValueError):
        Burst.parse(text)
