"""Start-up, liveness and readiness as the loop and the forward stage report them."""

import time

from worker.observe.health import Health


def test_started_and_ready_wait_for_the_warm_model_and_liveness_does_not():
    h = Health(stall_after_s=60)
    assert h.started() == (False, "loading and warming up the model")
    assert h.live()[0] and not h.ready()[0]  # loading: alive, not ready
    h.warmed_up()
    assert h.started()[0] and not h.ready()[0]  # warm, not consuming yet
    h.polled()
    assert h.ready() == (True, "consuming")
    h.stopping()
    assert h.ready() == (False, "stopping") and h.live()[0]


def test_a_forward_pass_running_past_the_limit_is_not_live_though_the_loop_polls():
    # the loop kept polling while a wedged accelerator held the batch: the pod stayed live and
    # ready, holding its partitions, and embedded nothing
    h = Health(stall_after_s=0.2)
    busy = [None]
    h.watch_forward(lambda: busy[0])
    h.warmed_up()
    h.polled()
    busy[0] = time.monotonic()
    assert h.live()[0] and h.ready()[0]  # a batch just taken
    time.sleep(0.25)
    h.polled()
    live, why = h.live()
    assert not live and "forward pass" in why and not h.ready()[0]
    busy[0] = None
    assert h.live()[0] and h.ready()[0]


def test_a_loop_that_stops_polling_is_not_live():
    h = Health(stall_after_s=0.1)
    h.polled()
    time.sleep(0.15)
    live, why = h.live()
    assert not live and "last poll" in why
